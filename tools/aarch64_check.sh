#!/usr/bin/env bash
# Builds the CPU core and its bindings (fastrnn._C) for aarch64 Linux with a cross compiler, runs
# tools/native_check.py with that build under qemu and compares its results with this machine's
# generic (baseline x86-64) kernels: the same source, NEON there through the vector extension.
# Needs an x86-64 Debian/Ubuntu host, root for apt-get, and fastrnn installed here (the
# reference run). Nothing is installed for aarch64 system-wide: its Python and libraries are
# unpacked into a scratch folder. About two minutes on two cores.
#
#     bash tools/aarch64_check.sh
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

export DEBIAN_FRONTEND=noninteractive
dpkg --add-architecture arm64
apt-get update -qq
apt-get install -y -qq g++-aarch64-linux-gnu qemu-user > /dev/null
python3 -m pip install --quiet --root-user-action=ignore pybind11 cmake ninja numpy

# aarch64 CPython (the distribution's 3.11, headers included) and the libraries its binary and
# fastrnn._C load, unpacked rather than installed; libc and libstdc++ come with the compiler.
sysroot="$work/sysroot"
mkdir -p "$work/debs" "$sysroot"
chmod a+rx "$work" && chmod a+rwx "$work/debs"  # apt-get download fetches as user _apt
(cd "$work/debs" && apt-get download -qq python3.11-minimal:arm64 libpython3.11-minimal:arm64 \
  libpython3.11-stdlib:arm64 libpython3.11-dev:arm64 libexpat1:arm64 zlib1g:arm64 \
  libffi8:arm64 libgomp1:arm64)
for deb in "$work"/debs/*.deb; do dpkg -x "$deb" "$sysroot"; done
python3 -m pip download --quiet --no-deps --only-binary=:all: --platform manylinux2014_aarch64 \
  --python-version 3.11 --implementation cp --abi cp311 -d "$work/wheels" numpy
python3 -m zipfile -e "$work"/wheels/numpy-*.whl "$work/site"

cmake -S "$root" -B "$work/build" -G Ninja -DFASTRNN_CUDA=OFF \
  -DCMAKE_TOOLCHAIN_FILE="$root/tools/aarch64-toolchain.cmake" \
  -Dpybind11_DIR="$(python3 -c 'import pybind11; print(pybind11.get_cmake_dir())')" \
  -DPython_EXECUTABLE="$(command -v python3)" \
  -DPython_INCLUDE_DIR="$sysroot/usr/include/python3.11" \
  -DCMAKE_CXX_FLAGS="-isystem $sysroot/usr/include" > "$work/cmake.log"
cmake --build "$work/build" > "$work/build.log" || { cat "$work/build.log"; exit 1; }
aarch64_module="$(ls "$work"/build/_C.*.so)"
echo "built $(file -b "$aarch64_module" | cut -d, -f1-2)"

x86_module="$(cd "$work" && python3 -c 'import fastrnn._C as C; print(C.__file__)')"
FASTRNN_CPU_ISA=generic python3 "$root/tools/native_check.py" run "$x86_module" "$work/x86.npz"
qemu-aarch64 -L /usr/aarch64-linux-gnu \
  -E LD_LIBRARY_PATH="$sysroot/usr/lib/aarch64-linux-gnu:$sysroot/lib/aarch64-linux-gnu" \
  -E PYTHONPATH="$work/site" "$sysroot/usr/bin/python3.11" \
  "$root/tools/native_check.py" run "$aarch64_module" "$work/aarch64.npz"
python3 "$root/tools/native_check.py" compare "$work/x86.npz" "$work/aarch64.npz"
