"""Drop-in replacements for torch.nn's recurrent modules, running fastrnn's native kernels.

Each class subclasses its torch counterpart and overrides ``forward`` only, so constructor
arguments, parameters and their names, ``state_dict``, ``repr`` and ``isinstance`` checks are
torch's own. Input handling (batched/unbatched, batch_first, PackedSequence, initial states) and
every error follow torch's modules.
"""

from __future__ import annotations

import functools
from typing import List, Optional

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence

from . import _ops
from ._compile import refuse_torchscript

__all__ = ["RNN", "LSTM", "GRU", "RNNCell", "LSTMCell", "GRUCell"]


def _check_like_input(input: Tensor, tensors, what: str) -> None:
    """Same device and dtype as the input, as torch's kernels require (they raise RuntimeError)."""
    device, dtype = input.device, input.dtype
    for t in tensors:
        if t.device != device:
            raise RuntimeError(f"Input and {what} tensors are not at the same device, found input "
                               f"tensor at {input.device} and {what} tensor at {t.device}")
        if t.dtype != dtype:
            raise RuntimeError(f"Input and {what} tensors are not the same dtype, found input "
                               f"tensor with {input.dtype} and {what} tensor with {t.dtype}")


def _check_weight_shapes(weights, names, cell: str, num_layers: int, bidirectional: bool,
                         input_size: int, hidden_size: int, proj_size: int, bias: bool) -> None:
    """Each weight's shape is the one the module gave it: ``param.data = t`` can swap in any
    tensor later. torch's kernels mostly raise RuntimeError then (some read on unchecked)."""
    shapes = _ops.weight_shapes(cell, num_layers, 2 if bidirectional else 1, input_size,
                                hidden_size, proj_size, bias)
    for w, name, (_, shape) in zip(weights, names, shapes):
        if tuple(w.shape) != shape:
            raise RuntimeError(f"{name} has shape {list(w.shape)}, expected {list(shape)}")


def _autocast(input: Tensor, weights, states, low_precision_result: bool):
    """Inside an autocast region for input's device: (input, weights, states) cast to the dtype
    the op computes in (see _ops.autocast_dtype), and the dtype to return results in, chosen as
    torch's module returns them; outside one: everything unchanged and None.

    On CPU fastrnn computes in float32 and returns what torch 2.13's module returns: the autocast
    dtype where torch's op runs in it (``low_precision_result``: LSTM on padded input other than
    float16, RNN, RNNCell), else the promotion of the autocast dtype with the initial state's
    dtype (GRU, other LSTM calls, LSTMCell, GRUCell: their state math promotes). On CUDA
    results come out of the op in the autocast dtype already, as from cuDNN."""
    compute = _ops.autocast_dtype(input.device.type)
    if compute is None:
        return input, weights, states, None
    result = None
    if input.device.type == "cpu" and input.dtype != torch.float64:
        region = torch.get_autocast_dtype("cpu")
        state_dtype = states[0].dtype if states else input.dtype
        result = region if low_precision_result else torch.promote_types(region, state_dtype)
    cast = functools.partial(_ops.autocast_cast, dtype=compute)
    return cast(input), cast(weights), cast(states), result


def _check_batch_sizes(data: Tensor, batch_sizes: Tensor) -> List[int]:
    """batch_sizes as a list, after checking that they describe the data: a PackedSequence can be
    built by hand, and the native core trusts its batch_sizes for every row it reads and writes,
    so they must be a non-empty 1-D int64 CPU tensor of positive, non-increasing counts summing
    to the data's rows. torch's modules fail on such a PackedSequence with an error that depends
    on the cell and on h0 (RNN and GRU even ignore extra rows); fastrnn always raises
    RuntimeError."""
    if (batch_sizes.dim() != 1 or batch_sizes.dtype != torch.int64
            or batch_sizes.device.type != "cpu"):
        raise RuntimeError(f"PackedSequence batch_sizes must be a 1-D int64 CPU tensor, got a "
                           f"{batch_sizes.dim()}-D {batch_sizes.dtype} tensor on "
                           f"{batch_sizes.device}")
    sizes = batch_sizes.tolist()
    if not sizes or sizes[-1] < 1 or sizes != sorted(sizes, reverse=True):
        raise RuntimeError(f"PackedSequence batch_sizes must be non-empty, positive and "
                           f"non-increasing, got {sizes}")
    rows = data.shape[0] if data.dim() > 0 else 0
    if sum(sizes) != rows:
        raise RuntimeError(f"PackedSequence batch_sizes sum to {sum(sizes)} rows but its data has "
                           f"{rows} rows")
    return sizes


