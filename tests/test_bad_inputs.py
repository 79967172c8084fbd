"""Bad inputs at every public entry point, each run through torch and through fastrnn.

Extends tests/test_rnn_errors.py (module misuse) and tests/test_ctc.py (CTC errors) with what those
do not cover: stride-0 (expanded) and other non-contiguous tensors, integer tensors, hand-built
PackedSequences whose batch_sizes do not describe their data, CTC lengths that are negative,
oversized or too large to sum, argument types, empty batches and T = 0.

Every case calls torch and fastrnn with the same arguments. When torch raises, fastrnn must raise
the same exception type; when torch succeeds, fastrnn must give the same results and gradients.
Where fastrnn differs on purpose (README, "Behaviour that differs from torch on purpose", and the
docstring of python/fastrnn/ctc.py) the test asserts fastrnn's documented behaviour instead.
The decoders have no torch counterpart: they must reject what ctc_loss rejects, with its types.
"""

import warnings

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

import fastrnn
from pairs import make_pair

F64 = torch.float64


def outcome(fn):
    """fn()'s result, or the exception it raised (torch's LSTM projection warning silenced)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="LSTM with projections is not supported with oneDNN",
                                category=UserWarning)
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - the exception is what gets compared
            return exc


def tensors_of(result):
    """The tensors of a module's or a loss's result, flattened in order (PackedSequence: data)."""
    if isinstance(result, PackedSequence):
        return [result.data]
    if isinstance(result, (tuple, list)):
        return [t for part in result for t in tensors_of(part)]
    return [result]


def assert_like_torch(torch_call, fastrnn_call, assert_close, require_error=False):
    """Same exception type as torch, or (when torch succeeds) the same tensors."""
    want, got = outcome(torch_call), outcome(fastrnn_call)
    if isinstance(want, Exception):
        assert isinstance(got, Exception), f"torch raised {want!r}, fastrnn returned a result"
        assert type(got) is type(want), f"torch raised {want!r}, fastrnn raised {got!r}"
        return
    assert not require_error, f"precondition: torch should reject this call, it returned {want!r}"
    assert not isinstance(got, Exception), f"torch accepted the call, fastrnn raised {got!r}"
    want_t, got_t = tensors_of(want), tensors_of(got)
    assert len(got_t) == len(want_t)
    for a, b in zip(got_t, want_t):
        assert_close(a, b)


def outputs_and_grads(module, inp, hx, leaves):
    """Every output of module(inp, hx) and the gradients of a fixed random projection of them
    w.r.t. leaves and the module's parameters."""
    out = tensors_of(module(inp, hx))
    gen = torch.Generator().manual_seed(11)
    loss = sum((o * torch.randn(o.shape, generator=gen, dtype=o.dtype)).sum() for o in out)
    grads = torch.autograd.grad(loss, leaves + list(module.parameters()))
    return [o.detach() for o in out] + list(grads)


SEQ_MODULES = {
    "rnn_tanh": (nn.RNN, dict(nonlinearity="tanh")),
    "rnn_relu": (nn.RNN, dict(nonlinearity="relu")),
    "lstm": (nn.LSTM, {}),
    "lstm_proj": (nn.LSTM, dict(proj_size=2)),
    "gru": (nn.GRU, {}),
}


# --------------------------------------------------------------------------------------------------
# RNN / LSTM / GRU: stride-0 and strided views (input, packed data, h0, c0) give torch's results
# --------------------------------------------------------------------------------------------------

T, B, I, H = 4, 3, 3, 4


