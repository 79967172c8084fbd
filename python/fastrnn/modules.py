"""Drop-in replacements for torch.nn's recurrent modules, running fastrnn's native kernels.

Each class subclasses its torch counterpart and overrides ``forward`` only, so constructor
arguments, parameters and their names, ``state_dict``, ``repr`` and ``isinstance`` checks are
torch's own. Input handling (batched/unbatched, batch_first, PackedSequence, initial states) and
every error follow torch's modules.
"""

from __future__ import annotations

from typing import List, Optional

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence

from . import _ops

__all__ = ["RNN", "LSTM", "GRU", "RNNCell", "LSTMCell", "GRUCell"]


def _check_like_input(input: Tensor, tensors, what: str) -> None:
    """Same device and dtype as the input, as torch's kernels require (they raise RuntimeError)."""
    for t in tensors:
        if t.device != input.device:
            raise RuntimeError(f"Input and {what} tensors are not at the same device, found input "
                               f"tensor at {input.device} and {what} tensor at {t.device}")
        if t.dtype != input.dtype:
            raise RuntimeError(f"Input and {what} tensors are not the same dtype, found input "
                               f"tensor with {input.dtype} and {what} tensor with {t.dtype}")


def _check_batch_sizes(data: Tensor, batch_sizes: Tensor) -> None:
    """A PackedSequence can be built by hand, and the native core trusts its batch_sizes for every
    row it reads and writes, so they must describe the data: a non-empty 1-D int64 CPU tensor of
    positive, non-increasing counts summing to the data's rows. torch's modules fail on such a
    PackedSequence with an error that depends on the cell and on h0 (RNN and GRU even ignore extra
    rows); fastrnn always raises RuntimeError."""
    if (batch_sizes.dim() != 1 or batch_sizes.dtype != torch.int64
            or batch_sizes.device.type != "cpu"):
        raise RuntimeError(f"PackedSequence batch_sizes must be a 1-D int64 CPU tensor, got a "
                           f"{batch_sizes.dim()}-D {batch_sizes.dtype} tensor on "
                           f"{batch_sizes.device}")
    sizes = batch_sizes.tolist()
    if not sizes or sizes[-1] < 1 or any(a < b for a, b in zip(sizes, sizes[1:])):
        raise RuntimeError(f"PackedSequence batch_sizes must be non-empty, positive and "
                           f"non-increasing, got {sizes}")
    rows = data.shape[0] if data.dim() > 0 else 0
    if sum(sizes) != rows:
        raise RuntimeError(f"PackedSequence batch_sizes sum to {sum(sizes)} rows but its data has "
                           f"{rows} rows")


