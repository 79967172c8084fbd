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
#include <type_traits>
#include <utility>

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

// The first n lanes (n <= W) of p, as a full vector when n == W.
template <class T>
inline VecOf<T> load_n(const T* p, int n) {
  return n == VecOf<T>::kWidth ? VecOf<T>::load(p) : VecOf<T>::load_partial(p, n);
}
// The same for weights stored as bfloat16 or float16 (RnnForwardArgs::half_weights), widened
// exactly.
template <class Half>
inline VecOf<float> load_half_n(const Half* p, int n) {
  if (n == kFloatLanes) return load_half(p);
  Half lanes[kFloatLanes] = {};
  for (int i = 0; i < n; ++i) lanes[i] = p[i];
  return load_half(lanes);
}
inline VecOf<float> load_n(const Bf16Bits* p, int n) { return load_half_n(p, n); }
inline VecOf<float> load_n(const Fp16Bits* p, int n) { return load_half_n(p, n); }
template <class T>
inline void store_n(VecOf<T> v, T* p, int n) {
  if (n == VecOf<T>::kWidth) {
    v.store(p);
  } else {
    v.store_partial(p, n);
  }
}

// acc[r][g] = sum_k A(r, k) * panel[k][g] for r < R, k < K, with R fixed at compile time so
// that a one-row step (batch 1) does one row's work.
template <int G, int R, class T>
inline void accumulate_rows(int rows, int64_t K, MatA<T> a, const T* panel,
                            VecOf<T> (&out)[tile_rows<G>()][G]) {
  if constexpr (R > 1) {
    if (rows < R) return accumulate_rows<G, R - 1>(rows, K, a, panel, out);
  }
  using V = VecOf<T>;
  constexpr int W = V::kWidth;
  // Local accumulators (copied out once at the end) so that they live in registers. A tile of
  // fewer than 8 chains (a batch-1 step) would wait on FMA latency, so it keeps kSets
  // accumulator sets over interleaved k and adds them up at the end, in a fixed order.
  constexpr int kChains = R * G;
  constexpr int kSets = kChains >= 8 ? 1 : (8 + kChains - 1) / kChains;
  V acc[kSets][R][G];
  const T* arow[R];
  for (int r = 0; r < R; ++r) {
    for (int set = 0; set < kSets; ++set)
      for (int g = 0; g < G; ++g) acc[set][r][g] = V(T(0));
    arow[r] = a.base + r * a.row_stride;
  }
  auto step = [&](int set, int64_t k) {
    V b[G];
    for (int g = 0; g < G; ++g) b[g] = V::load(panel + (k * G + g) * W);
    const int64_t ak = k * a.k_stride;
    for (int r = 0; r < R; ++r) {
      const V av(arow[r][ak]);
      for (int g = 0; g < G; ++g) acc[set][r][g] += av * b[g];
    }
  };
  int64_t k = 0;
  for (; k + kSets <= K; k += kSets) {
    for (int set = 0; set < kSets; ++set) step(set, k + set);
  }
  for (int set = 0; k < K; ++k, ++set) step(set, k);
  for (int r = 0; r < R; ++r) {
    for (int g = 0; g < G; ++g) {
      V sum = acc[0][r][g];
      for (int set = 1; set < kSets; ++set) sum += acc[set][r][g];
      out[r][g] = sum;
    }
  }
}

// The micro-kernel: acc = A[rows, K] @ panel for 1 <= rows <= tile_rows<G>(), then
// epilogue(acc) (only acc[r] for r < rows is meaningful).
template <int G, class T, class Epilogue>
inline void tile(int rows, int64_t K, MatA<T> a, const T* panel, Epilogue&& epilogue) {
  VecOf<T> acc[tile_rows<G>()][G];
  // One row (a batch-1 step) is common enough to get its own call: the compiler inlines the
  // one-row kernel here, where the walk down from tile_rows would be calls through its levels.
  // RNN tanh B=1 H=128: 1.38 -> 1.17 us per step (bench/kernels/NOTES.md, session 9).
  if (rows == 1) {
    accumulate_rows<G, 1>(1, K, a, panel, acc);
  } else {
    accumulate_rows<G, tile_rows<G>()>(rows, K, a, panel, acc);
  }
  epilogue(acc);
}

