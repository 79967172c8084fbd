"""fastrnn.RNN / LSTM / GRU are exact drop-ins for torch.nn.RNN / LSTM / GRU.

Every test builds torch's module, builds fastrnn's with the same constructor arguments, copies the
weights with ``load_state_dict`` and compares forward results and every gradient (input, h0, c0,
each parameter) against torch, with the shared tolerance table from ``tests/conftest.py``.

The main grid covers module x num_layers x bidirectional x batch_first x bias x proj_size x input
form x dtype x initial state with a strength-4 covering array (~175 cases: every value of every axis
appears, and every combination of any four axes' values appears in at least one case); set
``FASTRNN_FULL_GRID=1`` to run the full cartesian product instead (~2000 cases).
"""

import copy
import itertools
import os
import random
import warnings

import pytest
import torch
import torch.nn as nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

import fastrnn
from fastrnn import _C
from pairs import fr_class, make_pair

# --------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------

# mode name -> (torch class, extra constructor kwargs)
MODES = {
    "rnn_tanh": (nn.RNN, dict(nonlinearity="tanh")),
    "rnn_relu": (nn.RNN, dict(nonlinearity="relu")),
    "lstm": (nn.LSTM, {}),
    "lstm_proj": (nn.LSTM, {}),  # proj_size > 0 drawn per case
    "gru": (nn.GRU, {}),
}
FORMS = ("padded", "packed_sorted", "packed_unsorted", "unbatched")
DTYPES = (torch.float32, torch.float64)




def is_lstm(m):
    return isinstance(m, nn.LSTM)


def draw_sizes(rng, mode, form):
    """Small random sizes: I, H in 1..7, T in 1..6, B in 1..4 (P in 1..H-1 for lstm_proj)."""
    I = rng.randint(1, 7)
    H = rng.randint(2, 7) if mode == "lstm_proj" else rng.randint(1, 7)
    P = rng.randint(1, H - 1) if mode == "lstm_proj" else 0
    if form == "packed_unsorted":  # need >= 2 sequences of different lengths
        T, B = rng.randint(2, 6), rng.randint(2, 4)
    else:
        T, B = rng.randint(1, 6), rng.randint(1, 4)
    return I, H, P, T, B


def draw_lengths(rng, T, B, form):
    if form == "packed_sorted":
        lengths = sorted((rng.randint(1, T) for _ in range(B)), reverse=True)
        lengths[0] = T  # the longest sequence spans the whole padded tensor
        return lengths
    if form == "packed_unsorted":
        assert T >= 2 and B >= 2
        while True:
            lengths = [rng.randint(1, T) for _ in range(B)]
            if any(a < b for a, b in zip(lengths, lengths[1:])):  # really unsorted
                return lengths
    return None


def rand(*shape, dtype, requires_grad=True):
    return torch.randn(*shape, dtype=dtype).requires_grad_(requires_grad)


class Case:
    """Inputs for one forward/backward comparison; leaves shared by torch's and fastrnn's runs."""

    def __init__(self, *, x, lengths=None, form="padded", batch_first=False, h0=None, c0=None):
        self.x, self.lengths, self.form, self.batch_first = x, lengths, form, batch_first
        self.h0, self.c0 = h0, c0

    def module_input(self):
        if self.form.startswith("packed"):
            return pack_padded_sequence(
                self.x, torch.tensor(self.lengths), batch_first=self.batch_first,
                enforce_sorted=(self.form == "packed_sorted"))
        return self.x

    def hx(self):
        if self.h0 is None:
            return None
        if self.c0 is not None:
            return (self.h0, self.c0)
        return self.h0

    def leaves(self):
        return [t for t in (self.x, self.h0, self.c0) if t is not None and t.requires_grad]

    def to(self, device=None, dtype=None):
        """The same case with its tensors as leaves on `device` and of `dtype` (None: as they
        are; requires_grad kept)."""
        def leaf(t):
            if t is None:
                return None
            return t.detach().to(device=device, dtype=dtype).requires_grad_(t.requires_grad)

        return Case(x=leaf(self.x), lengths=self.lengths, form=self.form,
                    batch_first=self.batch_first, h0=leaf(self.h0), c0=leaf(self.c0))


def make_case(rng, module, *, form, T, B, batch_first, with_state, dtype, x_requires_grad=True):
    I, H = module.input_size, module.hidden_size
    D = 2 if module.bidirectional else 1
    Hout = module.proj_size if getattr(module, "proj_size", 0) > 0 else H
    if form == "unbatched":
        x = rand(T, I, dtype=dtype, requires_grad=x_requires_grad)
        hshape, cshape = (module.num_layers * D, Hout), (module.num_layers * D, H)
    else:
        x = rand(*((B, T, I) if batch_first else (T, B, I)), dtype=dtype, requires_grad=x_requires_grad)
        hshape, cshape = (module.num_layers * D, B, Hout), (module.num_layers * D, B, H)
    h0 = c0 = None
    if with_state:
        h0 = rand(*hshape, dtype=dtype)
        if is_lstm(module):
            c0 = rand(*cshape, dtype=dtype)
    return Case(x=x, lengths=draw_lengths(rng, T, B, form), form=form, batch_first=batch_first, h0=h0, c0=c0)


def flat_outputs(result):
    """(output, state) -> list of tensors [out_data, h_n, (c_n)]."""
    out, state = result
    data = out.data if isinstance(out, PackedSequence) else out
    states = list(state) if isinstance(state, tuple) else [state]
    return [data] + states


def check_structure(res, ref):
    """Same return structure as torch: types, PackedSequence metadata, shapes, dtypes."""
    (out, state), (rout, rstate) = res, ref
    assert type(out) is type(rout)
    assert type(state) is type(rstate)
    if isinstance(rout, PackedSequence):
        assert torch.equal(out.batch_sizes, rout.batch_sizes)
        assert out.batch_sizes.dtype == rout.batch_sizes.dtype and out.batch_sizes.device == rout.batch_sizes.device
        for name in ("sorted_indices", "unsorted_indices"):
            a, b = getattr(out, name), getattr(rout, name)
            assert (a is None) == (b is None), name
            if b is not None:
                assert torch.equal(a, b), name
    for a, b in zip(flat_outputs(res), flat_outputs(ref)):
        assert a.shape == b.shape and a.dtype == b.dtype and a.device == b.device


def call(module, *args):
    """module(*args); for torch's own modules, silence torch's oneDNN-projection fallback warning.

    Only torch's reference modules get the filter: if fastrnn's module warned, that would fail."""
    if type(module) in (nn.RNN, nn.LSTM, nn.GRU):
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="LSTM with projections is not supported with oneDNN",
                                    category=UserWarning)
            return module(*args)
    return module(*args)


def run_and_grad(module, case, grads_out=None):
    """Forward, then backward of sum((o * g).sum()) over every output. Returns (result, outs, grads)."""
    result = call(module, case.module_input(), case.hx())
    outs = flat_outputs(result)
    if grads_out is None:
        grads_out = [torch.randn_like(o) for o in outs]
    wrt = case.leaves() + list(module.parameters())
    if not wrt or not any(o.requires_grad for o in outs):
        return result, outs, grads_out, []
    loss = sum((o * g).sum() for o, g in zip(outs, grads_out))
    grads = torch.autograd.grad(loss, wrt)
    return result, outs, grads_out, list(grads)


