// The RNN kernels of one instruction set: compiled once per ISA (CMakeLists.txt sets
// FASTRNN_ISA, FASTRNN_VEC_BYTES and the ISA's compiler flags) into namespace
// fastrnn::cpu::<FASTRNN_ISA>, exporting its RnnKernels table (see isa.h).
#include <algorithm>
#include <atomic>
#include <chrono>
#include <stdexcept>

#include "cpu/isa.h"
#include "cpu/recurrence.h"
#include "cells/dispatch.h"
#include "cpu/gemm.h"
#include "cpu/threads.h"

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

bool takes_bf16_input(const RnnDesc& desc, DType dtype) {
  return dtype == DType::Float32 && with_cell(desc.cell, [&](auto cell) {
           return Driver<float, decltype(cell)>::takes_bf16_input(desc);
         });
}

bool takes_half_weights(const RnnDesc& desc, DType dtype) {
  return dtype == DType::Float32 && with_cell(desc.cell, [&](auto cell) {
           return Driver<float, decltype(cell)>::takes_half_weights(desc);
         });
}

// Forward's and backward's precondition on RnnForwardArgs::half_weights.
void check_half_weights(const RnnDesc& desc, DType dtype, const RnnForwardArgs& args) {
  FASTRNN_CHECK(args.half_weights == HalfWeights::None || takes_half_weights(desc, dtype),
                "16-bit weights are not taken by these kernels for this call");
}

void forward(const RnnDesc& desc, DType dtype, const RnnForwardArgs& args, int threads) {
  FASTRNN_CHECK(!args.bf16_input || takes_bf16_input(desc, dtype),
                "bfloat16 input is not taken by these kernels for this call");
  check_half_weights(desc, dtype, args);
  with_dtype(dtype, [&](auto value) {
    with_cell(desc.cell, [&](auto cell) {
      Driver<decltype(value), decltype(cell)>(desc, threads).forward(args);
      return 0;
    });
  });
}

void backward(const RnnDesc& desc, DType dtype, const RnnBackwardArgs& args, int threads) {
  FASTRNN_CHECK(!args.fwd.bf16_input, "backward takes no bfloat16 input");
  check_half_weights(desc, dtype, args.fwd);
  with_dtype(dtype, [&](auto value) {
    with_cell(desc.cell, [&](auto cell) {
      Driver<decltype(value), decltype(cell)>(desc, threads).backward(args);
      return 0;
    });
  });
}

// Independent FMA chains per thread: enough to cover latency x issue width on current cores
// (4 cycles x 2 pipes), within the register file (16 vector registers below AVX-512).
constexpr int kPeakChains = kRegisters >= 32 ? 24 : 12;

template <class T>
T fma_chains(int64_t iterations, T seed) {
  using V = VecOf<T>;
  V acc[kPeakChains];
  for (int c = 0; c < kPeakChains; ++c) acc[c] = V(seed * T(c + 1));
  // acc -> acc * a + b converges to b / (1 - a): no overflow, no denormals.
  const V a(T(0.999)), b(seed);
  for (int64_t i = 0; i < iterations; ++i) {
#pragma GCC unroll 32  // all chains in registers (GCC keeps a rolled loop's array in memory)
    for (int c = 0; c < kPeakChains; ++c) acc[c] = acc[c] * a + b;
  }
  V sum = acc[0];
  for (int c = 1; c < kPeakChains; ++c) sum += acc[c];
  return sum.v[0];
}

double fma_peak_gflops(DType dtype, int threads) {
  constexpr int64_t kIterations = 1 << 20;
  double best = 0;
  with_dtype(dtype, [&](auto value) {
    using T = decltype(value);
    for (int rep = 0; rep < 5; ++rep) {
      std::atomic<int> sink{0};
      int ran = 1;  // the thread count parallel() used (it clamps the request)
      const auto start = std::chrono::steady_clock::now();
      parallel(threads, [&](int tid, int n) {
        if (tid == 0) ran = n;
        // The result feeds a store the compiler cannot drop, so the chains are computed.
        if (fma_chains<T>(kIterations, T(tid + 1)) < T(0)) sink.fetch_add(1);
      });
      const double seconds =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      const double flops = 2.0 * VecOf<T>::kWidth * kPeakChains * kIterations * ran;
      best = std::max(best, flops / seconds * 1e-9);
    }
  });
  return best;
}

}  // namespace

extern const RnnKernels kRnnKernels = {&workspace_elems, &takes_bf16_input, &takes_half_weights,
                                       &forward,         &backward,         &fma_peak_gflops};

}  // namespace fastrnn::cpu::FASTRNN_ISA