// The lane exchange that both in-register transposes here are built from (transpose_block
// and dot_lanes' fold), at a distance S (a power of two below W): afterwards a[l] = a[l] and
// b[l] = a[l + S] where (l / S) is even, a[l] = b[l - S] and b[l] = b[l] where it is odd, i.e.
// a's odd blocks of S lanes and b's even ones trade places.
template <int S, class V, int... L>
inline void exchange_lanes(V& a, V& b, std::integer_sequence<int, L...>) {
  constexpr int W = V::kWidth;
  const V a0 = a, b0 = b;
  a = V::from(__builtin_shufflevector(a0.v, b0.v, ((L / S) % 2 == 0 ? L : W + L - S)...));
  b = V::from(__builtin_shufflevector(a0.v, b0.v, ((L / S) % 2 == 0 ? L + S : W + L)...));
}
template <int S, class V>
inline void exchange_lanes(V& a, V& b) {
  exchange_lanes<S>(a, b, std::make_integer_sequence<int, V::kWidth>{});
}

// Transposes the W x W block held in v (row r in v[r]) in place, in log2(W) rounds: each swaps
// the off-diagonal S x S blocks of every 2S x 2S block.
template <int S, class V>
inline void transpose_block(V* v) {
  for (int j = 0; j < V::kWidth; ++j) {
    if ((j / S) % 2 == 0) exchange_lanes<S>(v[j], v[j + S]);
  }
  if constexpr (S > 1) transpose_block<S / 2>(v);
}

// dst[k * dst_stride + c] = src[c * ld + k] for c < W, k < K: one lane group of a packed panel
// built from rows of src (rows c >= rows are zero). W x W blocks are transposed in registers,
// so that both the reads (along rows of src) and the writes (along lanes) are whole vectors
// (LSTM H=512's W_hh, 1M floats, on one core: 607 -> 168 us through 16 x 16 blocks in cache).
template <class T>
void pack_transposed(const T* src, int64_t ld, int64_t rows, int64_t K, int64_t dst_stride,
                     T* dst) {
  using V = VecOf<T>;
  constexpr int W = V::kWidth;
  int64_t k0 = 0;
  for (; k0 + W <= K; k0 += W) {
    V block[W];
    for (int c = 0; c < W; ++c) block[c] = c < rows ? V::load(src + c * ld + k0) : V(T(0));
    transpose_block<W / 2>(block);
    for (int kk = 0; kk < W; ++kk) block[kk].store(dst + (k0 + kk) * dst_stride);
  }
  const int tail = static_cast<int>(K - k0);  // < W
  for (int c = 0; c < W; ++c) {
    for (int kk = 0; kk < tail; ++kk) {
      dst[(k0 + kk) * dst_stride + c] = c < rows ? src[c * ld + k0 + kk] : T(0);
    }
  }
}

// Packs columns of op(B) [K, N] into panels of G*W columns: panel p holds [K][G][W] for columns
// [p*G*W, (p+1)*G*W), zero padded past N. Panels [p0, p1) only (for splitting across threads).
template <int G, class T>
void pack_panels(Trans t, const T* B, int64_t ldb, int64_t k0, int64_t K, int64_t N, int64_t p0,
                 int64_t p1, T* out) {
  constexpr int64_t W = VecOf<T>::kWidth, NR = G * W;
  for (int64_t p = p0; p < p1; ++p) {
    T* dst = out + p * K * NR;
    for (int g = 0; g < G; ++g) {
      const int64_t j0 = p * NR + g * W, cols = imin(W, N - j0);
      if (t == Trans::Yes) {
        pack_transposed(cols > 0 ? B + j0 * ldb + k0 : B, ldb, cols, K, NR, dst + g * W);
        continue;
      }
      for (int64_t k = 0; k < K; ++k) {
        const T* src = B + (k0 + k) * ldb + j0;
        for (int64_t c = 0; c < W; ++c) dst[k * NR + g * W + c] = c < cols ? src[c] : T(0);
      }
    }
  }
}

