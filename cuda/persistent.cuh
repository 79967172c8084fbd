// Persistent recurrence kernel (forward): the whole time loop of one (layer, direction) in one
// cooperative launch, instead of a GEMM and a pointwise kernel per step.
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

// Launches forward_kernel when the problem fits (see the file comment) and returns true; returns
// false, having launched nothing, otherwise. p.units is chosen here.
template <class Cell, class T>
bool try_forward(ForwardParams<T> p, int device, cudaStream_t stream) {
  if (!enabled().load() || p.steps == 0 || p.B == 0) return false;
  int sms = 0, cooperative = 0, max_shared = 0;
  FASTRNN_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  FASTRNN_CUDA_CHECK(cudaDeviceGetAttribute(&cooperative, cudaDevAttrCooperativeLaunch, device));
  FASTRNN_CUDA_CHECK(
      cudaDeviceGetAttribute(&max_shared, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  if (!cooperative) return false;
  const int64_t blocks_wanted = p.H < sms ? p.H : sms;
  p.units = (p.H + blocks_wanted - 1) / blocks_wanted;
  if (p.units > kMaxUnits) return false;
  const int64_t blocks = (p.H + p.units - 1) / p.units;
  const int64_t shared = int64_t{Cell::kGates} * p.units * p.O * int64_t(sizeof(T));
  if (shared > max_shared) return false;
  auto kernel = forward_kernel<Cell, T>;
  FASTRNN_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                          static_cast<int>(shared)));
  int per_sm = 0;
  FASTRNN_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kThreads,
                                                                   static_cast<size_t>(shared)));
  if (int64_t{per_sm} * sms < blocks) return false;  // a grid barrier needs every block resident
  void* args[] = {&p};
  FASTRNN_CUDA_CHECK(cudaLaunchCooperativeKernel(reinterpret_cast<void*>(kernel),
                                                 dim3(static_cast<unsigned>(blocks)),
                                                 dim3(kThreads), args,
                                                 static_cast<size_t>(shared), stream));
  launches().fetch_add(1);
  return true;
}

}  // namespace fastrnn::persistent
