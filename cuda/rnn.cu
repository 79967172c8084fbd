// CUDA RNN driver (see rnn.cuh): cuBLAS GEMMs plus one pointwise kernel per step that runs the
// cell's math from csrc/cells/, forward and backward; the persistent kernels of persistent.cuh
// replace the per-step loops when the problem fits.
//
// States: the running h of a (layer, direction) lives in hy (c in cy), initialised from h0/c0, and
// is updated in place: at step t the recurrent GEMM reads rows [0, batch_sizes[t]) before the
// pointwise kernel overwrites them (stream order), and rows past batch_sizes[t] are left alone,
// which is exactly PackedSequence semantics in both directions: a row keeps its last state (so hy
// ends as each sequence's final state) or, in the reverse direction, its initial state until its
// first step. Backward does the same with dh in dh0 and dc in dc0.
#include <cstdint>
#include <vector>

#include "cells/dispatch.h"
#include "check.cuh"
#include "cublas.cuh"
#include "persistent.cuh"
#include "rnn.cuh"

namespace fastrnn {
namespace {

using cuda::Op;

constexpr int kThreads = 256;

int64_t blocks_for(int64_t n) { return (n + kThreads - 1) / kThreads; }

// One step's pointwise forward. Row b (< rows) of the step, unit j; pointers at the step's rows.
template <class T>
struct StepForward {
  int64_t rows, H, O, ldy;
  T* gates;          // [rows, S*H] reserve: in xg = x W_ih^T (no bias), out what backward saves
  const T* hg;       // [rows, G*H] h_{t-1} W_hh^T (no bias)
  const T *b_ih, *b_hh;  // [G*H] or null
  T* h;              // [B, O] running h: read (GRU's direct path), written when P == 0
  T* c;              // [B, H] running c (LSTM)
  T* cells;          // [rows, H] reserve c (LSTM)
  T* hh;             // [rows, H] reserve pre-projection h (P > 0), else null
  T* y;              // [rows, ldy] layer output at this direction's columns (P == 0)
};

template <class Cell, class T>
__global__ void cell_forward_kernel(StepForward<T> p) {
  constexpr int G = Cell::kGates, S = Cell::kSaved;
  const int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  if (i >= p.rows * p.H) return;
  const int64_t b = i / p.H, j = i % p.H, GH = G * p.H;
  T* saved_row = p.gates + b * S * p.H;
  T xp[G], hp[G], saved[S];
#pragma unroll
  for (int g = 0; g < G; ++g) {
    xp[g] = saved_row[g * p.H + j] + (p.b_ih ? p.b_ih[g * p.H + j] : T(0));
    hp[g] = p.hg[b * GH + g * p.H + j] + (p.b_hh ? p.b_hh[g * p.H + j] : T(0));
  }
  const T h_prev = Cell::kDirectHPath ? p.h[b * p.O + j] : T(0);
  const T c_prev = Cell::kHasCell ? p.c[b * p.H + j] : T(0);
  T c(0), h(0);
  Cell::forward(xp, hp, h_prev, c_prev, saved, c, h);
#pragma unroll
  for (int k = 0; k < S; ++k) saved_row[k * p.H + j] = saved[k];
  if (Cell::kHasCell) {
    p.c[b * p.H + j] = c;
    p.cells[b * p.H + j] = c;
  }
  if (p.hh) {
    p.hh[b * p.H + j] = h;
  } else {
    p.h[b * p.O + j] = h;
    p.y[b * p.ldy + j] = h;
  }
}

// One step's pointwise backward, rows and units as in forward.
template <class T>
struct StepBackward {
  int64_t rows, H, O, ldy;
  const T* gates;    // [rows, S*H] saved by forward
  const T* cells;    // [rows, H] c_t (LSTM)
  const T* c_prev;   // [rows, H] c_{t-1} (LSTM)
  const T* h_prev;   // [rows, O] h_{t-1} (GRU)
  const T* dhh;      // [rows, H] gradient of the pre-projection h (P > 0), else null
  const T* dy;       // [rows, ldy] gradient of the layer output at this direction's columns
  T* dh;             // [B, O] running dh: read (P == 0); GRU's direct part of dh_{t-1} written
  T* dc;             // [B, H] running dc (LSTM), in place
  T* dgi;            // [rows, G*H] gradient of the input-side pre-activations
  T* dgh;            // [rows, G*H] recurrent side (GRU; else the same as dgi)
};

template <class Cell, class T>
__global__ void cell_backward_kernel(StepBackward<T> p) {
  constexpr int G = Cell::kGates, S = Cell::kSaved;
  const int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  if (i >= p.rows * p.H) return;
  const int64_t b = i / p.H, j = i % p.H, GH = G * p.H;
  T saved[S], dxp[G], dhp[G];
#pragma unroll
  for (int k = 0; k < S; ++k) saved[k] = p.gates[b * S * p.H + k * p.H + j];
  const T dh = p.dhh ? p.dhh[b * p.H + j] : p.dy[b * p.ldy + j] + p.dh[b * p.O + j];
  const T c = Cell::kHasCell ? p.cells[b * p.H + j] : T(0);
  const T c_prev = Cell::kHasCell ? p.c_prev[b * p.H + j] : T(0);
  const T h_prev = Cell::kDirectHPath ? p.h_prev[b * p.O + j] : T(0);
  const T dc = Cell::kHasCell ? p.dc[b * p.H + j] : T(0);
  T dc_prev(0), dh_prev(0);
  Cell::backward(dh, dc, saved, c, c_prev, h_prev, dxp, dhp, dc_prev, dh_prev);
#pragma unroll
  for (int g = 0; g < G; ++g) p.dgi[b * GH + g * p.H + j] = dxp[g];
  if (Cell::kDirectHPath) {
#pragma unroll
    for (int g = 0; g < G; ++g) p.dgh[b * GH + g * p.H + j] = dhp[g];
    p.dh[b * p.O + j] = dh_prev;
  }
  if (Cell::kHasCell) p.dc[b * p.H + j] = dc_prev;
}

// out[r, k] = a[r, k] + b[r, k] for rows x cols, each with its own row stride.
template <class T>
__global__ void add_kernel(int64_t rows, int64_t cols, const T* a, int64_t lda, const T* b,
                           int64_t ldb, T* out, int64_t ldo) {
  const int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  if (i >= rows * cols) return;
  const int64_t r = i / cols, k = i % cols;
  out[r * ldo + k] = a[r * lda + k] + b[r * ldb + k];
}

// out[i] = a[i] * b[i] (dropout masks; out may be a).
template <class T>
__global__ void multiply_kernel(int64_t n, const T* a, const T* b, T* out) {
  const int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  if (i < n) out[i] = a[i] * b[i];
}

// For every row (t, b) of a sequence, the state that step t started from (out [N, width]): the
// same sequence's row at the previous step (t - 1, or t + 1 in reverse), read from seq (rows of
// stride ld_seq, columns [col, col + width)); or, where the sequence starts at t, the initial
// state init [B, width] (zeros when null). offsets [T + 1] are the steps' first rows.
template <class T>
__global__ void gather_previous_kernel(int64_t N, int64_t width, int64_t steps,
                                       const int64_t* offsets, const T* seq, int64_t ld_seq,
                                       int64_t col, const T* init, bool reverse, T* out) {
  const int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  if (i >= N * width) return;
  const int64_t row = i / width, k = i % width;
  int64_t lo = 0, hi = steps;  // the step t with offsets[t] <= row < offsets[t + 1]
  while (hi - lo > 1) {
    const int64_t mid = (lo + hi) / 2;
    if (offsets[mid] <= row) lo = mid; else hi = mid;
  }
  const int64_t t = lo, b = row - offsets[t];
  const int64_t prev = reverse ? t + 1 : t - 1;
  const bool has_prev = prev >= 0 && prev < steps && b < offsets[prev + 1] - offsets[prev];
  T value(0);
  if (has_prev) {
    value = seq[(offsets[prev] + b) * ld_seq + col + k];
  } else if (init) {
    value = init[b * width + k];
  }
  out[i] = value;
}

// out[j] = sum over rows r of m[r, j], m [N, cols]. Each block owns 32 columns; its 8 thread rows
// take every 8th row and are combined in a fixed order, so the sum is deterministic.
template <class T>
__global__ void column_sums_kernel(int64_t N, int64_t cols, const T* m, T* out) {
  __shared__ T partial[8][32];
  const int64_t j = blockIdx.x * int64_t{32} + threadIdx.x;
  T sum(0);
  if (j < cols) {
    for (int64_t r = threadIdx.y; r < N; r += 8) sum += m[r * cols + j];
  }
  partial[threadIdx.y][threadIdx.x] = sum;
  __syncthreads();
  if (threadIdx.y == 0 && j < cols) {
    T total(0);
#pragma unroll
    for (int y = 0; y < 8; ++y) total += partial[y][threadIdx.x];
    out[j] = total;
  }
}

template <class T, class Cell>
class CudaDriver {
  static constexpr int G = Cell::kGates;
  static constexpr int S = Cell::kSaved;

