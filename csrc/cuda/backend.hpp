// The CUDA backend contract. Everything here is callable whether or not CUDA was compiled in:
// without it, `status()` says so and the entry points throw std::runtime_error (the Python layer
// checks `status()` first, so users see that only when calling the private module directly).
//
// SAFETY (raw device addresses): the caller passes device addresses of memory on `device` that
// stays allocated, and is not written by other work, until the call returns; in fastckpt they are
// data_ptr()s of CUDA tensors that the Python layer keeps referenced. The kernels only read them.
// Work is enqueued on `stream` (a cudaStream_t passed as an integer; 0 is the legacy default
// stream), so it is ordered after whatever the caller already queued there; the call waits for
// its own work before returning.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "../common/diff_math.hpp"

namespace fastckpt::cuda {

struct Status {
  bool compiled = false;
  bool usable = false;
  int device_count = 0;
  std::string reason;  // why it is not usable, empty when it is
  std::string architectures;  // the SASS/PTX targets compiled in, e.g. "80;90"
};

// Probes the driver with cudaGetDeviceCount only (no context is created). Never throws: a missing
// driver or GPU is a normal answer.
Status status();

struct HashJob {
  uint64_t address;  // device address of the tensor's first byte
  uint64_t nbytes;
};

// XXH3-64 of every leaf of every job, concatenated in job order (ceil(nbytes / leaf_size) per job),
// computed by one kernel launch over all leaves. leaf_size is a power of two in [64, 2^30].
std::vector<uint64_t> leaf_digests(const std::vector<HashJob>& jobs, uint64_t leaf_size, int device,
                                   uintptr_t stream);

struct DiffJob {
  uint64_t a;
  uint64_t b;
  uint64_t nbytes;  // a multiple of size
  diff::Kind kind;
  uint32_t size;
};

// One Partial (the totals) per job; two kernel launches (tiles, then super-tiles) cover all jobs,
// the final sequential fold runs on the host with the same code as the CPU kernel.
std::vector<diff::Partial> diff(const std::vector<DiffJob>& jobs, int device, uintptr_t stream);

}  // namespace fastckpt::cuda
