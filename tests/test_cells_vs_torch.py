"""fastrnn.RNNCell / LSTMCell / GRUCell are exact drop-ins for torch's cells.

Full grid (it is small): cell {RNN tanh, RNN relu, LSTM, GRU} x bias x batched/unbatched x hx
given/None x dtype {float32, float64}; forward and every gradient (input, hx, cx, each parameter)
compared with torch's cell holding the same weights.
"""

import copy

import pytest
import torch
import torch.nn as nn

import fastrnn
from pairs import fr_class, make_pair

CELLS = {
    "rnn_tanh": (nn.RNNCell, dict(nonlinearity="tanh")),
    "rnn_relu": (nn.RNNCell, dict(nonlinearity="relu")),
    "lstm": (nn.LSTMCell, {}),
    "gru": (nn.GRUCell, {}),
}
DTYPES = [torch.float32, torch.float64]




def as_list(out):
    return list(out) if isinstance(out, tuple) else [out]


def run(cell, x, hx, gouts=None):
    out = cell(x, hx)
    outs = as_list(out)
    if gouts is None:
        gouts = [torch.randn_like(o) for o in outs]
    leaves = [x] + ([] if hx is None else as_list(hx))
    leaves = [t for t in leaves if t.requires_grad]
    loss = sum((o * g).sum() for o, g in zip(outs, gouts))
    grads = torch.autograd.grad(loss, leaves + list(cell.parameters()))
    return out, outs, gouts, list(grads)


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("with_hx", [True, False], ids=["hx", "nohx"])
@pytest.mark.parametrize("batched", [True, False], ids=["batched", "unbatched"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("cell", list(CELLS))
def test_cell_vs_torch(cell, bias, batched, with_hx, dtype, rng, assert_close):
    torch_cls, extra = CELLS[cell]
    I, H, B = rng.randint(1, 7), rng.randint(1, 7), rng.randint(1, 4)
    ref, mod = make_pair(torch_cls, I, H, bias=bias, dtype=dtype, **extra)
    bshape = (B,) if batched else ()
    x = torch.randn(*bshape, I, dtype=dtype, requires_grad=True)
    hx = None
    if with_hx:
        hx = torch.randn(*bshape, H, dtype=dtype, requires_grad=True)
        if torch_cls is nn.LSTMCell:
            hx = (hx, torch.randn(*bshape, H, dtype=dtype, requires_grad=True))
    rout, routs, gouts, rgrads = run(ref, x, hx)
    out, outs, _, grads = run(mod, x, hx, gouts)
    assert type(out) is type(rout)
    for a, b in zip(outs, routs):
        assert a.shape == b.shape and a.dtype == b.dtype
        assert_close(a, b, dtype)
    names = ["x"] + (["hx", "cx"][: len(as_list(hx))] if hx is not None else []) + [n for n, _ in mod.named_parameters()]
    assert len(grads) == len(rgrads) == len(names)
    for n, a, b in zip(names, grads, rgrads):
        assert_close(a, b, dtype, msg=lambda m, n=n: f"grad {n}: {m}")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bfloat16", "float16"])
@pytest.mark.parametrize("batched", [True, False], ids=["batched", "unbatched"])
@pytest.mark.parametrize("cell", list(CELLS))
def test_cell_half_precision_is_float32_rounded_once(cell, batched, dtype, assert_close):
    """A float16/bfloat16 cell returns torch's float32 cell's result and gradients on the same
    values, rounded to the dtype, in the dtypes torch's half cell returns."""
    torch_cls, extra = CELLS[cell]
    ref_half, mod = make_pair(torch_cls, 5, 6, dtype=dtype, **extra)
    ref = copy.deepcopy(ref_half).float()
    bshape = (3,) if batched else ()
    x = torch.randn(*bshape, 5, dtype=dtype, requires_grad=True)
    hx = torch.randn(*bshape, 6, dtype=dtype, requires_grad=True)
    if torch_cls is nn.LSTMCell:
        hx = (hx, torch.randn(*bshape, 6, dtype=dtype, requires_grad=True))
    widen = lambda t: t.detach().float().requires_grad_()  # noqa: E731
    out, outs, gouts, grads = run(mod, x, hx)
    assert [o.dtype for o in outs] == [o.dtype for o in as_list(ref_half(x, hx))]
    _, want_outs, _, want_grads = run(ref, widen(x),
                                      tuple(map(widen, hx)) if isinstance(hx, tuple) else widen(hx),
                                      [g.float() for g in gouts])
    assert len(grads) == len(want_grads)
    for got, want in zip(outs + grads, want_outs + want_grads):
        assert got.dtype == dtype
        assert_close(got, want.to(dtype))


@pytest.mark.parametrize("cell", list(CELLS))
def test_cell_identity(cell):
    torch_cls, extra = CELLS[cell]
    ref = torch_cls(3, 5, **extra)
    mod = fr_class(torch_cls)(3, 5, **extra)
    assert isinstance(mod, torch_cls) and type(mod) is not torch_cls
    assert isinstance(mod, nn.RNNCellBase)
    assert repr(mod) == repr(ref)
    assert list(mod.state_dict()) == list(ref.state_dict())
    for k, v in ref.state_dict().items():
        assert mod.state_dict()[k].shape == v.shape
    torch.manual_seed(99)
    a = torch_cls(3, 5, **extra)
    torch.manual_seed(99)
    b = fr_class(torch_cls)(3, 5, **extra)
    for (n, p), (_, q) in zip(a.named_parameters(), b.named_parameters()):
        assert torch.equal(p, q), n
    assert type(copy.deepcopy(mod)) is type(mod)


@pytest.mark.parametrize("cell", list(CELLS))
def test_cell_to_float64(cell, assert_close):
    torch_cls, extra = CELLS[cell]
    ref, mod = make_pair(torch_cls, 3, 4, **extra)
    ref, mod = ref.double(), mod.to(torch.float64)
    x = torch.randn(2, 3, dtype=torch.float64)
    for a, b in zip(as_list(mod(x)), as_list(ref(x))):
        assert a.dtype == torch.float64
        assert_close(a, b, torch.float64)


@pytest.mark.parametrize("cell", list(CELLS))
def test_cell_unrolled_sequence_matches_torch(cell, assert_close):
    """A cell stepped over a sequence (state fed back each step) accumulates grads like torch's."""
    torch_cls, extra = CELLS[cell]
    ref, mod = make_pair(torch_cls, 3, 4, dtype=torch.float64, **extra)
    xs = torch.randn(6, 2, 3, dtype=torch.float64, requires_grad=True)
    results = []
    for m in (ref, mod):
        hx, outs = None, []
        for t in range(xs.shape[0]):
            hx = m(xs[t], hx)
            outs.append(hx[0] if isinstance(hx, tuple) else hx)
        loss = (torch.stack(outs) * torch.linspace(-1, 1, 6 * 2 * 4, dtype=torch.float64).view(6, 2, 4)).sum()
        results.append([torch.stack(outs).detach()] + list(torch.autograd.grad(loss, [xs] + list(m.parameters()))))
    for a, b in zip(results[1], results[0]):
        assert_close(a, b, torch.float64)


@pytest.mark.parametrize("cell", list(CELLS))
@pytest.mark.parametrize("how", ["transposed", "sliced"])
def test_cell_non_contiguous(cell, how, assert_close):
    torch_cls, extra = CELLS[cell]
    ref, mod = make_pair(torch_cls, 3, 4, dtype=torch.float64, **extra)
    if how == "transposed":
        x = torch.randn(3, 2, dtype=torch.float64).t()
        h = torch.randn(4, 2, dtype=torch.float64).t()
    else:
        x = torch.randn(2, 6, dtype=torch.float64)[:, ::2]
        h = torch.randn(2, 8, dtype=torch.float64)[:, 1::2]
    assert not x.is_contiguous() and not h.is_contiguous()
    hx = (h, h * 0.5) if torch_cls is nn.LSTMCell else h
    for a, b in zip(as_list(mod(x, hx)), as_list(ref(x, hx))):
        assert_close(a, b, torch.float64)


@pytest.mark.parametrize("cell", list(CELLS))
@pytest.mark.parametrize("case", ["B1", "H1", "I1", "B0"])
def test_cell_edge_sizes(cell, case, assert_close):
    torch_cls, extra = CELLS[cell]
    I, H, B = dict(B1=(3, 4, 1), H1=(3, 1, 2), I1=(1, 4, 2), B0=(3, 4, 0))[case]
    ref, mod = make_pair(torch_cls, I, H, dtype=torch.float64, **extra)
    x = torch.randn(B, I, dtype=torch.float64, requires_grad=True)
    rout = as_list(ref(x))
    out = as_list(mod(x))
    for a, b in zip(out, rout):
        assert a.shape == b.shape
        assert_close(a, b, torch.float64)
    gr = torch.autograd.grad(sum(o.sum() for o in rout), [x] + list(ref.parameters()))
    gm = torch.autograd.grad(sum(o.sum() for o in out), [x] + list(mod.parameters()))
    for a, b in zip(gm, gr):
        assert_close(a, b, torch.float64)


@pytest.mark.parametrize("cell", list(CELLS))
def test_cell_no_grad_and_eval(cell, assert_close):
    torch_cls, extra = CELLS[cell]
    ref, mod = make_pair(torch_cls, 3, 4, **extra)
    mod.eval(), ref.eval()
    x = torch.randn(2, 3)
    with torch.no_grad():
        for a, b in zip(as_list(mod(x)), as_list(ref(x))):
            assert not a.requires_grad
            assert_close(a, b, torch.float32)
    with torch.inference_mode():
        for a, b in zip(as_list(mod(x)), as_list(ref(x))):
            assert_close(a, b, torch.float32)


@pytest.mark.parametrize("cell", list(CELLS))
def test_cell_gradcheck(cell):
    torch_cls, extra = CELLS[cell]
    mod = fr_class(torch_cls)(2, 3, dtype=torch.float64, **extra)
    names = [n for n, _ in mod.named_parameters()]
    params = [p.detach().clone().requires_grad_(True) for p in mod.parameters()]
    x = torch.randn(2, 2, dtype=torch.float64, requires_grad=True)
    h = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    c = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    is_l = torch_cls is nn.LSTMCell

    def fn(x, h, *rest):
        c, ps = (rest[0], rest[1:]) if is_l else (None, rest)
        out = torch.func.functional_call(mod, dict(zip(names, ps)), (x, (h, c) if is_l else h))
        return tuple(as_list(out))

    inputs = (x, h) + ((c,) if is_l else ()) + tuple(params)
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-6, rtol=1e-5)