 public:
  CudaDriver(const RnnDesc& desc, int device, cudaStream_t stream)
      : desc_(desc),
        layout_(desc),
        device_(device),
        stream_(stream),
        N_(desc.total_rows()),
        B_(desc.batch),
        H_(desc.hidden_size),
        O_(desc.out_size()),
        P_(desc.proj_size),
        D_(desc.num_directions),
        L_(desc.num_layers),
        GH_(G * H_) {}

  static int64_t workspace_elems(const RnnDesc& desc, Pass pass) {
    Carve<T> count{nullptr};
    CudaDriver(desc, 0, nullptr).carve(count, pass);
    return count.used;
  }

  void forward(const RnnForwardArgs& a) {
    T* reserve = static_cast<T*>(a.reserve);
    Carve<T> ws{static_cast<T*>(a.workspace)};
    const Buffers buf = carve(ws, Pass::Forward);
    copy_offsets(buf);
    for (int64_t l = 0; l < L_; ++l) {
      const T* x_l = layer_input(a, reserve, buf.masked, l);
      T* y_l = reserve + layout_.layer_out(N_, l);
      for (int64_t d = 0; d < D_; ++d) forward_layer_direction(a, l, d, x_l, y_l, reserve, buf);
    }
    copy(reserve + layout_.layer_out(N_, L_ - 1), N_ * D_ * O_, static_cast<T*>(a.y));
  }

