"""Derivatives beyond first-order reverse mode, through the modules and cells: gradients of
gradients (autograd with create_graph=True: gradient penalties, Hessians,
torch.autograd.functional.jvp, a third order) and forward-mode AD (torch.func.jvp, jacfwd,
torch.autograd.forward_ad), held to torch's own modules, which support them on the CPU.
fastrnn's first order is its kernels'; the rest reruns the stack through torch's functions
(python/fastrnn/_double_backward.py). gradgradcheck of the op itself, with dropout masks and
packed input: tests/test_rnn_ops.py. Under torch.func transforms a second order still raises
(tests/test_vmap.py, tests/test_ecosystem.py).
"""

import warnings

import pytest
import torch
import torch.autograd.forward_ad as fwAD
import torch.nn as nn
from torch.func import functional_call
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pack_sequence

import fastrnn
from pairs import flat_tensors, make_pair

MODULES = {
    "rnn_tanh": (nn.RNN, dict(nonlinearity="tanh")),
    "rnn_relu_2layer_bidir": (nn.RNN, dict(nonlinearity="relu", num_layers=2,
                                           bidirectional=True)),
    "lstm": (nn.LSTM, {}),
    "lstm_proj_2layer": (nn.LSTM, dict(proj_size=3, num_layers=2)),
    "gru_bidir_batch_first": (nn.GRU, dict(bidirectional=True, batch_first=True)),
    "lstm_cell": (nn.LSTMCell, {}),
    "gru_cell": (nn.GRUCell, {}),
    "rnn_cell_nobias": (nn.RNNCell, dict(bias=False)),
}
I, H = 4, 5
CELL_CLASSES = (nn.LSTMCell, nn.GRUCell, nn.RNNCell)
# torch.func.jvp and forward_ad import code that uses a deprecated torch.jit decorator.
_JIT_DEPRECATED = pytest.mark.filterwarnings(
    "ignore:`torch.jit.script` is deprecated:DeprecationWarning")
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not (torch.cuda.is_available() and fastrnn.cuda_build_available()),
    reason="needs a CUDA device and a build with the CUDA module"))]


def _leaves(module, x, hx):
    return [x, *flat_tensors(hx), *module.parameters()]


def _inputs(torch_cls, kwargs, dtype, device, batch=3, steps=4):
    """(x, hx) for a module or cell: leaves that require grad; hx a tuple for LSTM."""
    shape = (batch, I) if torch_cls in CELL_CLASSES else (
        (batch, steps, I) if kwargs.get("batch_first") else (steps, batch, I))
    x = torch.randn(shape, dtype=dtype, device=device, requires_grad=True)
    if torch_cls in CELL_CLASSES:
        states = (batch, H)
    else:
        D = 2 if kwargs.get("bidirectional") else 1
        states = (kwargs.get("num_layers", 1) * D, batch, kwargs.get("proj_size") or H)
    h = torch.randn(states, dtype=dtype, device=device, requires_grad=True)
    if torch_cls in (nn.LSTM, nn.LSTMCell):
        c_shape = states[:-1] + (H,)
        return x, (h, torch.randn(c_shape, dtype=dtype, device=device, requires_grad=True))
    return x, h


def _penalty_gradients(module, x, hx):
    """The gradients, w.r.t. the input, the state and every parameter, of a gradient penalty:
    the squared norm of the gradient of a loss whose own gradient depends on the results
    (sum of squares), so that both second-order paths are exercised (through the saved
    tensors, and through the incoming gradients)."""
    with warnings.catch_warnings():  # torch's, for its projection
        warnings.filterwarnings("ignore", message="LSTM with projections is not supported")
        results = flat_tensors(module(x, hx))
    leaves = _leaves(module, x, hx)
    loss = sum((r * r).sum() for r in results)
    first = torch.autograd.grad(loss, leaves, create_graph=True)
    penalty = sum((g * g).sum() for g in first)
    return [g.detach() for g in first], torch.autograd.grad(penalty, leaves)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("path", ["fast", "general"])
