// Accuracy and throughput of the float activations in csrc/cpu/vec.h (exp, sigmoid, tanh), for
// the ISA this file is built for (bench/kernels/run_lab.sh builds it per ISA). Accuracy: the
// largest error in float ulps against double precision over ~6.4M points spread across each
// function's range (relative steps of 3e-5 plus special values), and that NaN stays NaN; the
// run fails if an error passes its bound. Throughput: ns per vector with 8 independent chains.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "cpu/vec.h"

namespace {

using namespace fastrnn::cpu::FASTRNN_ISA;
using V = VecF;
typedef V::Native F;

double ulps(float got, double want) {
  const float w = static_cast<float>(want);
  double ulp = std::fabs(std::nextafter(w, INFINITY) - w);
  if (ulp == 0 || std::isinf(ulp)) ulp = 1.4e-45;
  return std::fabs(got - want) / ulp;
}

template <class Fn, class Ref>
void check(const char* name, Fn fn, Ref ref, float lo, float hi, double bound) {
  std::vector<float> xs;
  for (float x = lo; x < hi; x = std::nextafter(x, INFINITY) + std::fabs(x) * 3e-5f) {
    xs.push_back(x);
  }
  for (float x : {0.0f, -0.0f, 1e-30f, -1e-30f, 1e-45f, 3e-8f, -3e-8f, 0.3f, -0.3f}) {
    xs.push_back(x);
  }
  while (xs.size() % V::kWidth) xs.push_back(0.5f);
  double worst = 0;
  float at = 0;
  for (size_t i = 0; i < xs.size(); i += V::kWidth) {
    const F out = fn(V::load(&xs[i])).v;
    for (int l = 0; l < V::kWidth; ++l) {
      const double e = ulps(out[l], ref(static_cast<double>(xs[i + l])));
      if (e > worst) worst = e, at = xs[i + l];
    }
  }
  const bool nan_ok = std::isnan(fn(V(NAN)).v[0]);
  std::printf("%-8s on [%g, %g]: max %.2f ulp at %g (%zu points), NaN %s\n", name, lo, hi, worst,
              at, xs.size(), nan_ok ? "stays NaN" : "LOST");
  if (worst > bound || !nan_ok) {
    std::printf("%s: FAILED (bound %.1f ulp)\n", name, bound);
    std::exit(1);
  }
}

template <class Fn>
double ns_per_vector(Fn fn) {
  V acc[8];
  for (int i = 0; i < 8; ++i) acc[i] = V(0.1f * i - 0.3f);
  const int iters = 2000000;
  const auto t0 = std::chrono::steady_clock::now();
  for (int it = 0; it < iters; ++it)
    for (int i = 0; i < 8; ++i) acc[i] = fn(acc[i]) * V(0.5f) + V(0.1f);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  volatile float sink = acc[0].v[0] + acc[7].v[1];
  (void)sink;
  return s / (iters * 8.0) * 1e9;
}

}  // namespace

int main() {
  std::printf("ISA %s, %d-byte vectors\n", FASTRNN_ISA_NAME, FASTRNN_VEC_BYTES);
  auto exp_fn = [](V x) { return detail::exp(x); };
  auto sigmoid_fn = [](V x) { return fastrnn::act::sigmoid(x); };
  auto tanh_fn = [](V x) { return fastrnn::act::tanh(x); };
  check("exp", exp_fn, [](double x) { return std::exp(x); }, -87.0f, 88.0f, 2.0);
  check("sigmoid", sigmoid_fn, [](double x) { return 1 / (1 + std::exp(-x)); }, -80.0f, 80.0f, 3.0);
  check("tanh", tanh_fn, [](double x) { return std::tanh(x); }, -20.0f, 20.0f, 3.0);
  std::printf("ns per vector, 8 chains: exp %.2f, sigmoid %.2f, tanh %.2f\n",
              ns_per_vector(exp_fn), ns_per_vector(sigmoid_fn), ns_per_vector(tanh_fn));
  return 0;
}
