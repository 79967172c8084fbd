"""Reference multi-layer RNN/LSTM/GRU as a plain loop of torch ops (differentiable by autograd).

Same arguments and meaning as the custom op ``fastrnn::rnn`` (see fastrnn/_ops.py), without the
reserve: returns (output, hy, cy), cy empty unless LSTM.
"""

from __future__ import annotations

from typing import List, Optional

import torch
from torch import Tensor


def _cell(cell: str, x: Tensor, h: Tensor, c: Optional[Tensor], w_ih, w_hh, b_ih, b_hh, w_hr):
    xg = x @ w_ih.t() + (b_ih if b_ih is not None else 0)
    hg = h @ w_hh.t() + (b_hh if b_hh is not None else 0)
    if cell == "RNN_TANH":
        return torch.tanh(xg + hg), None
    if cell == "RNN_RELU":
        return torch.relu(xg + hg), None
    if cell == "GRU":
        xr, xz, xn = xg.chunk(3, 1)
        hr, hz, hn = hg.chunk(3, 1)
        r, z = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
        n = torch.tanh(xn + r * hn)
        return (1 - z) * n + z * h, None
    i, f, g, o = (xg + hg).chunk(4, 1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    h = torch.sigmoid(o) * torch.tanh(c)
    return (h @ w_hr.t() if w_hr is not None else h), c


def rnn_stack(input: Tensor, weights: List[Tensor], hx: Optional[Tensor], cx: Optional[Tensor],
              batch_sizes: Optional[Tensor], dropout_masks: List[Tensor], cell: str,
              num_layers: int, bidirectional: bool, proj_size: int, has_bias: bool):
    D = 2 if bidirectional else 1
    per = 2 + 2 * has_bias + (proj_size > 0)
    gates = {"RNN_TANH": 1, "RNN_RELU": 1, "GRU": 3, "LSTM": 4}[cell]
    H = weights[1].shape[0] // gates
    O = proj_size or H
    if batch_sizes is None:
        T, B = input.shape[:2]
        sizes = [B] * T
        rows = input.reshape(T * B, -1)
    else:
        sizes = batch_sizes.tolist()
        B, T, rows = sizes[0], len(sizes), input
    offsets = [0]
    for s in sizes:
        offsets.append(offsets[-1] + s)
    h0 = hx if hx is not None else input.new_zeros(num_layers * D, B, O)
    c0 = cx if cx is not None else input.new_zeros(num_layers * D, B, H)
    hys, cys = [], []
    layer_in = rows
    for layer in range(num_layers):
        outs = []
        for d in range(D):
            w = weights[(layer * D + d) * per:(layer * D + d + 1) * per]
            w_ih, w_hh = w[0], w[1]
            b_ih, b_hh = (w[2], w[3]) if has_bias else (None, None)
            w_hr = w[-1] if proj_size > 0 else None
            h, c = h0[layer * D + d], c0[layer * D + d]
            step_out = [None] * T
            for t in (reversed(range(T)) if d == 1 else range(T)):
                bs = sizes[t]
                x_t = layer_in[offsets[t]:offsets[t] + bs]
                h_new, c_new = _cell(cell, x_t, h[:bs], c[:bs], w_ih, w_hh, b_ih, b_hh, w_hr)
                h = torch.cat([h_new, h[bs:]])
                if c_new is not None:
                    c = torch.cat([c_new, c[bs:]])
                step_out[t] = h_new
            outs.append(torch.cat(step_out))
            hys.append(h)
            cys.append(c)
        layer_out = torch.cat(outs, 1)
        if layer < num_layers - 1 and dropout_masks:
            layer_in = layer_out * dropout_masks[layer].reshape(layer_out.shape)
        else:
            layer_in = layer_out
    output = layer_in.reshape(input.shape[:-1] + (D * O,))
    cy = torch.stack(cys) if cell == "LSTM" else input.new_empty(0)
    return output, torch.stack(hys), cy
