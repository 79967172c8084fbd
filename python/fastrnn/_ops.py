"""Custom ops (``torch.library``) over the native core: the only code that calls ``_C``.

``fastrnn::rnn`` runs a whole stack (layers x directions) over a padded [T, B, I] or packed
[N, I] (+ batch_sizes) input; ``fastrnn::rnn_backward`` is its backprop-through-time.
Each op has a fake implementation (shapes only) for torch.compile / export, and ``rnn`` has
autograd registered. The modules' common calls (plain CPU tensors, no autocast, compile or
functorch) go through a ``StreamPlan``, which checks and runs them with the least Python
(``_PlannedRnn`` under autograd); every other call goes through ``run_rnn``, which takes the op
only where the dispatcher is needed (compile, export, jit.trace, tensor subclasses, CUDA, meta)
and otherwise runs the same implementation and autograd formula without it (``_EagerRnn``, or
no autograd at all; functorch transforms always get ``_EagerRnn``, or ``_EagerRnnInference``
with grad mode off, which have batching rules).
The modules check their arguments as torch does before calling; the op itself checks every
shape the native core computes addresses from (``_sizes``), which is what a weight replaced
through ``param.data`` or a direct caller can get wrong.
"""

from __future__ import annotations

import functools
import threading
from typing import List, Optional, Tuple

import torch
from torch import Tensor

from . import _C
from ._batching import fold_rows, per_sample, reserve_folded, reserve_per_sample, unfold_rows
from ._backend import compute_dtype, cuda_module, native_dtype
from ._double_backward import differentiable_gradients, rerun_jvp, torch_rnn

__all__ = ["rnn", "run_rnn", "StreamPlan", "recording", "capturing", "rnn_backward",
           "CELL_GATES", "weight_shapes"]

# Gates per cell (G): rows of W_ih / W_hh are G * hidden_size.
CELL_GATES = {"RNN_TANH": 1, "RNN_RELU": 1, "LSTM": 4, "GRU": 3}
_CELL_KINDS = {
    "RNN_TANH": _C.CellKind.RNN_TANH,
    "RNN_RELU": _C.CellKind.RNN_RELU,
    "LSTM": _C.CellKind.LSTM,
    "GRU": _C.CellKind.GRU,
}
_CELL_KIND_CODES = {cell: int(kind) for cell, kind in _CELL_KINDS.items()}


def _ptr(t: Optional[Tensor]) -> int:
    return 0 if t is None or t.numel() == 0 else t.data_ptr()


_WEIGHT_KINDS = ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr")


def weight_shapes(cell: str, num_layers: int, num_directions: int, input_size: int,
                  hidden: int, proj_size: int, has_bias: bool) -> Tuple[Tuple[str, tuple], ...]:
    """torch's flat weight list of a configuration as (name, shape) pairs, in its order: per
    layer and direction weight_ih [G*H, layer input], weight_hh [G*H, O], with a bias bias_ih
    and bias_hh [G*H], with a projection weight_hr [P, H]; names as torch's RNN modules give
    them (weight_hh_l0_reverse)."""
    gates, out = CELL_GATES[cell] * hidden, proj_size or hidden
    kinds = _WEIGHT_KINDS[:2] + (_WEIGHT_KINDS[2:4] if has_bias else ()) + (
        _WEIGHT_KINDS[4:] if proj_size else ())
    entries = []
    for layer in range(num_layers):
        shapes = dict(zip(_WEIGHT_KINDS, (
            (gates, input_size if layer == 0 else num_directions * out), (gates, out),
            (gates,), (gates,), (proj_size, hidden))))
        for direction in range(num_directions):
            suffix = f"_l{layer}" + ("_reverse" if direction else "")
            entries += [(kind + suffix, shapes[kind]) for kind in kinds]
    return tuple(entries)


def _check_shape(t: Tensor, want: tuple, what: str) -> None:
    if tuple(t.shape) != want:
        raise RuntimeError(f"fastrnn.rnn: {what} has shape {list(t.shape)}, expected "
                           f"{list(want)}")


def _sizes(input: Tensor, weights: List[Tensor], hx: Optional[Tensor], cx: Optional[Tensor],
           batch_sizes, dropout_masks: List[Tensor], cell: str, num_layers: int,
           bidirectional: bool, proj_size: int, has_bias: bool):
    """(T, B, N, H, O, D) of a call, B from hx for packed input (hx is required there), after
    checking every tensor's shape against them: the native core trusts the shapes for every
    address it computes. The modules check their arguments as torch does before calling; these
    checks catch what they cannot see (a weight replaced through ``param.data``) and direct
    callers of the op."""
    D = 1 + bidirectional
    per = 2 + 2 * has_bias + (proj_size > 0)
    if len(weights) != num_layers * D * per:
        raise ValueError(f"fastrnn: expected {num_layers * D * per} weight tensors, got "
                         f"{len(weights)}")
    if weights[1].dim() != 2 or weights[1].shape[0] % CELL_GATES[cell] or weights[1].numel() == 0:
        raise RuntimeError(f"fastrnn.rnn: weight_hh_l0 must be a non-empty matrix of "
                           f"{CELL_GATES[cell]} x hidden_size rows for {cell}, got shape "
                           f"{list(weights[1].shape)}")
    hidden = weights[1].shape[0] // CELL_GATES[cell]
    out = proj_size if proj_size > 0 else hidden
    if input.dim() != (3 if batch_sizes is None else 2):
        raise RuntimeError(f"fastrnn.rnn: {'padded' if batch_sizes is None else 'packed'} "
                           f"input must be {3 if batch_sizes is None else 2}-D, got "
                           f"{input.dim()}-D")
    if batch_sizes is None:
        T, B = input.shape[0], input.shape[1]
        N = T * B
    else:
        if hx is None:
            raise ValueError("fastrnn: packed input needs hx")
        T, B, N = batch_sizes.shape[0], hx.shape[1], input.shape[0]
    for w, (name, shape) in zip(weights, weight_shapes(cell, num_layers, D, input.shape[-1],
                                                       hidden, proj_size, has_bias)):
        _check_shape(w, shape, name)
    if hx is not None:
        _check_shape(hx, (num_layers * D, B, out), "hx")
    if cx is not None:
        _check_shape(cx, (num_layers * D, B, hidden), "cx")
    if dropout_masks and len(dropout_masks) != num_layers - 1:
        raise ValueError(f"fastrnn: expected no dropout masks or {num_layers - 1}, got "
                         f"{len(dropout_masks)}")
    for mask in dropout_masks:
        _check_shape(mask, tuple(input.shape[:-1]) + (D * out,), "a dropout mask")
    return T, B, N, hidden, out, D


def _desc_fields(sizes, input_size, cell, num_layers, proj_size, has_bias, batch_sizes):
    """The descriptor as the tuple both native modules take (see csrc/binding_helpers.h).
    Hashable, so that descriptors can be cached by it."""
    T, B, N, H, O, D = sizes
    return (_CELL_KIND_CODES[cell], num_layers, D, input_size, H, proj_size, has_bias, T, B,
            () if batch_sizes is None else tuple(batch_sizes.tolist()))


def _rowless_desc(cell, num_layers, bidirectional, input_size, hidden, proj_size,
                  has_bias) -> "_C.RnnDesc":
    """A descriptor of no rows: what the reserve's layout per row depends on."""
    no_rows = (0, 0, 0, hidden, 0, 1 + bidirectional)  # (T, B, N, H, O, D): O is not read
    return _C.RnnDesc(*_desc_fields(no_rows, input_size, cell, num_layers, proj_size, has_bias,
                                    None))


def _reserve_per_row(*config) -> int:
    """Reserve values per row of (cell, num_layers, bidirectional, input_size, hidden,
    proj_size, has_bias)."""
    return _rowless_desc(*config).reserve_elems_per_row


def _as(t: Tensor, dtype: torch.dtype) -> Tensor:
    """t in dtype; t itself when it already is (Tensor.to costs a microsecond even then, which
    counts when streaming one step at a time)."""
    return t if t.dtype == dtype else t.to(dtype)


