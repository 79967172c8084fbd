// CPU recurrence driver: runs any cell (csrc/cells/) over a whole stack, forward and BPTT.
//
// Per layer and direction:
//   forward   Xg = X_l W_ih^T + b_ih for all rows at once (one GEMM, written into the reserve's
//             gate block), then per step Hg = h_{t-1} W_hh^T (GEMM over the step's rows) and the
//             cell's pointwise forward, which overwrites Xg in place with what backward needs.
//   backward  per step in reverse: dGates from the cell's pointwise backward, dh_{t-1} = dGates W_hh;
//             then whole-sequence GEMMs for dW_ih, dW_hh, dW_hr and dX.
// State rows: the running h/c of a direction live in hy/cy (forward) and dh0/dc0 (backward), [B, .];
// at step t only rows < batch_sizes[t] are touched, which is exactly PackedSequence semantics in
// both directions (a sequence's state is left alone while it is not active).
#include <algorithm>
#include <cstring>
#include <vector>

#include "cells/gru.h"
#include "cells/lstm.h"
#include "cells/rnn.h"
#include "cpu/gemm.h"
#include "fastrnn/rnn.h"

namespace fastrnn {
namespace {

using cpu::gemm;
using cpu::Trans;

template <class F>
auto with_cell(CellKind kind, F&& f) {
  switch (kind) {
    case CellKind::RnnTanh:
      return f(cells::RnnTanh{});
    case CellKind::RnnRelu:
      return f(cells::RnnRelu{});
    case CellKind::Lstm:
      return f(cells::Lstm{});
    case CellKind::Gru:
      return f(cells::Gru{});
  }
  throw std::invalid_argument("fastrnn: unknown cell kind");
}

// Where each saved quantity lives in the reserve: a sequence of [N, width] blocks.
//   for each (l, d): gates [N, kSaved*H], c [N, H] (LSTM), hh [N, H] (pre-projection h, P > 0)
//   for each l < L-1: layer output [N, D*O]
template <class Cell>
struct ReserveLayout {
  int64_t H, O, D, L, P;
  int64_t gates_w, cell_w, hh_w, per_ld_w;

  explicit ReserveLayout(const RnnDesc& desc)
      : H(desc.hidden_size),
        O(desc.out_size()),
        D(desc.num_directions),
        L(desc.num_layers),
        P(desc.proj_size),
        gates_w(Cell::kSaved * H),
        cell_w(Cell::kHasCell ? H : 0),
        hh_w(P > 0 ? H : 0),
        per_ld_w(gates_w + cell_w + hh_w) {}

  int64_t per_row() const { return L * D * per_ld_w + (L - 1) * D * O; }
  int64_t ld_base(int64_t N, int64_t l, int64_t d) const { return N * (l * D + d) * per_ld_w; }
  int64_t gates(int64_t N, int64_t l, int64_t d) const { return ld_base(N, l, d); }
  int64_t cell(int64_t N, int64_t l, int64_t d) const { return ld_base(N, l, d) + N * gates_w; }
  int64_t hh(int64_t N, int64_t l, int64_t d) const {
    return ld_base(N, l, d) + N * (gates_w + cell_w);
  }
  int64_t layer_out(int64_t N, int64_t l) const { return N * (L * D * per_ld_w + l * D * O); }
};

// The flat weight list of one (layer, direction), in torch's order.
template <class T>
struct LayerWeights {
  const T* w_ih = nullptr;
  const T* w_hh = nullptr;
  const T* b_ih = nullptr;
  const T* b_hh = nullptr;
  const T* w_hr = nullptr;
};

template <class T, class P>
LayerWeights<T> layer_weights(const RnnDesc& desc, const std::vector<P>& flat, int64_t l,
                              int64_t d) {
  const int64_t per = desc.weights_per_layer_direction();
  const P* w = flat.data() + (l * desc.num_directions + d) * per;
  LayerWeights<T> lw;
  lw.w_ih = static_cast<const T*>(w[0]);
  lw.w_hh = static_cast<const T*>(w[1]);
  int64_t k = 2;
  if (desc.has_bias) {
    lw.b_ih = static_cast<const T*>(w[k++]);
    lw.b_hh = static_cast<const T*>(w[k++]);
  }
  if (desc.proj_size > 0) lw.w_hr = static_cast<const T*>(w[k]);
  return lw;
}

// The step that ran just before step t in a direction's order, or -1 at the direction's start.
int64_t previous_step(const RnnDesc& desc, int64_t t, bool reverse) {
  const int64_t prev = reverse ? t + 1 : t - 1;
  return (prev < 0 || prev >= desc.seq_len) ? -1 : prev;
}

// out[row] = mask ? in[row] * mask[row] : in[row] for an [N, W] matrix.
template <class T>
void apply_mask(int64_t n, const T* in, const T* mask, T* out) {
  for (int64_t i = 0; i < n; ++i) out[i] = in[i] * mask[i];
}

template <class T, class Cell>
class Driver {
 public:
  Driver(const RnnDesc& desc)
      : desc_(desc),
        layout_(desc),
        N_(desc.total_rows()),
        B_(desc.batch),
        H_(desc.hidden_size),
        O_(desc.out_size()),
        P_(desc.proj_size),
        D_(desc.num_directions),
        L_(desc.num_layers),
        G_(Cell::kGates) {}

