// The RNN functions of fastrnn._cuda. Like fastrnn._C's, they take raw device addresses
// (tensor.data_ptr(), 0 = absent) of buffers the torch layer has validated and made contiguous;
// the descriptor as the tuple of fields of binding_helpers.h's make_rnn_desc, dtype 0 (float32) or
// 1 (float64), the device index and the CUDA stream as an integer
// (torch.cuda.current_stream(device).cuda_stream). The GIL is released while work is queued.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <vector>

#include "binding_helpers.h"
#include "rnn.cuh"

namespace py = pybind11;
using namespace fastrnn;

using bindings::as_dtype;
using bindings::as_ptr;

void bind_rnn_cuda(py::module_& m) {
  m.def("set_persistent_kernels", &set_persistent_kernels, py::arg("enabled"),
        "Allow (default) or forbid the persistent kernels; forbidden, every step runs as a GEMM "
        "and a pointwise kernel");
  m.def("persistent_kernels_enabled", &persistent_kernels_enabled);
  m.def("persistent_kernel_launches", &persistent_kernel_launches,
        "Persistent kernels (forward or backward) launched by this process so far");
  m.def(
      "rnn_workspace_elems",
      [](bindings::RnnDescFields desc, bool backward, int dtype) {
        return workspace_elems_cuda(bindings::make_rnn_desc(std::move(desc)),
                                    backward ? Pass::Backward : Pass::Forward, as_dtype(dtype));
      },
      py::arg("desc"), py::arg("backward"), py::arg("dtype"));

  m.def(
      "rnn_forward",
      [](bindings::RnnDescFields desc, int dtype, std::uintptr_t x,
         const std::vector<std::uintptr_t>& weights, std::uintptr_t h0, std::uintptr_t c0,
         const std::vector<std::uintptr_t>& masks, std::uintptr_t y, std::uintptr_t hy,
         std::uintptr_t cy, std::uintptr_t reserve, std::uintptr_t workspace, int device,
         std::uintptr_t stream) {
        rnn_forward_cuda(bindings::make_rnn_desc(std::move(desc)), as_dtype(dtype),
                         bindings::rnn_forward_args(x, weights, h0, c0, masks, y, hy, cy, reserve,
                                                    workspace),
                         device, as_ptr<CUstream_st>(stream));
      },
      py::arg("desc"), py::arg("dtype"), py::arg("x"), py::arg("weights"), py::arg("h0"),
      py::arg("c0"), py::arg("masks"), py::arg("y"), py::arg("hy"), py::arg("cy"),
      py::arg("reserve"), py::arg("workspace"), py::arg("device"), py::arg("stream"),
      py::call_guard<py::gil_scoped_release>());

  m.def(
      "rnn_backward",
      [](bindings::RnnDescFields desc, int dtype, std::uintptr_t x,
         const std::vector<std::uintptr_t>& weights, std::uintptr_t h0, std::uintptr_t c0,
         const std::vector<std::uintptr_t>& masks, std::uintptr_t reserve, std::uintptr_t dy,
         std::uintptr_t dhy, std::uintptr_t dcy, std::uintptr_t dx, std::uintptr_t dh0,
         std::uintptr_t dc0, const std::vector<std::uintptr_t>& dweights,
         std::uintptr_t workspace, int device, std::uintptr_t stream) {
        rnn_backward_cuda(bindings::make_rnn_desc(std::move(desc)), as_dtype(dtype),
                          bindings::rnn_backward_args(x, weights, h0, c0, masks, reserve, dy, dhy,
                                                      dcy, dx, dh0, dc0, dweights, workspace),
                          device, as_ptr<CUstream_st>(stream));
      },
      py::arg("desc"), py::arg("dtype"), py::arg("x"), py::arg("weights"), py::arg("h0"),
      py::arg("c0"), py::arg("masks"), py::arg("reserve"), py::arg("dy"), py::arg("dhy"),
      py::arg("dcy"), py::arg("dx"), py::arg("dh0"), py::arg("dc0"), py::arg("dweights"),
      py::arg("workspace"), py::arg("device"), py::arg("stream"),
      py::call_guard<py::gil_scoped_release>());
}
