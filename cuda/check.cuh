// Error checking for every CUDA runtime call and kernel launch: failures become
// std::runtime_error naming the call, file and line (pybind11 turns them into RuntimeError).
#pragma once

#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

namespace fastrnn::cuda {

inline void check(cudaError_t status, const char* call, const char* file, int line) {
  if (status != cudaSuccess) {
    throw std::runtime_error(std::string("fastrnn CUDA error: ") + call + " failed with " +
                             cudaGetErrorName(status) + " (" + cudaGetErrorString(status) +
                             ") at " + file + ":" + std::to_string(line));
  }
}

// Makes `device` current for the guard's lifetime, then restores the previous device. The
// module's runtime is its own (static), so every entry point sets the device of its tensors.
class DeviceGuard {
 public:
  explicit DeviceGuard(int device) {
    check(cudaGetDevice(&previous_), "cudaGetDevice", __FILE__, __LINE__);
    if (device != previous_) check(cudaSetDevice(device), "cudaSetDevice", __FILE__, __LINE__);
  }
  ~DeviceGuard() { cudaSetDevice(previous_); }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int previous_ = 0;
};

}  // namespace fastrnn::cuda

#define FASTRNN_CUDA_CHECK(call) ::fastrnn::cuda::check((call), #call, __FILE__, __LINE__)
// After a <<<...>>> launch: catches bad launch configurations immediately.
#define FASTRNN_CUDA_CHECK_LAUNCH() FASTRNN_CUDA_CHECK(cudaGetLastError())
