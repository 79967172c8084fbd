// Kernel lab: the CPU GEMM of csrc/cpu/gemm.h, checked against a plain triple loop, then timed.
// Build and run: bash bench/kernels/run_lab.sh   (compiles this file once per ISA)
// Prints GFLOP/s per shape for the big-GEMM shapes of the recurrence (input projection, weight
// gradients), for the shapes that take gemm's direct paths (a few rows, a shallow K), and for an
// LSTM's recurrent step over 100 steps, its product alone and with the cell's epilogue; and the
// packing of a recurrent weight matrix.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <algorithm>
#include <random>
#include <vector>

#include "cpu/gemm.h"
#include "cells/lstm.h"

using namespace fastrnn::cpu::FASTRNN_ISA;

namespace {

double seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

void reference(Trans ta, Trans tb, int64_t M, int64_t N, int64_t K, const float* A, int64_t lda,
               const float* B, int64_t ldb, float* C, int64_t ldc) {
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < N; ++j) {
      double s = 0;
      for (int64_t k = 0; k < K; ++k)
        s += double(ta == Trans::Yes ? A[k * lda + i] : A[i * lda + k]) *
             double(tb == Trans::Yes ? B[j * ldb + k] : B[k * ldb + j]);
      C[i * ldc + j] = float(s);
    }
}

void run(const char* what, Trans ta, Trans tb, int64_t M, int64_t N, int64_t K, int threads) {
  std::mt19937 gen(42);
  std::normal_distribution<float> dist;
  std::vector<float> A(M * K), B(K * N), C(M * N), R(M * N);
  for (auto& v : A) v = dist(gen);
  for (auto& v : B) v = dist(gen);
  const int64_t lda = ta == Trans::Yes ? M : K, ldb = tb == Trans::Yes ? K : N;
  std::vector<float> pack(gemm_pack_elems<float>(K, N));
  gemm(ta, tb, M, N, K, A.data(), lda, B.data(), ldb, false, C.data(), N, pack.data(), threads);
  if (M * N * K <= 512ll * 512 * 512) {
    reference(ta, tb, M, N, K, A.data(), lda, B.data(), ldb, R.data(), N);
    double err = 0;
    for (int64_t i = 0; i < M * N; ++i) err = std::fmax(err, std::fabs(C[i] - R[i]) / (1 + std::fabs(R[i])));
    if (err > 1e-4) {
      std::printf("%s: MISMATCH (max rel err %.2e)\n", what, err);
      std::exit(1);
    }
  }
  std::vector<double> times;
  for (int rep = 0; rep < 9; ++rep) {
    const double t0 = seconds();
    gemm(ta, tb, M, N, K, A.data(), lda, B.data(), ldb, false, C.data(), N, pack.data(), threads);
    times.push_back(seconds() - t0);
  }
  std::sort(times.begin(), times.end());
  std::printf("%-28s M=%5lld N=%5lld K=%5lld threads=%d: %7.1f GFLOP/s (median of 9)\n", what,
              (long long)M, (long long)N, (long long)K, threads,
              2.0 * M * N * K / times[4] * 1e-9);
}

// W [G*H, K] packed into unit-block panels as the driver packs W_hh (pack_units in
// csrc/cpu/recurrence.h): panel u is [K][G][W] and holds units [u*W, u*W + W), zero past H.
template <int G>
void pack_unit_blocks(const float* w, int64_t H, int64_t K, float* out) {
  constexpr int W = VecOf<float>::kWidth;
  for (int64_t u = 0; u < ceil_div(H, W); ++u)
    for (int g = 0; g < G; ++g)
      pack_transposed(w + (g * H + u * W) * K, K, imin(W, H - u * W), K, G * W,
                      out + u * K * G * W + g * W);
}

