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

}  // namespace fastrnn::cuda

#define FASTRNN_CUDA_CHECK(call) ::fastrnn::cuda::check((call), #call, __FILE__, __LINE__)
// After a <<<...>>> launch: catches bad launch configurations immediately.
#define FASTRNN_CUDA_CHECK_LAUNCH() FASTRNN_CUDA_CHECK(cudaGetLastError())
