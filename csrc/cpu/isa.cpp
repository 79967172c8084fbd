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
      return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
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

bool parse(const std::string& name, Isa* out) {
  for (Isa isa : {Isa::Generic, Isa::Avx2, Isa::Avx512, Isa::Avx512Bf16}) {
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
  for (Isa isa : {Isa::Avx512Bf16, Isa::Avx512, Isa::Avx2}) {
    if (supported(isa)) return isa;
  }
  return Isa::Generic;
}

Isa active_isa() { return current().load(); }

void set_isa(const std::string& name) {
  Isa isa;
  FASTRNN_CHECK(parse(name, &isa), "unknown CPU ISA '" + name + "' (generic, avx2, avx512 or avx512bf16)");
  FASTRNN_CHECK(supported(isa), "this CPU or build does not support the ISA '" + name + "'");
  current().store(isa);
}

const RnnKernels& rnn_kernels() {
  switch (active_isa()) {
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

int64_t max_workspace_elems(const RnnDesc& desc, Pass pass, DType dtype) {
  int64_t most = generic::kRnnKernels.workspace_elems(desc, pass, dtype);
#if defined(FASTRNN_X86_ISAS)
  // Only the supported ones: each kernel table's code is compiled for its own ISA.
  if (supported(Isa::Avx2)) {
    most = std::max(most, avx2::kRnnKernels.workspace_elems(desc, pass, dtype));
  }
  if (supported(Isa::Avx512)) {
    most = std::max(most, avx512::kRnnKernels.workspace_elems(desc, pass, dtype));
  }
  if (supported(Isa::Avx512Bf16)) {
    most = std::max(most, avx512bf16::kRnnKernels.workspace_elems(desc, pass, dtype));
  }
#endif
  return most;
}

}  // namespace fastrnn::cpu
