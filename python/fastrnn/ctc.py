"""CTC loss: drop-ins for ``torch.nn.functional.ctc_loss`` and ``torch.nn.CTCLoss``.

``ctc_loss`` takes log-probabilities exactly like ``F.ctc_loss``. ``ctc_loss_from_logits`` takes raw
logits and applies ``log_softmax`` over classes inside the kernel: no (T, B, C) log-probability
tensor is stored for backward, and the gradient it returns is the gradient w.r.t. the logits.

Both are ``torch.library`` custom ops (``fastrnn::ctc_loss``, ``fastrnn::ctc_loss_backward``) with
fake kernels and registered autograd; functorch transforms (torch.func.grad, vmap, jacrev) go
through _FunctorchCtc instead. CPU tensors run the native core (``fastrnn._C``), CUDA tensors
the CUDA module (``fastrnn._cuda``, imported on first use).

Differences from torch, all stricter or safer:
- a batch element whose target cannot be aligned (loss = inf) gets a zero gradient also without
  ``zero_infinity`` (torch returns NaN there);
- target labels outside [0, C) or equal to blank raise RuntimeError (torch reads out of bounds or
  silently computes a meaningless value), and targets must have an integer dtype;
- a log-probability of -inf gets a zero gradient (torch's is NaN: -inf - -inf in its formula);
- T = 0 or an empty batch gives the loss the definition gives (0 for an empty target, else inf)
  where torch raises.
Like torch, the gradient w.r.t. ``log_probs`` is ``exp(log_probs) - occupancy``: the gradient w.r.t.
the logits when ``log_probs = log_softmax(logits)``, which ``log_softmax``'s backward passes through
unchanged. It is therefore only meaningful for normalized log-probabilities, as torch's is.
"""

from __future__ import annotations

import operator
from typing import Optional, Sequence, Union

import torch
from torch import Tensor

from . import _C
from ._backend import cuda_module, native_dtype
from ._compile import refuse_torchscript
from ._batching import fold_rows, per_sample, unfold_rows
from ._ops import autocast_dtype, recording

__all__ = ["CTCLoss", "ctc_loss", "ctc_loss_from_logits"]

Lengths = Union[Tensor, Sequence[int], int]

_DTYPES = (torch.float32, torch.float64)
_AUTOCAST_TO_FLOAT32 = (torch.float16, torch.bfloat16)


def _dtype_code(dtype: torch.dtype) -> int:
    return 0 if dtype == torch.float32 else 1


def _addr(t: Optional[Tensor]) -> int:
    return 0 if t is None or t.numel() == 0 else t.data_ptr()


def _run_native(entry: str, input: Tensor, sizes: tuple, ptrs: dict) -> None:
    """Calls ``entry`` (ctc_forward or ctc_backward) of the module for input's device, with a
    workspace of the size that module asks for, on the current CUDA stream when on CUDA."""
    if input.is_cuda:
        mod = cuda_module()
        with torch.cuda.device(input.device):
            ws = torch.empty(mod.ctc_cuda_workspace_bytes(*sizes, _dtype_code(input.dtype)),
                             dtype=torch.uint8, device=input.device)
            getattr(mod, entry)(*sizes, _dtype_code(input.dtype), workspace=_addr(ws),
                                device=input.device.index,
                                stream=torch.cuda.current_stream().cuda_stream, **ptrs)
    else:
        desc = _C.CtcDesc(*sizes)
        threads = torch.get_num_threads()
        dtype = native_dtype(input.dtype, "fastrnn.ctc_loss")
        ws = torch.empty(_C.ctc_cpu_workspace_bytes(desc, dtype, threads), dtype=torch.uint8)
        getattr(_C, entry)(desc, dtype, workspace=_addr(ws), num_threads=threads, **ptrs)


# ---------------------------------------------------------------------------------------------
# Custom ops. Inputs are already validated and normalized by _prepare:
#   input [T, B, C] contiguous float32/float64; targets int64 1-D; target_offsets, input_lengths,
#   target_lengths int64 [B]; all on the input's device.
# Outputs: loss [B], log_alpha [B, T, 2*max_target+1] (need_alpha: what backward reads) or [0],
#   row_lse [T, B] (from_logits) or [0].