def _contiguous(t: Optional[Tensor], dtype: torch.dtype) -> Optional[Tensor]:
    return None if t is None else _as(t, dtype).contiguous()


class _Native:
    """One configuration's native calls: the descriptor and its module, ``_C`` on the CPU,
    ``_cuda`` on a GPU. The per-call context (thread count, or device and stream) comes from
    ``_native_call``.

    CPU instances of padded inputs are cached by configuration (``_cpu_native``): building the
    descriptor and sizing the workspaces each call would cost a streamed step more than its
    kernel."""

    def __init__(self, fields, dtype: torch.dtype, on_cuda: bool):
        self.desc = _C.RnnDesc(*fields)
        self.rows = self.desc.total_rows
        self.reserve_per_row = self.desc.reserve_elems_per_row
        native = native_dtype(dtype, "fastrnn.rnn")
        if on_cuda:  # _cuda takes the plain fields and dtype code, not _C's types
            self.module = cuda_module()
            self.head = (fields, int(native))
        else:
            self.module = _C
            self.head = (self.desc, native)
        self._workspace = {}

    def workspace_elems(self, pass_: "_C.Pass") -> int:
        """Workspace of a pass; the CUDA core has no inference pass (it always keeps a reserve)."""
        elems = self._workspace.get(pass_)
        if elems is None:
            desc, dtype = self.head
            elems = self._workspace[pass_] = (
                desc.workspace_elems(pass_, dtype) if self.module is _C
                else self.module.rnn_workspace_elems(desc, pass_ == _C.Pass.Backward, dtype))
        return elems

    def forward(self, context, *addresses) -> None:
        self.module.rnn_forward(*self.head, *addresses, *context)

    def backward(self, context, *addresses, weight_groups: int = 1) -> None:
        """The native backward; ``weight_groups`` > 1 (CPU only) as rnn.h's
        RnnBackwardArgs::weight_groups."""
        groups = {} if weight_groups == 1 else {"weight_groups": weight_groups}
        self.module.rnn_backward(*self.head, *addresses, *context, **groups)


@functools.lru_cache(maxsize=64)
def _cpu_native(fields, dtype: torch.dtype) -> _Native:
    return _Native(fields, dtype, on_cuda=False)


def _native_call(input: Tensor, fields, dtype: torch.dtype):
    """(native configuration, call context) for tensors on input's device. Packed inputs are not
    cached: their batch_sizes (in the fields) change from batch to batch and can be long."""
    if input.is_cuda:
        return _Native(fields, dtype, on_cuda=True), (
            input.device.index, torch.cuda.current_stream(input.device).cuda_stream)
    packed = len(fields[-1]) > 0
    native = _Native(fields, dtype, on_cuda=False) if packed else _cpu_native(fields, dtype)
    return native, (torch.get_num_threads(),)


class _CpuScratch(threading.local):
    """A per-thread CPU buffer reused for workspaces up to _SCRATCH_REUSE_BYTES, so that a
    streamed step allocates nothing but its results. Larger workspaces are allocated per call:
    their work dwarfs the allocation, and holding them between calls would pin that memory."""

    buffer: Optional[Tensor] = None


_CPU_SCRATCH = _CpuScratch()
_SCRATCH_REUSE_BYTES = 1 << 20


def _scratch_buffer(nbytes: int) -> Tensor:
    """An uninitialized CPU byte buffer of at least ``nbytes``: this thread's reusable one up to
    _SCRATCH_REUSE_BYTES, else a new one. Keep it alive until the native call returns."""
    if nbytes > _SCRATCH_REUSE_BYTES:
        return torch.empty(nbytes, dtype=torch.uint8)
    buffer = _CPU_SCRATCH.buffer  # always _SCRATCH_REUSE_BYTES long
    if buffer is None:
        buffer = _CPU_SCRATCH.buffer = torch.empty(_SCRATCH_REUSE_BYTES, dtype=torch.uint8)
    return buffer


def _scratch(like: Tensor, dtype: torch.dtype, elems: int):
    """(owner, address) of an uninitialized buffer of ``elems`` elements of ``dtype`` on like's
    device (address 0 when empty); keep the owner alive until the native call returns."""
    nbytes = elems * dtype.itemsize
    if nbytes == 0:
        return None, 0
    owner = (_scratch_buffer(nbytes) if like.is_cpu
             else torch.empty(nbytes, dtype=torch.uint8, device=like.device))
    return owner, owner.data_ptr()


def _prepare(input, weights, hx, cx, batch_sizes, dropout_masks, cell, num_layers, bidirectional,
             proj_size, has_bias, keep_16bit: Optional[str] = None):
    """What a native call needs: (native configuration, call context, sizes, compute dtype,
    contiguous tensors in the compute dtype).

    With ``keep_16bit`` ("forward" or "backward"), 16-bit tensors stay 16-bit where the CPU
    kernels read them as such (_kept_16bit); the context then ends with the native call's
    flags: bf16_input and half_weights for a forward, half_weights for a backward."""
    _check_device(input)
    dtype = compute_dtype(input.dtype, "cuda" if input.is_cuda else "cpu", "fastrnn.rnn")
    sizes = _sizes(input, weights, hx, cx, batch_sizes, dropout_masks, cell, num_layers,
                   bidirectional, proj_size, has_bias)
    fields = _desc_fields(sizes, input.shape[-1], cell, num_layers, proj_size, has_bias,
                          batch_sizes)
    native, context = _native_call(input, fields, dtype)
    if native.rows != sizes[2]:  # the core trusts batch_sizes for every row
        raise RuntimeError(f"PackedSequence batch_sizes sum to {native.rows} rows but "
                           f"its data has {sizes[2]} rows")
    input_dtype, weight_dtypes = dtype, [dtype] * len(weights)
    kept = (_kept_16bit(input, weights, native, num_layers, sizes[5], keep_16bit == "forward")
            if keep_16bit and (input.dtype in _HALF_WEIGHTS or weights[0].dtype in _HALF_WEIGHTS)
            else None)
    if kept is not None:
        bf16_input, half_weights, indices = kept
        if bf16_input:
            input_dtype = torch.bfloat16
        for i in indices:
            weight_dtypes[i] = weights[i].dtype
        context = context + ((bf16_input, half_weights) if keep_16bit == "forward"
                             else (half_weights,))
    tensors = (_contiguous(input, input_dtype),
               [_contiguous(w, wd) for w, wd in zip(weights, weight_dtypes)],
               _contiguous(hx, dtype), _contiguous(cx, dtype),
               [_contiguous(m, dtype) for m in dropout_masks])
    return native, context, sizes, dtype, tensors


_HALF_WEIGHTS = {torch.bfloat16: _C.HalfWeights.bfloat16, torch.float16: _C.HalfWeights.float16}


def _kept_16bit(input: Tensor, weights: List[Tensor], native: _Native, num_layers: int,
                directions: int, bf16_input_ok: bool):
    """What of a call's 16-bit tensors the CPU kernels read as they are, as (bf16_input,
    half_weights, indices of the weights kept), or None for nothing (everything is widened).
    Only tensors that are 16-bit already are kept: a float32 weight is never rounded.

    - bf16_input (forward, ``bf16_input_ok``): a bfloat16 input and each direction's
      weight_ih_l0 (which leads the weights of its (layer 0, direction) in the flat list),
      multiplied with AVX-512 BF16 when the weights are packed (exact products, float32 sums:
      the float32 kernels' result on the widened values at twice their rate).
    - half_weights: every weight matrix, all bfloat16 or all float16 (the biases are widened),
      read straight from these tensors by the direct products of a handful of rows (a streamed
      step), forward and backward, which widen each weight as they load it: the widened call's
      result (up to which multiply-adds the compiler fuses), without converting the weights per
      call."""
    if native.module is not _C:
        return None
    if bf16_input_ok and input.dtype == torch.bfloat16:
        per_direction = len(weights) // (num_layers * directions)
        first_w_ih = range(0, directions * per_direction, per_direction)
        if (all(weights[i].dtype == torch.bfloat16 for i in first_w_ih)
                and _C.rnn_takes_bf16_input(*native.head)):
            return True, _C.HalfWeights.none, first_w_ih
    half = _HALF_WEIGHTS.get(weights[0].dtype)
    matrices = [i for i, w in enumerate(weights) if w.dim() == 2]
    if (half is not None and all(weights[i].dtype == weights[0].dtype for i in matrices)
            and _C.rnn_takes_half_weights(*native.head)):
        return False, half, matrices
    return None


