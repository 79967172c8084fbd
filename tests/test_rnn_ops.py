"""The custom ops behind the modules: gradcheck, opcheck, dropout, determinism, autograd edges."""

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

import fastrnn
from fastrnn import _ops, modules
from fastrnn.reference import rnn_stack

CONFIGS = [
    # (cell, num_layers, bidirectional, proj_size, has_bias, packed)
    ("RNN_TANH", 1, False, 0, True, False),
    ("RNN_RELU", 2, True, 0, True, True),
    ("LSTM", 2, True, 0, True, True),
    ("LSTM", 2, False, 2, False, False),
    ("LSTM", 1, True, 2, True, True),
    ("GRU", 2, True, 0, True, False),
    ("GRU", 1, False, 0, False, True),
]
MODULES = {"RNN_TANH": fastrnn.RNN, "RNN_RELU": fastrnn.RNN, "LSTM": fastrnn.LSTM,
           "GRU": fastrnn.GRU}


def make_problem(cell, num_layers, bidirectional, proj_size, has_bias, packed, dtype,
                 T=4, B=3, I=3, H=4, with_masks=False):
    """Random op arguments (all float tensors require grad). Packed lengths are distinct and
    unsorted before packing, so shorter sequences exercise the reverse-direction starts."""
    kwargs = dict(num_layers=num_layers, bidirectional=bidirectional, bias=has_bias,
                  dtype=dtype)
    if cell.startswith("RNN"):
        kwargs["nonlinearity"] = "tanh" if cell == "RNN_TANH" else "relu"
    if proj_size:
        kwargs["proj_size"] = proj_size
    module = MODULES[cell](I, H, **kwargs)
    weights = [w.detach().clone().requires_grad_() for w in module._flat_weights]
    D = 2 if bidirectional else 1
    O = proj_size or H
    x = torch.randn(T, B, I, dtype=dtype)
    batch_sizes = None
    if packed:
        lengths = torch.tensor([T, T - 2, T - 1][:B])
        packed_seq = pack_padded_sequence(x, lengths, enforce_sorted=False)
        x, batch_sizes = packed_seq.data, packed_seq.batch_sizes
    x.requires_grad_()
    hx = torch.randn(num_layers * D, B, O, dtype=dtype, requires_grad=True)
    cx = torch.randn(num_layers * D, B, H, dtype=dtype, requires_grad=True) if cell == "LSTM" else None
    masks = []
    if with_masks and num_layers > 1:
        rows = x.shape[:-1]
        masks = [torch.bernoulli(torch.full(rows + (D * O,), 0.7, dtype=dtype)) / 0.7
                 for _ in range(num_layers - 1)]
    return (x, weights, hx, cx, batch_sizes, masks, cell, num_layers, bidirectional, proj_size,
            has_bias)


def outputs(args, run=_ops.rnn):
    """(output, hy[, cy]) of the op, or of ``run``: _ops.run_rnn takes the eager autograd.Function
    (CPU tensors that need grad) or no autograd at all."""
    output, hy, cy = run(*args)[:3]
    return (output, hy, cy) if args[6] == "LSTM" else (output, hy)


# Both ways into the kernels with autograd: the op (compile, export, tensor subclasses) and the
# modules' eager path.
RUNNERS = {"op": _ops.rnn, "eager": _ops.run_rnn}


def gradcheck_op(args, run=_ops.rnn):
    """float64 gradcheck of fastrnn::rnn's outputs w.r.t. x, hx, cx and every weight."""
    x, weights, hx, cx = args[:4]
    inputs = [x, hx, *weights] + ([cx] if cx is not None else [])
    n_w = len(weights)

    def fn(x, hx, *rest):
        ws, cx = list(rest[:n_w]), (rest[n_w] if len(rest) > n_w else None)
        return outputs((x, ws, hx, cx) + args[4:], run)

    return torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize("runner", RUNNERS)
@pytest.mark.parametrize("config", CONFIGS)
def test_gradcheck_float64(config, runner):
    assert gradcheck_op(make_problem(*config, torch.float64, with_masks=True), RUNNERS[runner])