@torch.library.custom_op("fastrnn::ctc_loss", mutates_args=())
def _ctc_loss_op(
    input: Tensor,
    targets: Tensor,
    target_offsets: Tensor,
    input_lengths: Tensor,
    target_lengths: Tensor,
    max_target: int,
    blank: int,
    zero_infinity: bool,
    from_logits: bool,
    need_alpha: bool,
) -> tuple[Tensor, Tensor, Tensor]:
    T, B, C = input.shape
    loss = input.new_empty(B)
    log_alpha = input.new_empty(B, T, 2 * max_target + 1) if need_alpha else input.new_empty(0)
    row_lse = input.new_empty(T, B) if from_logits else input.new_empty(0)
    ptrs = dict(
        input=_addr(input),
        targets=_addr(targets),
        target_offsets=_addr(target_offsets),
        input_lengths=_addr(input_lengths),
        target_lengths=_addr(target_lengths),
        zero_infinity=zero_infinity,
        loss=_addr(loss),
        log_alpha=_addr(log_alpha),
        row_lse=_addr(row_lse),
    )
    _run_native("ctc_forward", input, (T, B, C, max_target, blank, targets.numel(), from_logits),
                ptrs)
    return loss, log_alpha, row_lse


@_ctc_loss_op.register_fake
def _(input, targets, target_offsets, input_lengths, target_lengths, max_target, blank,
      zero_infinity, from_logits, need_alpha):
    T, B, _ = input.shape
    return (
        input.new_empty(B),
        input.new_empty(B, T, 2 * max_target + 1) if need_alpha else input.new_empty(0),
        input.new_empty(T, B) if from_logits else input.new_empty(0),
    )


@torch.library.custom_op("fastrnn::ctc_loss_backward", mutates_args=())
def _ctc_loss_backward_op(
    grad_loss: Tensor,
    input: Tensor,
    targets: Tensor,
    target_offsets: Tensor,
    input_lengths: Tensor,
    target_lengths: Tensor,
    log_alpha: Tensor,
    row_lse: Tensor,
    blank: int,
    from_logits: bool,
) -> Tensor:
    T, B, C = input.shape
    max_target = (log_alpha.shape[2] - 1) // 2
    grad_loss = grad_loss.contiguous()
    grad_input = torch.empty_like(input)
    ptrs = dict(
        input=_addr(input),
        targets=_addr(targets),
        target_offsets=_addr(target_offsets),
        input_lengths=_addr(input_lengths),
        target_lengths=_addr(target_lengths),
        log_alpha=_addr(log_alpha),
        row_lse=_addr(row_lse),
        grad_loss=_addr(grad_loss),
        grad_input=_addr(grad_input),
    )
    _run_native("ctc_backward", input, (T, B, C, max_target, blank, targets.numel(), from_logits),
                ptrs)
    return grad_input


@_ctc_loss_backward_op.register_fake
def _(grad_loss, input, targets, target_offsets, input_lengths, target_lengths, log_alpha,
      row_lse, blank, from_logits):
    return torch.empty_like(input)


def _setup_context(ctx, inputs, output):
    (input, targets, target_offsets, input_lengths, target_lengths, _, blank, _, from_logits,
     need_alpha) = inputs
    if not need_alpha:
        raise RuntimeError("fastrnn::ctc_loss was called with need_alpha=False on an input that "
                           "requires grad; call it through fastrnn.ctc.ctc_loss")
    _, log_alpha, row_lse = output
    ctx.save_for_backward(input, targets, target_offsets, input_lengths, target_lengths,
                          log_alpha, row_lse)
    ctx.blank = blank
    ctx.from_logits = from_logits


def _backward(ctx, grad_loss, grad_log_alpha, grad_row_lse):
    input, targets, target_offsets, input_lengths, target_lengths, log_alpha, row_lse = (
        ctx.saved_tensors)
    grad_input = _ctc_loss_backward_op(grad_loss, input, targets, target_offsets, input_lengths,
                                       target_lengths, log_alpha, row_lse, ctx.blank,
                                       ctx.from_logits)
    return grad_input, None, None, None, None, None, None, None, None, None