  void backward(const RnnBackwardArgs& a) {
    const RnnForwardArgs& f = a.fwd;
    const T* reserve = static_cast<const T*>(f.reserve);
    Carve<T> ws{static_cast<T*>(a.workspace)};
    const Buffers buf = carve(ws, Pass::Backward);
    copy_offsets(buf);
    const T* dy_l = static_cast<const T*>(a.dy);
    for (int64_t l = L_ - 1; l >= 0; --l) {
      const T* x_l = layer_input(f, reserve, buf.masked, l);
      T* dx_l = l == 0 ? static_cast<T*>(a.dx) : buf.dy_next[l % 2];
      for (int64_t d = 0; d < D_; ++d) {
        backward_recurrence(a, l, d, dy_l, reserve, buf);
        backward_gemms(a, l, d, x_l, dx_l, reserve, buf);  // dX sums over directions
      }
      if (l > 0 && !f.masks.empty()) {
        multiply(N_ * D_ * O_, dx_l, static_cast<const T*>(f.masks[l - 1]), dx_l);
      }
      dy_l = dx_l;
    }
  }

 private:
  struct Buffers {
    int64_t* offsets;  // [T + 1] the steps' first rows, on the device
    T* masked;         // [N, D*O] previous layer's output times its dropout mask (L > 1)
    T* dy_next[2];     // [N, D*O] gradient flowing to the layer below (backward, L > 1)
    T* hg;             // [B, G*H] h_{t-1} W_hh^T of one step (forward)
    T* h_steps;        // [2][B][O] the persistent kernel's double-buffered h (forward)
    T* h_prev;         // [N, O] the h each row's step started from (backward)
    T* c_prev;         // [N, H] likewise c (backward, LSTM)
    T* dgi;            // [N, G*H] (backward)
    T* dgh;            // [N, G*H] (backward, GRU; else aliases dgi)
    T* dr;             // [N, P] gradient of the projected output (backward, P > 0)
    T* dhh;            // [B, H] one step's gradient of the pre-projection h (backward, P > 0)
  };

