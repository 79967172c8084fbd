// GRU cell, pointwise part (torch's gate order r, z, n; torch's n gate keeps r outside W_hn):
//   r = s(xr + hr), z = s(xz + hz), n = tanh(xn + r * hn),  hn = h_prev W_hn^T + b_hn
//   h = (1 - z) * n + z * h_prev
// Saved for backward: r, z, n and hn (hn is needed for dr and cannot be recovered from h).
// Interface: see cells/rnn.h.
#pragma once

#include "cells/math.h"

namespace fastrnn::cells {

struct Gru {
  static constexpr int kGates = 3;
  static constexpr int kSaved = 4;  // r, z, n, hn
  static constexpr bool kHasCell = false;
  static constexpr bool kDirectHPath = true;

  template <class V>
  FASTRNN_HD static void forward(const V* xp, const V* hp, V h_prev, V /*c_prev*/, V* saved,
                                 V& /*c*/, V& h) {
    const V r = act::sigmoid(xp[0] + hp[0]);
    const V z = act::sigmoid(xp[1] + hp[1]);
    const V hn = hp[2];
    const V n = act::tanh(xp[2] + r * hn);
    h = (V(1) - z) * n + z * h_prev;
    saved[0] = r;
    saved[1] = z;
    saved[2] = n;
    saved[3] = hn;
  }

  template <class V>
  FASTRNN_HD static void backward(V dh, V /*dc*/, const V* saved, V /*c*/, V /*c_prev*/,
                                  V h_prev, V* dxp, V* dhp, V& /*dc_prev*/, V& dh_prev) {
    const V r = saved[0], z = saved[1], n = saved[2], hn = saved[3];
    const V one(1);
    const V dn_pre = dh * (one - z) * (one - n * n);
    const V dr_pre = dn_pre * hn * r * (one - r);
    const V dz_pre = dh * (h_prev - n) * z * (one - z);
    dxp[0] = dr_pre;
    dxp[1] = dz_pre;
    dxp[2] = dn_pre;
    dhp[0] = dr_pre;
    dhp[1] = dz_pre;
    dhp[2] = dn_pre * r;
    dh_prev = dh * z;
  }
};

}  // namespace fastrnn::cells