def compare(ref_mod, mod, make_case_fn, assert_close, dtype):
    """Run torch and fastrnn on the same leaves; compare outputs, structure and every gradient."""
    case = make_case_fn()
    rres, routs, gouts, rgrads = run_and_grad(ref_mod, case)
    res, outs, _, grads = run_and_grad(mod, case, gouts)
    check_structure(res, rres)
    names = ["output", "h_n", "c_n"]
    for i, (a, b) in enumerate(zip(outs, routs)):
        assert_close(a, b, dtype, msg=lambda m, n=names[i]: f"{n}: {m}")
    leaf_names = [n for n, t in (("x", case.x), ("h0", case.h0), ("c0", case.c0))
                  if t is not None and t.requires_grad]
    pnames = leaf_names + [n for n, _ in mod.named_parameters()]
    assert [n for n, _ in mod.named_parameters()] == [n for n, _ in ref_mod.named_parameters()]
    assert len(grads) == len(rgrads) == len(pnames)
    for n, a, b in zip(pnames, grads, rgrads):
        assert b is not None
        assert a is not None, f"no gradient for {n}"
        assert_close(a, b, dtype, msg=lambda m, n=n: f"grad {n}: {m}")
    return case, res, rres


# --------------------------------------------------------------------------------------------------
# covering-array grid
# --------------------------------------------------------------------------------------------------

GRID_AXES = {
    "mode": list(MODES),
    "num_layers": [1, 2, 3],
    "bidirectional": [False, True],
    "batch_first": [False, True],
    "bias": [True, False],
    "form": list(FORMS),
    "dtype": ["float32", "float64"],
    "state": ["h0", "none"],
}


def covering_array(axes, strength, seed=0, candidates=30):
    """Greedy (AETG-style) covering array: every `strength`-subset of axes sees every value combo."""
    names = list(axes)
    sizes = [len(axes[n]) for n in names]
    combos = list(itertools.combinations(range(len(names)), strength))
    uncovered = set()
    for c in combos:
        for vals in itertools.product(*(range(sizes[i]) for i in c)):
            uncovered.add((c, vals))
    r = random.Random(seed)
    rows = []

    def covers(row, fixed_axes=None):
        n = 0
        for c in combos:
            if fixed_axes is not None and not all(i in fixed_axes for i in c):
                continue
            if (c, tuple(row[i] for i in c)) in uncovered:
                n += 1
        return n

    while uncovered:
        best, best_n = None, -1
        seed_tuple = min(uncovered)  # deterministic progress guarantee
        for _ in range(candidates):
            row = [None] * len(names)
            c0, v0 = seed_tuple
            for i, v in zip(c0, v0):
                row[i] = v
            order = [i for i in range(len(names)) if row[i] is None]
            r.shuffle(order)
            fixed = set(c0)
            for i in order:
                fixed.add(i)
                scores = []
                for v in range(sizes[i]):
                    row[i] = v
                    scores.append((covers(row, fixed), r.random(), v))
                row[i] = max(scores)[2]
            n = covers(row)
            if n > best_n:
                best, best_n = list(row), n
        rows.append(best)
        for c in combos:
            uncovered.discard((c, tuple(best[i] for i in c)))
    return [{n: axes[n][v] for n, v in zip(names, row)} for row in rows]


def grid_params():
    if os.environ.get("FASTRNN_FULL_GRID") == "1":
        rows = [dict(zip(GRID_AXES, vals)) for vals in itertools.product(*GRID_AXES.values())]
    else:
        rows = covering_array(GRID_AXES, strength=4, candidates=5)
    params = []
    for row in rows:
        ident = "-".join([row["mode"], f"L{row['num_layers']}", "bi" if row["bidirectional"] else "uni",
                          "bf" if row["batch_first"] else "tf", "bias" if row["bias"] else "nobias",
                          row["form"], row["dtype"], row["state"]])
        params.append(pytest.param(row, id=ident))
    return params


GRID = grid_params()


def test_grid_covers_every_axis_value():
    """Sanity of the covering array itself: every combination of any 3 axes' values appears."""
    rows = [p.values[0] for p in GRID]
    for axes in itertools.combinations(GRID_AXES, 3):
        seen = {tuple(repr(r[a]) for a in axes) for r in rows}
        want = set(itertools.product(*([repr(v) for v in GRID_AXES[a]] for a in axes)))
        assert seen == want, axes


def run_grid_case(cfg, rng, assert_close, device="cpu"):
    """One grid row on `device`: torch's module and fastrnn's, same weights, compared."""
    mode, form = cfg["mode"], cfg["form"]
    dtype = getattr(torch, cfg["dtype"])
    torch_cls, extra = MODES[mode]
    I, H, P, T, B = draw_sizes(rng, mode, form)
    kwargs = dict(num_layers=cfg["num_layers"], bias=cfg["bias"], batch_first=cfg["batch_first"],
                  bidirectional=cfg["bidirectional"], dtype=dtype, **extra)
    if mode == "lstm_proj":
        kwargs["proj_size"] = P
    ref, mod = make_pair(torch_cls, I, H, **kwargs)
    ref, mod = ref.to(device), mod.to(device)
    compare(ref, mod, lambda: make_case(rng, ref, form=form, T=T, B=B, batch_first=cfg["batch_first"],
                                        with_state=cfg["state"] == "h0", dtype=dtype).to(device),
            assert_close, dtype)


@pytest.mark.parametrize("cfg", GRID)
def test_forward_backward_vs_torch(cfg, rng, assert_close):
    run_grid_case(cfg, rng, assert_close)


SIZED_MODES = ["rnn_tanh", "lstm", "lstm_proj", "gru"]


def compare_at_sizes(mode, I, H, P, T, B, dtype, rng, assert_close):
    """torch's module and fastrnn's at given sizes (P: proj_size for lstm_proj), padded input
    with initial state, compared like the grid."""
    torch_cls, extra = MODES[mode]
    kwargs = dict(extra, dtype=dtype, **(dict(proj_size=P) if mode == "lstm_proj" else {}))
    ref, mod = make_pair(torch_cls, I, H, **kwargs)
    compare(ref, mod, lambda: make_case(rng, ref, form="padded", T=T, B=B, batch_first=False,
                                        with_state=True, dtype=dtype), assert_close, dtype)