  Buffers carve(Carve<T>& ws, Pass pass) const {
    const bool bwd = pass == Pass::Backward;
    const int64_t masked = L_ > 1 ? N_ * D_ * O_ : 0;
    Buffers buf{};
    // First, so that it is 8-byte aligned whatever T is (the workspace itself is aligned).
    const int64_t offset_elems = (int64_t(sizeof(int64_t)) * (desc_.seq_len + 1) + sizeof(T) - 1) /
                                 int64_t(sizeof(T));
    buf.offsets = reinterpret_cast<int64_t*>(ws.take(offset_elems));
    buf.masked = ws.take(masked);
    buf.dy_next[0] = ws.take(bwd ? masked : 0);
    buf.dy_next[1] = ws.take(bwd ? masked : 0);
    buf.hg = ws.take(bwd ? 0 : B_ * GH_);
    buf.h_steps = ws.take(bwd ? 0 : 2 * B_ * O_);
    if (bwd) {
      buf.h_prev = ws.take(N_ * O_);
      buf.c_prev = ws.take(Cell::kHasCell ? N_ * H_ : 0);
      buf.dgi = ws.take(N_ * GH_);
      buf.dgh = Cell::kDirectHPath ? ws.take(N_ * GH_) : buf.dgi;
      buf.dr = ws.take(N_ * P_);
      buf.dhh = ws.take(P_ > 0 ? B_ * H_ : 0);
    }
    return buf;
  }

  void check_launch() const { FASTRNN_CUDA_CHECK_LAUNCH(); }

  // The host's offsets (pageable memory: the copy has left it when cudaMemcpyAsync returns).
  void copy_offsets(const Buffers& buf) const {
    FASTRNN_CUDA_CHECK(cudaMemcpyAsync(buf.offsets, desc_.offsets.data(),
                                       desc_.offsets.size() * sizeof(int64_t),
                                       cudaMemcpyHostToDevice, stream_));
  }

  void copy(const T* src, int64_t n, T* dst) const {
    if (n > 0) {
      FASTRNN_CUDA_CHECK(
          cudaMemcpyAsync(dst, src, n * sizeof(T), cudaMemcpyDeviceToDevice, stream_));
    }
  }
  // dst = src, or zeros when src is null.
  void init_state(const void* src, int64_t offset, int64_t n, T* dst) const {
    if (src) {
      copy(static_cast<const T*>(src) + offset, n, dst);
    } else if (n > 0) {
      FASTRNN_CUDA_CHECK(cudaMemsetAsync(dst, 0, n * sizeof(T), stream_));
    }
  }
  void multiply(int64_t n, const T* a, const T* b, T* out) const {
    if (n == 0) return;
    multiply_kernel<T><<<blocks_for(n), kThreads, 0, stream_>>>(n, a, b, out);
    check_launch();
  }
  void gemm(Op op_a, Op op_b, int64_t M, int64_t N, int64_t K, const T* A, int64_t lda,
            const T* B, int64_t ldb, bool accumulate, T* C, int64_t ldc) const {
    cuda::gemm<T>(stream_, op_a, op_b, M, N, K, A, lda, B, ldb, accumulate ? T(1) : T(0), C, ldc);
  }

  struct LayerWeights {
    const T *w_ih, *w_hh, *b_ih, *b_hh, *w_hr;
  };
  LayerWeights layer_weights(const std::vector<const void*>& flat, int64_t l, int64_t d) const {
    const LayerWeightPtrs p = layer_weight_ptrs(desc_, flat, l, d);
    return {static_cast<const T*>(p.w_ih), static_cast<const T*>(p.w_hh),
            static_cast<const T*>(p.b_ih), static_cast<const T*>(p.b_hh),
            static_cast<const T*>(p.w_hr)};
  }

  // Input of layer l: x, or the previous layer's output with its dropout mask applied.
  const T* layer_input(const RnnForwardArgs& a, const T* reserve, T* masked, int64_t l) const {
    if (l == 0) return static_cast<const T*>(a.x);
    const T* prev = reserve + layout_.layer_out(N_, l - 1);
    if (a.masks.empty()) return prev;
    multiply(N_ * D_ * O_, prev, static_cast<const T*>(a.masks[l - 1]), masked);
    return masked;
  }

