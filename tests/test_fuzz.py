"""Property-based fuzzing (hypothesis) of random configurations against torch, forward and backward.

Each example draws a whole configuration (cell, sizes, layers, directions, batch_first, bias, input
form, dtype, initial state; for CTC: sizes, blank, lengths including 0 and impossible alignments,
reduction, zero_infinity, target layout, dtype, logits or log-probabilities) plus a seed for the
tensors, runs torch and fastrnn on the same weights and inputs, and compares every output and
gradient; an RNN's outputs under no_grad (the inference paths) must be its training forward's
bits. A failure is shrunk by hypothesis to a minimal configuration and printed with the seed.

Profiles (hypothesis settings profiles, chosen by FASTRNN_FUZZ_PROFILE):
  ci       (default) 50 examples per test, derandomized so that CI runs the same examples each
           time, no example database written; part of the plain ``python -m pytest -q``.
  release  2000 examples per test, random, with the example database (.hypothesis/) so that a
           failure replays first next time:  FASTRNN_FUZZ_PROFILE=release python -m pytest -q tests/test_fuzz.py

Tolerances come from the one table in tests/conftest.py through the ``tol`` fixture. hypothesis
warns about function-scoped fixtures under @given because they are not reset between examples;
``tol`` is a pure lookup into that table (and the autouse seeding fixture is overridden here by
each example's own seed), so that health check is suppressed for these tests only.
"""

import os
import warnings

import torch
import torch.nn as nn
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

import fastrnn
from pairs import make_pair

