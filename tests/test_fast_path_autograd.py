"""Calls with autograd on plain CPU tensors take the modules' fast path too (a StreamPlan and
_PlannedRnn, python/fastrnn/_ops.py), which skips the general path's Python: a step of a
decoder loop under training pays it per step. Its outputs and every gradient must equal the
general path's bit for bit (the same kernels) and torch's within the tolerance table, for each
layout it takes, whichever tensors require grad and whichever results the loss uses; what the
general path refuses in backward, it must refuse too.
"""

import warnings

import pytest
import torch
import torch.nn as nn
from torch.nn.utils.rnn import PackedSequence

from fastrnn import modules
from pairs import CELLS, flat_tensors, make_pair

MODULES = {
    "rnn_tanh": (nn.RNN, dict(nonlinearity="tanh")),
    "rnn_relu_nobias": (nn.RNN, dict(nonlinearity="relu", bias=False)),
    "lstm": (nn.LSTM, {}),
    "lstm_proj": (nn.LSTM, dict(proj_size=3)),
    "gru_2layer_bidir": (nn.GRU, dict(num_layers=2, bidirectional=True)),
}
I, H = 5, 6
# Which tensors require grad: everything, the weights only (input and state are data), the
# input and state only (frozen weights).
REQUIRES = ["all", "weights", "data"]


def run(module, x, hx, requires, uses, fast, wrap=None):
    """Results of module(x, hx) (of module(wrap(x), hx) with ``wrap``; a packed output as its
    data) and the gradients of a fixed random combination of the ``uses`` results with respect
    to everything that requires grad (inputs: fresh leaves each call)."""
    x = x.clone().requires_grad_(requires != "weights")
    if hx is not None:
        hx = (tuple(h.clone().requires_grad_(requires != "weights") for h in hx)
              if isinstance(hx, tuple) else hx.clone().requires_grad_(requires != "weights"))
    for p in module.parameters():
        p.requires_grad_(requires != "data")
        p.grad = None
    if not fast:  # the general path: the fast path (of the fastrnn base class) declines
        type(module)._stream = lambda *args: None
    try:
        with warnings.catch_warnings():  # torch's, for its projection: only there
            if not isinstance(module, modules._FastRNNBase):
                warnings.filterwarnings("ignore", message="LSTM with projections is not supported")
            result = module(x if wrap is None else wrap(x), hx)
            if isinstance(result[0], PackedSequence):
                result = (result[0].data, result[1])
            results = flat_tensors(result)
    finally:
        if not fast:
            del type(module)._stream
    gen = torch.Generator().manual_seed(0)
    used = [r for i, r in enumerate(results) if uses == "all" or i in uses]
    loss = sum((r * torch.randn(r.shape, generator=gen, dtype=r.dtype)).sum() for r in used)
    loss.backward()
    leaves = [x, *([] if hx is None else flat_tensors(hx)), *module.parameters()]
    grads = [t.grad for t in leaves if t.requires_grad]
    return [r.detach() for r in results], grads


def random_state(module, lead, dtype=torch.float32):
    """A random h0 (with c0 for an LSTM) for ``module``, of leading dimensions ``lead``."""
    h0 = torch.randn(*lead, module.proj_size or H, dtype=dtype)
    return (h0, torch.randn(*lead, H, dtype=dtype)) if isinstance(module, nn.LSTM) else h0


def compare(mod, ref, x, hx, requires, uses, general_calls, assert_close, wrap=None):
    general_calls.clear()
    fast = run(mod, x, hx, requires, uses, fast=True, wrap=wrap)
    assert general_calls == [], "the call should take the fast path"
    general = run(mod, x, hx, requires, uses, fast=False, wrap=wrap)
    assert len(general_calls) == 1
    want = run(ref, x, hx, requires, uses, fast=True, wrap=wrap)
    for got_part, general_part, want_part in zip(fast, general, want):
        assert len(got_part) == len(general_part) == len(want_part)
        for got, same, expected in zip(got_part, general_part, want_part):
            assert torch.equal(got, same)  # same kernels as the general path: same bits
            assert_close(got, expected, x.dtype)


