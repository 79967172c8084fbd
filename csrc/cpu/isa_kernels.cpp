// The RNN kernels of one instruction set: compiled once per ISA (CMakeLists.txt sets
// FASTRNN_ISA, FASTRNN_VEC_BYTES and the ISA's compiler flags) into namespace
// fastrnn::cpu::<FASTRNN_ISA>, exporting its RnnKernels table (see isa.h).
#include <stdexcept>

#include "cpu/isa.h"
#include "cpu/recurrence.h"
#include "cells/dispatch.h"

namespace fastrnn::cpu::FASTRNN_ISA {
namespace {

using cells::with_cell;

template <class F>
void with_dtype(DType dtype, F&& f) {
  switch (dtype) {
    case DType::Float32:
      return f(float{});
    case DType::Float64:
      return f(double{});
  }
  throw std::invalid_argument("fastrnn: unsupported dtype for the CPU backend");
}

int64_t workspace_elems(const RnnDesc& desc, Pass pass, DType dtype) {
  int64_t elems = 0;
  with_dtype(dtype, [&](auto value) {
    elems = with_cell(desc.cell, [&](auto cell) {
      return Driver<decltype(value), decltype(cell)>::workspace_elems(desc, pass);
    });
  });
  return elems;
}

void forward(const RnnDesc& desc, DType dtype, const RnnForwardArgs& args, int threads) {
  with_dtype(dtype, [&](auto value) {
    with_cell(desc.cell, [&](auto cell) {
      Driver<decltype(value), decltype(cell)>(desc, threads).forward(args);
      return 0;
    });
  });
}

void backward(const RnnDesc& desc, DType dtype, const RnnBackwardArgs& args, int threads) {
  with_dtype(dtype, [&](auto value) {
    with_cell(desc.cell, [&](auto cell) {
      Driver<decltype(value), decltype(cell)>(desc, threads).backward(args);
      return 0;
    });
  });
}

}  // namespace

extern const RnnKernels kRnnKernels = {&workspace_elems, &forward, &backward};

}  // namespace fastrnn::cpu::FASTRNN_ISA