def layouts(is_lstm, proj):
    """name -> (leaves, fn(leaves) -> (input, hx)) for layouts not covered by test_rnn_vs_torch."""
    O = proj or H
    r = lambda *s: torch.randn(*s, dtype=F64, requires_grad=True)  # noqa: E731

    def hx_of(h, c):
        return (h, c) if is_lstm else h

    cases = {}
    # Every stride 0: one value broadcast over steps, batch and features.
    x1, h1, c1 = r(1, 1, 1), r(1, 1, 1), r(1, 1, 1)
    cases["all_stride0"] = ([x1, h1, c1] if is_lstm else [x1, h1], lambda: (
        x1.expand(T, B, I), hx_of(h1.expand(4, B, O), c1.expand(4, B, H))))
    # Stride 0 over features only (a constant feature vector per (t, b)).
    xf, hf = r(T, B, 1), r(4, B, 1)
    cf = r(4, B, 1)
    cases["feature_stride0"] = ([xf, hf, cf] if is_lstm else [xf, hf], lambda: (
        xf.expand(T, B, I), hx_of(hf.expand(4, B, O), cf.expand(4, B, H))))
    # Permuted storage: batch-first input seen time-first, states with layers innermost.
    xp, hp, cp = r(B, I, T), r(B, O, 4), r(H, B, 4)
    cases["permuted"] = ([xp, hp, cp] if is_lstm else [xp, hp], lambda: (
        xp.permute(2, 0, 1), hx_of(hp.permute(2, 0, 1), cp.permute(2, 1, 0))))
    # PackedSequence whose data is a strided view (every other row of a bigger tensor).
    xs, hs, cs = r(T, B, I), r(4, B, O), r(4, B, H)
    lengths = [4, 2, 3]

    def packed_strided():
        packed = pack_padded_sequence(xs, lengths, enforce_sorted=False)
        wide = torch.cat([packed.data, packed.data * 0 + 7], 1)[:, :I]  # strided rows, same values
        return (PackedSequence(wide, packed.batch_sizes, packed.sorted_indices,
                               packed.unsorted_indices), hx_of(hs, cs))

    cases["packed_strided_data"] = ([xs, hs, cs] if is_lstm else [xs, hs], packed_strided)
    # PackedSequence whose data is expanded over features (stride 0).
    xe = r(T, B, 1)

    def packed_expanded():
        packed = pack_padded_sequence(xe, lengths, enforce_sorted=False)
        data = packed.data.expand(-1, I)
        return (PackedSequence(data, packed.batch_sizes, packed.sorted_indices,
                               packed.unsorted_indices), hx_of(hs, cs))

    cases["packed_expanded_data"] = ([xe, hs, cs] if is_lstm else [xe, hs], packed_expanded)
    return cases


LAYOUT_NAMES = ["all_stride0", "feature_stride0", "permuted", "packed_strided_data",
                "packed_expanded_data"]


@pytest.mark.parametrize("layout", LAYOUT_NAMES)
@pytest.mark.parametrize("mode", list(SEQ_MODULES))
def test_sequence_module_views_like_torch(mode, layout, assert_close):
    torch_cls, extra = SEQ_MODULES[mode]
    ref, mod = make_pair(torch_cls, I, H, num_layers=2, bidirectional=True, dtype=F64, **extra)
    leaves, make = layouts(torch_cls is nn.LSTM, extra.get("proj_size", 0))[layout]
    inp, _ = make()
    data = inp.data if isinstance(inp, PackedSequence) else inp
    assert not data.is_contiguous()
    want = outcome(lambda: outputs_and_grads(ref, *make(), leaves))
    got = outputs_and_grads(mod, *make(), leaves)
    assert len(got) == len(want)
    for a, b in zip(got, want):
        assert_close(a, b)


# --------------------------------------------------------------------------------------------------
# Hand-built PackedSequences whose batch_sizes do not describe the data. The native core trusts
# batch_sizes for every row it touches, so fastrnn refuses them, always with RuntimeError. torch's
# own response is incidental (its type depends on the cell and on h0, and RNN/GRU silently ignore
# rows beyond the sum), so here torch is only required not to crash.
# --------------------------------------------------------------------------------------------------

# name -> (rows of the data, batch_sizes)
BATCH_SIZES = {
    "sum_above_rows": (5, torch.tensor([2, 2])),
    "sum_below_rows": (3, torch.tensor([2, 2])),
    "increasing": (5, torch.tensor([2, 3])),
    "zero_entry": (4, torch.tensor([2, 0, 2])),
    "negative_entry": (4, torch.tensor([2, -1, 3])),
    "int32": (4, torch.tensor([2, 2], dtype=torch.int32)),
    "float": (4, torch.tensor([2.0, 2.0])),
    "two_dimensional": (4, torch.tensor([[2, 2]])),
    "empty": (0, torch.tensor([], dtype=torch.int64)),
    "huge_entry": (4, torch.tensor([2**40, 2])),
}


@pytest.mark.parametrize("with_state", [False, True])
@pytest.mark.parametrize("case", list(BATCH_SIZES))
@pytest.mark.parametrize("mode", ["rnn_tanh", "lstm", "gru"])
def test_inconsistent_packed_batch_sizes_refused(mode, case, with_state, assert_close):
    torch_cls, extra = SEQ_MODULES[mode]
    ref, mod = make_pair(torch_cls, I, H, **extra)
    rows, batch_sizes = BATCH_SIZES[case]
    packed = PackedSequence(torch.randn(rows, I), batch_sizes)
    hx = None
    if with_state:
        h = torch.randn(1, 2, H)
        hx = (h, h.clone()) if torch_cls is nn.LSTM else h
    outcome(lambda: ref(packed, hx))
    with pytest.raises(RuntimeError, match="batch_sizes"):
        mod(packed, hx)
    good = pack_padded_sequence(torch.randn(T, B, I), [4, 3, 1])  # the module is still usable
    assert_like_torch(lambda: ref(good), lambda: mod(good), assert_close)


