// RnnDesc and the reserve layout: sizes and row bookkeeping shared by every backend.
// Compiled once with the baseline flags (not per ISA), so no per-ISA code can be merged into it.
#include <numeric>
#include <utility>

#include "cells/dispatch.h"
#include "fastrnn/rnn.h"

namespace fastrnn {

int64_t RnnDesc::gates() const {
  switch (cell) {
    case CellKind::RnnTanh:
    case CellKind::RnnRelu:
      return 1;
    case CellKind::Gru:
      return 3;
    case CellKind::Lstm:
      return 4;
  }
  throw std::invalid_argument("fastrnn: unknown cell kind");
}

int64_t RnnDesc::out_size() const { return proj_size > 0 ? proj_size : hidden_size; }

int64_t RnnDesc::layer_input_size(int64_t layer) const {
  return layer == 0 ? input_size : num_directions * out_size();
}

int64_t RnnDesc::rows_at(int64_t t) const { return batch_sizes.empty() ? batch : batch_sizes[t]; }

int64_t RnnDesc::offset_at(int64_t t) const { return offsets[t]; }

int64_t RnnDesc::total_rows() const { return offsets[seq_len]; }

int64_t RnnDesc::weights_per_layer_direction() const {
  return 2 + (has_bias ? 2 : 0) + (proj_size > 0 ? 1 : 0);
}

void RnnDesc::validate() const {
  FASTRNN_CHECK(num_layers >= 1, "num_layers must be >= 1");
  FASTRNN_CHECK(num_directions == 1 || num_directions == 2, "num_directions must be 1 or 2");
  FASTRNN_CHECK(input_size >= 1 && hidden_size >= 1, "input_size and hidden_size must be >= 1");
  FASTRNN_CHECK(proj_size == 0 || (proj_size > 0 && proj_size < hidden_size),
                "proj_size must be in [0, hidden_size)");
  FASTRNN_CHECK(proj_size == 0 || cell == CellKind::Lstm, "proj_size is only supported by LSTM");
  FASTRNN_CHECK(seq_len >= 0 && batch >= 0, "seq_len and batch must be >= 0");
  if (!batch_sizes.empty()) {
    FASTRNN_CHECK(static_cast<int64_t>(batch_sizes.size()) == seq_len,
                  "batch_sizes must have seq_len entries");
    FASTRNN_CHECK(seq_len == 0 || batch_sizes[0] == batch, "batch_sizes[0] must equal batch");
    for (int64_t t = 0; t < seq_len; ++t) {
      FASTRNN_CHECK(batch_sizes[t] >= 1, "batch_sizes entries must be >= 1");
      FASTRNN_CHECK(t == 0 || batch_sizes[t] <= batch_sizes[t - 1],
                    "batch_sizes must be non-increasing");
    }
  }
  // Every index the kernels form lies within a buffer of at most (rows + weight rows) x (widest
  // row of any buffer, all layers and directions together) values. Refusing sizes where that
  // bound passes 2^62 keeps all int64 index arithmetic exact (long double: the bound itself
  // must not overflow).
  using real = long double;
  const real G = static_cast<real>(gates()), H = hidden_size, O = out_size();
  const real LD = static_cast<real>(num_layers) * num_directions;
  const real rows = static_cast<real>(seq_len) * batch + G * H + O;
  const real width = LD * (8 * G * H + 4 * H + 2 * O) + input_size + num_directions * O;
  FASTRNN_CHECK(rows * width < real(int64_t{1} << 62),
                "sizes too large: buffers would pass 2^62 values");
}

void RnnDesc::finalize() {
  validate();
  offsets.assign(seq_len + 1, 0);
  for (int64_t t = 0; t < seq_len; ++t) offsets[t + 1] = offsets[t] + rows_at(t);
}

namespace {

// (values saved per unit and row, whether there is a cell state) of a cell kind.
std::pair<int64_t, bool> saved_shape(CellKind kind) {
  return cells::with_cell(kind, [](auto cell) {
    using Cell = decltype(cell);
    return std::pair<int64_t, bool>{Cell::kSaved, Cell::kHasCell};
  });
}

}  // namespace

ReserveLayout::ReserveLayout(const RnnDesc& desc)
    : O_(desc.out_size()), D_(desc.num_directions), L_(desc.num_layers) {
  const auto [saved, has_cell] = saved_shape(desc.cell);
  const int64_t H = desc.hidden_size;
  gates_w_ = saved * H;
  cell_w_ = has_cell ? H : 0;
  hh_w_ = desc.proj_size > 0 ? H : 0;
  per_ld_w_ = gates_w_ + cell_w_ + hh_w_;
}

int64_t ReserveLayout::per_row() const { return L_ * D_ * per_ld_w_ + L_ * D_ * O_; }
int64_t ReserveLayout::ld_base(int64_t N, int64_t l, int64_t d) const {
  return N * (l * D_ + d) * per_ld_w_;
}
int64_t ReserveLayout::gates(int64_t N, int64_t l, int64_t d) const { return ld_base(N, l, d); }
int64_t ReserveLayout::cell(int64_t N, int64_t l, int64_t d) const {
  return ld_base(N, l, d) + N * gates_w_;
}
int64_t ReserveLayout::hh(int64_t N, int64_t l, int64_t d) const {
  return ld_base(N, l, d) + N * (gates_w_ + cell_w_);
}
int64_t ReserveLayout::layer_out(int64_t N, int64_t l) const {
  return N * (L_ * D_ * per_ld_w_ + l * D_ * O_);
}

std::vector<int64_t> ReserveLayout::block_widths() const {
  std::vector<int64_t> widths;
  for (int64_t ld = 0; ld < L_ * D_; ++ld) {
    for (int64_t w : {gates_w_, cell_w_, hh_w_}) {
      if (w > 0) widths.push_back(w);
    }
  }
  widths.insert(widths.end(), L_, D_ * O_);
  return widths;
}

int64_t reserve_elems_per_row(const RnnDesc& desc) { return ReserveLayout(desc).per_row(); }

LayerWeightPtrs layer_weight_ptrs(const RnnDesc& desc, const std::vector<const void*>& flat,
                                  int64_t layer, int64_t direction) {
  const int64_t per = desc.weights_per_layer_direction();
  const int64_t first = (layer * desc.num_directions + direction) * per;
  FASTRNN_CHECK(first + per <= static_cast<int64_t>(flat.size()), "weight list too short");
  const void* const* w = flat.data() + first;
  LayerWeightPtrs p;
  p.w_ih = w[0];
  p.w_hh = w[1];
  int64_t k = 2;
  if (desc.has_bias) {
    p.b_ih = w[k++];
    p.b_hh = w[k++];
  }
  if (desc.proj_size > 0) p.w_hr = w[k];
  return p;
}

namespace {

void check_inputs(const RnnDesc& desc, const RnnForwardArgs& a) {
  const size_t weights = desc.num_layers * desc.num_directions * desc.weights_per_layer_direction();
  FASTRNN_CHECK(a.weights.size() == weights, "wrong number of weight pointers");
  for (const void* w : a.weights) FASTRNN_CHECK(w != nullptr, "null weight pointer");
  FASTRNN_CHECK(a.masks.empty() || static_cast<int64_t>(a.masks.size()) == desc.num_layers - 1,
                "dropout masks: expected none or num_layers - 1");
  for (const void* m : a.masks) FASTRNN_CHECK(m != nullptr || desc.total_rows() == 0, "null mask");
  FASTRNN_CHECK(desc.total_rows() == 0 || a.x, "null x");
  FASTRNN_CHECK(desc.offsets.size() == static_cast<size_t>(desc.seq_len) + 1,
                "descriptor not finalized");
}

}  // namespace

void check_forward_args(const RnnDesc& desc, const RnnForwardArgs& args, bool needs_workspace) {
  check_inputs(desc, args);
  FASTRNN_CHECK(desc.total_rows() == 0 || args.y, "null y");
  FASTRNN_CHECK(args.workspace || !needs_workspace, "null workspace");
  FASTRNN_CHECK(desc.batch == 0 || args.hy, "null hy");
  FASTRNN_CHECK(desc.cell != CellKind::Lstm || desc.batch == 0 || args.cy, "null cy for LSTM");
}

void check_backward_args(const RnnDesc& desc, const RnnBackwardArgs& args, bool needs_workspace,
                         bool optional_grads) {
  check_inputs(desc, args.fwd);
  FASTRNN_CHECK(desc.total_rows() == 0 || args.fwd.reserve, "null reserve");
  FASTRNN_CHECK(args.dweights.size() == args.fwd.weights.size() ||
                    (optional_grads && args.dweights.empty()),
                "wrong number of weight-gradient pointers");
  for (const void* w : args.dweights) FASTRNN_CHECK(w != nullptr, "null weight-gradient pointer");
  FASTRNN_CHECK(args.weight_groups == 1 ||
                    (args.weight_groups > 1 && desc.batch_sizes.empty() &&
                     desc.batch >= args.weight_groups && desc.batch % args.weight_groups == 0),
                "weight_groups must be 1, or divide the batch of a padded input");
  FASTRNN_CHECK(desc.total_rows() == 0 || args.dy, "null dy");
  FASTRNN_CHECK(desc.total_rows() == 0 || args.dx || optional_grads, "null dx");
  FASTRNN_CHECK(args.workspace || !needs_workspace, "null workspace");
  FASTRNN_CHECK(desc.batch == 0 || args.dh0, "null dh0");
  FASTRNN_CHECK(desc.cell != CellKind::Lstm || desc.batch == 0 || args.dc0, "null dc0 for LSTM");
}

}  // namespace fastrnn