// One step of the transpose-reduction in dot_lanes(): lanes of a and b pairwise summed at
// distance s, a's sums kept in the even blocks of s lanes and b's in the odd ones:
// out[l] = a[l] + a[l + s] when (l / s) is even, b[l - s] + b[l] when odd.
template <int S, class V>
inline V fold_pair(V a, V b) {
  exchange_lanes<S>(a, b);
  return a + b;
}

// Folds v[0, n) in place, pairing v[j] with v[j + n/2] at distance S, down to S = 1: after it,
// lane c of v[0] is the sum of the lanes of the original v[c].
template <int S, class V>
inline void fold_all(V* v) {
  constexpr int n = 2 * S;  // vectors left at this level
  for (int j = 0; j < n / 2; ++j)
    v[j] = fold_pair<S>(v[j], v[j + n / 2]);
  if constexpr (S > 1) fold_all<S / 2>(v);
}

// acc[i] += a[0:K] * b[i][0:K] lane-wise for i < R rows of b (row stride ldb). b holds T, or
// 16-bit weights for T = float (widened as loaded).
template <int R, class T, class B>
inline void accumulate_dots(const T* a, const B* b, int64_t ldb, int64_t K, VecOf<T>* acc) {
  using V = VecOf<T>;
  constexpr int W = V::kWidth;
  int64_t k = 0;
  for (; k + W <= K; k += W) {
    const V av = V::load(a + k);
    for (int i = 0; i < R; ++i) acc[i] += av * load_n(b + i * ldb + k, W);
  }
  if (k < K) {
    const int tail = static_cast<int>(K - k);
    const V av = V::load_partial(a + k, tail);
    for (int i = 0; i < R; ++i) acc[i] += av * load_n(b + i * ldb + k, tail);
  }
}

// out lane c = dot(a[0:K], b[c][0:K]) for c < n rows of b (row stride ldb, n <= W), 0 beyond.
// Rows are read four at a time (four streams, which the prefetcher follows when b comes from
// L3; sixteen at once measured 8% slower there), each into its own accumulator; their lane
// sums are then formed all at once by a transpose-reduction (W - 1 shuffle pairs and adds, in a
// fixed order), not as W sums of W scalars, whose chains of dependent adds dominated a step
// whose weights sit in L2.
template <class T, class B>
inline VecOf<T> dot_lanes(const T* a, const B* b, int64_t ldb, int64_t K, int n) {
  using V = VecOf<T>;
  constexpr int W = V::kWidth;
  V acc[W];
  for (int c = 0; c < W; ++c) acc[c] = V(T(0));
  int c = 0;
  if constexpr (W >= 4) {  // (two-lane vectors never have four rows; GCC warned about acc + c)
    for (; c + 4 <= n; c += 4) accumulate_dots<4>(a, b + c * ldb, ldb, K, acc + c);
  }
  for (; c < n; ++c) accumulate_dots<1>(a, b + c * ldb, ldb, K, acc + c);
  fold_all<W / 2>(acc);
  return acc[0];
}

// Products where packing B would cost as much as the product, computed straight from B, one
// row of C at a time, C = op(A) @ op(B) + (C when accumulate, else bias[N] broadcast over rows
// when given, else 0). Two shapes take these paths (see gemm()):
//  - few rows of A (a single step at batch 1, say), A row-major;
//  - a shallow product (K of a few, op(B) = B, A in any layout): a weight gradient over one
//    or a few rows. Packed, M=1536 N=512 K=1 took 271 us on one core (each 6-row tile paid its
//    set-up for one k); row by row it is one pass over C, 60-80 us. Up to K=8 this path was
//    faster in bench/kernels/gemm_lab.cpp, at K=16 the two were even.
// The dot path streams B from L2 or L3: it is split over threads by output columns from
// 2^kDirectSplitLog2 multiply-adds (the recurrence's direct steps use the same limit). The
// combine path runs on one thread (a pass over C that was not measured on two).
constexpr int64_t kDirectRows = 8;
constexpr int64_t kDirectDepth = 8;
constexpr int kDirectSplitLog2 = 18;

