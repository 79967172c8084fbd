// CTC inner loops, compiled once per instruction set: each including translation unit defines
// FASTRNN_CTC_ISA (a namespace of its own, ctc_<isa>, apart from the RNN kernels' namespaces) and
// is compiled with that ISA's flags. Everything here lives in that namespace and uses no
// standard-library templates, so no code compiled for a wider ISA can be shared with (and leak
// into) the baseline build through the linker.
//
// The loops run over the extended label positions s (or the classes c) of one batch element at
// one step; they are branch-free so that the compiler vectorizes them. exp and log are our own
// vectorizable versions, accurate to a few ulp: the standard ones are calls the compiler keeps
// scalar, and they dominate the cost.
//
// Row conventions: alpha/beta rows are indexed by s in [0, L_b) and readable at s in [-2, L_b + 2)
// (the caller keeps two -inf pads on each side); skip[s] is 0 where the transition s-2 -> s is
// allowed (s odd, s >= 3, l'_s != l'_{s-2}) and -inf elsewhere, readable at s in [0, L_b + 2).
#pragma once

#include <cstdint>

#include "cpu/ctc_table.h"

#ifndef FASTRNN_CTC_ISA
#error "define FASTRNN_CTC_ISA before including ctc_kernels.h"
#endif

namespace fastrnn::cpu::FASTRNN_CTC_ISA {

template <class V>
struct Bits;
// Integer arithmetic is unsigned (logical shifts and wrapping adds vectorize on AVX2 for 64-bit
// lanes, arithmetic shifts and int64 <-> double conversions do not).
template <>
struct Bits<float> {
  using I = uint32_t;
  static constexpr int mantissa = 23;
  static constexpr I bias = 127;
  static constexpr float round_magic = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
  static constexpr float exp_lo = -87.0f;            // below: flushed to 0 (2^-126 is the edge)
  static constexpr float exp_hi = 88.0f;
};
template <>
struct Bits<double> {
  using I = uint64_t;
  static constexpr int mantissa = 52;
  static constexpr I bias = 1023;
  static constexpr double round_magic = 6755399441055744.0;  // 1.5 * 2^52
  static constexpr double exp_lo = -708.0;
  static constexpr double exp_hi = 709.0;
};

template <class To, class From>
inline To bit_cast(From x) {
  return __builtin_bit_cast(To, x);
}

template <class V>
inline V vmax(V a, V b) {
  return a > b ? a : b;
}
template <class V>
inline V vmin(V a, V b) {
  return a < b ? a : b;
}
template <class V>
constexpr V neg_inf() {
  return -__builtin_huge_val();
}

// exp(x): x = n ln2 + r with |r| <= ln2/2, exp(r) by a polynomial (float: Cephes' minimax fit,
// about 1 ulp; double: Taylor of degree 13, below half an ulp of truncation error), 2^n built in
// the exponent bits. exp(-inf) = 0, NaN propagates.
template <class V>
inline V vexp(V x) {
  using B = Bits<V>;
  using I = typename B::I;
  const V xc = vmin(vmax(x, B::exp_lo), B::exp_hi);
  const V shifted = xc * V(1.4426950408889634) + B::round_magic;
  const V n = shifted - B::round_magic;
  const V r = (xc - n * V(0.693145751953125)) - n * V(1.4286068203094172321e-6);
  V p;
  if constexpr (sizeof(V) == 4) {
    V q = V(1.9875691500e-4f);
    q = q * r + V(1.3981999507e-3f);
    q = q * r + V(8.3334519073e-3f);
    q = q * r + V(4.1665795894e-2f);
    q = q * r + V(1.6666665459e-1f);
    q = q * r + V(5.0000001201e-1f);
    p = q * (r * r) + r + V(1);
  } else {
    p = V(1);
    for (int k = 13; k >= 1; --k) p = V(1) + p * r * (V(1) / V(k));
  }
  const I ni = bit_cast<I>(shifted) - bit_cast<I>(B::round_magic);
  const V scale = bit_cast<V>(static_cast<I>((ni + B::bias) << B::mantissa));
  const V y = p * scale;
  return x < B::exp_lo ? V(0) : (x != x ? x : y);
}

// log(x) for x = 0 or a normal number (every caller passes a sum >= 1, or 0): x = 2^e m with
// m in [sqrt(1/2), sqrt(2)), log(m) = 2 atanh(f), f = (m-1)/(m+1), by its odd series.
// log(0) = -inf, NaN propagates.
template <class V>
inline V vlog(V x) {
  using B = Bits<V>;
  using I = typename B::I;
  const I bits = bit_cast<I>(x);
  const I mant_mask = (I(1) << B::mantissa) - 1;
  I e = bits >> B::mantissa;  // biased exponent, sign bit clear
  V m = bit_cast<V>(static_cast<I>((bits & mant_mask) | (B::bias << B::mantissa)));
  const bool big = m > V(1.4142135623730951);
  m = big ? m * V(0.5) : m;
  e = big ? e + 1 : e;
  // e - bias as a floating value, without an integer conversion: via the rounding constant.
  const V ev =
      bit_cast<V>(static_cast<I>(e - B::bias + bit_cast<I>(B::round_magic))) - B::round_magic;
  const V f = (m - V(1)) / (m + V(1));
  const V z = f * f;
  constexpr int terms = sizeof(V) == 4 ? 5 : 12;
  V series = V(0);
  for (int k = terms - 1; k >= 0; --k) series = V(1) / V(2 * k + 1) + z * series;
  const V y = ev * V(0.693145751953125) + (ev * V(1.4286068203094172321e-6) + V(2) * f * series);
  return x == V(0) ? neg_inf<V>() : (x != x ? x : y);
}

// log(exp(x) + exp(y) + exp(z)), -inf when all three are -inf, NaN when any is NaN (as torch's
// CTC gives). The largest term contributes exactly 1, so only the other two need an exp (found by
// a min/max network, no branches); that network drops NaNs, so they are caught apart.
template <class V>
inline V logsumexp3(V x, V y, V z) {
  const V hi_xy = vmax(x, y), lo_xy = vmin(x, y);
  const V m = vmax(hi_xy, z);
  const V mid = vmin(hi_xy, z);
  const V mm = m == neg_inf<V>() ? V(0) : m;
  const V r = mm + vlog(V(1) + vexp(mid - mm) + vexp(lo_xy - mm));
  const bool any_nan = (x != x) | (y != y) | (z != z);
  return any_nan ? x + y + z : (m == neg_inf<V>() ? m : r);
}

// e[s] = row[ext[s]] - shift for s in [lo, hi).
template <class V>
void emissions(const V* __restrict row, V shift, const int32_t* __restrict ext, int64_t lo,
               int64_t hi, V* __restrict e) {
  for (int64_t s = lo; s < hi; ++s) e[s] = row[ext[s]] - shift;
}

// One alpha step over s in [lo, hi): alpha_t(s) = e[s] + logsumexp(alpha_{t-1}(s),
// alpha_{t-1}(s-1), alpha_{t-1}(s-2) + skip[s]).
template <class V>
void alpha_step(const V* __restrict prev, V* __restrict cur, const V* __restrict e,
                const V* __restrict skip, int64_t lo, int64_t hi) {
  for (int64_t s = lo; s < hi; ++s) {
    cur[s] = e[s] + logsumexp3(prev[s], prev[s - 1], prev[s - 2] + skip[s]);
  }
}

// One beta step fused with the occupancies it allows: beta_t(s) = e[s] + logsumexp(beta_{t+1}(s),
// beta_{t+1}(s+1), beta_{t+1}(s+2) + skip[s+2]), or e[s] alone on the last step (Last), and
// gamma[s] = exp(alpha[s] + beta_t(s) + nll - e[s]): the posterior probability of passing through s
// at this step, 0 where alpha + beta = -inf (also when e[s] = -inf).
template <class V, bool Last>
void beta_occupancy_loop(const V* __restrict next, V* __restrict cur, const V* __restrict e,
                         const V* __restrict skip, const V* __restrict alpha, V nll, int64_t lo,
                         int64_t hi, V* __restrict gamma) {
  for (int64_t s = lo; s < hi; ++s) {
    const V beta =
        Last ? e[s] : e[s] + logsumexp3(next[s], next[s + 1], next[s + 2] + skip[s + 2]);
    cur[s] = beta;
    const V ab = alpha[s] + beta;
    gamma[s] = ab == neg_inf<V>() ? V(0) : vexp(ab + nll - e[s]);
  }
}

template <class V>
void beta_step_occupancy(const V* next, V* cur, const V* e, const V* skip, bool last,
                         const V* alpha, V nll, int64_t lo, int64_t hi, V* gamma) {
  // Two instantiations: a run-time flag inside the loop keeps GCC from vectorizing it.
  if (last) {
    beta_occupancy_loop<V, true>(next, cur, e, skip, alpha, nll, lo, hi, gamma);
  } else {
    beta_occupancy_loop<V, false>(next, cur, e, skip, alpha, nll, lo, hi, gamma);
  }
}

// out[c] = scale * exp(x[c] - shift) for c in [0, n).
template <class V>
void scaled_exp(const V* __restrict x, V shift, V scale, int64_t n, V* __restrict out) {
  for (int64_t c = 0; c < n; ++c) out[c] = scale * vexp(x[c] - shift);
}

// log(sum_c exp(x[c])) over c in [0, n), n >= 1. The reductions keep Lanes partial results
// (combined in a fixed order) so that they vectorize without reassociating floating-point sums.
template <class V>
V row_logsumexp(const V* __restrict x, int64_t n) {
  constexpr int64_t Lanes = 16;
  const int64_t body = n - n % Lanes;
  V m = x[0];
  {
    V part[Lanes];
    for (int64_t j = 0; j < Lanes; ++j) part[j] = m;
    for (int64_t c = 0; c < body; c += Lanes)
      for (int64_t j = 0; j < Lanes; ++j) part[j] = vmax(part[j], x[c + j]);
    for (int64_t j = 0; j < Lanes; ++j) m = vmax(m, part[j]);
    for (int64_t c = body; c < n; ++c) m = vmax(m, x[c]);
  }
  const V mm = m == neg_inf<V>() ? V(0) : m;
  V part[Lanes] = {};
  for (int64_t c = 0; c < body; c += Lanes)
    for (int64_t j = 0; j < Lanes; ++j) part[j] += vexp(x[c + j] - mm);
  V sum = V(0);
  for (int64_t j = 0; j < Lanes; ++j) sum += part[j];
  for (int64_t c = body; c < n; ++c) sum += vexp(x[c] - mm);
  return mm + vlog(sum);
}

template <class V>
CtcKernels<V> make_kernels() {
  CtcKernels<V> k;
  k.emissions = &emissions<V>;
  k.alpha_step = &alpha_step<V>;
  k.beta_step_occupancy = &beta_step_occupancy<V>;
  k.scaled_exp = &scaled_exp<V>;
  k.row_logsumexp = &row_logsumexp<V>;
  k.scalar_logsumexp3 = &logsumexp3<V>;
  return k;
}

}  // namespace fastrnn::cpu::FASTRNN_CTC_ISA
