"""Double backward (gradients of gradients) and forward-mode AD through fastrnn's RNNs.

The native backward computes first-order gradients only. When autograd records a backward
(``create_graph=True``: gradient penalties, Hessian-vector products,
``torch.autograd.functional.jvp``) and something the gradients were computed from requires
grad, they leave the backward through ``_RnnGradients``: its forward hands on the native
results as they are (first-order values are the kernels' bits whichever way they are asked
for), and its backward, which runs only when a second derivative is taken, differentiates them.
It reruns the same stack through torch's differentiable RNN functions (``torch_rnn``), takes the
first-order gradients again with a graph and differentiates those: torch's kernels and speed for
the second order, in the dtype fastrnn's kernels compute in. Higher orders follow from torch's
graph. Forward-mode AD (the jvp rules of _ops' autograd Functions) goes through the same rerun
(``rerun_jvp``).

Shapes as ``fastrnn.rnn``: input [T, B, I] padded or [N, I] packed (with batch_sizes), hx
[L * D, B, O], cx [L * D, B, H], the weights in torch's flat order, dropout masks [T, B, D * O]
or [N, D * O] (already scaled) applied to the output of every layer but the last.
"""

from __future__ import annotations

import warnings
from typing import Callable, List, Optional, Sequence

import torch
from torch import Tensor

from ._backend import compute_dtype

_TORCH_RNN = {"LSTM": torch.lstm, "GRU": torch.gru, "RNN_TANH": torch.rnn_tanh,
              "RNN_RELU": torch.rnn_relu}