@pytest.mark.parametrize("mode", ["rnn_tanh", "lstm", "gru"])
def test_packed_integer_data_like_torch(mode, assert_close):
    """torch's LSTM skips its argument checks for packed input (its kernel then fails with a
    RuntimeError); fastrnn runs torch's checks for every module, so it raises what torch's RNN and
    GRU raise for the same PackedSequence."""
    torch_cls, extra = SEQ_MODULES[mode]
    ref = (nn.GRU if torch_cls is nn.LSTM else torch_cls)(I, H)
    mod = make_pair(torch_cls, I, H, **extra)[1]
    packed = pack_padded_sequence(torch.randint(0, 3, (T, B, I)), [4, 3, 1])
    assert_like_torch(lambda: ref(packed), lambda: mod(packed), assert_close, require_error=True)


def test_lstm_integer_c0_only_like_torch(assert_close):
    ref, mod = make_pair(nn.LSTM, I, H)
    hx = (torch.randn(1, B, H), torch.ones(1, B, H, dtype=torch.int64))
    x = torch.randn(T, B, I)
    assert_like_torch(lambda: ref(x, hx), lambda: mod(x, hx), assert_close, require_error=True)


# --------------------------------------------------------------------------------------------------
# Cells: stride-0 input and state, integer and complex tensors, devices
# --------------------------------------------------------------------------------------------------

CELL_CLASSES = [nn.RNNCell, nn.LSTMCell, nn.GRUCell]


@pytest.mark.parametrize("cls", CELL_CLASSES, ids=lambda c: c.__name__)
@pytest.mark.parametrize("batched", [True, False])
def test_cell_expanded_input_and_state_like_torch(cls, batched, assert_close):
    ref, mod = make_pair(cls, I, H, dtype=F64)
    x_base = torch.randn(1, 1, dtype=F64, requires_grad=True)
    h_base = torch.randn(1, H, dtype=F64, requires_grad=True)
    c_base = torch.randn(1, 1, dtype=F64, requires_grad=True)
    leaves = [x_base, h_base] + ([c_base] if cls is nn.LSTMCell else [])

    def run(m):
        shape = (B,) if batched else ()
        x = x_base.reshape(()).expand(*shape, I)
        h = h_base.expand(B, H) if batched else h_base[0]
        hx = (h, c_base.reshape(()).expand(*shape, H)) if cls is nn.LSTMCell else h
        out = tensors_of(m(x, hx))
        loss = sum((o * torch.linspace(-1, 2, o.numel(), dtype=F64).view(o.shape)).sum()
                   for o in out)
        return [o.detach() for o in out] + list(torch.autograd.grad(loss, leaves + list(m.parameters())))

    for a, b in zip(run(mod), run(ref)):
        assert_close(a, b)


CELL_BAD = {
    "int_input": lambda cls: (torch.randint(0, 3, (2, I)), None),
    "complex_input": lambda cls: (torch.randn(2, I, dtype=torch.complex64), None),
    "int_unbatched_input": lambda cls: (torch.randint(0, 3, (I,)), None),
    "int32_state": lambda cls: (torch.randn(2, I), (torch.ones(2, H, dtype=torch.int32),) * 2
                                if cls is nn.LSTMCell else torch.ones(2, H, dtype=torch.int32)),
    "meta_input": lambda cls: (torch.randn(2, I, device="meta"), None),
    "zero_features": lambda cls: (torch.randn(2, 0), None),
}


@pytest.mark.parametrize("case", list(CELL_BAD))
@pytest.mark.parametrize("cls", CELL_CLASSES, ids=lambda c: c.__name__)
def test_cell_bad_tensors_like_torch(cls, case, assert_close):
    ref, mod = make_pair(cls, I, H)
    x, hx = CELL_BAD[case](cls)
    assert_like_torch(lambda: ref(x, hx), lambda: mod(x, hx), assert_close, require_error=True)


@pytest.mark.parametrize("cls", CELL_CLASSES, ids=lambda c: c.__name__)
def test_cell_empty_batch_like_torch(cls, assert_close):
    ref, mod = make_pair(cls, I, H)
    x = torch.randn(0, I, requires_grad=True)
    for hx in (None, (torch.randn(0, H),) * 2 if cls is nn.LSTMCell else torch.randn(0, H)):
        assert_like_torch(lambda: ref(x, hx), lambda: mod(x, hx), assert_close)
    out = tensors_of(mod(x))
    (grad,) = torch.autograd.grad(sum(o.sum() for o in out), [x])
    assert grad.shape == x.shape