class _FastRNNBase:
    """forward() shared by RNN, LSTM and GRU; the torch base class provides everything else."""

    def _dropout_masks(self, rows_shape, like: Tensor) -> List[Tensor]:
        """Masks between layers from torch's RNG (so torch.manual_seed makes runs repeatable),
        already scaled by 1/(1-p); the native core multiplies them into each layer's output."""
        if not (self.training and self.dropout > 0 and self.num_layers > 1):
            return []
        width = (2 if self.bidirectional else 1) * (self.proj_size or self.hidden_size)
        shape = tuple(rows_shape) + (width,)
        keep = 1.0 - self.dropout
        if keep == 0.0:
            return [like.new_zeros(shape) for _ in range(self.num_layers - 1)]
        return [like.new_empty(shape).bernoulli_(keep).div_(keep)
                for _ in range(self.num_layers - 1)]

    def _batched_hidden(self, hx, is_batched: bool):
        """Checks hx's rank against the input's and adds the batch dimension when unbatched."""
        is_lstm = self.mode == "LSTM"
        states = hx if is_lstm else (hx,)
        want = 3 if is_batched else 2
        if any(h.dim() != want for h in states):
            kind = "batched 3-D" if is_batched else "unbatched 2-D"
            if is_lstm:
                raise RuntimeError(f"For {kind} input, hx and cx should also be {want}-D but got "
                                   f"({states[0].dim()}-D, {states[1].dim()}-D) tensors")
            raise RuntimeError(f"For {kind} input, hx should also be {want}-D but got "
                               f"{states[0].dim()}-D tensor")
        if is_batched:
            return hx
        return tuple(h.unsqueeze(1) for h in hx) if is_lstm else hx.unsqueeze(1)

    def forward(self, input, hx=None):
        self._update_flat_weights()
        is_lstm = self.mode == "LSTM"
        orig_input = input
        if isinstance(orig_input, PackedSequence):
            input, batch_sizes, sorted_indices, unsorted_indices = orig_input
            _check_batch_sizes(input, batch_sizes)
            is_batched = True
            if hx is not None:
                hx = self.permute_hidden(hx, sorted_indices)
        else:
            batch_sizes = sorted_indices = unsorted_indices = None
            if input.dim() not in (2, 3):
                name = type(self).__name__
                raise ValueError(f"{name}: Expected input to be 2D or 3D, got {input.dim()}D "
                                 f"{'tensor ' if name == 'RNN' else ''}instead")
            is_batched = input.dim() == 3
            batch_dim = 0 if self.batch_first else 1
            if not is_batched:
                input = input.unsqueeze(batch_dim)
            if hx is not None:
                hx = self._batched_hidden(hx, is_batched)

        # torch's own checks, so errors and messages are torch's: input rank/size/dtype, hidden
        # shapes.
        if hx is None:
            self.check_input(input, batch_sizes)
        else:
            self.check_forward_args(input, hx, batch_sizes)
        if batch_sizes is None:
            if self.batch_first:
                input = input.transpose(0, 1)
            if input.size(0) == 0:
                raise RuntimeError("Expected sequence length to be larger than 0 in RNN")
        if is_lstm and hx is not None and len(hx) != 2:
            raise RuntimeError("lstm expects two hidden states")
        h0, c0 = (hx if is_lstm else (hx, None)) if hx is not None else (None, None)
        _check_like_input(input, self._flat_weights, "parameter")
        _check_like_input(input, [h for h in (h0, c0) if h is not None], "hidden")
        if batch_sizes is not None and h0 is None:
            # The packed path takes B from h0; zeros are what torch uses too.
            d = 2 if self.bidirectional else 1
            batch = int(batch_sizes[0])
            h0 = input.new_zeros(self.num_layers * d, batch, self.proj_size or self.hidden_size)
            c0 = input.new_zeros(self.num_layers * d, batch, self.hidden_size) if is_lstm else None

        masks = self._dropout_masks(input.shape[:-1], input)
        output, hy, cy, _ = _ops.run_rnn(input, self._flat_weights, h0, c0, batch_sizes, masks,
                                         self.mode, self.num_layers, self.bidirectional,
                                         self.proj_size, self.bias)
        hidden = (hy, cy) if is_lstm else hy
        if batch_sizes is not None:
            return (PackedSequence(output, batch_sizes, sorted_indices, unsorted_indices),
                    self.permute_hidden(hidden, unsorted_indices))
        if self.batch_first:
            output = output.transpose(0, 1)
        if not is_batched:
            output = output.squeeze(batch_dim)
            hidden = (hy.squeeze(1), cy.squeeze(1)) if is_lstm else hy.squeeze(1)
        return output, hidden


class RNN(_FastRNNBase, nn.RNN):
    """``torch.nn.RNN`` (tanh or relu) on fastrnn's kernels."""


class LSTM(_FastRNNBase, nn.LSTM):
    """``torch.nn.LSTM`` (including ``proj_size``) on fastrnn's kernels."""


class GRU(_FastRNNBase, nn.GRU):
    """``torch.nn.GRU`` on fastrnn's kernels."""


