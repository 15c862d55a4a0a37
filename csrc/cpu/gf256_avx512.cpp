// GF(2^8) multiply-accumulate with AVX-512BW VPSHUFB nibble tables (for AVX-512 CPUs without GFNI),
// and the AVX-512 XOR accumulate. Compiled with -mavx512f/bw/vl/dq -mbmi2; only reached through
// gf::kernels_for. Tails use masked loads and stores, so no byte past `len` is touched.
#include <immintrin.h>

#include "gf256.hpp"

namespace fastckpt::gf {

namespace {

inline __m512i table_of(const uint8_t* t16) {
  return _mm512_broadcast_i32x4(_mm_load_si128(reinterpret_cast<const __m128i*>(t16)));
}

}  // namespace

void mul_acc_avx512(const uint8_t* src, size_t len, uint8_t* const* dst, int n_dst, const CoefTable* coef) {
  const __m512i mask = _mm512_set1_epi8(0x0f);
  for (size_t i = 0; i < len; i += 64) {
    const size_t rem = len - i;
    const __mmask64 k = rem >= 64 ? ~__mmask64{0} : _bzhi_u64(~uint64_t{0}, static_cast<unsigned>(rem));
    const __m512i x = _mm512_maskz_loadu_epi8(k, src + i);
    const __m512i l = _mm512_and_si512(x, mask), h = _mm512_and_si512(_mm512_srli_epi16(x, 4), mask);
    for (int r = 0; r < n_dst; ++r) {
      const __m512i p = _mm512_xor_si512(_mm512_shuffle_epi8(table_of(coef[r].lo), l),
                                         _mm512_shuffle_epi8(table_of(coef[r].hi), h));
      uint8_t* d = dst[r] + i;
      _mm512_mask_storeu_epi8(d, k, _mm512_xor_si512(_mm512_maskz_loadu_epi8(k, d), p));
    }
  }
}

void xor_acc_avx512(const uint8_t* src, size_t len, uint8_t* dst) {
  size_t i = 0;
  for (; i + 256 <= len; i += 256) {
    for (size_t v = 0; v < 256; v += 64)
      _mm512_storeu_si512(dst + i + v, _mm512_xor_si512(_mm512_loadu_si512(dst + i + v), _mm512_loadu_si512(src + i + v)));
  }
  for (; i < len; i += 64) {
    const size_t rem = len - i;
    const __mmask64 k = rem >= 64 ? ~__mmask64{0} : _bzhi_u64(~uint64_t{0}, static_cast<unsigned>(rem));
    _mm512_mask_storeu_epi8(dst + i, k, _mm512_xor_si512(_mm512_maskz_loadu_epi8(k, dst + i), _mm512_maskz_loadu_epi8(k, src + i)));
  }
}

}  // namespace fastckpt::gf
