// Stand-in for the CUDA backend when the extension was built without CUDA (FASTCKPT_CUDA=OFF, or
// AUTO with no nvcc). It keeps the binding free of #ifdefs.
#include "backend.hpp"

namespace fastckpt::cuda {

Status status() {
  Status s;
  s.reason = "fastckpt was built without CUDA (rebuild with FASTCKPT_CUDA=ON and nvcc on PATH)";
  return s;
}

}  // namespace fastckpt::cuda
