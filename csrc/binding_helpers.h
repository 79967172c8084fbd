// Helpers shared by the pybind11 modules (_C and _cuda): raw addresses from Python ints, and the
// descriptors and argument structs built from Python arguments. Header-only, so each module
// compiles its own copy.
#pragma once

#include <cstdint>
#include <tuple>
#include <utility>
#include <vector>

#include "fastrnn/ctc.h"
#include "fastrnn/rnn.h"

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

// An RNN descriptor from the fields the Python layer passes, in RnnDesc's order: (cell code,
// num_layers, num_directions, input_size, hidden_size, proj_size, has_bias, seq_len, batch,
// batch_sizes). Validated and finalized. Plain types, so that both modules take the same tuple.
using RnnDescFields = std::tuple<int, int64_t, int64_t, int64_t, int64_t, int64_t, bool, int64_t,
                                 int64_t, std::vector<int64_t>>;

inline RnnDesc make_rnn_desc(RnnDescFields fields) {
  RnnDesc d;
  int cell = 0;
  std::tie(cell, d.num_layers, d.num_directions, d.input_size, d.hidden_size, d.proj_size,
           d.has_bias, d.seq_len, d.batch, d.batch_sizes) = std::move(fields);
  FASTRNN_CHECK(cell >= 0 && cell <= static_cast<int>(CellKind::Gru), "unknown cell code");
  d.cell = static_cast<CellKind>(cell);
  d.finalize();
  return d;
}

inline std::vector<const void*> const_ptrs(const std::vector<std::uintptr_t>& addresses) {
  std::vector<const void*> out;
  out.reserve(addresses.size());
  for (auto a : addresses) out.push_back(as_ptr<const void>(a));
  return out;
}

// The RNN argument structs from the addresses the Python layer passes (same for CPU and CUDA).
inline RnnForwardArgs rnn_forward_args(std::uintptr_t x, const std::vector<std::uintptr_t>& weights,
                                       std::uintptr_t h0, std::uintptr_t c0,
                                       const std::vector<std::uintptr_t>& masks, std::uintptr_t y,
                                       std::uintptr_t hy, std::uintptr_t cy,
                                       std::uintptr_t reserve, std::uintptr_t workspace) {
  RnnForwardArgs a;
  a.x = as_ptr<const void>(x);
  a.weights = const_ptrs(weights);
  a.h0 = as_ptr<const void>(h0);
  a.c0 = as_ptr<const void>(c0);
  a.masks = const_ptrs(masks);
  a.y = as_ptr<void>(y);
  a.hy = as_ptr<void>(hy);
  a.cy = as_ptr<void>(cy);
  a.reserve = as_ptr<void>(reserve);
  a.workspace = as_ptr<void>(workspace);
  return a;
}

inline RnnBackwardArgs rnn_backward_args(
    std::uintptr_t x, const std::vector<std::uintptr_t>& weights, std::uintptr_t h0,
    std::uintptr_t c0, const std::vector<std::uintptr_t>& masks, std::uintptr_t reserve,
    std::uintptr_t dy, std::uintptr_t dhy, std::uintptr_t dcy, std::uintptr_t dx,
    std::uintptr_t dh0, std::uintptr_t dc0, const std::vector<std::uintptr_t>& dweights,
    std::uintptr_t workspace) {
  RnnBackwardArgs a;
  a.fwd = rnn_forward_args(x, weights, h0, c0, masks, 0, 0, 0, reserve, 0);
  a.dy = as_ptr<const void>(dy);
  a.dhy = as_ptr<const void>(dhy);
  a.dcy = as_ptr<const void>(dcy);
  a.dx = as_ptr<void>(dx);
  a.dh0 = as_ptr<void>(dh0);
  a.dc0 = as_ptr<void>(dc0);
  for (auto p : dweights) a.dweights.push_back(as_ptr<void>(p));
  a.workspace = as_ptr<void>(workspace);
  return a;
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