@pytest.mark.parametrize("case", MODULES)
def test_gradient_penalty_matches_torch(case, path, dtype, device, assert_close, tol,
                                        monkeypatch):
    """Both ways the modules run with autograd: a StreamPlan (_PlannedRnn) and the general
    path (_EagerRnn on the CPU, the op on CUDA). float64 against torch's float64 element by
    element. In float32 a second derivative's small elements carry errors well above float32's
    rounding, torch's own as much as fastrnn's (up to ~5e-4 relative against float64 on these
    problems, for both): float32 is held to torch's float64 on the same values, each gradient
    within the table's float32 rtol in norm (both measure ~2e-7; a missing term is O(1))."""
    torch_cls, kwargs = MODULES[case]
    ref, mod = make_pair(torch_cls, I, H, **kwargs)
    ref, mod = ref.to(device, torch.float64), mod.to(device, dtype)
    if path == "general":
        monkeypatch.setattr(type(mod), "_stream", lambda *args: None, raising=False)
    x, hx = _inputs(torch_cls, kwargs, dtype, device)
    got_first, got = _penalty_gradients(mod, x, hx)
    wide = lambda t: t.detach().double().requires_grad_()  # noqa: E731
    want_first, want = _penalty_gradients(
        ref, wide(x), tuple(map(wide, hx)) if isinstance(hx, tuple) else wide(hx))
    for g, w in zip(got_first + list(got), want_first + list(want), strict=True):
        if dtype == torch.float64:
            assert_close(g, w)
        else:
            assert g.dtype == dtype
            assert (g.double() - w).norm() <= tol(dtype)["rtol"] * w.norm()


def _dropout_lstm_and_reference(packed: bool):
    """A two-layer bidirectional LSTM in training mode with dropout, as (module, its output as a
    function of its input's data, the same through fastrnn.reference.rnn_stack, a loop of torch
    ops fed the module's masks by replaying the seed, the input's data: packed [N, I] with
    lengths 4, 2, 3, or padded [4, 3, I])."""
    from fastrnn.reference import rnn_stack

    mod = fastrnn.LSTM(I, H, num_layers=2, dropout=0.4, bidirectional=True).double()
    x = torch.randn(4, 3, I, dtype=torch.float64)
    pack = pack_padded_sequence(x, torch.tensor([4, 2, 3]), enforce_sorted=False)
    data, batch_sizes = (pack.data, pack.batch_sizes) if packed else (x, None)
    seed = torch.seed()

    def ours(data):
        torch.manual_seed(seed)
        if not packed:
            return mod(data)[0]
        return mod(PackedSequence(data, batch_sizes, pack.sorted_indices,
                                  pack.unsorted_indices))[0].data

    def reference(data):
        torch.manual_seed(seed)
        return rnn_stack(data, mod._flat_weights, None, None, batch_sizes,
                         mod._dropout_masks(data), "LSTM", 2, True, 0, True)[0]

    return mod, ours, reference, data


def test_second_order_with_dropout_and_packed_input_matches_the_reference(assert_close):
    mod, ours, reference, data = _dropout_lstm_and_reference(packed=True)
    data = data.requires_grad_()
    leaves = [data, *mod.parameters()]
    results = []
    for run in (ours, reference):
        out = run(data)
        first = torch.autograd.grad((out * out).sum(), leaves, create_graph=True)
        results.append((out, torch.autograd.grad(sum((g * g).sum() for g in first), leaves)))
    assert_close(results[0][0], results[1][0])  # the same mask
    for g, w in zip(results[0][1], results[1][1], strict=True):
        assert_close(g, w)


def test_hessian_and_autograd_jvp_match_torch(assert_close):
    """torch.autograd.functional.hessian and .jvp (which takes a vector-Jacobian product's
    derivative with respect to its incoming gradient) through a GRU."""
    ref, mod = make_pair(nn.GRU, I, H, num_layers=2)
    ref, mod = ref.double(), mod.double()
    x = torch.randn(3, 2, I, dtype=torch.float64)
    v = torch.randn_like(x)
    for functional in (lambda m: torch.autograd.functional.hessian(
                           lambda x: m(x)[0].tanh().sum(), x),
                       lambda m: torch.autograd.functional.jvp(lambda x: m(x)[0], x, v)[1]):
        assert_close(functional(mod), functional(ref))


