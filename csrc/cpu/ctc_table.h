// The CTC inner loops of one instruction set (see ctc_kernels.h), as a table of function pointers
// chosen once at run time from the CPU's features.
#pragma once

#include <cstdint>

namespace fastrnn::cpu {

template <class V>
struct CtcKernels {
  void (*emissions)(const V* row, V shift, const int32_t* ext, int64_t lo, int64_t hi, V* e);
  void (*alpha_step)(const V* prev, V* cur, const V* e, const V* skip, int64_t lo, int64_t hi);
  void (*beta_step_occupancy)(const V* next, V* cur, const V* e, const V* skip, bool last,
                              const V* alpha, V nll, int64_t lo, int64_t hi, V* gamma);
  void (*scaled_exp)(const V* x, V shift, V scale, int64_t n, V* out);
  V (*row_logsumexp)(const V* x, int64_t n);
  V (*scalar_logsumexp3)(V x, V y, V z);
};

// Defined in ctc_avx2.cpp (compiled with -mavx2 -mfma); call only when the CPU has AVX2 and FMA.
const CtcKernels<float>& ctc_kernels_avx2_f32();
const CtcKernels<double>& ctc_kernels_avx2_f64();

}  // namespace fastrnn::cpu
