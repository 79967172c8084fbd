// The CTC inner loops compiled for AVX2 + FMA (this file's flags are set in CMakeLists.txt).
#define FASTRNN_CTC_ISA ctc_avx2
#include "cpu/ctc_kernels.h"

namespace fastrnn::cpu {

const CtcKernels<float>& ctc_kernels_avx2_f32() {
  static const CtcKernels<float> table = ctc_avx2::make_kernels<float>();
  return table;
}

const CtcKernels<double>& ctc_kernels_avx2_f64() {
  static const CtcKernels<double> table = ctc_avx2::make_kernels<double>();
  return table;
}

}  // namespace fastrnn::cpu
