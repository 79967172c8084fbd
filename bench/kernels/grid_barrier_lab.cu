// Grid-barrier lab (CUDA): the floor under a persistent recurrence's time per step.
//
// Launches a cooperative grid of one block per multiprocessor (the persistent kernel's shape)
// that runs `steps` grid.sync() calls, with and without a per-step exchange through L2 like the
// recurrence's (every block writes its slice of a vector and reads the whole vector after the
// barrier). Checks the exchange's result, then prints microseconds per step (median of 7 timed
// launches, CUDA events). Run by bench/gpu_check.sh:
//   nvcc -std=c++17 -O3 -arch=sm_90 bench/kernels/grid_barrier_lab.cu -o grid_barrier_lab
//   ./grid_barrier_lab [steps]
#include <cooperative_groups.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <vector>

#define CHECK(call)                                                                     \
  do {                                                                                  \
    cudaError_t e = (call);                                                             \
    if (e != cudaSuccess) {                                                             \
      std::fprintf(stderr, "%s failed: %s (%s:%d)\n", #call, cudaGetErrorString(e),     \
                   __FILE__, __LINE__);                                                 \
      std::exit(1);                                                                     \
    }                                                                                   \
  } while (0)

constexpr int kThreads = 256;

// Per step: block b writes values [b*per_block, (b+1)*per_block) of buf[s % 2] as s + index,
// then, after the barrier, sums all of buf[s % 2] (bypassing L1) into acc.
__global__ void barrier_kernel(int steps, int per_block, bool exchange, float* buf, float* out) {
  cooperative_groups::grid_group grid = cooperative_groups::this_grid();
  const int n = per_block * gridDim.x;
  float acc = 0.f;
  for (int s = 0; s < steps; ++s) {
    if (exchange) {
      float* cur = buf + (s % 2) * n;
      for (int i = threadIdx.x; i < per_block; i += blockDim.x) {
        const int idx = blockIdx.x * per_block + i;
        cur[idx] = float(s + idx);
      }
    }
    grid.sync();
    if (exchange) {
      const float* cur = buf + (s % 2) * n;
      for (int i = threadIdx.x; i < n; i += blockDim.x) acc += __ldcg(cur + i);
    }
  }
  if (exchange && threadIdx.x == 0) out[blockIdx.x] = acc;
}

int main(int argc, char** argv) {
  const int steps = argc > 1 ? std::atoi(argv[1]) : 10000;
  int device = 0, sms = 0, coop = 0;
  CHECK(cudaGetDevice(&device));
  CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  CHECK(cudaDeviceGetAttribute(&coop, cudaDevAttrCooperativeLaunch, device));
  cudaDeviceProp prop{};
  CHECK(cudaGetDeviceProperties(&prop, device));
  std::printf("device %s, %d multiprocessors, cooperative launch %s, %d steps\n", prop.name, sms,
              coop ? "yes" : "NO", steps);
  if (!coop) return 1;
  const int per_block = 768 * 16 / sms + 1;  // about h [B=16, H=768] per step, as in the headline
  float *buf = nullptr, *out = nullptr;
  CHECK(cudaMalloc(&buf, 2 * sizeof(float) * per_block * sms));
  CHECK(cudaMalloc(&out, sizeof(float) * sms));
  cudaEvent_t start, stop;
  CHECK(cudaEventCreate(&start));
  CHECK(cudaEventCreate(&stop));
  for (bool exchange : {false, true}) {
    int s = steps, pb = per_block;
    void* args[] = {&s, &pb, &exchange, &buf, &out};
    std::vector<float> ms;
    for (int rep = 0; rep < 9; ++rep) {
      CHECK(cudaEventRecord(start));
      CHECK(cudaLaunchCooperativeKernel(reinterpret_cast<void*>(barrier_kernel), dim3(sms),
                                        dim3(kThreads), args, 0, nullptr));
      CHECK(cudaGetLastError());
      CHECK(cudaEventRecord(stop));
      CHECK(cudaEventSynchronize(stop));
      float t = 0.f;
      CHECK(cudaEventElapsedTime(&t, start, stop));
      if (rep >= 2) ms.push_back(t);  // two warm-up launches
    }
    if (exchange) {  // every block summed the same values: the last step's s + idx
      std::vector<float> host(sms);
      CHECK(cudaMemcpy(host.data(), out, sizeof(float) * sms, cudaMemcpyDeviceToHost));
      for (int b = 1; b < sms; ++b) {
        if (host[b] != host[0]) {
          std::printf("exchange check FAILED: block %d saw %g, block 0 saw %g\n", b, host[b],
                      host[0]);
          return 1;
        }
      }
    }
    std::sort(ms.begin(), ms.end());
    const float median = ms[ms.size() / 2];
    std::printf("%-28s %.3f us/step (median of %zu launches; min %.3f, max %.3f us/step)\n",
                exchange ? "grid.sync + L2 exchange:" : "grid.sync only:",
                1000.f * median / steps, ms.size(), 1000.f * ms.front() / steps,
                1000.f * ms.back() / steps);
  }
  return 0;
}
