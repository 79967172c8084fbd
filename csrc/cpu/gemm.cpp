// Portable blocked GEMM: A and B are packed into panels that the MR x NR register-blocked
// micro-kernel streams through (the GotoBLAS loop order). Written so that the compiler
// vectorizes the NR loop; hand-written SIMD micro-kernels replace it per ISA.
#include "cpu/gemm.h"

#include <algorithm>
#include <vector>

namespace fastrnn::cpu {
namespace {

template <class T>
struct Blocking;
template <>
struct Blocking<float> {
  static constexpr int64_t MR = 4, NR = 16, MC = 128, KC = 256, NC = 2048;
};
template <>
struct Blocking<double> {
  static constexpr int64_t MR = 4, NR = 8, MC = 96, KC = 256, NC = 1024;
};

template <class T>
T op_a(Trans t, const T* A, int64_t lda, int64_t i, int64_t k) {
  return t == Trans::Yes ? A[k * lda + i] : A[i * lda + k];
}
template <class T>
T op_b(Trans t, const T* B, int64_t ldb, int64_t k, int64_t j) {
  return t == Trans::Yes ? B[j * ldb + k] : B[k * ldb + j];
}

// Packs op(A)[i0:i0+mc, k0:k0+kc] as panels of MR rows: panel p holds [kc][MR], zero padded.
template <class T>
void pack_a(Trans t, const T* A, int64_t lda, int64_t i0, int64_t mc, int64_t k0, int64_t kc,
            T* out) {
  constexpr int64_t MR = Blocking<T>::MR;
  for (int64_t p = 0; p < mc; p += MR) {
    const int64_t rows = std::min(MR, mc - p);
    for (int64_t k = 0; k < kc; ++k) {
      for (int64_t r = 0; r < MR; ++r) {
        *out++ = r < rows ? op_a(t, A, lda, i0 + p + r, k0 + k) : T(0);
      }
    }
  }
}

// Packs op(B)[k0:k0+kc, j0:j0+nc] as panels of NR columns: panel q holds [kc][NR], zero padded.
template <class T>
void pack_b(Trans t, const T* B, int64_t ldb, int64_t k0, int64_t kc, int64_t j0, int64_t nc,
            T* out) {
  constexpr int64_t NR = Blocking<T>::NR;
  for (int64_t q = 0; q < nc; q += NR) {
    const int64_t cols = std::min(NR, nc - q);
    for (int64_t k = 0; k < kc; ++k) {
      if (t == Trans::No && cols == NR) {
        const T* src = B + (k0 + k) * ldb + j0 + q;
        std::copy(src, src + NR, out);
        out += NR;
      } else {
        for (int64_t c = 0; c < NR; ++c) *out++ = c < cols ? op_b(t, B, ldb, k0 + k, j0 + q + c) : T(0);
      }
    }
  }
}

// C[0:rows, 0:cols] += Ap[kc][MR] @ Bp[kc][NR].
template <class T>
void micro_kernel(int64_t kc, const T* __restrict Ap, const T* __restrict Bp, T* __restrict C,
                  int64_t ldc, int64_t rows, int64_t cols) {
  constexpr int64_t MR = Blocking<T>::MR, NR = Blocking<T>::NR;
  T acc[MR][NR] = {};
  for (int64_t k = 0; k < kc; ++k) {
    const T* a = Ap + k * MR;
    const T* b = Bp + k * NR;
    for (int64_t r = 0; r < MR; ++r) {
      for (int64_t c = 0; c < NR; ++c) acc[r][c] += a[r] * b[c];
    }
  }
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) C[r * ldc + c] += acc[r][c];
  }
}

}  // namespace

template <class T>
void gemm(Trans trans_a, Trans trans_b, int64_t M, int64_t N, int64_t K, const T* A, int64_t lda,
          const T* B, int64_t ldb, bool accumulate, T* C, int64_t ldc) {
  using Blk = Blocking<T>;
  if (M <= 0 || N <= 0) return;
  if (!accumulate) {
    for (int64_t i = 0; i < M; ++i) std::fill(C + i * ldc, C + i * ldc + N, T(0));
  }
  if (K <= 0) return;

  const int64_t nc_max = std::min(Blk::NC, N), kc_max = std::min(Blk::KC, K);
  const int64_t mc_max = std::min(Blk::MC, M);
  std::vector<T> bpack(((nc_max + Blk::NR - 1) / Blk::NR) * Blk::NR * kc_max);
  std::vector<T> apack(((mc_max + Blk::MR - 1) / Blk::MR) * Blk::MR * kc_max);

  for (int64_t j0 = 0; j0 < N; j0 += Blk::NC) {
    const int64_t nc = std::min(Blk::NC, N - j0);
    for (int64_t k0 = 0; k0 < K; k0 += Blk::KC) {
      const int64_t kc = std::min(Blk::KC, K - k0);
      pack_b(trans_b, B, ldb, k0, kc, j0, nc, bpack.data());
      for (int64_t i0 = 0; i0 < M; i0 += Blk::MC) {
        const int64_t mc = std::min(Blk::MC, M - i0);
        pack_a(trans_a, A, lda, i0, mc, k0, kc, apack.data());
        for (int64_t q = 0; q < nc; q += Blk::NR) {
          const T* bp = bpack.data() + (q / Blk::NR) * Blk::NR * kc;
          for (int64_t p = 0; p < mc; p += Blk::MR) {
            const T* ap = apack.data() + (p / Blk::MR) * Blk::MR * kc;
            micro_kernel(kc, ap, bp, C + (i0 + p) * ldc + j0 + q, ldc, std::min(Blk::MR, mc - p),
                         std::min(Blk::NR, nc - q));
          }
        }
      }
    }
  }
}

template <class T>
void column_sums(int64_t M, int64_t N, const T* A, int64_t lda, bool accumulate, T* out) {
  if (!accumulate) std::fill(out, out + N, T(0));
  for (int64_t i = 0; i < M; ++i) {
    const T* row = A + i * lda;
    for (int64_t j = 0; j < N; ++j) out[j] += row[j];
  }
}

template void gemm<float>(Trans, Trans, int64_t, int64_t, int64_t, const float*, int64_t,
                          const float*, int64_t, bool, float*, int64_t);
template void gemm<double>(Trans, Trans, int64_t, int64_t, int64_t, const double*, int64_t,
                           const double*, int64_t, bool, double*, int64_t);
template void column_sums<float>(int64_t, int64_t, const float*, int64_t, bool, float*);
template void column_sums<double>(int64_t, int64_t, const double*, int64_t, bool, double*);

}  // namespace fastrnn::cpu
