// CPU recurrence driver (per-ISA, see vec.h): runs any cell (csrc/cells/) over a whole stack,
// forward and backprop-through-time.
//
// Per layer and direction:
//   forward   every thread owns a slice of hidden units (all gates of each unit). Chunk by chunk
//             of a few steps (~kChunkRows rows), it projects the chunk's inputs for its slice,
//             Xg = X W_ih^T + b_ih into the gate block, so that the block is still in its cache
//             when the steps read it. Then, per step, it computes h_{t-1} W_hh^T for its slice
//             from a packed copy of W_hh that stays in its cache for the whole sequence, with the
//             cell's pointwise math fused into the product's epilogue (which, in training,
//             overwrites Xg in place with what backward needs); a spin barrier separates steps.
//             With a projection (LSTM proj_size) a second phase computes r_t = h_t W_hr^T split
//             by output columns.
//             Training writes the gate block into the reserve; inference (no reserve) into
//             scratch for one chunk, reused, and keeps nothing else.
//             Direct mode (a handful of rows, see direct()) projects all rows at once instead
//             and multiplies straight from the caller's weights, which may then be bfloat16 or
//             float16 (RnnForwardArgs::half_weights; widened as loaded).
//   backward  the same, in reverse: the cell's backward per unit slice, then dh_{t-1} = dG W_hh split
//             by output columns. A chunk of steps at a time (~kBackwardChunkRows rows, newest
//             first): after the chunk's steps, GEMMs over its rows add to dW_ih, dW_hh, dW_hr
//             and write its rows of dX, so dG and the gathered previous states are chunk-sized
//             scratch read back from L3, not sequence-sized buffers.
// States: h travels between steps through a double buffer [2][B][O] (every thread reads all of
// h_{t-1}); c is private to the unit's owner and updated in place. Only rows < batch_sizes[t]
// are computed at step t; the others are carried over unchanged, which is PackedSequence
// semantics in both directions.
#pragma once

#include <cstdint>
#include <type_traits>
#include <vector>

// vec.h (through gemm.h) first: the cells name act::tanh etc. with qualified calls, which bind
// to the overloads declared before the cells' templates are defined.
#include "cpu/gemm.h"
#if defined(__AVX512BF16__)
#include "cpu/gemm_bf16.h"
#endif
#include "cells/gru.h"
#include "cells/lstm.h"
#include "cells/rnn.h"
#include "fastrnn/rnn.h"

namespace fastrnn::cpu::FASTRNN_ISA {

template <class T>
void copy_n(const T* src, int64_t n, T* dst) {
  for (int64_t i = 0; i < n; ++i) dst[i] = src[i];
}
template <class T>
void fill_n(T* dst, int64_t n, T value) {
  for (int64_t i = 0; i < n; ++i) dst[i] = value;
}

// The flat weight list of one (layer, direction), typed.
template <class T>
struct LayerWeights {
  explicit LayerWeights(const LayerWeightPtrs& p)
      : w_ih(static_cast<const T*>(p.w_ih)),
        w_hh(static_cast<const T*>(p.w_hh)),
        b_ih(static_cast<const T*>(p.b_ih)),
        b_hh(static_cast<const T*>(p.b_hh)),
        w_hr(static_cast<const T*>(p.w_hr)) {}
  const T *w_ih, *w_hh, *b_ih, *b_hh, *w_hr;
};

template <class T, class Cell>
class Driver {
  using V = VecOf<T>;
  static constexpr int W = V::kWidth;
  static constexpr int G = Cell::kGates;
  static constexpr int S = Cell::kSaved;

 public:
  Driver(const RnnDesc& desc, int threads)
      : desc_(desc),
        layout_(desc),
        threads_(threads < 1 ? 1 : (threads > max_threads() ? max_threads() : threads)),
        N_(desc.total_rows()),
        B_(desc.batch),
        H_(desc.hidden_size),
        O_(desc.out_size()),
        P_(desc.proj_size),
        D_(desc.num_directions),
        L_(desc.num_layers),
        GH_(G * H_),
        unit_blocks_(ceil_div(H_, W)),
        out_blocks_(ceil_div(O_, W)) {}

  // Whether forward takes the first layer's input and W_ih in bfloat16 (RnnForwardArgs::
  // bf16_input): with AVX-512 BF16, for float32, when the weights are packed (direct mode
  // multiplies straight from them, and its handful of rows would not repay a second path).
  static bool takes_bf16_input(const RnnDesc& desc) {
#if defined(__AVX512BF16__)
    return std::is_same_v<T, float> && !Driver(desc, 1).direct();
#else
    (void)desc;
    return false;
#endif
  }

  // Whether forward and backward take every weight matrix in bfloat16 or float16
  // (RnnForwardArgs::half_weights): for float32 in direct mode, whose products read the weights
  // straight from the caller's tensors (widening each as it is loaded, exactly), so that a
  // streamed 16-bit step reads half the bytes and nothing converts the weights per call.
  static bool takes_half_weights(const RnnDesc& desc) {
    return std::is_same_v<T, float> && Driver(desc, 1).direct();
  }

  static int64_t workspace_elems(const RnnDesc& desc, Pass pass) {
    Carve<T> count{nullptr};
    Driver(desc, 1).carve(count, pass);
    return count.used;
  }

  // Training when a.reserve is set, else inference (see RnnForwardArgs).
  void forward(const RnnForwardArgs& a) {
    T* reserve = static_cast<T*>(a.reserve);
    Carve<T> ws{static_cast<T*>(a.workspace)};
    const Buffers buf = carve(ws, reserve ? Pass::Forward : Pass::Inference);
    // Output of layer l: its block of the reserve; in inference, y for the last layer and two
    // alternating buffers below it.
    auto layer_output = [&](int64_t l) {
      if (reserve) return reserve + layout_.layer_out(N_, l);
      return l == L_ - 1 ? static_cast<T*>(a.y) : buf.layer_out[l % 2];
    };
    for (int64_t l = 0; l < L_; ++l) {
      T* y_l = layer_output(l);
      // The first layer's bfloat16 input (bf16_input) is read by pack_and_project alone.
      const T* x_l = l == 0 ? (a.bf16_input ? nullptr : static_cast<const T*>(a.x))
                            : layer_input(a, layer_output(l - 1), buf.masked, l);
      for_each_direction([&](int64_t d, int threads) {
        const SavedRows saved = reserve ? SavedRows{reserve + layout_.gates(N_, l, d),
                                                    reserve + layout_.cell(N_, l, d),
                                                    reserve + layout_.hh(N_, l, d), false, true}
                                        : SavedRows{buf.dir[d].gates, nullptr, buf.dir[d].hh,
                                                    !direct(), false};
        forward_layer_direction(a, l, d, x_l, y_l, saved, buf.dir[d], threads);
      });
    }
    if (reserve) {
      copy_n(reserve + layout_.layer_out(N_, L_ - 1), N_ * D_ * O_, static_cast<T*>(a.y));
    }
  }

