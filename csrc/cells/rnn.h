// Vanilla RNN cell, pointwise part: h = act(x_pre + h_pre), act = tanh or relu.
//
// Every cell header exposes the same interface, for one hidden unit j of one row, so that a
// generic driver (CPU loop, CUDA thread) can run any cell:
//   kGates     gate blocks in W_ih / W_hh (G)
//   kSaved     blocks of H values per row saved for backward
//   kHasCell   whether the cell has a c state (LSTM)
//   kDirectHPath whether dL/dh_prev has a part that bypasses W_hh (GRU's z * h_prev)
//   forward(xp[kGates], hp[kGates], h_prev, c_prev, saved[kSaved], c, h)
//     xp: input pre-activations (x W_ih^T + b_ih), hp: recurrent ones (h W_hh^T + b_hh)
//   backward(dh, dc, saved[kSaved], c, c_prev, h_prev, dxp[kGates], dhp[kGates], dc_prev, dh_prev)
//     dxp: gradient w.r.t. xp, dhp: w.r.t. hp (they differ only for GRU's n gate),
//     dh_prev: the part of dL/dh_prev that does not go through W_hh (GRU's z path), else 0.
#pragma once

#include "cells/math.h"

namespace fastrnn::cells {

template <bool kRelu>
struct Rnn {
  static constexpr int kGates = 1;
  static constexpr int kSaved = 1;  // h itself
  static constexpr bool kHasCell = false;
  static constexpr bool kDirectHPath = false;

  template <class V>
  FASTRNN_HD static void forward(const V* xp, const V* hp, V /*h_prev*/, V /*c_prev*/, V* saved,
                                 V& /*c*/, V& h) {
    const V pre = xp[0] + hp[0];
    if constexpr (kRelu) {
      h = act::relu(pre);
    } else {
      h = act::tanh(pre);
    }
    saved[0] = h;
  }

  template <class V>
  FASTRNN_HD static void backward(V dh, V /*dc*/, const V* saved, V /*c*/, V /*c_prev*/,
                                  V /*h_prev*/, V* dxp, V* dhp, V& /*dc_prev*/, V& dh_prev) {
    const V h = saved[0];
    V dpre;
    if constexpr (kRelu) {
      dpre = dh * act::relu_grad_mask(h);
    } else {
      dpre = dh * (V(1) - h * h);
    }
    dxp[0] = dpre;
    dhp[0] = dpre;
    dh_prev = V(0);
  }
};

using RnnTanh = Rnn<false>;
using RnnRelu = Rnn<true>;

}  // namespace fastrnn::cells
