// The CTC functions of fastrnn._cuda. Like fastrnn._C's, they take raw device addresses
// (tensor.data_ptr(), 0 = absent) of buffers the torch layer has validated and made contiguous,
// the problem sizes as plain integers, dtype 0 (float32) or 1 (float64), the tensors' device index
// and the CUDA stream as an integer (torch.cuda.current_stream(device).cuda_stream). The GIL is
// released while work is queued.
#include <pybind11/pybind11.h>

#include <cstdint>

#include "binding_helpers.h"
#include "fastrnn/ctc.h"

namespace py = pybind11;
using namespace fastrnn;

using bindings::as_dtype;
using bindings::as_ptr;

void bind_ctc_cuda(py::module_& m) {
  m.def(
      "ctc_cuda_workspace_bytes",
      [](int64_t max_time, int64_t batch, int64_t num_classes, int64_t max_target, int64_t blank,
         int64_t targets_size, bool from_logits, int dtype) {
        return ctc_cuda_workspace_bytes(
            bindings::make_ctc_desc(max_time, batch, num_classes, max_target, blank, targets_size,
                                    from_logits),
            as_dtype(dtype));
      },
      py::arg("max_time"), py::arg("batch"), py::arg("num_classes"), py::arg("max_target"),
      py::arg("blank"), py::arg("targets_size"), py::arg("from_logits"), py::arg("dtype"));

  m.def(
      "ctc_forward",
      [](int64_t max_time, int64_t batch, int64_t num_classes, int64_t max_target, int64_t blank,
         int64_t targets_size, bool from_logits, int dtype, std::uintptr_t input,
         std::uintptr_t targets, std::uintptr_t target_offsets, std::uintptr_t input_lengths,
         std::uintptr_t target_lengths, bool zero_infinity, std::uintptr_t loss,
         std::uintptr_t log_alpha, std::uintptr_t row_lse, std::uintptr_t workspace,
         int device, std::uintptr_t stream) {
        const CtcForwardArgs a = bindings::ctc_forward_args(
            input, targets, target_offsets, input_lengths, target_lengths, zero_infinity, loss,
            log_alpha, row_lse, workspace);
        ctc_forward_cuda(
            bindings::make_ctc_desc(max_time, batch, num_classes, max_target, blank, targets_size,
                                    from_logits),
            as_dtype(dtype), a, device, as_ptr<void>(stream));
      },
      py::arg("max_time"), py::arg("batch"), py::arg("num_classes"), py::arg("max_target"),
      py::arg("blank"), py::arg("targets_size"), py::arg("from_logits"), py::arg("dtype"),
      py::arg("input"), py::arg("targets"), py::arg("target_offsets"), py::arg("input_lengths"),
      py::arg("target_lengths"), py::arg("zero_infinity"), py::arg("loss"),
      py::arg("log_alpha"), py::arg("row_lse"), py::arg("workspace"), py::arg("device"),
      py::arg("stream"),
      py::call_guard<py::gil_scoped_release>());

  m.def(
      "ctc_backward",
      [](int64_t max_time, int64_t batch, int64_t num_classes, int64_t max_target, int64_t blank,
         int64_t targets_size, bool from_logits, int dtype, std::uintptr_t input,
         std::uintptr_t targets, std::uintptr_t target_offsets, std::uintptr_t input_lengths,
         std::uintptr_t target_lengths, std::uintptr_t log_alpha, std::uintptr_t row_lse,
         std::uintptr_t grad_loss, std::uintptr_t grad_input, std::uintptr_t workspace,
         int device, std::uintptr_t stream) {
        const CtcBackwardArgs a = bindings::ctc_backward_args(
            input, targets, target_offsets, input_lengths, target_lengths, log_alpha, row_lse,
            grad_loss, grad_input, workspace);
        ctc_backward_cuda(
            bindings::make_ctc_desc(max_time, batch, num_classes, max_target, blank, targets_size,
                                    from_logits),
            as_dtype(dtype), a, device, as_ptr<void>(stream));
      },
      py::arg("max_time"), py::arg("batch"), py::arg("num_classes"), py::arg("max_target"),
      py::arg("blank"), py::arg("targets_size"), py::arg("from_logits"), py::arg("dtype"),
      py::arg("input"), py::arg("targets"), py::arg("target_offsets"), py::arg("input_lengths"),
      py::arg("target_lengths"), py::arg("log_alpha"), py::arg("row_lse"), py::arg("grad_loss"),
      py::arg("grad_input"), py::arg("workspace"), py::arg("device"), py::arg("stream"),
      py::call_guard<py::gil_scoped_release>());
}