  static int64_t workspace_elems(const RnnDesc& desc, Pass pass) {
    const int64_t N = desc.total_rows(), B = desc.batch, H = desc.hidden_size;
    const int64_t O = desc.out_size(), D = desc.num_directions, GH = Cell::kGates * H;
    const int64_t masked_input = desc.num_layers > 1 ? N * D * O : 0;
    if (pass == Pass::Forward) return B * GH + masked_input;
    const int64_t per_ld = N * O                                 // h_prev rows
                           + (Cell::kHasCell ? N * H : 0)        // c_prev rows
                           + N * GH                              // dGates (input side)
                           + (Cell::kDirectHPath ? N * GH : 0)   // dGates (recurrent side)
                           + (desc.proj_size > 0 ? N * desc.proj_size : 0)  // dR
                           + B * O + B * H;                      // dr, dhh of one step
    return per_ld + masked_input + 2 * masked_input;             // + dY ping-pong buffers
  }

  void forward(const RnnForwardArgs& a) {
    T* reserve = static_cast<T*>(a.reserve);
    T* ws = static_cast<T*>(a.workspace);
    T* hg = ws;                               // [B, G*H]
    T* masked = ws + B_ * G_ * H_;            // [N, D*O] when L > 1
    for (int64_t l = 0; l < L_; ++l) {
      const T* x_l = layer_input(a, reserve, masked, l);
      const int64_t in_l = desc_.layer_input_size(l);
      T* y_l = l == L_ - 1 ? static_cast<T*>(a.y) : reserve + layout_.layer_out(N_, l);
      for (int64_t d = 0; d < D_; ++d) {
        forward_layer_direction(a, l, d, x_l, in_l, y_l, reserve, hg);
      }
    }
  }

  void backward(const RnnBackwardArgs& a) {
    const RnnForwardArgs& f = a.fwd;
    const T* reserve = static_cast<const T*>(f.reserve);
    T* ws = static_cast<T*>(a.workspace);
    BackwardBuffers buf = carve_backward(ws);
    const T* dy_l = static_cast<const T*>(a.dy);
    for (int64_t l = L_ - 1; l >= 0; --l) {
      const T* x_l = layer_input(f, reserve, buf.masked, l);
      const int64_t in_l = desc_.layer_input_size(l);
      T* dx_l = l == 0 ? static_cast<T*>(a.dx) : buf.dy_next[l % 2];
      for (int64_t d = 0; d < D_; ++d) {
        backward_layer_direction(a, l, d, x_l, in_l, dy_l, dx_l, reserve, buf);
      }
      if (l > 0 && !f.masks.empty()) {
        apply_mask(N_ * D_ * O_, dx_l, static_cast<const T*>(f.masks[l - 1]), dx_l);
      }
      dy_l = dx_l;
    }
  }

