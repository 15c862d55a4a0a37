// XXH3-64 and XXH3-128 (seed 0, default secret), written once for host and device.
//
// This header is the single definition of the hash arithmetic that every backend shares: the CPU
// SIMD loops only replace `xxh3_accumulate_stripe`/`xxh3_scramble` with vector versions of the same
// math, and the CUDA kernels call these functions directly. Keeping one definition is what makes a
// CPU digest and a GPU digest equal by construction rather than by coincidence.
//
// Facts used here come from the public XXH3 specification (Cyan4973/xxHash doc/xxhash_spec.md);
// correctness is checked against the `xxhash` Python package in tests/test_xxh3.py.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define FCK_HD __host__ __device__ __forceinline__
#else
#define FCK_HD inline
#endif

namespace fastckpt {
namespace xxh3 {

constexpr uint32_t kPrime32_1 = 0x9E3779B1U;
constexpr uint32_t kPrime32_2 = 0x85EBCA77U;
constexpr uint32_t kPrime32_3 = 0xC2B2AE3DU;
constexpr uint64_t kPrime64_1 = 0x9E3779B185EBCA87ULL;
constexpr uint64_t kPrime64_2 = 0xC2B2AE3D27D4EB4FULL;
constexpr uint64_t kPrime64_3 = 0x165667B19E3779F9ULL;
constexpr uint64_t kPrime64_4 = 0x85EBCA77C2B2AE63ULL;
constexpr uint64_t kPrime64_5 = 0x27D4EB2F165667C5ULL;
constexpr uint64_t kPrimeMx1 = 0x165667919E3779F9ULL;
constexpr uint64_t kPrimeMx2 = 0x9FB21C651E98DF25ULL;

constexpr size_t kSecretSize = 192;
constexpr size_t kStripeLen = 64;
constexpr size_t kSecretConsumeRate = 8;
constexpr size_t kStripesPerBlock = (kSecretSize - kStripeLen) / kSecretConsumeRate;  // 16
constexpr size_t kBlockLen = kStripeLen * kStripesPerBlock;                           // 1024
constexpr size_t kMidSizeMax = 240;

#define FASTCKPT_XXH3_SECRET_BYTES                                                                 \
  0xb8, 0xfe, 0x6c, 0x39, 0x23, 0xa4, 0x4b, 0xbe, 0x7c, 0x01, 0x81, 0x2c, 0xf7, 0x21, 0xad, 0x1c, \
      0xde, 0xd4, 0x6d, 0xe9, 0x83, 0x90, 0x97, 0xdb, 0x72, 0x40, 0xa4, 0xa4, 0xb7, 0xb3, 0x67,    \
      0x1f, 0xcb, 0x79, 0xe6, 0x4e, 0xcc, 0xc0, 0xe5, 0x78, 0x82, 0x5a, 0xd0, 0x7d, 0xcc, 0xff,    \
      0x72, 0x21, 0xb8, 0x08, 0x46, 0x74, 0xf7, 0x43, 0x24, 0x8e, 0xe0, 0x35, 0x90, 0xe6, 0x81,    \
      0x3a, 0x26, 0x4c, 0x3c, 0x28, 0x52, 0xbb, 0x91, 0xc3, 0x00, 0xcb, 0x88, 0xd0, 0x65, 0x8b,    \
      0x1b, 0x53, 0x2e, 0xa3, 0x71, 0x64, 0x48, 0x97, 0xa2, 0x0d, 0xf9, 0x4e, 0x38, 0x19, 0xef,    \
      0x46, 0xa9, 0xde, 0xac, 0xd8, 0xa8, 0xfa, 0x76, 0x3f, 0xe3, 0x9c, 0x34, 0x3f, 0xf9, 0xdc,    \
      0xbb, 0xc7, 0xc7, 0x0b, 0x4f, 0x1d, 0x8a, 0x51, 0xe0, 0x4b, 0xcd, 0xb4, 0x59, 0x31, 0xc8,    \
      0x9f, 0x7e, 0xc9, 0xd9, 0x78, 0x73, 0x64, 0xea, 0xc5, 0xac, 0x83, 0x34, 0xd3, 0xeb, 0xc3,    \
      0xc5, 0x81, 0xa0, 0xff, 0xfa, 0x13, 0x63, 0xeb, 0x17, 0x0d, 0xdd, 0x51, 0xb7, 0xf0, 0xda,    \
      0x49, 0xd3, 0x16, 0x55, 0x26, 0x29, 0xd4, 0x68, 0x9e, 0x2b, 0x16, 0xbe, 0x58, 0x7d, 0x47,    \
      0xa1, 0xfc, 0x8f, 0xf8, 0xb8, 0xd1, 0x7a, 0xd0, 0x31, 0xce, 0x45, 0xcb, 0x3a, 0x8f, 0x95,    \
      0x16, 0x04, 0x28, 0xaf, 0xd7, 0xfb, 0xca, 0xbb, 0x4b, 0x40, 0x7e

// Device code cannot read a host array, so each side gets its own copy of the same bytes.
#if defined(__CUDACC__)
__constant__ const uint8_t kDeviceSecret[kSecretSize] = {FASTCKPT_XXH3_SECRET_BYTES};
#endif
alignas(64) static const uint8_t kHostSecret[kSecretSize] = {FASTCKPT_XXH3_SECRET_BYTES};

FCK_HD const uint8_t* default_secret() {
#if defined(__CUDA_ARCH__)
  return kDeviceSecret;
#else
  return kHostSecret;
#endif
}

struct U128 {
  uint64_t low;
  uint64_t high;
};

// Little-endian loads through memcpy: the input may sit at any address, and the format is defined
// on little-endian byte order regardless of the host.
FCK_HD uint64_t read64(const uint8_t* p) {
  uint64_t v;
  memcpy(&v, p, sizeof(v));
  return v;
}
FCK_HD uint32_t read32(const uint8_t* p) {
  uint32_t v;
  memcpy(&v, p, sizeof(v));
  return v;
}

FCK_HD uint64_t swap64(uint64_t x) {
#if defined(__CUDA_ARCH__)
  return (static_cast<uint64_t>(__byte_perm(static_cast<uint32_t>(x), 0, 0x0123)) << 32) |
         __byte_perm(static_cast<uint32_t>(x >> 32), 0, 0x0123);
#else
  return __builtin_bswap64(x);
#endif
}
FCK_HD uint32_t swap32(uint32_t x) {
#if defined(__CUDA_ARCH__)
  return __byte_perm(x, 0, 0x0123);
#else
  return __builtin_bswap32(x);
#endif
}
FCK_HD uint64_t rotl64(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }
FCK_HD uint32_t rotl32(uint32_t x, int r) { return (x << r) | (x >> (32 - r)); }

FCK_HD U128 mul64to128(uint64_t a, uint64_t b) {
#if defined(__CUDA_ARCH__)
  return U128{a * b, __umul64hi(a, b)};
#else
  const unsigned __int128 p = static_cast<unsigned __int128>(a) * b;
  return U128{static_cast<uint64_t>(p), static_cast<uint64_t>(p >> 64)};
#endif
}
FCK_HD uint64_t mul128_fold64(uint64_t a, uint64_t b) {
  const U128 p = mul64to128(a, b);
  return p.low ^ p.high;
}
FCK_HD uint64_t xorshift64(uint64_t v, int shift) { return v ^ (v >> shift); }

FCK_HD uint64_t xxh64_avalanche(uint64_t h) {
  h ^= h >> 33;
  h *= kPrime64_2;
  h ^= h >> 29;
  h *= kPrime64_3;
  h ^= h >> 32;
  return h;
}
FCK_HD uint64_t avalanche(uint64_t h) {
  h = xorshift64(h, 37);
  h *= kPrimeMx1;
  h = xorshift64(h, 32);
  return h;
}
FCK_HD uint64_t rrmxmx(uint64_t h, uint64_t len) {
  h ^= rotl64(h, 49) ^ rotl64(h, 24);
  h *= kPrimeMx2;
  h ^= (h >> 35) + len;
  h *= kPrimeMx2;
  return xorshift64(h, 28);
}
FCK_HD uint64_t mix16(const uint8_t* in, const uint8_t* sec) {
  return mul128_fold64(read64(in) ^ read64(sec), read64(in + 8) ^ read64(sec + 8));
}

// ---------------------------------------------------------------------------------------------
// Long-input path (> 240 bytes). The state is eight independent u64 lanes. Within one 1 KiB block
// the stripes only *add* into the lanes (mod 2^64), so a block's contribution can be computed by
// any partition of its stripes and summed; the scramble between blocks is the only serial step.
// The GPU kernels rely on exactly this; tests/test_partition.py checks it on the CPU.
// ---------------------------------------------------------------------------------------------
struct Acc {
  uint64_t lane[8];
};

FCK_HD Acc initial_acc() {
  return Acc{{kPrime32_3, kPrime64_1, kPrime64_2, kPrime64_3, kPrime64_4, kPrime32_2, kPrime64_5,
              kPrime32_1}};
}

// Adds one 64-byte stripe's contribution to `acc`. `sec` points at the secret bytes for this stripe.
FCK_HD void accumulate_stripe(uint64_t* acc, const uint8_t* stripe, const uint8_t* sec) {
  for (int i = 0; i < 8; ++i) {
    const uint64_t data = read64(stripe + 8 * i);
    const uint64_t key = data ^ read64(sec + 8 * i);
    acc[i ^ 1] += data;
    acc[i] += (key & 0xFFFFFFFFULL) * (key >> 32);
  }
}

FCK_HD void scramble(uint64_t* acc, const uint8_t* sec) {
  for (int i = 0; i < 8; ++i) {
    uint64_t a = acc[i];
    a = xorshift64(a, 47);
    a ^= read64(sec + 8 * i);
    a *= kPrime32_1;
    acc[i] = a;
  }
}

FCK_HD uint64_t merge_accs(const uint64_t* acc, const uint8_t* sec, uint64_t start) {
  uint64_t result = start;
  for (int i = 0; i < 4; ++i) {
    result += mul128_fold64(acc[2 * i] ^ read64(sec + 16 * i), acc[2 * i + 1] ^ read64(sec + 16 * i + 8));
  }
  return avalanche(result);
}

// Scalar long loop: full blocks, then the partial block's stripes, then the last 64 bytes.
FCK_HD void long_accumulate_scalar(uint64_t* acc, const uint8_t* in, size_t len, const uint8_t* sec) {
  const size_t nb_blocks = (len - 1) / kBlockLen;
  for (size_t b = 0; b < nb_blocks; ++b) {
    const uint8_t* block = in + b * kBlockLen;
    for (size_t s = 0; s < kStripesPerBlock; ++s) {
      accumulate_stripe(acc, block + s * kStripeLen, sec + s * kSecretConsumeRate);
    }
    scramble(acc, sec + kSecretSize - kStripeLen);
  }
  const size_t nb_stripes = ((len - 1) - kBlockLen * nb_blocks) / kStripeLen;
  const uint8_t* tail = in + nb_blocks * kBlockLen;
  for (size_t s = 0; s < nb_stripes; ++s) {
    accumulate_stripe(acc, tail + s * kStripeLen, sec + s * kSecretConsumeRate);
  }
  accumulate_stripe(acc, in + len - kStripeLen, sec + kSecretSize - kStripeLen - 7);
}

FCK_HD uint64_t finish64_long(const uint64_t* acc, size_t len, const uint8_t* sec) {
  return merge_accs(acc, sec + 11, static_cast<uint64_t>(len) * kPrime64_1);
}
FCK_HD U128 finish128_long(const uint64_t* acc, size_t len, const uint8_t* sec) {
  return U128{merge_accs(acc, sec + 11, static_cast<uint64_t>(len) * kPrime64_1),
              merge_accs(acc, sec + kSecretSize - kStripeLen - 11, ~(static_cast<uint64_t>(len) * kPrime64_2))};
}

// ---------------------------------------------------------------------------------------------
// Short inputs (0..240 bytes), XXH3-64.
// ---------------------------------------------------------------------------------------------
FCK_HD uint64_t hash64_0to16(const uint8_t* in, size_t len, const uint8_t* sec) {
  if (len > 8) {
    const uint64_t bitflip1 = read64(sec + 24) ^ read64(sec + 32);
    const uint64_t bitflip2 = read64(sec + 40) ^ read64(sec + 48);
    const uint64_t lo = read64(in) ^ bitflip1;
    const uint64_t hi = read64(in + len - 8) ^ bitflip2;
    const uint64_t acc = len + swap64(lo) + hi + mul128_fold64(lo, hi);
    return avalanche(acc);
  }
  if (len >= 4) {
    const uint32_t in1 = read32(in);
    const uint32_t in2 = read32(in + len - 4);
    const uint64_t bitflip = read64(sec + 8) ^ read64(sec + 16);
    const uint64_t in64 = in2 + (static_cast<uint64_t>(in1) << 32);
    return rrmxmx(in64 ^ bitflip, len);
  }
  if (len > 0) {
    const uint32_t c1 = in[0], c2 = in[len >> 1], c3 = in[len - 1];
    const uint32_t combined = (c1 << 16) | (c2 << 24) | c3 | (static_cast<uint32_t>(len) << 8);
    const uint64_t bitflip = static_cast<uint64_t>(read32(sec) ^ read32(sec + 4));
    return xxh64_avalanche(static_cast<uint64_t>(combined) ^ bitflip);
  }
  return xxh64_avalanche(read64(sec + 56) ^ read64(sec + 64));
}

FCK_HD uint64_t hash64_17to128(const uint8_t* in, size_t len, const uint8_t* sec) {
  uint64_t acc = static_cast<uint64_t>(len) * kPrime64_1;
  if (len > 32) {
    if (len > 64) {
      if (len > 96) {
        acc += mix16(in + 48, sec + 96);
        acc += mix16(in + len - 64, sec + 112);
      }
      acc += mix16(in + 32, sec + 64);
      acc += mix16(in + len - 48, sec + 80);
    }
    acc += mix16(in + 16, sec + 32);
    acc += mix16(in + len - 32, sec + 48);
  }
  acc += mix16(in, sec);
  acc += mix16(in + len - 16, sec + 16);
  return avalanche(acc);
}

FCK_HD uint64_t hash64_129to240(const uint8_t* in, size_t len, const uint8_t* sec) {
  uint64_t acc = static_cast<uint64_t>(len) * kPrime64_1;
  const int rounds = static_cast<int>(len / 16);
  for (int i = 0; i < 8; ++i) acc += mix16(in + 16 * i, sec + 16 * i);
  acc = avalanche(acc);
  for (int i = 8; i < rounds; ++i) acc += mix16(in + 16 * i, sec + 16 * (i - 8) + 3);
  acc += mix16(in + len - 16, sec + 136 - 17);
  return avalanche(acc);
}

FCK_HD uint64_t hash64_short(const uint8_t* in, size_t len, const uint8_t* sec) {
  if (len <= 16) return hash64_0to16(in, len, sec);
  if (len <= 128) return hash64_17to128(in, len, sec);
  return hash64_129to240(in, len, sec);
}

// Portable XXH3-64. The CPU backends call `hash64_short` themselves and supply a SIMD long loop.
FCK_HD uint64_t hash64(const void* data, size_t len) {
  const uint8_t* in = static_cast<const uint8_t*>(data);
  const uint8_t* sec = default_secret();
  if (len <= kMidSizeMax) return hash64_short(in, len, sec);
  Acc acc = initial_acc();
  long_accumulate_scalar(acc.lane, in, len, sec);
  return finish64_long(acc.lane, len, sec);
}

// ---------------------------------------------------------------------------------------------
// Short inputs, XXH3-128. Only the host needs these (tensor digests are formed on the host from
// leaf digests), but they stay device-callable so a kernel could finish a digest on the device.
// ---------------------------------------------------------------------------------------------
FCK_HD U128 hash128_0to16(const uint8_t* in, size_t len, const uint8_t* sec) {
  if (len > 8) {
    const uint64_t bitflipl = read64(sec + 32) ^ read64(sec + 40);
    const uint64_t bitfliph = read64(sec + 48) ^ read64(sec + 56);
    const uint64_t in_lo = read64(in);
    uint64_t in_hi = read64(in + len - 8);
    U128 m = mul64to128(in_lo ^ in_hi ^ bitflipl, kPrime64_1);
    m.low += static_cast<uint64_t>(len - 1) << 54;
    in_hi ^= bitfliph;
    m.high += in_hi + static_cast<uint64_t>(static_cast<uint32_t>(in_hi)) * (kPrime32_2 - 1);
    m.low ^= swap64(m.high);
    U128 h = mul64to128(m.low, kPrime64_2);
    h.high += m.high * kPrime64_2;
    return U128{avalanche(h.low), avalanche(h.high)};
  }
  if (len >= 4) {
    const uint32_t in_lo = read32(in);
    const uint32_t in_hi = read32(in + len - 4);
    const uint64_t in64 = in_lo + (static_cast<uint64_t>(in_hi) << 32);
    const uint64_t bitflip = read64(sec + 16) ^ read64(sec + 24);
    U128 m = mul64to128(in64 ^ bitflip, kPrime64_1 + (static_cast<uint64_t>(len) << 2));
    m.high += m.low << 1;
    m.low ^= m.high >> 3;
    m.low = xorshift64(m.low, 35);
    m.low *= kPrimeMx2;
    m.low = xorshift64(m.low, 28);
    m.high = avalanche(m.high);
    return m;
  }
  if (len > 0) {
    const uint32_t c1 = in[0], c2 = in[len >> 1], c3 = in[len - 1];
    const uint32_t combinedl = (c1 << 16) | (c2 << 24) | c3 | (static_cast<uint32_t>(len) << 8);
    const uint32_t combinedh = rotl32(swap32(combinedl), 13);
    const uint64_t bitflipl = static_cast<uint64_t>(read32(sec) ^ read32(sec + 4));
    const uint64_t bitfliph = static_cast<uint64_t>(read32(sec + 8) ^ read32(sec + 12));
    return U128{xxh64_avalanche(combinedl ^ bitflipl), xxh64_avalanche(combinedh ^ bitfliph)};
  }
  return U128{xxh64_avalanche(read64(sec + 64) ^ read64(sec + 72)),
              xxh64_avalanche(read64(sec + 80) ^ read64(sec + 88))};
}

FCK_HD U128 mix32(U128 acc, const uint8_t* in1, const uint8_t* in2, const uint8_t* sec) {
  acc.low += mix16(in1, sec);
  acc.low ^= read64(in2) + read64(in2 + 8);
  acc.high += mix16(in2, sec + 16);
  acc.high ^= read64(in1) + read64(in1 + 8);
  return acc;
}

FCK_HD U128 finish128_mid(U128 acc, size_t len) {
  const uint64_t low = acc.low + acc.high;
  const uint64_t high = acc.low * kPrime64_1 + acc.high * kPrime64_4 + static_cast<uint64_t>(len) * kPrime64_2;
  return U128{avalanche(low), 0ULL - avalanche(high)};
}

FCK_HD U128 hash128_17to128(const uint8_t* in, size_t len, const uint8_t* sec) {
  U128 acc{static_cast<uint64_t>(len) * kPrime64_1, 0};
  if (len > 32) {
    if (len > 64) {
      if (len > 96) acc = mix32(acc, in + 48, in + len - 64, sec + 96);
      acc = mix32(acc, in + 32, in + len - 48, sec + 64);
    }
    acc = mix32(acc, in + 16, in + len - 32, sec + 32);
  }
  acc = mix32(acc, in, in + len - 16, sec);
  return finish128_mid(acc, len);
}

FCK_HD U128 hash128_129to240(const uint8_t* in, size_t len, const uint8_t* sec) {
  U128 acc{static_cast<uint64_t>(len) * kPrime64_1, 0};
  const int rounds = static_cast<int>(len / 32);
  for (int i = 0; i < 4; ++i) acc = mix32(acc, in + 32 * i, in + 32 * i + 16, sec + 32 * i);
  acc.low = avalanche(acc.low);
  acc.high = avalanche(acc.high);
  for (int i = 4; i < rounds; ++i) acc = mix32(acc, in + 32 * i, in + 32 * i + 16, sec + 3 + 32 * (i - 4));
  acc = mix32(acc, in + len - 16, in + len - 32, sec + 136 - 17 - 16);
  return finish128_mid(acc, len);
}

FCK_HD U128 hash128_short(const uint8_t* in, size_t len, const uint8_t* sec) {
  if (len <= 16) return hash128_0to16(in, len, sec);
  if (len <= 128) return hash128_17to128(in, len, sec);
  return hash128_129to240(in, len, sec);
}

FCK_HD U128 hash128(const void* data, size_t len) {
  const uint8_t* in = static_cast<const uint8_t*>(data);
  const uint8_t* sec = default_secret();
  if (len <= kMidSizeMax) return hash128_short(in, len, sec);
  Acc acc = initial_acc();
  long_accumulate_scalar(acc.lane, in, len, sec);
  return finish128_long(acc.lane, len, sec);
}

}  // namespace xxh3
}  // namespace fastckpt
