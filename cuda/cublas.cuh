// cuBLAS for the CUDA kernels: a handle per (host thread, device) and row-major GEMMs.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace fastrnn::cuda {

// Throws std::runtime_error naming the call, file and line when a cuBLAS call fails.
void check_cublas(cublasStatus_t status, const char* call, const char* file, int line);

enum class Op { N, T };

// Row-major C[M, N] = op(A)[M, K] op(B)[K, N] + beta * C on `stream`, on the current device.
// op(A) is A [M, K] (Op::N) or A^T with A stored [K, M] (Op::T); likewise B. Leading dimensions
// are row strides in elements. 64-bit sizes throughout (cuBLAS's _64 interface). With K = 0,
// C = beta * C. Results are deterministic on a given GPU and library version (no atomics).
template <class T>
void gemm(cudaStream_t stream, Op op_a, Op op_b, int64_t M, int64_t N, int64_t K, const T* A,
          int64_t lda, const T* B, int64_t ldb, T beta, T* C, int64_t ldc);

}  // namespace fastrnn::cuda

#define FASTRNN_CUBLAS_CHECK(call) ::fastrnn::cuda::check_cublas((call), #call, __FILE__, __LINE__)