def _outside_fast_path(input) -> bool:
    """True unless ``input`` is a plain CPU tensor of a dtype the fast path plans for and nothing
    needs the general path: no autocast, compile, tracing or functorch transform (see
    _FastRNNBase._stream; 16-bit plans exist for a handful of rows only, see _ops.StreamPlan)."""
    dtype = input.dtype if type(input) is Tensor else None  # (identity tests: cheaper than `in`)
    return (dtype is None or not input.is_cpu
            or (dtype is not torch.float32 and dtype is not torch.float64
                and dtype is not torch.bfloat16 and dtype is not torch.float16)
            or torch._C._is_any_autocast_enabled() or _ops.capturing())


# StreamPlans by (configuration, input shape, dtype); None where the input does not fit the
# fast path. Bounded: a model fed many sequence lengths should not grow it without end.
_STREAM_PLANS: dict = {}
_STREAM_PLANS_MAX = 256
_UNPLANNED = object()


def _stream_plan(key, build) -> Optional[_ops.StreamPlan]:
    """The cached plan for ``key``, made by ``build()`` on a miss."""
    plan = _STREAM_PLANS.get(key, _UNPLANNED)
    if plan is _UNPLANNED:
        if len(_STREAM_PLANS) >= _STREAM_PLANS_MAX:
            _STREAM_PLANS.clear()
        plan = _STREAM_PLANS[key] = build()
    return plan


def _streamed(plan: Optional[_ops.StreamPlan], input: Tensor, hx, params):
    """plan.run's (output, hy, cy) when ``hx`` and the weights fit the plan, else None."""
    if plan is None:
        return None
    states = plan.states(hx)
    weights = None if states is None else plan.weights(params)
    return None if weights is None else plan.run(input, weights, *states)


_RNN_CELL_MODES = {"tanh": "RNN_TANH", "relu": "RNN_RELU"}
# A cell's weights in fastrnn::rnn's order, by its ``bias``.
_CELL_WEIGHTS = {True: ("weight_ih", "weight_hh", "bias_ih", "bias_hh"),
                 False: ("weight_ih", "weight_hh")}


