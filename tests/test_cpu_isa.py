"""Every CPU instruction-set path (generic, AVX2, AVX-512, AVX-512 BF16) against torch, on one
machine: the kernels of each ISA are selected with fastrnn._C.set_cpu_isa (FASTRNN_CPU_ISA does
the same for a whole process)."""

import warnings

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

import fastrnn
from fastrnn import _C, _ops
from pairs import make_pair

ALL_ISAS = ["generic", "avx2", "avx512", "avx512bf16"]
NO_HALF = _C.HalfWeights.none
_RANK = {name: i for i, name in enumerate(ALL_ISAS)}
SUPPORTED = [isa for isa in ALL_ISAS if _RANK[isa] <= _RANK[_C.best_cpu_isa()]]


@pytest.fixture(params=ALL_ISAS)
def isa(request):
    if request.param not in SUPPORTED:
        pytest.skip(f"{request.param} is not supported by this CPU or build")
    previous = _C.cpu_isa()
    _C.set_cpu_isa(request.param)
    yield request.param
    _C.set_cpu_isa(previous)


def test_unknown_or_unsupported_isa_is_a_value_error():
    with pytest.raises(ValueError, match="unknown CPU ISA"):
        _C.set_cpu_isa("sse9")
    for name in ALL_ISAS:
        if name not in SUPPORTED:
            with pytest.raises(ValueError, match="does not support"):
                _C.set_cpu_isa(name)


def test_workspace_size_does_not_depend_on_the_active_isa():
    """Workspace sizes are computed once per shape and cached (StreamPlan, the descriptor cache),
    and the ISA can be switched afterwards: the size must hold what every ISA's kernels carve,
    which round blocks to their own vector widths (a size computed under the generic ISA
    overflowed under AVX2)."""
    previous = _C.cpu_isa()
    try:
        for cell, hidden, proj, dirs in [(_C.CellKind.LSTM, 17, 0, 2), (_C.CellKind.LSTM, 33, 9, 1),
                                         (_C.CellKind.GRU, 70, 0, 2), (_C.CellKind.RNN_TANH, 5, 0, 1)]:
            desc = _C.RnnDesc(cell=cell, num_layers=2, num_directions=dirs, input_size=5,
                              hidden_size=hidden, proj_size=proj, has_bias=True, seq_len=4,
                              batch=21, batch_sizes=[])
            sizes = set()
            for isa in SUPPORTED:
                _C.set_cpu_isa(isa)
                sizes.add(tuple(desc.workspace_elems(p, dtype)
                                for p in (_C.Pass.Forward, _C.Pass.Inference, _C.Pass.Backward)
                                for dtype in (_C.DType.float32, _C.DType.float64)))
            assert len(sizes) == 1, (cell, hidden, sizes)
    finally:
        _C.set_cpu_isa(previous)


CASES = [
    # (torch class, kwargs): hidden sizes cross every vector width (4, 8, 16 floats; 2, 4, 8
    # doubles) and leave partial tails.
    (nn.LSTM, dict(hidden_size=17, num_layers=2, bidirectional=True)),
    (nn.LSTM, dict(hidden_size=33, proj_size=9)),
    (nn.GRU, dict(hidden_size=19, num_layers=2, bidirectional=True)),
    (nn.RNN, dict(hidden_size=35, nonlinearity="tanh")),
    (nn.RNN, dict(hidden_size=5, nonlinearity="relu", bidirectional=True)),
]


# (T, B): more rows than a micro-kernel tile (packed-weight path), and a few rows in all
# (the direct path that multiplies straight from the weights).
SHAPES = [(7, 9), (2, 3)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("packed", [False, True])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"T{s[0]}B{s[1]}")
@pytest.mark.parametrize("case", CASES, ids=lambda c: c[0].__name__ + str(c[1].get("hidden_size")))
def test_isa_matches_torch(isa, case, shape, packed, dtype, assert_close):
    cls, kwargs = case
    ref, fast = make_pair(cls, 6, dtype=dtype, **kwargs)
    T, B = shape
    x = torch.randn(T, B, 6, dtype=dtype, requires_grad=True)
    lengths = torch.randint(1, T + 1, (B,))
    lengths[0] = T

    def run(module):
        inp = pack_padded_sequence(x, lengths, enforce_sorted=False) if packed else x
        with warnings.catch_warnings():
            if module is ref:  # torch warns that oneDNN lacks projections; fastrnn must not warn
                warnings.filterwarnings("ignore", "LSTM with projections")
            out, hidden = module(inp)
        out = out.data if packed else out
        hidden = hidden if isinstance(hidden, tuple) else (hidden,)
        return (out,) + hidden

    want, got = run(ref), run(fast)
    for g, w in zip(got, want):
        assert_close(g, w)
    grads = [torch.randn_like(w) for w in want]
    leaves_ref = [x, *ref.parameters()]
    leaves_fast = [x, *fast.parameters()]
    want_grads = torch.autograd.grad(want, leaves_ref, grads)
    got_grads = torch.autograd.grad(got, leaves_fast, grads)
    for g, w in zip(got_grads, want_grads):
        assert_close(g, w)