 private:
  struct BackwardBuffers {
    T* h_prev;    // [N, O]
    T* c_prev;    // [N, H] (LSTM)
    T* dgi;       // [N, G*H]
    T* dgh;       // [N, G*H]; aliases dgi unless the cell has a direct h path (GRU)
    T* dr_rows;   // [N, P] (projection)
    T* dr_step;   // [B, O]
    T* dhh_step;  // [B, H]
    T* masked;    // [N, D*O] (L > 1)
    T* dy_next[2];  // [N, D*O] each (L > 1)
  };

  BackwardBuffers carve_backward(T* p) {
    const int64_t GH = G_ * H_;
    BackwardBuffers b;
    auto take = [&p](int64_t n) {
      T* out = p;
      p += n;
      return out;
    };
    b.h_prev = take(N_ * O_);
    b.c_prev = take(Cell::kHasCell ? N_ * H_ : 0);
    b.dgi = take(N_ * GH);
    b.dgh = Cell::kDirectHPath ? take(N_ * GH) : b.dgi;
    b.dr_rows = take(P_ > 0 ? N_ * P_ : 0);
    b.dr_step = take(B_ * O_);
    b.dhh_step = take(B_ * H_);
    const int64_t masked = L_ > 1 ? N_ * D_ * O_ : 0;
    b.masked = take(masked);
    b.dy_next[0] = take(masked);
    b.dy_next[1] = take(masked);
    return b;
  }

  // Input of layer l: x, or the previous layer's output with its dropout mask applied.
  const T* layer_input(const RnnForwardArgs& a, const T* reserve, T* masked, int64_t l) const {
    if (l == 0) return static_cast<const T*>(a.x);
    const T* prev = reserve + layout_.layer_out(N_, l - 1);
    if (a.masks.empty()) return prev;
    apply_mask(N_ * D_ * O_, prev, static_cast<const T*>(a.masks[l - 1]), masked);
    return masked;
  }

  void forward_layer_direction(const RnnForwardArgs& a, int64_t l, int64_t d, const T* x_l,
                               int64_t in_l, T* y_l, T* reserve, T* hg) {
    const LayerWeights<T> w = layer_weights<T>(desc_, a.weights, l, d);
    const int64_t GH = G_ * H_, SH = Cell::kSaved * H_, ldy = D_ * O_;
    const int64_t state = l * D_ + d;
    T* gates = reserve + layout_.gates(N_, l, d);
    T* cells = reserve + layout_.cell(N_, l, d);
    T* hh = reserve + layout_.hh(N_, l, d);
    T* h_run = static_cast<T*>(a.hy) + state * B_ * O_;
    T* c_run = Cell::kHasCell ? static_cast<T*>(a.cy) + state * B_ * H_ : nullptr;
    init_state(a.h0, state * B_ * O_, B_ * O_, h_run);
    if (Cell::kHasCell) init_state(a.c0, state * B_ * H_, B_ * H_, c_run);

    // Input projection for every row at once, into the first G*H columns of the gate block.
    if (w.b_ih) {
      for (int64_t r = 0; r < N_; ++r) std::copy(w.b_ih, w.b_ih + GH, gates + r * SH);
    }
    gemm(Trans::No, Trans::Yes, N_, GH, in_l, x_l, in_l, w.w_ih, in_l, w.b_ih != nullptr, gates,
         SH);

    const bool reverse = d == 1;
    for (int64_t s = 0; s < desc_.seq_len; ++s) {
      const int64_t t = reverse ? desc_.seq_len - 1 - s : s;
      const int64_t bs = desc_.rows_at(t), off = desc_.offset_at(t);
      gemm(Trans::No, Trans::Yes, bs, GH, O_, h_run, O_, w.w_hh, O_, false, hg, GH);
      for (int64_t b = 0; b < bs; ++b) {
        const int64_t row = off + b;
        T* saved_row = gates + row * SH;
        const T* hg_row = hg + b * GH;
        for (int64_t j = 0; j < H_; ++j) {
          T xp[Cell::kGates], hp[Cell::kGates], saved[Cell::kSaved];
          for (int k = 0; k < Cell::kGates; ++k) {
            xp[k] = saved_row[k * H_ + j];
            hp[k] = hg_row[k * H_ + j] + (w.b_hh ? w.b_hh[k * H_ + j] : T(0));
          }
          const T h_prev = P_ == 0 ? h_run[b * O_ + j] : T(0);
          const T c_prev = Cell::kHasCell ? c_run[b * H_ + j] : T(0);
          T c = T(0), h;
          Cell::forward(xp, hp, h_prev, c_prev, saved, c, h);
          for (int k = 0; k < Cell::kSaved; ++k) saved_row[k * H_ + j] = saved[k];
          if (Cell::kHasCell) {
            c_run[b * H_ + j] = c;
            cells[row * H_ + j] = c;
          }
          if (P_ > 0) {
            hh[row * H_ + j] = h;
          } else {
            h_run[b * O_ + j] = h;
            y_l[row * ldy + d * O_ + j] = h;
          }
        }
      }
      if (P_ > 0) {
        // r_t = hh_t W_hr^T is both the output and the recurrent state.
        T* y_rows = y_l + off * ldy + d * O_;
        gemm(Trans::No, Trans::Yes, bs, P_, H_, hh + off * H_, H_, w.w_hr, H_, false, y_rows, ldy);
        for (int64_t b = 0; b < bs; ++b) {
          std::copy(y_rows + b * ldy, y_rows + b * ldy + O_, h_run + b * O_);
        }
      }
    }
  }

