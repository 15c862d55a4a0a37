// GF(2^8) multiply-accumulate with GFNI: one GF2P8AFFINEQB multiplies 64 bytes by a coefficient
// given as its 8x8 bit matrix (CoefTable::affine), which works for the polynomial 0x11D. Compiled
// with -mavx512f/bw/vl -mgfni; only reached through gf::kernels_for.
#include <immintrin.h>

#include "gf256.hpp"

namespace fastckpt::gf {
namespace {

// Sources are prefetched this far ahead: with several sources read at once the hardware prefetchers
// alone leave memory idle (measured +10-20% from memory, nothing lost in cache). Prefetches of
// addresses past a buffer's end are harmless: they never fault.
constexpr size_t kPrefetch = 2048;

// acc[r] ^= c0[r] * x0 ^ c1[r] * x1 for R destination rows: one three-way XOR (VPTERNLOGQ) adds
// both products, saving a vector op per row.
template <int R>
inline void mul_acc_pair(__m512i (&acc)[R], __m512i x0, __m512i x1, const CoefTable* c0, const CoefTable* c1) {
  for (int r = 0; r < R; ++r)
    acc[r] = _mm512_ternarylogic_epi64(
        acc[r], _mm512_gf2p8affine_epi64_epi8(x0, _mm512_set1_epi64(static_cast<long long>(c0[r].affine)), 0),
        _mm512_gf2p8affine_epi64_epi8(x1, _mm512_set1_epi64(static_cast<long long>(c1[r].affine)), 0), 0x96);
}

// acc[r] ^= c[r] * x for R destination rows (the odd source left over from the pairs).
template <int R>
inline void mul_acc_one(__m512i (&acc)[R], __m512i x, const CoefTable* c) {
  for (int r = 0; r < R; ++r)
    acc[r] = _mm512_xor_si512(acc[r], _mm512_gf2p8affine_epi64_epi8(x, _mm512_set1_epi64(static_cast<long long>(c[r].affine)), 0));
}

// R destination rows at a time: their partial sums over all sources stay in registers, and each
// destination vector is read and written once. Sources go in pairs, so that one three-way XOR
// (VPTERNLOGQ) adds both products: the vector ports, not memory, bound this loop in cache.
template <int R>
inline void column_gfni(const uint8_t* const* src, int n_src, size_t i, __mmask64 k, bool masked,
                        uint8_t* const* dst, int stride, const CoefTable* coef) {
  auto load = [&](const uint8_t* p) { return masked ? _mm512_maskz_loadu_epi8(k, p) : _mm512_loadu_si512(p); };
  __m512i acc[R];
  for (int r = 0; r < R; ++r) acc[r] = _mm512_setzero_si512();
  int s = 0;
  for (; s + 2 <= n_src; s += 2) {
    const uint8_t* p0 = src[s] + i;
    const uint8_t* p1 = src[s + 1] + i;
    _mm_prefetch(reinterpret_cast<const char*>(p0 + kPrefetch), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(p1 + kPrefetch), _MM_HINT_T0);
    const __m512i x0 = load(p0), x1 = load(p1);
    const CoefTable* c0 = coef + static_cast<size_t>(s) * stride;
    mul_acc_pair<R>(acc, x0, x1, c0, c0 + stride);
  }
  for (; s < n_src; ++s) {
    const uint8_t* p = src[s] + i;
    _mm_prefetch(reinterpret_cast<const char*>(p + kPrefetch), _MM_HINT_T0);
    const __m512i x = load(p);
    mul_acc_one<R>(acc, x, coef + static_cast<size_t>(s) * stride);
  }
  for (int r = 0; r < R; ++r) {
    uint8_t* d = dst[r] + i;
    if (masked) _mm512_mask_storeu_epi8(d, k, _mm512_xor_si512(_mm512_maskz_loadu_epi8(k, d), acc[r]));
    else _mm512_storeu_si512(d, _mm512_xor_si512(_mm512_loadu_si512(d), acc[r]));
  }
}

template <int R>
void rows_gfni(const uint8_t* const* src, int n_src, size_t len, uint8_t* const* dst, int stride,
               const CoefTable* coef) {
  size_t i = 0;
  for (; i + 64 <= len; i += 64) column_gfni<R>(src, n_src, i, ~__mmask64{0}, false, dst, stride, coef);
  if (i < len) column_gfni<R>(src, n_src, i, (uint64_t{1} << (len - i)) - 1, true, dst, stride, coef);
}

// XXH3-64 long loop pieces, exactly as in xxh3_long_avx512.cpp (this file must be self-contained).
inline __m512i xxh3_accumulate(__m512i acc, __m512i data, __m512i key) {
  const __m512i data_key = _mm512_xor_si512(data, key);
  const __m512i product = _mm512_mul_epu32(data_key, _mm512_srli_epi64(data_key, 32));
  const __m512i swapped = _mm512_shuffle_epi32(data, static_cast<_MM_PERM_ENUM>(_MM_SHUFFLE(1, 0, 3, 2)));
  return _mm512_add_epi64(acc, _mm512_add_epi64(product, swapped));
}

inline __m512i xxh3_scramble(__m512i acc, __m512i key) {
  const __m512i prime = _mm512_set1_epi32(static_cast<int>(0x9E3779B1U));
  __m512i a = _mm512_xor_si512(acc, _mm512_srli_epi64(acc, 47));
  a = _mm512_xor_si512(a, key);
  const __m512i lo = _mm512_mul_epu32(a, prime);
  const __m512i hi = _mm512_mul_epu32(_mm512_srli_epi64(a, 32), prime);
  return _mm512_add_epi64(lo, _mm512_slli_epi64(hi, 32));
}

// Stripe t of a len-byte input (len % 64 == 0, len > 240) in XXH3's long loop: full 1 KiB blocks are
// scrambled after their 16th stripe; the last stripe takes the secret at offset 121 and is never
// followed by a scramble (when len is a multiple of 1 KiB it is the 16th stripe of the last block).
template <int R>
void rows_hash_gfni(const uint8_t* const* src, int n_src, size_t len, uint8_t* const* dst, const CoefTable* coef,
                    int stride, uint64_t* hash_acc, const uint8_t* secret) {
  __m512i h[kMaxFusedSources];
  for (int s = 0; s < n_src; ++s) h[s] = _mm512_loadu_si512(hash_acc + 8 * s);
  const __m512i scramble_key = _mm512_loadu_si512(secret + 192 - 64);
  const size_t stripes = len / 64;
  for (size_t t = 0; t < stripes; ++t) {
    const size_t i = t * 64;
    const bool last = t + 1 == stripes;
    const __m512i key = _mm512_loadu_si512(secret + (last ? 192 - 64 - 7 : 8 * (t % 16)));
    __m512i acc[R];
    for (int r = 0; r < R; ++r) acc[r] = _mm512_setzero_si512();
    int s = 0;
    for (; s + 2 <= n_src; s += 2) {
      const uint8_t* p0 = src[s] + i;
      const uint8_t* p1 = src[s + 1] + i;
      _mm_prefetch(reinterpret_cast<const char*>(p0 + kPrefetch), _MM_HINT_T0);
      _mm_prefetch(reinterpret_cast<const char*>(p1 + kPrefetch), _MM_HINT_T0);
      const __m512i x0 = _mm512_loadu_si512(p0);
      const __m512i x1 = _mm512_loadu_si512(p1);
      h[s] = xxh3_accumulate(h[s], x0, key);
      h[s + 1] = xxh3_accumulate(h[s + 1], x1, key);
      const CoefTable* c0 = coef + static_cast<size_t>(s) * stride;
      mul_acc_pair<R>(acc, x0, x1, c0, c0 + stride);
    }
    for (; s < n_src; ++s) {
      const uint8_t* p = src[s] + i;
      _mm_prefetch(reinterpret_cast<const char*>(p + kPrefetch), _MM_HINT_T0);
      const __m512i x = _mm512_loadu_si512(p);
      h[s] = xxh3_accumulate(h[s], x, key);
      mul_acc_one<R>(acc, x, coef + static_cast<size_t>(s) * stride);
    }
    for (int r = 0; r < R; ++r) {
      uint8_t* d = dst[r] + i;
      _mm512_storeu_si512(d, _mm512_xor_si512(_mm512_loadu_si512(d), acc[r]));
    }
    if (t % 16 == 15 && !last)
      for (int s = 0; s < n_src; ++s) h[s] = xxh3_scramble(h[s], scramble_key);
  }
  for (int s = 0; s < n_src; ++s) _mm512_storeu_si512(hash_acc + 8 * s, h[s]);
}

}  // namespace

void mul_acc_hash_gfni(const uint8_t* const* src, int n_src, size_t len, uint8_t* const* dst, int n_dst,
                       const CoefTable* coef, int coef_stride, uint64_t* hash_acc, const uint8_t* secret) {
  switch (n_dst) {
    case 8: rows_hash_gfni<8>(src, n_src, len, dst, coef, coef_stride, hash_acc, secret); break;
    case 7: rows_hash_gfni<7>(src, n_src, len, dst, coef, coef_stride, hash_acc, secret); break;
    case 6: rows_hash_gfni<6>(src, n_src, len, dst, coef, coef_stride, hash_acc, secret); break;
    case 5: rows_hash_gfni<5>(src, n_src, len, dst, coef, coef_stride, hash_acc, secret); break;
    case 4: rows_hash_gfni<4>(src, n_src, len, dst, coef, coef_stride, hash_acc, secret); break;
    case 3: rows_hash_gfni<3>(src, n_src, len, dst, coef, coef_stride, hash_acc, secret); break;
    case 2: rows_hash_gfni<2>(src, n_src, len, dst, coef, coef_stride, hash_acc, secret); break;
    case 1: rows_hash_gfni<1>(src, n_src, len, dst, coef, coef_stride, hash_acc, secret); break;
    default: break;
  }
  _mm256_zeroupper();
}

void mul_acc_gfni(const uint8_t* const* src, int n_src, size_t len, uint8_t* const* dst, int n_dst,
                  const CoefTable* coef) {
  int r0 = 0;
  for (; r0 + 8 <= n_dst; r0 += 8) rows_gfni<8>(src, n_src, len, dst + r0, n_dst, coef + r0);
  switch (n_dst - r0) {
    case 7: rows_gfni<7>(src, n_src, len, dst + r0, n_dst, coef + r0); break;
    case 6: rows_gfni<6>(src, n_src, len, dst + r0, n_dst, coef + r0); break;
    case 5: rows_gfni<5>(src, n_src, len, dst + r0, n_dst, coef + r0); break;
    case 4: rows_gfni<4>(src, n_src, len, dst + r0, n_dst, coef + r0); break;
    case 3: rows_gfni<3>(src, n_src, len, dst + r0, n_dst, coef + r0); break;
    case 2: rows_gfni<2>(src, n_src, len, dst + r0, n_dst, coef + r0); break;
    case 1: rows_gfni<1>(src, n_src, len, dst + r0, n_dst, coef + r0); break;
    default: break;
  }
}

}  // namespace fastckpt::gf
