// The CTC functions of fastrnn._C. Tensors cross as raw addresses (tensor.data_ptr(), 0 = absent);
// the torch layer (python/fastrnn/ctc.py) has validated shapes, dtypes, devices and lengths and
// made every buffer contiguous. The GIL is released during native work.
#include <pybind11/pybind11.h>

#include <cstdint>

#include "binding_helpers.h"
#include "fastrnn/ctc.h"

namespace py = pybind11;
using namespace fastrnn;

using bindings::as_dtype;
using bindings::as_ptr;

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
        CtcForwardArgs a;
        a.input = as_ptr<const void>(input);
        a.targets = as_ptr<const int64_t>(targets);
        a.target_offsets = as_ptr<const int64_t>(target_offsets);
        a.input_lengths = as_ptr<const int64_t>(input_lengths);
        a.target_lengths = as_ptr<const int64_t>(target_lengths);
        a.zero_infinity = zero_infinity;
        a.loss = as_ptr<void>(loss);
        a.log_alpha = as_ptr<void>(log_alpha);
        a.row_lse = as_ptr<void>(row_lse);
        a.workspace = as_ptr<void>(workspace);
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
        CtcBackwardArgs a;
        a.input = as_ptr<const void>(input);
        a.targets = as_ptr<const int64_t>(targets);
        a.target_offsets = as_ptr<const int64_t>(target_offsets);
        a.input_lengths = as_ptr<const int64_t>(input_lengths);
        a.target_lengths = as_ptr<const int64_t>(target_lengths);
        a.log_alpha = as_ptr<const void>(log_alpha);
        a.row_lse = as_ptr<const void>(row_lse);
        a.grad_loss = as_ptr<const void>(grad_loss);
        a.grad_input = as_ptr<void>(grad_input);
        a.workspace = as_ptr<void>(workspace);
        ctc_backward_cpu(desc, dtype, a, num_threads);
      },
      py::arg("desc"), py::arg("dtype"), py::arg("input"), py::arg("targets"),
      py::arg("target_offsets"), py::arg("input_lengths"), py::arg("target_lengths"),
      py::arg("log_alpha"), py::arg("row_lse"), py::arg("grad_loss"), py::arg("grad_input"),
      py::arg("workspace"), py::arg("num_threads"), py::call_guard<py::gil_scoped_release>());
}