def test_third_order_matches_torch(assert_close):
    """A second order recorded with create_graph=True is itself differentiable (torch's graph
    of the rerun)."""
    ref, mod = make_pair(nn.RNN, I, H)
    ref, mod = ref.double(), mod.double()
    x = torch.randn(3, 2, I, dtype=torch.float64, requires_grad=True)
    results = []
    for m in (ref, mod):
        (g1,) = torch.autograd.grad(m(x)[0].pow(2).sum(), x, create_graph=True)
        (g2,) = torch.autograd.grad(g1.pow(2).sum(), x, create_graph=True)
        results.append(torch.autograd.grad(g2.pow(2).sum(), [x, m.weight_hh_l0]))
    for g, w in zip(*results, strict=True):
        assert_close(g, w)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bfloat16", "float16"])
def test_16bit_second_order_is_the_float32_one_rounded(dtype, assert_close):
    """fastrnn computes 16-bit modules in float32 (results rounded once); so does the rerun."""
    _, mod = make_pair(nn.LSTM, I, H)
    wide = fastrnn.LSTM(I, H)
    wide.load_state_dict(mod.state_dict())
    mod = mod.to(dtype)
    wide.load_state_dict({k: v.float() for k, v in mod.state_dict().items()})
    x = torch.randn(2, 3, I).to(dtype)
    results = []
    for m, xx in ((mod, x), (wide, x.float())):
        xx = xx.clone().requires_grad_()
        (g,) = torch.autograd.grad(m(xx)[0].float().pow(2).sum(), xx, create_graph=True)
        results.append(torch.autograd.grad(g.float().pow(2).sum(), [xx, m.weight_hh_l0]))
    for g, w in zip(*results, strict=True):
        assert g.dtype == dtype
        assert_close(g.float(), w.to(dtype).float(), dtype)


def _tangents_by_torch(ref, params, x, hx, tangents):
    """The output tangents of torch's module by the double-vjp trick (torch.func.jvp does not
    run through its oneDNN LSTM). hx and its tangent: a tensor, or a tuple for LSTM."""
    names, pair = list(params), isinstance(hx, tuple)

    def results(x, *rest):
        hx, ps = (rest[:2], rest[2:]) if pair else (rest[0], rest[1:])
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="LSTM with projections is not supported")
            return flat_tensors(functional_call(ref, dict(zip(names, ps)), (x, hx)))

    return torch.autograd.functional.jvp(
        results, (x, *flat_tensors(hx), *params.values()),
        (tangents[0], *flat_tensors(tangents[1]), *tangents[2:]))[1]


@_JIT_DEPRECATED
@pytest.mark.parametrize("case", MODULES)
def test_func_jvp_matches_torch(case, assert_close):
    """torch.func.jvp with tangents on the input, the state and every parameter (the general
    path: functorch transforms always take it)."""
    torch_cls, kwargs = MODULES[case]
    ref, mod = make_pair(torch_cls, I, H, **kwargs)
    ref, mod = ref.double(), mod.double()
    x, hx = (t.detach() if isinstance(t, torch.Tensor) else tuple(h.detach() for h in t)
             for t in _inputs(torch_cls, kwargs, torch.float64, "cpu"))
    params = {k: v.detach() for k, v in mod.named_parameters()}
    tangents = tuple(torch.randn_like(t) if isinstance(t, torch.Tensor)
                     else tuple(map(torch.randn_like, t)) for t in (x, hx, *params.values()))

    def ours(x, hx, *ps):
        return flat_tensors(functional_call(mod, dict(zip(params, ps)), (x, hx)))

    got = torch.func.jvp(ours, (x, hx, *params.values()), tangents)[1]
    want = _tangents_by_torch(ref, params, x, hx, tangents)
    for g, w in zip(got, want, strict=True):
        assert_close(g, w)


