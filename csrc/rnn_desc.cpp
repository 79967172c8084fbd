// RnnDesc: sizes and row bookkeeping shared by every backend.
#include <numeric>

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

}  // namespace fastrnn
