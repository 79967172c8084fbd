// Matrix products for the CPU kernels (per-ISA: see vec.h). Row-major, leading dimensions in
// elements.
//
// Everything is built on one register-blocked micro-kernel, tile<G>(): it multiplies up to MR
// rows of A (any strides, so A or A^T without packing) by a packed B panel [K][G][W] (G vectors
// of W lanes per k) and hands the MR x G accumulators to an epilogue. The big GEMMs use G = 2
// (panels of 2W columns, packed per call); the recurrence uses G = gates, with W_hh packed so that
// one panel holds all gates of W hidden units and the epilogue is the cell's pointwise math.
// Each output element is reduced over k in one fixed order by one thread, so results do not
// depend on the thread count.
#pragma once

#include <cstdint>

#include "cpu/threads.h"
#include "cpu/vec.h"

namespace fastrnn::cpu::FASTRNN_ISA {

enum class Trans : bool { No = false, Yes = true };

inline int64_t imin(int64_t a, int64_t b) { return a < b ? a : b; }
inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Vector registers of the ISA; the micro-kernel keeps MR*G accumulators, G B vectors and one
// broadcast A value in registers.
constexpr int kRegisters = FASTRNN_VEC_BYTES == 64 ? 32 : 16;
template <int G>
constexpr int tile_rows() {
  constexpr int fit = (kRegisters - G - 2) / G;
  return fit < 1 ? 1 : (fit > 8 ? 8 : fit);
}

// A view of op(A): element (r, k) at base[r * row_stride + k * k_stride].
template <class T>
struct MatA {
  const T* base;
  int64_t row_stride, k_stride;
  static MatA of(Trans t, const T* A, int64_t lda) {
    return t == Trans::Yes ? MatA{A, 1, lda} : MatA{A, lda, 1};
  }
  // The view starting at element (r, k).
  MatA at(int64_t r, int64_t k) const {
    return MatA{base + r * row_stride + k * k_stride, row_stride, k_stride};
  }
};

// acc[r][g] = sum_k A(r, k) * panel[k][g] for r < rows (rows <= tile_rows<G>()), k < K; then
// epilogue(acc). Rows beyond `rows` compute on a repeated valid row and are discarded.
template <int G, class T, class Epilogue>
inline void tile(int rows, int64_t K, MatA<T> a, const T* panel, Epilogue&& epilogue) {
  using V = VecOf<T>;
  constexpr int W = V::kWidth;
  constexpr int MR = tile_rows<G>();
  V acc[MR][G];
  const T* arow[MR];
  for (int r = 0; r < MR; ++r) {
    for (int g = 0; g < G; ++g) acc[r][g] = V(T(0));
    arow[r] = a.base + (r < rows ? r : rows - 1) * a.row_stride;
  }
  for (int64_t k = 0; k < K; ++k) {
    V b[G];
    for (int g = 0; g < G; ++g) b[g] = V::load(panel + (k * G + g) * W);
    const int64_t ak = k * a.k_stride;
    for (int r = 0; r < MR; ++r) {
      const V av(arow[r][ak]);
      for (int g = 0; g < G; ++g) acc[r][g] += av * b[g];
    }
  }
  epilogue(acc);
}

// Packs columns of op(B) [K, N] into panels of G*W columns: panel p holds [K][G][W] for columns
// [p*G*W, (p+1)*G*W), zero padded past N. Panels [p0, p1) only (for splitting across threads).
template <int G, class T>
void pack_panels(Trans t, const T* B, int64_t ldb, int64_t k0, int64_t K, int64_t N, int64_t p0,
                 int64_t p1, T* out) {
  constexpr int64_t NR = G * VecOf<T>::kWidth;
  for (int64_t p = p0; p < p1; ++p) {
    T* dst = out + p * K * NR;
    const int64_t j0 = p * NR, cols = imin(NR, N - j0);
    for (int64_t k = 0; k < K; ++k) {
      for (int64_t c = 0; c < NR; ++c) {
        T v = T(0);
        if (c < cols) v = t == Trans::Yes ? B[(j0 + c) * ldb + k0 + k] : B[(k0 + k) * ldb + j0 + c];
        dst[k * NR + c] = v;
      }
    }
  }
}

template <class T>
struct GemmBlocking {
  static constexpr int G = 2;
  static constexpr int64_t NR = G * VecOf<T>::kWidth;
  static constexpr int64_t KC = 256;
  static constexpr int64_t MR = tile_rows<G>();
};

// Workspace (elements) that gemm() needs for packing B of an [*, N] product with K rows.
template <class T>
int64_t gemm_pack_elems(int64_t K, int64_t N) {
  using Blk = GemmBlocking<T>;
  return imin(K, Blk::KC) * ceil_div(N, Blk::NR) * Blk::NR;
}

// C[M,N] = op(A)[M,K] @ op(B)[K,N] (+ C when accumulate). op(A) = A [M,K] (lda) or, with
// trans_a, A^T of A stored [K,M]; likewise op(B) from B [K,N] or B^T of B stored [N,K].
// pack: gemm_pack_elems(K, N) elements of scratch. Without accumulate, C is only written.
template <class T>
void gemm(Trans trans_a, Trans trans_b, int64_t M, int64_t N, int64_t K, const T* A, int64_t lda,
          const T* B, int64_t ldb, bool accumulate, T* C, int64_t ldc, T* pack, int threads) {
  using V = VecOf<T>;
  using Blk = GemmBlocking<T>;
  constexpr int W = V::kWidth;
  if (M <= 0 || N <= 0) return;
  if (K <= 0) {
    if (!accumulate) {
      for (int64_t i = 0; i < M; ++i)
        for (int64_t j = 0; j < N; ++j) C[i * ldc + j] = T(0);
    }
    return;
  }
  const int64_t panels = ceil_div(N, Blk::NR);
  const int64_t row_tiles = ceil_div(M, Blk::MR);
  // Small products are not worth waking other threads.
  if (M * N * K < 64 * 64 * 64) threads = 1;
  const MatA<T> a = MatA<T>::of(trans_a, A, lda);
  SpinBarrier barrier(threads);
  parallel(threads, [&](int tid, int n) {
    for (int64_t k0 = 0; k0 < K; k0 += Blk::KC) {
      const int64_t kc = imin(Blk::KC, K - k0);
      const bool add = accumulate || k0 > 0;
      pack_panels<Blk::G>(trans_b, B, ldb, k0, kc, N, panels * tid / n, panels * (tid + 1) / n,
                          pack);
      barrier.wait();
      // Work items: (panel, row tile) pairs, split in contiguous ranges so each thread keeps a
      // panel hot while it walks down the rows.
      const int64_t items = panels * row_tiles;
      for (int64_t it = items * tid / n; it < items * (tid + 1) / n; ++it) {
        const int64_t p = it / row_tiles, i0 = (it % row_tiles) * Blk::MR;
        const int rows = static_cast<int>(imin(Blk::MR, M - i0));
        const int64_t j0 = p * Blk::NR;
        const int cols = static_cast<int>(imin(Blk::NR, N - j0));
        tile<Blk::G>(rows, kc, a.at(i0, k0), pack + p * kc * Blk::NR,
                     [&](V (&acc)[Blk::MR][Blk::G]) {
                       for (int r = 0; r < rows; ++r) {
                         T* c = C + (i0 + r) * ldc + j0;
                         for (int g = 0; g < Blk::G; ++g) {
                           const int n_lanes = cols - g * W;
                           if (n_lanes <= 0) break;
                           V out = acc[r][g];
                           if (n_lanes >= W) {
                             if (add) out += V::load(c + g * W);
                             out.store(c + g * W);
                           } else {
                             if (add) out += V::load_partial(c + g * W, n_lanes);
                             out.store_partial(c + g * W, n_lanes);
                           }
                         }
                       }
                     });
      }
      barrier.wait();  // the next k block repacks B
    }
  });
}

}  // namespace fastrnn::cpu::FASTRNN_ISA