_ctc_loss_op.register_autograd(_backward, setup_context=_setup_context)
# Like torch's ctc_loss, the op runs in float32 inside autocast regions.
for _device_type in ("cpu", "cuda"):
    _ctc_loss_op.register_autocast(_device_type, torch.float32)


def _no_double_backward_setup(ctx, inputs, output):
    pass


_NO_DOUBLE_BACKWARD = ("fastrnn ctc_loss does not support double backward (the gradient of its "
                       "gradient)")


def _no_double_backward(ctx, grad):
    raise RuntimeError(_NO_DOUBLE_BACKWARD)


_ctc_loss_backward_op.register_autograd(_no_double_backward,
                                        setup_context=_no_double_backward_setup)


class _FunctorchCtc(torch.autograd.Function):
    """The loss for functorch transforms (torch.func.grad, vjp, vmap, jacrev). The op's
    torch.library autograd lacks the setup_context staticmethod they require
    (pytorch/pytorch#168393), and _prepare reads lengths and targets on the host, which a vmapped
    tensor does not allow: here _prepare and the op run below the transforms, on plain tensors,
    and the batching rule folds the samples (each may have its own targets and lengths) into
    the batch of one call. Inputs: ``_ctc``'s arguments (blank an int), then need_alpha (whether
    a backward may follow). Returns the loss per batch element (before the reduction) and the
    target lengths as _prepare made them, both without the batch dimension for unbatched input,
    then the op's alignment variables for _FunctorchCtcBackward (log_alpha [B, T, 2S + 1], empty
    without need_alpha; row_lse [T, B] from logits, else empty; B = 1 for unbatched input)."""

    @staticmethod
    def forward(input, targets, input_lengths, target_lengths, blank, reduction, zero_infinity,
                from_logits, need_alpha):
        p = _prepare(input, targets, input_lengths, target_lengths, blank, reduction,
                     _what(from_logits))
        loss, log_alpha, row_lse = _ctc_loss_op(*_op_args(p, blank, zero_infinity, from_logits),
                                                need_alpha)
        return *_per_element(p, loss), log_alpha, row_lse

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.mark_non_differentiable(*output[1:])
        # The lengths may be tensors or Python ints: tensors are saved, the rest kept as given.
        ctx.save_for_backward(*(a for a in inputs[:4] if isinstance(a, Tensor)), *output[2:])
        ctx.arguments = [None if isinstance(a, Tensor) else a for a in inputs]

    @staticmethod
    def backward(ctx, grad_loss, *_grads_of_non_differentiable):
        saved = iter(ctx.saved_tensors)
        input, targets, input_lengths, target_lengths, blank, _, _, from_logits, _ = (
            next(saved) if a is None else a for a in ctx.arguments)
        log_alpha, row_lse = saved
        grad_input = _FunctorchCtcBackward.apply(grad_loss, input, targets, input_lengths,
                                                 target_lengths, log_alpha, row_lse, blank,
                                                 from_logits)
        return (grad_input,) + (None,) * 8

    @staticmethod
    def vmap(info, in_dims, input, targets, input_lengths, target_lengths, *rest):
        """torch.func.vmap's rule: the vmapped dimension folds into the batch (the losses of
        the batch elements are independent), except where a sample's targets are the 1-D
        concatenation of a batch's, a layout that does not fold: one call per sample then."""
        n, unbatched = info.batch_size, _unbatched(input, in_dims[0])
        folded = _ctc_folded(n, in_dims[:4], input, targets, input_lengths, target_lengths)
        if folded is None:
            return per_sample(_FunctorchCtc.apply, n, in_dims,
                              (input, targets, input_lengths, target_lengths, *rest),
                              stack=_stack_padded)
        loss, target_lengths, log_alpha, row_lse = _FunctorchCtc.apply(*folded, *rest)
        shape = (n,) if unbatched else (n, -1)
        (log_alpha, alpha_dim), (row_lse, lse_dim) = (
            _alignment_per_sample(log_alpha, n, 0), _alignment_per_sample(row_lse, n, 1))
        return ((loss.view(shape), target_lengths.view(shape), log_alpha, row_lse),
                (0, 0, alpha_dim, lse_dim))


