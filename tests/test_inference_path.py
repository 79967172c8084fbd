"""Inference calls (no autograd) on plain CPU tensors take the modules' fast path (``_stream``),
which checks the call itself and skips the general path's Python; so do calls with autograd
(tests/test_fast_path_autograd.py has their gradients); everything else takes the general path. Both must give torch's results, the fast path exactly the general path's bits, and
the dispatch between them must be the intended one (so the fast path cannot silently stop being
taken, nor be taken for a call it does not handle).
"""

import re
import warnings

import pytest
import torch
import torch.nn as nn
from torch.nn.utils.rnn import pack_sequence

import fastrnn
from pairs import CELLS, make_pair

MODULES = {
    "rnn_tanh": (nn.RNN, dict(nonlinearity="tanh")),
    "rnn_relu_nobias": (nn.RNN, dict(nonlinearity="relu", bias=False)),
    "lstm": (nn.LSTM, {}),
    "lstm_proj": (nn.LSTM, dict(proj_size=3)),
    "gru": (nn.GRU, {}),
}
I, H = 5, 6


def sequence_inputs(module, T, B, batch_first, with_state, dtype):
    """Input and state for T steps of B sequences; B = None: one sequence, unbatched."""
    D = 2 if module.bidirectional else 1
    out = module.proj_size or module.hidden_size
    lead = (module.num_layers * D,) if B is None else (module.num_layers * D, B)
    x = torch.randn((T, I) if B is None else (B, T, I) if batch_first else (T, B, I), dtype=dtype)
    if not with_state:
        return x, None
    h0 = torch.randn(*lead, out, dtype=dtype)
    if isinstance(module, nn.LSTM):
        return x, (h0, torch.randn(*lead, H, dtype=dtype))
    return x, h0


def reference(module, *args):
    """torch's module called, its oneDNN-projection fallback warning silenced (only there: a
    warning from fastrnn's module would fail the test)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="LSTM with projections is not supported")
        return module(*args)


def flat(result):
    out, state = result
    return [out] + (list(state) if isinstance(state, tuple) else [state])


def same_strides(a, b):
    """The same strides along every dimension longer than 1 (the others are never stepped)."""
    return all(x == y for x, y, n in zip(a.stride(), b.stride(), a.shape) if n > 1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("with_state", [False, True], ids=["zeros", "state"])
@pytest.mark.parametrize("T,B", [(1, 1), (5, 1), (1, 3), (4, 3), (1, None), (4, None)])
@pytest.mark.parametrize("batch_first", [False, True], ids=["TBI", "BTI"])
@pytest.mark.parametrize("layers,bidirectional", [(1, False), (2, True)], ids=["L1", "L2_bi"])
@pytest.mark.parametrize("mode", list(MODULES))
def test_module_inference_vs_torch_and_training_forward(mode, layers, bidirectional, batch_first,
                                                        T, B, with_state, dtype, general_calls,
                                                        assert_close):
    """Under no_grad: torch's results, with torch's strides (batch-first output is a transposed
    view when T, B > 1), and the same bits as the same call with autograd (the training forward,
    through the general path). The fast path takes every such call, batched (B given) or not."""
    torch_cls, extra = MODULES[mode]
    ref, mod = make_pair(torch_cls, I, H, num_layers=layers, bidirectional=bidirectional,
                         batch_first=batch_first, dtype=dtype, **extra)
    x, hx = sequence_inputs(mod, T, B, batch_first, with_state, dtype)
    with torch.no_grad():
        expected = flat(reference(ref, x, hx))
        fast = flat(mod(x, hx))
    assert general_calls == []
    trained = flat(mod(x, hx))
    assert all(t.requires_grad for t in trained)
    for name, a, b, c in zip(("output", "h_n", "c_n"), fast, expected, trained):
        assert not a.requires_grad
        assert a.shape == b.shape and a.dtype == b.dtype
        assert same_strides(a, b), f"{name}: strides {a.stride()}, torch's {b.stride()}"
        assert_close(a, b, dtype, msg=lambda m, n=name: f"{n}: {m}")
        assert torch.equal(a, c.detach()), f"{name}: differs from the training forward"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("with_state", [False, True], ids=["zeros", "state"])
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("cell", list(CELLS))
def test_cell_inference_vs_torch_and_training_forward(cell, batch, with_state, dtype,
                                                      general_calls, assert_close):
    torch_cls, extra = CELLS[cell]
    ref, mod = make_pair(torch_cls, I, H, dtype=dtype, **extra)
    x = torch.randn(batch, I, dtype=dtype)
    hx = None
    if with_state:
        hx = torch.randn(batch, H, dtype=dtype)
        if torch_cls is nn.LSTMCell:
            hx = (hx, torch.randn(batch, H, dtype=dtype))
    as_list = lambda r: list(r) if isinstance(r, tuple) else [r]  # noqa: E731
    with torch.inference_mode():
        expected, fast = as_list(ref(x, hx)), as_list(mod(x, hx))
    assert general_calls == []
    trained = as_list(mod(x, hx))
    for a, b, c in zip(fast, expected, trained):
        assert a.shape == b.shape and a.dtype == b.dtype
        assert_close(a, b, dtype)
        assert torch.equal(a, c.detach())


def test_which_calls_take_the_fast_path(general_calls, assert_close):
    """Variants of one inference call, each differing from the first in one way: each gives
    torch's results, on the path it should take."""
    ref, mod = make_pair(nn.LSTM, I, H, num_layers=2, dropout=0.5)
    mod.eval(), ref.eval()
    x = torch.randn(4, 2, I)
    state = (torch.randn(2, 2, H), torch.randn(2, 2, H))
    variants = {
        "reference": lambda: (x, state),
        "unbatched": lambda: (x[:, 0], tuple(s[:, 0] for s in state)),
        "state_as_list": lambda: (x, list(state)),
        "non_contiguous_input": lambda: (x.transpose(0, 1).contiguous().transpose(0, 1), state),
    }
    for name, args in variants.items():
        general_calls.clear()
        with torch.no_grad():
            got, want = flat(mod(*args())), flat(ref(*args()))
        fast = ("reference", "unbatched", "non_contiguous_input")
        assert len(general_calls) == (0 if name in fast else 1), name
        for a, b in zip(got, want):
            assert_close(a, b, torch.float32, msg=lambda m, n=name: f"{n}: {m}")

    general_calls.clear()
    mod.train(), ref.train()  # dropout between the layers: random masks, so only the path
    with torch.no_grad():
        mod(x, state)
    assert len(general_calls) == 1
    mod.eval()

    general_calls.clear()
    mod(x, state)  # autograd: the fast path too (tests/test_fast_path_autograd.py)
    assert general_calls == []