  void forward_layer_direction(const RnnForwardArgs& a, int64_t l, int64_t d, const T* x_l,
                               T* y_l, T* reserve, const Buffers& buf) const {
    const LayerWeights w = layer_weights(a.weights, l, d);
    const int64_t in_l = desc_.layer_input_size(l), SH = S * H_, ldy = D_ * O_;
    const int64_t state = l * D_ + d;
    T* gates = reserve + layout_.gates(N_, l, d);
    T* cells = reserve + layout_.cell(N_, l, d);
    T* hh = reserve + layout_.hh(N_, l, d);
    T* h = static_cast<T*>(a.hy) + state * B_ * O_;
    T* c = Cell::kHasCell ? static_cast<T*>(a.cy) + state * B_ * H_ : nullptr;
    init_state(a.h0, state * B_ * O_, B_ * O_, h);
    if (Cell::kHasCell) init_state(a.c0, state * B_ * H_, B_ * H_, c);

    // Input projection of every row at once, into the first G*H columns of the gate block.
    gemm(Op::N, Op::T, N_, GH_, in_l, x_l, in_l, w.w_ih, in_l, false, gates, SH);
    if (P_ == 0 && run_persistent(w, d, gates, c, cells, y_l + d * O_, h, buf)) return;
    for (int64_t s = 0; s < desc_.seq_len; ++s) {
      const int64_t t = d == 1 ? desc_.seq_len - 1 - s : s;
      const int64_t bs = desc_.rows_at(t), off = desc_.offset_at(t);
      if (bs == 0) continue;  // empty batch
      gemm(Op::N, Op::T, bs, GH_, O_, h, O_, w.w_hh, O_, false, buf.hg, GH_);
      StepForward<T> p{bs, H_, O_, ldy, gates + off * SH, buf.hg, w.b_ih, w.b_hh, h, c,
                       Cell::kHasCell ? cells + off * H_ : nullptr,
                       P_ > 0 ? hh + off * H_ : nullptr, y_l + off * ldy + d * O_};
      cell_forward_kernel<Cell, T><<<blocks_for(bs * H_), kThreads, 0, stream_>>>(p);
      check_launch();
      if (P_ > 0) {
        // r_t = hh_t W_hr^T into the layer output, then into the running h.
        T* y_rows = y_l + off * ldy + d * O_;
        gemm(Op::N, Op::T, bs, P_, H_, hh + off * H_, H_, w.w_hr, H_, false, y_rows, ldy);
        FASTRNN_CUDA_CHECK(cudaMemcpy2DAsync(h, O_ * sizeof(T), y_rows, ldy * sizeof(T),
                                             P_ * sizeof(T), bs, cudaMemcpyDeviceToDevice,
                                             stream_));
      }
    }
  }

  // Forward's time loop as one persistent kernel when it fits (see persistent.cuh); h is the
  // running state (initial state in, final state out). False when the per-step path must run.
  bool run_persistent(const LayerWeights& w, int64_t d, T* gates, T* c, T* cells, T* y_col, T* h,
                      const Buffers& buf) const {
    persistent::ForwardParams<T> p{desc_.seq_len, B_, H_, O_, D_ * O_, 0, d == 1, buf.offsets,
                                   gates, w.w_hh, w.b_ih, w.b_hh, buf.h_steps, c, cells, y_col};
    copy(h, B_ * O_, buf.h_steps);
    if (!persistent::try_forward<Cell, T>(p, device_, stream_)) return false;
    copy(buf.h_steps + (desc_.seq_len % 2) * B_ * O_, B_ * O_, h);
    return true;
  }

