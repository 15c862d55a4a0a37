// GF(2^8) multiply-accumulate with GFNI: one GF2P8AFFINEQB multiplies 64 bytes by a coefficient
// given as its 8x8 bit matrix (CoefTable::affine), which works for the polynomial 0x11D. Compiled
// with -mavx512f/bw/vl -mgfni; only reached through gf::kernels_for.
#include <immintrin.h>

#include "gf256.hpp"

namespace fastckpt::gf {

void mul_acc_gfni(const uint8_t* src, size_t len, uint8_t* const* dst, int n_dst, const CoefTable* coef) {
  size_t i = 0;
  // Two vectors per step: the multiplies of one row are independent, which hides their latency.
  for (; i + 128 <= len; i += 128) {
    const __m512i x0 = _mm512_loadu_si512(src + i);
    const __m512i x1 = _mm512_loadu_si512(src + i + 64);
    for (int r = 0; r < n_dst; ++r) {
      const __m512i a = _mm512_set1_epi64(static_cast<long long>(coef[r].affine));
      uint8_t* d = dst[r] + i;
      _mm512_storeu_si512(d, _mm512_xor_si512(_mm512_loadu_si512(d), _mm512_gf2p8affine_epi64_epi8(x0, a, 0)));
      _mm512_storeu_si512(d + 64,
                          _mm512_xor_si512(_mm512_loadu_si512(d + 64), _mm512_gf2p8affine_epi64_epi8(x1, a, 0)));
    }
  }
  for (; i < len; i += 64) {
    const size_t rem = len - i;
    const __mmask64 k = rem >= 64 ? ~__mmask64{0} : (uint64_t{1} << rem) - 1;
    const __m512i x = _mm512_maskz_loadu_epi8(k, src + i);
    for (int r = 0; r < n_dst; ++r) {
      const __m512i a = _mm512_set1_epi64(static_cast<long long>(coef[r].affine));
      uint8_t* d = dst[r] + i;
      _mm512_mask_storeu_epi8(d, k, _mm512_xor_si512(_mm512_maskz_loadu_epi8(k, d), _mm512_gf2p8affine_epi64_epi8(x, a, 0)));
    }
  }
}

}  // namespace fastckpt::gf
