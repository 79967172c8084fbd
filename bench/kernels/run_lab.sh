#!/usr/bin/env bash
# Builds the GEMM and activation labs once per ISA with the flags CMakeLists.txt uses and runs them.
# Usage: bash bench/kernels/run_lab.sh [threads]
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
out="$(mktemp -d)"
build() {  # name vec_bytes flags...
  local name=$1 bytes=$2; shift 2
  local flags=(-std=gnu++17 -O3 -ffp-contract=fast -DFASTRNN_ISA=$name
               -DFASTRNN_ISA_NAME="\"$name\"" -DFASTRNN_VEC_BYTES=$bytes "$@"
               -I"$root/csrc" -I"$root/csrc/include")
  g++ "${flags[@]}" "$root/bench/kernels/gemm_lab.cpp" "$root/csrc/cpu/threads.cpp" \
    -o "$out/gemm_$name" -pthread -fopenmp
  g++ "${flags[@]}" "$root/bench/kernels/activation_lab.cpp" -o "$out/activation_$name"
  "$out/gemm_$name" "${THREADS:-1}"
  "$out/activation_$name"
}
THREADS="${1:-1}"
build generic 16
build avx2 32 -mavx2 -mfma -mf16c
build avx512 64 -mavx512f -mavx512vl -mavx512bw -mavx512dq -mfma