# Steps big enough that the recurrence splits hidden units across threads (small steps run on
# one thread): batch x out x gates*hidden >= 2^17 multiply-adds.
THREADED = [
    (nn.LSTM, dict(hidden_size=70, bidirectional=True)),
    (nn.LSTM, dict(hidden_size=70, proj_size=33)),
    (nn.GRU, dict(hidden_size=70, num_layers=2)),
    (nn.RNN, dict(hidden_size=130, nonlinearity="relu")),
]


@pytest.mark.parametrize("packed", [False, True])
@pytest.mark.parametrize("case", THREADED, ids=lambda c: c[0].__name__ + str(c[1]["hidden_size"]))
def test_isa_threaded_recurrence_matches_torch(isa, case, packed, assert_close):
    cls, kwargs = case
    ref, fast = make_pair(cls, 5, dtype=torch.float64, **kwargs)
    x = torch.randn(4, 21, 5, dtype=torch.float64, requires_grad=True)
    lengths = torch.randint(1, 5, (21,))
    lengths[3] = 4

    def run(module):
        inp = pack_padded_sequence(x, lengths, enforce_sorted=False) if packed else x
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "LSTM with projections")
            out, hidden = module(inp)
        hidden = hidden if isinstance(hidden, tuple) else (hidden,)
        return ((out.data if packed else out),) + hidden

    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        want, got = run(ref), run(fast)
        grads = [torch.randn_like(w) for w in want]
        want_grads = torch.autograd.grad(want, [x, *ref.parameters()], grads)
        got_grads = torch.autograd.grad(got, [x, *fast.parameters()], grads)
    finally:
        torch.set_num_threads(previous)
    for g, w in zip(got + got_grads, want + want_grads):
        assert_close(g, w)


def test_isa_results_do_not_depend_on_thread_count(isa):
    fast = fastrnn.LSTM(8, 67, num_layers=2, bidirectional=True)
    x = torch.randn(5, 16, 8, requires_grad=True)
    results = []
    previous = torch.get_num_threads()
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            out, (h, c) = fast(x)
            grads = torch.autograd.grad(out.sum() + h.sum() + c.sum(), [x, *fast.parameters()])
            results.append((out, h, c) + grads)
    finally:
        torch.set_num_threads(previous)
    for a, b in zip(*results):
        assert torch.equal(a, b)


@pytest.mark.parametrize("dtype", [_C.DType.float32, _C.DType.float64], ids=["float32", "float64"])
def test_fma_peak_probe_measures_each_isa(isa, dtype):
    """The benchmark's peak: a finite positive throughput for every ISA and thread count (its
    value is the machine's; bench/kernels/NOTES.md records this one's)."""
    for threads in (1, 2, 0):  # 0 and counts past the cores are clamped like every parallel call
        gflops = _C.cpu_fma_peak_gflops(dtype, threads)
        assert isinstance(gflops, float) and 0.0 < gflops < float("inf")


# (cell, input size, kwargs): odd input sizes leave the pair-packed weights' last pair half
# empty, hidden sizes leave partial vector tails; a second layer and a projection read the
# first layer's float32 output.
BF16_CASES = [
    ("LSTM", 17, dict(hidden_size=33, num_layers=2, bidirectional=True)),
    ("LSTM", 6, dict(hidden_size=20, proj_size=7)),
    ("GRU", 1, dict(hidden_size=19, bidirectional=True)),
    ("RNN_RELU", 40, dict(hidden_size=35)),
]