@pytest.mark.parametrize("requires", REQUIRES)
@pytest.mark.parametrize("with_state", [False, True], ids=["zeros", "state"])
@pytest.mark.parametrize("layout", ["time_major", "batch_first", "unbatched", "step"])
@pytest.mark.parametrize("module", list(MODULES))
def test_module_autograd_on_the_fast_path(module, layout, with_state, requires, general_calls,
                                          assert_close):
    torch_cls, kwargs = MODULES[module]
    ref, mod = make_pair(torch_cls, I, H, batch_first=layout == "batch_first", **kwargs)
    D = 2 if mod.bidirectional else 1
    T, B = (1, 1) if layout == "step" else (4, 3)
    x = torch.randn((T, I) if layout == "unbatched" else
                    (B, T, I) if layout == "batch_first" else (T, B, I))
    lead = (mod.num_layers * D,) if layout == "unbatched" else (mod.num_layers * D, B)
    hx = random_state(mod, lead) if with_state else None
    compare(mod, ref, x, hx, requires, "all", general_calls, assert_close)


@pytest.mark.parametrize("requires", REQUIRES)
@pytest.mark.parametrize("with_state", [False, True], ids=["zeros", "state"])
@pytest.mark.parametrize("T,B", [(4, 1), (3, 3)])
@pytest.mark.parametrize("module", list(MODULES))
def test_packed_sequences_of_one_length_on_the_fast_path(module, T, B, with_state, requires,
                                                         general_calls, assert_close):
    """A PackedSequence whose sequences all have one length (one sequence, or a batch of equal
    lengths) is padded memory in sorted order: the fast path runs it, its states permuted to
    sorted order and back (here a permutation that is not the identity)."""
    torch_cls, kwargs = MODULES[module]
    ref, mod = make_pair(torch_cls, I, H, **kwargs)
    D = 2 if mod.bidirectional else 1
    sorted_indices = torch.tensor([2, 0, 1] if B == 3 else [0])

    def pack(data):
        return PackedSequence(data, torch.full((T,), B), sorted_indices, None)

    hx = random_state(mod, (mod.num_layers * D, B)) if with_state else None
    compare(mod, ref, torch.randn(T * B, I), hx, requires, "all", general_calls, assert_close,
            wrap=pack)


@pytest.mark.parametrize("uses", [(0,), (1,), (2,)], ids=["output", "hy", "cy"])
def test_lstm_gradient_from_one_result(uses, general_calls, assert_close):
    """The results the loss does not use get no gradient (None reaches the backward)."""
    ref, mod = make_pair(nn.LSTM, I, H, num_layers=2)
    x, hx = torch.randn(4, 3, I), (torch.randn(2, 3, H), torch.randn(2, 3, H))
    compare(mod, ref, x, hx, "all", uses, general_calls, assert_close)


@pytest.mark.parametrize("requires", REQUIRES)
@pytest.mark.parametrize("with_state", [False, True], ids=["zeros", "state"])
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("cell", list(CELLS))
def test_cell_autograd_on_the_fast_path(cell, batch, with_state, requires, general_calls,
                                        assert_close):
    torch_cls, kwargs = CELLS[cell]
    ref, mod = make_pair(torch_cls, I, H, **kwargs)
    x, hx = torch.randn(batch, I), None
    if with_state:
        hx = torch.randn(batch, H)
        if torch_cls is nn.LSTMCell:
            hx = (hx, torch.randn(batch, H))
    compare(mod, ref, x, hx, requires, "all", general_calls, assert_close)
    if torch_cls is nn.LSTMCell:  # only c_1 used: h_1's gradient is None
        compare(mod, ref, x, hx, requires, (1,), general_calls, assert_close)


