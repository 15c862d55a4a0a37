// GF(2^8) multiply-accumulate with AVX-512BW VPSHUFB nibble tables (for AVX-512 CPUs without GFNI),
// and the AVX-512 XOR accumulate. Compiled with -mavx512f/bw/vl/dq -mbmi2; only reached through
// gf::kernels_for. Tails use masked loads and stores, so no byte past `len` is touched.
#include <immintrin.h>

#include "gf256.hpp"

namespace fastckpt::gf {
namespace {

constexpr size_t kPrefetch = 2048;  // see gf256_gfni.cpp

inline __m512i table_of(const uint8_t* t16) {
  return _mm512_broadcast_i32x4(_mm_load_si128(reinterpret_cast<const __m128i*>(t16)));
}

inline __mmask64 tail_mask(size_t rem) {
  return rem >= 64 ? ~__mmask64{0} : _bzhi_u64(~uint64_t{0}, static_cast<unsigned>(rem));
}

// R destination rows at a time, partial sums in registers (see gf256_gfni.cpp).
template <int R>
void rows_avx512(const uint8_t* const* src, int n_src, size_t len, uint8_t* const* dst, int stride,
                 const CoefTable* coef) {
  const __m512i mask = _mm512_set1_epi8(0x0f);
  for (size_t i = 0; i < len; i += 64) {
    const __mmask64 k = tail_mask(len - i);
    __m512i acc[R];
    for (int r = 0; r < R; ++r) acc[r] = _mm512_setzero_si512();
    for (int s = 0; s < n_src; ++s) {
      _mm_prefetch(reinterpret_cast<const char*>(src[s] + i + kPrefetch), _MM_HINT_T0);
      const __m512i x = _mm512_maskz_loadu_epi8(k, src[s] + i);
      const __m512i l = _mm512_and_si512(x, mask), h = _mm512_and_si512(_mm512_srli_epi16(x, 4), mask);
      const CoefTable* c = coef + static_cast<size_t>(s) * stride;
      for (int r = 0; r < R; ++r)
        acc[r] = _mm512_ternarylogic_epi32(acc[r], _mm512_shuffle_epi8(table_of(c[r].lo), l),
                                           _mm512_shuffle_epi8(table_of(c[r].hi), h), 0x96);  // a ^ b ^ c
    }
    for (int r = 0; r < R; ++r)
      _mm512_mask_storeu_epi8(dst[r] + i, k, _mm512_xor_si512(_mm512_maskz_loadu_epi8(k, dst[r] + i), acc[r]));
  }
}

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

// The fused multiply-and-hash loop of gf256_gfni.cpp (see there) with nibble-table multiplies.
template <int R>
void rows_hash_avx512(const uint8_t* const* src, int n_src, size_t len, uint8_t* const* dst, const CoefTable* coef,
                      int stride, uint64_t* hash_acc, const uint8_t* secret) {
  const __m512i mask = _mm512_set1_epi8(0x0f);
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
    for (int s = 0; s < n_src; ++s) {
      const uint8_t* p = src[s] + i;
      _mm_prefetch(reinterpret_cast<const char*>(p + kPrefetch), _MM_HINT_T0);
      const __m512i x = _mm512_loadu_si512(p);
      h[s] = xxh3_accumulate(h[s], x, key);
      const __m512i l = _mm512_and_si512(x, mask), hn = _mm512_and_si512(_mm512_srli_epi16(x, 4), mask);
      const CoefTable* c = coef + static_cast<size_t>(s) * stride;
      for (int r = 0; r < R; ++r)
        acc[r] = _mm512_ternarylogic_epi32(acc[r], _mm512_shuffle_epi8(table_of(c[r].lo), l),
                                           _mm512_shuffle_epi8(table_of(c[r].hi), hn), 0x96);
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

void mul_acc_hash_avx512(const uint8_t* const* src, int n_src, size_t len, uint8_t* const* dst, int n_dst,
                         const CoefTable* coef, int coef_stride, uint64_t* hash_acc, const uint8_t* secret) {
  switch (n_dst) {
    case 8: rows_hash_avx512<8>(src, n_src, len, dst, coef, coef_stride, hash_acc, secret); break;
    case 7: rows_hash_avx512<7>(src, n_src, len, dst, coef, coef_stride, hash_acc, secret); break;
    case 6: rows_hash_avx512<6>(src, n_src, len, dst, coef, coef_stride, hash_acc, secret); break;
    case 5: rows_hash_avx512<5>(src, n_src, len, dst, coef, coef_stride, hash_acc, secret); break;
    case 4: rows_hash_avx512<4>(src, n_src, len, dst, coef, coef_stride, hash_acc, secret); break;
    case 3: rows_hash_avx512<3>(src, n_src, len, dst, coef, coef_stride, hash_acc, secret); break;
    case 2: rows_hash_avx512<2>(src, n_src, len, dst, coef, coef_stride, hash_acc, secret); break;
    case 1: rows_hash_avx512<1>(src, n_src, len, dst, coef, coef_stride, hash_acc, secret); break;
    default: break;
  }
  _mm256_zeroupper();
}

void mul_acc_avx512(const uint8_t* const* src, int n_src, size_t len, uint8_t* const* dst, int n_dst,
                    const CoefTable* coef) {
  int r0 = 0;
  for (; r0 + 4 <= n_dst; r0 += 4) rows_avx512<4>(src, n_src, len, dst + r0, n_dst, coef + r0);
  switch (n_dst - r0) {
    case 3: rows_avx512<3>(src, n_src, len, dst + r0, n_dst, coef + r0); break;
    case 2: rows_avx512<2>(src, n_src, len, dst + r0, n_dst, coef + r0); break;
    case 1: rows_avx512<1>(src, n_src, len, dst + r0, n_dst, coef + r0); break;
    default: break;
  }
}

void xor_acc_avx512(const uint8_t* src, size_t len, uint8_t* dst) {
  size_t i = 0;
  for (; i + 256 <= len; i += 256) {
    for (size_t v = 0; v < 256; v += 64)
      _mm512_storeu_si512(dst + i + v, _mm512_xor_si512(_mm512_loadu_si512(dst + i + v), _mm512_loadu_si512(src + i + v)));
  }
  for (; i < len; i += 64) {
    const __mmask64 k = tail_mask(len - i);
    _mm512_mask_storeu_epi8(dst + i, k, _mm512_xor_si512(_mm512_maskz_loadu_epi8(k, dst + i), _mm512_maskz_loadu_epi8(k, src + i)));
  }
}

}  // namespace fastckpt::gf