@pytest.fixture
def native_flags(monkeypatch):
    """The (bf16_input, half_weights) arguments of each native CPU forward call from here on, in
    order (the defaults where the call passes none)."""
    flags = []
    native_forward = _C.rnn_forward

    def spy(*args, **kw):  # the flags come last, positional from _ops, by keyword from tests
        flags.append(tuple(kw.get(name, args[i] if len(args) > i else default)
                           for i, name, default in ((13, "bf16_input", False),
                                                    (14, "half_weights", NO_HALF))))
        return native_forward(*args, **kw)

    monkeypatch.setattr(_C, "rnn_forward", spy)
    return flags


@pytest.mark.skipif("avx512bf16" not in SUPPORTED, reason="needs AVX-512 BF16")
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("packed", [False, True])
@pytest.mark.parametrize("shape,flags",
                         [((9, 13), (True, NO_HALF)), ((2, 3), (False, _C.HalfWeights.bfloat16))],
                         ids=["T9B13", "T2B3-direct"])
@pytest.mark.parametrize("case", BF16_CASES, ids=lambda c: f"{c[0]}-I{c[1]}")
def test_bf16_input_projection_is_the_float32_projection(case, shape, flags, packed, threads,
                                                         native_flags, assert_close):
    """The avx512bf16 kernels multiply a bfloat16 input by the first layer's bfloat16 W_ih with
    vdpbf16ps (exact products, float32 sums) instead of widening both first. Everything the
    forward keeps in float32 (the reserve: gates, cells, every layer's output) must equal what
    the avx512 kernels compute from the widened values, up to the order of the sums; a handful
    of rows (direct mode) takes the 16-bit weights on every ISA instead (see below)."""
    cell, input_size, kwargs = case
    T, B = shape
    hidden, layers = kwargs["hidden_size"], kwargs.get("num_layers", 1)
    bidirectional, proj = kwargs.get("bidirectional", False), kwargs.get("proj_size", 0)
    cls = {"LSTM": nn.LSTM, "GRU": nn.GRU}.get(cell, nn.RNN)
    extra = dict(nonlinearity="relu") if cell == "RNN_RELU" else {}
    weights = [w.detach().bfloat16() for w in cls(input_size, **kwargs, **extra)._flat_weights]
    x = torch.randn(T, B, input_size).bfloat16()
    states = layers * (2 if bidirectional else 1)
    hx = torch.randn(states, B, proj or hidden).bfloat16()
    cx = torch.randn(states, B, hidden).bfloat16() if cell == "LSTM" else None
    batch_sizes = None
    if packed:
        lengths = torch.randint(1, T + 1, (B,))
        lengths[0] = T
        seq = pack_padded_sequence(x, lengths, enforce_sorted=False)
        x, batch_sizes = seq.data, seq.batch_sizes

    previous_isa, previous_threads = _C.cpu_isa(), torch.get_num_threads()
    results = {}
    try:
        torch.set_num_threads(threads)
        for isa in ("avx512bf16", "avx512"):
            _C.set_cpu_isa(isa)
            results[isa] = _ops.rnn(x, weights, hx, cx, batch_sizes, [], cell, layers,
                                    bidirectional, proj, True)
    finally:
        _C.set_cpu_isa(previous_isa)
        torch.set_num_threads(previous_threads)
    assert native_flags == [flags, (False, flags[1])]
    bf16_path, widened = results["avx512bf16"], results["avx512"]
    assert bf16_path[3].dtype == torch.float32
    assert_close(bf16_path[3], widened[3])  # the reserve, float32 tolerance
    for got, want in zip(bf16_path[:3], widened[:3]):
        assert_close(got, want)


def test_bf16_input_flag_is_refused_where_the_kernels_do_not_take_it():
    """The native forward checks the flag itself: a caller that passes bfloat16 input to kernels
    that would read it as float32 gets a ValueError, not garbage."""
    desc = _C.RnnDesc(cell=_C.CellKind.LSTM, num_layers=1, num_directions=1, input_size=4,
                      hidden_size=8, proj_size=0, has_bias=False, seq_len=20, batch=4)
    x = torch.randn(20, 4, 4).bfloat16()
    weights = [torch.randn(32, 4).bfloat16(), torch.randn(32, 8)]
    out, hy, cy = torch.empty(20, 4, 8), torch.empty(1, 4, 8), torch.empty(1, 4, 8)
    workspace = torch.empty(desc.workspace_elems(_C.Pass.Inference, _C.DType.float64))
    previous = _C.cpu_isa()
    try:
        for isa in SUPPORTED:
            _C.set_cpu_isa(isa)
            for dtype in (_C.DType.float32, _C.DType.float64):
                taken = _C.rnn_takes_bf16_input(desc, dtype)
                assert taken == (isa == "avx512bf16" and dtype == _C.DType.float32)
                if taken:
                    continue
                with pytest.raises(ValueError, match="bfloat16 input is not taken"):
                    _C.rnn_forward(desc, dtype, x.data_ptr(), [w.data_ptr() for w in weights],
                                   0, 0, [], out.data_ptr(), hy.data_ptr(), cy.data_ptr(), 0,
                                   workspace.data_ptr(), 1, bf16_input=True)
    finally:
        _C.set_cpu_isa(previous)


