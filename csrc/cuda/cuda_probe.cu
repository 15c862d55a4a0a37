// Driver/device probe for the CUDA backend. Compiled only when FASTCKPT_CUDA is on.
#include <cuda_runtime.h>

#include "backend.hpp"

#ifndef FASTCKPT_CUDA_ARCHITECTURES
#define FASTCKPT_CUDA_ARCHITECTURES "unknown"
#endif

namespace fastckpt::cuda {

Status status() {
  Status s;
  s.compiled = true;
  s.architectures = FASTCKPT_CUDA_ARCHITECTURES;
  int count = 0;
  // With no driver, cudaGetDeviceCount fails (e.g. error 35) and may leave `count` unwritten;
  // that is an ordinary "no GPU here", not an error to raise.
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) {
    s.device_count = 0;
    s.reason = std::string("CUDA runtime reports: ") + cudaGetErrorString(err);
    cudaGetLastError();  // clear the sticky error so later calls start clean
    return s;
  }
  s.device_count = count;
  if (count == 0) {
    s.reason = "no CUDA device found";
    return s;
  }
  s.usable = true;
  return s;
}

}  // namespace fastckpt::cuda
