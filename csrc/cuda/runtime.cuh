// Small CUDA runtime helpers shared by the kernels' host code: every runtime call is checked and a
// failure becomes a std::runtime_error (RuntimeError in Python) that names the call and the error.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <stdexcept>
#include <string>

#ifndef FASTCKPT_CUDA_ARCHITECTURES
#define FASTCKPT_CUDA_ARCHITECTURES "unknown"
#endif

namespace fastckpt::cuda::detail {

[[noreturn]] inline void throw_cuda(cudaError_t err, const std::string& what) {
  // Clears a non-sticky error so the next call starts clean; a sticky one (illegal address,
  // launch failure) stays, and every later CUDA call in the process will fail with it too.
  cudaGetLastError();
  std::string msg = "fastckpt CUDA backend: " + what + " failed: " + cudaGetErrorName(err) + " (" +
                    cudaGetErrorString(err) + ")";
  if (err == cudaErrorIllegalAddress || err == cudaErrorLaunchFailure || err == cudaErrorMisalignedAddress) {
    msg += "; the CUDA context is corrupted and the process must restart (was a tensor freed or "
           "resized while fastckpt read it?)";
  } else if (err == cudaErrorNoKernelImageForDevice || err == cudaErrorUnsupportedPtxVersion) {
    msg += "; this build has kernels for " FASTCKPT_CUDA_ARCHITECTURES
           " only: rebuild with -Ccmake.define.FASTCKPT_CUDA_ARCHITECTURES=<your arch> or a newer nvcc";
  }
  throw std::runtime_error(msg);
}

inline void check(cudaError_t err, const char* what) {
  if (err != cudaSuccess) throw_cuda(err, what);
}

// Kernel launches report configuration errors through cudaGetLastError, and faults only at the
// next synchronizing call; both are checked.
inline void check_launch(const char* kernel) {
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) throw_cuda(err, std::string("launching ") + kernel);
}

// Makes `device` current for the scope and restores the caller's device afterwards (the driver's
// current context is shared with torch's own CUDA runtime in this process).
class DeviceScope {
 public:
  explicit DeviceScope(int device) {
    int count = 0;
    check(cudaGetDeviceCount(&count), "cudaGetDeviceCount");
    if (device < 0 || device >= count) {
      throw std::invalid_argument("CUDA device index " + std::to_string(device) + " is out of range: " +
                                  std::to_string(count) + " device(s) visible");
    }
    check(cudaGetDevice(&previous_), "cudaGetDevice");
    if (previous_ != device) {
      check(cudaSetDevice(device), "cudaSetDevice");
      changed_ = true;
    }
  }
  ~DeviceScope() {
    if (changed_) cudaSetDevice(previous_);
  }
  DeviceScope(const DeviceScope&) = delete;
  DeviceScope& operator=(const DeviceScope&) = delete;

 private:
  int previous_ = 0;
  bool changed_ = false;
};

// Stream-ordered scratch memory: cudaMallocAsync where the device has memory pools, else
// cudaMalloc. Freed (stream-ordered) when the scope ends, including on error.
class DeviceBuffer {
 public:
  DeviceBuffer(size_t bytes, int device, cudaStream_t stream) : stream_(stream) {
    if (bytes == 0) return;
    int pools = 0;
    check(cudaDeviceGetAttribute(&pools, cudaDevAttrMemoryPoolsSupported, device),
          "cudaDeviceGetAttribute(MemoryPoolsSupported)");
    async_ = pools != 0;
    if (async_) {
      check(cudaMallocAsync(&ptr_, bytes, stream), "cudaMallocAsync (scratch for descriptors and results)");
    } else {
      check(cudaMalloc(&ptr_, bytes), "cudaMalloc (scratch for descriptors and results)");
    }
  }
  ~DeviceBuffer() {
    if (ptr_ == nullptr) return;
    if (async_) {
      cudaFreeAsync(ptr_, stream_);
    } else {
      cudaFree(ptr_);
    }
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  uint8_t* data() const { return static_cast<uint8_t*>(ptr_); }

 private:
  void* ptr_ = nullptr;
  cudaStream_t stream_;
  bool async_ = false;
};

// A stream that is capturing a CUDA graph cannot run our synchronous host round trip.
inline void check_not_capturing(cudaStream_t stream) {
  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  check(cudaStreamIsCapturing(stream, &capture), "cudaStreamIsCapturing");
  if (capture != cudaStreamCaptureStatusNone) {
    throw std::runtime_error(
        "fastckpt cannot hash or diff on a stream that is capturing a CUDA graph: it copies results to "
        "the host and waits; call it outside torch.cuda.graph()");
  }
}

constexpr size_t align_up(size_t x, size_t a) { return (x + a - 1) / a * a; }

}  // namespace fastckpt::cuda::detail
