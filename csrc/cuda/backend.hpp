// The CUDA backend contract. Everything here is callable whether or not CUDA was compiled in:
// without it, `status()` says so and the entry points are never reached (the Python layer checks).
#pragma once

#include <string>

namespace fastckpt::cuda {

struct Status {
  bool compiled = false;
  bool usable = false;
  int device_count = 0;
  std::string reason;  // why it is not usable, empty when it is
  std::string architectures;  // the SASS/PTX targets compiled in, e.g. "80;90"
};

// Probes the driver once per call. Never throws: a missing driver or GPU is a normal answer.
Status status();

}  // namespace fastckpt::cuda