  static void init_state(const void* init, int64_t offset, int64_t n, T* out) {
    if (init) {
      const T* src = static_cast<const T*>(init) + offset;
      std::copy(src, src + n, out);
    } else {
      std::fill(out, out + n, T(0));
    }
  }

  // Rows of the state that fed each step: the previous step's rows, or the initial state for
  // rows that start at this step (the first step of a direction, or shorter packed sequences
  // in the reverse direction).
  void gather_previous(const T* seq, int64_t ld_seq, int64_t col, const void* init,
                       int64_t init_offset, int64_t width, bool reverse, T* out) const {
    const T* init_rows = init ? static_cast<const T*>(init) + init_offset : nullptr;
    for (int64_t t = 0; t < desc_.seq_len; ++t) {
      const int64_t prev = previous_step(desc_, t, reverse);
      const int64_t bs = desc_.rows_at(t), off = desc_.offset_at(t);
      const int64_t bs_prev = prev < 0 ? 0 : desc_.rows_at(prev);
      for (int64_t b = 0; b < bs; ++b) {
        T* dst = out + (off + b) * width;
        if (b < bs_prev) {
          const T* src = seq + (desc_.offset_at(prev) + b) * ld_seq + col;
          std::copy(src, src + width, dst);
        } else if (init_rows) {
          std::copy(init_rows + b * width, init_rows + (b + 1) * width, dst);
        } else {
          std::fill(dst, dst + width, T(0));
        }
      }
    }
  }