// The first value of C's row segment [j0, j0 + cols): what the product is added to.
template <class T>
inline VecOf<T> initial(const T* c, const T* bias, bool accumulate, int64_t j0, int cols) {
  if (accumulate) return load_n(c + j0, cols);
  return bias ? load_n(bias + j0, cols) : VecOf<T>(T(0));
}

// op(B) = B^T (B stored [N,K]: T, or 16-bit weights for T = float), A row-major: dot
// products of rows; column blocks of W split over the threads.
template <class T, class BT>
void gemm_direct_dots(int64_t M, int64_t N, int64_t K, const T* A, int64_t lda, const BT* B,
                      int64_t ldb, bool accumulate, T* C, int64_t ldc, const T* bias,
                      int threads) {
  constexpr int W = VecOf<T>::kWidth;
  const int64_t blocks = ceil_div(N, W);
  if (M * N * K < (int64_t{1} << kDirectSplitLog2)) threads = 1;
  parallel(threads, [&](int tid, int n) {
    for (int64_t i = 0; i < M; ++i) {
      T* c = C + i * ldc;
      for (int64_t blk = blocks * tid / n; blk < blocks * (tid + 1) / n; ++blk) {
        const int64_t j0 = blk * W;
        const int cols = static_cast<int>(imin(W, N - j0));
        store_n(initial(c, bias, accumulate, j0, cols) +
                    dot_lanes(A + i * lda, B + j0 * ldb, ldb, K, cols),
                c + j0, cols);
      }
    }
  });
}

// c[0:N] = init + sum_{k < KB} a[k * a_stride] * B[k][0:N], the coefficients broadcast once
// and kept in registers; four output vectors are in flight at a time (one at a time waited on
// FMA latency: 3-4x slower at K <= 8).
template <int KB, class T, class BT>
inline void combine_rows(const T* a, int64_t a_stride, const BT* B, int64_t ldb, int64_t N,
                         bool add, const T* bias, T* c) {
  using V = VecOf<T>;
  constexpr int W = V::kWidth, kUnroll = 4;  // independent vectors in flight
  V coef[KB];
  for (int k = 0; k < KB; ++k) coef[k] = V(a[k * a_stride]);
  int64_t j0 = 0;
  for (; j0 + kUnroll * W <= N; j0 += kUnroll * W) {
    V out[kUnroll];
    for (int u = 0; u < kUnroll; ++u) out[u] = initial(c, bias, add, j0 + u * W, W);
    for (int k = 0; k < KB; ++k) {
      for (int u = 0; u < kUnroll; ++u) out[u] += coef[k] * load_n(B + k * ldb + j0 + u * W, W);
    }
    for (int u = 0; u < kUnroll; ++u) out[u].store(c + j0 + u * W);
  }
  for (; j0 < N; j0 += W) {
    const int cols = static_cast<int>(imin(W, N - j0));
    V out = initial(c, bias, add, j0, cols);
    for (int k = 0; k < KB; ++k) out += coef[k] * load_n(B + k * ldb + j0, cols);
    store_n(out, c + j0, cols);
  }
}

// f(std::integral_constant<int, n>{}) for a run-time 0 <= n < N: one dispatch, so that the loop
// inside f is compiled for each n.
template <int N, class F>
inline void with_constant(int n, F&& f) {
  if constexpr (N > 0) {
    if (n == N - 1) return f(std::integral_constant<int, N - 1>{});
    with_constant<N - 1>(n, f);
  }
}