def _unbatched(input: Tensor, dim: Optional[int]) -> bool:
    """Whether the samples of ``input``, vmapped at ``dim``, are unbatched [T, C]."""
    return input.dim() - (dim is not None) == 2


def _folded_per_element(values, dim: Optional[int], n: int) -> Tensor:
    """n samples' per-element values (lengths, the loss's gradient: [B], or one for an unbatched
    sample; Python ints too) as one [n * B] tensor, samples outermost."""
    if not isinstance(values, Tensor):
        values = torch.as_tensor(values)
    values = values.expand(n, *values.shape) if dim is None else values.movedim(dim, 0)
    return values.reshape(-1)


def _ctc_folded(n: int, dims, input: Tensor, targets: Tensor, input_lengths, target_lengths):
    """(input, targets, input_lengths, target_lengths) of n samples, vmapped at ``dims``, as
    one call's over n times the batch (samples outermost; [T, n, C] for unbatched samples), or
    None where a sample's targets are the concatenated 1-D targets of a batch."""
    input_dim, targets_dim = dims[:2]
    unbatched = _unbatched(input, input_dim)
    if not unbatched and targets.dim() - (targets_dim is not None) != 2:
        return None
    targets = (targets.expand(n, *targets.shape) if targets_dim is None
               else targets.movedim(targets_dim, 0))
    if unbatched:  # a sample [T, C] as a batch of one, [T, 1, C]
        input, input_dim = ((input.unsqueeze(1), None) if input_dim is None
                            else (input.movedim(input_dim, 0).unsqueeze(2), 0))
    return (fold_rows(input, input_dim, n), targets if unbatched else targets.flatten(0, 1),
            _folded_per_element(input_lengths, dims[2], n),
            _folded_per_element(target_lengths, dims[3], n))


# The alignment variables have their batch at dimension 0 (log_alpha) or 1 (row_lse), and are
# empty where not computed: a sample's empty one is [0], n samples' [n, 0] vmapped at 0.

def _alignment_per_sample(t: Tensor, n: int, at: int):
    """A folded call's alignment variable as n samples', and the dimension they are at."""
    return (t.new_empty(n, 0), 0) if t.numel() == 0 else (unfold_rows(t, n, at), at)


def _alignment_folded(t: Tensor, dim: Optional[int], n: int, at: int) -> Tensor:
    """n samples' alignment variable, vmapped at ``dim``, as one folded call's."""
    return t.new_empty(0) if t.numel() == 0 else fold_rows(t, dim, n, at)


def _stack_padded(results: list) -> Tensor:
    """torch.stack of one output of the per-sample calls. Only log_alpha's sizes can differ
    between samples (2 * a sample's longest target + 1): those are padded with -inf to the
    widest, what one call over all of them would hold there and what backward never reads."""
    width = max(t.shape[-1] for t in results)
    return torch.stack([t if t.shape[-1] == width
                        else torch.nn.functional.pad(t, (0, width - t.shape[-1]),
                                                     value=-float("inf"))
                        for t in results])


