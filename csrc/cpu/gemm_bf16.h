// Products of bfloat16 operands with float32 sums, on AVX-512 BF16 (vdpbf16ps). Compiled only
// into the avx512bf16 kernels (see isa.h), for the first layer's input projection when the
// caller's input and W_ih are bfloat16 (RnnForwardArgs::bf16_input).
//
// A product of two bfloat16 values is exact in float32, and vdpbf16ps adds two of them per lane
// into a float32 sum, so these tiles compute what the float32 tile computes on the widened
// values, at twice its rate (16 lanes x 2 products per instruction), with two differences: the
// order in which each pair of products joins the sum, and the instruction's treatment of denormal
// inputs and results as zero (bfloat16 values below 2^-126).
#pragma once

#if !defined(__AVX512BF16__)
#error "gemm_bf16.h is for translation units compiled with AVX-512 BF16"
#endif

#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "cpu/gemm.h"

namespace fastrnn::cpu::FASTRNN_ISA {

constexpr int kBf16Lanes = VecOf<float>::kWidth;

// Packs rows [0, rows) of src [.., K] (row stride ld) as one lane group of a pair-packed panel:
// dst[p * dst_stride + c] = src[c][2p] | src[c][2p + 1] << 16 for p < ceil(K / 2) and
// c < kBf16Lanes, the halves past K and the lanes c >= rows zero.
inline void pack_bf16_pairs(const Bf16Bits* src, int64_t ld, int64_t rows, int64_t K,
                            int64_t dst_stride, uint32_t* dst) {
  const int64_t pairs = (K + 1) / 2;
  for (int c = 0; c < kBf16Lanes; ++c) {
    if (c >= rows) {
      for (int64_t p = 0; p < pairs; ++p) dst[p * dst_stride + c] = 0;
      continue;
    }
    const Bf16Bits* row = src + c * ld;
    for (int64_t p = 0; p < K / 2; ++p) {
      dst[p * dst_stride + c] = row[2 * p] | uint32_t{row[2 * p + 1]} << 16;
    }
    if (K % 2) dst[(pairs - 1) * dst_stride + c] = row[K - 1];
  }
}

// acc[r][g] = sum_k A[r][k] * panel for r < R, A bfloat16 rows of stride lda, panel pair-packed
// [ceil(K / 2)][G][kBf16Lanes]; R fixed at compile time as in accumulate_rows().
template <int G, int R>
inline void accumulate_rows_bf16(int rows, int64_t K, const Bf16Bits* a, int64_t lda,
                                 const uint32_t* panel,
                                 VecOf<float> (&out)[tile_rows<G>()][G]) {
  if constexpr (R > 1) {
    if (rows < R) return accumulate_rows_bf16<G, R - 1>(rows, K, a, lda, panel, out);
  }
  __m512 acc[R][G];
  for (int r = 0; r < R; ++r)
    for (int g = 0; g < G; ++g) acc[r][g] = _mm512_setzero_ps();
  // One pair of k: `pair(r)` gives row r's two values as one 32-bit word.
  auto step = [&](int64_t p, auto&& pair) {
    __m512bh b[G];
    for (int g = 0; g < G; ++g) {
      b[g] = (__m512bh)_mm512_loadu_si512(panel + (p * G + g) * kBf16Lanes);
    }
    for (int r = 0; r < R; ++r) {
      const __m512bh av = (__m512bh)_mm512_set1_epi32(static_cast<int>(pair(r)));
      for (int g = 0; g < G; ++g) acc[r][g] = _mm512_dpbf16_ps(acc[r][g], av, b[g]);
    }
  };
  const int64_t whole = K / 2;
  for (int64_t p = 0; p < whole; ++p) {
    step(p, [&](int r) {
      uint32_t word;
      std::memcpy(&word, a + r * lda + 2 * p, sizeof word);
      return word;
    });
  }
  // An odd K's last value, paired with zero (as the panel's last pair is).
  if (K % 2) step(whole, [&](int r) { return uint32_t{a[r * lda + K - 1]}; });
  for (int r = 0; r < R; ++r)
    for (int g = 0; g < G; ++g) out[r][g] = VecOf<float>::from(acc[r][g]);
}

// The bfloat16 counterpart of tile(): acc = A[rows, K] @ panel for 1 <= rows <=
// tile_rows<G>(), then epilogue(acc).
template <int G, class Epilogue>
inline void tile_bf16(int rows, int64_t K, const Bf16Bits* a, int64_t lda, const uint32_t* panel,
                      Epilogue&& epilogue) {
  VecOf<float> acc[tile_rows<G>()][G];
  accumulate_rows_bf16<G, tile_rows<G>()>(rows, K, a, lda, panel, acc);
  epilogue(acc);
}

}  // namespace fastrnn::cpu::FASTRNN_ISA
