// cuBLAS handles and row-major GEMMs (see cublas.cuh).
//
// Handles: cuBLAS handles must not be used by two host threads at once, and creating one costs far
// more than a small GEMM, so each host thread takes one per device from a shared pool on first use
// and gives it back when the thread ends. Handles are never destroyed: destroying them during
// interpreter shutdown, after the CUDA context may be gone, can crash.
#include <mutex>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <vector>

#include "check.cuh"
#include "cublas.cuh"

namespace fastrnn::cuda {

void check_cublas(cublasStatus_t status, const char* call, const char* file, int line) {
  if (status != CUBLAS_STATUS_SUCCESS) {
    throw std::runtime_error(std::string("fastrnn cuBLAS error: ") + call + " failed with " +
                             cublasGetStatusName(status) + " (" + cublasGetStatusString(status) +
                             ") at " + file + ":" + std::to_string(line));
  }
}

namespace {

class HandlePool {
 public:
  cublasHandle_t take(int device) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      auto& free = free_[device];
      if (!free.empty()) {
        cublasHandle_t h = free.back();
        free.pop_back();
        return h;
      }
    }
    cublasHandle_t h = nullptr;
    FASTRNN_CUBLAS_CHECK(cublasCreate(&h));
    return h;
  }
  void give_back(int device, cublasHandle_t h) {
    std::lock_guard<std::mutex> lock(mutex_);
    free_[device].push_back(h);
  }

 private:
  std::mutex mutex_;
  std::unordered_map<int, std::vector<cublasHandle_t>> free_;
};

HandlePool& pool() {
  static HandlePool* p = new HandlePool;  // leaked on purpose, see the file comment
  return *p;
}

// The handles one host thread holds, returned to the pool when the thread ends.
struct ThreadHandles {
  std::unordered_map<int, cublasHandle_t> by_device;
  ~ThreadHandles() {
    for (auto& [device, h] : by_device) pool().give_back(device, h);
  }
};

cublasHandle_t handle_for(cudaStream_t stream) {
  int device = 0;
  FASTRNN_CUDA_CHECK(cudaGetDevice(&device));
  thread_local ThreadHandles handles;
  auto it = handles.by_device.find(device);
  if (it == handles.by_device.end()) {
    it = handles.by_device.emplace(device, pool().take(device)).first;
  }
  FASTRNN_CUBLAS_CHECK(cublasSetStream(it->second, stream));
  return it->second;
}

cublasOperation_t as_cublas(Op op) { return op == Op::N ? CUBLAS_OP_N : CUBLAS_OP_T; }

cublasStatus_t gemm_call(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int64_t m,
                         int64_t n, int64_t k, const float* alpha, const float* A, int64_t lda,
                         const float* B, int64_t ldb, const float* beta, float* C, int64_t ldc) {
  return cublasSgemm_64(h, ta, tb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
}
cublasStatus_t gemm_call(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int64_t m,
                         int64_t n, int64_t k, const double* alpha, const double* A, int64_t lda,
                         const double* B, int64_t ldb, const double* beta, double* C,
                         int64_t ldc) {
  return cublasDgemm_64(h, ta, tb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
}

}  // namespace

template <class T>
void gemm(cudaStream_t stream, Op op_a, Op op_b, int64_t M, int64_t N, int64_t K, const T* A,
          int64_t lda, const T* B, int64_t ldb, T beta, T* C, int64_t ldc) {
  if (M == 0 || N == 0) return;
  const T alpha(1);
  // A row-major [r, c] matrix is the column-major [c, r] matrix at the same address, so the
  // row-major C = op(A) op(B) is the column-major C^T = op(B)^T op(A)^T: swap the operands.
  FASTRNN_CUBLAS_CHECK(gemm_call(handle_for(stream), as_cublas(op_b), as_cublas(op_a), N, M, K,
                                 &alpha, B, ldb, A, lda, &beta, C, ldc));
}

template void gemm<float>(cudaStream_t, Op, Op, int64_t, int64_t, int64_t, const float*, int64_t,
                          const float*, int64_t, float, float*, int64_t);
template void gemm<double>(cudaStream_t, Op, Op, int64_t, int64_t, int64_t, const double*,
                           int64_t, const double*, int64_t, double, double*, int64_t);

}  // namespace fastrnn::cuda
