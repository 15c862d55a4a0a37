// CRC-32 by carry-less multiplication folding on 512-bit registers (AVX-512 + VPCLMULQDQ).
//
// Same math as crc32_pclmul.cpp (see there), four ZMM accumulators: each 128-bit lane folds forward
// by 2048 bits per step (256 bytes per iteration, eight independent multiply chains). The
// accumulators are then folded into one ZMM, its four lanes into one XMM, and the remainder is
// finished by the table loop.
//
// Compiled with AVX-512 + VPCLMULQDQ flags; reached only through crc32_for() after a CPUID check.
#include <immintrin.h>

#include "crc32.hpp"

namespace fastckpt::cpu {
namespace {

constexpr uint64_t fold_constant(unsigned e) {
  uint64_t r = 1;
  for (unsigned i = 0; i < e; ++i) {
    r <<= 1;
    if (r & (uint64_t{1} << 32)) r ^= 0x104C11DB7ull;
  }
  uint64_t reflected = 0;
  for (unsigned i = 0; i < 32; ++i)
    if (r & (uint64_t{1} << i)) reflected |= uint64_t{1} << (31 - i);
  return reflected << 1;
}

inline __m512i fold512(__m512i acc, __m512i k, __m512i data) {
  const __m512i lo = _mm512_clmulepi64_epi128(acc, k, 0x00);
  const __m512i hi = _mm512_clmulepi64_epi128(acc, k, 0x11);
  return _mm512_ternarylogic_epi64(lo, hi, data, 0x96);  // lo ^ hi ^ data
}

inline __m128i fold128(__m128i acc, __m128i k, __m128i data) {
  const __m128i lo = _mm_clmulepi64_si128(acc, k, 0x00);
  const __m128i hi = _mm_clmulepi64_si128(acc, k, 0x11);
  return _mm_ternarylogic_epi64(lo, hi, data, 0x96);
}

inline __m512i lanes(uint64_t lo, uint64_t hi) {
  return _mm512_broadcast_i32x4(_mm_set_epi64x(static_cast<long long>(hi), static_cast<long long>(lo)));
}

inline __m512i load(const uint8_t* p) { return _mm512_loadu_si512(p); }

constexpr uint64_t kFold2048Lo = fold_constant(2048 + 32), kFold2048Hi = fold_constant(2048 - 32);
constexpr uint64_t kFold512Lo = fold_constant(512 + 32), kFold512Hi = fold_constant(512 - 32);
constexpr uint64_t kFold128Lo = fold_constant(128 + 32), kFold128Hi = fold_constant(128 - 32);

}  // namespace

uint32_t crc32_vpclmul(uint32_t crc, const uint8_t* in, size_t len) {
  // Below a few iterations the 128-bit code is as fast and its setup is cheaper.
  if (len < 1024) return crc32_pclmul(crc, in, len);
  const __m512i k2048 = lanes(kFold2048Lo, kFold2048Hi);
  const __m512i k512 = lanes(kFold512Lo, kFold512Hi);
  const __m128i k128 = _mm_set_epi64x(static_cast<long long>(kFold128Hi), static_cast<long long>(kFold128Lo));

  __m512i x0 = _mm512_xor_si512(load(in), _mm512_castsi128_si512(_mm_cvtsi32_si128(static_cast<int>(~crc))));
  __m512i x1 = load(in + 64), x2 = load(in + 128), x3 = load(in + 192);
  in += 256;
  len -= 256;
  while (len >= 256) {
    x0 = fold512(x0, k2048, load(in));
    x1 = fold512(x1, k2048, load(in + 64));
    x2 = fold512(x2, k2048, load(in + 128));
    x3 = fold512(x3, k2048, load(in + 192));
    in += 256;
    len -= 256;
  }
  __m512i x = fold512(x0, k512, x1);
  x = fold512(x, k512, x2);
  x = fold512(x, k512, x3);
  while (len >= 64) {
    x = fold512(x, k512, load(in));
    in += 64;
    len -= 64;
  }
  __m128i y = fold128(_mm512_extracti32x4_epi32(x, 0), k128, _mm512_extracti32x4_epi32(x, 1));
  y = fold128(y, k128, _mm512_extracti32x4_epi32(x, 2));
  y = fold128(y, k128, _mm512_extracti32x4_epi32(x, 3));
  while (len >= 16) {
    y = fold128(y, k128, _mm_loadu_si128(reinterpret_cast<const __m128i*>(in)));
    in += 16;
    len -= 16;
  }
  alignas(16) uint8_t folded[16];
  _mm_store_si128(reinterpret_cast<__m128i*>(folded), y);
  const uint32_t reg = crc32_raw_table(0, folded, 16);
  return ~crc32_raw_table(reg, in, len);
}

}  // namespace fastckpt::cpu
