// The CPU backend contract: one long-input loop per instruction set, all with the same signature,
// and the hashing entry points that the binding calls. dispatch.cpp picks the loop at run time.
//
// This header is included by the ISA files, which are compiled with different -m flags; it must
// therefore hold declarations and plain constants only, never inline functions with bodies.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace fastckpt::cpu {

constexpr size_t kSecretSize = 192;
constexpr size_t kStripeLen = 64;
constexpr size_t kStripesPerBlock = 16;
constexpr size_t kBlockLen = 1024;
constexpr size_t kPrefetchDistance = 384;

// Adds the long-path contribution of in[0, len) (len > 240) to the eight lanes in `acc`, exactly as
// xxh3::long_accumulate_scalar does. `secret` is the 192-byte default secret.
using LongAccumulateFn = void (*)(uint64_t* acc, const uint8_t* in, size_t len, const uint8_t* secret);

void long_accumulate_sse2(uint64_t* acc, const uint8_t* in, size_t len, const uint8_t* secret);
#if defined(FASTCKPT_HAVE_AVX2)
void long_accumulate_avx2(uint64_t* acc, const uint8_t* in, size_t len, const uint8_t* secret);
#endif
#if defined(FASTCKPT_HAVE_AVX512)
void long_accumulate_avx512(uint64_t* acc, const uint8_t* in, size_t len, const uint8_t* secret);
#endif

// Instruction sets compiled in and supported by this CPU, narrowest first ("scalar", "sse2", ...).
std::vector<std::string> available_isas();
// The widest usable one; what `hash64` uses unless told otherwise.
const std::string& default_isa();
// Looks up a loop by name; throws std::invalid_argument for an unknown or unusable name.
LongAccumulateFn long_accumulate_for(const std::string& isa);

uint64_t hash64(const uint8_t* in, size_t len, LongAccumulateFn loop);

// XXH3-64 of every `leaf_size`-byte leaf of in[0, len) into out[0, ceil(len / leaf_size)).
// Leaves are spread over `threads` workers (0 = all hardware threads; small inputs use one).
// `populate` asks the kernel to map each worker's range of a file mapping up front (see leaf_hash.cpp).
void leaf_digests(const uint8_t* in, size_t len, size_t leaf_size, uint64_t* out, int threads,
                  LongAccumulateFn loop, bool populate = false);

}  // namespace fastckpt::cpu