@pytest.mark.parametrize("omit_state", [False, True])
@pytest.mark.parametrize("config", CONFIGS)
def test_eager_autograd_matches_the_op(config, omit_state):
    """The eager autograd.Function and the op's registered autograd share the formula; their
    outputs and every gradient are the same bits, also when only some outputs are used and when
    the initial state is omitted (padded input) or some inputs need no gradient."""
    args = list(make_problem(*config, torch.float32, with_masks=True))
    packed = args[4] is not None
    if omit_state and not packed:
        args[2] = args[3] = None
    if omit_state:
        args[1][0].requires_grad_(False)
    leaves = [t for t in (args[0], args[2], args[3], *args[1]) if t is not None and t.requires_grad]
    runs = []
    for run in RUNNERS.values():
        got = outputs(tuple(args), run)
        used = got[:2]  # cy, when there is one, gets no gradient: None reaches the backward
        runs.append(got + torch.autograd.grad(used, leaves, [torch.ones_like(g) for g in used]))
    for a, b in zip(*runs, strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("config", CONFIGS)
def test_matches_reference_with_dropout_masks(config, assert_close):
    args = make_problem(*config, torch.float64, with_masks=True)
    got = outputs(args)
    want = rnn_stack(*args)[:len(got)]
    for g, w in zip(got, want):
        assert_close(g, w)
    grads_out = [torch.randn_like(g) for g in got]
    leaves = [t for t in (args[0], args[2], args[3], *args[1]) if t is not None]
    got_grads = torch.autograd.grad(got, leaves, grads_out)
    want_grads = torch.autograd.grad(want, leaves, grads_out)
    for g, w in zip(got_grads, want_grads):
        assert_close(g, w)


def backward_args(args):
    """rnn_backward's arguments for the op call ``args``: its inputs detached, its reserve, and
    random gradients of its results."""
    output, hy, cy, reserve = _ops.rnn(*[a.detach() if isinstance(a, torch.Tensor) else a
                                         for a in args])
    no_grad = lambda t: None if t is None else t.detach()  # noqa: E731
    return (no_grad(args[0]), [w.detach() for w in args[1]], no_grad(args[2]),
            no_grad(args[3]), args[4], args[5], reserve, torch.randn_like(output),
            torch.randn_like(hy), torch.randn_like(cy) if args[6] == "LSTM" else None,
            *args[6:])


@pytest.mark.parametrize("config", CONFIGS[:4])
def test_opcheck(config):
    args = make_problem(*config, torch.float32, with_masks=True)
    torch.library.opcheck(_ops.rnn, args)
    # rnn_backward itself is not differentiable (the op's autograd differentiates its results
    # through a rerun instead), so no autograd checks.
    for input_grad in (True, False):
        torch.library.opcheck(_ops.rnn_backward, backward_args(args), {"input_grad": input_grad},
                              test_utils=("test_schema", "test_faketensor"))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bfloat16", "float16"])
def test_opcheck_half_precision(dtype):
    """Half-precision tensors run through the float32 kernels: the fake kernels must give the
    real ones' dtypes (results in the input's dtype, a float32 reserve)."""
    args = make_problem(*CONFIGS[0], dtype, with_masks=True)
    torch.library.opcheck(_ops.rnn, args)
    assert _ops.rnn(*args)[3].dtype == torch.float32
    torch.library.opcheck(_ops.rnn_backward, backward_args(args),
                          test_utils=("test_schema", "test_faketensor"))


@pytest.mark.parametrize("config", CONFIGS)
def test_backward_op_without_the_input_gradient(config):
    """rnn_backward(input_grad=False), what the op's autograd asks for when the input needs no
    gradient (a first layer fed with data): grad_input empty, every other gradient the same bits
    as when grad_input is computed."""
    bwd_args = backward_args(make_problem(*config, torch.float32, with_masks=True))
    with_input = _ops.rnn_backward(*bwd_args)
    without = _ops.rnn_backward(*bwd_args, input_grad=False)
    assert with_input[0].shape == bwd_args[0].shape and without[0].numel() == 0
    for a, b in zip([*with_input[1:3], *with_input[3]], [*without[1:3], *without[3]],
                    strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("runner", RUNNERS)
@pytest.mark.parametrize("input_grad", [True, False])
def test_autograd_asks_for_the_input_gradient_only_when_needed(runner, input_grad,
                                                                input_grad_requests):
    """Both autograd formulas pass the input's requires_grad down to the native backward, which
    skips the input's products without it."""
    args = make_problem("LSTM", 2, True, 0, True, True, torch.float32)
    args[0].requires_grad_(input_grad)
    output, hy, cy = outputs(args, RUNNERS[runner])
    wrt = [t for t in (args[0], args[2], *args[1]) if t.requires_grad]
    grads = torch.autograd.grad(output.sum() + cy.sum(), wrt)
    assert input_grad_requests == [input_grad]
    assert len(grads) == len(wrt) and all(g.shape == t.shape for g, t in zip(grads, wrt))


@pytest.mark.parametrize("runner", RUNNERS)
@pytest.mark.parametrize("config", CONFIGS)
def test_gradgradcheck_float64(config, runner):
    """Second derivatives (python/fastrnn/_double_backward.py), with respect to every input
    and to the incoming gradients, against finite differences of the first-order gradients:
    dropout masks, packed input, projections, both directions."""
    args = make_problem(*config, torch.float64, T=3, H=3, with_masks=True)
    x, weights, hx, cx = args[:4]
    inputs = [x, hx, *weights] + ([cx] if cx is not None else [])
    n_w = len(weights)

    def fn(x, hx, *rest):
        ws, cx = list(rest[:n_w]), (rest[n_w] if len(rest) > n_w else None)
        return outputs((x, ws, hx, cx) + args[4:], RUNNERS[runner])

    assert torch.autograd.gradgradcheck(fn, inputs, eps=1e-6, atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize("runner", RUNNERS)
def test_create_graph_keeps_the_first_order_bits(runner):
    """create_graph=True (which torch.func.grad always asks for) gives the same first-order
    gradients, bit for bit: the native kernels' (the second order is taken only when asked)."""
    args = make_problem("LSTM", 1, False, 0, True, False, torch.float64)
    x, w = args[0], args[1][0]
    output = outputs(args, RUNNERS[runner])[0]
    want = torch.autograd.grad(output.sum(), (x, w), retain_graph=True)
    got = torch.autograd.grad(output.sum(), (x, w), create_graph=True)
    for g, expected in zip(got, want, strict=True):
        assert torch.equal(g, expected) and g.requires_grad


def assert_bitwise_deterministic(args):
    """Two runs of the op, forward and every gradient, give the same bits."""
    runs = []
    for _ in range(2):
        outs = outputs(args)
        leaves = [args[0], args[2], *args[1]]
        runs.append(outs + torch.autograd.grad(sum(o.sum() for o in outs), leaves))
    for a, b in zip(*runs):
        assert torch.equal(a, b)


@pytest.mark.parametrize("cell", ["LSTM", "GRU", "RNN_TANH"])
def test_bitwise_deterministic(cell):
    assert_bitwise_deterministic(make_problem(cell, 2, True, 0, True, True, torch.float32, T=6,
                                              B=3, I=5, H=7, with_masks=True))


def _lstm_pair(dropout):
    ref = nn.LSTM(3, 5, num_layers=3, dropout=dropout)
    fast = fastrnn.LSTM(3, 5, num_layers=3, dropout=dropout)
    fast.load_state_dict(ref.state_dict())
    return ref, fast


def test_dropout_train_uses_torch_rng():
    _, fast = _lstm_pair(0.5)
    x = torch.randn(6, 2, 3)
    torch.manual_seed(1)
    a = fast(x)[0]
    torch.manual_seed(1)
    b = fast(x)[0]
    c = fast(x)[0]
    assert torch.equal(a, b)
    assert not torch.equal(b, c)


def test_dropout_train_matches_reference_masks(assert_close):
    _, fast = _lstm_pair(0.3)
    x = torch.randn(6, 2, 3, dtype=torch.float32)
    torch.manual_seed(7)
    output, (hy, cy) = fast(x)
    torch.manual_seed(7)
    masks = fast._dropout_masks(x)
    want = rnn_stack(x, fast._flat_weights, None, None, None, masks, "LSTM", 3, False, 0, True)
    assert_close(output, want[0])
    assert_close(hy, want[1])
    assert_close(cy, want[2])


def test_dropout_all_dropped_layer():
    _, fast = _lstm_pair(1.0)
    x = torch.randn(4, 2, 3)
    with torch.no_grad():
        output = fast(x)[0]
    # Layers 2 and 3 see zero input: their output depends only on the biases.
    assert torch.allclose(output[0], output[0][:1].expand_as(output[0]))


def test_dropout_eval_is_torch_exact(assert_close):
    ref, fast = _lstm_pair(0.5)
    ref.eval()
    fast.eval()
    x = torch.randn(5, 2, 3)
    assert_close(fast(x)[0], ref(x)[0])


def test_backward_in_eval_mode(assert_close):
    ref, fast = _lstm_pair(0.5)
    ref.eval()
    fast.eval()
    x = torch.randn(5, 2, 3, requires_grad=True)
    (g_ref,) = torch.autograd.grad(ref(x)[0].sum(), x)
    (g_fast,) = torch.autograd.grad(fast(x)[0].sum(), x)
    assert_close(g_fast, g_ref)


def test_unused_outputs_get_zero_gradient(assert_close):
    ref, fast = _lstm_pair(0.0)
    x = torch.randn(5, 2, 3, requires_grad=True)
    (g_ref,) = torch.autograd.grad(ref(x)[1][1].sum(), x)  # only c_n used
    (g_fast,) = torch.autograd.grad(fast(x)[1][1].sum(), x)
    assert_close(g_fast, g_ref)


def test_missing_cuda_module_gives_clear_runtime_error(monkeypatch):
    # A CPU-only torch cannot make CUDA tensors, so exercise the dispatch's failure directly,
    # as a build without the CUDA module sees it.
    monkeypatch.setattr(fastrnn._backend, "_import_cuda",
                        lambda: (None, ImportError("No module named 'fastrnn._cuda'")))
    assert not fastrnn.cuda_build_available()
    with pytest.raises(RuntimeError, match="built without CUDA support"):
        fastrnn._backend.cuda_module()


def test_meta_tensors_give_shapes_without_running_kernels():
    module = fastrnn.LSTM(3, 5, num_layers=2, bidirectional=True, proj_size=2, device="meta")
    out, (h, c) = module(torch.empty(7, 4, 3, device="meta"))
    assert out.shape == (7, 4, 4) and out.device.type == "meta"
    assert h.shape == (4, 4, 2) and c.shape == (4, 4, 5)


def test_native_caches_hold_padded_configurations_only():
    """A padded inference call's StreamPlan (and the descriptor in it) is made once per
    configuration and input shape, so a streamed step reuses them; packed inputs are cached in
    neither, as their batch_sizes differ per batch and may be long."""
    module = fastrnn.GRU(3, 4)
    with torch.no_grad():
        module(torch.randn(2, 1, 3))
        plans, natives = dict(modules._STREAM_PLANS), _ops._cpu_native.cache_info()
        module(torch.randn(2, 1, 3))
        assert modules._STREAM_PLANS == plans and _ops._cpu_native.cache_info() == natives
        for length in range(5, 12):
            module(pack_padded_sequence(torch.randn(length, 2, 3), [length, 3]))
        assert modules._STREAM_PLANS == plans
        assert _ops._cpu_native.cache_info().currsize == natives.currsize


def _grown(t):
    return torch.randn(tuple(s + 1 for s in t.shape), dtype=t.dtype)


@pytest.mark.parametrize("runner", list(RUNNERS))
def test_op_refuses_tensors_of_wrong_shape(runner):
    """Direct callers of the op get RuntimeError for any tensor whose shape does not match the
    configuration, instead of kernels reading past its end."""
    args = make_problem("LSTM", 2, True, 2, True, False, torch.float32, with_masks=True)
    x, weights, hx, cx, batch_sizes, masks = args[:6]
    rest = args[6:]
    run = RUNNERS[runner]
    bad_calls = {
        "weight_hh_l1_reverse": (x, [*weights[:-4], _grown(weights[-4]), *weights[-3:]], hx, cx,
                                 batch_sizes, masks),
        "hx": (x, weights, _grown(hx), cx, batch_sizes, masks),
        "cx": (x, weights, hx, _grown(cx), batch_sizes, masks),
        "dropout mask": (x, weights, hx, cx, batch_sizes, [_grown(masks[0])]),
        "input must be 3-D": (x[0], weights, hx, cx, batch_sizes, masks),
    }
    for what, call in bad_calls.items():
        with pytest.raises(RuntimeError, match=what):
            run(*call, *rest)
    with pytest.raises(ValueError, match="dropout masks"):
        run(x, weights, hx, cx, batch_sizes, masks * 2, *rest)


def test_backward_op_refuses_a_reserve_or_gradient_of_wrong_size():
    args = make_problem("GRU", 1, False, 0, True, False, torch.float32)
    x, weights, hx, cx, batch_sizes, masks, *config = args
    with torch.no_grad():
        output, hy, _, reserve = _ops.rnn(*args)
    ok = (x, weights, hx, cx, batch_sizes, masks)
    with pytest.raises(RuntimeError, match="reserve"):
        _ops.rnn_backward(*ok, reserve[:-1], torch.ones_like(output), None, None, *config)
    with pytest.raises(RuntimeError, match="grad_output"):
        _ops.rnn_backward(*ok, reserve, _grown(output), None, None, *config)
    with pytest.raises(RuntimeError, match="grad_hy"):
        _ops.rnn_backward(*ok, reserve, torch.ones_like(output), _grown(hy), None, *config)
