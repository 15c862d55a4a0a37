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

}  // namespace

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
