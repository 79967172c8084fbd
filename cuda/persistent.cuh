// Persistent recurrence kernels, forward and backward: the whole time loop of one (layer,
// direction) in one cooperative launch, instead of a GEMM and a pointwise kernel per step.
//
// Each thread block owns `units` consecutive hidden units (all G gates of each) and copies its
// rows of W_hh, [G][units][O], into shared memory once; they stay there for all T steps. Per step
// every block reads the whole h_{t-1} [rows, O] from L2 (loads that bypass L1, which is not
// coherent across multiprocessors), computes its units' recurrent pre-activations, runs the
// cell's pointwise math (csrc/cells/) and writes h_t for its units; a grid-wide barrier separates
// the steps. h travels through a double buffer [2][B][O]; rows past batch_sizes[t] are copied
// forward unchanged by their units' owner (PackedSequence semantics).
//
// Work split inside a block: warp w takes rows w, w + kWarps, ...; for a row, lane l takes the
// columns k = l, l + 32, ... of every owned weight row (consecutive lanes, consecutive shared
// memory words: no bank conflicts), then a butterfly of shuffles sums the 32 partial dot products
// in a fixed order (deterministic), and lane u runs the cell for unit u.
//
// Backward is the mirror image: a block keeps the columns of W_hh of its units, [units][G*H], and
// per step computes dh_{t-1} for its units from the whole dG_t of the step before (read from L2
// after the barrier), then the cell's backward for its units, writing their dG. Each block only
// ever writes its own units' columns of the running dh and dc, so those need no exchange.
//
// Used when the problem fits: no projection, weights slice in shared memory, at most kMaxUnits
// units per block with one block per multiprocessor, cooperative launch supported. Otherwise the
// caller runs the per-step path; both give the same results up to summation order.
#pragma once

#include <cooperative_groups.h>
#include <cuda_runtime.h>

#include <atomic>
#include <cstdint>

#include "check.cuh"

