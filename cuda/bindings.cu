// fastrnn._cuda: the CUDA module. Imported lazily by the torch layer on the first CUDA tensor,
// so that `import fastrnn` never needs a GPU, a driver or CUDA libraries.
#include <pybind11/pybind11.h>

#include "check.cuh"

namespace py = pybind11;

void bind_ctc_cuda(pybind11::module_& m);
void bind_rnn_cuda(pybind11::module_& m);

namespace {

// Number of visible devices; 0 (not an error) when there is no driver or no device.
int device_count() {
  int count = 0;
  const cudaError_t status = cudaGetDeviceCount(&count);
  if (status == cudaErrorNoDevice || status == cudaErrorInsufficientDriver) {
    cudaGetLastError();  // reset the last-error state so later calls start clean
    return 0;
  }
  FASTRNN_CUDA_CHECK(status);
  return count;
}

int runtime_version() {
  int version = 0;
  FASTRNN_CUDA_CHECK(cudaRuntimeGetVersion(&version));
  return version;
}

}  // namespace

PYBIND11_MODULE(_cuda, m) {
  m.doc() = "fastrnn CUDA kernels";
  m.def("device_count", &device_count, "Visible CUDA devices (0 without driver or device)");
  m.def("runtime_version", &runtime_version, "CUDA runtime version the module was built with");
  bind_ctc_cuda(m);
  bind_rnn_cuda(m);
}