  void backward_recurrence(const RnnBackwardArgs& a, int64_t l, int64_t d, const T* dy_l,
                           const T* reserve, const Buffers& buf) const {
    const RnnForwardArgs& f = a.fwd;
    const LayerWeights w = layer_weights(f.weights, l, d);
    const int64_t ldy = D_ * O_, SH = S * H_, state = l * D_ + d;
    const bool reverse = d == 1;
    const T* gates = reserve + layout_.gates(N_, l, d);
    const T* cells = reserve + layout_.cell(N_, l, d);
    const T* y_l = reserve + layout_.layer_out(N_, l);

    gather_previous(y_l, ldy, d * O_, f.h0, state * B_ * O_, O_, reverse, buf.h_prev, buf);
    if (Cell::kHasCell) {
      gather_previous(cells, H_, 0, f.c0, state * B_ * H_, H_, reverse, buf.c_prev, buf);
    }
    T* dh = static_cast<T*>(a.dh0) + state * B_ * O_;
    T* dc = Cell::kHasCell ? static_cast<T*>(a.dc0) + state * B_ * H_ : nullptr;
    init_state(a.dhy, state * B_ * O_, B_ * O_, dh);
    if (Cell::kHasCell) init_state(a.dcy, state * B_ * H_, B_ * H_, dc);

    if (P_ == 0) {
      persistent::BackwardParams<T> p{desc_.seq_len, B_, H_, ldy, 0, reverse, buf.offsets, gates,
                                      cells, buf.c_prev, buf.h_prev, dy_l + d * O_, w.w_hh, dh,
                                      dc, buf.dgi, buf.dgh};
      if (persistent::try_backward<Cell, T>(p, device_, stream_)) return;
    }
    for (int64_t s = desc_.seq_len - 1; s >= 0; --s) {
      const int64_t t = reverse ? desc_.seq_len - 1 - s : s;
      const int64_t bs = desc_.rows_at(t), off = desc_.offset_at(t);
      if (bs == 0) continue;  // empty batch
      const T* dy_rows = dy_l + off * ldy + d * O_;
      if (P_ > 0) {
        // dr_t = dy_t + dh from step t+1; dhh = dr_t W_hr.
        T* dr_rows = buf.dr + off * P_;
        add_kernel<T><<<blocks_for(bs * P_), kThreads, 0, stream_>>>(bs, P_, dy_rows, ldy, dh,
                                                                     O_, dr_rows, P_);
        check_launch();
        gemm(Op::N, Op::N, bs, H_, P_, dr_rows, P_, w.w_hr, H_, false, buf.dhh, H_);
      }
      StepBackward<T> p{bs, H_, O_, ldy, gates + off * SH,
                        Cell::kHasCell ? cells + off * H_ : nullptr,
                        Cell::kHasCell ? buf.c_prev + off * H_ : nullptr,
                        buf.h_prev + off * O_, P_ > 0 ? buf.dhh : nullptr, dy_rows, dh, dc,
                        buf.dgi + off * GH_, buf.dgh + off * GH_};
      cell_backward_kernel<Cell, T><<<blocks_for(bs * H_), kThreads, 0, stream_>>>(p);
      check_launch();
      // dh_{t-1} = dG W_hh (+ GRU's direct part, which the kernel has just written into dh).
      gemm(Op::N, Op::N, bs, O_, GH_, buf.dgh + off * GH_, GH_, w.w_hh, O_, Cell::kDirectHPath,
           dh, O_);
    }
  }

  void gather_previous(const T* seq, int64_t ld_seq, int64_t col, const void* init,
                       int64_t init_offset, int64_t width, bool reverse, T* out,
                       const Buffers& buf) const {
    if (N_ * width == 0) return;
    const T* init_rows = init ? static_cast<const T*>(init) + init_offset : nullptr;
    gather_previous_kernel<T><<<blocks_for(N_ * width), kThreads, 0, stream_>>>(
        N_, width, desc_.seq_len, buf.offsets, seq, ld_seq, col, init_rows, reverse, out);
    check_launch();
  }

  void column_sums(const T* m, T* out) const {
    const dim3 block(32, 8);
    column_sums_kernel<T><<<(GH_ + 31) / 32, block, 0, stream_>>>(N_, GH_, m, out);
    check_launch();
  }