@pytest.mark.parametrize("batch_first", [False, True], ids=["TBI", "BTI"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_which_packed_sequences_take_the_fast_path(dtype, batch_first, general_calls,
                                                   assert_close):
    """Packed sequences of one length (one sequence, or equal lengths in any order) take the
    fast path, others the general one; all give torch's results, the packing's tensors passed
    through (batch_first plays no part in packed input), and a wrong state raises torch's
    error on either."""
    ref, mod = make_pair(nn.LSTM, I, H, num_layers=2, bidirectional=True,
                         batch_first=batch_first, dtype=dtype)
    state = (torch.randn(4, 3, H, dtype=dtype), torch.randn(4, 3, H, dtype=dtype))
    seqs = [torch.randn(n, I, dtype=dtype) for n in (5, 5, 5, 2)]
    packings = {
        "one sequence": (pack_sequence(seqs[:1]), tuple(s[:, :1] for s in state)),
        "equal lengths": (pack_sequence(seqs[:3], enforce_sorted=False), state),
        "ragged": (pack_sequence(seqs[1:], enforce_sorted=False), state),
        "no state": (pack_sequence(seqs[:3], enforce_sorted=False), None),
    }
    for name, (packed, hx) in packings.items():
        general_calls.clear()
        with torch.no_grad():
            (got, got_state), (want, want_state) = mod(packed, hx), ref(packed, hx)
        assert len(general_calls) == (1 if name == "ragged" else 0), name
        for part in ("batch_sizes", "sorted_indices", "unsorted_indices"):
            assert getattr(got, part) is getattr(packed, part), (name, part)
        for a, b in zip((got.data, *got_state), (want.data, *want_state)):
            assert_close(a, b, dtype, msg=lambda m, n=name: f"{n}: {m}")
    packed = packings["equal lengths"][0]
    wrong = tuple(s[:, :2] for s in state)
    with pytest.raises(RuntimeError) as want:
        ref(packed, wrong)
    with pytest.raises(RuntimeError, match=re.escape(str(want.value))):
        mod(packed, wrong)


@pytest.mark.parametrize("change", ["non_contiguous", "float64", "parametrized"])
def test_weights_changed_behind_the_module_under_no_grad(change, assert_close):
    """``param.data = ...`` changes a weight without changing its Parameter, and a parametrization
    removes it from ``_parameters``: the fast path checks its weights on every call, so these
    give torch's results or torch's error."""
    ref, mod = make_pair(nn.GRU, I, H, dtype=torch.float64)
    x = torch.randn(3, 2, I, dtype=torch.float64)
    with torch.no_grad():
        mod(x)  # a first call on the fast path, with the original weights
        for m in (ref, mod):
            w = m.weight_hh_l0
            if change == "non_contiguous":
                w.data = w.data.t().contiguous().t()
            elif change == "float64":
                w.data = w.data.float()
            else:
                torch.nn.utils.parametrize.register_parametrization(m, "weight_hh_l0",
                                                                    _Doubled())
        if change == "float64":
            with pytest.raises(RuntimeError) as expected:
                ref(x)
            with pytest.raises(type(expected.value), match="dtype"):
                mod(x)
            return
        for a, b in zip(flat(mod(x)), flat(ref(x))):
            assert_close(a, b, torch.float64)


class _Doubled(nn.Module):
    def forward(self, w):
        return 2 * w


def test_streamed_steps_match_one_sequence(assert_close):
    """Feeding the state back step by step (the streaming use) gives the whole sequence's output
    and final state: T = 1 calls on the fast path against one call over all steps."""
    mod = fastrnn.LSTM(I, H, num_layers=2, batch_first=True)
    x = torch.randn(1, 7, I)
    with torch.no_grad():
        whole, (h_n, c_n) = mod(x)
        state, outputs = None, []
        for t in range(x.shape[1]):
            out, state = mod(x[:, t:t + 1], state)
            outputs.append(out)
    assert_close(torch.cat(outputs, 1), whole, torch.float32)
    assert_close(state[0], h_n, torch.float32)
    assert_close(state[1], c_n, torch.float32)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bfloat16", "float16"])
@pytest.mark.parametrize("T,B", [(1, 1), (2, 3), (1, None), (4, 3)])
@pytest.mark.parametrize("layers,bidirectional", [(1, False), (2, True)], ids=["L1", "L2_bi"])
@pytest.mark.parametrize("mode", list(MODULES))
def test_16bit_module_inference_takes_the_fast_path_for_few_rows(mode, layers, bidirectional, T, B,
                                                                 dtype, general_calls):
    """A 16-bit module's call over a handful of rows (the kernels then read its 16-bit weights
    themselves) takes the fast path, with autograd too (tests/test_fast_path_autograd.py has
    the gradients), the same bits either way; more rows take the general path."""
    torch_cls, extra = MODULES[mode]
    _, mod = make_pair(torch_cls, I, H, num_layers=layers, bidirectional=bidirectional, **extra)
    mod = mod.to(dtype)
    x, hx = sequence_inputs(mod, T, B, False, True, dtype)
    with torch.no_grad():
        fast = flat(mod(x, hx))
    few_rows = T * (B or 1) <= 8
    assert len(general_calls) == (0 if few_rows else 1)
    trained = flat(mod(x, hx))
    assert len(general_calls) == (0 if few_rows else 2)
    for a, c in zip(fast, trained):
        assert a.dtype == dtype and not a.requires_grad
        assert torch.equal(a, c.detach())


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bfloat16", "float16"])
@pytest.mark.parametrize("cell", list(CELLS))
def test_16bit_cell_inference_takes_the_fast_path(cell, dtype, general_calls):
    torch_cls, extra = CELLS[cell]
    _, mod = make_pair(torch_cls, I, H, **extra)
    mod = mod.to(dtype)
    x = torch.randn(3, I, dtype=dtype)
    hx = torch.randn(3, H, dtype=dtype)
    if torch_cls is nn.LSTMCell:
        hx = (hx, torch.randn(3, H, dtype=dtype))
    as_list = lambda r: list(r) if isinstance(r, tuple) else [r]  # noqa: E731
    with torch.no_grad():
        fast = as_list(mod(x, hx))
    assert general_calls == []
    trained = as_list(mod(x, hx))
    assert general_calls == []
    for a, c in zip(fast, trained):
        assert a.dtype == dtype and torch.equal(a, c.detach())
