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

}  // namespace fastrnn::bindings