  void backward(const RnnBackwardArgs& a) {
    const RnnForwardArgs& f = a.fwd;
    const T* reserve = static_cast<const T*>(f.reserve);
    Carve<T> ws{static_cast<T*>(a.workspace)};
    const Buffers buf = carve(ws, backward_pass(a));

    const T* dy_l = static_cast<const T*>(a.dy);
    for (int64_t l = L_ - 1; l >= 0; --l) {
      const T* x_l = l == 0 ? static_cast<const T*>(f.x)
                            : layer_input(f, reserve + layout_.layer_out(N_, l - 1), buf.masked, l);
      // Null for the first layer when the caller does not need the input's gradient.
      T* dx_l = l == 0 ? static_cast<T*>(a.dx) : buf.dy_next[l % 2];
      // dX is the sum of the directions' shares: the reverse one's goes to its own buffer and
      // is added once both are done, the same sum whether they ran at once or one by one.
      for_each_direction([&](int64_t d, int threads) {
        backward_layer_direction(a, l, d, dy_l, x_l, d == 0 || !dx_l ? dx_l : buf.dx_reverse,
                                 reserve, buf.dir[d], threads);
      });
      if (D_ == 2 && dx_l) add_rows(buf.dx_reverse, N_, desc_.layer_input_size(l), dx_l);
      if (l > 0 && !f.masks.empty()) {
        const T* mask = static_cast<const T*>(f.masks[l - 1]);
        for (int64_t i = 0; i < N_ * D_ * O_; ++i) dx_l[i] *= mask[i];
      }
      dy_l = dx_l;
    }
  }

 private:
  // With a handful of rows in the whole sequence (streaming one step at a time), packing the
  // weights would cost more than the steps: the recurrence multiplies straight from them, and so
  // does the forward input projection (gemm's own few-row path).
  bool direct() const { return N_ <= kDirectRows; }

  // Steps per chunk of the forward's input projection: about kChunkRows rows, so that a
  // thread's projection tiles are full and the chunk's gate rows stay in its L2.
  static constexpr int64_t kChunkRows = 64;
  int64_t chunk_steps() const { return B_ >= kChunkRows || B_ < 1 ? 1 : ceil_div(kChunkRows, B_); }
  // Rows of the gate block inference keeps: one chunk, or every row in direct mode.
  int64_t inference_rows() const { return direct() ? N_ : imin(N_, chunk_steps() * B_); }

  // Steps per chunk of backward: about kBackwardChunkRows rows, two of the GEMMs' K blocks, so
  // that the chunk's weight-gradient products are as deep as whole-sequence ones were per pass
  // while its dG rows (4 MiB at G*H = 2048) are still in L3 when they read them.
  static constexpr int64_t kBackwardChunkRows = 512;
  // With weight groups (Pass::GroupedBackward) each batch row's weight-gradient products run
  // over the chunk's steps alone (K = steps, not rows), so the chunk holds at least
  // kGroupedChunkSteps steps: 64 per-sample gradients of LSTM 50x1x64x128 took 57 ms with
  // 512-row chunks (8 steps each), more than one backward per sample (53 ms).
  static constexpr int64_t kGroupedChunkSteps = 64;
  int64_t backward_chunk_steps(Pass pass) const {
    const int64_t steps =
        B_ >= kBackwardChunkRows || B_ < 1 ? 1 : ceil_div(kBackwardChunkRows, B_);
    return pass == Pass::GroupedBackward && steps < kGroupedChunkSteps ? kGroupedChunkSteps
                                                                       : steps;
  }

  // Threads for the time loop: one when a step is too small to repay a barrier per step. The
  // same limit in both passes since the jobs run on torch's OpenMP team (cpu/threads.h); on a
  // pool of our own, competing with torch's spinning workers, backward needed 2^21 and forward
  // 2^17. LSTM 100x1x64x128 (2^16 per step), forward+backward: 1.15-1.21x of torch -> 1.34-1.45x
  // (bench/kernels/NOTES.md).
  //
  // A direct step (weights streamed from L2 or L3, not packed) splits from 2^18 (kDirectSplitLog2,
  // shared with the step's input projection in gemm): a second core doubles the bandwidth, and
  // the team's start and the barrier cost a few microseconds. `bench/run.py --modes step`, both
  // split: LSTM H=512 199-224 -> 116-118 us, GRU 126-134 -> 87-94 us, RNN 62-66 -> 56-57 us; at
  // H=128 two threads gained nothing.
  int recurrence_threads(bool direct, int threads) const {
    const int64_t min_step_macs = int64_t{1} << (direct ? kDirectSplitLog2 : 15);
    return B_ * O_ * GH_ < min_step_macs ? 1 : threads;
  }

  int64_t max_layer_input() const {
    return L_ > 1 && D_ * O_ > desc_.input_size ? D_ * O_ : desc_.input_size;
  }
  // Widest N of the backward GEMMs (dW_ih, dW_hh, dW_hr, dX).
  int64_t widest_gradient() const {
    const int64_t w = max_layer_input() > O_ ? max_layer_input() : O_;
    return w > H_ ? w : H_;
  }