def _result_shapes(sizes, packed: bool, cell: str, num_layers: int):
    """Shapes of a forward's output, hy and cy (None unless LSTM) for sizes (T, B, N, H, O, D)."""
    T, B, N, H, O, D = sizes
    return ((N, D * O) if packed else (T, B, D * O), (num_layers * D, B, O),
            (num_layers * D, B, H) if cell == "LSTM" else None)


def _check_device(input: Tensor) -> None:
    if not (input.is_cpu or input.is_cuda):
        raise RuntimeError(f"fastrnn runs on CPU and CUDA tensors; got a tensor on "
                           f"{input.device}")


def _forward(input: Tensor, weights: List[Tensor], hx: Optional[Tensor], cx: Optional[Tensor],
             batch_sizes: Optional[Tensor], dropout_masks: List[Tensor], cell: str,
             num_layers: int, bidirectional: bool, proj_size: int, has_bias: bool,
             keep_reserve: bool):
    """Forward of a whole stack. Returns (output, hy, cy, reserve).

    input [T, B, I] (padded) or [N, I] with batch_sizes [T] (int64, CPU, non-increasing);
    weights: torch's flat weight list; hx [L*D, B, O] or None (zeros, padded input only);
    cx [L*D, B, H] or None (LSTM); dropout_masks: none or L-1 masks shaped like the output.
    output [T, B, D*O] or [N, D*O]; cy is empty unless LSTM; reserve is what backward needs, or
    None without keep_reserve: the CPU core then runs its inference pass, which needs scratch for
    a few steps instead of a reserve; the CUDA core writes a reserve, dropped after the call.
    """
    out_dtype = input.dtype
    native, context, (T, B, N, H, O, D), dtype, tensors = _prepare(
        input, weights, hx, cx, batch_sizes, dropout_masks, cell, num_layers, bidirectional,
        proj_size, has_bias, keep_16bit="forward")
    shapes = _result_shapes((T, B, N, H, O, D), batch_sizes is not None, cell, num_layers)
    output, hy, cy, reserve = _run_forward(native, context, tensors, shapes, dtype, keep_reserve)
    if cy is None:  # the op returns a tensor in every position
        cy = output.new_empty(0)
    return _as(output, out_dtype), _as(hy, out_dtype), _as(cy, out_dtype), reserve


def _run_forward(native: _Native, context, tensors, shapes, dtype: torch.dtype,
                 keep_reserve: bool):
    """Allocates a forward's results and runs the native forward on ``tensors`` (input, weights,
    hx, cx, masks: contiguous, as _prepare made them) in the compute ``dtype``. ``shapes``: those
    of output, hy and cy (None unless LSTM), as tuples of ints. Returns (output, hy, cy, reserve)
    as _forward, except that cy is None unless LSTM."""
    input, weights, hx, cx, masks = tensors
    output_shape, hy_shape, cy_shape = shapes
    # Shapes unpacked into plain ints: new_empty(tuple) costs half as much again.
    output = input.new_empty(*output_shape, dtype=dtype)
    hy = input.new_empty(*hy_shape, dtype=dtype)
    cy = None if cy_shape is None else input.new_empty(*cy_shape, dtype=dtype)
    # The CUDA core has no inference pass: it writes a reserve, dropped here unless kept.
    writes_reserve = keep_reserve or input.is_cuda
    reserve = (input.new_empty(native.rows * native.reserve_per_row, dtype=dtype)
               if writes_reserve else None)
    # scratch owns the workspace's memory until this function returns
    scratch, workspace = _scratch(input, dtype, native.workspace_elems(
        _C.Pass.Forward if writes_reserve else _C.Pass.Inference))
    native.forward(context, _ptr(input), [w.data_ptr() for w in weights], _ptr(hx), _ptr(cx),
                   [m.data_ptr() for m in masks], _ptr(output), _ptr(hy), _ptr(cy),
                   _ptr(reserve), workspace)
    return output, hy, cy, reserve if keep_reserve else None