def test_bf16_input_with_float32_weights_rounds_no_weight(native_flags):
    """The op takes a bfloat16 input with float32 weights: the weights must not be rounded to
    bfloat16 for the bf16 kernels; the call is the float32 one on the widened input, bit for
    bit."""
    weights = [w.detach() for w in nn.LSTM(6, 8, num_layers=2, bidirectional=True)._flat_weights]
    x = torch.randn(20, 4, 6).bfloat16()
    config = ("LSTM", 2, True, 0, True)
    mixed = _ops.rnn(x, weights, None, None, None, [], *config)
    widened = _ops.rnn(x.float(), weights, None, None, None, [], *config)
    assert native_flags == [(False, NO_HALF), (False, NO_HALF)]
    assert torch.equal(mixed[3], widened[3])


HALF_WEIGHT_CASES = [
    ("LSTM", 5, dict(hidden_size=24, num_layers=2, bidirectional=True)),
    ("LSTM", 17, dict(hidden_size=40, proj_size=9)),
    ("GRU", 3, dict(hidden_size=19)),
    ("RNN_TANH", 33, dict(hidden_size=16, num_layers=2)),
    ("RNN_RELU", 8, dict(hidden_size=35, bidirectional=True)),
]


def _stack(case, dtype: torch.dtype):
    """(flat weights in dtype, config) of a random stack for a HALF_WEIGHT_CASES entry."""
    cell, input_size, kwargs = case
    cls = {"LSTM": nn.LSTM, "GRU": nn.GRU}.get(cell, nn.RNN)
    extra = dict(nonlinearity="relu") if cell == "RNN_RELU" else {}
    weights = [w.detach().to(dtype) for w in cls(input_size, **kwargs, **extra)._flat_weights]
    return weights, (cell, kwargs.get("num_layers", 1), kwargs.get("bidirectional", False),
                     kwargs.get("proj_size", 0), True)


HALF_DTYPES = {torch.bfloat16: _C.HalfWeights.bfloat16, torch.float16: _C.HalfWeights.float16}


@pytest.mark.parametrize("input_half", [True, False], ids=["half-input", "float32-input"])
@pytest.mark.parametrize("half", HALF_DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(1, 1), (2, 3), (8, 1), (1, 8)], ids=lambda s: f"T{s[0]}B{s[1]}")
@pytest.mark.parametrize("case", HALF_WEIGHT_CASES, ids=lambda c: f"{c[0]}-I{c[1]}")
def test_half_weights_step_is_the_widened_step(isa, case, shape, half, input_half, native_flags,
                                               monkeypatch, assert_close):
    """A handful of rows (direct mode: a streamed step) reads a bfloat16 or float16 stack's
    weight matrices as they are, forward and backward, each widened exactly as it is loaded,
    instead of a float32 copy made per call: the widened call's outputs, states, reserve and
    every gradient, within float32 rounding (the two instantiations of the dot products may fuse
    different multiply-adds)."""
    weights, config = _stack(case, half)
    input_dtype = half if input_half else torch.float32
    cell, layers, bidirectional, proj, _ = config
    T, B = shape
    states = layers * (2 if bidirectional else 1)
    x = torch.randn(T, B, case[1]).to(input_dtype)
    hx = torch.randn(states, B, proj or case[2]["hidden_size"]).to(input_dtype)
    cx = torch.randn(states, B, case[2]["hidden_size"]).to(input_dtype) if cell == "LSTM" else None

    def run():
        leaves = [t.clone().requires_grad_() for t in [x, hx] + weights]
        out = _ops.rnn(leaves[0], leaves[2:], leaves[1], cx, None, [], *config)
        (out[0].float().sum() + out[1].float().pow(2).sum()).backward()
        return [t.detach() for t in out] + [t.grad for t in leaves]

    backward_flags = []
    native_backward = _C.rnn_backward

    def spy(*args, **kw):
        backward_flags.append(args[17] if len(args) > 17 else NO_HALF)
        return native_backward(*args, **kw)

    monkeypatch.setattr(_C, "rnn_backward", spy)
    taken = run()
    monkeypatch.setattr(_C, "rnn_takes_half_weights", lambda desc, dtype: False)
    widened = run()
    assert native_flags == [(False, HALF_DTYPES[half]), (False, NO_HALF)]
    assert backward_flags == [HALF_DTYPES[half], NO_HALF]
    for got, want in zip(taken, widened):
        assert got.dtype == want.dtype
        assert_close(got, want)