  // Scratch of one direction's passes (two sets when D = 2, so that the directions can run at
  // the same time on different cores).
  struct DirectionBuffers {
    T* pack;    // GEMM packing scratch (backward)
    T* w_in;    // packed input weights (forward, packed mode)
    T* w_rec;   // packed recurrent weights
    T* w_proj;  // packed projection weights
    T* states;  // [2][B][O] double-buffered h (forward) or dh (backward)
    // Inference only (no reserve): [inference_rows(), S*H] gate rows, [inference_rows(), H]
    // pre-projection h (P > 0).
    T* gates;
    T* hh;
    // Backward only: steps per chunk, and rows of one chunk (chunk_steps * B at most, indexed
    // from the chunk's first row):
    int64_t chunk_steps;
    T* h_prev;  // [rows, O] the h each row's step started from
    T* c_prev;  // [rows, H] (LSTM)
    T* dgi;     // [rows, G*H] gradient of the input-side pre-activations
    T* dgh;     // [rows, G*H] recurrent side; aliases dgi unless the cell has a direct h path
    T* dr;      // [rows, P] gradient of the projected output (P > 0)
  };
  struct Buffers {
    T* masked;        // [N, D*O] the previous layer's output times its dropout mask (L > 1)
    T* dy_next[2];    // [N, D*O] each: gradient flowing to the layer below (backward, L > 1)
    T* dx_reverse;    // [N, layer input] the reverse direction's share of dX (backward, D = 2)
    T* layer_out[2];  // [N, D*O] each: outputs of layers below the last (inference, L > 1)
    DirectionBuffers dir[2];
  };

  // Where one (layer, direction)'s forward writes what backward needs: blocks of the reserve,
  // with rows indexed from the sequence's first (training); or, in inference, scratch rows that
  // hold the input projection only (no activations or cells kept: storing the activations cost
  // a batch-1 LSTM step at H = 128 8%), one chunk's indexed from the chunk's first (per_chunk)
  // or every row in direct mode.
  struct SavedRows {
    T* gates;  // [rows, S*H]: the input projection, then in training the activations
    T* cells;  // [rows, H] (LSTM) or null
    T* hh;     // [rows, H] (P > 0)
    bool per_chunk;
    bool training;
  };

  // The workspace of each pass, carved in one place (also used, with a null base, to size it).
  Buffers carve(Carve<T>& ws, Pass pass) const {
    const bool bwd = pass == Pass::Backward || pass == Pass::GroupedBackward;
    const bool inference = pass == Pass::Inference;
    const int64_t masked = L_ > 1 ? N_ * D_ * O_ : 0;
    Buffers buf{};
    buf.masked = ws.take(masked);
    buf.dy_next[0] = ws.take(bwd ? masked : 0);
    buf.dy_next[1] = ws.take(bwd ? masked : 0);
    buf.dx_reverse = ws.take(bwd && D_ == 2 ? N_ * max_layer_input() : 0);
    buf.layer_out[0] = ws.take(inference ? masked : 0);
    buf.layer_out[1] = ws.take(inference && L_ > 2 ? masked : 0);
    for (int64_t d = 0; d < D_; ++d) {
      DirectionBuffers& b = buf.dir[d];
      if (bwd) {
        b.chunk_steps = backward_chunk_steps(pass);
        const int64_t rows = imin(N_, b.chunk_steps * B_);
        // dW_ih, dW_hh, dW_hr (K = a chunk's rows) and dX (K = G*H); W_hh and W_hr as stored.
        b.pack = ws.take(gemm_pack_elems<T>(rows > GH_ ? rows : GH_, widest_gradient()));
        b.w_rec = ws.take(out_blocks_ * GH_ * W);
        b.w_proj = ws.take(P_ > 0 ? unit_blocks_ * P_ * W : 0);
        b.h_prev = ws.take(rows * O_);
        b.c_prev = ws.take(Cell::kHasCell ? rows * H_ : 0);
        b.dgi = ws.take(rows * GH_);
        b.dgh = Cell::kDirectHPath ? ws.take(rows * GH_) : b.dgi;
        b.dr = ws.take(rows * P_);
      } else if (!direct()) {  // direct mode multiplies straight from the weights
        b.w_in = ws.take(unit_blocks_ * max_layer_input() * G * W);
        b.w_rec = ws.take(unit_blocks_ * O_ * G * W);
        b.w_proj = ws.take(P_ > 0 ? out_blocks_ * H_ * W : 0);
      }
      b.states = ws.take(2 * B_ * O_);
      b.gates = ws.take(inference ? inference_rows() * S * H_ : 0);
      b.hh = ws.take(inference && P_ > 0 ? inference_rows() * H_ : 0);
    }
    return buf;
  }

  // Runs f(d, threads) for each direction: both at once, one core each, when there are two
  // directions and at least two threads; else one after the other with all threads. Each output
  // element is computed the same way either way, so the results are the same bits. Each
  // direction has its own scratch (DirectionBuffers) and writes only its own results.
  template <class F>
  void for_each_direction(F&& f) const {
    if (D_ == 2 && threads_ >= 2) {
      parallel(2, [&](int d, int) { f(d, 1); });
    } else {
      for (int64_t d = 0; d < D_; ++d) f(d, threads_);
    }
  }

  // f(w) with the weight matrix w typed as stored: T, or bfloat16 or float16 in a half_weights
  // call, forward or backward (direct mode only: its products are the ones that take any of
  // these types).
  template <class F>
  static void with_weight(const RnnForwardArgs& a, const void* w, F&& f) {
    if constexpr (std::is_same_v<T, float>) {
      if (a.half_weights == HalfWeights::Bfloat16) return f(static_cast<const Bf16Bits*>(w));
      if (a.half_weights == HalfWeights::Float16) return f(static_cast<const Fp16Bits*>(w));
    }
    f(static_cast<const T*>(w));
  }

  // Input of layer l > 0: the previous layer's output `prev`, with its dropout mask applied.
  const T* layer_input(const RnnForwardArgs& a, const T* prev, T* masked, int64_t l) const {
    if (a.masks.empty()) return prev;
    const T* mask = static_cast<const T*>(a.masks[l - 1]);
    for (int64_t i = 0; i < N_ * D_ * O_; ++i) masked[i] = prev[i] * mask[i];
    return masked;
  }

  static V load(const T* p, int n) { return load_n(p, n); }
  static void store(V v, T* p, int n) { store_n(v, p, n); }

  // The walk that packs W [G*H, K] (gate blocks of H rows, row stride K) for unit blocks
  // [u0, u1): block u takes `block` elements from out + u * block, gate g's lane group starting
  // g * W into it; pack_group(rows, count, dst) packs that group's `count` rows of W (< W past H).
  template <class Src, class Dst, class PackGroup>
  void pack_unit_blocks(const Src* w, int64_t K, int64_t u0, int64_t u1, int64_t block, Dst* out,
                        PackGroup&& pack_group) const {
    for (int64_t u = u0; u < u1; ++u) {
      for (int g = 0; g < G; ++g) {
        pack_group(w + (g * H_ + u * W) * K, imin(W, H_ - u * W), out + u * block + g * W);
      }
    }
  }