// op(B) = B (row-major [K,N]; T, or 16-bit weights for T = float), A any layout: each row of C
// is a combination of rows of B, kKBlock of them per pass over the row, then the K % kKBlock
// left. The depth of the last pass is dispatched once per product, not per row: walking down
// to it through one out-of-line instantiation per level cost 8 calls per row when K = 1 (the
// weight gradients of a batch-1 step: LSTMCell H=128 backward 53 us, most of it in those
// calls; bench/kernels/NOTES.md).
template <class T, class BT>
void gemm_direct_combine(int64_t M, int64_t N, int64_t K, MatA<T> a, const BT* B, int64_t ldb,
                         bool accumulate, T* C, int64_t ldc, const T* bias) {
  constexpr int kKBlock = 8;
  const int64_t full_end = K / kKBlock * kKBlock;
  with_constant<kKBlock>(static_cast<int>(K - full_end), [&](auto tail) {
    constexpr int kTail = decltype(tail)::value;
    for (int64_t i = 0; i < M; ++i) {
      const T* ai = a.base + i * a.row_stride;
      T* c = C + i * ldc;
      for (int64_t k0 = 0; k0 < full_end; k0 += kKBlock) {
        combine_rows<kKBlock>(ai + k0 * a.k_stride, a.k_stride, B + k0 * ldb, ldb, N,
                              accumulate || k0 > 0, bias, c);
      }
      if constexpr (kTail > 0) {
        combine_rows<kTail>(ai + full_end * a.k_stride, a.k_stride, B + full_end * ldb, ldb, N,
                            accumulate || full_end > 0, bias, c);
      }
    }
  });
}

// The micro-kernel's unpacked counterpart for a few rows: acc[r][g] lane c = dot(A row r,
// w row (g * gate_rows + j0 + c)) for c < nj (0 beyond), with w [*, K] row-major (T, or
// 16-bit weights for T = float).
template <int G, class T, class WT, class Epilogue>
inline void direct_tile(int rows, int64_t K, const T* a, int64_t lda, const WT* w,
                        int64_t gate_rows, int64_t j0, int nj, Epilogue&& epilogue) {
  using V = VecOf<T>;
  V acc[tile_rows<G>()][G];
  for (int r = 0; r < rows; ++r) {
    for (int g = 0; g < G; ++g)
      acc[r][g] = dot_lanes(a + r * lda, w + (g * gate_rows + j0) * K, K, K, nj);
  }
  epilogue(acc);
}

// The same for B used as stored (row-major [K, *]; T, or 16-bit weights for T = float):
// acc[r][0] = sum_k A[r][k] * b[k][0:nj].
template <class T, class BT, class Epilogue>
inline void direct_rows_tile(int rows, int64_t K, const T* a, int64_t lda, const BT* b,
                             int64_t ldb, int nj, Epilogue&& epilogue) {
  using V = VecOf<T>;
  V acc[tile_rows<1>()][1];
  for (int r = 0; r < rows; ++r) {
    acc[r][0] = V(T(0));
    for (int64_t k = 0; k < K; ++k) acc[r][0] += V(a[r * lda + k]) * load_n(b + k * ldb, nj);
  }
  epilogue(acc);
}

// Copies rows [0, rows) x k [0, K) of a into tiles of MR rows, tile after tile, each [K][MR]
// (element (r, k) of tile i at out[i * MR * K + k * MR + r]; a last partial tile keeps the stride
// MR, its rows past the end unwritten: tile() never reads them).
template <int MR, class T>
void pack_row_tiles(MatA<T> a, int64_t rows, int64_t K, T* out) {
  for (int64_t i0 = 0; i0 < rows; i0 += MR) {
    const int64_t n = imin(MR, rows - i0);
    T* dst = out + i0 * K;
    for (int64_t k = 0; k < K; ++k) {
      const T* src = a.base + i0 * a.row_stride + k * a.k_stride;
      for (int64_t r = 0; r < n; ++r) dst[k * MR + r] = src[r * a.row_stride];
    }
  }
}

