# CMake toolchain for building fastrnn._C for aarch64 Linux on an x86-64 Debian host with
# g++-aarch64-linux-gnu (used by tools/aarch64_check.sh).
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(CMAKE_CXX_COMPILER aarch64-linux-gnu-g++)
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