def test_float16_weights_widen_exactly_at_every_magnitude(isa, native_flags, monkeypatch):
    """Every class of float16 value (normal, subnormal, signed zero, infinity, NaN) read by the
    kernels as torch widens it: a one-step RNN whose weight_ih is the identity scaled by each
    value returns tanh(value * 1) in the lanes of an input of ones."""
    specials = torch.tensor([1.0, -2.5, 65504.0, 6.1e-5, 6.0e-8, -3.0e-6, 0.0, -0.0,
                             float("inf"), -float("inf"), float("nan"), 1e-3, 0.33325, 7.0,
                             -1e4, 2.0 ** -24, -(2.0 ** -14)], dtype=torch.float16)
    n = specials.numel()
    w_ih = torch.diag(specials)
    weights = [w_ih, torch.zeros(n, n, dtype=torch.float16)]
    config = ("RNN_RELU", 1, False, 0, False)
    x = torch.ones(1, 1, n)
    got = _ops.rnn(x, weights, None, None, None, [], *config)[0]
    monkeypatch.setattr(_C, "rnn_takes_half_weights", lambda desc, dtype: False)
    want = _ops.rnn(x, weights, None, None, None, [], *config)[0]
    assert native_flags == [(False, _C.HalfWeights.float16), (False, NO_HALF)]
    assert torch.equal(got.isnan(), want.isnan())
    assert torch.equal(got.nan_to_num(), want.nan_to_num())
    assert torch.equal(torch.relu(specials.float()).reshape(1, 1, n).nan_to_num(),
                       want.nan_to_num())


def test_half_weights_are_kept_only_when_every_matrix_is_16bit_and_the_rows_are_few(native_flags):
    """More rows than direct mode's handful (packed weights), or weight matrices of mixed
    dtypes, and every weight is widened as before (a float32 matrix is never rounded)."""
    weights, config = _stack(HALF_WEIGHT_CASES[0], torch.bfloat16)
    _ops.rnn(torch.randn(9, 1, 5), weights, None, None, None, [], *config)
    weights[1] = weights[1].float()
    _ops.rnn(torch.randn(1, 1, 5), weights, None, None, None, [], *config)
    weights[1] = weights[1].half()
    _ops.rnn(torch.randn(1, 1, 5), weights, None, None, None, [], *config)
    assert [f[1] for f in native_flags] == [NO_HALF, NO_HALF, NO_HALF]


@pytest.mark.parametrize("half", HALF_DTYPES.values(), ids=str)
def test_half_weights_flag_is_refused_where_the_kernels_do_not_take_it(isa, half):
    """The native forward checks the flag: float64 problems and packed weights (more than a
    handful of rows) read weights as their own dtype, so the flag is a ValueError there."""
    x = torch.randn(20, 4)
    weights = [torch.randn(32, 4).half(), torch.randn(32, 8).half()]
    out, hy, cy = torch.empty(20, 8), torch.empty(1, 1, 8), torch.empty(1, 1, 8)
    for rows in (1, 20):
        desc = _C.RnnDesc(cell=_C.CellKind.LSTM, num_layers=1, num_directions=1, input_size=4,
                          hidden_size=8, proj_size=0, has_bias=False, seq_len=rows, batch=1)
        workspace = torch.empty(desc.workspace_elems(_C.Pass.Inference, _C.DType.float64))
        for dtype in (_C.DType.float32, _C.DType.float64):
            taken = _C.rnn_takes_half_weights(desc, dtype)
            assert taken == (rows == 1 and dtype == _C.DType.float32)
            if taken:
                continue
            with pytest.raises(ValueError, match="16-bit weights are not taken"):
                _C.rnn_forward(desc, dtype, x.data_ptr(), [w.data_ptr() for w in weights], 0, 0,
                               [], out.data_ptr(), hy.data_ptr(), cy.data_ptr(), 0,
                               workspace.data_ptr(), 1, half_weights=half)