  // Whole-sequence GEMMs of one (layer, direction): the weight gradients (in the flat list's
  // order w_ih, w_hh, b_ih, b_hh, w_hr) and its share of dX.
  void backward_gemms(const RnnBackwardArgs& a, int64_t l, int64_t d, const T* x_l, T* dx_l,
                      const T* reserve, const Buffers& buf) const {
    const LayerWeights w = layer_weights(a.fwd.weights, l, d);
    const int64_t in_l = desc_.layer_input_size(l), state = l * D_ + d;
    const T* hh = reserve + layout_.hh(N_, l, d);
    const int64_t first = state * desc_.weights_per_layer_direction();
    auto dw = [&](int64_t k) { return static_cast<T*>(a.dweights[first + k]); };
    const bool empty = N_ == 0;  // no rows: every weight gradient is zero
    auto zero = [&](T* p, int64_t n) {
      FASTRNN_CUDA_CHECK(cudaMemsetAsync(p, 0, n * sizeof(T), stream_));
    };
    int64_t k = 0;
    if (empty) {
      zero(dw(k++), GH_ * in_l);
      zero(dw(k++), GH_ * O_);
    } else {
      gemm(Op::T, Op::N, GH_, in_l, N_, buf.dgi, GH_, x_l, in_l, false, dw(k++), in_l);
      gemm(Op::T, Op::N, GH_, O_, N_, buf.dgh, GH_, buf.h_prev, O_, false, dw(k++), O_);
    }
    if (desc_.has_bias) {
      column_sums(buf.dgi, dw(k++));
      column_sums(buf.dgh, dw(k++));
    }
    if (P_ > 0) {
      if (empty) {
        zero(dw(k), P_ * H_);
      } else {
        gemm(Op::T, Op::N, P_, H_, N_, buf.dr, P_, hh, H_, false, dw(k), H_);
      }
    }
    gemm(Op::N, Op::N, N_, in_l, GH_, buf.dgi, GH_, w.w_ih, in_l, d > 0, dx_l, in_l);
  }

  const RnnDesc& desc_;
  ReserveLayout layout_;
  int device_;
  cudaStream_t stream_;
  const int64_t N_, B_, H_, O_, P_, D_, L_, GH_;
};


// Passes the driver type for the problem's cell and dtype to f as Tag<Driver>.
template <class D>
struct Tag {
  using type = D;
};

template <class F>
auto with_types(const RnnDesc& desc, DType dtype, F&& f) {
  return cells::with_cell(desc.cell, [&](auto cell) {
    using Cell = decltype(cell);
    switch (dtype) {
      case DType::Float32:
        return f(Tag<CudaDriver<float, Cell>>{});
      case DType::Float64:
        return f(Tag<CudaDriver<double, Cell>>{});
    }
    throw std::invalid_argument("fastrnn: unsupported dtype for the CUDA backend");
  });
}

}  // namespace

int64_t workspace_elems_cuda(const RnnDesc& desc, Pass pass, DType dtype) {
  return with_types(desc, dtype, [&](auto tag) {
    return decltype(tag)::type::workspace_elems(desc, pass);
  });
}

void rnn_forward_cuda(const RnnDesc& desc, DType dtype, const RnnForwardArgs& args, int device,
                      cudaStream_t stream) {
  check_forward_args(desc, args, workspace_elems_cuda(desc, Pass::Forward, dtype) > 0);
  FASTRNN_CHECK(desc.total_rows() == 0 || args.reserve, "null reserve (no inference mode on CUDA)");
  cuda::DeviceGuard guard(device);
  with_types(desc, dtype, [&](auto tag) {
    typename decltype(tag)::type(desc, device, stream).forward(args);
    return 0;
  });
}

void rnn_backward_cuda(const RnnDesc& desc, DType dtype, const RnnBackwardArgs& args, int device,
                       cudaStream_t stream) {
  check_backward_args(desc, args, workspace_elems_cuda(desc, Pass::Backward, dtype) > 0,
                      /*optional_grads=*/false);
  FASTRNN_CHECK(args.weight_groups == 1, "the CUDA core has no per-group weight gradients");
  cuda::DeviceGuard guard(device);
  with_types(desc, dtype, [&](auto tag) {
    typename decltype(tag)::type(desc, device, stream).backward(args);
    return 0;
  });
}

void set_persistent_kernels(bool enabled) { persistent::enabled().store(enabled); }
bool persistent_kernels_enabled() { return persistent::enabled().load(); }
int64_t persistent_kernel_launches() { return persistent::launches().load(); }

}  // namespace fastrnn