@pytest.mark.parametrize("mode", SIZED_MODES)
@pytest.mark.parametrize("T,B", [(1, 1), (2, 4), (3, 3), (1, 16)], ids=["rows1", "rows8", "rows9", "rows16"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_few_row_products_vs_torch(mode, T, B, dtype, rng, assert_close):
    """1, 8, 9 and 16 rows in the whole sequence: the CPU GEMM's direct paths (a few rows of A;
    weight gradients over at most 8 rows) and the packed one on either side of their limits,
    with widths of several vectors plus a tail (I=133, H=70, P=37), which the small sizes of the
    grid never reach."""
    compare_at_sizes(mode, 133, 70, 37, T, B, dtype, rng, assert_close)


@pytest.mark.parametrize("mode", SIZED_MODES)
@pytest.mark.parametrize("I,H", [(40, 20), (24, 12), (17, 33)])
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_narrow_products_vs_torch(mode, I, H, dtype, rng, assert_close):
    """Products narrower than a panel (dW_ih and dX are I wide, dW_hh H wide) run on panels of
    1, 2 or 3 vectors; 20 rows, so they take the packed path."""
    compare_at_sizes(mode, I, H, H // 2, 5, 4, dtype, rng, assert_close)


@pytest.mark.parametrize("mode", SIZED_MODES)
def test_weight_gradients_over_many_rows_vs_torch(mode, rng, assert_close):
    """300 rows (more than one 256-deep block of the weight gradients' K) and a 263-wide input:
    dW_ih = dG^T X packs dG^T's rows per work item when they meet four or more panels, in
    blocks of 48 rows (G*H = 280 and 210 leave partial blocks and tiles), with panel tails.
    float64, where the table's tolerance is reduction order alone: in float32 some sums of 300
    products differ from torch's by just over 1e-5 whichever way they are computed."""
    compare_at_sizes(mode, 263, 70, 35, 10, 30, torch.float64, rng, assert_close)


@pytest.mark.parametrize("mode", SIZED_MODES)
@pytest.mark.parametrize("form", ["padded", "packed_unsorted"])
def test_backward_in_several_chunks_vs_torch(mode, form, rng, assert_close):
    """1,080 padded rows: the CPU backward walks them in chunks of about 512 rows (22 steps at
    B = 24: chunks of 22, 22 and 1 steps), each adding its terms to the weight gradients and
    writing its rows of dX; two layers (dX of the upper layer is dy of the lower), both
    directions (the reverse one's chunks start at the other end of the rows and add to the
    same dX) and unsorted packed lengths, so that chunks hold uneven row counts and the previous
    states of shorter sequences come from h0 / c0 mid-chunk."""
    torch_cls, extra = MODES[mode]
    kwargs = dict(extra, num_layers=2, bidirectional=True, dtype=torch.float64,
                  **(dict(proj_size=4) if mode == "lstm_proj" else {}))
    ref, mod = make_pair(torch_cls, 9, 10, **kwargs)
    compare(ref, mod, lambda: make_case(rng, ref, form=form, T=45, B=24, batch_first=False,
                                        with_state=True, dtype=torch.float64),
            assert_close, torch.float64)


def compare_on_two_threads(mode, I, H, P, T, B, rng, assert_close):
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        compare_at_sizes(mode, I, H, P, T, B, torch.float32, rng, assert_close)
    finally:
        torch.set_num_threads(previous)


@pytest.mark.parametrize("mode", SIZED_MODES)
@pytest.mark.parametrize("T,B", [(1, 1), (4, 2)], ids=["rows1", "rows8"])
def test_streamed_steps_on_two_threads_vs_torch(mode, T, B, rng, assert_close):
    """Steps of a few rows with H=300 (I=301, P=150): the unpacked products are over 2^18
    multiply-adds, so they are split over two threads by output columns."""
    compare_on_two_threads(mode, 301, 300, 150, T, B, rng, assert_close)


@pytest.mark.parametrize("mode", SIZED_MODES)
@pytest.mark.parametrize("B", [1, 3])
def test_batch1_steps_in_groups_on_two_threads_vs_torch(mode, B, rng, assert_close):
    """12 steps of 1 or 3 rows with H=300 on two threads, forward and backward: a step of a
    single row tile runs its products in groups of 8 unit blocks before their cells' epilogues,
    and with 300 units each thread has more than a group, the last block partial (on every
    ISA), so a second, short group follows. Backward steps keep one barrier each."""
    compare_on_two_threads(mode, 20, 300, 150, 12, B, rng, assert_close)


@pytest.mark.parametrize("mode", SIZED_MODES)
def test_small_steps_wide_input_on_two_threads_vs_torch(mode, rng, assert_close):
    """Steps too small to share (B*O*G*H < 2^15: H=40, B=4) with a wide input (I=300) over 20
    steps, a chunk of 16 steps and a short one: the recurrence runs on one thread and each
    chunk's input projection on two, split by unit blocks (3 of them on AVX-512). (80 rows: the
    weight gradients' sums stay short enough for float32's tolerance on every ISA.)"""
    compare_on_two_threads(mode, 300, 40, 20, 20, 4, rng, assert_close)


# --------------------------------------------------------------------------------------------------
# module identity: isinstance, state_dict, repr, parameters, dtype conversion
# --------------------------------------------------------------------------------------------------

MODULE_CONFIGS = [
    pytest.param(nn.RNN, dict(nonlinearity="tanh"), id="rnn_tanh"),
    pytest.param(nn.RNN, dict(nonlinearity="relu", num_layers=2, bias=False), id="rnn_relu_L2_nobias"),
    pytest.param(nn.LSTM, dict(num_layers=2, bidirectional=True), id="lstm_L2_bi"),
    pytest.param(nn.LSTM, dict(num_layers=3, proj_size=2, bidirectional=True, batch_first=True), id="lstm_proj_L3_bi_bf"),
    pytest.param(nn.GRU, dict(num_layers=2, dropout=0.25, batch_first=True), id="gru_L2_dropout_bf"),
]


@pytest.mark.parametrize("torch_cls,kwargs", MODULE_CONFIGS)
def test_module_identity(torch_cls, kwargs):
    ref = torch_cls(5, 4, **kwargs)
    mod = fr_class(torch_cls)(5, 4, **kwargs)
    assert isinstance(mod, torch_cls)
    assert isinstance(mod, nn.RNNBase)
    assert type(mod) is not torch_cls  # it really is fastrnn's class
    assert type(mod).forward is not torch_cls.forward
    assert repr(mod) == repr(ref)
    assert mod.extra_repr() == ref.extra_repr()
    rsd, sd = ref.state_dict(), mod.state_dict()
    assert list(sd) == list(rsd)
    for k in rsd:
        assert sd[k].shape == rsd[k].shape and sd[k].dtype == rsd[k].dtype, k
    assert [n for n, _ in mod.named_parameters()] == [n for n, _ in ref.named_parameters()]
    assert [n for n, _ in mod.named_buffers()] == [n for n, _ in ref.named_buffers()]
    assert all(isinstance(p, nn.Parameter) for p in mod.parameters())
    for attr in ("input_size", "hidden_size", "num_layers", "bias", "batch_first", "dropout",
                 "bidirectional", "proj_size", "mode"):
        assert getattr(mod, attr) == getattr(ref, attr), attr
    # torch's own init (same RNG stream) gives the same initial weights
    torch.manual_seed(1234)
    a = torch_cls(5, 4, **kwargs)
    torch.manual_seed(1234)
    b = fr_class(torch_cls)(5, 4, **kwargs)
    for (n, p), (_, q) in zip(a.named_parameters(), b.named_parameters()):
        assert torch.equal(p, q), n
    # the state_dict round-trips both ways
    ref.load_state_dict(mod.state_dict())
    # deepcopy / pickle-free copy keeps the class
    assert type(copy.deepcopy(mod)) is type(mod)


@pytest.mark.parametrize("torch_cls,kwargs", MODULE_CONFIGS)
def test_to_float64_and_back(torch_cls, kwargs, assert_close):
    kwargs = {k: v for k, v in kwargs.items() if k != "dropout"}
    ref, mod = make_pair(torch_cls, 3, 4, **kwargs)
    ref.eval(), mod.eval()
    for conv in (lambda m: m.to(torch.float64), lambda m: m.double(), lambda m: m.float()):
        ref, mod = conv(ref), conv(mod)
        dtype = next(ref.parameters()).dtype
        assert all(p.dtype == dtype for p in mod.parameters())
        shape = (2, 3, 3)
        x = torch.randn(*shape, dtype=dtype)
        for a, b in zip(flat_outputs(mod(x)), flat_outputs(call(ref, x))):
            assert_close(a, b, dtype)


@pytest.mark.parametrize("torch_cls,kwargs", MODULE_CONFIGS)
def test_flatten_parameters_and_load_state_dict(torch_cls, kwargs, assert_close):
    ref = torch_cls(3, 4, **kwargs).eval()
    mod = fr_class(torch_cls)(3, 4, **kwargs).eval()
    mod.flatten_parameters()
    mod.load_state_dict(ref.state_dict())
    mod.flatten_parameters()
    ref.flatten_parameters()
    assert len(list(mod.parameters())) == len(list(ref.parameters()))
    x = torch.randn(4, 2, 3)
    for a, b in zip(flat_outputs(mod(x)), flat_outputs(call(ref, x))):
        assert_close(a, b, torch.float32)
    # parameters are read at call time, not cached: an in-place update is seen by forward
    with torch.no_grad():
        for m in (ref, mod):
            m.weight_hh_l0.mul_(1.5)
            m.weight_ih_l0.add_(0.1)
    for a, b in zip(flat_outputs(mod(x)), flat_outputs(call(ref, x))):
        assert_close(a, b, torch.float32)
    # replacing a Parameter object (torch keeps _flat_weights in sync through __setattr__)
    new = torch.randn_like(ref.weight_ih_l0)
    ref.weight_ih_l0 = nn.Parameter(new.clone())
    mod.weight_ih_l0 = nn.Parameter(new.clone())
    for a, b in zip(flat_outputs(mod(x)), flat_outputs(call(ref, x))):
        assert_close(a, b, torch.float32)


# --------------------------------------------------------------------------------------------------
# padded vs packed through fastrnn itself
# --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("bidirectional", [False, True])
def test_packed_equal_lengths_identical_to_padded(mode, bidirectional, rng):
    """Packed input whose lengths all equal T computes exactly what the padded input computes."""
    torch_cls, extra = MODES[mode]
    H = 5
    kw = dict(num_layers=2, bidirectional=bidirectional, dtype=torch.float64, **extra)
    if mode == "lstm_proj":
        kw["proj_size"] = 3
    mod = fr_class(torch_cls)(4, H, **kw)
    T, B = 5, 3
    x = torch.randn(T, B, 4, dtype=torch.float64, requires_grad=True)
    out_pad, st_pad = mod(x)
    out_pk, st_pk = mod(pack_padded_sequence(x, [T] * B))
    assert torch.equal(out_pk.data, out_pad.reshape(T * B, -1))
    for a, b in zip(flat_outputs((out_pad, st_pad))[1:], flat_outputs((out_pk, st_pk))[1:]):
        assert torch.equal(a, b)
    g = torch.randn_like(out_pad)
    (gx_pad,) = torch.autograd.grad((out_pad * g).sum(), x)
    (gx_pk,) = torch.autograd.grad((out_pk.data * g.reshape(T * B, -1)).sum(), x)
    assert torch.equal(gx_pad, gx_pk)


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_packed_matches_per_sequence_padded(mode, batch_first, dtype, rng, assert_close):
    """Each sequence of a packed batch gives what it gives alone (B=1, T=its length), both directions."""
    torch_cls, extra = MODES[mode]
    kw = dict(num_layers=2, bidirectional=True, batch_first=batch_first, dtype=dtype, **extra)
    if mode == "lstm_proj":
        kw["proj_size"] = 2
    mod = fr_class(torch_cls)(3, 4, **kw)
    T, B = 6, 4
    lengths = [3, 6, 1, 4]
    x = torch.randn(*((B, T, 3) if batch_first else (T, B, 3)), dtype=dtype)
    h0 = torch.randn(4, B, 2 if mode == "lstm_proj" else 4, dtype=dtype)
    hx = (h0, torch.randn(4, B, 4, dtype=dtype)) if torch_cls is nn.LSTM else h0
    out, state = mod(pack_padded_sequence(x, lengths, batch_first=batch_first, enforce_sorted=False), hx)
    padded, out_lengths = pad_packed_sequence(out, batch_first=batch_first)
    assert out_lengths.tolist() == lengths
    states = list(state) if isinstance(state, tuple) else [state]
    for b, n in enumerate(lengths):
        xb = x[b, :n] if batch_first else x[:n, b]
        hb = tuple(h[:, b].contiguous() for h in hx) if isinstance(hx, tuple) else hx[:, b].contiguous()
        ob, sb = mod(xb.contiguous(), hb)  # unbatched, length n
        pb = padded[b, :n] if batch_first else padded[:n, b]
        assert_close(pb, ob, dtype)
        sbl = list(sb) if isinstance(sb, tuple) else [sb]
        for s, s1 in zip(states, sbl):
            assert_close(s[:, b], s1, dtype)
        # padding positions of the unpacked output are zero, as in torch
        rest = padded[b, n:] if batch_first else padded[n:, b]
        assert torch.count_nonzero(rest) == 0


# --------------------------------------------------------------------------------------------------
# training/eval, dropout, autograd corner cases
# --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("torch_cls,extra", [(nn.RNN, {}), (nn.LSTM, {}), (nn.LSTM, dict(proj_size=2)), (nn.GRU, {})],
                         ids=["rnn", "lstm", "lstm_proj", "gru"])
@pytest.mark.parametrize("form", ["padded", "packed_unsorted"])
def test_eval_mode_backward(torch_cls, extra, form, rng, assert_close):
    ref, mod = make_pair(torch_cls, 3, 4, num_layers=2, bidirectional=True, dropout=0.3, **extra)
    ref.eval(), mod.eval()
    assert not mod.training
    compare(ref, mod, lambda: make_case(rng, ref, form=form, T=5, B=3, batch_first=False, with_state=True,
                                        dtype=torch.float32), assert_close, torch.float32)


@pytest.mark.parametrize("torch_cls,extra", [(nn.RNN, dict(nonlinearity="relu")), (nn.LSTM, {}),
                                             (nn.LSTM, dict(proj_size=3)), (nn.GRU, {})],
                         ids=["rnn_relu", "lstm", "lstm_proj", "gru"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_dropout_eval_equals_torch(torch_cls, extra, dtype, rng, assert_close):
    ref, mod = make_pair(torch_cls, 3, 5, num_layers=3, dropout=0.5, bidirectional=True, dtype=dtype, **extra)
    ref.eval(), mod.eval()
    compare(ref, mod, lambda: make_case(rng, ref, form="padded", T=4, B=2, batch_first=False, with_state=False,
                                        dtype=dtype), assert_close, dtype)


@pytest.mark.parametrize("mode", ["rnn_relu", "lstm", "lstm_proj", "gru"])
@pytest.mark.parametrize("form", ["padded", "packed_unsorted", "unbatched"])
def test_dropout_one_in_training_equals_torch(mode, form, rng, assert_close):
    """dropout=1.0 is deterministic (the upper layers see zeros, not NaN from 1/(1-p))."""
    torch_cls, extra = MODES[mode]
    kw = dict(extra, proj_size=2) if mode == "lstm_proj" else extra
    ref, mod = make_pair(torch_cls, 3, 4, num_layers=3, dropout=1.0, bidirectional=True,
                         dtype=torch.float64, **kw)
    assert ref.training and mod.training
    compare(ref, mod, lambda: make_case(rng, ref, form=form, T=4, B=3, batch_first=False, with_state=True,
                                        dtype=torch.float64), assert_close, torch.float64)


@pytest.mark.parametrize("torch_cls", [nn.RNN, nn.LSTM, nn.GRU])
def test_dropout_training_seeded_and_applied(torch_cls):
    """Training-mode dropout: repeatable under torch.manual_seed, really applied, between layers only."""
    mod = fr_class(torch_cls)(4, 6, num_layers=2, dropout=0.5)
    x = torch.randn(5, 3, 4, requires_grad=True)
    torch.manual_seed(7)
    o1 = flat_outputs(mod(x))
    torch.manual_seed(7)
    o2 = flat_outputs(mod(x))
    for a, b in zip(o1, o2):
        assert torch.equal(a, b)
    torch.manual_seed(8)
    o3 = flat_outputs(mod(x))
    assert not torch.equal(o1[0], o3[0])
    mod.eval()
    oe = flat_outputs(mod(x))
    assert not torch.equal(o1[0], oe[0])
    # first layer's final state is not affected by dropout (dropout sits between layers)
    for a, b in zip(o1[1:], oe[1:]):
        torch.testing.assert_close(a[0], b[0], **dict(rtol=1e-5, atol=1e-5))
    mod.train()
    loss = sum(o.sum() for o in flat_outputs(mod(x)))
    loss.backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in mod.parameters())


# --------------------------------------------------------------------------------------------------
# float16 / bfloat16: float32 state and accumulation, each result and gradient rounded once
# --------------------------------------------------------------------------------------------------

HALF_DTYPES = (torch.bfloat16, torch.float16)


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("form", ["padded", "packed_unsorted", "unbatched"])
@pytest.mark.parametrize("dtype", HALF_DTYPES, ids=["bfloat16", "float16"])
def test_half_precision_is_float32_rounded_once(mode, form, dtype, rng, assert_close):
    """A float16/bfloat16 module returns what torch's float32 module computes from the same
    values, rounded to the dtype (outputs, states and every gradient), in the types, shapes
    and dtypes torch's half module returns. torch's own half modules round inside the
    recurrence too, so they are only the reference for the structure."""
    torch_cls, extra = MODES[mode]
    kwargs = dict(extra, proj_size=2) if mode == "lstm_proj" else extra
    ref_half, mod = make_pair(torch_cls, 3, 4, num_layers=2, bidirectional=True, dtype=dtype,
                              **kwargs)
    ref = copy.deepcopy(ref_half).float()
    case = make_case(rng, ref_half, form=form, T=5, B=3, batch_first=False, with_state=True,
                     dtype=dtype)
    res, outs, grads_out, grads = run_and_grad(mod, case)
    check_structure(res, call(ref_half, case.module_input(), case.hx()))
    # float32 leaves holding the same values (a 16-bit value widens exactly)
    _, want_outs, _, want_grads = run_and_grad(ref, case.to(dtype=torch.float32),
                                               [g.float() for g in grads_out])
    assert len(grads) == len(want_grads) == len(case.leaves()) + len(list(mod.parameters()))
    for got, want in zip(outs + grads, want_outs + want_grads):
        assert got.dtype == dtype
        assert_close(got, want.to(dtype))


def test_half_precision_module_takes_the_general_path_per_step(rng, assert_close):
    """Streaming a bfloat16 LSTM one step at a time (the fast path serves float32/float64
    only) gives the unrolled sequence's result."""
    mod = fastrnn.LSTM(3, 4).bfloat16()
    x = torch.randn(6, 2, 3, dtype=torch.bfloat16)
    with torch.no_grad():
        whole, (h, c) = mod(x)
        state = None
        for t in range(6):
            step, state = mod(x[t:t + 1], state)
    assert_close(step[0], whole[5])
    assert_close(state[0], h)
    assert_close(state[1], c)


@pytest.mark.parametrize("torch_cls,extra", [(nn.RNN, {}), (nn.LSTM, {}), (nn.LSTM, dict(proj_size=1)), (nn.GRU, {})],
                         ids=["rnn", "lstm", "lstm_proj", "gru"])
def test_input_without_grad_still_gives_param_grads(torch_cls, extra, rng, assert_close):
    ref, mod = make_pair(torch_cls, 3, 4, num_layers=2, bidirectional=True, **extra)
    compare(ref, mod, lambda: make_case(rng, ref, form="padded", T=4, B=2, batch_first=False, with_state=False,
                                        dtype=torch.float32, x_requires_grad=False), assert_close, torch.float32)


@pytest.mark.parametrize("mode", SIZED_MODES)
@pytest.mark.parametrize("form", ["padded", "packed_unsorted"])
@pytest.mark.parametrize("dropout", [0.0, 0.5])
def test_skipped_input_gradient_leaves_the_others_bitwise(mode, form, dropout, rng):
    """When the input does not require grad, the CPU backward skips its gradient's products (the
    first layer's dX): every other gradient must be the same bits as with the input's gradient
    computed. Padded input takes the modules' fast path, packed input and dropout the general
    one; 1,080 rows so that the skipped product spans several backward chunks, both directions."""
    torch_cls, extra = MODES[mode]
    kwargs = dict(extra, num_layers=2, bidirectional=True, dropout=dropout,
                  **(dict(proj_size=4) if mode == "lstm_proj" else {}))
    _, mod = make_pair(torch_cls, 9, 10, **kwargs)
    case = make_case(rng, mod, form=form, T=45, B=24, batch_first=False, with_state=True,
                     dtype=torch.float32)
    grads = {}
    for x_requires_grad in (True, False):
        case.x.requires_grad_(x_requires_grad)
        torch.manual_seed(0)  # the same dropout masks
        outs = flat_outputs(call(mod, case.module_input(), case.hx()))
        wrt = [t for t in (case.h0, case.c0) if t is not None] + list(mod.parameters())
        loss = sum((o * torch.linspace(-1, 1, o.numel()).view_as(o)).sum() for o in outs)
        grads[x_requires_grad] = torch.autograd.grad(loss, wrt)
    for with_input, without in zip(grads[True], grads[False]):
        assert torch.equal(with_input, without)


@pytest.fixture
def weight_gradient_requests(monkeypatch):
    """Records, per native CPU backward, whether it was given weight-gradient buffers (an empty
    list asks the core to skip those products)."""
    asked = []
    original = _C.rnn_backward

    def recording(*args):
        asked.append(len(args[14]) > 0)  # dweights
        return original(*args)

    monkeypatch.setattr(_C, "rnn_backward", recording)
    return asked


@pytest.mark.parametrize("mode", SIZED_MODES)
@pytest.mark.parametrize("form", ["padded", "packed_unsorted", "cell"])
@pytest.mark.parametrize("dropout", [0.0, 0.5])
def test_skipped_weight_gradients_leave_the_others_bitwise(mode, form, dropout, rng,
                                                           weight_gradient_requests):
    """With every parameter frozen, the CPU backward skips the weights' gradient products:
    the input's and the states' gradients must be the same bits as with the weights' computed.
    Padded input and cells take the modules' fast path, packed input and dropout the general
    one; 1,080 rows so that the skipped products span several backward chunks."""
    if form == "cell" and (mode == "lstm_proj" or dropout):
        pytest.skip("cells have no projection and no dropout")
    torch_cls, extra = MODES[mode]
    if form == "cell":
        cell_cls = {nn.LSTM: nn.LSTMCell, nn.GRU: nn.GRUCell, nn.RNN: nn.RNNCell}[torch_cls]
        _, mod = make_pair(cell_cls, 9, 10, **extra)
        x = torch.randn(24, 9)
        states = [torch.randn(24, 10) for _ in range(2 if cell_cls is nn.LSTMCell else 1)]
        inputs = [x, *states]

        def run():
            out = mod(x, tuple(states) if len(states) == 2 else states[0])
            return out if isinstance(out, tuple) else (out,)
    else:
        kwargs = dict(extra, num_layers=2, bidirectional=True, dropout=dropout,
                      **(dict(proj_size=4) if mode == "lstm_proj" else {}))
        _, mod = make_pair(torch_cls, 9, 10, **kwargs)
        case = make_case(rng, mod, form=form, T=45, B=24, batch_first=False, with_state=True,
                         dtype=torch.float32)
        inputs = [t for t in (case.x, case.h0, case.c0) if t is not None]

        def run():
            return flat_outputs(call(mod, case.module_input(), case.hx()))
    for t in inputs:
        t.requires_grad_()
    grads = {}
    for frozen in (False, True):
        mod.requires_grad_(not frozen)
        torch.manual_seed(0)  # the same dropout masks
        outs = run()
        loss = sum((o * torch.linspace(-1, 1, o.numel()).view_as(o)).sum() for o in outs)
        grads[frozen] = torch.autograd.grad(loss, inputs)
    assert weight_gradient_requests == [True, False]
    for computed, skipped in zip(grads[False], grads[True], strict=True):
        assert torch.equal(computed, skipped)


@pytest.mark.parametrize("torch_cls", [nn.RNN, nn.LSTM, nn.GRU])
def test_frozen_parameters_grad_to_input_only(torch_cls, assert_close):
    ref, mod = make_pair(torch_cls, 3, 4, num_layers=2)
    for m in (ref, mod):
        m.requires_grad_(False)
    x = torch.randn(4, 2, 3, requires_grad=True)
    (gr,) = torch.autograd.grad(flat_outputs(call(ref, x))[0].sum(), x)
    (gm,) = torch.autograd.grad(flat_outputs(mod(x))[0].sum(), x)
    assert_close(gm, gr, torch.float32)
    assert all(p.grad is None for p in mod.parameters())


@pytest.mark.parametrize("torch_cls", [nn.RNN, nn.LSTM, nn.GRU])
def test_no_grad_and_inference_mode(torch_cls, assert_close):
    ref, mod = make_pair(torch_cls, 3, 4, num_layers=2, bidirectional=True)
    x = torch.randn(4, 2, 3)
    for ctx in (torch.no_grad, torch.inference_mode):
        with ctx():
            res, rres = mod(x), call(ref, x)
        check_structure(res, rres)
        for a, b in zip(flat_outputs(res), flat_outputs(rres)):
            assert not a.requires_grad
            assert_close(a, b, torch.float32)


@pytest.mark.parametrize("torch_cls,extra", [(nn.RNN, {}), (nn.LSTM, dict(proj_size=2)), (nn.GRU, {})],
                         ids=["rnn", "lstm_proj", "gru"])
def test_deterministic_and_inputs_not_modified(torch_cls, extra):
    mod = fr_class(torch_cls)(3, 4, num_layers=2, bidirectional=True, **extra)
    x = torch.randn(5, 3, 3, requires_grad=True)
    h0 = torch.randn(4, 3, 2 if extra else 4, requires_grad=True)
    hx = (h0, torch.randn(4, 3, 4, requires_grad=True)) if torch_cls is nn.LSTM else h0
    leaves = [x] + (list(hx) if isinstance(hx, tuple) else [hx])
    before = [t.detach().clone() for t in leaves] + [p.detach().clone() for p in mod.parameters()]
    runs = []
    for _ in range(2):
        outs = flat_outputs(mod(x, hx))
        g = torch.autograd.grad(sum((o * (i + 1.5)).sum() for i, o in enumerate(outs)), leaves + list(mod.parameters()))
        runs.append([o.detach() for o in outs] + list(g))
    for a, b in zip(*runs):
        assert torch.equal(a, b)  # bitwise repeatable (DESIGN.md: determinism)
    after = [t.detach() for t in leaves] + [p.detach() for p in mod.parameters()]
    for a, b in zip(before, after):
        assert torch.equal(a, b)  # neither inputs nor weights were written


def test_thread_count_does_not_change_results(assert_close):
    mod = fastrnn.LSTM(5, 7, num_layers=2, bidirectional=True, dtype=torch.float64)
    x = torch.randn(6, 4, 5, dtype=torch.float64)
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        a = flat_outputs(mod(x))
        torch.set_num_threads(2)
        b = flat_outputs(mod(x))
    finally:
        torch.set_num_threads(old)
    for u, v in zip(a, b):
        assert_close(u, v, torch.float64)


# --------------------------------------------------------------------------------------------------
# edge cases: T=1, B=1, H=1, I=1, long T, non-contiguous, empty batch, empty sequence
# --------------------------------------------------------------------------------------------------

EDGE_SIZES = [
    pytest.param(dict(T=1, B=3, I=3, H=4), id="T1"),
    pytest.param(dict(T=5, B=1, I=3, H=4), id="B1"),
    pytest.param(dict(T=4, B=2, I=3, H=1), id="H1"),
    pytest.param(dict(T=4, B=2, I=1, H=3), id="I1"),
    pytest.param(dict(T=1, B=1, I=1, H=1), id="all1"),
]


@pytest.mark.parametrize("sizes", EDGE_SIZES)
@pytest.mark.parametrize("mode", ["rnn_tanh", "rnn_relu", "lstm", "gru"])
@pytest.mark.parametrize("form", ["padded", "packed_sorted", "unbatched"])
def test_edge_sizes(sizes, mode, form, rng, assert_close):
    torch_cls, extra = MODES[mode]
    ref, mod = make_pair(torch_cls, sizes["I"], sizes["H"], num_layers=2, bidirectional=True,
                         dtype=torch.float64, **extra)
    compare(ref, mod, lambda: make_case(rng, ref, form=form, T=sizes["T"], B=sizes["B"], batch_first=False,
                                        with_state=True, dtype=torch.float64), assert_close, torch.float64)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["rnn_tanh", "lstm", "lstm_proj", "gru"])
def test_long_sequence(mode, rng, assert_close):
    torch_cls, extra = MODES[mode]
    if mode == "lstm_proj":
        extra = dict(proj_size=3)
    ref, mod = make_pair(torch_cls, 4, 6, num_layers=2, bidirectional=True, **extra)
    compare(ref, mod, lambda: make_case(rng, ref, form="packed_unsorted", T=150, B=3, batch_first=False,
                                        with_state=True, dtype=torch.float32), assert_close, torch.float32)


@pytest.mark.parametrize("torch_cls,extra", [(nn.RNN, {}), (nn.LSTM, {}), (nn.LSTM, dict(proj_size=2)), (nn.GRU, {})],
                         ids=["rnn", "lstm", "lstm_proj", "gru"])
@pytest.mark.parametrize("how", ["transposed", "sliced_features", "strided_time", "expanded_batch"])
def test_non_contiguous_inputs(torch_cls, extra, how, assert_close):
    ref, mod = make_pair(torch_cls, 3, 4, num_layers=2, bidirectional=True, dtype=torch.float64, **extra)
    T, B, I = 4, 3, 3
    if how == "transposed":
        base = torch.randn(B, T, I, dtype=torch.float64, requires_grad=True)
        make = lambda: base.transpose(0, 1)
    elif how == "sliced_features":
        base = torch.randn(T, B, 2 * I, dtype=torch.float64, requires_grad=True)
        make = lambda: base[:, :, ::2]
    elif how == "strided_time":
        base = torch.randn(2 * T, B, I, dtype=torch.float64, requires_grad=True)
        make = lambda: base[1::2]
    else:
        base = torch.randn(T, 1, I, dtype=torch.float64, requires_grad=True)
        make = lambda: base.expand(T, B, I)
    assert not make().is_contiguous()
    Hout = 2 if extra else 4
    h0_base = torch.randn(B, 4, Hout, dtype=torch.float64, requires_grad=True)  # transposed below
    c0_base = torch.randn(4, B, 8, dtype=torch.float64, requires_grad=True)  # sliced below

    def hx():
        h0 = h0_base.transpose(0, 1)
        return (h0, c0_base[:, :, ::2]) if torch_cls is nn.LSTM else h0

    leaves = [base, h0_base] + ([c0_base] if torch_cls is nn.LSTM else [])
    results = []
    for m in (ref, mod):
        outs = flat_outputs(call(m, make(), hx()))
        gen = torch.Generator().manual_seed(3)
        loss = sum((o * torch.randn(o.shape, generator=gen, dtype=o.dtype)).sum() for o in outs)
        results.append([o.detach() for o in outs] + list(torch.autograd.grad(loss, leaves + list(m.parameters()))))
    for a, b in zip(results[1], results[0]):
        assert_close(a, b, torch.float64)
    # and the same as with contiguous copies
    outs_c = flat_outputs(mod(make().contiguous(), tuple(h.contiguous() for h in hx()) if torch_cls is nn.LSTM
                              else hx().contiguous()))
    for a, b in zip(outs_c, results[1]):
        assert_close(a, b, torch.float64)


@pytest.mark.parametrize("torch_cls,extra", [(nn.RNN, {}), (nn.LSTM, {}), (nn.LSTM, dict(proj_size=2)), (nn.GRU, {})],
                         ids=["rnn", "lstm", "lstm_proj", "gru"])
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("with_state", [False, True])
def test_empty_batch_like_torch(torch_cls, extra, batch_first, with_state):
    """B=0: torch returns empty outputs of the right shapes (and zero grads); fastrnn must match."""
    ref, mod = make_pair(torch_cls, 3, 4, num_layers=2, bidirectional=True, batch_first=batch_first, **extra)
    x = torch.randn(*((0, 5, 3) if batch_first else (5, 0, 3)), requires_grad=True)
    hx = None
    if with_state:
        h0 = torch.randn(4, 0, 2 if extra else 4, requires_grad=True)
        hx = (h0, torch.randn(4, 0, 4, requires_grad=True)) if torch_cls is nn.LSTM else h0
    outcomes = []
    for m in (ref, mod):
        try:
            res = call(m, x, hx)
        except Exception as e:  # compare exception types below
            outcomes.append(e)
            continue
        outs = flat_outputs(res)
        loss = sum(o.sum() for o in outs)
        grads = torch.autograd.grad(loss, [x] + list(m.parameters()), allow_unused=True)
        outcomes.append((res, outs, grads))
    r, f = outcomes
    if isinstance(r, Exception):
        assert isinstance(f, Exception) and type(f) is type(r), f"torch raised {r!r}, fastrnn gave {f!r}"
        return
    assert not isinstance(f, Exception), f"torch accepts B=0, fastrnn raised {f!r}"
    check_structure(f[0], r[0])
    for a, b in zip(f[2], r[2]):
        if b is None:
            assert a is None or torch.count_nonzero(a) == 0
        else:
            assert a is not None and a.shape == b.shape and torch.count_nonzero(a) == 0


@pytest.mark.parametrize("torch_cls", [nn.RNN, nn.LSTM, nn.GRU])
@pytest.mark.parametrize("unbatched", [False, True])
def test_zero_length_sequence_like_torch(torch_cls, unbatched):
    ref, mod = make_pair(torch_cls, 3, 4)
    x = torch.randn(0, 3) if unbatched else torch.randn(0, 2, 3)
    with pytest.raises(Exception) as rexc:
        ref(x)
    with pytest.raises(Exception) as fexc:
        mod(x)
    assert type(fexc.value) is type(rexc.value)


@pytest.mark.parametrize("torch_cls", [nn.RNN, nn.LSTM, nn.GRU])
def test_packed_single_step_and_all_length_one(torch_cls, assert_close, rng):
    ref, mod = make_pair(torch_cls, 2, 3, num_layers=2, bidirectional=True, dtype=torch.float64)
    x = torch.randn(1, 4, 2, dtype=torch.float64, requires_grad=True)
    case = lambda: Case(x=x, lengths=[1, 1, 1, 1], form="packed_unsorted", batch_first=False)
    compare(ref, mod, case, assert_close, torch.float64)


# --------------------------------------------------------------------------------------------------
# gradcheck (float64, finite differences) of fastrnn's own backward
# --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("packed", [False, True])
def test_gradcheck(mode, packed):
    torch_cls, extra = MODES[mode]
    kw = dict(extra)
    if mode == "lstm_proj":
        kw["proj_size"] = 2
    mod = fr_class(torch_cls)(2, 3, num_layers=2, bidirectional=True, dtype=torch.float64, **kw)
    names = [n for n, _ in mod.named_parameters()]
    params = [p.detach().clone().requires_grad_(True) for p in mod.parameters()]
    T, B = 3, 2
    x = torch.randn(T, B, 2, dtype=torch.float64, requires_grad=True)
    Hout = 2 if mode == "lstm_proj" else 3
    h0 = torch.randn(4, B, Hout, dtype=torch.float64, requires_grad=True)
    c0 = torch.randn(4, B, 3, dtype=torch.float64, requires_grad=True)
    is_l = torch_cls is nn.LSTM

    def fn(x, h0, *rest):
        c0, ps = (rest[0], rest[1:]) if is_l else (None, rest)
        inp = pack_padded_sequence(x, [2, 3], enforce_sorted=False) if packed else x
        out = torch.func.functional_call(mod, dict(zip(names, ps)), (inp, (h0, c0) if is_l else h0))
        return tuple(flat_outputs(out))

    inputs = (x, h0) + ((c0,) if is_l else ()) + tuple(params)
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("mode", ["lstm", "gru"])
def test_parametrized_weights_follow_their_parameters(mode, assert_close):
    """A parametrization (weight_norm here) replaces a weight by a computed tensor: the module's
    cached weight list must not be used for it, before or after the underlying parameter
    changes."""
    from torch.nn.utils.parametrizations import weight_norm
    torch_cls, extra = MODES[mode]
    ref, mod = make_pair(torch_cls, 5, 6, **extra)
    for m in (ref, mod):
        weight_norm(m, "weight_hh_l0")
    x = torch.randn(4, 3, 5)
    for _ in range(2):
        for got, want in zip(flat_outputs(mod(x)), flat_outputs(ref(x))):
            assert_close(got, want)
        with torch.no_grad():
            for m in (ref, mod):
                m.parametrizations.weight_hh_l0.original0.mul_(2.0)


# --------------------------------------------------------------------------------------------------
# more autograd / memory-layout situations real code runs into
# --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["rnn_tanh", "lstm", "lstm_proj", "gru"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("form", ["padded", "packed_unsorted"])
def test_simd_width_sizes(mode, dtype, form, rng, assert_close):
    """Sizes past one SIMD vector with ragged tails (H, I not multiples of 4/8/16), B past a block."""
    torch_cls, extra = MODES[mode]
    H = rng.choice([8, 9, 16, 17, 23, 33])
    I = rng.choice([8, 13, 31])
    kw = dict(extra)
    if mode == "lstm_proj":
        kw["proj_size"] = rng.choice([5, 8, 9])
    ref, mod = make_pair(torch_cls, I, H, num_layers=2, bidirectional=True, dtype=dtype, **kw)
    compare(ref, mod, lambda: make_case(rng, ref, form=form, T=5, B=rng.choice([5, 9, 13]), batch_first=False,
                                        with_state=True, dtype=dtype), assert_close, dtype)


@pytest.mark.parametrize("torch_cls,extra", [(nn.RNN, {}), (nn.LSTM, {}), (nn.LSTM, dict(proj_size=2)), (nn.GRU, {})],
                         ids=["rnn", "lstm", "lstm_proj", "gru"])
def test_backward_accumulates_into_grad_like_torch(torch_cls, extra, assert_close):
    ref, mod = make_pair(torch_cls, 3, 4, num_layers=2, bidirectional=True, dtype=torch.float64, **extra)
    x = torch.randn(4, 2, 3, dtype=torch.float64)
    xs = [x.clone().requires_grad_(True) for _ in range(2)]
    for m, xi in zip((ref, mod), xs):
        m.zero_grad()
        for k in range(2):  # two backward passes accumulate (retain_graph on the same graph too)
            outs = flat_outputs(call(m, xi))
            loss = sum((o * (j + k + 1)).sum() for j, o in enumerate(outs))
            loss.backward(retain_graph=True)
            loss.backward()
    assert_close(xs[1].grad, xs[0].grad, torch.float64)
    for (n, a), (_, b) in zip(mod.named_parameters(), ref.named_parameters()):
        assert_close(a.grad, b.grad, torch.float64, msg=lambda m, n=n: f"{n}.grad: {m}")


@pytest.mark.parametrize("torch_cls,extra", [(nn.RNN, {}), (nn.LSTM, {}), (nn.LSTM, dict(proj_size=2)), (nn.GRU, {})],
                         ids=["rnn", "lstm", "lstm_proj", "gru"])
def test_gradients_to_initial_state_only(torch_cls, extra, assert_close):
    ref, mod = make_pair(torch_cls, 3, 4, num_layers=2, dtype=torch.float64, **extra)
    for m in (ref, mod):
        m.requires_grad_(False)
    x = torch.randn(4, 2, 3, dtype=torch.float64)
    h0 = torch.randn(2, 2, extra.get("proj_size", 4), dtype=torch.float64, requires_grad=True)
    c0 = torch.randn(2, 2, 4, dtype=torch.float64, requires_grad=True)
    leaves = [h0, c0] if torch_cls is nn.LSTM else [h0]
    hx = tuple(leaves) if torch_cls is nn.LSTM else h0
    res = []
    for m in (ref, mod):
        outs = flat_outputs(call(m, x, hx))
        res.append(torch.autograd.grad(sum((o * (i + 1)).sum() for i, o in enumerate(outs)), leaves))
    for a, b in zip(res[1], res[0]):
        assert_close(a, b, torch.float64)


@pytest.mark.parametrize("torch_cls,extra", [(nn.RNN, {}), (nn.LSTM, {}), (nn.LSTM, dict(proj_size=2)), (nn.GRU, {})],
                         ids=["rnn", "lstm", "lstm_proj", "gru"])
@pytest.mark.parametrize("form", ["padded", "packed_unsorted"])
def test_learned_initial_state_expanded_over_batch(torch_cls, extra, form, rng, assert_close):
    """h0 = param.expand(L*D, B, H) (stride 0 over the batch): forward and the summed grad."""
    ref, mod = make_pair(torch_cls, 3, 4, num_layers=2, bidirectional=True, dtype=torch.float64, **extra)
    h_init = torch.randn(4, 1, extra.get("proj_size", 4), dtype=torch.float64, requires_grad=True)
    c_init = torch.randn(4, 1, 4, dtype=torch.float64, requires_grad=True)
    B, T = 3, 4
    x = torch.randn(T, B, 3, dtype=torch.float64, requires_grad=True)
    leaves = [x, h_init] + ([c_init] if torch_cls is nn.LSTM else [])

    def case():
        h0 = h_init.expand(-1, B, -1)
        c0 = c_init.expand(-1, B, -1) if torch_cls is nn.LSTM else None
        c = Case(x=x, lengths=draw_lengths(random.Random(1), T, B, form), form=form, h0=h0, c0=c0)
        c.leaves = lambda: leaves
        return c

    compare(ref, mod, case, assert_close, torch.float64)


@pytest.mark.parametrize("torch_cls,extra", [(nn.RNN, {}), (nn.LSTM, {}), (nn.LSTM, dict(proj_size=2)), (nn.GRU, {})],
                         ids=["rnn", "lstm", "lstm_proj", "gru"])
def test_non_contiguous_parameters(torch_cls, extra, rng, assert_close):
    """Parameters that are transposed/strided views (e.g. set by users or tied weights) are honoured."""
    ref, mod = make_pair(torch_cls, 3, 4, num_layers=2, dtype=torch.float64, **extra)
    for name in ("weight_hh_l0", "weight_ih_l1", "bias_ih_l0"):
        w = getattr(ref, name).detach()
        if w.dim() == 2:
            nc = w.t().contiguous().t()  # same values, column-major strides
        else:
            nc = torch.stack([w, torch.zeros_like(w)], 1)[:, 0]  # stride 2
        assert not nc.is_contiguous() and torch.equal(nc, w)
        setattr(ref, name, nn.Parameter(nc.clone().t().contiguous().t() if w.dim() == 2 else nc.clone()))
        setattr(mod, name, nn.Parameter(nc))
    compare(ref, mod, lambda: make_case(rng, ref, form="padded", T=4, B=2, batch_first=False, with_state=True,
                                        dtype=torch.float64), assert_close, torch.float64)


@pytest.mark.parametrize("torch_cls", [nn.RNN, nn.LSTM, nn.GRU])
@pytest.mark.parametrize("which", ["output", "h_n"])
def test_in_place_ops_on_outputs_like_torch(torch_cls, which, assert_close):
    """E.g. nn.ReLU(inplace=True) or `out += skip` on an RNN's output: where torch's autograd accepts
    it, fastrnn must too (and give torch's gradients); where torch refuses, fastrnn may refuse."""
    ref, mod = make_pair(torch_cls, 3, 4, num_layers=2, dtype=torch.float64)
    x = torch.randn(5, 2, 3, dtype=torch.float64, requires_grad=True)
    outcomes = []
    for m in (ref, mod):
        out, state = m(x)
        h = state[0] if isinstance(state, tuple) else state
        target = out if which == "output" else h
        target.add_(1.0)
        nn.functional.relu(target, inplace=True)
        try:
            outcomes.append(torch.autograd.grad(out.sum() + (h * 2).sum(), [x] + list(m.parameters())))
        except RuntimeError as e:
            outcomes.append(e)
    r, f = outcomes
    if isinstance(r, Exception):
        if isinstance(f, Exception):
            return
    else:
        assert not isinstance(f, Exception), f"torch's autograd accepts the in-place op; fastrnn raised: {f}"
    for a, b in zip(f, r):
        assert_close(a, b, torch.float64)