def test_decoder_loop_unrolled_by_hand(general_calls, assert_close):
    """Steps chained through their states (each step's state is the previous step's output),
    as a decoder loop does: one backward through all of them."""
    ref, mod = make_pair(nn.LSTMCell, I, H)
    xs = torch.randn(6, 2, I)

    def unrolled(cell):
        for p in cell.parameters():
            p.grad = None
        state, total = None, 0
        for x in xs:
            state = cell(x, state)
            total = total + state[0].square().sum()
        total.backward()
        return [p.grad for p in cell.parameters()]

    general_calls.clear()
    got = unrolled(mod)
    assert general_calls == []
    for a, b in zip(got, unrolled(ref)):
        assert_close(a, b, torch.float32)


@pytest.mark.parametrize("cls", [nn.GRU, nn.LSTMCell], ids=lambda c: c.__name__)
def test_gradcheck_float64_on_the_fast_path(cls, general_calls):
    mod = make_pair(cls, 3, 4, dtype=torch.float64)[1]
    x = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    if cls is nn.GRU:
        x = x.unsqueeze(0).expand(3, 2, 3).contiguous().detach().requires_grad_()
        h = torch.randn(1, 2, 4, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(lambda x, h: mod(x, h), (x, h))
    else:
        h, c = (torch.randn(2, 4, dtype=torch.float64, requires_grad=True) for _ in range(2))
        assert torch.autograd.gradcheck(lambda x, h, c: mod(x, (h, c)), (x, h, c))
    assert general_calls == []


def test_weight_replaced_between_forward_and_backward_raises():
    """``param.data = t`` after forward also changes the saved weight (the same tensor): a
    different shape must not reach the native backward."""
    _, mod = make_pair(nn.GRU, I, H)
    out, _ = mod(torch.randn(3, 2, I))
    mod.weight_hh_l0.data = torch.randn(2, 2)
    with pytest.raises(RuntimeError, match="weight_hh_l0 was replaced"):
        out.sum().backward()


def test_create_graph_keeps_the_bits_and_retain_graph_repeats():
    """(Second derivatives on this path: tests/test_double_backward.py.)"""
    _, mod = make_pair(nn.RNNCell, I, H)
    x = torch.randn(2, I, requires_grad=True)
    (gx,) = torch.autograd.grad(mod(x).sum(), x, retain_graph=True)
    (first_order,) = torch.autograd.grad(mod(x).sum(), x, create_graph=True)
    assert torch.equal(first_order, gx) and first_order.requires_grad
    out = mod(x).sum()
    first = torch.autograd.grad(out, x, retain_graph=True)[0]
    assert torch.equal(first, torch.autograd.grad(out, x)[0]) and torch.equal(first, gx)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bfloat16", "float16"])
@pytest.mark.parametrize("requires", REQUIRES)
@pytest.mark.parametrize("kind,case", [("module", m) for m in MODULES] + [("cell", c) for c in CELLS],
                         ids=lambda v: v)
def test_16bit_autograd_on_the_fast_path(kind, case, requires, dtype, general_calls):
    """A 16-bit call over a handful of rows takes the fast path with autograd too (the kernels
    read its 16-bit weights, forward and backward; the plan widens and rounds the rest): the
    general path's results and gradients, bit for bit, in the module's dtype."""
    is_cell = kind == "cell"
    torch_cls, kwargs = CELLS[case] if is_cell else MODULES[case]
    _, mod = make_pair(torch_cls, I, H, **kwargs)
    mod = mod.to(dtype)
    if is_cell:
        x, hx = torch.randn(3, I, dtype=dtype), torch.randn(3, H, dtype=dtype)
        if torch_cls is nn.LSTMCell:
            hx = (hx, torch.randn(3, H, dtype=dtype))
    else:
        D = 2 if mod.bidirectional else 1
        x = torch.randn(2, 3, I, dtype=dtype)
        hx = random_state(mod, (mod.num_layers * D, 3), dtype)
    general_calls.clear()
    fast = run(mod, x, hx, requires, "all", fast=True)
    assert general_calls == []
    general = run(mod, x, hx, requires, "all", fast=False)
    assert len(general_calls) == 1
    for got_part, same_part in zip(fast, general):
        for got, same in zip(got_part, same_part):
            assert got.dtype == dtype and torch.equal(got, same)
