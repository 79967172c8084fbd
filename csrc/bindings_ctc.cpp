// The CTC functions of fastrnn._C. Tensors cross as raw addresses (tensor.data_ptr(), 0 = absent);
// the torch layer (python/fastrnn/ctc.py) has validated shapes, dtypes, devices and lengths and
// made every buffer contiguous. The GIL is released during native work.
#include <pybind11/pybind11.h>

#include <cstdint>

#include "binding_helpers.h"
#include "fastrnn/ctc.h"

namespace py = pybind11;
using namespace fastrnn;

void bind_ctc(py::module_& m) {
  py::class_<CtcDesc>(m, "CtcDesc")
      .def(py::init(&bindings::make_ctc_desc), py::arg("max_time"), py::arg("batch"),
           py::arg("num_classes"), py::arg("max_target"), py::arg("blank"),
           py::arg("targets_size"), py::arg("from_logits"))
      .def_property_readonly("ext_len", &CtcDesc::ext_len);

  m.def("ctc_cpu_workspace_bytes", &ctc_cpu_workspace_bytes, py::arg("desc"), py::arg("dtype"),
        py::arg("num_threads"));

  m.def(
      "ctc_forward",
      [](const CtcDesc& desc, DType dtype, std::uintptr_t input, std::uintptr_t targets,
         std::uintptr_t target_offsets, std::uintptr_t input_lengths,
         std::uintptr_t target_lengths, bool zero_infinity, std::uintptr_t loss,
         std::uintptr_t log_alpha, std::uintptr_t row_lse, std::uintptr_t workspace,
         int64_t num_threads) {
        const CtcForwardArgs a = bindings::ctc_forward_args(
            input, targets, target_offsets, input_lengths, target_lengths, zero_infinity, loss,
            log_alpha, row_lse, workspace);
        ctc_forward_cpu(desc, dtype, a, num_threads);
      },
      py::arg("desc"), py::arg("dtype"), py::arg("input"), py::arg("targets"),
      py::arg("target_offsets"), py::arg("input_lengths"), py::arg("target_lengths"),
      py::arg("zero_infinity"), py::arg("loss"), py::arg("log_alpha"), py::arg("row_lse"),
      py::arg("workspace"), py::arg("num_threads"), py::call_guard<py::gil_scoped_release>());

  m.def(
      "ctc_backward",
      [](const CtcDesc& desc, DType dtype, std::uintptr_t input, std::uintptr_t targets,
         std::uintptr_t target_offsets, std::uintptr_t input_lengths,
         std::uintptr_t target_lengths, std::uintptr_t log_alpha, std::uintptr_t row_lse,
         std::uintptr_t grad_loss, std::uintptr_t grad_input, std::uintptr_t workspace,
         int64_t num_threads) {
        const CtcBackwardArgs a = bindings::ctc_backward_args(
            input, targets, target_offsets, input_lengths, target_lengths, log_alpha, row_lse,
            grad_loss, grad_input, workspace);
        ctc_backward_cpu(desc, dtype, a, num_threads);
      },
      py::arg("desc"), py::arg("dtype"), py::arg("input"), py::arg("targets"),
      py::arg("target_offsets"), py::arg("input_lengths"), py::arg("target_lengths"),
      py::arg("log_alpha"), py::arg("row_lse"), py::arg("grad_loss"), py::arg("grad_input"),
      py::arg("workspace"), py::arg("num_threads"), py::call_guard<py::gil_scoped_release>());
}