class StreamPlan:
    """The common call, for one configuration and one input shape, with the least Python per
    call (streaming one step at a time pays it per step; the kernels of a small step take a few
    microseconds). What depends only on the configuration and the shapes is computed once, here:
    the modules cache plans. Each call checks what can change between calls on the same module
    (the states, and the weights: ``param.data = ...`` can change a weight's shape, dtype or
    layout without changing the Parameter), then runs the CPU inference pass, or, when autograd
    needs it, the forward keeping a reserve and, later, its backward (_PlannedRnn).

    The input holds steps x batch rows laid out as [T, B, I] ([T, I] unbatched, [B, I] a cell's
    step), or [B, T, I] with ``transposed``. States and results have the shapes given, in the
    same layouts: ``state_shapes`` (h0, c0) as the caller passes them, ``result_shapes``
    (output, hy, cy), output None for a cell (which returns hy), cy None unless LSTM.

    A float16 or bfloat16 plan (``half``) exists where the kernels read the 16-bit weight
    matrices themselves, forward and backward (a handful of rows, see _kept_16bit): it widens the
    input, states, biases and incoming gradients, and rounds the results and gradients, as the
    general path does."""

    __slots__ = ("_desc", "_dtype", "_workspace_bytes", "_reserve_elems", "_weights",
                 "_state_shapes", "_result_shapes", "_transposed", "_config", "_batch", "dtype",
                 "half")

    def __init__(self, cell: str, num_layers: int, bidirectional: bool, proj_size: int,
                 has_bias: bool, input_size: int, hidden: int, steps: int, batch: int,
                 dtype: torch.dtype, weight_names, state_shapes, result_shapes,
                 transposed: bool = False):
        D = 2 if bidirectional else 1
        sizes = (steps, batch, steps * batch, hidden, proj_size or hidden, D)
        compute = compute_dtype(dtype, "cpu", "fastrnn.rnn")
        native = _cpu_native(_desc_fields(sizes, input_size, cell, num_layers, proj_size,
                                          has_bias, None), compute)
        self._desc, self._dtype = native.head
        self.half = _HALF_WEIGHTS.get(dtype)
        self._workspace_bytes = {p: native.workspace_elems(p) * compute.itemsize
                                 for p in (_C.Pass.Inference, _C.Pass.Forward, _C.Pass.Backward)}
        self._reserve_elems = native.rows * native.reserve_per_row
        shapes = weight_shapes(cell, num_layers, D, input_size, hidden, proj_size, has_bias)
        self._weights = tuple(zip(weight_names, (shape for _, shape in shapes)))
        self._state_shapes, self._result_shapes = state_shapes, result_shapes
        self._transposed, self.dtype = transposed, dtype
        self._config, self._batch = (cell, num_layers, bidirectional, proj_size, has_bias), batch

    def states(self, hx) -> Optional[Tuple[Optional[Tensor], Optional[Tensor]]]:
        """(h0, c0) from ``hx`` (None where absent; contiguous), or None unless hx is None or
        plain CPU tensors of the plan's dtype and shapes (a tuple of two for LSTM)."""
        if hx is None:
            return None, None
        h_shape, c_shape = self._state_shapes
        if c_shape is None:
            h0 = _plain_state(hx, h_shape, self.dtype)
            return None if h0 is None else (h0, None)
        if type(hx) is not tuple or len(hx) != 2:
            return None
        h0 = _plain_state(hx[0], h_shape, self.dtype)
        c0 = _plain_state(hx[1], c_shape, self.dtype)
        return None if h0 is None or c0 is None else (h0, c0)

    def weights(self, params) -> Optional[List[Tensor]]:
        """The weights from a module's ``_parameters``, or None unless each is fit for the
        kernels (see _fit_weight) and a Parameter (not a subclass; a parametrized weight is not
        in ``_parameters`` at all)."""
        weights, dtype = [], self.dtype
        for name, shape in self._weights:
            w = params.get(name)
            if type(w) is not torch.nn.Parameter or not _fit_weight(w, shape, dtype):
                return None
            weights.append(w)
        return weights

    def run(self, input: Tensor, weights: List[Tensor], h0: Optional[Tensor],
            c0: Optional[Tensor]):
        """(output, hy, cy) from what the checks above gave: the inference pass, or _PlannedRnn
        when autograd records the call. output is None for a cell."""
        if self._transposed:
            input = input.transpose(0, 1)
        if not input.is_contiguous():
            input = input.contiguous()
        if torch.is_grad_enabled() and (
                input.requires_grad or any(w.requires_grad for w in weights)
                or (h0 is not None and h0.requires_grad) or (c0 is not None and c0.requires_grad)):
            output, hy, cy = _PlannedRnn.apply(self, input, h0, c0, *weights)
        else:
            output, hy, cy, _ = self.forward(input, weights, h0, c0, keep_reserve=False)
        if output is not None and self._transposed:
            output = output.transpose(0, 1)
        return output, hy, cy

    def forward(self, input: Tensor, weights: List[Tensor], h0: Optional[Tensor],
                c0: Optional[Tensor], keep_reserve: bool):
        """(output, hy, cy, reserve) of the native forward on time-major contiguous input;
        output None for a cell, reserve None unless kept (float32 in a 16-bit plan)."""
        if self.half is None:
            return self._native_forward(input, weights, h0, c0, keep_reserve)
        output, hy, cy, reserve = self._native_forward(
            input.float(), _widened_biases(weights), _contiguous(h0, torch.float32),
            _contiguous(c0, torch.float32), keep_reserve)
        dtype = self.dtype
        return _contiguous(output, dtype), hy.to(dtype), _contiguous(cy, dtype), reserve

    def _native_forward(self, input: Tensor, weights: List[Tensor], h0: Optional[Tensor],
                        c0: Optional[Tensor], keep_reserve: bool):
        """forward() on tensors of the compute dtype (the weight matrices 16-bit in a 16-bit
        plan)."""
        output_shape, hy_shape, cy_shape = self._result_shapes
        hy = input.new_empty(*hy_shape)
        # A cell's output is its hy (T = 1, one layer and direction, no projection): the core
        # writes h_1 to both (csrc/include/fastrnn/rnn.h), so one buffer serves.
        output = None if output_shape is None else input.new_empty(*output_shape)
        cy = None if cy_shape is None else input.new_empty(*cy_shape)
        reserve = input.new_empty(self._reserve_elems) if keep_reserve else None
        scratch = _scratch_buffer(self._workspace_bytes[
            _C.Pass.Forward if keep_reserve else _C.Pass.Inference])
        # A float32/float64 plan leaves the 16-bit flags at their defaults: two arguments fewer
        # for pybind to convert per streamed step.
        flags = () if self.half is None else (False, self.half)
        _C.rnn_forward(self._desc, self._dtype, input.data_ptr(),
                       [w.data_ptr() for w in weights], _ptr(h0), _ptr(c0), [],
                       (hy if output is None else output).data_ptr(), hy.data_ptr(), _ptr(cy),
                       _ptr(reserve), scratch.data_ptr(), torch.get_num_threads(), *flags)
        return output, hy, cy, reserve

    def backward(self, input: Tensor, weights: List[Tensor], h0: Optional[Tensor],
                 c0: Optional[Tensor], reserve: Tensor, grad_output: Optional[Tensor],
                 grad_hy: Optional[Tensor], grad_cy: Optional[Tensor], input_grad: bool,
                 weight_grad: bool):
        """(grad_input, grad_h0, grad_c0, grad_weights) of forward(keep_reserve=True), from the
        gradients of its results (None: zero); grad_c0 None unless LSTM, grad_input None unless
        ``input_grad``, grad_weights Nones unless ``weight_grad`` (the core then skips those
        products)."""
        for w, (name, shape) in zip(weights, self._weights):
            if not _fit_weight(w, shape, self.dtype):  # param.data may have changed since
                raise RuntimeError(f"{name} was replaced by a tensor of shape "
                                   f"{list(w.shape)} and dtype {w.dtype} between forward and "
                                   f"backward; expected {list(shape)}, {self.dtype}")
        if self.half is None:
            return self._native_backward(input, weights, h0, c0, reserve, grad_output, grad_hy,
                                         grad_cy, input_grad, weight_grad)
        # (_native_backward widens the incoming gradients itself)
        grad_input, grad_h0, grad_c0, grad_weights = self._native_backward(
            input.float(), _widened_biases(weights), _contiguous(h0, torch.float32),
            _contiguous(c0, torch.float32), reserve, grad_output, grad_hy, grad_cy, input_grad,
            weight_grad)
        dtype = self.dtype
        return (_contiguous(grad_input, dtype), grad_h0.to(dtype), _contiguous(grad_c0, dtype),
                [_contiguous(g, w.dtype) for g, w in zip(grad_weights, weights)])

    def _native_backward(self, input: Tensor, weights: List[Tensor], h0: Optional[Tensor],
                         c0: Optional[Tensor], reserve: Tensor, grad_output: Optional[Tensor],
                         grad_hy: Optional[Tensor], grad_cy: Optional[Tensor], input_grad: bool,
                         weight_grad: bool):
        """backward() on tensors of the compute dtype (the weight matrices 16-bit in a 16-bit
        plan)."""
        output_shape, hy_shape, cy_shape = self._result_shapes
        if output_shape is None:
            # A cell's output is its hy, and the core adds dy and dhy at the last step: h_1's
            # gradient passed as dy spares a zero-filled one.
            grad_output, grad_hy = grad_hy, None
        if grad_output is None:
            grad_output = input.new_zeros(*(output_shape or hy_shape))
        grad_input = torch.empty_like(input) if input_grad else None
        grad_h0 = input.new_empty(*self._state_shapes[0])
        grad_c0 = None if cy_shape is None else input.new_empty(*self._state_shapes[1])
        compute = input.dtype  # float32 in a 16-bit plan, whose weight matrices stay 16-bit
        grad_weights = ([torch.empty_like(w, dtype=compute) for w in weights] if weight_grad
                        else [None] * len(weights))
        # Named, so that they live until the native call returns.
        dy, dhy, dcy = (_contiguous(g, compute) for g in (grad_output, grad_hy, grad_cy))
        scratch = _scratch_buffer(self._workspace_bytes[_C.Pass.Backward])
        flags = () if self.half is None else (self.half,)
        _C.rnn_backward(self._desc, self._dtype, input.data_ptr(),
                        [w.data_ptr() for w in weights], _ptr(h0), _ptr(c0), [],
                        reserve.data_ptr(), dy.data_ptr(), _ptr(dhy), _ptr(dcy),
                        _ptr(grad_input), grad_h0.data_ptr(), _ptr(grad_c0),
                        [g.data_ptr() for g in grad_weights if g is not None],
                        scratch.data_ptr(), torch.get_num_threads(), *flags)
        return grad_input, grad_h0, grad_c0, grad_weights

    def rerun(self, input: Tensor, h0: Optional[Tensor], c0: Optional[Tensor], *weights):
        """forward()'s (output, hy, cy) computed by torch's differentiable functions
        (_double_backward.torch_rnn), for second derivatives and forward-mode AD."""
        batch, (output_shape, hy_shape, cy_shape) = self._batch, self._result_shapes
        output, hy, cy = torch_rnn(
            self._config, None, (), input.reshape(-1, batch, input.shape[-1]),
            *(None if s is None else s.reshape(-1, batch, s.shape[-1]) for s in (h0, c0)),
            *weights)
        return (None if output_shape is None else output.reshape(output_shape),
                hy.reshape(hy_shape), None if cy_shape is None else cy.reshape(cy_shape))