  // Packs W [G*H, K] for unit blocks [u0, u1): block u is [K][G][W] with element (k, g, lane) =
  // W[g*H + u*W + lane][k], zero past H.
  void pack_units(const T* w, int64_t K, int64_t u0, int64_t u1, T* out) const {
    pack_unit_blocks(w, K, u0, u1, K * G * W, out, [&](const T* rows, int64_t count, T* dst) {
      pack_transposed(rows, K, count, K, G * W, dst);
    });
  }

  static void init_state(const void* init, int64_t offset, int64_t n, T* out) {
    if (init) {
      copy_n(static_cast<const T*>(init) + offset, n, out);
    } else {
      fill_n(out, n, T(0));
    }
  }

  // The walk every phase of a step makes over its share of the work: f(blk, j0, nj, r0, rows)
  // for column blocks [b0, b1) of W columns (of `width`) and rows [0, bs) in tiles of MR.
  template <int MR, class F>
  static void for_each_tile(int64_t b0, int64_t b1, int64_t width, int64_t bs, F&& f) {
    for (int64_t blk = b0; blk < b1; ++blk) {
      const int64_t j0 = blk * W;
      const int nj = static_cast<int>(imin(W, width - j0));
      for (int64_t r0 = 0; r0 < bs; r0 += MR) {
        f(blk, j0, nj, r0, static_cast<int>(imin(MR, bs - r0)));
      }
    }
  }

  // The forward step's walk over unit blocks [b0, b1) of the hidden state and rows [0, bs):
  // product(u, j0, nj, r0, rows, sink) multiplies a tile and hands its accumulators to sink,
  // epilogue(j0, nj, r0, rows, acc) runs the cell on them. With more rows than one tile, each
  // product goes straight to its epilogue. With a single row tile (a batch-1 step), the products
  // of kStepGroup blocks come first and their epilogues after: a block's epilogue is a chain of
  // exp and division latencies that would stall the next block's weight stream, while a group
  // of independent epilogues overlaps. The same products and epilogues either way: the same
  // bits. Per batch-1 step, A/B in one process: RNN tanh H = 128 1.17 -> 1.10 us, H = 512
  // 11.0 -> 10.1; GRU H = 128 1.84 -> 1.73; LSTM within 1% (bench/kernels/NOTES.md, session 9).
  static constexpr int kStepGroup = 8;
  template <int MR, int NG, class Product, class Epilogue>
  void step_tiles(int64_t b0, int64_t b1, int64_t bs, Product&& product,
                  Epilogue&& epilogue) const {
    if (bs > MR) {
      for_each_tile<MR>(b0, b1, H_, bs, [&](int64_t u, int64_t j0, int nj, int64_t r0, int rows) {
        product(u, j0, nj, r0, rows, [&](V(&acc)[MR][NG]) { epilogue(j0, nj, r0, rows, acc); });
      });
      return;
    }
    const int rows = static_cast<int>(bs);
    for (int64_t g0 = b0; g0 < b1; g0 += kStepGroup) {
      const int64_t g1 = imin(g0 + kStepGroup, b1);
      V held[kStepGroup][MR][NG];
      for (int64_t u = g0; u < g1; ++u) {
        product(u, u * W, block_width(u), 0, rows, [&](V(&acc)[MR][NG]) {
          for (int r = 0; r < rows; ++r)
            for (int g = 0; g < NG; ++g) held[u - g0][r][g] = acc[r][g];
        });
      }
      for (int64_t u = g0; u < g1; ++u) epilogue(u * W, block_width(u), 0, rows, held[u - g0]);
    }
  }
  int block_width(int64_t u) const { return static_cast<int>(imin(W, H_ - u * W)); }

  // Rows [bs, B) of a [B, O] state are not computed at this step: their columns of blocks
  // [b0, b1) are copied from cur to next unchanged.
  void carry(const T* cur, T* next, int64_t bs, int64_t b0, int64_t b1) const {
    const int64_t c0 = b0 * W, nc = imin(b1 * W, O_) - c0;
    for (int64_t b = bs; b < B_ && nc > 0; ++b) copy_n(cur + b * O_ + c0, nc, next + b * O_ + c0);
  }

  // A chunk of the walk: steps [s0, s1) in processing order (time reversed for d = 1), which
  // are the consecutive times [t0, t1), so their rows [first, first + count) are consecutive too.
  struct StepChunk {
    int64_t s0, s1, t0, t1, first, count;
  };
  StepChunk step_chunk(int64_t s0, int64_t s1, bool reverse) const {
    const int64_t t0 = reverse ? desc_.seq_len - s1 : s0, t1 = reverse ? desc_.seq_len - s0 : s1;
    const int64_t first = desc_.offset_at(t0);
    return StepChunk{s0, s1, t0, t1, first, desc_.offset_at(t1) - first};
  }

  // Xg = X W_ih^T + b_ih for `count` rows and unit blocks [u0, u1) (all gates), into the first
  // G*H columns of the given gate rows. product(u, r0, rows, sink) multiplies rows [r0, r0 +
  // rows) of X by unit block u of the packed input weights and hands the accumulators to sink.
  template <class Product>
  void project_inputs(int64_t count, int64_t u0, int64_t u1, const T* b_ih, T* gate_rows,
                      Product&& product) const {
    constexpr int MR = tile_rows<G>();
    const int64_t SH = S * H_;
    for_each_tile<MR>(u0, u1, H_, count, [&](int64_t u, int64_t j0, int nj, int64_t r0, int rows) {
      product(u, r0, rows, [&](V(&acc)[MR][G]) {
        for (int r = 0; r < rows; ++r) {
          T* srow = gate_rows + (r0 + r) * SH;
          for (int g = 0; g < G; ++g) {
            V v = acc[r][g];
            if (b_ih) v += load(b_ih + g * H_ + j0, nj);
            store(v, srow + g * H_ + j0, nj);
          }
        }
      });
    });
  }