class _FastCellBase:
    """forward() shared by the cells: one step of a one-layer stack through ``fastrnn::rnn``."""

    _MODE: str

    def _mode(self) -> str:
        return self._MODE

    def _step(self, input: Tensor, hx, is_lstm: bool):
        name = type(self).__name__
        if input.dim() not in (1, 2):
            raise ValueError(f"{name}: Expected input to be 1D or 2D, got {input.dim()}D instead")
        states = () if hx is None else (tuple(hx) if is_lstm else (hx,))
        for idx, h in enumerate(states):
            if h.dim() not in (1, 2):
                what = f"hx[{idx}]" if is_lstm else "hidden"
                raise ValueError(f"{name}: Expected {what} to be 1D or 2D, got {h.dim()}D instead")
        if is_lstm and hx is not None:
            if isinstance(hx, Tensor):
                raise TypeError("lstm_cell(): argument 'hx' (position 2) must be tuple of Tensors, "
                                "not Tensor")
            if len(hx) != 2:
                raise RuntimeError("lstm_cell expects two hidden states")
        is_batched = input.dim() == 2
        if not is_batched:
            input = input.unsqueeze(0)
            states = tuple(h.unsqueeze(0) for h in states)
        if input.size(1) != self.input_size:
            raise RuntimeError(f"input has inconsistent input_size: got {input.size(1)} "
                               f"expected {self.input_size}")
        for idx, h in enumerate(states):
            if h.dim() != 2 or h.size(0) != input.size(0):
                raise RuntimeError(f"Input batch size {input.size(0)} doesn't match hidden{idx} "
                                   f"batch size {h.size(0) if h.dim() == 2 else list(h.shape)}")
            if h.size(1) != self.hidden_size:
                raise RuntimeError(f"hidden{idx} has inconsistent hidden_size: got {h.size(1)}, "
                                   f"expected {self.hidden_size}")
        weights = [self.weight_ih, self.weight_hh]
        if self.bias:
            weights += [self.bias_ih, self.bias_hh]
        if input.dtype != self.weight_ih.dtype:
            raise RuntimeError(f"{name}: input dtype ({input.dtype}) does not match weight dtype "
                               f"({self.weight_ih.dtype})")
        _check_like_input(input, weights, "parameter")
        _check_like_input(input, states, "hidden")
        h0 = states[0].unsqueeze(0) if states else None
        c0 = states[1].unsqueeze(0) if is_lstm and states else None
        _, hy, cy, _ = _ops.run_rnn(input.unsqueeze(0), weights, h0, c0, None, [], self._mode(),
                                    1, False, 0, self.bias)
        h, c = hy[0], cy[0] if is_lstm else None
        if not is_batched:
            h, c = h.squeeze(0), (c.squeeze(0) if is_lstm else None)
        return (h, c) if is_lstm else h


class RNNCell(_FastCellBase, nn.RNNCell):
    """``torch.nn.RNNCell`` (tanh or relu) on fastrnn's kernels."""

    def _mode(self) -> str:
        if self.nonlinearity not in ("tanh", "relu"):
            raise RuntimeError(f"Unknown nonlinearity: {self.nonlinearity}")
        return "RNN_TANH" if self.nonlinearity == "tanh" else "RNN_RELU"

    def forward(self, input: Tensor, hx: Optional[Tensor] = None) -> Tensor:
        return self._step(input, hx, is_lstm=False)


class LSTMCell(_FastCellBase, nn.LSTMCell):
    """``torch.nn.LSTMCell`` on fastrnn's kernels."""

    _MODE = "LSTM"

    def forward(self, input: Tensor, hx=None):
        return self._step(input, hx, is_lstm=True)


class GRUCell(_FastCellBase, nn.GRUCell):
    """``torch.nn.GRUCell`` on fastrnn's kernels."""

    _MODE = "GRU"

    def forward(self, input: Tensor, hx: Optional[Tensor] = None) -> Tensor:
        return self._step(input, hx, is_lstm=False)