def _fit_weight(w: Tensor, shape, dtype: torch.dtype) -> bool:
    """Whether the kernels can read w as the weight of ``shape``: contiguous, on the CPU, of
    ``dtype``."""
    return w.dtype is dtype and w.shape == shape and w.is_contiguous() and w.is_cpu


class _PlannedRnn(torch.autograd.Function):
    """_EagerRnn for a call a StreamPlan has checked: its forward and backward hand the plan the
    tensors as they are, so a streamed training step pays little Python. Inputs: the plan,
    time-major contiguous input, h0, c0 (None where absent), the weights."""

    @staticmethod
    def forward(ctx, plan: StreamPlan, input, h0, c0, *weights):
        output, hy, cy, reserve = plan.forward(input, list(weights), h0, c0, keep_reserve=True)
        ctx.plan = plan
        ctx.save_for_backward(input, h0, c0, reserve, *weights)
        ctx.save_for_forward(input, h0, c0, *weights)
        ctx.set_materialize_grads(False)  # None means zero to the native backward
        return output, hy, cy

    @staticmethod
    def jvp(ctx, _plan_tangent, *tangents):
        """Forward-mode AD (torch.autograd.forward_ad), as _eager_jvp."""
        return tuple(rerun_jvp(ctx.plan.rerun, ctx.saved_tensors, tangents))

    @staticmethod
    def backward(ctx, grad_output, grad_hy, grad_cy):
        saved = ctx.saved_tensors
        input, h0, c0, reserve, *weights = saved
        with torch.no_grad():
            grad_input, grad_h0, grad_c0, grad_weights = ctx.plan.backward(
                input, weights, h0, c0, reserve, grad_output, grad_hy, grad_cy,
                input_grad=ctx.needs_input_grad[1], weight_grad=any(ctx.needs_input_grad[4:]))
        grad_input, grad_h0, grad_c0, *grad_weights = differentiable_gradients(
            (grad_input, None if h0 is None else grad_h0, None if c0 is None else grad_c0,
             *grad_weights), (input, h0, c0, *weights), (grad_output, grad_hy, grad_cy),
            ctx.plan.rerun)
        return (None, grad_input, grad_h0, grad_c0, *grad_weights)


def stream_plan(*args, **kwargs) -> Optional[StreamPlan]:
    """A StreamPlan (same arguments), or None for a 16-bit one whose kernels would not read its
    weights as they are (more than a handful of rows): such calls take the general path."""
    plan = StreamPlan(*args, **kwargs)
    if plan.half is not None and not _C.rnn_takes_half_weights(plan._desc, plan._dtype):
        return None
    return plan


def _widened_biases(weights: List[Tensor]) -> List[Tensor]:
    """A 16-bit stack's weights as its kernels take them: the matrices as they are, the biases
    widened to float32."""
    return [w if w.dim() == 2 else w.float() for w in weights]


def _plain_state(t, shape, dtype: torch.dtype) -> Optional[Tensor]:
    """t, contiguous, if it is a CPU tensor (not a subclass) of ``dtype`` and ``shape``."""
    if (type(t) not in _PLAIN_TENSOR_TYPES or t.dtype is not dtype or t.shape != shape
            or not t.is_cpu):
        return None
    return t if t.is_contiguous() else t.contiguous()


def _rnn_impl(input: Tensor, weights: List[Tensor], hx: Optional[Tensor], cx: Optional[Tensor],
              batch_sizes: Optional[Tensor], dropout_masks: List[Tensor], cell: str,
              num_layers: int, bidirectional: bool, proj_size: int,
              has_bias: bool) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """The op: _forward keeping the reserve, which autograd saves for backward."""
    return _forward(input, weights, hx, cx, batch_sizes, dropout_masks, cell, num_layers,
                    bidirectional, proj_size, has_bias, keep_reserve=True)


rnn = torch.library.custom_op("fastrnn::rnn", mutates_args=())(_rnn_impl)


_PLAIN_TENSOR_TYPES = (Tensor, torch.nn.Parameter)
_NO_DOUBLE_BACKWARD = ("fastrnn: double backward (the gradient of a gradient) through "
                       "fastrnn.rnn under torch.func transforms is not supported (autograd's "
                       "create_graph=True is)")


def recording() -> bool:
    """True under torch.compile or torch.jit.trace: each records only what passes the
    dispatcher, so the calls it records must go through the ops."""
    return torch.compiler.is_compiling() or torch._C._get_tracing_state() is not None


def capturing() -> bool:
    """recording(), or a functorch transform, which the StreamPlan's _PlannedRnn cannot serve
    (no setup_context): the modules' fast path steps aside for all of them."""
    return recording() or torch._C._are_functorch_transforms_active()


def run_rnn(input: Tensor, weights: List[Tensor], hx: Optional[Tensor], cx: Optional[Tensor],
            batch_sizes: Optional[Tensor], dropout_masks: List[Tensor], cell: str,
            num_layers: int, bidirectional: bool, proj_size: int, has_bias: bool):
    """``fastrnn::rnn`` as the modules call it; returns (output, hy, cy). The op runs only where
    the dispatcher is needed (torch.compile, torch.jit.trace, which records only what passes
    the dispatcher, tensor subclasses such as FakeTensor, devices other than the CPU).
    Otherwise the same kernels run without its dispatch overhead: through _EagerRnn when
    autograd is needed, else directly, keeping no reserve, which matters for streaming one step
    at a time and, through the CPU core's inference pass, for long sequences (its scratch holds
    a chunk of steps, not the whole sequence). functorch transforms get _EagerRnn on any device:
    the autograd.Function torch.library builds for the op lacks the setup_context staticmethod
    they require (pytorch/pytorch#168393), so torch.func.grad through the op fails, and
    torch.func.jvp through it returns zero tangents; _EagerRnn has one, batching rules for vmap
    and a jvp rule. With grad mode off (vmap for inference) they get
    _EagerRnnInference, which keeps no reserve."""
    args = (input, weights, hx, cx, batch_sizes, dropout_masks, cell, num_layers, bidirectional,
            proj_size, has_bias)
    tensors = (input, hx, cx, *weights)
    config = (cell, num_layers, bidirectional, proj_size, has_bias, len(weights))
    eager = (config, input, hx, cx, batch_sizes, *weights, *dropout_masks)
    if (recording()
            or input.device.type not in ("cpu", "cuda")  # meta tensors take the fake kernel
            or any(t is not None and type(t) not in _PLAIN_TENSOR_TYPES for t in tensors)):
        return rnn(*args)[:3]
    if torch._C._are_functorch_transforms_active():
        if not torch.is_grad_enabled():
            return _EagerRnnInference.apply(*eager)
        return _EagerRnn.apply(*eager)[:3]
    if not input.is_cpu:
        return rnn(*args)[:3]
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors):
        return _EagerRnn.apply(*eager)[:3]
    return _forward(*args, keep_reserve=False)[:3]


@rnn.register_fake
def _(input, weights, hx, cx, batch_sizes, dropout_masks, cell, num_layers, bidirectional,
      proj_size, has_bias):
    T, B, N, H, O, D = _sizes(input, weights, hx, cx, batch_sizes, dropout_masks, cell,
                              num_layers, bidirectional, proj_size, has_bias)
    per_row = _reserve_per_row(cell, num_layers, bidirectional, input.shape[-1], H, proj_size,
                               has_bias)
    output = input.new_empty(input.shape[:-1] + (D * O,))
    hy = input.new_empty(num_layers * D, B, O)
    cy = input.new_empty(num_layers * D, B, H) if cell == "LSTM" else input.new_empty(0)
    reserve = input.new_empty(
        N * per_row, dtype=compute_dtype(input.dtype, input.device.type, "fastrnn.rnn"))
    return output, hy, cy, reserve