  // Packs unit blocks [u0, u1) of W_ih into `packed` (at s = 0, right before their first use),
  // then projects `count` rows of the layer's input from `first` on for them (project_inputs).
  // x_l and W_ih are bfloat16 in the first layer of a bf16_input call, else T.
  void pack_and_project(const RnnForwardArgs& a, int64_t l, int64_t d, const T* x_l, int64_t s,
                        int64_t first, int64_t count, int64_t u0, int64_t u1, T* packed,
                        T* gate_rows) const {
    const int64_t in_l = desc_.layer_input_size(l);
    const LayerWeightPtrs w = layer_weight_ptrs(desc_, a.weights, l, d);
    const T* b_ih = static_cast<const T*>(w.b_ih);
#if defined(__AVX512BF16__)
    if constexpr (std::is_same_v<T, float>) {
      if (l == 0 && a.bf16_input) {
        const int64_t panel = ceil_div(in_l, 2) * G * W;
        uint32_t* pairs = reinterpret_cast<uint32_t*>(packed);
        if (s == 0) {  // block u is [ceil(K / 2)][G][W] pairs of k (gemm_bf16.h)
          pack_unit_blocks(static_cast<const Bf16Bits*>(w.w_ih), in_l, u0, u1, panel, pairs,
                           [&](const Bf16Bits* rows, int64_t count, uint32_t* dst) {
                             pack_bf16_pairs(rows, in_l, count, in_l, G * W, dst);
                           });
        }
        const Bf16Bits* x = static_cast<const Bf16Bits*>(a.x) + first * in_l;
        project_inputs(count, u0, u1, b_ih, gate_rows,
                       [&](int64_t u, int64_t r0, int rows, auto&& sink) {
                         tile_bf16<G>(rows, in_l, x + r0 * in_l, in_l, pairs + u * panel, sink);
                       });
        return;
      }
    }
#endif
    if (s == 0) pack_units(static_cast<const T*>(w.w_ih), in_l, u0, u1, packed);
    const T* x = x_l + first * in_l;
    project_inputs(count, u0, u1, b_ih, gate_rows,
                   [&](int64_t u, int64_t r0, int rows, auto&& sink) {
                     tile<G>(rows, in_l, MatA<T>{x + r0 * in_l, in_l, 1},
                             packed + u * in_l * G * W, sink);
                   });
  }

  void forward_layer_direction(const RnnForwardArgs& a, int64_t l, int64_t d, const T* x_l,
                               T* y_l, const SavedRows& saved, const DirectionBuffers& buf,
                               int threads_here) const {
    const LayerWeightPtrs stored = layer_weight_ptrs(desc_, a.weights, l, d);
    const LayerWeights<T> w(stored);  // its matrices are 16-bit in a half_weights call
    const int64_t in_l = desc_.layer_input_size(l), SH = S * H_, ldy = D_ * O_;
    const int64_t state = l * D_ + d;
    T* c_run = Cell::kHasCell ? static_cast<T*>(a.cy) + state * B_ * H_ : nullptr;
    init_state(a.h0, state * B_ * O_, B_ * O_, buf.states);
    if (Cell::kHasCell) init_state(a.c0, state * B_ * H_, B_ * H_, c_run);

    const bool reverse = d == 1;
    const bool direct = this->direct();
    if (direct) {  // every row's projection at once (gemm's few-row path, as gemm would)
      with_weight(a, stored.w_ih, [&](auto w_ih) {
        gemm_direct_dots(N_, GH_, in_l, x_l, in_l, w_ih, in_l, false, saved.gates, SH, w.b_ih,
                         threads_here);
      });
    }
    const int64_t chunk = chunk_steps();
    const int threads = recurrence_threads(direct, threads_here);
    // A step too small to share may still have a projection worth sharing (an input much wider
    // than the hidden state): then each chunk's projection alone is split over threads_here.
    // Which thread projects a unit block does not change its bits.
    const bool share_projection = !direct && threads == 1 && threads_here > 1;
    SpinBarrier barrier(threads);
    parallel(threads, [&](int tid, int n) {
      const int64_t u0 = unit_blocks_ * tid / n, u1 = unit_blocks_ * (tid + 1) / n;
      const int64_t q0 = out_blocks_ * tid / n, q1 = out_blocks_ * (tid + 1) / n;
      if (!direct) {
        pack_units(w.w_hh, O_, u0, u1, buf.w_rec);
        if (P_ > 0) pack_panels<1>(Trans::Yes, w.w_hr, H_, 0, H_, P_, q0, q1, buf.w_proj);
      }
      // Row r of the sequence is row r - base of saved.gates and saved.hh.
      int64_t base = 0;
      constexpr int MR = tile_rows<G>();
      for (int64_t s = 0; s < desc_.seq_len; ++s) {
        const int64_t t = reverse ? desc_.seq_len - 1 - s : s;
        const int64_t bs = desc_.rows_at(t), off = desc_.offset_at(t);
        const T* cur = buf.states + (s % 2) * B_ * O_;
        T* next = buf.states + ((s + 1) % 2) * B_ * O_;
        if (!direct && s % chunk == 0) {  // this thread's gate columns only: no barrier needed
          const StepChunk steps = step_chunk(s, imin(s + chunk, desc_.seq_len), reverse);
          if (saved.per_chunk) base = steps.first;
          // Unit blocks [b0, b1), their input weights packed at s = 0 right before first use.
          auto project = [&](int64_t b0, int64_t b1) {
            pack_and_project(a, l, d, x_l, s, steps.first, steps.count, b0, b1, buf.w_in,
                             saved.gates + (steps.first - base) * SH);
          };
          if (share_projection) {
            parallel(threads_here, [&](int p, int pn) {
              project(unit_blocks_ * p / pn, unit_blocks_ * (p + 1) / pn);
            });
          } else {
            project(u0, u1);
          }
        }
        barrier.wait();  // h_{t-1} complete (and, at s = 0, the packed weights)
        auto product = [&](int64_t u, int64_t j0, int nj, int64_t r0, int rows, auto&& sink) {
          if (direct) {
            with_weight(a, stored.w_hh, [&](auto w_hh) {
              direct_tile<G>(rows, O_, cur + r0 * O_, O_, w_hh, H_, j0, nj, sink);
            });
          } else {
            tile<G>(rows, O_, MatA<T>{cur + r0 * O_, O_, 1}, buf.w_rec + u * O_ * G * W, sink);
          }
        };
        auto cell_epilogue = [&](int64_t j0, int nj, int64_t r0, int rows, V(&acc)[MR][G]) {
          for (int r = 0; r < rows; ++r) {
            const int64_t b = r0 + r, row = off + b;
            T* srow = saved.gates + (row - base) * SH;
            V xp[G], hp[G], out[S];
            for (int g = 0; g < G; ++g) {
              xp[g] = load(srow + g * H_ + j0, nj);
              hp[g] = acc[r][g];
              if (w.b_hh) hp[g] += load(w.b_hh + g * H_ + j0, nj);
            }
            const V h_prev = Cell::kDirectHPath ? load(cur + b * O_ + j0, nj) : V(T(0));
            const V c_prev = Cell::kHasCell ? load(c_run + b * H_ + j0, nj) : V(T(0));
            V c(T(0)), h;
            Cell::forward(xp, hp, h_prev, c_prev, out, c, h);
            if (saved.training) {
              for (int k = 0; k < S; ++k) store(out[k], srow + k * H_ + j0, nj);
            }
            if (Cell::kHasCell) {
              store(c, c_run + b * H_ + j0, nj);
              if (saved.cells) store(c, saved.cells + row * H_ + j0, nj);
            }
            if (P_ > 0) {
              store(h, saved.hh + (row - base) * H_ + j0, nj);
            } else {
              store(h, next + b * O_ + j0, nj);
              store(h, y_l + row * ldy + d * O_ + j0, nj);
            }
          }
        };
        step_tiles<MR, G>(u0, u1, bs, product, cell_epilogue);
        if (P_ == 0) carry(cur, next, bs, u0, u1);
        if (P_ > 0) {
          barrier.wait();  // h_t of every unit is in hh
          with_weight(a, stored.w_hr, [&](auto w_hr) {
            project_step(saved.hh + (off - base) * H_, bs, q0, q1, direct ? nullptr : buf.w_proj,
                         w_hr, y_l + off * ldy + d * O_, ldy, cur, next);
          });
        }
      }
    });
    copy_n(buf.states + (desc_.seq_len % 2) * B_ * O_, B_ * O_,
           static_cast<T*>(a.hy) + state * B_ * O_);
  }

