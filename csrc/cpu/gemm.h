// Dense matrix products for the CPU core (row-major, leading dimensions in elements).
#pragma once

#include <cstdint>

namespace fastrnn::cpu {

enum class Trans : bool { No = false, Yes = true };

// C[M,N] = op(A)[M,K] @ op(B)[K,N] (+ C when accumulate).
//   op(A) = A [M,K] (lda >= K), or A^T with A stored [K,M] (lda >= M) when trans_a.
//   op(B) = B [K,N] (ldb >= N), or B^T with B stored [N,K] (ldb >= K) when trans_b.
// Without accumulate, C is overwritten (its old contents, even NaN, are never read).
template <class T>
void gemm(Trans trans_a, Trans trans_b, int64_t M, int64_t N, int64_t K, const T* A, int64_t lda,
          const T* B, int64_t ldb, bool accumulate, T* C, int64_t ldc);

// out[j] (+)= sum_i A[i, j] for A [M, N] with leading dimension lda.
template <class T>
void column_sums(int64_t M, int64_t N, const T* A, int64_t lda, bool accumulate, T* out);

}  // namespace fastrnn::cpu