  void backward_layer_direction(const RnnBackwardArgs& a, int64_t l, int64_t d, const T* x_l,
                                int64_t in_l, const T* dy_l, T* dx_l, const T* reserve,
                                const BackwardBuffers& buf) {
    const RnnForwardArgs& f = a.fwd;
    const LayerWeights<T> w = layer_weights<T>(desc_, f.weights, l, d);
    const int64_t GH = G_ * H_, SH = Cell::kSaved * H_, ldy = D_ * O_;
    const int64_t state = l * D_ + d;
    const bool reverse = d == 1;
    const T* gates = reserve + layout_.gates(N_, l, d);
    const T* cells = reserve + layout_.cell(N_, l, d);
    const T* hh = reserve + layout_.hh(N_, l, d);
    const T* y_l = l == L_ - 1 ? static_cast<const T*>(f.y) : reserve + layout_.layer_out(N_, l);

    gather_previous(y_l, ldy, d * O_, f.h0, state * B_ * O_, O_, reverse, buf.h_prev);
    if (Cell::kHasCell) gather_previous(cells, H_, 0, f.c0, state * B_ * H_, H_, reverse, buf.c_prev);

    T* dh_run = static_cast<T*>(a.dh0) + state * B_ * O_;
    T* dc_run = Cell::kHasCell ? static_cast<T*>(a.dc0) + state * B_ * H_ : nullptr;
    init_state(a.dhy, state * B_ * O_, B_ * O_, dh_run);
    if (Cell::kHasCell) init_state(a.dcy, state * B_ * H_, B_ * H_, dc_run);

    for (int64_t s = desc_.seq_len - 1; s >= 0; --s) {
      const int64_t t = reverse ? desc_.seq_len - 1 - s : s;
      const int64_t bs = desc_.rows_at(t), off = desc_.offset_at(t);
      // Total gradient of this step's output: from the layer above and from step t+1.
      T* dr = P_ > 0 ? buf.dr_rows + off * P_ : buf.dr_step;
      for (int64_t b = 0; b < bs; ++b) {
        const T* dy_row = dy_l + (off + b) * ldy + d * O_;
        for (int64_t j = 0; j < O_; ++j) dr[b * O_ + j] = dy_row[j] + dh_run[b * O_ + j];
      }
      const T* dhh = dr;
      if (P_ > 0) {
        gemm(Trans::No, Trans::No, bs, H_, P_, dr, P_, w.w_hr, H_, false, buf.dhh_step, H_);
        dhh = buf.dhh_step;
      }
      for (int64_t b = 0; b < bs; ++b) {
        const int64_t row = off + b;
        const T* saved_row = gates + row * SH;
        for (int64_t j = 0; j < H_; ++j) {
          T saved[Cell::kSaved], dxp[Cell::kGates], dhp[Cell::kGates];
          for (int k = 0; k < Cell::kSaved; ++k) saved[k] = saved_row[k * H_ + j];
          const T c = Cell::kHasCell ? cells[row * H_ + j] : T(0);
          const T c_prev = Cell::kHasCell ? buf.c_prev[row * H_ + j] : T(0);
          const T h_prev = Cell::kDirectHPath ? buf.h_prev[row * O_ + j] : T(0);
          const T dc = Cell::kHasCell ? dc_run[b * H_ + j] : T(0);
          T dc_prev = T(0), dh_prev = T(0);
          Cell::backward(dhh[b * H_ + j], dc, saved, c, c_prev, h_prev, dxp, dhp, dc_prev, dh_prev);
          for (int k = 0; k < Cell::kGates; ++k) buf.dgi[row * GH + k * H_ + j] = dxp[k];
          if (Cell::kDirectHPath) {
            for (int k = 0; k < Cell::kGates; ++k) buf.dgh[row * GH + k * H_ + j] = dhp[k];
            dh_run[b * O_ + j] = dh_prev;
          }
          if (Cell::kHasCell) dc_run[b * H_ + j] = dc_prev;
        }
      }
      gemm(Trans::No, Trans::No, bs, O_, GH, buf.dgh + off * GH, GH, w.w_hh, O_,
           Cell::kDirectHPath, dh_run, O_);
    }

    // Weight gradients, in the flat list's order (w_ih, w_hh, b_ih, b_hh, w_hr).
    const int64_t first = state * desc_.weights_per_layer_direction();
    auto dw = [&](int64_t k) { return static_cast<T*>(a.dweights[first + k]); };
    int64_t k = 0;
    gemm(Trans::Yes, Trans::No, GH, in_l, N_, buf.dgi, GH, x_l, in_l, false, dw(k++), in_l);
    gemm(Trans::Yes, Trans::No, GH, O_, N_, buf.dgh, GH, buf.h_prev, O_, false, dw(k++), O_);
    if (desc_.has_bias) {
      cpu::column_sums(N_, GH, buf.dgi, GH, false, dw(k++));
      cpu::column_sums(N_, GH, buf.dgh, GH, false, dw(k++));
    }
    if (P_ > 0) gemm(Trans::Yes, Trans::No, P_, H_, N_, buf.dr_rows, P_, hh, H_, false, dw(k), H_);
    gemm(Trans::No, Trans::No, N_, in_l, GH, buf.dgi, GH, w.w_ih, in_l, d > 0, dx_l, in_l);
  }

