// Run-time choice of the CPU kernels' instruction set.
//
// csrc/cpu/isa_kernels.cpp is compiled once per instruction set, each time into its own
// namespace (generic: 128-bit vectors, the x86-64/aarch64 baseline; avx2: AVX2 + FMA;
// avx512: AVX-512 F/VL/BW/DQ; avx512bf16: the same and AVX-512 BF16, whose kernels also take a
// first layer's bfloat16 input, see cpu/gemm_bf16.h), and exports an RnnKernels table. The best
// set the CPU supports is used, capped by the environment variable FASTRNN_CPU_ISA
// (generic|avx2|avx512|avx512bf16) or by set_isa(), so that tests can run every path on one
// machine.
#pragma once

#include <cstdint>
#include <string>

#include "fastrnn/rnn.h"

namespace fastrnn::cpu {

enum class Isa : int { Generic = 0, Avx2 = 1, Avx512 = 2, Avx512Bf16 = 3 };

struct RnnKernels {
  int64_t (*workspace_elems)(const RnnDesc&, Pass, DType);
  // Whether forward accepts RnnForwardArgs::bf16_input for this configuration.
  bool (*takes_bf16_input)(const RnnDesc&, DType);
  // Whether forward and backward accept RnnForwardArgs::half_weights for this configuration.
  bool (*takes_half_weights)(const RnnDesc&, DType);
  void (*forward)(const RnnDesc&, DType, const RnnForwardArgs&, int threads);
  void (*backward)(const RnnDesc&, DType, const RnnBackwardArgs&, int threads);
  // Measured multiply-add throughput of this ISA's vectors on `threads` threads, in GFLOP/s
  // (2 per lane per FMA): the hardware ceiling the benchmark reports its kernels against.
  double (*fma_peak_gflops)(DType, int threads);
};

namespace generic {
extern const RnnKernels kRnnKernels;
}
#if defined(FASTRNN_X86_ISAS)
namespace avx2 {
extern const RnnKernels kRnnKernels;
}
namespace avx512 {
extern const RnnKernels kRnnKernels;
}
namespace avx512bf16 {
extern const RnnKernels kRnnKernels;
}
#endif

Isa best_supported_isa();
Isa active_isa();
// Selects an ISA by name; std::invalid_argument if unknown or unsupported by this CPU or build.
void set_isa(const std::string& name);
std::string isa_name(Isa isa);
const RnnKernels& rnn_kernels();
// The most workspace any ISA this CPU supports needs (see fastrnn::workspace_elems).
int64_t max_workspace_elems(const RnnDesc& desc, Pass pass, DType dtype);

}  // namespace fastrnn::cpu