# --------------------------------------------------------------------------------------------------
# CTC: ctc_loss, functional.ctc_loss, CTCLoss, ctc_loss_from_logits against F.ctc_loss
# --------------------------------------------------------------------------------------------------

CT, CB, CC, CS = 6, 2, 5, 3


def ctc_args():
    """Valid float64 arguments: (log_probs, padded targets, input_lengths, target_lengths)."""
    log_probs = torch.randn(CT, CB, CC, dtype=F64).log_softmax(2)
    targets = torch.tensor([[1, 2, 2], [3, 1, 4]])
    return log_probs, targets, torch.tensor([6, 5]), torch.tensor([3, 2])


def concat(targets, lengths):
    return torch.cat([targets[b, :n] for b, n in enumerate(lengths.tolist())])


# name -> fn(log_probs, targets, input_lengths, target_lengths) -> (args, kwargs) of the call
CTC_CASES = {
    # lengths: values
    "il_negative": lambda lp, tg, il, tl: ((lp, tg, torch.tensor([-1, 5]), tl), {}),
    "il_above_T": lambda lp, tg, il, tl: ((lp, tg, torch.tensor([7, 5]), tl), {}),
    "il_huge": lambda lp, tg, il, tl: ((lp, tg, torch.tensor([2**40, 5]), tl), {}),
    "tl_negative": lambda lp, tg, il, tl: ((lp, tg, il, torch.tensor([-1, 2])), {}),
    "tl_above_width": lambda lp, tg, il, tl: ((lp, tg, il, torch.tensor([4, 2])), {}),
    "tl_huge_padded": lambda lp, tg, il, tl: ((lp, tg, il, torch.tensor([2**40, 2])), {}),
    "tl_huge_concat": lambda lp, tg, il, tl: ((lp, concat(tg, tl), il, torch.tensor([2**40, 2])), {}),
    "tl_sum_wraps_int64": lambda lp, tg, il, tl: (
        (lp, concat(tg, tl), il, torch.tensor([2**62, 2**62])), {}),
    "tl_sum_above_concat": lambda lp, tg, il, tl: ((lp, concat(tg, tl), il, torch.tensor([3, 3])), {}),
    "lengths_as_tuples_negative": lambda lp, tg, il, tl: ((lp, tg, (6, -5), (3, 2)), {}),
    "lengths_as_tuples_above_T": lambda lp, tg, il, tl: ((lp, tg, (6, 9), (3, 2)), {}),
    # lengths: types and shapes
    "il_float_tensor": lambda lp, tg, il, tl: ((lp, tg, il.double(), tl), {}),
    "il_bool_tensor": lambda lp, tg, il, tl: ((lp, tg, il > 0, tl), {}),
    "il_float_tuple": lambda lp, tg, il, tl: ((lp, tg, (6.0, 5.0), tl), {}),
    "il_wrong_count": lambda lp, tg, il, tl: ((lp, tg, il[:1], tl), {}),
    "il_2d_same_count": lambda lp, tg, il, tl: ((lp, tg, il.view(1, 2), tl), {}),
    "il_column": lambda lp, tg, il, tl: ((lp, tg, il.view(2, 1), tl), {}),
    "il_int32_tl_uint8": lambda lp, tg, il, tl: ((lp, tg, il.int(), tl.to(torch.uint8)), {}),
    "il_expanded": lambda lp, tg, il, tl: ((lp, tg, torch.tensor([5]).expand(2), tl), {}),
    # log_probs: ranks, dtypes, layouts
    "lp_4d": lambda lp, tg, il, tl: ((lp[None], tg, il, tl), {}),
    "lp_1d": lambda lp, tg, il, tl: ((lp[0, 0], tg, il, tl), {}),
    "lp_int64": lambda lp, tg, il, tl: ((lp.long(), tg, il, tl), {}),
    "lp_bool": lambda lp, tg, il, tl: ((lp > -1, tg, il, tl), {}),
    "lp_float16": lambda lp, tg, il, tl: ((lp.half(), tg, il, tl), {}),
    "lp_zero_classes": lambda lp, tg, il, tl: ((lp[..., :0], tg, il, tl), {}),
    "lp_batch_mismatch": lambda lp, tg, il, tl: ((lp[:, :1], tg, il, tl), {}),
    "lp_transposed": lambda lp, tg, il, tl: ((lp.transpose(0, 1).contiguous().transpose(0, 1), tg, il, tl), {}),
    "lp_strided_classes": lambda lp, tg, il, tl: ((torch.stack([lp, lp], 3).flatten(2)[..., ::2], tg, il, tl), {}),
    "lp_expanded_batch": lambda lp, tg, il, tl: ((lp[:, :1].expand(CT, CB, CC), tg, il, tl), {}),
    "lp_nan_step": lambda lp, tg, il, tl: ((lp.index_fill(0, torch.tensor([2]), float("nan")), tg, il, tl), {}),
    "lp_nan_off_path": lambda lp, tg, il, tl: ((lp.index_put((torch.tensor([1]), torch.tensor([1]), torch.tensor([2])), torch.tensor(float("nan"), dtype=F64)), tg, il, tl), {}),
    "lp_nan_past_length": lambda lp, tg, il, tl: ((lp.index_fill(0, torch.tensor([5]), float("nan")), tg, il, tl), {}),
    # targets
    "targets_3d": lambda lp, tg, il, tl: ((lp, tg[None], il, tl), {}),
    "targets_batch_mismatch": lambda lp, tg, il, tl: ((lp, tg[:1], il, tl), {}),
    "targets_expanded": lambda lp, tg, il, tl: ((lp, tg[:1].expand(CB, CS), il, tl), {}),
    "targets_transposed": lambda lp, tg, il, tl: ((lp, tg.t().contiguous().t(), il, tl), {}),
    "targets_int32": lambda lp, tg, il, tl: ((lp, tg.int(), il, tl), {}),
    "targets_on_meta": lambda lp, tg, il, tl: ((lp, tg.to("meta"), il, tl), {}),
    "il_on_meta": lambda lp, tg, il, tl: ((lp, tg, il.to("meta"), tl), {}),
    "targets_empty_concat": lambda lp, tg, il, tl: ((lp, tg[:0, 0], il, torch.tensor([0, 0])), {}),
    # blank and reduction
    "blank_float": lambda lp, tg, il, tl: ((lp, tg, il, tl), dict(blank=0.0)),
    "blank_bool": lambda lp, tg, il, tl: ((lp, tg, il, tl), dict(blank=False)),
    "blank_numpy": lambda lp, tg, il, tl: ((lp, tg, il, tl), dict(blank=np.int64(0))),
    "blank_tensor": lambda lp, tg, il, tl: ((lp, tg, il, tl), dict(blank=torch.tensor(0))),
    "blank_equals_C": lambda lp, tg, il, tl: ((lp, tg, il, tl), dict(blank=CC)),
    "blank_huge": lambda lp, tg, il, tl: ((lp, tg, il, tl), dict(blank=2**40)),
    "reduction_none_value": lambda lp, tg, il, tl: ((lp, tg, il, tl), dict(reduction=None)),
    "log_probs_list": lambda lp, tg, il, tl: ((lp.tolist(), tg, il, tl), {}),
}

