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

// R destination rows at a time: their partial sums over all sources stay in registers, and each
// destination vector is read and written once.
template <int R>
void rows_gfni(const uint8_t* const* src, int n_src, size_t len, uint8_t* const* dst, int stride,
               const CoefTable* coef) {
  size_t i = 0;
  // Two vectors per source per step: the source pointer and the R coefficient broadcasts are loaded
  // once for 128 bytes, and the loads need no mask.
  for (; i + 128 <= len; i += 128) {
    __m512i acc0[R], acc1[R];
    for (int r = 0; r < R; ++r) acc0[r] = acc1[r] = _mm512_setzero_si512();
    for (int s = 0; s < n_src; ++s) {
      const uint8_t* p = src[s] + i;
      _mm_prefetch(reinterpret_cast<const char*>(p + kPrefetch), _MM_HINT_T0);
      _mm_prefetch(reinterpret_cast<const char*>(p + kPrefetch + 64), _MM_HINT_T0);
      const __m512i x0 = _mm512_loadu_si512(p);
      const __m512i x1 = _mm512_loadu_si512(p + 64);
      const CoefTable* c = coef + static_cast<size_t>(s) * stride;
      for (int r = 0; r < R; ++r) {
        const __m512i a = _mm512_set1_epi64(static_cast<long long>(c[r].affine));
        acc0[r] = _mm512_xor_si512(acc0[r], _mm512_gf2p8affine_epi64_epi8(x0, a, 0));
        acc1[r] = _mm512_xor_si512(acc1[r], _mm512_gf2p8affine_epi64_epi8(x1, a, 0));
      }
    }
    for (int r = 0; r < R; ++r) {
      uint8_t* d = dst[r] + i;
      _mm512_storeu_si512(d, _mm512_xor_si512(_mm512_loadu_si512(d), acc0[r]));
      _mm512_storeu_si512(d + 64, _mm512_xor_si512(_mm512_loadu_si512(d + 64), acc1[r]));
    }
  }
  for (; i < len; i += 64) {
    const size_t rem = len - i;
    const __mmask64 k = rem >= 64 ? ~__mmask64{0} : (uint64_t{1} << rem) - 1;
    __m512i acc[R];
    for (int r = 0; r < R; ++r) acc[r] = _mm512_setzero_si512();
    for (int s = 0; s < n_src; ++s) {
      const __m512i x = _mm512_maskz_loadu_epi8(k, src[s] + i);
      const CoefTable* c = coef + static_cast<size_t>(s) * stride;
      for (int r = 0; r < R; ++r)
        acc[r] = _mm512_xor_si512(acc[r], _mm512_gf2p8affine_epi64_epi8(x, _mm512_set1_epi64(static_cast<long long>(c[r].affine)), 0));
    }
    for (int r = 0; r < R; ++r)
      _mm512_mask_storeu_epi8(dst[r] + i, k, _mm512_xor_si512(_mm512_maskz_loadu_epi8(k, dst[r] + i), acc[r]));
  }
}

}  // namespace

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