// The recurrent step of an LSTM over `steps` steps, as the driver runs it on one thread: for
// every block of W hidden units, the rows of h [B, K] (tiles of tile_rows<G>() rows) times the
// block's packed panel [K][G][W]; then either only the product is stored (with_cell false) or
// the cell's epilogue runs as in csrc/cpu/recurrence.h (gate pre-activations read from and
// activations written back to a [steps][B][G*H] block, c and h written out). The product is
// checked against the plain loop once, then the whole sequence is timed.
void run_step(int64_t B, int64_t H, int64_t steps, bool with_cell) {
  using V = VecOf<float>;
  using Cell = fastrnn::cells::Lstm;
  constexpr int G = Cell::kGates, W = V::kWidth, MR = tile_rows<G>();
  const int64_t K = H, blocks = ceil_div(H, W);
  std::mt19937 gen(7);
  std::normal_distribution<float> dist;
  std::vector<float> h(2 * B * K), w(G * H * K), panels(blocks * K * G * W), out(B * G * H);
  std::vector<float> gates(steps * B * G * H), cells(steps * B * H), y(steps * B * H), c(B * H);
  for (auto& v : h) v = dist(gen) * 0.1f;
  for (auto& v : w) v = dist(gen) * 0.1f;
  for (auto& v : gates) v = dist(gen);
  pack_unit_blocks<G>(w.data(), H, K, panels.data());
  auto step = [&](int64_t s) {
    const float* cur = h.data() + (s % 2) * B * K;
    float* next = h.data() + ((s + 1) % 2) * B * K;
    for (int64_t u = 0; u < blocks; ++u) {
      const int64_t j0 = u * W;
      for (int64_t r0 = 0; r0 < B; r0 += MR) {
        const int rows = static_cast<int>(imin(MR, B - r0));
        tile<G>(rows, K, MatA<float>{cur + r0 * K, K, 1}, panels.data() + u * K * G * W,
                [&](V(&acc)[MR][G]) {
                  for (int r = 0; r < rows; ++r) {
                    const int64_t b = r0 + r;
                    if (!with_cell) {
                      for (int g = 0; g < G; ++g) acc[r][g].store(out.data() + b * G * H + g * H + j0);
                      continue;
                    }
                    float* srow = gates.data() + (s * B + b) * G * H;
                    V xp[G], hp[G], saved[G], cn, hn;
                    for (int g = 0; g < G; ++g) {
                      xp[g] = V::load(srow + g * H + j0);
                      hp[g] = acc[r][g];
                    }
                    Cell::forward(xp, hp, V(0.0f), V::load(c.data() + b * H + j0), saved, cn, hn);
                    for (int g = 0; g < G; ++g) saved[g].store(srow + g * H + j0);
                    cn.store(c.data() + b * H + j0);
                    cn.store(cells.data() + (s * B + b) * H + j0);
                    hn.store(next + b * K + j0);
                    hn.store(y.data() + (s * B + b) * H + j0);
                  }
                });
      }
    }
  };
  if (!with_cell) {
    step(0);
    std::vector<float> ref(B * G * H);
    reference(Trans::No, Trans::Yes, B, G * H, K, h.data(), K, w.data(), K, ref.data(), G * H);
    double err = 0;
    for (int64_t i = 0; i < B * G * H; ++i)
      err = std::fmax(err, std::fabs(out[i] - ref[i]) / (1 + std::fabs(ref[i])));
    if (err > 1e-4) {
      std::printf("recurrent step B=%lld: MISMATCH (max rel err %.2e)\n", (long long)B, err);
      std::exit(1);
    }
  }
  std::vector<double> times;
  for (int rep = 0; rep < 9; ++rep) {
    const double t0 = seconds();
    for (int64_t s = 0; s < steps; ++s) step(s);
    times.push_back((seconds() - t0) / steps);
  }
  std::sort(times.begin(), times.end());
  std::printf("LSTM step, %-15s B=%5lld H=%5lld K=%5lld threads=1: %7.1f GFLOP/s, %6.1f us "
              "(median of 9)\n", with_cell ? "product + cell" : "product only", (long long)B,
              (long long)H, (long long)K, 2.0 * B * G * H * K / times[4] * 1e-9, times[4] * 1e6);
}