# Where fastrnn differs from torch on purpose (python/fastrnn/ctc.py docstring): the documented
# exception type. (Labels out of range or equal to blank are in tests/test_ctc.py.)
CTC_DOCUMENTED = {
    # targets must have an integer dtype; torch casts float targets silently
    "targets_float": (lambda lp, tg, il, tl: ((lp, tg.double(), il, tl), {}), RuntimeError),
    "targets_bool": (lambda lp, tg, il, tl: ((lp, tg > 0, il, tl), {}), RuntimeError),
}

CTC_ENTRIES = {
    "ctc_loss": (fastrnn.ctc_loss, F.ctc_loss),
    "functional.ctc_loss": (fastrnn.functional.ctc_loss, F.ctc_loss),
    "CTCLoss": (lambda *a, **k: fastrnn.CTCLoss(**_module_kwargs(k))(*a),
                lambda *a, **k: nn.CTCLoss(**_module_kwargs(k))(*a)),
    # the fused op takes logits: torch's reference is log_softmax then ctc_loss
    "ctc_loss_from_logits": (fastrnn.ctc_loss_from_logits,
                             lambda lp, *a, **k: F.ctc_loss(
                                 lp.log_softmax(2) if isinstance(lp, torch.Tensor) and lp.dim() == 3
                                 and lp.is_floating_point() else lp, *a, **k)),
}


def _module_kwargs(kwargs):
    return {k: v for k, v in kwargs.items() if k in ("blank", "reduction", "zero_infinity")}


