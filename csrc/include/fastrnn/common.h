// fastrnn native core: shared definitions.
//
// Shape legend used in every header of the project:
//   T steps, B batch (rows at the first step), N total rows over all steps (T*B when padded,
//   sum(batch_sizes) when packed), I input size, H hidden size, G gates (RNN 1, GRU 3, LSTM 4),
//   P projection size (LSTM proj_size, 0 = none), O = P if P > 0 else H (the recurrent output size),
//   L layers, D directions (1 or 2).
// All matrices are row-major and dense unless a leading dimension is given.
// Gate order is torch's: LSTM i,f,g,o; GRU r,z,n.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>

#if defined(__CUDACC__)
#define FASTRNN_HD __host__ __device__ __forceinline__
#else
#define FASTRNN_HD inline
#endif

namespace fastrnn {

// Value type of a problem's tensors.
enum class DType : int { Float32 = 0, Float64 = 1 };

// Precondition check for the native core: the torch layer validates user input first; these
// catch a bad call before it can read or write out of bounds.
#define FASTRNN_CHECK(cond, msg)                                                        \
  do {                                                                                  \
    if (!(cond)) throw std::invalid_argument(std::string("fastrnn: ") + (msg));          \
  } while (0)

// Bump allocator over a caller-provided workspace (the cores never allocate, DESIGN.md 1). With a
// null base it only counts, so a pass's size query and its carving are the same code and cannot
// drift apart.
template <class T>
struct Carve {
  T* base;
  int64_t used = 0;
  T* take(int64_t n) {
    T* out = base ? base + used : nullptr;
    used += n;
    return out;
  }
};

}  // namespace fastrnn
