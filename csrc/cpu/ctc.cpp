// CTC loss on the CPU: per batch element, log-space alpha (forward) and beta (backward) recursions
// over the extended label sequence, the gradient computed row by row during the beta pass.
// Batch elements are spread over the thread pool (cpu/threads.h); each element is computed by
// exactly one thread with the same code, so results do not depend on the thread count.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>
#include <numeric>

#include "cpu/isa.h"
#include "cpu/threads.h"
#include "fastrnn/ctc.h"

#define FASTRNN_CTC_ISA ctc_generic
#include "cpu/ctc_kernels.h"

namespace fastrnn {

namespace cpu {
namespace {

// The loops of the active instruction set (cpu/isa.h: the best supported, capped by
// FASTRNN_CPU_ISA or set_isa). AVX-512 runs the AVX2 build: the loops are latency-bound gathers and
// exp/log chains of a few hundred positions, where wider vectors gain little.
template <class V>
const CtcKernels<V>& select_kernels() {
  static const CtcKernels<V> generic_table = ctc_generic::make_kernels<V>();
#if defined(FASTRNN_X86_ISAS)
  if (active_isa() != Isa::Generic) {
    if constexpr (sizeof(V) == 4) {
      return ctc_kernels_avx2_f32();
    } else {
      return ctc_kernels_avx2_f64();
    }
  }
#endif
  return generic_table;
}

constexpr int64_t kAlign = 64;
int64_t align_up(int64_t bytes) { return (bytes + kAlign - 1) / kAlign * kAlign; }

// Scratch of one thread, carved from the caller's workspace. Rows have two -inf pads each side.
template <class V>
struct Scratch {
  V* row_a;    // [L + 4], use row_a + 2
  V* row_b;    // [L + 4]
  V* e;        // [L] emissions of the current step
  V* skip;     // [L + 2] 0 or -inf (see ctc_kernels.h)
  V* gamma;    // [L] occupancies of the current step
  int32_t* ext;    // [L] class of each extended position
  // The label positions sorted by (label, k), i.e. the segments of equal labels, [S] each:
  int32_t* seg_pos;    // extended position 2k+1
  int32_t* seg_label;  // its label
  int32_t* seg_head;   // 1 where a segment starts

  static int64_t bytes(const CtcDesc& d) {
    const int64_t L = d.ext_len();
    return align_up((L + 4) * int64_t(sizeof(V))) * 2 + align_up(L * int64_t(sizeof(V))) * 2 +
           align_up((L + 2) * int64_t(sizeof(V))) + align_up(L * 4) +
           3 * align_up(d.max_target * 4);
  }

  Scratch(const CtcDesc& d, void* workspace, int64_t thread) {
    const int64_t L = d.ext_len();
    char* p = static_cast<char*>(workspace) + thread * bytes(d);
    auto take = [&p](int64_t n) {
      char* q = p;
      p += align_up(n);
      return q;
    };
    row_a = reinterpret_cast<V*>(take((L + 4) * int64_t(sizeof(V))));
    row_b = reinterpret_cast<V*>(take((L + 4) * int64_t(sizeof(V))));
    e = reinterpret_cast<V*>(take(L * int64_t(sizeof(V))));
    gamma = reinterpret_cast<V*>(take(L * int64_t(sizeof(V))));
    skip = reinterpret_cast<V*>(take((L + 2) * int64_t(sizeof(V))));
    ext = reinterpret_cast<int32_t*>(take(L * 4));
    seg_pos = reinterpret_cast<int32_t*>(take(d.max_target * 4));
    seg_label = reinterpret_cast<int32_t*>(take(d.max_target * 4));
    seg_head = reinterpret_cast<int32_t*>(take(d.max_target * 4));
  }
};

// Everything about one batch element that both passes need.
template <class V>
struct Element {
  int64_t T_b, S_b, L_b;
  const int64_t* labels;

  Element(const int64_t* targets, const int64_t* offsets, const int64_t* input_lengths,
          const int64_t* target_lengths, int64_t b)
      : T_b(input_lengths[b]), S_b(target_lengths[b]), L_b(2 * target_lengths[b] + 1),
        labels(targets + offsets[b]) {}