  const RnnDesc& desc_;
  ReserveLayout<Cell> layout_;
  const int64_t N_, B_, H_, O_, P_, D_, L_, G_;
};

template <class F>
void with_dtype(DType dtype, F&& f) {
  switch (dtype) {
    case DType::Float32:
      return f(float{});
    case DType::Float64:
      return f(double{});
  }
  throw std::invalid_argument("fastrnn: unsupported dtype for the CPU backend");
}

void check_inputs(const RnnDesc& desc, const RnnForwardArgs& a) {
  const size_t weights = desc.num_layers * desc.num_directions * desc.weights_per_layer_direction();
  FASTRNN_CHECK(a.weights.size() == weights, "wrong number of weight pointers");
  for (const void* w : a.weights) FASTRNN_CHECK(w != nullptr, "null weight pointer");
  FASTRNN_CHECK(a.masks.empty() || static_cast<int64_t>(a.masks.size()) == desc.num_layers - 1,
                "dropout masks: expected none or num_layers - 1");
  const bool has_rows = desc.total_rows() > 0;
  FASTRNN_CHECK(!has_rows || (a.x && a.y && a.reserve), "null x, y or reserve");
}

}  // namespace

int64_t reserve_elems_per_row(const RnnDesc& desc) {
  return with_cell(desc.cell, [&](auto cell) {
    return ReserveLayout<decltype(cell)>(desc).per_row();
  });
}

int64_t workspace_elems(const RnnDesc& desc, Pass pass) {
  return with_cell(desc.cell, [&](auto cell) {
    return Driver<float, decltype(cell)>::workspace_elems(desc, pass);
  });
}

void rnn_forward_cpu(const RnnDesc& desc, DType dtype, const RnnForwardArgs& args) {
  check_inputs(desc, args);
  FASTRNN_CHECK(desc.total_rows() == 0 || args.workspace, "null workspace");
  FASTRNN_CHECK(desc.batch == 0 || args.hy, "null hy");
  FASTRNN_CHECK(desc.cell != CellKind::Lstm || desc.batch == 0 || args.cy, "null cy for LSTM");
  with_dtype(dtype, [&](auto value) {
    with_cell(desc.cell, [&](auto cell) {
      Driver<decltype(value), decltype(cell)>(desc).forward(args);
      return 0;
    });
  });
}

void rnn_backward_cpu(const RnnDesc& desc, DType dtype, const RnnBackwardArgs& args) {
  check_inputs(desc, args.fwd);
  FASTRNN_CHECK(args.dweights.size() == args.fwd.weights.size(),
                "wrong number of weight-gradient pointers");
  for (const void* w : args.dweights) FASTRNN_CHECK(w != nullptr, "null weight-gradient pointer");
  FASTRNN_CHECK(desc.total_rows() == 0 || (args.dy && args.dx && args.workspace),
                "null dy, dx or workspace");
  FASTRNN_CHECK(desc.batch == 0 || args.dh0, "null dh0");
  FASTRNN_CHECK(desc.cell != CellKind::Lstm || desc.batch == 0 || args.dc0, "null dc0 for LSTM");
  with_dtype(dtype, [&](auto value) {
    with_cell(desc.cell, [&](auto cell) {
      Driver<decltype(value), decltype(cell)>(desc).backward(args);
      return 0;
    });
  });
}

}  // namespace fastrnn