namespace fastrnn::persistent {

constexpr int kMaxUnits = 8;  // hidden units per block (register accumulators per lane: G * 8)
constexpr int kWarps = 8;
constexpr int kThreads = kWarps * 32;

// Run-time switch (tests compare both paths; `fastrnn._cuda.set_persistent_kernels`).
inline std::atomic<bool>& enabled() {
  static std::atomic<bool> flag{true};
  return flag;
}

// Launches so far, so that tests can tell which path ran.
inline std::atomic<int64_t>& launches() {
  static std::atomic<int64_t> count{0};
  return count;
}

template <class T>
struct ForwardParams {
  int64_t steps, B, H, O, ldy, units;
  bool reverse;
  const int64_t* offsets;  // [steps + 1] first row of each step, on the device
  T* gates;                // [N, S*H] reserve: x W_ih^T in the first G*H columns, saved values out
  const T* w_hh;           // [G*H, O]
  const T *b_ih, *b_hh;    // [G*H] or null
  T* h;                    // [2][B][O]: h[0] holds the initial state
  T* c;                    // [B, H] running c (LSTM), updated in place by the units' owners
  T* cells;                // [N, H] reserve c (LSTM)
  T* y;                    // [N, ldy] layer output at this direction's columns
};

template <class Cell, class T>
__global__ void __launch_bounds__(kThreads, 1) forward_kernel(ForwardParams<T> p) {
  constexpr int G = Cell::kGates, S = Cell::kSaved;
  extern __shared__ __align__(16) unsigned char shared_raw[];
  T* w = reinterpret_cast<T*>(shared_raw);  // [G][units][O]
  const int64_t U = p.units, O = p.O, H = p.H;
  const int64_t u0 = blockIdx.x * U;
  const int64_t owned = u0 < H ? (H - u0 < U ? H - u0 : U) : 0;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;

  for (int64_t i = threadIdx.x; i < G * U * O; i += blockDim.x) {
    const int64_t k = i % O, r = i / O, g = r / U, u = r % U;
    w[i] = u < owned ? p.w_hh[(g * H + u0 + u) * O + k] : T(0);
  }
  __syncthreads();

  cooperative_groups::grid_group grid = cooperative_groups::this_grid();
  for (int64_t s = 0; s < p.steps; ++s) {
    const int64_t t = p.reverse ? p.steps - 1 - s : s;
    const int64_t off = p.offsets[t], rows = p.offsets[t + 1] - off;
    const T* cur = p.h + (s % 2) * p.B * O;
    T* next = p.h + ((s + 1) % 2) * p.B * O;
    for (int64_t b = warp; b < rows; b += kWarps) {
      T acc[G][kMaxUnits];
#pragma unroll
      for (int g = 0; g < G; ++g) {
#pragma unroll
        for (int u = 0; u < kMaxUnits; ++u) acc[g][u] = T(0);
      }
      for (int64_t k = lane; k < O; k += 32) {
        const T hk = __ldcg(cur + b * O + k);
#pragma unroll
        for (int g = 0; g < G; ++g) {
#pragma unroll
          for (int u = 0; u < kMaxUnits; ++u) {
            if (u < U) acc[g][u] += hk * w[(g * U + u) * O + k];
          }
        }
      }
#pragma unroll
      for (int g = 0; g < G; ++g) {
#pragma unroll
        for (int u = 0; u < kMaxUnits; ++u) {
#pragma unroll
          for (int m = 16; m > 0; m /= 2) acc[g][u] += __shfl_xor_sync(0xffffffffu, acc[g][u], m);
        }
      }
#pragma unroll
      for (int u = 0; u < kMaxUnits; ++u) {
        if (lane != u || u >= owned) continue;
        const int64_t j = u0 + u, row = off + b;
        T* saved_row = p.gates + row * S * H;
        T xp[G], hp[G], saved[S];
#pragma unroll
        for (int g = 0; g < G; ++g) {
          xp[g] = saved_row[g * H + j] + (p.b_ih ? p.b_ih[g * H + j] : T(0));
          hp[g] = acc[g][u] + (p.b_hh ? p.b_hh[g * H + j] : T(0));
        }
        const T h_prev = Cell::kDirectHPath ? __ldcg(cur + b * O + j) : T(0);
        const T c_prev = Cell::kHasCell ? p.c[b * H + j] : T(0);
        T c(0), h(0);
        Cell::forward(xp, hp, h_prev, c_prev, saved, c, h);
#pragma unroll
        for (int k = 0; k < S; ++k) saved_row[k * H + j] = saved[k];
        if (Cell::kHasCell) {
          p.c[b * H + j] = c;
          p.cells[row * H + j] = c;
        }
        next[b * O + j] = h;
        p.y[row * p.ldy + j] = h;
      }
    }
    for (int64_t i = threadIdx.x; i < (p.B - rows) * owned; i += blockDim.x) {
      const int64_t b = rows + i / owned, j = u0 + i % owned;
      next[b * O + j] = __ldcg(cur + b * O + j);
    }
    grid.sync();  // h_t complete (and visible) everywhere before step t+1 reads it
  }
}

template <class T>
struct BackwardParams {
  int64_t steps, B, H, ldy, units;  // no projection: O == H
  bool reverse;
  const int64_t* offsets;  // [steps + 1] first row of each step, on the device
  const T* gates;          // [N, S*H] saved by forward
  const T* cells;          // [N, H] c_t (LSTM)
  const T* c_prev;         // [N, H] c_{t-1} (LSTM)
  const T* h_prev;         // [N, H] h_{t-1} (GRU)
  const T* dy;             // [N, ldy] gradient of the layer output at this direction's columns
  const T* w_hh;           // [G*H, H]
  T* dh;                   // [B, H] running dh: dhy in, dh0 out (own units' columns per block)
  T* dc;                   // [B, H] running dc (LSTM): dcy in, dc0 out
  T* dgi;                  // [N, G*H]
  T* dgh;                  // [N, G*H] (GRU; else the same as dgi)
};

template <class Cell, class T>
__global__ void __launch_bounds__(kThreads, 1) backward_kernel(BackwardParams<T> p) {
  constexpr int G = Cell::kGates, S = Cell::kSaved;
  extern __shared__ __align__(16) unsigned char shared_raw[];
  T* w = reinterpret_cast<T*>(shared_raw);  // [units][G*H]: column u0 + u of W_hh
  const int64_t U = p.units, H = p.H, GH = G * p.H;
  const int64_t u0 = blockIdx.x * U;
  const int64_t owned = u0 < H ? (H - u0 < U ? H - u0 : U) : 0;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;

  for (int64_t i = threadIdx.x; i < U * GH; i += blockDim.x) {
    const int64_t r = i % GH, u = i / GH;
    w[i] = u < owned ? p.w_hh[r * H + u0 + u] : T(0);
  }
  __syncthreads();

  cooperative_groups::grid_group grid = cooperative_groups::this_grid();
  int64_t prev_off = 0, prev_rows = 0;  // the step processed before this one
  // s == steps is the tail: the last step's dG still has to reach dh (which becomes dh0).
  for (int64_t s = p.steps - 1; s >= -1; --s) {
    const int64_t t = s < 0 ? -1 : (p.reverse ? p.steps - 1 - s : s);
    const int64_t off = t < 0 ? 0 : p.offsets[t];
    const int64_t rows = t < 0 ? 0 : p.offsets[t + 1] - off;
    const int64_t busy = rows > prev_rows ? rows : prev_rows;
    for (int64_t b = warp; b < busy; b += kWarps) {
      if (b < prev_rows) {
        // dh_{t}[b] for the owned units = dG_{t+1}[b] W_hh[:, unit] (+ GRU's direct part).
        T acc[kMaxUnits];
#pragma unroll
        for (int u = 0; u < kMaxUnits; ++u) acc[u] = T(0);
        const T* dg_row = p.dgh + (prev_off + b) * GH;
        for (int64_t r = lane; r < GH; r += 32) {
          const T g = __ldcg(dg_row + r);
#pragma unroll
          for (int u = 0; u < kMaxUnits; ++u) {
            if (u < U) acc[u] += g * w[u * GH + r];
          }
        }
#pragma unroll
        for (int u = 0; u < kMaxUnits; ++u) {
#pragma unroll
          for (int m = 16; m > 0; m /= 2) acc[u] += __shfl_xor_sync(0xffffffffu, acc[u], m);
        }
#pragma unroll
        for (int u = 0; u < kMaxUnits; ++u) {
          if (lane == u && u < owned) {
            T* dh = p.dh + b * H + u0 + u;
            *dh = acc[u] + (Cell::kDirectHPath ? *dh : T(0));
          }
        }
      }
      if (b < rows && lane < owned) {
        // The cell's backward for unit u0 + lane: the thread that just wrote its dh.
        const int64_t j = u0 + lane, row = off + b;
        T saved[S], dxp[G], dhp[G];
#pragma unroll
        for (int k = 0; k < S; ++k) saved[k] = p.gates[row * S * H + k * H + j];
        const T dh = p.dy[row * p.ldy + j] + p.dh[b * H + j];
        const T c = Cell::kHasCell ? p.cells[row * H + j] : T(0);
        const T c_prev = Cell::kHasCell ? p.c_prev[row * H + j] : T(0);
        const T h_prev = Cell::kDirectHPath ? p.h_prev[row * H + j] : T(0);
        const T dc = Cell::kHasCell ? p.dc[b * H + j] : T(0);
        T dc_prev(0), dh_prev(0);
        Cell::backward(dh, dc, saved, c, c_prev, h_prev, dxp, dhp, dc_prev, dh_prev);
#pragma unroll
        for (int g = 0; g < G; ++g) p.dgi[row * GH + g * H + j] = dxp[g];
        if (Cell::kDirectHPath) {
#pragma unroll
          for (int g = 0; g < G; ++g) p.dgh[row * GH + g * H + j] = dhp[g];
        }
        // Until the next step adds the recurrent part, dh holds what bypasses W_hh (GRU's z*dh).
        p.dh[b * H + j] = dh_prev;
        if (Cell::kHasCell) p.dc[b * H + j] = dc_prev;
      }
    }
    prev_off = off;
    prev_rows = rows;
    if (s >= 0) grid.sync();  // dG_t complete everywhere before step t-1 reads it
  }
}

// How a persistent kernel covers H hidden units: one block per multiprocessor (at most), each
// owning `units` consecutive units.
struct GridPlan {
  int sms = 0;
  int64_t units = 0, blocks = 0;
};

// The plan for H units on `device`, or false when the persistent kernels are off, the device
// cannot launch cooperatively, or a block would need more than kMaxUnits units.
inline bool plan_grid(int64_t H, int device, GridPlan& plan) {
  if (!enabled().load()) return false;
  int cooperative = 0;
  FASTRNN_CUDA_CHECK(cudaDeviceGetAttribute(&cooperative, cudaDevAttrCooperativeLaunch, device));
  if (!cooperative) return false;
  FASTRNN_CUDA_CHECK(cudaDeviceGetAttribute(&plan.sms, cudaDevAttrMultiProcessorCount, device));
  const int64_t blocks_wanted = H < plan.sms ? H : plan.sms;
  plan.units = (H + blocks_wanted - 1) / blocks_wanted;
  plan.blocks = (H + plan.units - 1) / plan.units;
  return plan.units <= kMaxUnits;
}

// Launches `kernel` as planned with `shared` bytes of shared memory per block when every block
// can be resident at once (a grid barrier needs that) and returns true; false, having launched
// nothing, otherwise.
template <class Params>
bool launch_cooperative(void (*kernel)(Params), Params p, const GridPlan& plan, int64_t shared,
                        int device, cudaStream_t stream) {
  int max_shared = 0;
  FASTRNN_CUDA_CHECK(
      cudaDeviceGetAttribute(&max_shared, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  if (shared > max_shared) return false;
  FASTRNN_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                          static_cast<int>(shared)));
  int per_sm = 0;
  FASTRNN_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kThreads,
                                                                   static_cast<size_t>(shared)));
  if (int64_t{per_sm} * plan.sms < plan.blocks) return false;
  void* args[] = {&p};
  FASTRNN_CUDA_CHECK(cudaLaunchCooperativeKernel(reinterpret_cast<void*>(kernel),
                                                 dim3(static_cast<unsigned>(plan.blocks)),
                                                 dim3(kThreads), args,
                                                 static_cast<size_t>(shared), stream));
  launches().fetch_add(1);
  return true;
}

// Runs forward_kernel when the problem fits (see the file comment); p.units is chosen here.
template <class Cell, class T>
bool try_forward(ForwardParams<T> p, int device, cudaStream_t stream) {
  GridPlan plan;
  if (p.steps == 0 || p.B == 0 || !plan_grid(p.H, device, plan)) return false;
  p.units = plan.units;
  const int64_t shared = int64_t{Cell::kGates} * p.units * p.O * int64_t(sizeof(T));
  return launch_cooperative(forward_kernel<Cell, T>, p, plan, shared, device, stream);
}

// Runs backward_kernel when the problem fits; p.units is chosen here.
template <class Cell, class T>
bool try_backward(BackwardParams<T> p, int device, cudaStream_t stream) {
  GridPlan plan;
  if (p.steps == 0 || p.B == 0 || !plan_grid(p.H, device, plan)) return false;
  p.units = plan.units;
  const int64_t shared = int64_t{Cell::kGates} * p.H * p.units * int64_t(sizeof(T));
  return launch_cooperative(backward_kernel<Cell, T>, p, plan, shared, device, stream);
}

}  // namespace fastrnn::persistent
