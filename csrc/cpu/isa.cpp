#include "cpu/isa.h"

#include <algorithm>
#include <atomic>
#include <cstdlib>

namespace fastrnn::cpu {
namespace {

bool supported(Isa isa) {
  switch (isa) {
    case Isa::Generic:
      return true;
#if defined(FASTRNN_X86_ISAS)
    case Isa::Avx2:
      return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
             __builtin_cpu_supports("f16c");
    case Isa::Avx512:
      return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
             __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq") &&
             __builtin_cpu_supports("fma");
    case Isa::Avx512Bf16:
      return supported(Isa::Avx512) && __builtin_cpu_supports("avx512bf16");
#else
    case Isa::Avx2:
    case Isa::Avx512:
    case Isa::Avx512Bf16:
      return false;
#endif
  }
  return false;
}

// Every ISA, narrowest first.
constexpr Isa kIsas[] = {Isa::Generic, Isa::Avx2, Isa::Avx512, Isa::Avx512Bf16};

// The kernel table of a supported ISA.
const RnnKernels& kernels_of(Isa isa) {
  switch (isa) {
#if defined(FASTRNN_X86_ISAS)
    case Isa::Avx512Bf16:
      return avx512bf16::kRnnKernels;
    case Isa::Avx512:
      return avx512::kRnnKernels;
    case Isa::Avx2:
      return avx2::kRnnKernels;
#endif
    default:
      return generic::kRnnKernels;
  }
}

bool parse(const std::string& name, Isa* out) {
  for (Isa isa : kIsas) {
    if (name == isa_name(isa)) {
      *out = isa;
      return true;
    }
  }
  return false;
}

Isa initial_isa() {
  Isa isa = best_supported_isa();
  Isa cap;
  if (const char* env = std::getenv("FASTRNN_CPU_ISA"); env && parse(env, &cap) && cap < isa) {
    isa = cap;
  }
  return isa;
}

std::atomic<Isa>& current() {
  static std::atomic<Isa> isa{initial_isa()};
  return isa;
}

}  // namespace

std::string isa_name(Isa isa) {
  switch (isa) {
    case Isa::Generic:
      return "generic";
    case Isa::Avx2:
      return "avx2";
    case Isa::Avx512:
      return "avx512";
    case Isa::Avx512Bf16:
      return "avx512bf16";
  }
  return "unknown";
}

Isa best_supported_isa() {
  Isa best = Isa::Generic;
  for (Isa isa : kIsas) {
    if (supported(isa)) best = isa;
  }
  return best;
}

Isa active_isa() { return current().load(); }

void set_isa(const std::string& name) {
  Isa isa;
  FASTRNN_CHECK(parse(name, &isa),
                "unknown CPU ISA '" + name + "' (generic, avx2, avx512 or avx512bf16)");
  FASTRNN_CHECK(supported(isa), "this CPU or build does not support the ISA '" + name + "'");
  current().store(isa);
}

const RnnKernels& rnn_kernels() { return kernels_of(active_isa()); }

int64_t max_workspace_elems(const RnnDesc& desc, Pass pass, DType dtype) {
  int64_t most = 0;
  // Only the supported ones: each kernel table's code is compiled for its own ISA.
  for (Isa isa : kIsas) {
    if (supported(isa)) most = std::max(most, kernels_of(isa).workspace_elems(desc, pass, dtype));
  }
  return most;
}

}  // namespace fastrnn::cpu