settings.register_profile(
    "ci", max_examples=50, deadline=None, derandomize=True, database=None, print_blob=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
settings.register_profile(
    "release", max_examples=2000, deadline=None, print_blob=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
PROFILE = os.environ.get("FASTRNN_FUZZ_PROFILE", "ci")
fuzz_settings = settings.get_profile(PROFILE)

DTYPES = [torch.float32, torch.float64]
MODES = {
    "rnn_tanh": (nn.RNN, dict(nonlinearity="tanh")),
    "rnn_relu": (nn.RNN, dict(nonlinearity="relu")),
    "lstm": (nn.LSTM, {}),
    "lstm_proj": (nn.LSTM, {}),
    "gru": (nn.GRU, {}),
}
FORMS = ["padded", "packed_sorted", "packed_unsorted", "unbatched"]


def quiet(fn):
    """fn() with torch's LSTM-projection oneDNN fallback warning silenced (torch's module only)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="LSTM with projections is not supported with oneDNN",
                                category=UserWarning)
        return fn()


# --------------------------------------------------------------------------------------------------
# RNN / LSTM / GRU
# --------------------------------------------------------------------------------------------------

@st.composite
def rnn_configs(draw):
    mode = draw(st.sampled_from(list(MODES)))
    hidden = draw(st.integers(2 if mode == "lstm_proj" else 1, 9))
    form = draw(st.sampled_from(FORMS))
    steps = draw(st.integers(1, 7))
    batch = 1 if form == "unbatched" else draw(st.integers(1, 5))
    lengths = None
    if form.startswith("packed"):
        lengths = draw(st.lists(st.integers(1, steps), min_size=batch, max_size=batch))
        lengths[draw(st.integers(0, batch - 1))] = steps  # the padded tensor is no longer than needed
        if form == "packed_sorted":
            lengths.sort(reverse=True)
    return dict(
        mode=mode, form=form, T=steps, B=batch, lengths=lengths, H=hidden,
        I=draw(st.integers(1, 9)),
        P=draw(st.integers(1, hidden - 1)) if mode == "lstm_proj" else 0,
        num_layers=draw(st.integers(1, 3)),
        bidirectional=draw(st.booleans()),
        batch_first=draw(st.booleans()),
        bias=draw(st.booleans()),
        dtype=draw(st.sampled_from(DTYPES)),
        with_state=draw(st.booleans()),
        seed=draw(st.integers(0, 2**31 - 1)),
    )


def rnn_inputs(cfg, module):
    """Leaves (x, h0, c0 as present) and fn(leaves) -> (module input, hx)."""
    gen = torch.Generator().manual_seed(cfg["seed"])
    randn = lambda *shape: torch.randn(*shape, generator=gen, dtype=cfg["dtype"]).requires_grad_()  # noqa: E731
    T, B, I, H = cfg["T"], cfg["B"], cfg["I"], cfg["H"]
    LD = cfg["num_layers"] * (2 if cfg["bidirectional"] else 1)
    unbatched = cfg["form"] == "unbatched"
    x = randn(T, I) if unbatched else randn(*((B, T, I) if cfg["batch_first"] else (T, B, I)))
    state = (LD,) if unbatched else (LD, B)
    leaves = [x]
    if cfg["with_state"]:
        leaves.append(randn(*state, cfg["P"] or H))
        if isinstance(module, nn.LSTM):
            leaves.append(randn(*state, H))

    def make(leaves):
        x, states = leaves[0], leaves[1:]
        inp = x
        if cfg["lengths"] is not None:
            inp = pack_padded_sequence(x, torch.tensor(cfg["lengths"]), batch_first=cfg["batch_first"],
                                       enforce_sorted=cfg["form"] == "packed_sorted")
        hx = None if not states else (tuple(states) if len(states) == 2 else states[0])
        return inp, hx

    return leaves, make


def rnn_outputs(module, leaves, make):
    """[output (a PackedSequence's data), h_n(, c_n)] of one call."""
    out, state = quiet(lambda: module(*make(leaves)))
    outs = [out.data if isinstance(out, PackedSequence) else out]
    return outs + (list(state) if isinstance(state, tuple) else [state])


def run_rnn(module, leaves, make, cfg):
    """Every output, then the gradients of a fixed random projection of them w.r.t. the leaves
    and the parameters."""
    outs = rnn_outputs(module, leaves, make)
    gen = torch.Generator().manual_seed(cfg["seed"] + 1)
    loss = sum((o * torch.randn(o.shape, generator=gen, dtype=o.dtype)).sum() for o in outs)
    grads = torch.autograd.grad(loss, leaves + list(module.parameters()))
    return [o.detach() for o in outs] + list(grads)


@fuzz_settings
@given(cfg=rnn_configs())
def test_fuzz_rnn_vs_torch(cfg, tol):
    torch_cls, extra = MODES[cfg["mode"]]
    kwargs = dict(num_layers=cfg["num_layers"], bidirectional=cfg["bidirectional"],
                  batch_first=cfg["batch_first"], bias=cfg["bias"], dtype=cfg["dtype"], **extra)
    if cfg["P"]:
        kwargs["proj_size"] = cfg["P"]
    torch.manual_seed(cfg["seed"])  # the modules' initial weights
    ref, mod = make_pair(torch_cls, cfg["I"], cfg["H"], **kwargs)
    leaves, make = rnn_inputs(cfg, ref)
    want = run_rnn(ref, leaves, make, cfg)
    got = run_rnn(mod, leaves, make, cfg)
    names = ["output", "h_n", "c_n"][:len(want) - len(leaves) - len(list(ref.parameters()))]
    names += ["grad x", "grad h0", "grad c0"][:len(leaves)]
    names += [f"grad {n}" for n, _ in ref.named_parameters()]
    for name, a, b in zip(names, got, want):
        torch.testing.assert_close(a, b, **tol(cfg["dtype"]), msg=lambda m, n=name: f"{n}: {m}")
    with torch.no_grad():  # the inference paths (fast path, no reserve): the same bits
        inferred = rnn_outputs(mod, leaves, make)
    for name, a, b in zip(names, inferred, got):
        assert torch.equal(a, b), f"{name}: the no-grad call differs from the training forward"


# --------------------------------------------------------------------------------------------------
# CTC
# --------------------------------------------------------------------------------------------------

@st.composite
def ctc_configs(draw):
    steps, batch = draw(st.integers(1, 30)), draw(st.integers(1, 5))
    classes = draw(st.integers(2, 8))
    max_target = draw(st.integers(0, 10))
    return dict(
        T=steps, B=batch, C=classes, S=max_target,
        blank=draw(st.integers(0, classes - 1)),
        # lengths 0 and impossible alignments (target longer than the input) come up naturally
        input_lengths=draw(st.lists(st.integers(0, steps), min_size=batch, max_size=batch)),
        target_lengths=draw(st.lists(st.integers(0, max_target), min_size=batch, max_size=batch)),
        reduction=draw(st.sampled_from(["none", "sum", "mean"])),
        zero_infinity=draw(st.booleans()),
        layout=draw(st.sampled_from(["padded", "concat"])),
        dtype=draw(st.sampled_from(DTYPES)),
        from_logits=draw(st.booleans()),
        seed=draw(st.integers(0, 2**31 - 1)),
    )


def ctc_problem(cfg):
    gen = torch.Generator().manual_seed(cfg["seed"])
    T, B, C, S = cfg["T"], cfg["B"], cfg["C"], cfg["S"]
    x = torch.randn(T, B, C, generator=gen, dtype=cfg["dtype"])
    if not cfg["from_logits"]:
        x = x.log_softmax(2)
    labels = torch.tensor([c for c in range(C) if c != cfg["blank"]])
    # few distinct labels, so that repeats (which need a blank in between) are common
    targets = labels[torch.randint(0, min(len(labels), 3), (B, S), generator=gen)]
    tl = torch.tensor(cfg["target_lengths"], dtype=torch.int64)
    if cfg["layout"] == "concat":
        targets = torch.cat([targets[b, :n] for b, n in enumerate(tl.tolist())])
    return x, targets, torch.tensor(cfg["input_lengths"], dtype=torch.int64), tl


@fuzz_settings
@given(cfg=ctc_configs())
def test_fuzz_ctc_vs_torch(cfg, tol):
    x, targets, il, tl = ctc_problem(cfg)
    kw = dict(blank=cfg["blank"], zero_infinity=cfg["zero_infinity"])
    fast = fastrnn.ctc_loss_from_logits if cfg["from_logits"] else fastrnn.ctc_loss

    def ref(inp, **k):
        return F.ctc_loss(inp.log_softmax(2) if cfg["from_logits"] else inp, targets, il, tl, **k)

    gen = torch.Generator().manual_seed(cfg["seed"] + 1)
    weights = torch.rand(cfg["B"], generator=gen, dtype=cfg["dtype"]) + 0.5
    results = []
    for fn in (lambda inp, **k: fast(inp, targets, il, tl, **k), ref):
        leaf = x.clone().requires_grad_()
        loss = fn(leaf, reduction=cfg["reduction"], **kw)
        upstream = (loss * weights).sum() if cfg["reduction"] == "none" else loss * 1.5
        (grad,) = torch.autograd.grad(upstream, leaf)
        results.append((loss.detach(), grad))
    (loss, grad), (want_loss, want_grad) = results
    tolerance = tol(cfg["dtype"])
    torch.testing.assert_close(loss, want_loss, **tolerance, equal_nan=True)
    # Documented difference: an element whose loss is inf (no alignment, zero_infinity off) gets a
    # zero gradient; torch's is NaN there. Every other element's gradient is torch's.
    with torch.no_grad():
        per_element = ref(x, reduction="none", **kw)
    infinite = torch.isinf(per_element)
    assert torch.equal(grad[:, infinite], torch.zeros_like(grad[:, infinite]))
    torch.testing.assert_close(grad[:, ~infinite], want_grad[:, ~infinite], **tolerance)
