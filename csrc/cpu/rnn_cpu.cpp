// CPU entry points of the RNN core: precondition checks, then the kernels of the active ISA.
#include "cpu/isa.h"
#include "fastrnn/rnn.h"

namespace fastrnn {
namespace {

void check_inputs(const RnnDesc& desc, const RnnForwardArgs& a) {
  const size_t weights = desc.num_layers * desc.num_directions * desc.weights_per_layer_direction();
  FASTRNN_CHECK(a.weights.size() == weights, "wrong number of weight pointers");
  for (const void* w : a.weights) FASTRNN_CHECK(w != nullptr, "null weight pointer");
  FASTRNN_CHECK(a.masks.empty() || static_cast<int64_t>(a.masks.size()) == desc.num_layers - 1,
                "dropout masks: expected none or num_layers - 1");
  for (const void* m : a.masks) FASTRNN_CHECK(m != nullptr || desc.total_rows() == 0, "null mask");
  FASTRNN_CHECK(desc.total_rows() == 0 || (a.x && a.reserve), "null x or reserve");
  FASTRNN_CHECK(desc.offsets.size() == static_cast<size_t>(desc.seq_len) + 1,
                "descriptor not finalized");
}

}  // namespace

int64_t workspace_elems(const RnnDesc& desc, Pass pass, DType dtype) {
  return cpu::rnn_kernels().workspace_elems(desc, pass, dtype);
}

void rnn_forward_cpu(const RnnDesc& desc, DType dtype, const RnnForwardArgs& args, int threads) {
  check_inputs(desc, args);
  FASTRNN_CHECK(desc.total_rows() == 0 || args.y, "null y");
  FASTRNN_CHECK(args.workspace || workspace_elems(desc, Pass::Forward, dtype) == 0,
                "null workspace");
  FASTRNN_CHECK(desc.batch == 0 || args.hy, "null hy");
  FASTRNN_CHECK(desc.cell != CellKind::Lstm || desc.batch == 0 || args.cy, "null cy for LSTM");
  cpu::rnn_kernels().forward(desc, dtype, args, threads);
}

void rnn_backward_cpu(const RnnDesc& desc, DType dtype, const RnnBackwardArgs& args, int threads) {
  check_inputs(desc, args.fwd);
  FASTRNN_CHECK(args.dweights.size() == args.fwd.weights.size(),
                "wrong number of weight-gradient pointers");
  for (const void* w : args.dweights) FASTRNN_CHECK(w != nullptr, "null weight-gradient pointer");
  FASTRNN_CHECK(desc.total_rows() == 0 || (args.dy && args.dx), "null dy or dx");
  FASTRNN_CHECK(args.workspace || workspace_elems(desc, Pass::Backward, dtype) == 0,
                "null workspace");
  FASTRNN_CHECK(desc.batch == 0 || args.dh0, "null dh0");
  FASTRNN_CHECK(desc.cell != CellKind::Lstm || desc.batch == 0 || args.dc0, "null dc0 for LSTM");
  cpu::rnn_kernels().backward(desc, dtype, args, threads);
}

}  // namespace fastrnn