class _FunctorchCtcBackward(torch.autograd.Function):
    """_FunctorchCtc's backward, a Function of its own for the same reasons: the op's backward
    below the transforms, from the alignment variables _FunctorchCtc returned, with a batching
    rule; a grad level records a node that raises the double-backward error. Returns the
    gradient of the input (log-probabilities or logits)."""

    @staticmethod
    def forward(grad_loss, input, targets, input_lengths, target_lengths, log_alpha, row_lse,
                blank, from_logits):
        p = _prepare(input, targets, input_lengths, target_lengths, blank, "none",
                     _what(from_logits))
        grad_input = _ctc_loss_backward_op(
            grad_loss.reshape(-1), p["input"], p["targets"], p["target_offsets"],
            p["input_lengths"], p["target_lengths"], log_alpha, row_lse, blank, from_logits)
        return grad_input.view(input.shape)

    @staticmethod
    def setup_context(ctx, inputs, output):
        pass

    @staticmethod
    def backward(ctx, grad):
        raise RuntimeError(_NO_DOUBLE_BACKWARD)

    @staticmethod
    def vmap(info, in_dims, grad_loss, input, targets, input_lengths, target_lengths, log_alpha,
             row_lse, *rest):
        """torch.func.vmap's rule, folded as _FunctorchCtc's (jacrev: every cotangent in one
        call)."""
        n = info.batch_size
        folded = _ctc_folded(n, in_dims[1:5], input, targets, input_lengths, target_lengths)
        if folded is None:
            return per_sample(_FunctorchCtcBackward.apply, n, in_dims,
                              (grad_loss, input, targets, input_lengths, target_lengths,
                               log_alpha, row_lse, *rest))
        grad_input = _FunctorchCtcBackward.apply(
            _folded_per_element(grad_loss, in_dims[0], n), *folded,
            _alignment_folded(log_alpha, in_dims[5], n, 0),
            _alignment_folded(row_lse, in_dims[6], n, 1), *rest)
        # [T, n * B, C] as [T, n, B, C]; unbatched samples' [T, n, C] has n at 1 already
        return (grad_input if _unbatched(input, in_dims[1]) else unfold_rows(grad_input, n)), 1


# ---------------------------------------------------------------------------------------------
# Argument checking and normalization (torch's error types; messages name the argument).


def _as_lengths(x: Lengths, name: str, batch: int) -> Tensor:
    """Lengths as int64 [batch]. Like torch: a tensor of any shape with batch integer elements
    (a non-integer tensor is a RuntimeError), or Python ints (anything else is a TypeError)."""
    if isinstance(x, Tensor):
        t = x
    else:
        t = torch.as_tensor(x)
        if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
            raise TypeError(f"{name} must be a tensor or a sequence of ints, got {x!r}")
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise RuntimeError(f"{name} must be integral")
    if t.numel() != batch:
        raise RuntimeError(f"{name} must be of size batch_size")
    # contiguous: an expanded (stride-0) tensor stays a view through reshape and to()
    return t.reshape(batch).to(torch.int64).contiguous()


def _as_blank(blank) -> int:
    """blank as a Python int: ints, NumPy integers and 0-d integer tensors, as torch accepts;
    a float or bool is a TypeError, as torch's argument parser gives."""
    if isinstance(blank, bool):
        raise TypeError("blank must be an int, not bool")
    try:
        return operator.index(blank)
    except TypeError:
        raise TypeError(f"blank must be an int, not {type(blank).__name__}") from None


def _require(ok: Tensor, summary: str, message) -> None:
    """Raises RuntimeError(message()) unless the 0-d bool tensor ``ok`` is true. Under
    torch.compile the check is an in-graph assertion (a host check would break the graph): the
    same condition and error type, with ``summary`` as the message since the values are not known
    while tracing."""
    if torch.compiler.is_compiling():
        torch._assert_async(ok, f"fastrnn ctc_loss: {summary}")
    elif not bool(ok):
        raise RuntimeError(message())