// Panels of G vectors (the widest that the registers allow by default; gemm() takes narrower
// ones for narrow products).
template <class T, int G_ = (kRegisters >= 32 ? 4 : 2)>
struct GemmBlocking {
  static constexpr int G = G_;
  static constexpr int64_t NR = G * VecOf<T>::kWidth;
  static constexpr int64_t KC = 256;
  static constexpr int64_t MR = tile_rows<G>();
  static constexpr int64_t kPanelsPerBlock = 8;
  static constexpr int64_t kRowsPerBlock = 8 * MR;
};

// Workspace (elements) that gemm() needs for packing B of an [*, N] product with K rows (sized
// for the widest panels; narrower ones round N up to less).
template <class T>
int64_t gemm_pack_elems(int64_t K, int64_t N) {
  using Blk = GemmBlocking<T>;
  return imin(K, Blk::KC) * ceil_div(N, Blk::NR) * Blk::NR;
}

// The packed path of gemm() (arguments as there; A as a view) with panels of `vectors` <= G
// vectors: calls with fewer go to the instantiation for that many (as in accumulate_rows).
template <class T, int G>
void gemm_packed(int vectors, MatA<T> a, Trans trans_b, int64_t M, int64_t N, int64_t K,
                 const T* B, int64_t ldb, bool accumulate, T* C, int64_t ldc, T* pack,
                 int threads, const T* bias) {
  if constexpr (G > 1) {
    if (vectors < G)
      return gemm_packed<T, G - 1>(vectors, a, trans_b, M, N, K, B, ldb, accumulate, C, ldc,
                                   pack, threads, bias);
  }
  using V = VecOf<T>;
  using Blk = GemmBlocking<T, G>;
  constexpr int W = V::kWidth;
  const int64_t panels = ceil_div(N, Blk::NR);
  // Small products are not worth waking other threads.
  if (M * N * K < 64 * 64 * 64) threads = 1;
  SpinBarrier barrier(threads);
  // op(A) = A^T (the weight gradients' dG^T): a tile's MR values of one k are adjacent, but
  // successive k are a row of A apart, a new cache line (and for a wide A a new page) per k. A
  // work item whose rows meet enough panels packs them first, so that its tiles read A as one
  // stream (dW = dG^T X, M=2048 N=512 K=6400, bench/kernels/gemm_lab.cpp on one thread: 87-89 ->
  // 97-99 GFLOP/s); across one panel (N=32) the copy cost more than it saved (97 -> 64). The
  // block lives on each thread's stack: 48 KB in float32, 96 KB in float64.
  constexpr int64_t kPackAPanels = 4;
  const bool pack_a = a.row_stride == 1 && a.k_stride != 1;
  parallel(threads, [&](int tid, int n) {
    alignas(64) T a_block[Blk::kRowsPerBlock * Blk::KC];
    for (int64_t k0 = 0; k0 < K; k0 += Blk::KC) {
      const int64_t kc = imin(Blk::KC, K - k0);
      const bool add = accumulate || k0 > 0;
      const T* first_bias = add ? nullptr : bias;
      pack_panels<Blk::G>(trans_b, B, ldb, k0, kc, N, panels * tid / n, panels * (tid + 1) / n,
                          pack);
      barrier.wait();
      // Work items: blocks of kPanelsPerBlock panels x kRowsPerBlock rows, ordered panel-block
      // major and split in contiguous ranges. A thread keeps a block of B panels in L2 while it
      // walks down the rows; inside a block, each A row tile is reused from L1 across panels.
      const int64_t panel_blocks = ceil_div(panels, Blk::kPanelsPerBlock);
      const int64_t row_blocks = ceil_div(M, Blk::kRowsPerBlock);
      const int64_t items = panel_blocks * row_blocks;
      for (int64_t it = items * tid / n; it < items * (tid + 1) / n; ++it) {
        const int64_t pb = it / row_blocks, ib = it % row_blocks;
        const int64_t i_begin = ib * Blk::kRowsPerBlock;
        const int64_t i_end = imin(M, i_begin + Blk::kRowsPerBlock);
        const int64_t p_begin = pb * Blk::kPanelsPerBlock;
        const int64_t p_end = imin(panels, p_begin + Blk::kPanelsPerBlock);
        const bool packed = pack_a && p_end - p_begin >= kPackAPanels;
        if (packed) pack_row_tiles<Blk::MR>(a.at(i_begin, k0), i_end - i_begin, kc, a_block);
        for (int64_t i0 = i_begin; i0 < i_end; i0 += Blk::MR) {
          const int rows = static_cast<int>(imin(Blk::MR, i_end - i0));
          const MatA<T> a_tile = packed ? MatA<T>{a_block + (i0 - i_begin) * kc, 1, Blk::MR}
                                        : a.at(i0, k0);
          for (int64_t p = p_begin; p < p_end; ++p) {
            const int64_t j0 = p * Blk::NR;
            const int cols = static_cast<int>(imin(Blk::NR, N - j0));
            tile<Blk::G>(rows, kc, a_tile, pack + p * kc * Blk::NR,
                         [&](V(&acc)[Blk::MR][Blk::G]) {
                           for (int r = 0; r < rows; ++r) {
                             T* c = C + (i0 + r) * ldc + j0;
                             for (int g = 0; g < Blk::G && cols > g * W; ++g) {
                               const int lanes = static_cast<int>(imin(W, cols - g * W));
                               V out = acc[r][g];
                               if (add) out += load_n(c + g * W, lanes);
                               if (first_bias) out += load_n(first_bias + j0 + g * W, lanes);
                               store_n(out, c + g * W, lanes);
                             }
                           }
                         });
          }
        }
      }
      barrier.wait();  // the next k block repacks B
    }
  });
}

