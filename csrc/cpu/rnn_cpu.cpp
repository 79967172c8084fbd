// CPU entry points of the RNN core: precondition checks, then the kernels of the active ISA.
#include "cpu/isa.h"
#include "cpu/pages.h"
#include "fastrnn/rnn.h"

namespace fastrnn {
namespace {

int64_t bytes_of(DType dtype, int64_t elems) {
  return elems * (dtype == DType::Float64 ? 8 : 4);
}

}  // namespace

int64_t workspace_elems(const RnnDesc& desc, Pass pass, DType dtype) {
  return cpu::max_workspace_elems(desc, pass, dtype);
}

// The sequence-sized buffers a pass writes in full get huge pages (cpu/pages.h): LSTM
// 100x64x512x512, forward+backward on 2 threads, 519-533 -> 460-510 ms (min of 8, three
// alternating runs; docs/design-notes.md).
void rnn_forward_cpu(const RnnDesc& desc, DType dtype, const RnnForwardArgs& args, int threads) {
  const Pass pass = args.reserve ? Pass::Forward : Pass::Inference;
  const int64_t workspace = cpu::rnn_kernels().workspace_elems(desc, pass, dtype);
  const int64_t N = desc.total_rows();
  check_forward_args(desc, args, workspace > 0);
  cpu::advise_huge_pages(args.workspace, bytes_of(dtype, workspace));
  cpu::advise_huge_pages(args.reserve, bytes_of(dtype, reserve_elems_per_row(desc) * N));
  cpu::advise_huge_pages(args.y, bytes_of(dtype, N * desc.num_directions * desc.out_size()));
  cpu::rnn_kernels().forward(desc, dtype, args, threads);
}

bool rnn_takes_bf16_input_cpu(const RnnDesc& desc, DType dtype) {
  return cpu::rnn_kernels().takes_bf16_input(desc, dtype);
}

bool rnn_takes_half_weights_cpu(const RnnDesc& desc, DType dtype) {
  return cpu::rnn_kernels().takes_half_weights(desc, dtype);
}

void rnn_backward_cpu(const RnnDesc& desc, DType dtype, const RnnBackwardArgs& args, int threads) {
  const int64_t workspace =
      cpu::rnn_kernels().workspace_elems(desc, backward_pass(args), dtype);
  check_backward_args(desc, args, workspace > 0, /*optional_grads=*/true);
  cpu::advise_huge_pages(args.workspace, bytes_of(dtype, workspace));
  cpu::advise_huge_pages(args.dx, bytes_of(dtype, desc.total_rows() * desc.input_size));
  cpu::rnn_kernels().backward(desc, dtype, args, threads);
}

}  // namespace fastrnn