  // Positions of the extended sequence that can lie on a complete path at step t: at most 2t+2
  // positions are reached from the start, and each remaining step advances at most 2 positions.
  int64_t lo(int64_t t) const { return std::max<int64_t>(0, L_b - 2 * (T_b - t)); }
  int64_t hi(int64_t t) const { return std::min<int64_t>(L_b, 2 * t + 2); }

  void fill_ext_and_skip(const CtcDesc& d, Scratch<V>& w) const {
    const V ninf = -std::numeric_limits<V>::infinity();
    for (int64_t s = 0; s < L_b; ++s)
      w.ext[s] = s % 2 ? static_cast<int32_t>(labels[s / 2]) : static_cast<int32_t>(d.blank);
    for (int64_t s = 0; s < L_b + 2; ++s)
      w.skip[s] = (s % 2 == 1 && s >= 3 && s < L_b && w.ext[s] != w.ext[s - 2]) ? V(0) : ninf;
  }

  void sort_labels(Scratch<V>& w) const {
    int32_t* k = w.seg_pos;  // first the positions k, sorted, then turned into 2k+1
    std::iota(k, k + S_b, 0);
    std::stable_sort(k, k + S_b, [this](int32_t i, int32_t j) { return labels[i] < labels[j]; });
    for (int64_t j = 0; j < S_b; ++j) {
      w.seg_label[j] = static_cast<int32_t>(labels[k[j]]);
      w.seg_head[j] = j == 0 || w.seg_label[j] != w.seg_label[j - 1];
      k[j] = 2 * k[j] + 1;
    }
  }