// Packing a recurrent weight matrix W [G*H, K] into unit-block panels [K][G][W] (what every
// packed forward does per call, pack_units in csrc/cpu/recurrence.h), checked element by element
// against the definition, then timed.
void run_pack(int64_t H, int64_t K) {
  constexpr int G = 4, W = VecOf<float>::kWidth;
  const int64_t blocks = ceil_div(H, W);
  std::mt19937 gen(3);
  std::normal_distribution<float> dist;
  std::vector<float> w(G * H * K), out(blocks * K * G * W);
  for (auto& v : w) v = dist(gen);
  auto pack = [&] { pack_unit_blocks<G>(w.data(), H, K, out.data()); };
  pack();
  for (int64_t u = 0; u < blocks; ++u)
    for (int64_t k = 0; k < K; ++k)
      for (int g = 0; g < G; ++g)
        for (int c = 0; c < W; ++c) {
          const int64_t j = u * W + c;
          const float want = j < H ? w[(g * H + j) * K + k] : 0.0f;
          if (out[((u * K + k) * G + g) * W + c] != want) {
            std::printf("pack H=%lld K=%lld: MISMATCH\n", (long long)H, (long long)K);
            std::exit(1);
          }
        }
  std::vector<double> times;
  for (int rep = 0; rep < 9; ++rep) {
    const double t0 = seconds();
    pack();
    times.push_back(seconds() - t0);
  }
  std::sort(times.begin(), times.end());
  std::printf("pack W_hh of LSTM H=%-5lld K=%5lld threads=1: %7.1f us, %5.1f GB/s read+written "
              "(median of 9)\n", (long long)H, (long long)K, times[4] * 1e6,
              2.0 * sizeof(float) * G * H * K / times[4] * 1e-9);
}

}  // namespace

int main(int argc, char** argv) {
  const int threads = argc > 1 ? std::atoi(argv[1]) : 1;
  std::printf("ISA %s, %d-byte vectors\n", FASTRNN_ISA_NAME, FASTRNN_VEC_BYTES);
  run("input projection", Trans::No, Trans::Yes, 1600, 1024, 256, threads);
  run("input projection", Trans::No, Trans::Yes, 6400, 2048, 512, threads);
  run("dW = dG^T X", Trans::Yes, Trans::No, 2048, 512, 6400, threads);
  run("dX = dG W", Trans::No, Trans::No, 6400, 512, 2048, threads);
  run("square", Trans::No, Trans::No, 1024, 1024, 1024, threads);
  // Shallow products (weight gradients over one or a few rows) and few-row ones: gemm's direct
  // paths.
  run("dW over one row", Trans::Yes, Trans::No, 1536, 512, 1, threads);
  run("dW over four rows", Trans::Yes, Trans::No, 1536, 512, 4, threads);
  run("dW over eight rows", Trans::Yes, Trans::No, 2048, 1024, 8, threads);
  run("dW over nine rows (packed)", Trans::Yes, Trans::No, 2048, 1024, 9, threads);
  run("dX of one row", Trans::No, Trans::No, 1, 512, 1536, threads);
  // Narrow products (a 32- or 16-wide input's dW_ih and dX): narrower panels.
  run("dW_ih, 32-wide input", Trans::Yes, Trans::No, 128, 32, 6400, threads);
  run("dX, 32-wide input", Trans::No, Trans::No, 6400, 32, 128, threads);
  run("dX, 16-wide input", Trans::No, Trans::No, 6400, 16, 512, threads);
  run("dX, 40-wide input", Trans::No, Trans::No, 6400, 40, 512, threads);
  run("projection of one row", Trans::No, Trans::Yes, 1, 1536, 512, threads);
  run_pack(512, 512);
  run_pack(130, 67);  // a partial unit block and a K tail
  for (int64_t B : {1, 16, 64})
    for (int64_t H : {128, 256, 512})
      for (bool with_cell : {false, true}) run_step(B, H, 100, with_cell);
  return 0;
}