  // r_t = hh_t W_hr^T for output blocks [q0, q1): into the layer output and the next state.
  // From the packed w_proj, or straight from w_hr (T or 16-bit) when w_proj is null (direct
  // mode).
  template <class WT>
  void project_step(const T* hh_rows, int64_t bs, int64_t q0, int64_t q1, const T* w_proj,
                    const WT* w_hr, T* y_rows, int64_t ldy, const T* cur, T* next) const {
    constexpr int MR = tile_rows<1>();
    for_each_tile<MR>(q0, q1, O_, bs, [&](int64_t q, int64_t p0, int np, int64_t r0, int rows) {
      auto out_epilogue = [&](V(&acc)[MR][1]) {
        for (int r = 0; r < rows; ++r) {
          store(acc[r][0], y_rows + (r0 + r) * ldy + p0, np);
          store(acc[r][0], next + (r0 + r) * O_ + p0, np);
        }
      };
      if (w_proj) {
        tile<1>(rows, H_, MatA<T>{hh_rows + r0 * H_, H_, 1}, w_proj + q * H_ * W, out_epilogue);
      } else {
        direct_tile<1>(rows, H_, hh_rows + r0 * H_, H_, w_hr, 0, p0, np, out_epilogue);
      }
    });
    carry(cur, next, bs, q0, q1);
  }

  // Rows of the state that fed the steps of times [t0, t1): the previous step's rows, or the
  // initial state for rows that start at their step (the first step of a direction, or shorter
  // packed sequences in the reverse direction). Row r of the sequence goes to row r - first.
  void gather_previous(const T* seq, int64_t ld_seq, int64_t col, const void* init,
                       int64_t init_offset, int64_t width, bool reverse, int64_t t0, int64_t t1,
                       int64_t first, T* out) const {
    const T* init_rows = init ? static_cast<const T*>(init) + init_offset : nullptr;
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t prev = reverse ? t + 1 : t - 1;
      const bool has_prev = prev >= 0 && prev < desc_.seq_len;
      const int64_t bs = desc_.rows_at(t), off = desc_.offset_at(t);
      const int64_t bs_prev = has_prev ? desc_.rows_at(prev) : 0;
      for (int64_t b = 0; b < bs; ++b) {
        T* dst = out + (off + b - first) * width;
        if (b < bs_prev) {
          copy_n(seq + (desc_.offset_at(prev) + b) * ld_seq + col, width, dst);
        } else if (init_rows) {
          copy_n(init_rows + b * width, width, dst);
        } else {
          fill_n(dst, width, T(0));
        }
      }
    }
  }

  // Backprop through one (layer, direction) on `threads` threads: dh0, dc0, its weight
  // gradients and its share of dX into dx_share (unless null), a chunk of steps at a time from
  // the last.
  void backward_layer_direction(const RnnBackwardArgs& a, int64_t l, int64_t d, const T* dy_l,
                                const T* x_l, T* dx_share, const T* reserve,
                                const DirectionBuffers& buf, int threads) const {
    const int64_t state = l * D_ + d, T_ = desc_.seq_len;
    T* dc_run = Cell::kHasCell ? static_cast<T*>(a.dc0) + state * B_ * H_ : nullptr;
    init_state(a.dhy, state * B_ * O_, B_ * O_, buf.states);
    if (Cell::kHasCell) init_state(a.dcy, state * B_ * H_, B_ * H_, dc_run);
    // At least one chunk, empty when T = 0, so that the gradients are written (zeros) anyway.
    for (int64_t s1 = T_, s0; ; s1 = s0) {
      s0 = s1 > buf.chunk_steps ? s1 - buf.chunk_steps : 0;
      const StepChunk chunk = step_chunk(s0, s1, d == 1);  // walked from s1 - 1 down
      backward_recurrence(a, l, d, dy_l, reserve, buf, chunk, dc_run, s1 == T_, threads);
      backward_gemms(a, l, d, x_l, dx_share, reserve, buf, chunk, s1 != T_, threads);
      if (s0 == 0) break;
    }
    copy_n(buf.states + (T_ % 2) * B_ * O_, B_ * O_, static_cast<T*>(a.dh0) + state * B_ * O_);
  }

