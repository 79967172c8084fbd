#!/usr/bin/env bash
# Builds the CPU module with AddressSanitizer + UndefinedBehaviorSanitizer (FASTRNN_SANITIZE=ON)
# and runs the CPU test files against it. Takes ~5 minutes to build on 2 cores.
#   bash tools/sanitize.sh [pytest args...]
# Any report from either sanitizer aborts the run (halt_on_error), so a pass means clean.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
build="$root/build/sanitize"
cmake -S "$root" -B "$build" -DFASTRNN_CUDA=OFF -DFASTRNN_SANITIZE=ON \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo -Dpybind11_DIR="$(python3 -m pybind11 --cmakedir)" > /dev/null
cmake --build "$build" --target _C -j "$(nproc)"
pkg="$(mktemp -d)"
cp -r "$root/python/fastrnn" "$pkg/"
rm -f "$pkg"/fastrnn/*.so
cp "$build"/_C*.so "$pkg/fastrnn/"
cd "$root"
# An installed fastrnn (editable or not) would shadow the sanitized one.
if python3 -c "import fastrnn" 2> /dev/null; then
  echo "uninstall fastrnn first (pip uninstall fastrnn): it would shadow the sanitized build" >&2
  exit 1
fi
LD_PRELOAD="$(gcc -print-file-name=libasan.so) $(gcc -print-file-name=libubsan.so)" \
ASAN_OPTIONS=detect_leaks=0:halt_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
PYTHONPATH="$pkg" python3 -m pytest -q -p no:cacheprovider -W ignore \
  tests/test_rnn_ops.py tests/test_cpu_isa.py tests/test_cells_vs_torch.py tests/test_rnn_vs_torch.py \
  tests/test_ctc.py tests/test_threads.py "$@"