def ctc_loss_and_grad(fn, args, kwargs):
    """(loss per element, gradient of its finite part w.r.t. log_probs) of fn(*args, **kwargs)."""
    lp = args[0]
    if isinstance(lp, torch.Tensor) and lp.is_floating_point():
        lp = lp.detach().requires_grad_()
    kwargs = dict(kwargs)
    kwargs.setdefault("reduction", "none")
    loss = fn(lp, *args[1:], **kwargs)
    if not (isinstance(lp, torch.Tensor) and lp.requires_grad) or kwargs["reduction"] != "none":
        return [loss.detach()]
    finite = torch.isfinite(loss)
    (grad,) = torch.autograd.grad(loss[finite].sum(), lp, allow_unused=True)
    return [loss.detach(), torch.zeros_like(lp) if grad is None else grad]


@pytest.mark.parametrize("entry", list(CTC_ENTRIES))
@pytest.mark.parametrize("case", list(CTC_CASES))
def test_ctc_bad_inputs_like_torch(entry, case, assert_close):
    fast, ref = CTC_ENTRIES[entry]
    args, kwargs = CTC_CASES[case](*ctc_args())
    if entry == "ctc_loss_from_logits" and case == "lp_nan_past_length":
        pytest.skip("the log_softmax of the reference spreads NaN into rows past the length; "
                    "see test_ctc_nan_past_input_length_is_never_read")
    if entry == "CTCLoss" and "reduction" in kwargs and kwargs["reduction"] is None:
        pytest.skip("nn.CTCLoss takes reduction at construction; covered by ctc_loss")
    assert_like_torch(lambda: ctc_loss_and_grad(ref, args, kwargs),
                      lambda: ctc_loss_and_grad(fast, args, kwargs), assert_close)


@pytest.mark.parametrize("entry", list(CTC_ENTRIES))
@pytest.mark.parametrize("case", list(CTC_DOCUMENTED))
def test_ctc_documented_differences(entry, case):
    make, exc = CTC_DOCUMENTED[case]
    fast, ref = CTC_ENTRIES[entry]
    args, kwargs = make(*ctc_args())
    assert not isinstance(outcome(lambda: ref(*args, **kwargs)), Exception)  # torch accepts
    with pytest.raises(exc):
        fast(*args, **kwargs)


@pytest.mark.parametrize("from_logits", [False, True])
@pytest.mark.parametrize("target_lengths", [[0, 0], [2, 0]])
def test_ctc_empty_input_documented(from_logits, target_lengths):
    """T = 0 or B = 0: torch raises ("log_probs tensor must not be empty"); fastrnn returns what
    the definition gives: loss 0 for an empty target, inf (0 with zero_infinity) otherwise, an
    empty loss for an empty batch, and a zero gradient of the right shape."""
    fn = fastrnn.ctc_loss_from_logits if from_logits else fastrnn.ctc_loss
    lp = torch.zeros(0, 2, CC, dtype=F64, requires_grad=True)
    targets, lengths = torch.ones(2, 2, dtype=torch.int64), torch.tensor(target_lengths)
    zeros = torch.zeros(2, dtype=torch.int64)
    assert isinstance(outcome(lambda: F.ctc_loss(lp, targets, zeros, lengths)), RuntimeError)
    loss = fn(lp, targets, zeros, lengths, reduction="none")
    want = torch.tensor([0.0 if n == 0 else float("inf") for n in target_lengths], dtype=F64)
    assert torch.equal(loss, want)
    zeroed = fn(lp, targets, zeros, lengths, reduction="sum", zero_infinity=True)
    (grad,) = torch.autograd.grad(zeroed, lp)
    assert zeroed.item() == 0 and grad.shape == lp.shape
    empty = torch.zeros(4, 0, CC, dtype=F64, requires_grad=True)
    no_lengths = torch.zeros(0, dtype=torch.int64)
    assert isinstance(outcome(lambda: F.ctc_loss(empty, targets[:0], no_lengths, no_lengths)),
                      RuntimeError)
    assert fn(empty, targets[:0], no_lengths, no_lengths, reduction="none").shape == (0,)


@pytest.mark.parametrize("from_logits", [False, True])
def test_ctc_impossible_alignment_documented(from_logits, assert_close):
    """An impossible target: loss inf like torch, gradient zero where torch's is NaN."""
    lp, targets, _, tl = ctc_args()
    il = torch.tensor([2, 5])  # element 0 needs 4 steps for labels 1 2 2
    fast = fastrnn.ctc_loss_from_logits if from_logits else fastrnn.ctc_loss
    x = lp.detach().requires_grad_()
    loss = fast(x, targets, il, tl, reduction="none")
    (grad,) = torch.autograd.grad(loss[1], x)  # only the finite loss gets a gradient ...
    want = F.ctc_loss(x, targets, il, tl, reduction="none")
    assert_close(loss.detach(), want.detach())
    assert torch.isinf(loss[0])
    (grad_all,) = torch.autograd.grad(fast(x, targets, il, tl, reduction="sum"), x)
    assert torch.isfinite(grad_all).all()  # ... and the infinite one adds zeros, never NaN
    assert_close(grad_all, grad)