// C[M,N] = op(A)[M,K] @ op(B)[K,N] + (C when accumulate, else bias[N] broadcast over rows when
// bias is given, else 0). op(A) = A [M,K] (lda) or, with trans_a, A^T of A stored [K,M];
// likewise op(B) from B [K,N] or B^T of B stored [N,K]. pack: gemm_pack_elems(K, N) elements of
// scratch. Without accumulate, C is only written.
template <class T>
void gemm(Trans trans_a, Trans trans_b, int64_t M, int64_t N, int64_t K, const T* A, int64_t lda,
          const T* B, int64_t ldb, bool accumulate, T* C, int64_t ldc, T* pack, int threads,
          const T* bias = nullptr) {
  constexpr int W = VecOf<T>::kWidth;
  if (M <= 0 || N <= 0) return;
  const MatA<T> a = MatA<T>::of(trans_a, A, lda);
  if (K <= 0) {  // an empty sum
    if (!accumulate) {
      for (int64_t i = 0; i < M; ++i)
        for (int64_t j = 0; j < N; ++j) C[i * ldc + j] = bias ? bias[j] : T(0);
    }
    return;
  }
  if (trans_b == Trans::No && (K <= kDirectDepth || M <= kDirectRows)) {
    gemm_direct_combine(M, N, K, a, B, ldb, accumulate, C, ldc, bias);
    return;
  }
  if (M <= kDirectRows && trans_a == Trans::No) {
    gemm_direct_dots(M, N, K, A, lda, B, ldb, accumulate, C, ldc, bias, threads);
    return;
  }
  // A product narrower than a panel runs on panels of just enough vectors: a tile's columns past
  // N are padding (N=32, the dW_ih and dX of a 32-wide input, filled half of each 64-column
  // AVX-512 tile; bench/kernels/gemm_lab.cpp: 46-52 -> 93-106 GFLOP/s, N=16 25 -> 78-98).
  const int vectors = static_cast<int>(imin(GemmBlocking<T>::G, ceil_div(N, W)));
  gemm_packed<T, GemmBlocking<T>::G>(vectors, a, trans_b, M, N, K, B, ldb, accumulate, C, ldc,
                                     pack, threads, bias);
}

}  // namespace fastrnn::cpu::FASTRNN_ISA
