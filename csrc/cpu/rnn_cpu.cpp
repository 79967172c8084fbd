// CPU entry points of the RNN core: precondition checks, then the kernels of the active ISA.
#include "cpu/isa.h"
#include "fastrnn/rnn.h"

namespace fastrnn {

int64_t workspace_elems(const RnnDesc& desc, Pass pass, DType dtype) {
  return cpu::rnn_kernels().workspace_elems(desc, pass, dtype);
}

void rnn_forward_cpu(const RnnDesc& desc, DType dtype, const RnnForwardArgs& args, int threads) {
  const Pass pass = args.reserve ? Pass::Forward : Pass::Inference;
  check_forward_args(desc, args, workspace_elems(desc, pass, dtype) > 0);
  cpu::rnn_kernels().forward(desc, dtype, args, threads);
}

void rnn_backward_cpu(const RnnDesc& desc, DType dtype, const RnnBackwardArgs& args, int threads) {
  check_backward_args(desc, args, workspace_elems(desc, Pass::Backward, dtype) > 0);
  cpu::rnn_kernels().backward(desc, dtype, args, threads);
}

}  // namespace fastrnn
