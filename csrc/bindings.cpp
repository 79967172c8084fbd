// fastrnn._C: Python bindings of the native CPU core. The only CPU-side file that knows Python.
// Tensors cross as raw addresses (tensor.data_ptr()), 0 meaning "absent"; the torch layer has
// validated shapes, dtypes and contiguity before any call. The GIL is released during native work.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <vector>

#include "binding_helpers.h"
#include "cpu/isa.h"
#include "fastrnn/rnn.h"

namespace py = pybind11;
using namespace fastrnn;

void bind_ctc(pybind11::module_& m);

PYBIND11_MODULE(_C, m) {
  m.doc() = "fastrnn native CPU core";

  py::enum_<CellKind>(m, "CellKind")
      .value("RNN_TANH", CellKind::RnnTanh)
      .value("RNN_RELU", CellKind::RnnRelu)
      .value("LSTM", CellKind::Lstm)
      .value("GRU", CellKind::Gru);
  py::enum_<Pass>(m, "Pass")
      .value("Forward", Pass::Forward)
      .value("Inference", Pass::Inference)
      .value("Backward", Pass::Backward)
      .value("GroupedBackward", Pass::GroupedBackward);
  py::enum_<DType>(m, "DType").value("float32", DType::Float32).value("float64", DType::Float64);
  py::enum_<HalfWeights>(m, "HalfWeights")
      .value("none", HalfWeights::None)
      .value("bfloat16", HalfWeights::Bfloat16)
      .value("float16", HalfWeights::Float16);
  bind_ctc(m);

  py::class_<RnnDesc>(m, "RnnDesc")
      .def(py::init([](int cell, int64_t num_layers, int64_t num_directions, int64_t input_size,
                       int64_t hidden_size, int64_t proj_size, bool has_bias, int64_t seq_len,
                       int64_t batch, std::vector<int64_t> batch_sizes) {
             return bindings::make_rnn_desc({cell, num_layers, num_directions, input_size,
                                             hidden_size, proj_size, has_bias, seq_len, batch,
                                             std::move(batch_sizes)});
           }),
           py::arg("cell"), py::arg("num_layers"), py::arg("num_directions"),
           py::arg("input_size"), py::arg("hidden_size"), py::arg("proj_size"),
           py::arg("has_bias"), py::arg("seq_len"), py::arg("batch"),
           py::arg("batch_sizes") = std::vector<int64_t>{})
      .def_property_readonly("total_rows", &RnnDesc::total_rows)
      .def_property_readonly("reserve_elems_per_row",
                             [](const RnnDesc& d) { return reserve_elems_per_row(d); })
      .def_property_readonly(
          "reserve_block_widths", [](const RnnDesc& d) { return ReserveLayout(d).block_widths(); },
          "Widths of the reserve's [N, width] blocks, in their order (rnn.h, ReserveLayout)")
      .def("workspace_elems", &workspace_elems, py::arg("pass_"), py::arg("dtype"));

  m.def("cpu_isa", [] { return cpu::isa_name(cpu::active_isa()); },
        "Instruction set the CPU kernels run with (generic, avx2, avx512 or avx512bf16)");
  m.def("best_cpu_isa", [] { return cpu::isa_name(cpu::best_supported_isa()); },
        "Best instruction set this CPU and build support");
  m.def("set_cpu_isa", &cpu::set_isa, py::arg("name"),
        "Forces the CPU kernels' instruction set (ValueError if unsupported)");

  m.def(
      "cpu_fma_peak_gflops",
      [](DType dtype, int threads) { return cpu::rnn_kernels().fma_peak_gflops(dtype, threads); },
      py::arg("dtype"), py::arg("threads"),
      "Measured FMA throughput (GFLOP/s) of the active ISA's vectors on `threads` threads",
      py::call_guard<py::gil_scoped_release>());

  m.def(
      "rnn_forward",
      [](const RnnDesc& desc, DType dtype, std::uintptr_t x,
         const std::vector<std::uintptr_t>& weights, std::uintptr_t h0, std::uintptr_t c0,
         const std::vector<std::uintptr_t>& masks, std::uintptr_t y, std::uintptr_t hy,
         std::uintptr_t cy, std::uintptr_t reserve, std::uintptr_t workspace, int threads,
         bool bf16_input, HalfWeights half_weights) {
        RnnForwardArgs args = bindings::rnn_forward_args(x, weights, h0, c0, masks, y, hy, cy,
                                                         reserve, workspace);
        args.bf16_input = bf16_input;
        args.half_weights = half_weights;
        rnn_forward_cpu(desc, dtype, args, threads);
      },
      py::arg("desc"), py::arg("dtype"), py::arg("x"), py::arg("weights"), py::arg("h0"),
      py::arg("c0"), py::arg("masks"), py::arg("y"), py::arg("hy"), py::arg("cy"),
      py::arg("reserve"), py::arg("workspace"), py::arg("threads"),
      py::arg("bf16_input") = false, py::arg("half_weights") = HalfWeights::None,
      py::call_guard<py::gil_scoped_release>());

  m.def("rnn_takes_bf16_input", &rnn_takes_bf16_input_cpu, py::arg("desc"), py::arg("dtype"),
        "Whether the active CPU kernels take rnn_forward(bf16_input=True) for this call: x and "
        "the first layer's weight_ih in bfloat16, everything else float32");

  m.def("rnn_takes_half_weights", &rnn_takes_half_weights_cpu, py::arg("desc"), py::arg("dtype"),
        "Whether the active CPU kernels take rnn_forward(half_weights=...) for this call: every "
        "weight_ih, weight_hh and weight_hr in bfloat16 or float16, the biases and everything "
        "else float32");

  m.def(
      "rnn_backward",
      [](const RnnDesc& desc, DType dtype, std::uintptr_t x,
         const std::vector<std::uintptr_t>& weights, std::uintptr_t h0, std::uintptr_t c0,
         const std::vector<std::uintptr_t>& masks, std::uintptr_t reserve, std::uintptr_t dy,
         std::uintptr_t dhy, std::uintptr_t dcy, std::uintptr_t dx, std::uintptr_t dh0,
         std::uintptr_t dc0, const std::vector<std::uintptr_t>& dweights,
         std::uintptr_t workspace, int threads, HalfWeights half_weights,
         int64_t weight_groups) {
        RnnBackwardArgs args = bindings::rnn_backward_args(x, weights, h0, c0, masks, reserve, dy,
                                                           dhy, dcy, dx, dh0, dc0, dweights,
                                                           workspace);
        args.fwd.half_weights = half_weights;
        args.weight_groups = weight_groups;
        rnn_backward_cpu(desc, dtype, args, threads);
      },
      py::arg("desc"), py::arg("dtype"), py::arg("x"), py::arg("weights"), py::arg("h0"),
      py::arg("c0"), py::arg("masks"), py::arg("reserve"), py::arg("dy"),
      py::arg("dhy"), py::arg("dcy"), py::arg("dx"), py::arg("dh0"), py::arg("dc0"),
      py::arg("dweights"), py::arg("workspace"), py::arg("threads"),
      py::arg("half_weights") = HalfWeights::None, py::arg("weight_groups") = 1,
      py::call_guard<py::gil_scoped_release>());
}