def _prepare(input: Tensor, targets: Tensor, input_lengths: Lengths, target_lengths: Lengths,
             blank: int, reduction: str, what: str):
    if reduction not in ("none", "mean", "sum"):
        raise ValueError(f"{reduction} is not a valid value for reduction")
    if not isinstance(input, Tensor) or not isinstance(targets, Tensor):
        raise TypeError(f"{what} and targets must be tensors")
    if input.dtype in _AUTOCAST_TO_FLOAT32 and autocast_dtype(input.device.type) is not None:
        input = input.float()  # torch's ctc_loss runs in float32 under autocast too
    if input.dtype not in _DTYPES:
        raise NotImplementedError(
            f"fastrnn ctc_loss: not implemented for {input.dtype} {what} "
            "(float32 and float64 are supported)")
    unbatched = input.dim() == 2
    if input.dim() not in (2, 3):
        raise RuntimeError(f"Expected 3-dimensional (or unbatched 2-dimensional) {what}, "
                           f"but got {input.dim()}-dimensional tensor")
    if unbatched:
        if targets.dim() != 1:
            raise RuntimeError(f"unbatched {what} needs 1-dimensional targets, "
                               f"but got {targets.dim()}-dimensional tensor")
        input, targets = input.unsqueeze(1), targets.unsqueeze(0)
    T, B, C = input.shape
    if targets.dim() not in (1, 2):
        raise RuntimeError(
            f"Expected 1 to 2 dimensions, but got {targets.dim()}-dimensional tensor for targets")
    if targets.is_floating_point() or targets.is_complex() or targets.dtype == torch.bool:
        raise RuntimeError(f"targets must be integral, but got {targets.dtype}")
    if not 0 <= blank < C:
        raise RuntimeError("blank must be in label range")
    il = _as_lengths(input_lengths, "input_lengths", B)
    tl = _as_lengths(target_lengths, "target_lengths", B)

    # The checks read the values on the host, as torch's do; under torch.compile each becomes an
    # in-graph assertion instead (see _require), and the alignment buffers are sized by the
    # targets' shape rather than by the longest target, which would need the values.
    il_h, tl_h, tg_h = il.cpu(), tl.cpu(), targets.detach().to("cpu", torch.int64)
    if B > 0:
        _require(il_h.min() >= 0, "input_lengths must be non-negative",
                 lambda: "Expected input_lengths to have value at least 0, "
                         f"but got value {int(il_h.min())}")
        _require(il_h.max() <= T, "input_lengths must not exceed the input's length",
                 lambda: f"Expected input_lengths to have value at most {T}, "
                         f"but got value {int(il_h.max())}")
        _require(tl_h.min() >= 0, "target_lengths must be non-negative",
                 lambda: "Expected target_lengths to have value at least 0, "
                         f"but got value {int(tl_h.min())}")
    if targets.dim() == 2:
        if targets.shape[0] != B:
            raise RuntimeError(f"Expected targets to have size {B} at dimension 0, "
                               f"but got size {targets.shape[0]}")
        width = targets.shape[1]
        if B > 0:
            _require(tl_h.max() <= width, "target_lengths must not exceed the targets' width",
                     lambda: f"Expected targets to have size at least {int(tl_h.max())} at "
                             f"dimension 1, but got size {width}")
        offsets_h = torch.arange(B, dtype=torch.int64) * width
        used = torch.arange(width) < tl_h.unsqueeze(1)
    else:
        if torch.compiler.is_compiling():
            total = tl_h.sum()
            _require(total <= targets.shape[0], "targets is shorter than the sum of target_lengths",
                     lambda: "")
        else:
            total = sum(tl_h.tolist())  # Python ints: huge lengths must not wrap around
            if targets.shape[0] < total:
                raise RuntimeError(f"Expected targets to have size {total} at dimension 0, "
                                   f"but got size {targets.shape[0]}")
        offsets_h = torch.cumsum(tl_h, 0) - tl_h
        used = torch.arange(targets.shape[0]) < total
    invalid = used & ((tg_h < 0) | (tg_h >= C) | (tg_h == blank))
    _require(~invalid.any(), "a target label is out of range or equal to blank",
             lambda: f"target label {int(tg_h[invalid][0])} is out of range [0, {C}) or equal "
                     f"to blank ({blank})")

    if torch.compiler.is_compiling():
        max_target = targets.shape[-1]
    else:
        max_target = int(tl_h.max()) if B > 0 else 0
    device = input.device
    return dict(
        input=input.contiguous(),
        targets=targets.detach().to(device, torch.int64).contiguous().reshape(-1),
        target_offsets=offsets_h.to(device),
        input_lengths=il.to(device),
        target_lengths=tl.to(device),
        max_target=max_target,
        unbatched=unbatched,
    )