  // The steps of one chunk: its dG rows (and dr with a projection) into the chunk buffers,
  // dh and dc carried in buf.states and dc_run. The first chunk also packs the weights.
  void backward_recurrence(const RnnBackwardArgs& a, int64_t l, int64_t d, const T* dy_l,
                           const T* reserve, const DirectionBuffers& buf, const StepChunk& chunk,
                           T* dc_run, bool first_chunk, int threads_here) const {
    const RnnForwardArgs& f = a.fwd;
    const LayerWeightPtrs stored = layer_weight_ptrs(desc_, f.weights, l, d);
    const LayerWeights<T> w(stored);  // its matrices are 16-bit in a half_weights call
    const int64_t ldy = D_ * O_, T_ = desc_.seq_len;
    const int64_t state = l * D_ + d;
    const bool reverse = d == 1;
    const T* gates = reserve + layout_.gates(N_, l, d);
    const T* cells = reserve + layout_.cell(N_, l, d);
    const T* y_l = reserve + layout_.layer_out(N_, l);
    const int64_t first = chunk.first;

    gather_previous(y_l, ldy, d * O_, f.h0, state * B_ * O_, O_, reverse, chunk.t0, chunk.t1,
                    first, buf.h_prev);
    if (Cell::kHasCell) {
      gather_previous(cells, H_, 0, f.c0, state * B_ * H_, H_, reverse, chunk.t0, chunk.t1,
                      first, buf.c_prev);
    }

    const bool direct = this->direct();
    const int threads = recurrence_threads(direct, threads_here);
    SpinBarrier barrier(threads);
    parallel(threads, [&](int tid, int n) {
      const int64_t u0 = unit_blocks_ * tid / n, u1 = unit_blocks_ * (tid + 1) / n;
      const int64_t q0 = out_blocks_ * tid / n, q1 = out_blocks_ * (tid + 1) / n;
      if (first_chunk && !direct) {
        // dh_{t-1} = dG W_hh: W_hh [G*H, O] is the B operand as stored, split by O columns.
        pack_panels<1>(Trans::No, w.w_hh, O_, 0, GH_, O_, q0, q1, buf.w_rec);
        // dhh = dr W_hr: W_hr [P, H] as stored, split by hidden units.
        if (P_ > 0) pack_panels<1>(Trans::No, w.w_hr, H_, 0, P_, H_, u0, u1, buf.w_proj);
        barrier.wait();
      }
      for (int64_t s = chunk.s1 - 1; s >= chunk.s0; --s) {
        const int64_t t = reverse ? T_ - 1 - s : s;
        const int64_t bs = desc_.rows_at(t), off = desc_.offset_at(t);
        const T* cur = buf.states + ((T_ - 1 - s) % 2) * B_ * O_;
        T* next = buf.states + ((T_ - s) % 2) * B_ * O_;
        if (P_ > 0) {
          // dr_t = dy_t + dh from step t+1, split by output columns.
          for (int64_t q = q0; q < q1; ++q) {
            const int64_t p0 = q * W, np = imin(W, O_ - p0);
            for (int64_t b = 0; b < bs; ++b) {
              for (int64_t p = p0; p < p0 + np; ++p) {
                buf.dr[(off + b - first) * P_ + p] =
                    dy_l[(off + b) * ldy + d * O_ + p] + cur[b * O_ + p];
              }
            }
          }
          barrier.wait();
        }
        with_weight(f, stored.w_hr, [&](auto w_hr) {
          cell_backward_step(bs, off, first, u0, u1, gates, cells, dy_l + off * ldy + d * O_,
                             ldy, cur, next, dc_run, direct ? nullptr : buf.w_proj, w_hr, buf);
        });
        barrier.wait();  // dG of every unit is complete
        constexpr int MR = tile_rows<1>();
        for_each_tile<MR>(q0, q1, O_, bs, [&](int64_t q, int64_t p0, int np, int64_t r0, int rows) {
          auto dh_epilogue = [&](V(&acc)[MR][1]) {
            for (int r = 0; r < rows; ++r) {
              T* dst = next + (r0 + r) * O_ + p0;
              V out = acc[r][0];
              if (Cell::kDirectHPath) out += load(dst, np);
              store(out, dst, np);
            }
          };
          const T* dg_rows = buf.dgh + (off - first + r0) * GH_;
          if (direct) {
            with_weight(f, stored.w_hh, [&](auto w_hh) {
              direct_rows_tile(rows, GH_, dg_rows, GH_, w_hh + p0, O_, np, dh_epilogue);
            });
          } else {
            tile<1>(rows, GH_, MatA<T>{dg_rows, GH_, 1}, buf.w_rec + q * GH_ * W, dh_epilogue);
          }
        });
        carry(cur, next, bs, q0, q1);
        // No barrier before the next step: a thread reads and writes only its own columns of
        // the dh buffers (the q and u splits coincide without a projection, and with one the
        // cell, LSTM, reads dr, not dh), and what it reads of the others' work, rows of dr and
        // dG, are new rows at every step, each read after the barrier that completes them.
      }
    });
  }

  // GEMMs over one chunk's dG rows: its terms of the weight gradients (in the flat list's order
  // w_ih, w_hh, b_ih, b_hh, w_hr; written by the first chunk, added to by the others; none when
  // dweights is empty) and its rows of this direction's share of dX (unless dx_share is null).
  void backward_gemms(const RnnBackwardArgs& a, int64_t l, int64_t d, const T* x_l, T* dx_share,
                      const T* reserve, const DirectionBuffers& buf, const StepChunk& chunk,
                      bool accumulate, int threads) const {
    const LayerWeightPtrs stored = layer_weight_ptrs(desc_, a.fwd.weights, l, d);
    const int64_t in_l = desc_.layer_input_size(l), state = l * D_ + d;
    const int64_t first = chunk.first, rows = chunk.count;
    if (!a.dweights.empty()) {
      const T* hh = reserve + layout_.hh(N_, l, d) + first * H_;
      const int64_t first_weight = state * desc_.weights_per_layer_direction();
      // The products run over sets of rows: all of the chunk's, or with weight groups (padded
      // input) each batch row's steps, a row stride of B apart, into its group's block. One set
      // makes the whole-batch products, with the arguments they always had.
      const bool grouped = a.weight_groups > 1;
      const int64_t sets = grouped ? B_ : 1, set_rows = grouped ? rows / B_ : rows;
      const int64_t stride = grouped ? B_ : 1, rows_per_group = B_ / a.weight_groups;
      for (int64_t b = 0; b < sets; ++b) {
        // (B may be 0 without groups: an empty batch's products write zeros.)
        const int64_t g = grouped ? b / rows_per_group : 0;
        const bool add = accumulate || (grouped && b % rows_per_group > 0);
        // Weight k of the flat list, group g's block of `block` values.
        auto dw = [&](int64_t k, int64_t block) {
          return static_cast<T*>(a.dweights[first_weight + k]) + g * block;
        };
        int64_t k = 0;
        gemm(Trans::Yes, Trans::No, GH_, in_l, set_rows, buf.dgi + b * GH_, stride * GH_,
             x_l + (first + b) * in_l, stride * in_l, add, dw(k++, GH_ * in_l), in_l, buf.pack,
             threads);
        gemm(Trans::Yes, Trans::No, GH_, O_, set_rows, buf.dgh + b * GH_, stride * GH_,
             buf.h_prev + b * O_, stride * O_, add, dw(k++, GH_ * O_), O_, buf.pack, threads);
        if (desc_.has_bias) {
          column_sums(buf.dgi + b * GH_, set_rows, stride * GH_, add, dw(k++, GH_), threads);
          column_sums(buf.dgh + b * GH_, set_rows, stride * GH_, add, dw(k++, GH_), threads);
        }
        if (P_ > 0) {
          gemm(Trans::Yes, Trans::No, P_, H_, set_rows, buf.dr + b * P_, stride * P_,
               hh + b * H_, stride * H_, add, dw(k, P_ * H_), H_, buf.pack, threads);
        }
      }
    }
    if (dx_share && direct()) {  // gemm's few-row path, as gemm would; the weights may be 16-bit
      with_weight(a.fwd, stored.w_ih, [&](auto w_ih) {
        gemm_direct_combine(rows, in_l, GH_, MatA<T>{buf.dgi, GH_, 1}, w_ih, in_l, false,
                            dx_share + first * in_l, in_l, static_cast<const T*>(nullptr));
      });
    } else if (dx_share) {
      gemm(Trans::No, Trans::No, rows, in_l, GH_, buf.dgi, GH_, static_cast<const T*>(stored.w_ih),
           in_l, false, dx_share + first * in_l, in_l, buf.pack, threads);
    }
  }