@pytest.mark.parametrize("from_logits", [False, True])
def test_ctc_nan_past_input_length_is_never_read(from_logits):
    """Rows at or past an element's input length are padding: NaN there changes nothing, and their
    gradient is 0 (for logits too, where log_softmax-then-torch would spread the NaN)."""
    fn = fastrnn.ctc_loss_from_logits if from_logits else fastrnn.ctc_loss
    lp, targets, il, tl = ctc_args()
    poisoned = lp.index_fill(0, torch.tensor([5]), float("nan"))  # element 1 has length 5
    clean = ctc_loss_and_grad(fn, (lp.index_fill(0, torch.tensor([5]), 0.0), targets, il, tl), {})
    got = ctc_loss_and_grad(fn, (poisoned, targets, il, tl), {})
    assert torch.isnan(got[0][0]) and torch.equal(got[0][1], clean[0][1])
    assert torch.isnan(got[1][:, 0]).all()
    assert torch.equal(got[1][:, 1], clean[1][:, 1]) and not got[1][5, 1].any()


def test_ctc_neg_inf_log_prob_gets_zero_gradient_documented(assert_close):
    """A class with log-probability -inf: torch's gradient there is NaN (-inf - -inf inside its
    formula), fastrnn's is the true gradient, 0; everything else is torch's."""
    lp, targets, il, tl = ctc_args()
    x = lp.index_fill(2, torch.tensor([2]), float("-inf")).requires_grad_()  # on element 0's path
    got = ctc_loss_and_grad(fastrnn.ctc_loss, (x, targets, il, tl), {})
    want = ctc_loss_and_grad(F.ctc_loss, (x, targets, il, tl), {})
    assert_close(got[0], want[0])
    torch_nan = torch.isnan(want[1])
    assert torch_nan.any(), "precondition: torch gives NaN there"
    assert torch.equal(got[1][torch_nan], torch.zeros_like(got[1][torch_nan]))
    assert_close(got[1][~torch_nan], want[1][~torch_nan])


# --------------------------------------------------------------------------------------------------
# Decoders: what ctc_loss rejects, they reject with the same type; views decode like copies
# --------------------------------------------------------------------------------------------------

DECODE_CASES = {
    "il_negative": dict(input_lengths=[-1, 5]),
    "il_above_T": dict(input_lengths=[7, 5]),
    "il_float_tensor": dict(input_lengths=torch.tensor([6.0, 5.0])),
    "il_float_tuple": dict(input_lengths=(6.0, 5.0)),
    "il_wrong_count": dict(input_lengths=[6]),
    "blank_float": dict(blank=0.0),
    "blank_bool": dict(blank=False),
    "blank_equals_C": dict(blank=CC),
    "blank_negative": dict(blank=-1),
}
DECODE_INPUTS = {
    "lp_int64": lambda lp: lp.long(),
    "lp_bool": lambda lp: lp > -1,
    "lp_4d": lambda lp: lp[None],
    "lp_zero_classes": lambda lp: lp[..., :0],
}
DECODERS = {"greedy": fastrnn.ctc_greedy_decode, "beam": fastrnn.ctc_beam_search}


def _ctc_error_type(log_probs, **kwargs):
    lp, targets, il, tl = ctc_args()
    il = kwargs.pop("input_lengths", il)
    exc = outcome(lambda: fastrnn.ctc_loss(log_probs, targets, il, tl, **kwargs))
    assert isinstance(exc, Exception), "precondition: ctc_loss rejects this argument"
    return type(exc)


@pytest.mark.parametrize("decoder", list(DECODERS))
@pytest.mark.parametrize("case", list(DECODE_CASES))
def test_decoder_arguments_rejected_like_ctc_loss(decoder, case):
    lp = ctc_args()[0]
    kwargs = DECODE_CASES[case]
    with pytest.raises(_ctc_error_type(lp, **dict(kwargs))):
        DECODERS[decoder](lp, **kwargs)


