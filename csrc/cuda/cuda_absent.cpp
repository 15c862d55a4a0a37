// Stand-in for the CUDA backend when the extension was built without CUDA (FASTCKPT_CUDA=OFF, or
// AUTO with no nvcc). It keeps the binding free of #ifdefs.
#include <stdexcept>

#include "backend.hpp"

namespace fastckpt::cuda {
namespace {
constexpr const char* kNotBuilt = "fastckpt was built without CUDA (rebuild with FASTCKPT_CUDA=ON and nvcc on PATH)";
}

Status status() {
  Status s;
  s.reason = kNotBuilt;
  return s;
}

std::vector<uint64_t> leaf_digests(const std::vector<HashJob>&, uint64_t, int, uintptr_t) {
  throw std::runtime_error(kNotBuilt);
}

std::vector<diff::Partial> diff(const std::vector<DiffJob>&, int, uintptr_t) { throw std::runtime_error(kNotBuilt); }

}  // namespace fastckpt::cuda
