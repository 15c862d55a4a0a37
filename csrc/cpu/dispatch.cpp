// Picks the widest XXH3 long loop that this CPU and OS can run (the BLAKE3 dispatch pattern).
// "scalar" is the portable loop from common/xxh3.hpp, kept selectable so tests can compare every
// loop against it and against the reference.
#include <stdexcept>

#include "../common/xxh3.hpp"
#include "backend.hpp"

namespace fastckpt::cpu {
namespace {

void long_accumulate_scalar(uint64_t* acc, const uint8_t* in, size_t len, const uint8_t* secret) {
  xxh3::long_accumulate_scalar(acc, in, len, secret);
}

bool cpu_has(const char* feature) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  // __builtin_cpu_supports also consults XCR0, so an OS that does not save the wide registers
  // reports the feature as absent.
  if (std::string(feature) == "avx2") return __builtin_cpu_supports("avx2");
  if (std::string(feature) == "avx512") return __builtin_cpu_supports("avx512f");
  if (std::string(feature) == "sse2") return __builtin_cpu_supports("sse2");
#endif
  (void)feature;
  return false;
}

struct IsaEntry {
  const char* name;
  LongAccumulateFn fn;
  bool usable;
};

std::vector<IsaEntry> build_table() {
  std::vector<IsaEntry> table;
  table.push_back({"scalar", long_accumulate_scalar, true});
#if defined(__x86_64__)
  table.push_back({"sse2", long_accumulate_sse2, true});
#endif
#if defined(FASTCKPT_HAVE_AVX2)
  table.push_back({"avx2", long_accumulate_avx2, cpu_has("avx2")});
#endif
#if defined(FASTCKPT_HAVE_AVX512)
  table.push_back({"avx512", long_accumulate_avx512, cpu_has("avx512")});
#endif
  return table;
}

const std::vector<IsaEntry>& table() {
  static const std::vector<IsaEntry> t = build_table();
  return t;
}

}  // namespace

std::vector<std::string> available_isas() {
  std::vector<std::string> names;
  for (const auto& e : table())
    if (e.usable) names.emplace_back(e.name);
  return names;
}

const std::string& default_isa() {
  // AVX-512 is not faster than AVX2 for this loop on the VMs we measured (it is memory-bound and
  // 512-bit ops can lower the clock), but it is never slower either; take the widest, as BLAKE3 does.
  static const std::string best = available_isas().back();
  return best;
}

LongAccumulateFn long_accumulate_for(const std::string& isa) {
  for (const auto& e : table()) {
    if (isa == e.name) {
      if (!e.usable) throw std::invalid_argument("instruction set '" + isa + "' is compiled in but this CPU cannot run it");
      return e.fn;
    }
  }
  std::string known;
  for (const auto& name : available_isas()) known += (known.empty() ? "" : ", ") + name;
  throw std::invalid_argument("unknown instruction set '" + isa + "'; this build can use: " + known);
}

uint64_t hash64(const uint8_t* in, size_t len, LongAccumulateFn loop) {
  const uint8_t* sec = xxh3::default_secret();
  if (len <= xxh3::kMidSizeMax) return xxh3::hash64_short(in, len, sec);
  xxh3::Acc acc = xxh3::initial_acc();
  loop(acc.lane, in, len, sec);
  return xxh3::finish64_long(acc.lane, len, sec);
}

}  // namespace fastckpt::cpu