def _rnn_backward_impl(input: Tensor, weights: List[Tensor], hx: Optional[Tensor],
                       cx: Optional[Tensor], batch_sizes: Optional[Tensor],
                       dropout_masks: List[Tensor], reserve: Tensor, grad_output: Tensor,
                       grad_hy: Optional[Tensor], grad_cy: Optional[Tensor],
                       cell: str, num_layers: int, bidirectional: bool, proj_size: int,
                       has_bias: bool, input_grad: bool = True
                       ) -> Tuple[Tensor, Tensor, Tensor, List[Tensor]]:
    """Backprop through time of ``rnn``. Returns (grad_input, grad_hx, grad_cx, grad_weights);
    grad_cx is empty unless LSTM, grad_input empty unless ``input_grad`` (a first layer's input
    is data: the CPU core then skips its products). grad_hy / grad_cy None mean zero."""
    grad_input, *grads = _backward(input, weights, hx, cx, batch_sizes, dropout_masks, reserve,
                                   grad_output, grad_hy, grad_cy, cell, num_layers,
                                   bidirectional, proj_size, has_bias, input_grad)
    return (input.new_empty(0) if grad_input is None else grad_input, *grads)


def _backward(input, weights, hx, cx, batch_sizes, dropout_masks, reserve, grad_output, grad_hy,
              grad_cy, cell, num_layers, bidirectional, proj_size, has_bias, input_grad: bool,
              weight_grad: bool = True, weight_groups: int = 1):
    """_rnn_backward_impl; grad_input None unless ``input_grad``, the weights' gradients Nones
    unless ``weight_grad`` (the CPU core then skips those products; the CUDA core always
    computes them). With ``weight_groups`` = n > 1 (CPU, padded input) the batch is n groups of
    consecutive rows and each weight's gradient is [n, *weight.shape], one per group."""
    in_dtype, weight_dtypes = input.dtype, [w.dtype for w in weights]
    native, context, (T, B, N, H, O, D), dtype, (input, weights, hx, cx, masks) = _prepare(
        input, weights, hx, cx, batch_sizes, dropout_masks, cell, num_layers, bidirectional,
        proj_size, has_bias, keep_16bit="backward")
    # What only direct callers of the op can get wrong: autograd passes what forward made.
    if reserve.numel() != N * native.reserve_per_row:
        raise RuntimeError(f"fastrnn.rnn_backward: the reserve has {reserve.numel()} elements, "
                           f"expected {N * native.reserve_per_row}")
    for grad, shape, name in zip((grad_output, grad_hy, grad_cy),
                                 _result_shapes((T, B, N, H, O, D), batch_sizes is not None,
                                                cell, num_layers),
                                 ("grad_output", "grad_hy", "grad_cy")):
        if grad is not None:
            _check_shape(grad, shape or (0,), name)
    grad_output, grad_hy, grad_cy = (_contiguous(g, dtype)
                                     for g in (grad_output, grad_hy, grad_cy))
    grad_input = torch.empty_like(input) if input_grad or input.is_cuda else None
    grad_hx = input.new_empty(num_layers * D, B, O)
    grad_cx = input.new_empty(num_layers * D, B, H) if cell == "LSTM" else input.new_empty(0)
    # (w may be 16-bit)
    grad_weights = ([w.new_empty((weight_groups,) * (weight_groups > 1) + w.shape, dtype=dtype)
                     for w in weights] if weight_grad or input.is_cuda else [])
    # scratch owns the workspace's memory until this function returns
    scratch, workspace = _scratch(input, dtype, native.workspace_elems(
        _C.Pass.GroupedBackward if weight_groups > 1 else _C.Pass.Backward))
    native.backward(context, _ptr(input), [_ptr(w) for w in weights], _ptr(hx), _ptr(cx),
                    [_ptr(m) for m in masks], _ptr(reserve), _ptr(grad_output), _ptr(grad_hy),
                    _ptr(grad_cy), _ptr(grad_input), _ptr(grad_hx), _ptr(grad_cx),
                    [_ptr(g) for g in grad_weights], workspace, weight_groups=weight_groups)
    return (None if grad_input is None or not input_grad else _as(grad_input, in_dtype),
            _as(grad_hx, in_dtype), _as(grad_cx, in_dtype),
            [_as(g, wd) for g, wd in zip(grad_weights, weight_dtypes)] if weight_grad
            else [None] * len(weights))


rnn_backward = torch.library.custom_op("fastrnn::rnn_backward", mutates_args=())(
    _rnn_backward_impl)


@rnn_backward.register_fake
def _(input, weights, hx, cx, batch_sizes, dropout_masks, reserve, grad_output, grad_hy,
      grad_cy, cell, num_layers, bidirectional, proj_size, has_bias, input_grad=True):
    T, B, N, H, O, D = _sizes(input, weights, hx, cx, batch_sizes, dropout_masks, cell,
                              num_layers, bidirectional, proj_size, has_bias)
    grad_input = torch.empty_like(input) if input_grad else input.new_empty(0)
    grad_cx = input.new_empty(num_layers * D, B, H) if cell == "LSTM" else input.new_empty(0)
    return (grad_input, input.new_empty(num_layers * D, B, O), grad_cx,
            [torch.empty_like(w) for w in weights])


_RNN_ARGS = ("input", "weights", "hx", "cx", "batch_sizes", "dropout_masks", "cell",
             "num_layers", "bidirectional", "proj_size", "has_bias")


def _rnn_setup_context(ctx, inputs, output):
    args = dict(zip(_RNN_ARGS, inputs))
    out, _, _, reserve = output
    ctx.mark_non_differentiable(reserve)
    ctx.output_shape = out.shape
    ctx.config = (args["cell"], args["num_layers"], args["bidirectional"], args["proj_size"],
                  args["has_bias"])
    ctx.num_weights = len(args["weights"])
    ctx.num_masks = len(args["dropout_masks"])
    ctx.has_hx = args["hx"] is not None
    ctx.has_cx = args["cx"] is not None
    ctx.has_batch_sizes = args["batch_sizes"] is not None
    # The output itself is not saved (the reserve holds a copy), so callers may modify it in place.
    saved = [args["input"], reserve, *args["weights"], *args["dropout_masks"]]
    for optional in ("hx", "cx", "batch_sizes"):
        if args[optional] is not None:
            saved.append(args[optional])
    ctx.save_for_backward(*saved)


def _backward_args(ctx, grad_output, grad_hy, grad_cy):
    """rnn_backward's tensor arguments from what _rnn_setup_context saved and the incoming
    gradients: (input, weights, hx, cx, batch_sizes, dropout_masks, reserve, grad_output,
    grad_hy, grad_cy), grad_output zeros where None, grad_cy None unless LSTM."""
    input, reserve, *rest = ctx.saved_tensors
    weights, rest = rest[:ctx.num_weights], rest[ctx.num_weights:]
    masks, rest = rest[:ctx.num_masks], rest[ctx.num_masks:]
    hx = rest.pop(0) if ctx.has_hx else None
    cx = rest.pop(0) if ctx.has_cx else None
    batch_sizes = rest.pop(0) if ctx.has_batch_sizes else None
    if grad_output is None:
        grad_output = input.new_zeros(ctx.output_shape)
    return (input, weights, hx, cx, batch_sizes, masks, reserve, grad_output, grad_hy,
            grad_cy if ctx.config[0] == "LSTM" else None)


def _rnn_grads(ctx, grad_output, grad_hy, grad_cy, run_backward, input_grad: bool):
    """Gradients of ``rnn``'s inputs, in its argument order, through ``run_backward`` (the
    ``rnn_backward`` op, or its implementation when no dispatcher is involved, which may skip the
    weights' gradients); the input's gradient None, and not computed, unless ``input_grad``."""
    args = _backward_args(ctx, grad_output, grad_hy, grad_cy)
    input, weights, hx, cx, batch_sizes, masks = args[:6]
    with torch.no_grad():
        grad_input, grad_hx, grad_cx, grad_weights = run_backward(*args, *ctx.config, input_grad)
    grad_input, grad_hx, grad_cx, *grad_weights = differentiable_gradients(
        (grad_input if input_grad else None, grad_hx if ctx.has_hx else None,
         grad_cx if ctx.has_cx else None, *grad_weights), (input, hx, cx, *weights), args[7:],
        functools.partial(torch_rnn, ctx.config, batch_sizes, masks))
    return (grad_input, grad_weights, grad_hx, grad_cx, None, [None] * ctx.num_masks,
            None, None, None, None, None)


