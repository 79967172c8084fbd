// CTC loss on CUDA: one thread block per batch element, threads over the extended label positions
// s (recursions) or the classes c (gradient rows), one __syncthreads per step. The two rows of the
// recursion (and, in backward, the occupancies and the label chains) live in shared memory when
// they fit and in the caller's workspace otherwise; the same kernel serves both through pointers.
// The gradient's reduction over equal labels follows per-label chains in a fixed order and the
// blank's by a fixed tree, so results are deterministic (no atomics).
#include <cmath>
#include <cstdint>

#include "check.cuh"
#include "fastrnn/ctc.h"

namespace fastrnn {
namespace {

constexpr int kThreads = 256;
// Dynamic shared memory used without opt-in (48 KiB per block, less the reduction buffer).
constexpr int64_t kSharedLimit = 40 * 1024;

__device__ __forceinline__ float dexp(float x) { return expf(x); }
__device__ __forceinline__ double dexp(double x) { return exp(x); }
__device__ __forceinline__ float dlog(float x) { return logf(x); }
__device__ __forceinline__ double dlog(double x) { return log(x); }

template <class V>
__device__ __forceinline__ V ninf() {
  return V(-INFINITY);
}

// log(exp(x) + exp(y) + exp(z)), -inf when all are -inf, NaN when any is NaN (as torch's CTC
// gives; fmax alone would drop it).
template <class V>
__device__ __forceinline__ V logsumexp3(V x, V y, V z) {
  if (isnan(x) || isnan(y) || isnan(z)) return x + y + z;
  const V m = fmax(fmax(x, y), z);
  if (m == ninf<V>()) return m;
  return m + dlog(dexp(x - m) + dexp(y - m) + dexp(z - m));
}

// Reduces one value per thread over the block in a fixed tree order; every thread gets the result.
template <class V, class Op>
__device__ V block_reduce(V v, V* red, Op op) {
  red[threadIdx.x] = v;
  __syncthreads();
  for (int half = kThreads / 2; half > 0; half /= 2) {
    if (threadIdx.x < half) red[threadIdx.x] = op(red[threadIdx.x], red[threadIdx.x + half]);
    __syncthreads();
  }
  const V result = red[0];
  __syncthreads();  // red is reused by the next reduction
  return result;
}

struct Sum {
  template <class V>
  __device__ V operator()(V a, V b) const { return a + b; }
};
struct Max {
  template <class V>
  __device__ V operator()(V a, V b) const { return fmax(a, b); }
};

struct Problem {
  int64_t T, B, C, S, L, blank, targets_size;
  bool from_logits;
  const int64_t* targets;
  const int64_t* offsets;
  const int64_t* input_lengths;
  const int64_t* target_lengths;
};

// One batch element as seen by its block.
struct Element {
  int64_t T_b, S_b, L_b;
  const int64_t* labels;
  bool valid;

  __device__ Element(const Problem& p, int64_t b) {
    T_b = p.input_lengths[b];
    S_b = p.target_lengths[b];
    const int64_t offset = p.offsets[b];
    bool ok = T_b >= 0 && T_b <= p.T && S_b >= 0 && S_b <= p.S && offset >= 0 &&
              offset + S_b <= p.targets_size;
    labels = p.targets + (ok ? offset : 0);
    int bad = 0;
    if (ok) {
      for (int64_t k = threadIdx.x; k < S_b; k += kThreads) {
        const int64_t label = labels[k];
        bad |= label < 0 || label >= p.C || label == p.blank;
      }
    }
    valid = ok && !__syncthreads_or(bad);
    L_b = valid ? 2 * S_b + 1 : 1;
  }

