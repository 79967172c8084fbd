// fastrnn native core: multi-layer, (bi)directional recurrent networks, forward and BPTT.
//
// One call runs a whole stack (all layers and directions) over a padded or packed sequence.
// Rows of a sequence: step t owns rows [offset(t), offset(t) + batch_sizes[t]) of every
// [N, ...] matrix; padded input is the special case batch_sizes[t] = B for all t.
// batch_sizes must be non-increasing (PackedSequence order), so row b of step t is the same
// sequence as row b of every other step where it is active.
//
// Buffers (all dense, row-major, of the problem's value type unless RnnForwardArgs says
// otherwise: bf16_input, half_weights):
//   x        [N, I]                 input of layer 0
//   weights  per layer l, direction d, in torch's order:
//              w_ih [G*H, I_l]  (I_0 = I, I_l = D*O for l > 0)
//              w_hh [G*H, O]
//              b_ih [G*H], b_hh [G*H]   (only when has_bias)
//              w_hr [P, H]              (only when P > 0)
//   h0       [L*D, B, O] or null (zeros)       c0 [L*D, B, H] or null (LSTM only)
//   masks    L-1 dropout masks [N, D*O], already scaled by 1/(1-p), applied to the output of
//            layer l before it feeds layer l+1; null (no dropout) or one pointer per layer l < L-1
//   y        [N, D*O]   output of the last layer (directions side by side); on the CPU it
//            may be hy itself when T = 1, L = D = 1 and P = 0 (a cell's step: both get h_1)
//   hy       [L*D, B, O], cy [L*D, B, H] (LSTM only): final states; also used as the running
//            state during the forward pass
//   reserve  reserve_elems_per_row(desc) * N values, written by forward, read by backward;
//            holds only what backward needs (post-activation gates, cell states, layer outputs).
//            Null on the CPU: inference, nothing is kept and the workspace is sized for
//            Pass::Inference (a few steps' worth of scratch instead of N rows' worth)
//   workspace workspace_elems(desc, pass) values of scratch
#pragma once

#include <vector>

#include "fastrnn/common.h"

namespace fastrnn {

enum class CellKind : int { RnnTanh = 0, RnnRelu = 1, Lstm = 2, Gru = 3 };

struct RnnDesc {
  CellKind cell = CellKind::Lstm;
  int64_t num_layers = 1;      // L
  int64_t num_directions = 1;  // D
  int64_t input_size = 0;      // I
  int64_t hidden_size = 0;     // H
  int64_t proj_size = 0;       // P (LSTM only, 0 = none)
  bool has_bias = true;
  int64_t seq_len = 0;         // T
  int64_t batch = 0;           // B = batch_sizes[0]
  // T entries, non-increasing, batch_sizes[0] == B; empty = padded (every step has B rows).
  std::vector<int64_t> batch_sizes;

  int64_t gates() const;          // G
  int64_t out_size() const;       // O
  int64_t layer_input_size(int64_t layer) const;
  int64_t total_rows() const;     // N
  int64_t rows_at(int64_t t) const;
  int64_t offset_at(int64_t t) const;  // first row of step t (precomputed, O(1))
  int64_t weights_per_layer_direction() const;  // tensors per (l, d) in the flat weight list
  void validate() const;          // throws std::invalid_argument on an inconsistent descriptor
  void finalize();                // validates and precomputes offsets
  std::vector<int64_t> offsets;   // T + 1 entries after finalize()
};

// Where each saved quantity lives in the reserve (the same on every backend): a sequence of
// [N, width] blocks.
//   for each (l, d): gates [N, kSaved*H], c [N, H] (LSTM), hh [N, H] (pre-projection h, P > 0)
//   for each l: layer output [N, D*O] (the last one is also copied to y; backward reads this
//   copy, so the caller may modify y in place)
// Offsets are in values from the start of the reserve.
class ReserveLayout {
 public:
  explicit ReserveLayout(const RnnDesc& desc);
  int64_t per_row() const;
  int64_t gates(int64_t N, int64_t l, int64_t d) const;
  int64_t cell(int64_t N, int64_t l, int64_t d) const;
  int64_t hh(int64_t N, int64_t l, int64_t d) const;
  int64_t layer_out(int64_t N, int64_t l) const;
  // Widths of the [N, width] blocks above in the order they are laid out, empty ones left out:
  // what reorders the rows of a reserve (the batching rules of the Python package fold a
  // vmapped dimension into the batch and back).
  std::vector<int64_t> block_widths() const;

