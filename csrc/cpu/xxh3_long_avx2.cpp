// XXH3 long-input accumulation loop, AVX2. Compiled with -mavx2; only called after the dispatcher
// has checked that the CPU and OS support AVX2. Self-contained for the reason given in the SSE2 file.
#include <immintrin.h>

#include "backend.hpp"

namespace fastckpt::cpu {
namespace {

inline void accumulate_stripe(__m256i* acc, const uint8_t* stripe, const uint8_t* sec) {
  for (int i = 0; i < 2; ++i) {
    const __m256i data = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(stripe) + i);
    const __m256i key = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(sec) + i);
    const __m256i data_key = _mm256_xor_si256(data, key);
    const __m256i product = _mm256_mul_epu32(data_key, _mm256_srli_epi64(data_key, 32));
    const __m256i swapped = _mm256_shuffle_epi32(data, _MM_SHUFFLE(1, 0, 3, 2));
    acc[i] = _mm256_add_epi64(acc[i], _mm256_add_epi64(product, swapped));
  }
}

inline void scramble(__m256i* acc, const uint8_t* sec) {
  const __m256i prime = _mm256_set1_epi32(static_cast<int>(0x9E3779B1U));
  for (int i = 0; i < 2; ++i) {
    __m256i a = _mm256_xor_si256(acc[i], _mm256_srli_epi64(acc[i], 47));
    a = _mm256_xor_si256(a, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(sec) + i));
    const __m256i lo = _mm256_mul_epu32(a, prime);
    const __m256i hi = _mm256_mul_epu32(_mm256_srli_epi64(a, 32), prime);
    acc[i] = _mm256_add_epi64(lo, _mm256_slli_epi64(hi, 32));
  }
}

}  // namespace

void long_accumulate_avx2(uint64_t* acc64, const uint8_t* in, size_t len, const uint8_t* secret) {
  __m256i acc[2];
  for (int i = 0; i < 2; ++i) acc[i] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(acc64) + i);
  const size_t nb_blocks = (len - 1) / kBlockLen;
  for (size_t b = 0; b < nb_blocks; ++b) {
    const uint8_t* block = in + b * kBlockLen;
    for (size_t s = 0; s < kStripesPerBlock; ++s) {
      _mm_prefetch(reinterpret_cast<const char*>(block + s * kStripeLen + kPrefetchDistance), _MM_HINT_T0);
      accumulate_stripe(acc, block + s * kStripeLen, secret + s * 8);
    }
    scramble(acc, secret + kSecretSize - kStripeLen);
  }
  const size_t nb_stripes = ((len - 1) - kBlockLen * nb_blocks) / kStripeLen;
  const uint8_t* tail = in + nb_blocks * kBlockLen;
  for (size_t s = 0; s < nb_stripes; ++s) accumulate_stripe(acc, tail + s * kStripeLen, secret + s * 8);
  accumulate_stripe(acc, in + len - kStripeLen, secret + kSecretSize - kStripeLen - 7);
  for (int i = 0; i < 2; ++i) _mm256_storeu_si256(reinterpret_cast<__m256i*>(acc64) + i, acc[i]);
  _mm256_zeroupper();
}

}  // namespace fastckpt::cpu