def torch_rnn(config, batch_sizes: Optional[Tensor], masks: Sequence[Tensor], input: Tensor,
              hx: Optional[Tensor], cx: Optional[Tensor], *weights: Tensor):
    """fastrnn.rnn's (output, hy, cy) computed by torch's differentiable functions, one layer
    at a time (the dropout masks go between layers), in the dtype fastrnn's kernels compute in,
    results in the input's dtype; cy None unless LSTM. config: (cell, num_layers,
    bidirectional, proj_size, has_bias). cuDNN is switched off: its RNN has no double
    backward, torch's native CUDA RNN has."""
    cell, num_layers, bidirectional, proj_size, has_bias = config
    D, lstm = 1 + bidirectional, cell == "LSTM"
    compute = compute_dtype(input.dtype, input.device.type, "fastrnn.rnn")
    x = input.to(compute)
    weights = [w.to(compute) for w in weights]
    # Packed input comes with hx; W_hh is [G * H, O].
    h = x.new_zeros(num_layers * D, input.shape[1], weights[1].shape[1]) if hx is None \
        else hx.to(compute)
    c = None
    if lstm:
        c = h.new_zeros(num_layers * D, h.shape[1], weights[1].shape[0] // 4) if cx is None \
            else cx.to(compute)
    per_layer = len(weights) // num_layers
    hy: List[Tensor] = []
    cy: List[Tensor] = []
    with torch.backends.cudnn.flags(enabled=False), warnings.catch_warnings():
        # torch's CPU LSTM says it takes its own implementation for projections (not oneDNN)
        warnings.filterwarnings("ignore", message="LSTM with projections is not supported")
        for layer in range(num_layers):
            if layer > 0 and masks:
                x = x * masks[layer - 1].to(compute)
            rows = slice(layer * D, (layer + 1) * D)
            state = (h[rows], c[rows]) if lstm else h[rows]
            layer_weights = weights[layer * per_layer:(layer + 1) * per_layer]
            if batch_sizes is None:
                x, *states = _TORCH_RNN[cell](x, state, layer_weights, has_bias, 1, 0.0, False,
                                              bidirectional, False)
            else:
                x, *states = _TORCH_RNN[cell](x, batch_sizes, state, layer_weights, has_bias, 1,
                                              0.0, False, bidirectional)
            hy.append(states[0])
            if lstm:
                cy.append(states[1])
    dtype = input.dtype
    return (x.to(dtype), torch.cat(hy).to(dtype), torch.cat(cy).to(dtype) if lstm else None)


def rerun_jvp(rerun: Callable, primals: Sequence[Optional[Tensor]],
              tangents: Sequence[Optional[Tensor]],
              with_functorch: bool = True) -> List[Optional[Tensor]]:
    """The tangents of ``rerun(*primals)``'s outputs for the primals' ``tangents`` (None: zero),
    None where an output is None: forward-mode AD as the derivative of a vector-Jacobian
    product with respect to its (linear) incoming gradient, through torch's functions (whose
    LSTM has no forward-mode formula of its own). Through torch.func, so that it also runs
    inside functorch transforms; or, ``with_functorch`` False, through autograd, for functions
    that do not run under torch.func (torch's packed RNNs read their batch_sizes' memory)."""
    moving = [i for i, t in enumerate(tangents) if t is not None]
    if not moving:  # (only a dropout mask had a tangent) zero tangents, of the right shapes
        moving, tangents = [0], [torch.zeros_like(primals[0]), *tangents[1:]]
    present: List[bool] = []

    def outputs_of(*moved):
        args = list(primals)
        for i, p in zip(moving, moved):
            args[i] = p
        results = rerun(*args)
        present[:] = [o is not None for o in results]
        return tuple(o for o in results if o is not None)

    moving_tangents = tuple(tangents[i] for i in moving)
    if with_functorch:
        outputs, vjp_fn = torch.func.vjp(outputs_of, *(primals[i] for i in moving))
        _, transpose = torch.func.vjp(vjp_fn, tuple(torch.zeros_like(o) for o in outputs))
        (jvp,) = transpose(moving_tangents)
    else:
        with torch.enable_grad():
            leaves = [primals[i].detach().requires_grad_() for i in moving]
            outputs = outputs_of(*leaves)
            cotangents = [torch.zeros_like(o, requires_grad=True) for o in outputs]
            vjp = torch.autograd.grad(outputs, leaves, cotangents, create_graph=True)
            jvp = torch.autograd.grad(vjp, cotangents, moving_tangents)
    jvp = iter(jvp)
    return [next(jvp) if p else None for p in present]


def differentiable_gradients(grads: Sequence[Optional[Tensor]],
                             primals: Sequence[Optional[Tensor]],
                             cotangents: Sequence[Optional[Tensor]],
                             rerun: Callable) -> tuple:
    """What a backward returns: ``grads``, the native first-order gradients of ``primals``
    (None where not computed) for ``cotangents``, the gradients of ``rerun(*primals)``'s
    outputs (None: zero). Differentiable through _RnnGradients when autograd records the
    backward and a primal or cotangent requires grad; as they are otherwise."""
    if not torch.is_grad_enabled():  # the common case, first: a streamed step pays this
        return tuple(grads)
    if not any(t is not None and t.requires_grad for t in (*primals, *cotangents)):
        return tuple(grads)
    return _RnnGradients.apply(rerun, len(primals), list(grads), *primals, *cotangents)


class _RnnGradients(torch.autograd.Function):
    """The identity on first-order gradients, differentiated by a rerun through torch (see the
    module's docstring). Inputs: rerun, the number of primals, the gradients (a list, so that
    autograd does not see them as inputs), the primals, the cotangents."""

    @staticmethod
    def forward(ctx, rerun, num_primals: int, grads: List[Optional[Tensor]], *tensors):
        ctx.rerun, ctx.num_primals = rerun, num_primals
        ctx.computed = [g is not None for g in grads]
        ctx.save_for_backward(*tensors)
        ctx.set_materialize_grads(False)
        return tuple(grads)

    @staticmethod
    def backward(ctx, *grads_of_grads):
        saved = ctx.saved_tensors
        # Only the gradients that were computed and are differentiated take part.
        taken = [i for i, (computed, u) in enumerate(zip(ctx.computed, grads_of_grads))
                 if computed and u is not None and saved[i].requires_grad]
        wrt = [i for i, t in enumerate(saved) if t is not None and t.requires_grad]
        results: List[Optional[Tensor]] = [None] * len(saved)
        if not (taken and wrt):
            return (None, None, None, *results)
        create_graph = torch.is_grad_enabled()  # a third order is being recorded
        with torch.enable_grad():
            # Partial derivatives: a cotangent may itself depend on the primals (the gradient
            # of out * out), and autograd adds that path when it passes on the cotangent's
            # gradient. Differentiating with respect to views of the tensors stops there; the
            # views keep the results connected to the tensors for a higher order.
            tensors = [t.view_as(t) if t is not None and t.requires_grad else t for t in saved]
            primals, cotangents = tensors[:ctx.num_primals], tensors[ctx.num_primals:]
            pairs = [(o, g) for o, g in zip(ctx.rerun(*primals), cotangents)
                     if o is not None and g is not None]
            first = torch.autograd.grad([o for o, _ in pairs], [primals[i] for i in taken],
                                        [g for _, g in pairs], create_graph=True,
                                        allow_unused=True)
            used = [(f, grads_of_grads[i]) for f, i in zip(first, taken)
                    if f is not None and f.requires_grad]
            if used:
                second = torch.autograd.grad(
                    [f for f, _ in used], [tensors[i] for i in wrt], [u for _, u in used],
                    create_graph=create_graph, allow_unused=True)
                for i, g in zip(wrt, second):
                    results[i] = g
        return (None, None, None, *results)
