// Kernel lab: the CPU GEMM of csrc/cpu/gemm.h, checked against a plain triple loop, then timed.
// Build and run: bash bench/kernels/run_lab.sh   (compiles this file once per ISA)
// Prints GFLOP/s per shape for the big-GEMM shapes of the recurrence (input projection, weight
// gradients) and for the fused recurrent tile at small row counts.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <algorithm>
#include <random>
#include <vector>

#include "cpu/gemm.h"

using namespace fastrnn::cpu::FASTRNN_ISA;

namespace {

double seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

void reference(Trans ta, Trans tb, int64_t M, int64_t N, int64_t K, const float* A, int64_t lda,
               const float* B, int64_t ldb, float* C, int64_t ldc) {
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < N; ++j) {
      double s = 0;
      for (int64_t k = 0; k < K; ++k)
        s += double(ta == Trans::Yes ? A[k * lda + i] : A[i * lda + k]) *
             double(tb == Trans::Yes ? B[j * ldb + k] : B[k * ldb + j]);
      C[i * ldc + j] = float(s);
    }
}

void run(const char* what, Trans ta, Trans tb, int64_t M, int64_t N, int64_t K, int threads) {
  std::mt19937 gen(42);
  std::normal_distribution<float> dist;
  std::vector<float> A(M * K), B(K * N), C(M * N), R(M * N);
  for (auto& v : A) v = dist(gen);
  for (auto& v : B) v = dist(gen);
  const int64_t lda = ta == Trans::Yes ? M : K, ldb = tb == Trans::Yes ? K : N;
  std::vector<float> pack(gemm_pack_elems<float>(K, N));
  gemm(ta, tb, M, N, K, A.data(), lda, B.data(), ldb, false, C.data(), N, pack.data(), threads);
  if (M * N * K <= 512ll * 512 * 512) {
    reference(ta, tb, M, N, K, A.data(), lda, B.data(), ldb, R.data(), N);
    double err = 0;
    for (int64_t i = 0; i < M * N; ++i) err = std::fmax(err, std::fabs(C[i] - R[i]) / (1 + std::fabs(R[i])));
    if (err > 1e-4) {
      std::printf("%s: MISMATCH (max rel err %.2e)\n", what, err);
      std::exit(1);
    }
  }
  std::vector<double> times;
  for (int rep = 0; rep < 9; ++rep) {
    const double t0 = seconds();
    gemm(ta, tb, M, N, K, A.data(), lda, B.data(), ldb, false, C.data(), N, pack.data(), threads);
    times.push_back(seconds() - t0);
  }
  std::sort(times.begin(), times.end());
  std::printf("%-28s M=%5lld N=%5lld K=%5lld threads=%d: %7.1f GFLOP/s (median of 9)\n", what,
              (long long)M, (long long)N, (long long)K, threads,
              2.0 * M * N * K / times[4] * 1e-9);
}

}  // namespace

int main(int argc, char** argv) {
  const int threads = argc > 1 ? std::atoi(argv[1]) : 1;
  std::printf("ISA %s, %d-byte vectors\n", FASTRNN_ISA_NAME, FASTRNN_VEC_BYTES);
  run("input projection", Trans::No, Trans::Yes, 1600, 1024, 256, threads);
  run("input projection", Trans::No, Trans::Yes, 6400, 2048, 512, threads);
  run("dW = dG^T X", Trans::Yes, Trans::No, 2048, 512, 6400, threads);
  run("dX = dG W", Trans::No, Trans::No, 6400, 512, 2048, threads);
  run("square", Trans::No, Trans::No, 1024, 1024, 1024, threads);
  return 0;
}