def _ctc(input, targets, input_lengths, target_lengths, blank, reduction, zero_infinity,
         from_logits):
    blank = _as_blank(blank)
    if torch._C._are_functorch_transforms_active() and not recording():
        # Grad mode decides whether the alignment variables are kept: a vmapped input does not
        # say whether a grad level below tracks it.
        loss, target_lengths, _, _ = _FunctorchCtc.apply(
            input, targets, input_lengths, target_lengths, blank, reduction, bool(zero_infinity),
            from_logits, torch.is_grad_enabled())
    else:
        p = _prepare(input, targets, input_lengths, target_lengths, blank, reduction,
                     _what(from_logits))
        # Without a backward to come, the (B, T, 2S+1) forward variables are not stored at all.
        # torch.jit.trace records the flag as a constant: a traced graph keeps them, so that it
        # runs with autograd too, whichever mode it was traced in.
        need_alpha = ((torch.is_grad_enabled() and p["input"].requires_grad)
                      or torch._C._get_tracing_state() is not None)
        loss, _, _ = _ctc_loss_op(*_op_args(p, blank, zero_infinity, from_logits), need_alpha)
        loss, target_lengths = _per_element(p, loss)
    if reduction == "mean":
        return (loss / target_lengths.clamp_min(1).to(loss.dtype)).mean()
    if reduction == "sum":
        return loss.sum()
    return loss


def _what(from_logits: bool) -> str:
    """What the input is, as error messages name it."""
    return "logits" if from_logits else "log_probs"


def _op_args(p: dict, blank: int, zero_infinity, from_logits: bool) -> tuple:
    """fastrnn::ctc_loss's arguments but need_alpha, from what _prepare made."""
    return (p["input"], p["targets"], p["target_offsets"], p["input_lengths"],
            p["target_lengths"], p["max_target"], blank, bool(zero_infinity), from_logits)


def _per_element(p: dict, loss: Tensor):
    """(loss per batch element, target lengths), without the batch dimension for unbatched
    input: what the reduction reads."""
    if p["unbatched"]:
        return loss.squeeze(0), p["target_lengths"].squeeze(0)
    return loss, p["target_lengths"]


def ctc_loss(log_probs: Tensor, targets: Tensor, input_lengths: Lengths, target_lengths: Lengths,
             blank: int = 0, reduction: str = "mean", zero_infinity: bool = False) -> Tensor:
    """Connectionist temporal classification loss, with exactly ``F.ctc_loss``'s semantics.

    log_probs: (T, B, C) or unbatched (T, C) log-probabilities (float32 or float64).
    targets: padded (B, S) or concatenated 1-D labels (unbatched: 1-D), integer dtype.
    input_lengths, target_lengths: (B,) tensors, or sequences of ints.
    reduction: 'none' (loss per element), 'sum', or 'mean' (each loss divided by its target
    length clamped to at least 1, then averaged over the batch).
    zero_infinity: report 0 instead of inf for elements whose target cannot be aligned.
    """
    return _ctc(log_probs, targets, input_lengths, target_lengths, blank, reduction,
                zero_infinity, False)


def ctc_loss_from_logits(logits: Tensor, targets: Tensor, input_lengths: Lengths,
                         target_lengths: Lengths, blank: int = 0, reduction: str = "mean",
                         zero_infinity: bool = False) -> Tensor:
    """``ctc_loss(logits.log_softmax(-1), ...)`` fused: log_softmax is applied inside the kernel,
    no log-probability tensor is stored, and the gradient is w.r.t. ``logits``. Same arguments
    and semantics as :func:`ctc_loss`, with logits (T, B, C) or (T, C) in place of log_probs."""
    return _ctc(logits, targets, input_lengths, target_lengths, blank, reduction, zero_infinity,
                True)


class CTCLoss(torch.nn.CTCLoss):
    """``torch.nn.CTCLoss`` computed by fastrnn; constructor, attributes and state are torch's."""

    __prepare_scriptable__ = refuse_torchscript

    def forward(self, log_probs: Tensor, targets: Tensor, input_lengths: Lengths,
                target_lengths: Lengths) -> Tensor:
        return ctc_loss(log_probs, targets, input_lengths, target_lengths, self.blank,
                        self.reduction, self.zero_infinity)
