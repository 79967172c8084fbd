// fastrnn native core: CTC loss (connectionist temporal classification), loss and gradient.
//
// Shape legend for CTC: T input steps (rows of the input), B batch, C classes (blank included),
// S maximal target length, L = 2*S + 1 the length of the extended label sequence
// (blank, l1, blank, ..., lS, blank).
// Element b uses T_b = input_lengths[b] <= T steps and S_b = target_lengths[b] <= S labels, so
// L_b = 2*S_b + 1 positions of the extended sequence.
//
// Buffers (dense, row-major; "value" = float or double as chosen by DType):
//   input          [T, B, C] values. Log-probabilities (desc.from_logits = false), or unnormalized
//                  logits (from_logits = true: log_softmax over C is applied inside, never stored).
//   targets        int64 labels: element b's k-th label is targets[target_offsets[b] + k], k < S_b.
//                  Padded [B, S'] targets use offsets b*S'; concatenated targets use prefix sums.
//                  Labels lie in [0, C) and differ from blank.
//   target_offsets, input_lengths, target_lengths: int64 [B]; 0 <= T_b <= T, 0 <= S_b <= S.
//   loss           [B] values: -log p(target_b | input_b), +inf when no alignment exists
//                  (T_b < S_b + number of adjacent repeats), or 0 there when zero_infinity.
//   log_alpha      [B, T, L] values, written by forward, read by backward: the forward
//                  variables in log space, each including the emission at its own step. Entries
//                  on no complete path, rows t >= T_b and columns s >= L_b are -inf (every entry
//                  is written). May be null in forward when no backward follows: the loss alone
//                  needs no [B, T, L] memory (the loss is bitwise the same either way).
//   row_lse        [T, B] values (from_logits only, else null): logsumexp over C of each input row,
//                  written by forward (0 for rows t >= T_b), read by backward.
//   grad_loss      [B] values: upstream gradient of each loss (before zero_infinity).
//   grad_input     [T, B, C] values, overwritten:
//                    grad_loss[b] * (exp(lp[t,b,c])
//                                    - sum_{s: l'_s = c} exp(a_t(s) + b_t(s) + nll_b - lp[t,b,c]))
//                  for t < T_b, with lp the log-probabilities, a, b the forward/backward variables
//                  and nll_b the loss before zero_infinity.
//                  This is the exact gradient w.r.t. the logits when lp = log_softmax(logits);
//                  for log-probability input it is, like torch's ctc_loss, that same expression
//                  (equal to the gradient w.r.t. log_probs after log_softmax's backward).
//                  Rows t >= T_b are 0.
//                  Elements with an infinite loss get a zero gradient (never NaN).
//   workspace      ctc_cpu_workspace_bytes(...) (CPU) or ctc_cuda_workspace_bytes(...) (CUDA;
//                  may be 0, then null is fine) bytes of scratch; 64-byte alignment is best,
//                  none is required beyond that of the value type.
//
// Results are deterministic: each batch element is computed by one thread in a fixed order, so
// they are bitwise identical for any thread count.
#pragma once

#include "fastrnn/common.h"

namespace fastrnn {

struct CtcDesc {
  int64_t max_time = 0;     // T
  int64_t batch = 0;        // B
  int64_t num_classes = 0;  // C
  int64_t max_target = 0;   // S
  int64_t blank = 0;        // in [0, C)
  int64_t targets_size = 0; // number of labels in the targets array (bounds the offsets)
  bool from_logits = false;

  int64_t ext_len() const { return 2 * max_target + 1; }  // L
  // Throws std::invalid_argument on an inconsistent descriptor (inline: the CUDA module shares it).
  void validate() const {
    FASTRNN_CHECK(max_time >= 0 && batch >= 0 && max_target >= 0, "ctc: negative size");
    // Extended positions (up to 2S) are stored as int32 in the kernels' label tables.
    FASTRNN_CHECK(max_target < (int64_t{1} << 30), "ctc: max_target must be below 2^30");
    FASTRNN_CHECK(num_classes >= 1 && num_classes <= INT32_MAX,
                  "ctc: num_classes must be in [1, 2^31)");
    FASTRNN_CHECK(blank >= 0 && blank < num_classes, "ctc: blank must be in [0, num_classes)");
    FASTRNN_CHECK(targets_size >= 0, "ctc: negative targets_size");
  }
};

struct CtcForwardArgs {
  const void* input = nullptr;
  const int64_t* targets = nullptr;
  const int64_t* target_offsets = nullptr;
  const int64_t* input_lengths = nullptr;
  const int64_t* target_lengths = nullptr;
  bool zero_infinity = false;
  void* loss = nullptr;
  void* log_alpha = nullptr;
  void* row_lse = nullptr;  // from_logits only
  void* workspace = nullptr;
};

struct CtcBackwardArgs {
  const void* input = nullptr;
  const int64_t* targets = nullptr;
  const int64_t* target_offsets = nullptr;
  const int64_t* input_lengths = nullptr;
  const int64_t* target_lengths = nullptr;
  const void* log_alpha = nullptr;
  const void* row_lse = nullptr;  // from_logits only
  const void* grad_loss = nullptr;
  void* grad_input = nullptr;
  void* workspace = nullptr;
};

// CPU. The host arrays (lengths, offsets, labels) are checked against the descriptor before any
// work starts. num_threads >= 1 threads work on distinct batch elements.
int64_t ctc_cpu_workspace_bytes(const CtcDesc& desc, DType dtype, int64_t num_threads);
void ctc_forward_cpu(const CtcDesc& desc, DType dtype, const CtcForwardArgs& args,
                     int64_t num_threads);
void ctc_backward_cpu(const CtcDesc& desc, DType dtype, const CtcBackwardArgs& args,
                      int64_t num_threads);

}  // namespace fastrnn

namespace fastrnn {

// CUDA (cuda/ctc.cu; only in the fastrnn._cuda module). Every pointer is device memory on
// `device`, including the int64 length, offset and target arrays; work is queued on
// `stream` (a cudaStream_t) and nothing is allocated. One thread block per batch element. The
// arrays' values are not checked on the host (that would need a copy and a synchronization): the
// torch layer validates them, and an element whose lengths are out of range gets a NaN loss and a
// zero gradient instead of an out-of-bounds access.
int64_t ctc_cuda_workspace_bytes(const CtcDesc& desc, DType dtype);
void ctc_forward_cuda(const CtcDesc& desc, DType dtype, const CtcForwardArgs& args, int device,
                      void* stream);
void ctc_backward_cuda(const CtcDesc& desc, DType dtype, const CtcBackwardArgs& args, int device,
                       void* stream);

}  // namespace fastrnn
