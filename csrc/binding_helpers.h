// Helpers shared by the pybind11 modules (_C and _cuda): raw addresses from Python ints and the
// descriptors built from Python arguments. Header-only, so each module compiles its own copy.
#pragma once

#include <cstdint>

#include "fastrnn/ctc.h"

namespace fastrnn::bindings {

// A tensor's data_ptr() as a typed pointer; 0 stands for "absent".
template <class P>
P* as_ptr(std::uintptr_t address) {
  return reinterpret_cast<P*>(address);
}

// The dtype codes the Python layer passes: 0 float32, 1 float64.
inline DType as_dtype(int code) {
  FASTRNN_CHECK(code == 0 || code == 1, "dtype code must be 0 (float32) or 1 (float64)");
  return code == 0 ? DType::Float32 : DType::Float64;
}

inline CtcDesc make_ctc_desc(int64_t max_time, int64_t batch, int64_t num_classes,
                             int64_t max_target, int64_t blank, int64_t targets_size,
                             bool from_logits) {
  CtcDesc d;
  d.max_time = max_time;
  d.batch = batch;
  d.num_classes = num_classes;
  d.max_target = max_target;
  d.blank = blank;
  d.targets_size = targets_size;
  d.from_logits = from_logits;
  d.validate();
  return d;
}

// The CTC argument structs from the addresses the Python layer passes (same for CPU and CUDA).
inline CtcForwardArgs ctc_forward_args(std::uintptr_t input, std::uintptr_t targets,
                                       std::uintptr_t target_offsets, std::uintptr_t input_lengths,
                                       std::uintptr_t target_lengths, bool zero_infinity,
                                       std::uintptr_t loss, std::uintptr_t log_alpha,
                                       std::uintptr_t row_lse, std::uintptr_t workspace) {
  CtcForwardArgs a;
  a.input = as_ptr<const void>(input);
  a.targets = as_ptr<const int64_t>(targets);
  a.target_offsets = as_ptr<const int64_t>(target_offsets);
  a.input_lengths = as_ptr<const int64_t>(input_lengths);
  a.target_lengths = as_ptr<const int64_t>(target_lengths);
  a.zero_infinity = zero_infinity;
  a.loss = as_ptr<void>(loss);
  a.log_alpha = as_ptr<void>(log_alpha);
  a.row_lse = as_ptr<void>(row_lse);
  a.workspace = as_ptr<void>(workspace);
  return a;
}

inline CtcBackwardArgs ctc_backward_args(std::uintptr_t input, std::uintptr_t targets,
                                         std::uintptr_t target_offsets,
                                         std::uintptr_t input_lengths,
                                         std::uintptr_t target_lengths, std::uintptr_t log_alpha,
                                         std::uintptr_t row_lse, std::uintptr_t grad_loss,
                                         std::uintptr_t grad_input, std::uintptr_t workspace) {
  CtcBackwardArgs a;
  a.input = as_ptr<const void>(input);
  a.targets = as_ptr<const int64_t>(targets);
  a.target_offsets = as_ptr<const int64_t>(target_offsets);
  a.input_lengths = as_ptr<const int64_t>(input_lengths);
  a.target_lengths = as_ptr<const int64_t>(target_lengths);
  a.log_alpha = as_ptr<const void>(log_alpha);
  a.row_lse = as_ptr<const void>(row_lse);
  a.grad_loss = as_ptr<const void>(grad_loss);
  a.grad_input = as_ptr<void>(grad_input);
  a.workspace = as_ptr<void>(workspace);
  return a;
}

}  // namespace fastrnn::bindings