@_JIT_DEPRECATED
@pytest.mark.parametrize("path", ["fast", "general"])
@pytest.mark.parametrize("case", MODULES)
def test_forward_ad_matches_torch(case, path, assert_close, monkeypatch):
    """torch.autograd.forward_ad's dual tensors (input and state): both module paths."""
    torch_cls, kwargs = MODULES[case]
    ref, mod = make_pair(torch_cls, I, H, **kwargs)
    ref, mod = ref.double(), mod.double()
    if path == "general":
        monkeypatch.setattr(type(mod), "_stream", lambda *args: None, raising=False)
    x, hx = _inputs(torch_cls, kwargs, torch.float64, "cpu")
    x = x.detach()
    hx = tuple(h.detach() for h in hx) if isinstance(hx, tuple) else hx.detach()
    x_t = torch.randn_like(x)
    hx_t = tuple(map(torch.randn_like, hx)) if isinstance(hx, tuple) else torch.randn_like(hx)
    with fwAD.dual_level():
        dual_hx = (tuple(map(fwAD.make_dual, hx, hx_t)) if isinstance(hx, tuple)
                   else fwAD.make_dual(hx, hx_t))
        got = [fwAD.unpack_dual(r).tangent
               for r in flat_tensors(mod(fwAD.make_dual(x, x_t), dual_hx))]
    params = {k: v.detach() for k, v in ref.named_parameters()}
    want = _tangents_by_torch(ref, params, x, hx, (x_t, hx_t, *map(torch.zeros_like,
                                                                    params.values())))
    for g, w in zip(got, want, strict=True):
        assert_close(g, w)


@_JIT_DEPRECATED
@pytest.mark.parametrize("lengths", [(4, 3, 2), (3, 3, 3)], ids=["ragged", "one_length"])
def test_forward_ad_over_packed_sequences_matches_the_reference(lengths, general_calls,
                                                                  assert_close):
    """torch.autograd.forward_ad over a PackedSequence (dual data and states): ragged lengths on
    the general path (tangents through torch's packed RNN), one length on the fast path (through
    the padded one), against fastrnn.reference.rnn_stack, a loop of torch ops."""
    from fastrnn.reference import rnn_stack

    mod = fastrnn.LSTM(I, H, num_layers=2, bidirectional=True).double()
    packed = pack_sequence([torch.randn(n, I, dtype=torch.float64) for n in lengths])
    hx = tuple(torch.randn(4, 3, H, dtype=torch.float64) for _ in range(2))
    primals = (packed.data, *hx)
    tangents = tuple(map(torch.randn_like, primals))

    def reference(data, h, c):
        return rnn_stack(data, mod._flat_weights, h, c, packed.batch_sizes, [], "LSTM", 2,
                         True, 0, True)

    def ours(data, h, c):
        out, (hy, cy) = mod(PackedSequence(data, packed.batch_sizes), (h, c))
        return out.data, hy, cy

    results = []
    for run in (ours, reference):
        with fwAD.dual_level():
            duals = [fwAD.make_dual(p, t) for p, t in zip(primals, tangents)]
            results.append([fwAD.unpack_dual(r) for r in run(*duals)])
    assert len(general_calls) == (1 if lengths == (4, 3, 2) else 0)
    for got, want in zip(*results, strict=True):
        assert_close(got.primal, want.primal)
        assert_close(got.tangent, want.tangent)


@_JIT_DEPRECATED
@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
def test_forward_mode_with_dropout_matches_the_reference(packed, assert_close):
    """torch.func.jacfwd (vmap of jvp) through a training LSTM with dropout, against the
    plain-torch reference fed the same mask. Over packed sequences forward mode raises: torch's
    packed RNN, which the rerun calls, does not run under torch.func."""
    _, ours, reference, data = _dropout_lstm_and_reference(packed)
    assert_close(ours(data), reference(data))  # the same mask
    if packed:
        with pytest.raises(NotImplementedError, match="PackedSequence"):
            torch.func.jvp(ours, (data,), (torch.randn_like(data),))
    else:
        assert_close(torch.func.jacfwd(ours, randomness="same")(data),
                     torch.autograd.functional.jacobian(reference, data))
