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

#if FASTRNN_VEC_BYTES == 64 || (FASTRNN_VEC_BYTES == 32 && defined(__F16C__))
#include <immintrin.h>  // the float16 conversion instruction (load_half)
#endif

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

// The bits of a bfloat16 value (torch.bfloat16's storage): the high half of a float32.
using Bf16Bits = uint16_t;
// The bits of an IEEE half (torch.float16's storage); a type of its own for overloads.
enum class Fp16Bits : uint16_t {};

namespace detail {

typedef int32_t IntLanes __attribute__((vector_size(FASTRNN_VEC_BYTES)));
inline VecF::Native as_float(IntLanes i) {
  VecF::Native f;
  std::memcpy(&f, &i, sizeof f);
  return f;
}
inline IntLanes as_int(VecF::Native f) {
  IntLanes i;
  std::memcpy(&i, &f, sizeof i);
  return i;
}

// v = n ln2 + r, n = round(v / ln2), |r| <= ln2/2, for |v| < 2^22 (callers clamp v). Adding
// 1.5 * 2^23 rounds v / ln2 to an integer in the low mantissa bits, which gives n as an int
// and as a float without conversions; ln2 is split in two so that r is exact.
inline void reduce_ln2(VecF::Native v, VecF::Native& r, IntLanes& n) {
  typedef VecF::Native F;
  const F shifter = F{} + 12582912.0f;
  const F t = v * 1.44269504088896341f + shifter;
  const F nf = t - shifter;
  n = as_int(t) - as_int(shifter);
  r = (v - nf * 0.693359375f) + nf * 2.12194440e-4f;
}

// e^r - 1 for |r| <= ln2/2 by its Taylor polynomial to r^7 (relative error below 2e-8),
// written r + r^2 q(r) so that it keeps its relative precision as r goes to 0.
inline VecF::Native expm1_reduced(VecF::Native r) {
  typedef VecF::Native F;
  F q = F{} + 1.98412698e-4f;  // 1/7!
  q = q * r + 1.38888889e-3f;
  q = q * r + 8.33333333e-3f;
  q = q * r + 4.16666667e-2f;
  q = q * r + 1.66666667e-1f;
  q = q * r + 0.5f;
  return r + (r * r) * q;
}

// e^x for float lanes: 2^n (1 + expm1(r)), 2^n by adding n to the exponent bits. x is clamped
// to [-87.3, 88.7], where 2^n stays a normal float; outside, e^x is below 1.2e-38 or overflows
// anyway, and callers (sigmoid) saturate correctly with the clamp. NaN stays NaN.
inline VecF exp(VecF x) {
  typedef VecF::Native F;
  F v = x.v;
  v = v < -87.3f ? F{} - 87.3f : v;
  v = v > 88.7f ? F{} + 88.7f : v;
  F r;
  IntLanes n;
  reduce_ln2(v, r, n);
  return VecF::from(as_float(as_int(1.0f + expm1_reduced(r)) + (n << 23)));
}

typedef uint16_t HalfLanes __attribute__((vector_size(FASTRNN_VEC_BYTES / 2)));
// kFloatLanes 16-bit values, each zero-extended into an int lane.
inline IntLanes load_halves(const void* p) {
  HalfLanes h;
  std::memcpy(&h, p, sizeof h);
  return __builtin_convertvector(h, IntLanes);
}

}  // namespace detail

// kFloatLanes bfloat16 values widened to float lanes: each one's bits shifted into the high half
// of a float, which is that value exactly.
inline VecF load_half(const Bf16Bits* p) {
  return VecF::from(detail::as_float(detail::load_halves(p) << 16));
}

// kFloatLanes IEEE halves widened to float lanes, exactly (every half is a float): by the
// conversion instruction where the ISA has one, else on the bits, with no float arithmetic but
// the exact scaling of a subnormal half (so that denormals-are-zero modes cannot touch it).
inline VecF load_half(const Fp16Bits* p) {
#if FASTRNN_VEC_BYTES == 64
  __m256i h;
  std::memcpy(&h, p, sizeof h);
  // All lanes by mask: the unmasked form's undefined pass-through draws a false
  // -Wmaybe-uninitialized from GCC 12.
  return VecF::from(_mm512_maskz_cvtph_ps(0xffff, h));
#elif FASTRNN_VEC_BYTES == 32 && defined(__F16C__)
  __m128i h;
  std::memcpy(&h, p, sizeof h);
  return VecF::from(_mm256_cvtph_ps(h));
#else
  using detail::IntLanes;
  const IntLanes bits = detail::load_halves(p);
  const IntLanes magnitude = bits & 0x7fff;
  // Normal: the exponent rebiased (15 -> 127); infinity and NaN: the exponent all ones, the
  // payload kept; subnormal and zero: magnitude * 2^-24, a normal float (or 0) exactly.
  const IntLanes normal = (magnitude << 13) + (112 << 23);
  const IntLanes special = (magnitude << 13) | 0x7f800000;
  const IntLanes tiny =
      detail::as_int(__builtin_convertvector(magnitude, VecF::Native) * 0x1p-24f);
  const IntLanes widened = magnitude >= 0x7c00 ? special : (magnitude >= 0x400 ? normal : tiny);
  return VecF::from(detail::as_float(widened | ((bits & 0x8000) << 16)));
#endif
}

}  // namespace fastrnn::cpu::FASTRNN_ISA

// Activations for the vector types, in the namespace the cells call (fastrnn::act).
namespace fastrnn::act {

inline cpu::FASTRNN_ISA::VecF sigmoid(cpu::FASTRNN_ISA::VecF x) {
  using V = cpu::FASTRNN_ISA::VecF;
  return V(1.0f) / (V(1.0f) + cpu::FASTRNN_ISA::detail::exp(V(0.0f) - x));
}

// tanh(x) = sign(x) * -m / (2 + m) with m = e^{-2|x|} - 1 in (-1, 0]: no cancellation near 0
// (m is computed as 2^n expm1(r) + (2^n - 1), exact scaling and an exact 2^n - 1), and it
// saturates to +-1 as m goes to -1. Within 2.5 float ulps on every ISA (checked against double
// on 6.4M points in [-20, 20]); NaN stays NaN. It replaced a Taylor polynomial below 0.3 and
// 1 - 2 / (e^2|x| + 1) above, both computed and blended (with exp's rounding done by compare,
// select and two conversions): GRU steps at B = 16, H = 128 4.8% faster, LSTM and GRU forwards
// at 100x16x256x256 1.8-2.6% (bench/kernels/NOTES.md, session 9).
inline cpu::FASTRNN_ISA::VecF tanh(cpu::FASTRNN_ISA::VecF x) {
  namespace d = cpu::FASTRNN_ISA::detail;
  using V = cpu::FASTRNN_ISA::VecF;
  typedef V::Native F;
  const d::IntLanes sign_bit = d::IntLanes{} + INT32_MIN;
  F v = d::as_float(d::as_int(x.v) & ~sign_bit) * -2.0f;
  v = v < -87.3f ? F{} - 87.3f : v;
  F r;
  d::IntLanes n;
  d::reduce_ln2(v, r, n);
  const F scale = d::as_float((n + 127) << 23);  // 2^n, n <= 0
  const F m = scale * d::expm1_reduced(r) + (scale - 1.0f);
  // -m / (2 + m) with x's sign: flip the sign bit of m / (2 + m) <= 0 unless x is negative.
  const d::IntLanes flip = (d::as_int(x.v) & sign_bit) ^ sign_bit;
  return V::from(d::as_float(d::as_int(m / (2.0f + m)) ^ flip));
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