  // -log p(target | input) from the last alpha row (identical in forward and backward).
  V nll(const CtcKernels<V>& k, const V* alpha_last) const {
    const V ninf = -std::numeric_limits<V>::infinity();
    return -k.scalar_logsumexp3(alpha_last[L_b - 1], L_b >= 2 ? alpha_last[L_b - 2] : ninf, ninf);
  }
  V nll_empty_input() const { return S_b == 0 ? V(0) : std::numeric_limits<V>::infinity(); }
};

// Runs f(b, thread) for every b in [0, B) on min(num_threads, B) threads of the pool.
template <class F>
void for_each_element(int64_t B, int64_t num_threads, const F& f) {
  const int n = static_cast<int>(std::max<int64_t>(1, std::min(num_threads, B)));
  // Dynamic assignment balances unequal lengths; which thread takes b never changes its result.
  std::atomic<int64_t> next{0};
  parallel(n, [&](int tid, int) {
    for (int64_t b = next.fetch_add(1); b < B; b = next.fetch_add(1)) f(b, tid);
  });
}

void check_elements(const CtcDesc& d, const int64_t* targets, const int64_t* offsets,
                    const int64_t* input_lengths, const int64_t* target_lengths) {
  FASTRNN_CHECK(d.batch == 0 || (offsets && input_lengths && target_lengths),
                "ctc: missing length or offset array");
  for (int64_t b = 0; b < d.batch; ++b) {
    FASTRNN_CHECK(input_lengths[b] >= 0 && input_lengths[b] <= d.max_time,
                  "ctc: input length out of range");
    FASTRNN_CHECK(target_lengths[b] >= 0 && target_lengths[b] <= d.max_target,
                  "ctc: target length out of range");
    FASTRNN_CHECK(offsets[b] >= 0 && offsets[b] + target_lengths[b] <= d.targets_size,
                  "ctc: target offset out of range");
    for (int64_t k = 0; k < target_lengths[b]; ++k) {
      const int64_t label = targets[offsets[b] + k];
      FASTRNN_CHECK(label >= 0 && label < d.num_classes && label != d.blank,
                    "ctc: target label out of range or equal to blank");
    }
  }
}

template <class V>
void forward_impl(const CtcDesc& d, const CtcForwardArgs& a, int64_t num_threads) {
  const CtcKernels<V>& k = select_kernels<V>();
  const V ninf = -std::numeric_limits<V>::infinity();
  const int64_t T = d.max_time, B = d.batch, C = d.num_classes, L = d.ext_len();
  const V* x = static_cast<const V*>(a.input);
  V* loss = static_cast<V*>(a.loss);
  V* log_alpha = static_cast<V*>(a.log_alpha);
  V* row_lse = static_cast<V*>(a.row_lse);

  for_each_element(B, num_threads, [&](int64_t b, int64_t thread) {
    Scratch<V> w(d, a.workspace, thread);
    const Element<V> el(a.targets, a.target_offsets, a.input_lengths, a.target_lengths, b);
    if (d.from_logits) {
      for (int64_t t = 0; t < T; ++t)
        row_lse[t * B + b] = t < el.T_b ? k.row_logsumexp(x + (t * B + b) * C, C) : V(0);
    }
    el.fill_ext_and_skip(d, w);
    V* alpha = log_alpha ? log_alpha + b * T * L : nullptr;
    if (alpha) std::fill(alpha + el.T_b * L, alpha + T * L, ninf);
    V* prev = w.row_a + 2;
    V* cur = w.row_b + 2;
    for (int64_t t = 0; t < el.T_b; ++t) {
      const int64_t lo = el.lo(t), hi = el.hi(t);
      std::fill(cur - 2, cur + el.L_b + 2, ninf);
      if (lo < hi) {
        const V shift = d.from_logits ? row_lse[t * B + b] : V(0);
        k.emissions(x + (t * B + b) * C, shift, w.ext, lo, hi, w.e);
        if (t == 0) {
          std::copy(w.e + lo, w.e + hi, cur + lo);
        } else {
          k.alpha_step(prev, cur, w.e, w.skip, lo, hi);
        }
      }
      if (alpha) {  // cur is -inf outside [lo, hi), so one pass writes the whole row
        std::copy(cur, cur + el.L_b, alpha + t * L);
        std::fill(alpha + t * L + el.L_b, alpha + (t + 1) * L, ninf);
      }
      std::swap(prev, cur);
    }
    // prev holds row T_b - 1, the values stored in log_alpha that backward reads back.
    const V nll = el.T_b == 0 ? el.nll_empty_input() : el.nll(k, prev);
    loss[b] = (a.zero_infinity && std::isinf(nll)) ? V(0) : nll;
  });
}

template <class V>
void backward_impl(const CtcDesc& d, const CtcBackwardArgs& a, int64_t num_threads) {
  const CtcKernels<V>& k = select_kernels<V>();
  const V ninf = -std::numeric_limits<V>::infinity();
  const int64_t T = d.max_time, B = d.batch, C = d.num_classes, L = d.ext_len();
  const V* x = static_cast<const V*>(a.input);
  const V* log_alpha = static_cast<const V*>(a.log_alpha);
  const V* row_lse = static_cast<const V*>(a.row_lse);
  const V* grad_loss = static_cast<const V*>(a.grad_loss);
  V* grad = static_cast<V*>(a.grad_input);

  for_each_element(B, num_threads, [&](int64_t b, int64_t thread) {
    Scratch<V> w(d, a.workspace, thread);
    const Element<V> el(a.targets, a.target_offsets, a.input_lengths, a.target_lengths, b);
    const V* alpha = log_alpha + b * T * L;
    const V nll = el.T_b == 0 ? el.nll_empty_input() : el.nll(k, alpha + (el.T_b - 1) * L);
    // No alignment: zero gradient (torch gives NaN here unless zero_infinity).
    const int64_t active = std::isinf(nll) ? 0 : el.T_b;
    for (int64_t t = active; t < T; ++t) std::fill_n(grad + (t * B + b) * C, C, V(0));
    if (active == 0) return;
    if (std::isnan(nll)) {  // a NaN input on a path: the whole gradient is NaN, as torch's is
      for (int64_t t = 0; t < active; ++t) {
        std::fill_n(grad + (t * B + b) * C, C, std::numeric_limits<V>::quiet_NaN());
      }
      return;
    }

    el.fill_ext_and_skip(d, w);
    el.sort_labels(w);
    const V gout = grad_loss[b];
    V* next = w.row_a + 2;  // beta_{t+1}
    V* cur = w.row_b + 2;   // beta_t
    for (int64_t t = el.T_b - 1; t >= 0; --t) {
      const int64_t lo = el.lo(t), hi = el.hi(t);
      const V shift = d.from_logits ? row_lse[t * B + b] : V(0);
      const V* row = x + (t * B + b) * C;
      std::fill(cur - 2, cur + el.L_b + 2, ninf);
      k.emissions(row, shift, w.ext, lo, hi, w.e);
      k.beta_step_occupancy(next, cur, w.e, w.skip, t == el.T_b - 1, alpha + t * L, nll, lo, hi,
                            w.gamma);
      std::fill(w.gamma, w.gamma + lo, V(0));
      std::fill(w.gamma + hi, w.gamma + el.L_b, V(0));

      // Every class gets gout * exp(lp); the classes of the extended sequence then subtract their
      // occupancy, summed over their positions in a fixed order (a segmented reduction by label).
      V* g = grad + (t * B + b) * C;
      k.scaled_exp(row, shift, gout, C, g);
      V blank_occ = V(0);
      for (int64_t s = lo + (lo % 2); s < hi; s += 2) blank_occ += w.gamma[s];
      g[d.blank] -= gout * blank_occ;
      // One branch-free pass over the sorted positions: run is the segment's running sum, base the
      // class's value before its segment; the segment's last write leaves base - gout * sum.
      V run = V(0), base = V(0);
      for (int64_t j = 0; j < el.S_b; ++j) {
        const bool head = w.seg_head[j];
        V& gc = g[w.seg_label[j]];
        run = (head ? V(0) : run) + w.gamma[w.seg_pos[j]];
        base = head ? gc : base;
        gc = base - gout * run;
      }
      std::swap(next, cur);
    }
  });
}

void check_common(const CtcDesc& d, DType dtype, int64_t num_threads, const void* input,
                  const int64_t* targets, const int64_t* offsets, const int64_t* input_lengths,
                  const int64_t* target_lengths, const void* workspace) {
  d.validate();
  FASTRNN_CHECK(dtype == DType::Float32 || dtype == DType::Float64, "ctc: unsupported dtype");
  FASTRNN_CHECK(num_threads >= 1, "ctc: num_threads must be >= 1");
  FASTRNN_CHECK(d.batch == 0 || d.max_time == 0 || input, "ctc: missing input");
  FASTRNN_CHECK(d.batch == 0 || workspace, "ctc: missing workspace");
  FASTRNN_CHECK(d.targets_size == 0 || targets, "ctc: missing targets");
  check_elements(d, targets, offsets, input_lengths, target_lengths);
}

}  // namespace
}  // namespace cpu

int64_t ctc_cpu_workspace_bytes(const CtcDesc& desc, DType dtype, int64_t num_threads) {
  desc.validate();
  const int64_t threads = std::max<int64_t>(1, std::min(num_threads, desc.batch));
  const int64_t per_thread = dtype == DType::Float32 ? cpu::Scratch<float>::bytes(desc)
                                                     : cpu::Scratch<double>::bytes(desc);
  return threads * per_thread;
}

void ctc_forward_cpu(const CtcDesc& desc, DType dtype, const CtcForwardArgs& args,
                     int64_t num_threads) {
  cpu::check_common(desc, dtype, num_threads, args.input, args.targets, args.target_offsets,
               args.input_lengths, args.target_lengths, args.workspace);
  FASTRNN_CHECK(desc.batch == 0 || args.loss, "ctc: missing loss");
  // Buffers of T*B or B*T*L values are empty, and may be null, when T or B is 0.
  FASTRNN_CHECK(!desc.from_logits || desc.batch == 0 || desc.max_time == 0 || args.row_lse,
                "ctc: missing row_lse");
  if (dtype == DType::Float32) {
    cpu::forward_impl<float>(desc, args, num_threads);
  } else {
    cpu::forward_impl<double>(desc, args, num_threads);
  }
}

void ctc_backward_cpu(const CtcDesc& desc, DType dtype, const CtcBackwardArgs& args,
                      int64_t num_threads) {
  cpu::check_common(desc, dtype, num_threads, args.input, args.targets, args.target_offsets,
               args.input_lengths, args.target_lengths, args.workspace);
  FASTRNN_CHECK(desc.batch == 0 || args.grad_loss, "ctc: missing grad_loss");
  // Buffers of T*B or B*T*L values are empty, and may be null, when T or B is 0.
  FASTRNN_CHECK(desc.batch == 0 || desc.max_time == 0 || (args.log_alpha && args.grad_input),
                "ctc: missing buffer");
  FASTRNN_CHECK(!desc.from_logits || desc.batch == 0 || desc.max_time == 0 || args.row_lse,
                "ctc: missing row_lse");
  if (dtype == DType::Float32) {
    cpu::backward_impl<float>(desc, args, num_threads);
  } else {
    cpu::backward_impl<double>(desc, args, num_threads);
  }
}

}  // namespace fastrnn
