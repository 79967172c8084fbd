// SIMD vector type for the CPU kernels, and the activations on it.
//
// This header is compiled once per instruction set (see isa_kernels.cpp): FASTRNN_ISA names the
// namespace and FASTRNN_VEC_BYTES the register width (16 generic, 32 AVX2, 64 AVX-512). Every type
// and function here lives in that per-ISA namespace, so code built with AVX-512 flags can never be
// merged by the linker into the generic build (a one-definition-rule trap that would crash
// older CPUs). Vec uses the GCC/Clang vector extension, which the compiler lowers to the ISA the
// translation unit is compiled for (SSE2/NEON, AVX2+FMA, AVX-512).
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#include "fastrnn/common.h"

#ifndef FASTRNN_ISA
#error "FASTRNN_ISA must name the instruction set of this translation unit"
#endif

namespace fastrnn::cpu::FASTRNN_ISA {

template <class T, int W>
struct Vec {
  static constexpr int kWidth = W;
  typedef T Native __attribute__((vector_size(sizeof(T) * W)));
  Native v;

  Vec() = default;
  // Broadcast, so that cell math can write V(1). x - 0 is x exactly (x + 0 is not, for -0),
  // which lets the compiler emit a plain broadcast.
  Vec(T x) : v(x - Native{}) {}
  static Vec from(Native n) {
    Vec r;
    r.v = n;
    return r;
  }
  static Vec load(const T* p) {
    Vec r;
    std::memcpy(&r.v, p, sizeof(Native));
    return r;
  }
  void store(T* p) const { std::memcpy(p, &v, sizeof(Native)); }
  // First n lanes from p (n <= W), the others zero: for the tail of a row.
  static Vec load_partial(const T* p, int n) {
    Vec r(T(0));
    for (int i = 0; i < n; ++i) r.v[i] = p[i];
    return r;
  }
  void store_partial(T* p, int n) const {
    for (int i = 0; i < n; ++i) p[i] = v[i];
  }
  friend Vec operator+(Vec a, Vec b) { return from(a.v + b.v); }
  friend Vec operator-(Vec a, Vec b) { return from(a.v - b.v); }
  friend Vec operator*(Vec a, Vec b) { return from(a.v * b.v); }
  friend Vec operator/(Vec a, Vec b) { return from(a.v / b.v); }
  Vec& operator+=(Vec b) {
    v += b.v;
    return *this;
  }
};

constexpr int kFloatLanes = FASTRNN_VEC_BYTES / 4;
constexpr int kDoubleLanes = FASTRNN_VEC_BYTES / 8;
// The two vector types the kernels use: one register of floats or of doubles.
using VecF = Vec<float, kFloatLanes>;
using VecD = Vec<double, kDoubleLanes>;
template <class T>
using VecOf = Vec<T, FASTRNN_VEC_BYTES / static_cast<int>(sizeof(T))>;

namespace detail {

// e^x for float lanes: x = n ln2 + r, |r| <= ln2/2, e^r by its Taylor polynomial to r^7
// (relative error below 2e-8 on that interval), then 2^n by adding n to the exponent bits.
// x is clamped to [-87.3, 88.7], where 2^n stays a normal float; outside, e^x is below
// 1.2e-38 or overflows anyway, and callers (sigmoid, tanh) saturate correctly with the clamp.
inline VecF exp(VecF x) {
  typedef int32_t Int __attribute__((vector_size(FASTRNN_VEC_BYTES)));
  typedef VecF::Native F;
  F v = x.v;
  v = v < -87.3f ? F{} - 87.3f : v;
  v = v > 88.7f ? F{} + 88.7f : v;
  const F t = v * 1.44269504088896341f;
  const Int n = __builtin_convertvector(t + (t >= 0.0f ? F{} + 0.5f : F{} - 0.5f), Int);
  const F nf = __builtin_convertvector(n, F);
  const F r = (v - nf * 0.693359375f) + nf * 2.12194440e-4f;  // ln2 split in two for exactness
  F p = F{} + 1.98412698e-4f;                                 // 1/7!
  p = p * r + 1.38888889e-3f;
  p = p * r + 8.33333333e-3f;
  p = p * r + 4.16666667e-2f;
  p = p * r + 1.66666667e-1f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  Int bits;
  std::memcpy(&bits, &p, sizeof bits);
  bits += n << 23;
  F scaled;
  std::memcpy(&scaled, &bits, sizeof scaled);
  return VecF::from(scaled);
}

}  // namespace detail

}  // namespace fastrnn::cpu::FASTRNN_ISA

// Activations for the vector types, in the namespace the cells call (fastrnn::act).
namespace fastrnn::act {

inline cpu::FASTRNN_ISA::VecF sigmoid(cpu::FASTRNN_ISA::VecF x) {
  using V = cpu::FASTRNN_ISA::VecF;
  return V(1.0f) / (V(1.0f) + cpu::FASTRNN_ISA::detail::exp(V(0.0f) - x));
}

// tanh: an odd Taylor polynomial for |x| < 0.3 (where 1 - 2/(e^2x + 1) would cancel), else
// sign(x) (1 - 2 / (e^{2|x|} + 1)); both within a few float ulps.
inline cpu::FASTRNN_ISA::VecF tanh(cpu::FASTRNN_ISA::VecF x) {
  using V = cpu::FASTRNN_ISA::VecF;
  typedef V::Native F;
  const F a = x.v < 0.0f ? -x.v : x.v;
  const F e = cpu::FASTRNN_ISA::detail::exp(V::from(a + a)).v;
  const F big = 1.0f - 2.0f / (e + 1.0f);
  const F x2 = x.v * x.v;
  F p = F{} + 0.0218694885f;  // 62/2835
  p = p * x2 - 0.0539682540f;  // -17/315
  p = p * x2 + 0.133333333f;   // 2/15
  p = p * x2 - 0.333333333f;   // -1/3
  const F small = x.v + x.v * x2 * p;
  const F signed_big = x.v < 0.0f ? -big : big;
  return V::from(a < 0.3f ? small : signed_big);
}

// Double lanes use the C library per lane: float64 is for checking, not for speed.
inline cpu::FASTRNN_ISA::VecD sigmoid(cpu::FASTRNN_ISA::VecD x) {
  for (int i = 0; i < cpu::FASTRNN_ISA::kDoubleLanes; ++i) x.v[i] = 1.0 / (1.0 + std::exp(-x.v[i]));
  return x;
}

inline cpu::FASTRNN_ISA::VecD tanh(cpu::FASTRNN_ISA::VecD x) {
  for (int i = 0; i < cpu::FASTRNN_ISA::kDoubleLanes; ++i) x.v[i] = std::tanh(x.v[i]);
  return x;
}

template <class T, int W>
inline cpu::FASTRNN_ISA::Vec<T, W> relu(cpu::FASTRNN_ISA::Vec<T, W> x) {
  using V = cpu::FASTRNN_ISA::Vec<T, W>;
  // NaN stays NaN, like torch.relu.
  return V::from((x.v > T(0)) | (x.v != x.v) ? x.v : typename V::Native{});
}

template <class T, int W>
inline cpu::FASTRNN_ISA::Vec<T, W> relu_grad_mask(cpu::FASTRNN_ISA::Vec<T, W> y) {
  using V = cpu::FASTRNN_ISA::Vec<T, W>;
  return V::from(y.v <= T(0) ? typename V::Native{} : typename V::Native{} + T(1));
}

}  // namespace fastrnn::act
