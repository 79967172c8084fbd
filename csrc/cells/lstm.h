// LSTM cell, pointwise part (torch's gate order i, f, g, o):
//   i = s(xi + hi), f = s(xf + hf), g = tanh(xg + hg), o = s(xo + ho)
//   c = f * c_prev + i * g,  h = o * tanh(c)
// Saved for backward: the four activated gates (c is saved by the driver).
// Interface: see cells/rnn.h.
#pragma once

#include "cells/math.h"

namespace fastrnn::cells {

struct Lstm {
  static constexpr int kGates = 4;
  static constexpr int kSaved = 4;  // i, f, g, o after activation
  static constexpr bool kHasCell = true;
  static constexpr bool kDirectHPath = false;

  template <class V>
  FASTRNN_HD static void forward(const V* xp, const V* hp, V /*h_prev*/, V c_prev, V* saved,
                                 V& c, V& h) {
    const V i = act::sigmoid(xp[0] + hp[0]);
    const V f = act::sigmoid(xp[1] + hp[1]);
    const V g = act::tanh(xp[2] + hp[2]);
    const V o = act::sigmoid(xp[3] + hp[3]);
    c = f * c_prev + i * g;
    h = o * act::tanh(c);
    saved[0] = i;
    saved[1] = f;
    saved[2] = g;
    saved[3] = o;
  }

  template <class V>
  FASTRNN_HD static void backward(V dh, V dc, const V* saved, V c, V c_prev, V /*h_prev*/,
                                  V* dxp, V* dhp, V& dc_prev, V& dh_prev) {
    const V i = saved[0], f = saved[1], g = saved[2], o = saved[3];
    const V tanh_c = act::tanh(c);
    const V dc_total = dc + dh * o * (V(1) - tanh_c * tanh_c);
    const V one(1);
    dxp[0] = dc_total * g * i * (one - i);
    dxp[1] = dc_total * c_prev * f * (one - f);
    dxp[2] = dc_total * i * (one - g * g);
    dxp[3] = dh * tanh_c * o * (one - o);
    for (int k = 0; k < kGates; ++k) dhp[k] = dxp[k];
    dc_prev = dc_total * f;
    dh_prev = V(0);
  }
};

}  // namespace fastrnn::cells