def _rnn_backward(ctx, grad_output, grad_hy, grad_cy, _grad_reserve):
    return _rnn_grads(ctx, grad_output, grad_hy, grad_cy, rnn_backward,
                      input_grad=ctx.needs_input_grad[0])


rnn.register_autograd(_rnn_backward, setup_context=_rnn_setup_context)


def _reserve_widths(config, input_size: int, weights) -> List[int]:
    """The reserve's block widths (rnn.h, ReserveLayout) of a call: config as _EagerRnn's."""
    cell, num_layers, bidirectional, proj_size, has_bias = config[:5]
    hidden = weights[1].shape[0] // CELL_GATES[cell]
    return _rowless_desc(cell, num_layers, bidirectional, input_size, hidden, proj_size,
                         has_bias).reserve_block_widths


class _EagerRnn(torch.autograd.Function):
    """``rnn`` with its own autograd formula (_rnn_setup_context, _rnn_grads) for eager CPU calls,
    without the op's dispatch: torch.library's autograd wrapper re-checks and flattens the
    arguments on each call and in backward, ~100 us per call, far more than a streamed step's
    kernels. It is also what functorch transforms get (run_rnn; _EagerRnnInference with grad
    mode off): it has the setup_context staticmethod they need, a batching rule
    (_forward_rule), and under them its backward is _EagerRnnBackward.
    Inputs: config (cell, num_layers, bidirectional, proj_size, has_bias, number of weights),
    then input, hx, cx, batch_sizes, the weights and the dropout masks."""

    @staticmethod
    def forward(config, input, hx, cx, batch_sizes, *weights_and_masks):
        return _forward(*_EagerRnn.op_args(config, input, hx, cx, batch_sizes,
                                           weights_and_masks), keep_reserve=True)

    @staticmethod
    def setup_context(ctx, inputs, output):
        _rnn_setup_context(ctx, _EagerRnn.op_args(*inputs[:5], inputs[5:]), output)
        ctx.set_materialize_grads(False)  # None means zero to the native backward
        _save_for_jvp(ctx, inputs)

    @staticmethod
    def jvp(ctx, *tangents):
        return *_eager_jvp(ctx, tangents), None  # (the reserve is not differentiable)

    @staticmethod
    def op_args(config, input, hx, cx, batch_sizes, weights_and_masks):
        """The op's arguments from _EagerRnn's."""
        cell, num_layers, bidirectional, proj_size, has_bias, num_weights = config
        return (input, list(weights_and_masks[:num_weights]), hx, cx, batch_sizes,
                list(weights_and_masks[num_weights:]), cell, num_layers, bidirectional,
                proj_size, has_bias)

    @staticmethod
    def backward(ctx, grad_output, grad_hy, grad_cy, _grad_reserve):
        input_grad = ctx.needs_input_grad[1]
        weight_grad = any(ctx.needs_input_grad[5:5 + ctx.num_weights])
        if torch._C._are_functorch_transforms_active():
            grad_input, grad_weights, grad_hx, grad_cx = _functorch_grads(
                ctx, grad_output, grad_hy, grad_cy, input_grad, weight_grad)
        else:
            grad_input, grad_weights, grad_hx, grad_cx = _rnn_grads(
                ctx, grad_output, grad_hy, grad_cy,
                functools.partial(_backward, weight_grad=weight_grad), input_grad)[:4]
        return (None, grad_input, grad_hx, grad_cx, None, *grad_weights,
                *([None] * ctx.num_masks))

    @staticmethod
    def vmap(info, in_dims, *args):
        return _forward_rule(_EagerRnn.apply, info, in_dims, args)


class _EagerRnnInference(torch.autograd.Function):
    """_EagerRnn's forward without a reserve, for functorch transforms with grad mode off (vmap
    for inference): no level can record the call then (torch.func.grad turns grad mode on in the
    function it differentiates), so nothing is kept for a backward and the CPU core runs its
    inference pass. Inputs as _EagerRnn's; returns (output, hy, cy)."""

    @staticmethod
    def forward(config, input, hx, cx, batch_sizes, *weights_and_masks):
        return _forward(*_EagerRnn.op_args(config, input, hx, cx, batch_sizes,
                                           weights_and_masks), keep_reserve=False)[:3]

    @staticmethod
    def setup_context(ctx, inputs, output):
        _save_for_jvp(ctx, inputs)

    @staticmethod
    def jvp(ctx, *tangents):
        return _eager_jvp(ctx, tangents)

    @staticmethod
    def vmap(info, in_dims, *args):
        return _forward_rule(_EagerRnnInference.apply, info, in_dims, args)


def _save_for_jvp(ctx, inputs) -> None:
    """What _eager_jvp reads, from _EagerRnn's (or _EagerRnnInference's) inputs."""
    ctx.jvp_config = inputs[0]
    ctx.save_for_forward(*inputs[1:])


def _eager_jvp(ctx, tangents) -> Tuple[Tensor, Tensor, Tensor]:
    """Forward-mode AD (torch.func.jvp, torch.autograd.forward_ad) of _EagerRnn or
    _EagerRnnInference: the tangents of (output, hy, cy) from those of its inputs, through
    torch's functions (_double_backward.rerun_jvp); the masks' tangents are ignored."""
    num_weights = ctx.jvp_config[5]
    input, hx, cx, batch_sizes, *weights_and_masks = ctx.saved_tensors
    if batch_sizes is not None and torch._C._are_functorch_transforms_active():
        raise NotImplementedError(
            "fastrnn: forward-mode AD (jvp) over a PackedSequence is not supported under "
            "torch.func: torch's packed RNN, through which fastrnn computes tangents, does not "
            "run there (torch.autograd.forward_ad's dual tensors work)")
    _, input_t, hx_t, cx_t, _, *weights_t = tangents
    output_t, hy_t, cy_t = rerun_jvp(
        functools.partial(torch_rnn, ctx.jvp_config[:5], batch_sizes,
                          weights_and_masks[num_weights:]),
        (input, hx, cx, *weights_and_masks[:num_weights]),
        (input_t, hx_t, cx_t, *weights_t[:num_weights]), with_functorch=batch_sizes is None)
    # (torch asserts on a None tangent of a differentiable output: cy, empty unless LSTM)
    return output_t, hy_t, input.new_zeros(0) if cy_t is None else cy_t


def _forward_rule(apply, info, in_dims, args):
    """torch.func.vmap's rule for _EagerRnn and _EagerRnnInference (``apply``, arguments
    ``args``). Where the vmapped dimension is on the input, the states or the dropout masks only
    (vmap over a model's inputs, per-sample gradients) and the input is padded, it folds into the
    batch: one call over n times the rows. Vmapped weights (an ensemble) or packed input: one
    call per sample. A reserve comes back per sample, as _EagerRnnBackward's rule takes it."""
    config, input, hx, cx, batch_sizes, *weights_and_masks = args
    n, num_weights = info.batch_size, config[-1]
    if batch_sizes is not None or any(d is not None for d in in_dims[5:5 + num_weights]):
        return per_sample(apply, n, in_dims, args)
    weights, masks = weights_and_masks[:num_weights], weights_and_masks[num_weights:]
    input = fold_rows(input, in_dims[1], n)
    output, hy, cy, *reserve = apply(
        config, input, fold_rows(hx, in_dims[2], n), fold_rows(cx, in_dims[3], n), None,
        *weights, *(fold_rows(m, d, n) for m, d in zip(masks, in_dims[5 + num_weights:])))
    lstm = config[0] == "LSTM"
    results = [unfold_rows(output, n), unfold_rows(hy, n), unfold_rows(cy, n) if lstm else cy]
    dims = [1, 1, 1 if lstm else None]
    if reserve:
        results.append(reserve_per_sample(reserve[0], input.shape[0], n, input.shape[1] // n,
                                          _reserve_widths(config, input.shape[-1], weights)))
        dims.append(0)
    return tuple(results), tuple(dims)