  // The cell's backward at one step for unit blocks [u0, u1): dG rows, dc in place and, for
  // GRU, the direct part of dh_{t-1} into next (the owner of unit j also owns column j of dh
  // when there is no projection). Rows of the chunk buffers are indexed from `first`.
  // dhh comes from the packed w_proj, or straight from w_hr (T or 16-bit) when w_proj is null
  // (direct mode).
  template <class WT>
  void cell_backward_step(int64_t bs, int64_t off, int64_t first, int64_t u0, int64_t u1,
                          const T* gates, const T* cells, const T* dy_rows, int64_t ldy,
                          const T* cur, T* next, T* dc_run, const T* w_proj, const WT* w_hr,
                          const DirectionBuffers& buf) const {
    const int64_t SH = S * H_;
    constexpr int MR = tile_rows<1>();
    for_each_tile<MR>(u0, u1, H_, bs, [&](int64_t u, int64_t j0, int nj, int64_t r0, int rows) {
      V dhh[MR];
      if (P_ > 0) {
        auto keep = [&](V(&acc)[MR][1]) {
          for (int r = 0; r < rows; ++r) dhh[r] = acc[r][0];
        };
        const T* dr_rows = buf.dr + (off - first + r0) * P_;
        if (w_proj) {
          tile<1>(rows, P_, MatA<T>{dr_rows, P_, 1}, w_proj + u * P_ * W, keep);
        } else {
          direct_rows_tile(rows, P_, dr_rows, P_, w_hr + j0, H_, nj, keep);
        }
      } else {
        for (int r = 0; r < rows; ++r) {
          dhh[r] = load(dy_rows + (r0 + r) * ldy + j0, nj) + load(cur + (r0 + r) * O_ + j0, nj);
        }
      }
      for (int r = 0; r < rows; ++r) {
        const int64_t b = r0 + r, row = off + b, crow = row - first;
        V saved[S], dxp[G], dhp[G];
        for (int k = 0; k < S; ++k) saved[k] = load(gates + row * SH + k * H_ + j0, nj);
        const V c = Cell::kHasCell ? load(cells + row * H_ + j0, nj) : V(T(0));
        const V c_prev = Cell::kHasCell ? load(buf.c_prev + crow * H_ + j0, nj) : V(T(0));
        const V h_prev = Cell::kDirectHPath ? load(buf.h_prev + crow * O_ + j0, nj) : V(T(0));
        const V dc = Cell::kHasCell ? load(dc_run + b * H_ + j0, nj) : V(T(0));
        V dc_prev(T(0)), dh_prev(T(0));
        Cell::backward(dhh[r], dc, saved, c, c_prev, h_prev, dxp, dhp, dc_prev, dh_prev);
        for (int g = 0; g < G; ++g) store(dxp[g], buf.dgi + crow * GH_ + g * H_ + j0, nj);
        if (Cell::kDirectHPath) {
          for (int g = 0; g < G; ++g) store(dhp[g], buf.dgh + crow * GH_ + g * H_ + j0, nj);
          store(dh_prev, next + b * O_ + j0, nj);
        }
        if (Cell::kHasCell) store(dc_prev, dc_run + b * H_ + j0, nj);
      }
    });
  }

  // out[j] (+)= sum over rows of m[row][j] for `rows` rows of G*H values, `stride` apart,
  // columns split across threads; out is overwritten unless accumulate.
  void column_sums(const T* m, int64_t rows, int64_t stride, bool accumulate, T* out,
                   int threads) const {
    if (rows * GH_ < (1 << 16)) threads = 1;
    parallel(threads, [&](int tid, int n) {
      const int64_t j0 = GH_ * tid / n, j1 = GH_ * (tid + 1) / n;
      if (!accumulate) fill_n(out + j0, j1 - j0, T(0));
      for (int64_t r = 0; r < rows; ++r) {
        for (int64_t j = j0; j < j1; ++j) out[j] += m[r * stride + j];
      }
    });
  }

  // dst += src for [rows, width] matrices, rows split across threads.
  void add_rows(const T* src, int64_t rows, int64_t width, T* dst) const {
    const int threads = rows * width < (1 << 16) ? 1 : threads_;
    parallel(threads, [&](int tid, int n) {
      for (int64_t i = rows * tid / n * width; i < rows * (tid + 1) / n * width; ++i) {
        dst[i] += src[i];
      }
    });
  }

  const RnnDesc& desc_;
  ReserveLayout layout_;
  const int threads_;
  const int64_t N_, B_, H_, O_, P_, D_, L_, GH_, unit_blocks_, out_blocks_;
};

}  // namespace fastrnn::cpu::FASTRNN_ISA
