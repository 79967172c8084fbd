// CUDA entry points of the RNN core: a whole stack (layers x directions), forward and BPTT.
//
// Buffers, shapes and the reserve layout are those of fastrnn/rnn.h (the same on every backend),
// all on `device`; work is queued on `stream` and nothing is synchronized. Value types: float32 and
// float64 (the torch layer runs float16/bfloat16 through float32).
//
// The per-step path: per layer and direction, one cuBLAS GEMM for the input projection of every
// row; then per step a cuBLAS GEMM for h_{t-1} W_hh^T and one kernel for the cell's pointwise
// math (csrc/cells/); in backward, per step the cell's backward kernel and a GEMM for
// dh_{t-1} = dG W_hh, then whole-sequence GEMMs for the weight and input gradients.
// Sequence length is a host loop: any T works (no 65,535-step grid limit). When the problem fits,
// the time loop of a (layer, direction) runs as one persistent kernel instead (persistent.cuh),
// forward and backward.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "fastrnn/rnn.h"

namespace fastrnn {

// Workspace values (of the problem's dtype) that rnn_{forward,backward}_cuda need.
int64_t workspace_elems_cuda(const RnnDesc& desc, Pass pass, DType dtype);

void rnn_forward_cuda(const RnnDesc& desc, DType dtype, const RnnForwardArgs& args, int device,
                      cudaStream_t stream);
void rnn_backward_cuda(const RnnDesc& desc, DType dtype, const RnnBackwardArgs& args, int device,
                       cudaStream_t stream);

// Whether the persistent kernels may run (default true); false forces the per-step path.
void set_persistent_kernels(bool enabled);
bool persistent_kernels_enabled();
// Persistent kernels launched by this process so far (tests check which path ran).
int64_t persistent_kernel_launches();

}  // namespace fastrnn