  __device__ int64_t lo(int64_t t) const { return max(int64_t(0), L_b - 2 * (T_b - t)); }
  __device__ int64_t hi(int64_t t) const { return min(L_b, 2 * t + 2); }
  __device__ int64_t ext(int64_t s, int64_t blank) const { return s % 2 ? labels[s / 2] : blank; }
  // 0 where the transition s-2 -> s is allowed, -inf elsewhere (also for s >= L_b).
  template <class V>
  __device__ V skip(int64_t s) const {
    return (s % 2 == 1 && s >= 3 && s < L_b && labels[s / 2] != labels[s / 2 - 1]) ? V(0)
                                                                                    : ninf<V>();
  }
  template <class V>
  __device__ V nll(const V* alpha_last) const {
    if (T_b == 0) return S_b == 0 ? V(0) : V(INFINITY);
    return -logsumexp3(alpha_last[L_b - 1], L_b >= 2 ? alpha_last[L_b - 2] : ninf<V>(),
                       ninf<V>());
  }
};

// Scratch of one block: two rows of L + 4 values (two -inf pads each side), L occupancies,
// then 2*S int32 (next position with the same label, and whether a position heads its chain).
template <class V>
struct Scratch {
  static __host__ __device__ int64_t bytes(int64_t L, int64_t S) {
    const int64_t values = (2 * (L + 4) + L) * int64_t(sizeof(V));
    return (values + 15) / 16 * 16 + 2 * S * 4;
  }
  V* row_a;
  V* row_b;
  V* gamma;
  int32_t* next_same;
  int32_t* is_head;
  __device__ Scratch(char* base, int64_t L) {
    row_a = reinterpret_cast<V*>(base) + 2;
    row_b = row_a + L + 4;
    gamma = row_b + L + 2;
    const int64_t values = (2 * (L + 4) + L) * int64_t(sizeof(V));
    next_same = reinterpret_cast<int32_t*>(base + (values + 15) / 16 * 16);
    is_head = next_same + (L - 1) / 2;
  }
};

template <class V>
__device__ char* block_scratch(char* workspace, const Problem& p, bool shared) {
  extern __shared__ __align__(16) unsigned char smem[];
  return shared ? reinterpret_cast<char*>(smem)
                : workspace + blockIdx.x * Scratch<V>::bytes(p.L, p.S);
}

template <class V>
__global__ void __launch_bounds__(kThreads)
    ctc_forward_kernel(Problem p, const V* __restrict__ x, bool zero_infinity, V* loss,
                       V* log_alpha, V* row_lse, char* workspace, bool shared) {
  __shared__ V red[kThreads];
  const int64_t b = blockIdx.x;
  const Element el(p, b);
  V* alpha = log_alpha ? log_alpha + b * p.T * p.L : nullptr;  // null: loss only
  if (alpha) {
    for (int64_t i = threadIdx.x; i < p.T * p.L; i += kThreads) alpha[i] = ninf<V>();
  }
  if (p.from_logits) {
    for (int64_t t = 0; t < p.T; ++t) {
      V lse = V(0);
      if (el.valid && t < el.T_b) {
        const V* row = x + (t * p.B + b) * p.C;
        V m = ninf<V>();
        for (int64_t c = threadIdx.x; c < p.C; c += kThreads) m = fmax(m, row[c]);
        m = block_reduce(m, red, Max());
        const V mm = m == ninf<V>() ? V(0) : m;
        V sum = V(0);
        for (int64_t c = threadIdx.x; c < p.C; c += kThreads) sum += dexp(row[c] - mm);
        lse = mm + dlog(block_reduce(sum, red, Sum()));
      }
      if (threadIdx.x == 0) row_lse[t * p.B + b] = lse;
    }
  }
  if (!el.valid) {
    if (threadIdx.x == 0) loss[b] = V(NAN);
    return;
  }
  Scratch<V> w(block_scratch<V>(workspace, p, shared), p.L);
  V* prev = w.row_a;
  V* cur = w.row_b;
  for (int64_t s = int64_t(threadIdx.x) - 2; s < el.L_b + 2; s += kThreads) prev[s] = ninf<V>();
  __syncthreads();
  for (int64_t t = 0; t < el.T_b; ++t) {
    const int64_t lo = el.lo(t), hi = el.hi(t);
    const V* row = x + (t * p.B + b) * p.C;
    const V shift = p.from_logits ? row_lse[t * p.B + b] : V(0);
    for (int64_t s = int64_t(threadIdx.x) - 2; s < el.L_b + 2; s += kThreads) {
      V a = ninf<V>();
      if (s >= lo && s < hi) {
        const V e = row[el.ext(s, p.blank)] - shift;
        a = t == 0 ? e : e + logsumexp3(prev[s], prev[s - 1], prev[s - 2] + el.skip<V>(s));
        if (alpha) alpha[t * p.L + s] = a;
      }
      cur[s] = a;
    }
    __syncthreads();
    V* tmp = prev;
    prev = cur;
    cur = tmp;
  }
  if (threadIdx.x == 0) {
    const V nll = el.nll(prev);  // row T_b - 1, the values backward reads back from log_alpha
    loss[b] = (zero_infinity && isinf(nll)) ? V(0) : nll;
  }
}

template <class V>
__global__ void __launch_bounds__(kThreads)
    ctc_backward_kernel(Problem p, const V* __restrict__ x, const V* __restrict__ log_alpha,
                        const V* __restrict__ row_lse, const V* __restrict__ grad_loss, V* grad,
                        char* workspace, bool shared) {
  __shared__ V red[kThreads];
  const int64_t b = blockIdx.x;
  const Element el(p, b);
  const V* alpha = log_alpha + b * p.T * p.L;
  const V nll = el.valid ? el.nll(alpha + (el.T_b - 1) * p.L) : V(INFINITY);
  // Invalid elements and elements without an alignment get a zero gradient.
  const int64_t active = isinf(nll) ? 0 : el.T_b;
  for (int64_t i = threadIdx.x; i < (p.T - active) * p.C; i += kThreads) {
    const int64_t t = active + i / p.C;
    grad[(t * p.B + b) * p.C + i % p.C] = V(0);
  }
  if (active == 0) return;
  if (isnan(nll)) {  // a NaN input on a path: the whole gradient is NaN, as torch's is
    for (int64_t i = threadIdx.x; i < active * p.C; i += kThreads) {
      grad[((i / p.C) * p.B + b) * p.C + i % p.C] = V(NAN);
    }
    return;
  }

  Scratch<V> w(block_scratch<V>(workspace, p, shared), p.L);
  // Chains of equal labels: each label position k points to the next position with its label;
  // the first position of each label heads the chain and sums it (O(S^2) once per element).
  for (int64_t k = threadIdx.x; k < el.S_b; k += kThreads) {
    int32_t next = -1, head = 1;
    for (int64_t j = 0; j < el.S_b; ++j) {
      if (el.labels[j] != el.labels[k]) continue;
      if (j < k) head = 0;
      if (j > k && next < 0) next = static_cast<int32_t>(j);
    }
    w.next_same[k] = next;
    w.is_head[k] = head;
  }
  V* next = w.row_a;  // beta_{t+1}
  V* cur = w.row_b;   // beta_t
  for (int64_t s = int64_t(threadIdx.x) - 2; s < el.L_b + 2; s += kThreads) next[s] = ninf<V>();
  __syncthreads();
  const V gout = grad_loss[b];
  for (int64_t t = el.T_b - 1; t >= 0; --t) {
    const int64_t lo = el.lo(t), hi = el.hi(t);
    const V* row = x + (t * p.B + b) * p.C;
    const V shift = p.from_logits ? row_lse[t * p.B + b] : V(0);
    for (int64_t s = int64_t(threadIdx.x) - 2; s < el.L_b + 2; s += kThreads) {
      V beta = ninf<V>();
      V gamma = V(0);
      if (s >= lo && s < hi) {
        const V e = row[el.ext(s, p.blank)] - shift;
        beta = t == el.T_b - 1
                   ? e
                   : e + logsumexp3(next[s], next[s + 1], next[s + 2] + el.skip<V>(s + 2));
        const V ab = alpha[t * p.L + s] + beta;
        gamma = ab == ninf<V>() ? V(0) : dexp(ab + nll - e);
      }
      cur[s] = beta;
      if (s >= 0 && s < el.L_b) w.gamma[s] = gamma;
    }
    V* g = grad + (t * p.B + b) * p.C;
    for (int64_t c = threadIdx.x; c < p.C; c += kThreads) g[c] = gout * dexp(row[c] - shift);
    V blank_occ = V(0);
    for (int64_t s = 2 * threadIdx.x; s < el.L_b; s += 2 * kThreads) blank_occ += w.gamma[s];
    blank_occ = block_reduce(blank_occ, red, Sum());  // its barriers also publish gamma and g
    if (threadIdx.x == 0) g[p.blank] -= gout * blank_occ;
    for (int64_t k = threadIdx.x; k < el.S_b; k += kThreads) {
      if (!w.is_head[k]) continue;
      V occ = V(0);
      for (int64_t j = k; j >= 0; j = w.next_same[j]) occ += w.gamma[2 * j + 1];
      g[el.labels[k]] -= gout * occ;
    }
    __syncthreads();
    V* tmp = next;
    next = cur;
    cur = tmp;
  }
}

Problem make_problem(const CtcDesc& d, const int64_t* targets, const int64_t* offsets,
                     const int64_t* input_lengths, const int64_t* target_lengths) {
  return Problem{d.max_time,   d.batch,         d.num_classes,  d.max_target,
                 d.ext_len(),  d.blank,         d.targets_size, d.from_logits,
                 targets,      offsets,         input_lengths,  target_lengths};
}

int64_t scratch_bytes(const CtcDesc& d, DType dtype) {
  return dtype == DType::Float32 ? Scratch<float>::bytes(d.ext_len(), d.max_target)
                                 : Scratch<double>::bytes(d.ext_len(), d.max_target);
}

bool fits_shared(const CtcDesc& d, DType dtype) { return scratch_bytes(d, dtype) <= kSharedLimit; }

void check_args(const CtcDesc& d, DType dtype, const void* input, const int64_t* targets,
                const int64_t* offsets, const int64_t* input_lengths,
                const int64_t* target_lengths, const void* workspace) {
  d.validate();
  FASTRNN_CHECK(dtype == DType::Float32 || dtype == DType::Float64, "ctc: unsupported dtype");
  FASTRNN_CHECK(d.batch == 0 || d.max_time == 0 || input, "ctc: missing input");
  FASTRNN_CHECK(d.batch == 0 || (offsets && input_lengths && target_lengths),
                "ctc: missing length or offset array");
  FASTRNN_CHECK(d.targets_size == 0 || targets, "ctc: missing targets");
  FASTRNN_CHECK(d.batch == 0 || fits_shared(d, dtype) || workspace, "ctc: missing workspace");
}

// What both launches need: the problem, and where the per-element rows live (dynamic shared
// memory of `smem` bytes when they fit, else the caller's workspace).
struct LaunchPlan {
  Problem p;
  bool shared;
  size_t smem;
};

template <class V, class Args>
LaunchPlan plan_launch(const CtcDesc& d, const Args& a) {
  LaunchPlan plan{make_problem(d, a.targets, a.target_offsets, a.input_lengths, a.target_lengths),
                  fits_shared(d, sizeof(V) == 4 ? DType::Float32 : DType::Float64), 0};
  if (plan.shared) plan.smem = static_cast<size_t>(Scratch<V>::bytes(plan.p.L, plan.p.S));
  return plan;
}

template <class V>
void launch_forward(const CtcDesc& d, const CtcForwardArgs& a, cudaStream_t stream) {
  const LaunchPlan plan = plan_launch<V>(d, a);
  ctc_forward_kernel<V><<<static_cast<unsigned>(d.batch), kThreads, plan.smem, stream>>>(
      plan.p, static_cast<const V*>(a.input), a.zero_infinity, static_cast<V*>(a.loss),
      static_cast<V*>(a.log_alpha), static_cast<V*>(a.row_lse), static_cast<char*>(a.workspace),
      plan.shared);
  FASTRNN_CUDA_CHECK_LAUNCH();
}

template <class V>
void launch_backward(const CtcDesc& d, const CtcBackwardArgs& a, cudaStream_t stream) {
  const LaunchPlan plan = plan_launch<V>(d, a);
  ctc_backward_kernel<V><<<static_cast<unsigned>(d.batch), kThreads, plan.smem, stream>>>(
      plan.p, static_cast<const V*>(a.input), static_cast<const V*>(a.log_alpha),
      static_cast<const V*>(a.row_lse), static_cast<const V*>(a.grad_loss),
      static_cast<V*>(a.grad_input), static_cast<char*>(a.workspace), plan.shared);
  FASTRNN_CUDA_CHECK_LAUNCH();
}

}  // namespace

int64_t ctc_cuda_workspace_bytes(const CtcDesc& desc, DType dtype) {
  desc.validate();
  return fits_shared(desc, dtype) ? 0 : desc.batch * scratch_bytes(desc, dtype);
}

void ctc_forward_cuda(const CtcDesc& desc, DType dtype, const CtcForwardArgs& args,
                      int device, void* stream) {
  check_args(desc, dtype, args.input, args.targets, args.target_offsets, args.input_lengths,
             args.target_lengths, args.workspace);
  FASTRNN_CHECK(desc.batch == 0 || args.loss, "ctc: missing loss");
  // Buffers of T*B or B*T*L values are empty, and may be null, when T or B is 0.
  FASTRNN_CHECK(!desc.from_logits || desc.batch == 0 || desc.max_time == 0 || args.row_lse,
                "ctc: missing row_lse");
  FASTRNN_CHECK(desc.batch <= INT32_MAX, "ctc: batch too large for one grid");
  if (desc.batch == 0) return;
  cuda::DeviceGuard guard(device);
  if (dtype == DType::Float32) {
    launch_forward<float>(desc, args, static_cast<cudaStream_t>(stream));
  } else {
    launch_forward<double>(desc, args, static_cast<cudaStream_t>(stream));
  }
}

void ctc_backward_cuda(const CtcDesc& desc, DType dtype, const CtcBackwardArgs& args,
                       int device, void* stream) {
  check_args(desc, dtype, args.input, args.targets, args.target_offsets, args.input_lengths,
             args.target_lengths, args.workspace);
  FASTRNN_CHECK(desc.batch == 0 || args.grad_loss, "ctc: missing grad_loss");
  // Buffers of T*B or B*T*L values are empty, and may be null, when T or B is 0.
  FASTRNN_CHECK(desc.batch == 0 || desc.max_time == 0 || (args.log_alpha && args.grad_input),
                "ctc: missing buffer");
  FASTRNN_CHECK(!desc.from_logits || desc.batch == 0 || desc.max_time == 0 || args.row_lse,
                "ctc: missing row_lse");
  FASTRNN_CHECK(desc.batch <= INT32_MAX, "ctc: batch too large for one grid");
  if (desc.batch == 0) return;
  cuda::DeviceGuard guard(device);
  if (dtype == DType::Float32) {
    launch_backward<float>(desc, args, static_cast<cudaStream_t>(stream));
  } else {
    launch_backward<double>(desc, args, static_cast<cudaStream_t>(stream));
  }
}

}  // namespace fastrnn