@pytest.mark.parametrize("decoder", list(DECODERS))
@pytest.mark.parametrize("case", list(DECODE_INPUTS))
def test_decoder_inputs_rejected_like_ctc_loss(decoder, case):
    lp = DECODE_INPUTS[case](ctc_args()[0])
    with pytest.raises(_ctc_error_type(lp)):
        DECODERS[decoder](lp)


@pytest.mark.parametrize("decoder", list(DECODERS))
def test_decoder_views_and_edge_shapes(decoder):
    decode = DECODERS[decoder]
    lp = ctc_args()[0].float()
    views = [lp[:, :1].expand(CT, 3, CC), lp.transpose(0, 1).contiguous().transpose(0, 1),
             torch.stack([lp, lp], 3).flatten(2)[..., ::2]]
    for view in views:
        assert not view.is_contiguous()
        same_decoding(decode(view, input_lengths=torch.tensor([5]).expand(view.shape[1])),
                      decode(view.contiguous(), input_lengths=[5] * view.shape[1]))
    # lengths given as a (1, B) tensor, like ctc_loss (and torch) accept
    same_decoding(decode(lp, input_lengths=torch.tensor([[6, 4]])), decode(lp, input_lengths=[6, 4]))
    # T = 0 decodes to empty label sequences, B = 0 to an empty batch
    empty_t = decode(torch.zeros(0, 2, CC))
    assert (empty_t[0] if decoder == "greedy" else [h[0][0] for h in empty_t]) == [[], []]
    empty_b = decode(torch.zeros(4, 0, CC))
    assert (empty_b[0] if decoder == "greedy" else empty_b) == []


def same_decoding(a, b):
    """Greedy results are (labels, scores tensor); beam results are nested lists."""
    if isinstance(a, tuple):
        assert a[0] == b[0] and torch.equal(a[1], b[1])
    else:
        assert a == b


# ---- Weights replaced behind the module ------------------------------------------------------
# `param.data = t` swaps a weight's tensor without swapping the Parameter, so no check at
# construction sees it. torch's kernels mostly fail on a wrong shape with RuntimeError, but
# broadcast a one-element bias and (oneDNN's LSTM) read some wrong shapes unchecked; fastrnn
# raises RuntimeError naming the weight for every shape that is not the module's, on every path
# (README, "Behaviour that differs from torch on purpose"). Before the check, the inference path
# read past such a weight's end.

WEIGHT_MODULES = {
    "rnn": (nn.RNN, {}),
    "gru_2layer_bidir": (nn.GRU, dict(num_layers=2, bidirectional=True)),
    "lstm_proj": (nn.LSTM, dict(proj_size=3)),
}


def _grown(shape):
    return tuple(s + 1 for s in shape)


@pytest.mark.parametrize("grad", [False, True], ids=["no_grad", "grad"])
@pytest.mark.parametrize("module", list(WEIGHT_MODULES))
def test_weight_of_wrong_shape_raises_naming_it(module, grad):
    torch_cls, kwargs = WEIGHT_MODULES[module]
    ref, mod = make_pair(torch_cls, 5, 4, **kwargs)
    x = torch.randn(3, 2, 5)
    names = mod._flat_weights_names
    for name in names:
        for shape in (_grown(getattr(mod, name).shape), (1,)):
            _, mod = make_pair(torch_cls, 5, 4, **kwargs)
            mod.eval()
            getattr(mod, name).data = torch.randn(shape)
            with torch.set_grad_enabled(grad), pytest.raises(RuntimeError, match=f"{name} has"):
                mod(x)


@pytest.mark.parametrize("grad", [False, True], ids=["no_grad", "grad"])
@pytest.mark.parametrize("torch_cls", [nn.RNNCell, nn.LSTMCell, nn.GRUCell],
                         ids=lambda c: c.__name__)
def test_cell_weight_of_wrong_shape_raises_naming_it(torch_cls, grad):
    x = torch.randn(2, 5)
    for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
        _, mod = make_pair(torch_cls, 5, 4)
        getattr(mod, name).data = torch.randn(_grown(getattr(mod, name).shape))
        with torch.set_grad_enabled(grad), pytest.raises(RuntimeError, match=f"{name} has"):
            mod(x)


def test_weight_replaced_with_right_shape_is_used(assert_close):
    """The other side of the check: a replacement of the right shape is read, on both paths."""
    ref, mod = make_pair(nn.GRU, 5, 4)
    new = torch.randn(12, 4)
    ref.weight_hh_l0.data, mod.weight_hh_l0.data = new.clone(), new.clone()
    x = torch.randn(3, 2, 5)
    with torch.no_grad():
        assert_close(mod(x)[0], ref(x)[0], torch.float32)
    assert_close(mod(x)[0], ref(x)[0], torch.float32)