def _functorch_grads(ctx, grad_output, grad_hy, grad_cy, input_grad: bool, weight_grad: bool):
    """_EagerRnn's (grad_input, grad_weights, grad_hx, grad_cx) under functorch transforms,
    through _EagerRnnBackward; None where not needed."""
    input, weights, hx, cx, batch_sizes, masks, reserve, dy, dhy, dcy = _backward_args(
        ctx, grad_output, grad_hy, grad_cy)
    grad_input, grad_hx, grad_cx, *grad_weights = _EagerRnnBackward.apply(
        (*ctx.config, len(weights), input_grad, weight_grad, 1), input, reserve, hx, cx,
        batch_sizes, dy, dhy, dcy, *weights, *masks)
    return (grad_input if input_grad else None,
            grad_weights if weight_grad else [None] * len(weights),
            grad_hx if ctx.has_hx else None, grad_cx if ctx.has_cx else None)


class _EagerRnnBackward(torch.autograd.Function):
    """_EagerRnn's backward under functorch transforms, as a Function of its own so that each
    transform's level handles it: the native backward runs on plain tensors below all of them
    (torch.func.grad hands a backward tensors wrapped at its level, whose memory the native code
    cannot read), vmap (per-sample gradients, torch.func.jacrev) calls its batching rule, and a
    grad level records a node whose backward raises _NO_DOUBLE_BACKWARD, since a gradient of
    these gradients would miss fastrnn's terms. Inputs: config (cell, num_layers,
    bidirectional, proj_size, has_bias, number of weights, input_grad, weight_grad,
    weight_groups), input, reserve, hx, cx, batch_sizes, grad_output, grad_hy, grad_cy, the
    weights and the dropout masks. Returns grad_input, grad_hx, grad_cx and the weights'
    gradients (per group of rows, [weight_groups, *shape], when weight_groups > 1; see
    _backward), empty where not asked for (input_grad, weight_grad; grad_cx unless LSTM)."""

    @staticmethod
    def forward(config, input, reserve, hx, cx, batch_sizes, grad_output, grad_hy, grad_cy,
                *weights_and_masks):
        cell, num_layers, bidirectional, proj_size, has_bias, num_weights, input_grad, \
            weight_grad, weight_groups = config
        weights = list(weights_and_masks[:num_weights])
        grad_input, grad_hx, grad_cx, grad_weights = _backward(
            input, weights, hx, cx, batch_sizes, list(weights_and_masks[num_weights:]), reserve,
            grad_output, grad_hy, grad_cy, cell, num_layers, bidirectional, proj_size, has_bias,
            input_grad, weight_grad, weight_groups)
        if not weight_grad:
            grad_weights = [input.new_empty(0) for _ in weights]
        return (input.new_empty(0) if grad_input is None else grad_input, grad_hx, grad_cx,
                *grad_weights)

    @staticmethod
    def setup_context(ctx, inputs, output):
        pass

    @staticmethod
    def backward(ctx, *grads):
        raise RuntimeError(_NO_DOUBLE_BACKWARD)

    @staticmethod
    def vmap(info, in_dims, config, input, reserve, hx, cx, batch_sizes, grad_output, grad_hy,
             grad_cy, *weights_and_masks):
        """torch.func.vmap's rule: folded into the batch as _EagerRnn's rule does, where the
        weights are the same for every sample; the weights' gradients, if asked for, then come
        per sample from the CPU core's weight groups (one group per sample) in the same call.
        Otherwise one call per sample (ensembles, packed input, per-sample weight gradients on
        CUDA or within another vmap's groups). The reserve comes per sample (from _EagerRnn's
        rule) or once for all (jacrev: one forward, vmapped backward)."""
        n, num_weights, input_grad, weight_grad, weight_groups = info.batch_size, *config[5:]
        args = (config, input, reserve, hx, cx, batch_sizes, grad_output, grad_hy, grad_cy,
                *weights_and_masks)
        if (batch_sizes is not None
                or (weight_grad and (weight_groups != 1 or not input.is_cpu))
                or any(d is not None for d in in_dims[9:9 + num_weights])):
            return per_sample(_EagerRnnBackward.apply, n, in_dims, args)
        weights, masks = weights_and_masks[:num_weights], weights_and_masks[num_weights:]
        reserve_dim = in_dims[2]
        reserve = reserve.expand(n, -1) if reserve_dim is None else reserve.movedim(reserve_dim, 0)
        input = fold_rows(input, in_dims[1], n)
        steps, batch = input.shape[0], input.shape[1] // n
        grad_input, grad_hx, grad_cx, *grad_weights = _EagerRnnBackward.apply(
            (*config[:8], n if weight_grad else 1), input,
            reserve_folded(reserve, steps, n, batch,
                           _reserve_widths(config, input.shape[-1], weights)),
            *(fold_rows(t, d, n) for t, d in zip((hx, cx), in_dims[3:5])), None,
            *(fold_rows(t, d, n) for t, d in zip((grad_output, grad_hy, grad_cy), in_dims[6:9])),
            *weights, *(fold_rows(m, d, n) for m, d in zip(masks, in_dims[9 + num_weights:])))
        lstm = config[0] == "LSTM"
        return ((unfold_rows(grad_input, n) if input_grad else grad_input,
                 unfold_rows(grad_hx, n), unfold_rows(grad_cx, n) if lstm else grad_cx,
                 *grad_weights),
                (1 if input_grad else None, 1, 1 if lstm else None,
                 *[0 if weight_grad else None] * num_weights))


# ---- Autocast -------------------------------------------------------------------------------
# Inside an autocast region fastrnn::rnn computes in one dtype for all its floating inputs:
# float32 on CPU (the CPU kernels have no bf16/fp16 path; torch runs its own CPU RNNs partly in
# float32 too), the region's dtype on CUDA (as torch's cuDNN RNN does). float64 tensors are never
# cast, as in torch's autocast. The modules cast before their checks (so that a bf16 input into a
# float32 module is accepted, as torch's modules accept it); the op's own autocast kernel does the
# same for direct callers of the op.


def autocast_dtype(device_type: str) -> Optional[torch.dtype]:
    """The dtype fastrnn::rnn computes in inside an autocast region on ``device_type``, or None
    outside one."""
    if not (torch._C._is_any_autocast_enabled()  # the cheap test first: modules call this per step
            and torch.amp.is_autocast_available(device_type)
            and torch.is_autocast_enabled(device_type)):
        return None
    return torch.float32 if device_type == "cpu" else torch.get_autocast_dtype(device_type)


def autocast_cast(value, dtype: torch.dtype):
    """``value`` (a tensor, None, or a list/tuple of those) with every floating tensor that is not
    float64 cast to ``dtype``."""
    if isinstance(value, (list, tuple)):
        return type(value)(autocast_cast(v, dtype) for v in value)
    if isinstance(value, Tensor) and value.is_floating_point() and value.dtype != torch.float64:
        return value.to(dtype)
    return value


_AUTOCAST_LIB = torch.library.Library("fastrnn", "IMPL")  # registrations live as long as it


def _register_rnn_autocast() -> None:
    for device_type in ("cpu", "cuda"):
        key = "Autocast" + torch._C._dispatch_key_for_device(device_type)
        keyset = torch._C.DispatchKeySet(getattr(torch._C.DispatchKey, key))

        def kernel(_keyset, *args, device_type=device_type, keyset=keyset):
            dtype = autocast_dtype(device_type)
            with torch._C._ExcludeDispatchKeyGuard(keyset):
                return rnn(*autocast_cast(args, dtype))

        _AUTOCAST_LIB.impl("rnn", kernel, key, with_keyset=True)


_register_rnn_autocast()
