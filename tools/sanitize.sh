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
trap 'rm -rf "$pkg"' EXIT
cp -r "$root/python/fastrnn" "$pkg/"
rm -f "$pkg"/fastrnn/*.so
cp "$build"/_C*.so "$pkg/fastrnn/"
cd "$root"
# The sanitized package must be the one imported, even where fastrnn is installed (editable or
# not): the interpreter runs with -S, so no .pth file (an editable install's import hook) is read,
# and the site-packages directories come after the sanitized package on the path.
site="$(python3 -c 'import site; print(":".join(site.getsitepackages()))')"
export PYTHONPATH="$pkg:$site"
origin="$(python3 -S -c 'import importlib.util as u; print(u.find_spec("fastrnn").origin)')"
if [ "$origin" != "$pkg/fastrnn/__init__.py" ]; then
  echo "fastrnn resolves to $origin, not the sanitized build in $pkg" >&2
  exit 1
fi
# allocator_may_return_null: an allocation too large to satisfy must fail like it does without
# ASan (torch raises), as tests/test_limits.py checks, instead of aborting in ASan's allocator.
LD_PRELOAD="$(gcc -print-file-name=libasan.so) $(gcc -print-file-name=libubsan.so)" \
ASAN_OPTIONS=detect_leaks=0:halt_on_error=1:allocator_may_return_null=1 \
UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
python3 -S -m pytest -q -p no:cacheprovider -W ignore \
  tests/test_rnn_ops.py tests/test_cpu_isa.py tests/test_cells_vs_torch.py tests/test_rnn_vs_torch.py \
  tests/test_ctc.py tests/test_threads.py tests/test_rnn_errors.py tests/test_bad_inputs.py \
  tests/test_limits.py tests/test_determinism.py tests/test_fuzz.py tests/test_inference_path.py \
  tests/test_fast_path_autograd.py tests/test_vmap.py "$@"