class _FastRNNBase:
    """forward() shared by RNN, LSTM and GRU; the torch base class provides everything else."""

    __prepare_scriptable__ = refuse_torchscript

    def _dropout_masks(self, input: Tensor) -> List[Tensor]:
        """Masks between layers from torch's RNG (so torch.manual_seed makes runs repeatable),
        already scaled by 1/(1-p), shaped like the output for input [T, B, I] or [N, I]; the
        native core multiplies them into each layer's output."""
        if not (self.training and self.dropout > 0 and self.num_layers > 1):
            return []
        width = (2 if self.bidirectional else 1) * (self.proj_size or self.hidden_size)
        shape = tuple(input.shape[:-1]) + (width,)
        keep = 1.0 - self.dropout
        if keep == 0.0:
            return [input.new_zeros(shape) for _ in range(self.num_layers - 1)]
        return [input.new_empty(shape).bernoulli_(keep).div_(keep)
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

    def _weights(self) -> List[Tensor]:
        if torch.compiler.is_exporting():
            # export swaps in its own parameters; refreshing torch's cached list would assign a
            # module attribute, which export warns about.
            return [getattr(self, name) for name in self._flat_weights_names]
        # The common case, checked cheaply: every weight is still the registered parameter that
        # torch's cached list holds. torch's own check (_update_flat_weights) goes through
        # Module.__getattr__ per name, ~5 us for one layer: as much as a streamed step's kernel.
        # Swapped (functional_call) or parametrized weights fail the check and take torch's path.
        params, flat = self._parameters, self._flat_weights
        if all(params.get(name) is w for name, w in zip(self._flat_weights_names, flat)):
            return flat
        self._update_flat_weights()
        return self._flat_weights

    def _stream(self, input, hx):
        """The common call, checked and run with the least Python: streaming one step at a
        time pays this per step, in inference or training (the general path below costs
        20-40 us, the kernels of a small step a few). Taken for padded or unbatched input, or a
        PackedSequence whose sequences all have one length (see _stream_packed), on plain CPU
        tensors outside autocast, compile and functorch, without active dropout, when
        everything torch's checks look at is as they require; returns None for any other call,
        which the general path then runs (and raises torch's error for, if the call is
        wrong)."""
        if type(input) is PackedSequence:
            return self._stream_packed(input, hx)
        if not self._may_stream(input):
            return None
        key = self._plan_key(self.batch_first, input.shape, input.dtype)
        streamed = _streamed(_stream_plan(key, lambda: self._padded_plan(input)), input, hx,
                             self._parameters)
        if streamed is None:
            return None
        output, hy, cy = streamed
        return output, ((hy, cy) if cy is not None else hy)

    def _stream_packed(self, input: PackedSequence, hx):
        """_stream for a PackedSequence whose T steps all have the same B rows (a batch of one
        sequence, or of equal lengths): its data is then [T, B, I] time-major memory in sorted
        order, which the padded plan runs as it is, its output the packed output's data. The
        states are permuted to sorted order and back as in the general path. Other packings
        return None; malformed batch_sizes raise the general path's error."""
        data, batch_sizes, sorted_indices, unsorted_indices = input
        if not self._may_stream(data) or data.dim() != 2:
            return None
        sizes = _check_batch_sizes(data, batch_sizes)
        T, B = len(sizes), sizes[0]
        if sizes.count(B) != T:
            return None
        key = self._plan_key("packed", T, B, data.shape[1], data.dtype)
        plan = _stream_plan(key, lambda: self._plan(T, B, data.shape[1], data.dtype, True,
                                                    False, packed=True))
        if hx is not None:
            hx = self.permute_hidden(hx, sorted_indices)
        streamed = _streamed(plan, data, hx, self._parameters)
        if streamed is None:
            return None
        output, hy, cy = streamed
        return (PackedSequence(output, batch_sizes, sorted_indices, unsorted_indices),
                self.permute_hidden((hy, cy) if cy is not None else hy, unsorted_indices))

    def _plan_key(self, *layout) -> tuple:
        """The plan cache's key: this module's configuration and the input's ``layout``."""
        return (self.mode, self.input_size, self.hidden_size, self.proj_size, self.num_layers,
                self.bidirectional, self.bias, *layout)

    def _may_stream(self, input: Tensor) -> bool:
        """Whether a call on ``input`` (a padded input or a PackedSequence's data) may take the
        fast path at all."""
        return not (_outside_fast_path(input)
                    or (self.training and self.dropout > 0 and self.num_layers > 1))

    def _padded_plan(self, input: Tensor) -> Optional[_ops.StreamPlan]:
        """The StreamPlan for this module's configuration and a padded or unbatched input of
        this shape and dtype, or None when such input does not fit the fast path."""
        # The native core reads [T, B, I]. Unbatched [T, I] is that memory with B = 1, and so
        # is batch-first [B, T, I] when T or B is 1. Other batch-first input is copied
        # time-major and its output returned as a transposed view, as the general path (and
        # torch) does.
        batched, transposed = input.dim() == 3, False
        if batched:
            T, B, input_size = input.shape
            if self.batch_first:
                T, B = B, T
                transposed = T != 1 and B != 1
        elif input.dim() == 2:
            (T, input_size), B = input.shape, 1
        else:
            return None
        return self._plan(T, B, input_size, input.dtype, batched, transposed, packed=False)

    def _plan(self, T: int, B: int, input_size: int, dtype: torch.dtype, batched: bool,
              transposed: bool, packed: bool) -> Optional[_ops.StreamPlan]:
        """The StreamPlan for T steps of B rows of ``input_size`` features; its output is
        [T, B, width] (batch-first [B, T, width] unless transposed; [T, width] unbatched), or
        the [T * B, width] data of a packed output."""
        if T == 0 or B == 0 or input_size != self.input_size:
            return None
        hidden, layers = self.hidden_size, self.num_layers * (2 if self.bidirectional else 1)
        out = self.proj_size or hidden
        width = (2 if self.bidirectional else 1) * out
        state_lead = (layers, B) if batched else (layers,)
        h_shape, c_shape = state_lead + (out,), state_lead + (hidden,)
        if packed:
            output_shape = (T * B, width)
        elif not batched:
            output_shape = (T, width)
        else:
            output_shape = (B, T, width) if self.batch_first and not transposed else (T, B, width)
        is_lstm = self.mode == "LSTM"
        return _ops.stream_plan(
            self.mode, self.num_layers, self.bidirectional, self.proj_size, self.bias,
            input_size, hidden, T, B, dtype, self._flat_weights_names,
            (h_shape, c_shape if is_lstm else None),
            (output_shape, h_shape, c_shape if is_lstm else None), transposed)

    def forward(self, input, hx=None):
        streamed = self._stream(input, hx)
        if streamed is not None:
            return streamed
        weights = self._weights()
        is_lstm = self.mode == "LSTM"
        orig_input = input
        if isinstance(orig_input, PackedSequence):
            input, batch_sizes, sorted_indices, unsorted_indices = orig_input
            if not torch.compiler.is_compiling():  # a host read; the op checks the rows again
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
        states = () if hx is None else (tuple(hx) if is_lstm else (hx,))
        # torch's oneDNN LSTM returns the autocast dtype; float16 input (which oneDNN does not
        # take) and packed input go to its fallback, whose state math promotes.
        low_precision_result = self.mode.startswith("RNN") or (
            is_lstm and batch_sizes is None and input.dtype is not torch.float16)
        input, weights, states, result_dtype = _autocast(input, weights, states,
                                                         low_precision_result)
        _check_like_input(input, weights, "parameter")
        _check_weight_shapes(weights, self._flat_weights_names, self.mode, self.num_layers,
                             self.bidirectional, self.input_size, self.hidden_size,
                             self.proj_size, self.bias)
        _check_like_input(input, states, "hidden")
        h0, c0 = (states + (None, None))[:2]
        if batch_sizes is not None and h0 is None:
            # The packed path takes B from h0; zeros are what torch uses too. B is read from
            # sorted_indices' shape when there is one: no host read, one graph under compile.
            d = 2 if self.bidirectional else 1
            batch = sorted_indices.numel() if sorted_indices is not None else int(batch_sizes[0])
            h0 = input.new_zeros(self.num_layers * d, batch, self.proj_size or self.hidden_size)
            c0 = input.new_zeros(self.num_layers * d, batch, self.hidden_size) if is_lstm else None

        masks = self._dropout_masks(input)
        output, hy, cy = _ops.run_rnn(input, weights, h0, c0, batch_sizes, masks,
                                         self.mode, self.num_layers, self.bidirectional,
                                         self.proj_size, self.bias)
        if result_dtype is not None:
            output, hy, cy = (t.to(result_dtype) for t in (output, hy, cy))
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

    __prepare_scriptable__ = refuse_torchscript
    _MODE: str

    def _mode(self) -> Optional[str]:
        """The cell's name in fastrnn::rnn; None for an RNNCell nonlinearity it does not know."""
        return self._MODE

    def _stream(self, input: Tensor, hx, is_lstm: bool):
        """_FastRNNBase._stream for a cell: batched input [B, I], states [B, H]."""
        if _outside_fast_path(input) or input.dim() != 2:
            return None
        mode = self._mode()
        key = (mode, self.input_size, self.hidden_size, self.bias, input.shape, input.dtype)
        streamed = _streamed(_stream_plan(key, lambda: self._stream_plan(mode, input, is_lstm)),
                             input, hx, self._parameters)
        if streamed is None:
            return None
        _, h, c = streamed
        return (h, c) if is_lstm else h

    def _stream_plan(self, mode: Optional[str], input: Tensor,
                     is_lstm: bool) -> Optional[_ops.StreamPlan]:
        """_FastRNNBase._stream_plan for a cell, whose one step is a one-layer stack's T = 1."""
        batch, input_size = input.shape
        if mode is None or batch == 0 or input_size != self.input_size:
            return None
        state = (batch, self.hidden_size)
        return _ops.stream_plan(mode, 1, False, 0, self.bias, input_size, self.hidden_size, 1,
                               batch, input.dtype, _CELL_WEIGHTS[self.bias],
                               (state, state if is_lstm else None),
                               (None, state, state if is_lstm else None))

    def _step(self, input: Tensor, hx, is_lstm: bool):
        streamed = self._stream(input, hx, is_lstm)
        if streamed is not None:
            return streamed
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
        mode = self._mode()
        if mode is None:
            raise RuntimeError(f"Unknown nonlinearity: {self.nonlinearity}")
        input, weights, states, result_dtype = _autocast(input, weights, states,
                                                         mode.startswith("RNN"))
        if input.dtype != weights[0].dtype:
            raise RuntimeError(f"{name}: input dtype ({input.dtype}) does not match weight dtype "
                               f"({weights[0].dtype})")
        _check_like_input(input, weights, "parameter")
        _check_weight_shapes(weights, _CELL_WEIGHTS[self.bias], mode, 1, False, self.input_size,
                             self.hidden_size, 0, self.bias)
        _check_like_input(input, states, "hidden")
        h0 = states[0].unsqueeze(0) if states else None
        c0 = states[1].unsqueeze(0) if is_lstm and states else None
        _, hy, cy = _ops.run_rnn(input.unsqueeze(0), weights, h0, c0, None, [], mode, 1,
                                    False, 0, self.bias)
        h, c = hy[0], cy[0] if is_lstm else None
        if result_dtype is not None:
            h, c = h.to(result_dtype), (c.to(result_dtype) if is_lstm else None)
        if not is_batched:
            h, c = h.squeeze(0), (c.squeeze(0) if is_lstm else None)
        return (h, c) if is_lstm else h


class RNNCell(_FastCellBase, nn.RNNCell):
    """``torch.nn.RNNCell`` (tanh or relu) on fastrnn's kernels."""

    def _mode(self) -> Optional[str]:
        return _RNN_CELL_MODES.get(self.nonlinearity)

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