 private:
  int64_t ld_base(int64_t N, int64_t l, int64_t d) const;
  int64_t O_, D_, L_, gates_w_, cell_w_, hh_w_, per_ld_w_;
};

// The flat weight list of one (layer, direction), in torch's order; absent ones are null.
struct LayerWeightPtrs {
  const void* w_ih = nullptr;
  const void* w_hh = nullptr;
  const void* b_ih = nullptr;
  const void* b_hh = nullptr;
  const void* w_hr = nullptr;
};
LayerWeightPtrs layer_weight_ptrs(const RnnDesc& desc, const std::vector<const void*>& flat,
                                  int64_t layer, int64_t direction);

// Forward keeping the reserve for backward, forward without one (inference), backward, and
// backward with weight groups (RnnBackwardArgs::weight_groups > 1; CPU only), whose chunks of
// steps are longer.
enum class Pass { Forward, Inference, Backward, GroupedBackward };

// Number of values (of the problem's dtype) of reserve and workspace. The reserve is linear in
// N: reserve_elems_per_row * N, so that shape-only (fake) implementations can size it.
// The workspace size is the largest that any of the CPU's instruction sets needs (their vector
// widths round blocks differently), so that a size computed once stays enough when the ISA is
// switched later (cpu::set_isa, which the tests use).
int64_t reserve_elems_per_row(const RnnDesc& desc);
int64_t workspace_elems(const RnnDesc& desc, Pass pass, DType dtype);

// How a CPU float32 call's weight matrices are stored (RnnForwardArgs::half_weights; backward
// reads it from RnnBackwardArgs::fwd).
enum class HalfWeights : int { None = 0, Bfloat16 = 1, Float16 = 2 };

struct RnnForwardArgs {
  const void* x = nullptr;
  std::vector<const void*> weights;  // L * D * weights_per_layer_direction() pointers
  const void* h0 = nullptr;
  const void* c0 = nullptr;
  std::vector<const void*> masks;    // empty or L - 1 pointers
  void* y = nullptr;
  void* hy = nullptr;
  void* cy = nullptr;
  void* reserve = nullptr;
  void* workspace = nullptr;
  // CPU, float32, where rnn_takes_bf16_input_cpu() says so: x and the first layer's w_ih (each
  // direction's) are bfloat16, every other tensor float32.
  bool bf16_input = false;
  // CPU, float32, where rnn_takes_half_weights_cpu() says so (a handful of rows: a streamed
  // step): every w_ih, w_hh and w_hr is bfloat16 or float16, the biases and every other tensor
  // float32.
  HalfWeights half_weights = HalfWeights::None;
};

// Gradients: dy [N, D*O]; dhy/dcy may be null (zero). Outputs dx [N, I], dh0 [L*D, B, O],
// dc0 [L*D, B, H] (LSTM), dweights with the same layout as weights. Every output is overwritten.
struct RnnBackwardArgs {
  RnnForwardArgs fwd;                // the forward's inputs and reserve (read only); y unused
  const void* dy = nullptr;
  const void* dhy = nullptr;
  const void* dcy = nullptr;
  void* dx = nullptr;  // may be null on the CPU: the input's gradient is then not computed
  void* dh0 = nullptr;
  void* dc0 = nullptr;
  std::vector<void*> dweights;  // may be empty on the CPU: no weight gradient is computed
  // > 1 (CPU, padded input, B divisible by it): the batch is weight_groups groups of
  // B / weight_groups consecutive rows (per-sample gradients of a batch folded from several
  // samples), and each dweights pointer holds [weight_groups, weight shape]: block g sums only
  // group g's rows. The workspace is then sized for Pass::GroupedBackward.
  int64_t weight_groups = 1;
  void* workspace = nullptr;
};

// The pass a backward's workspace is sized and carved for.
inline Pass backward_pass(const RnnBackwardArgs& args) {
  return args.weight_groups > 1 ? Pass::GroupedBackward : Pass::Backward;
}

// Preconditions every backend checks before touching memory (std::invalid_argument otherwise):
// pointer counts, non-null buffers where the sizes need them, a finalized descriptor. The
// forward's reserve may be null (inference); a backend without an inference mode checks it.
// Where the backend can skip them (optional_grads), dx may be null and dweights empty.
void check_forward_args(const RnnDesc& desc, const RnnForwardArgs& args, bool needs_workspace);
void check_backward_args(const RnnDesc& desc, const RnnBackwardArgs& args, bool needs_workspace,
                         bool optional_grads);

// CPU entry points; `threads` workers (clamped to the machine) split every step's work.
// Results are bitwise identical for any thread count.
void rnn_forward_cpu(const RnnDesc& desc, DType dtype, const RnnForwardArgs& args, int threads);
// Whether the active CPU kernels take RnnForwardArgs::bf16_input for this configuration (AVX-512
// BF16, float32, more than a handful of rows).
bool rnn_takes_bf16_input_cpu(const RnnDesc& desc, DType dtype);
// Whether they take RnnForwardArgs::half_weights (float32, at most a handful of rows).
bool rnn_takes_half_weights_cpu(const RnnDesc& desc, DType dtype);
void rnn_backward_cpu(const RnnDesc& desc, DType dtype, const RnnBackwardArgs& args, int threads);

}  // namespace fastrnn
