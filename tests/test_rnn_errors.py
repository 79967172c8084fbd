"""Misuse of fastrnn's modules fails exactly like torch's: same exception type, a message that says
what was expected. Each case runs torch's module and fastrnn's (same weights) on the same bad
arguments; torch must raise (precondition), fastrnn must raise the same type (``type(a) is
type(b)``) with the listed pieces of information in its message.

Also: NaN/inf in the input propagate exactly like torch (same NaN/inf positions in outputs and
gradients) and never crash; unsupported dtypes fail clearly or match torch.
"""

import warnings

import pytest
import torch
import torch.nn as nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

import fastrnn
from pairs import fr_class, make_pair




def quiet(fn):
    """Call fn() with torch's oneDNN projection-fallback warning silenced (torch reference only)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="LSTM with projections is not supported with oneDNN",
                                category=UserWarning)
        return fn()


def raised(fn):
    try:
        fn()
    except Exception as e:  # noqa: BLE001 - the exception itself is what we compare
        return e
    return None


def check_same_error(ref_call, fr_call, must_contain=()):
    rexc = raised(lambda: quiet(ref_call))
    assert rexc is not None, "precondition: torch rejects this call (torch's behaviour changed?)"
    fexc = raised(fr_call)
    assert fexc is not None, f"torch raised {type(rexc).__name__}({rexc}), fastrnn accepted the call"
    assert type(fexc) is type(rexc), (
        f"torch raised {type(rexc).__name__}({rexc}); fastrnn raised {type(fexc).__name__}({fexc})")
    msg = str(fexc)
    for piece in must_contain:
        assert piece.lower() in msg.lower(), f"fastrnn's message {msg!r} does not mention {piece!r}"


# --------------------------------------------------------------------------------------------------
# RNN / LSTM / GRU
# --------------------------------------------------------------------------------------------------

def X(*shape, dtype=torch.float32):
    return torch.randn(shape, dtype=dtype)


# (id, torch class, ctor kwargs, fn(x-factory) -> (input, hx), substrings fastrnn's message must contain)
# Module: input_size=3, hidden_size=4, num_layers=2 (unless kwargs say otherwise).
def _lstm_hx(h, c):
    return (h, c)


SEQ_CASES = []


def seq_case(id, classes, args, must, **kwargs):
    for cls in classes:
        SEQ_CASES.append(pytest.param(cls, kwargs, args, must, id=f"{cls.__name__}-{id}"))


ALL = (nn.RNN, nn.LSTM, nn.GRU)
NON_LSTM = (nn.RNN, nn.GRU)

seq_case("input_4d", ALL, lambda c: (X(2, 5, 2, 3), None), ["2D or 3D", "4D"])
seq_case("input_1d", ALL, lambda c: (X(3), None), ["2D or 3D", "1D"])
seq_case("input_0d", ALL, lambda c: (X(), None), ["2D or 3D", "0D"])
seq_case("feature_size_batched", ALL, lambda c: (X(5, 2, 4), None), ["input_size", "3", "4"])
seq_case("feature_size_unbatched", ALL, lambda c: (X(5, 4), None), ["input_size", "3", "4"])
seq_case("feature_size_batch_first", ALL, lambda c: (X(2, 5, 4), None), ["input_size", "3", "4"], batch_first=True)
seq_case("feature_size_packed", NON_LSTM, lambda c: (pack_padded_sequence(X(5, 2, 4), [5, 3]), None), ["input_size", "3", "4"])
seq_case("feature_size_packed", (nn.LSTM,), lambda c: (pack_padded_sequence(X(5, 2, 4), [5, 3]), None), [])
seq_case("input_dtype_float64", ALL, lambda c: (X(5, 2, 3, dtype=torch.float64), None), ["dtype", "float64", "float32"])
seq_case("input_int64", ALL, lambda c: (torch.randint(0, 3, (5, 2, 3)), None), ["dtype", "int64"])
seq_case("input_bool", ALL, lambda c: (torch.ones(5, 2, 3, dtype=torch.bool), None), ["dtype", "bool"])
seq_case("input_int32_unbatched", ALL, lambda c: (torch.randint(0, 3, (5, 3), dtype=torch.int32), None), ["dtype", "int32"])
seq_case("seq_len_0", ALL, lambda c: (X(0, 2, 3), None), ["sequence length"])
seq_case("seq_len_0_unbatched", ALL, lambda c: (X(0, 3), None), ["sequence length"])
# h0 shape, non-LSTM
seq_case("h0_batch", NON_LSTM, lambda c: (X(5, 2, 3), X(2, 3, 4)), ["(2, 2, 4)", "[2, 3, 4]"])
seq_case("h0_layers", NON_LSTM, lambda c: (X(5, 2, 3), X(1, 2, 4)), ["(2, 2, 4)", "[1, 2, 4]"])
seq_case("h0_hidden", NON_LSTM, lambda c: (X(5, 2, 3), X(2, 2, 5)), ["(2, 2, 4)", "[2, 2, 5]"])
seq_case("h0_bidirectional", NON_LSTM, lambda c: (X(5, 2, 3), X(2, 2, 4)), ["(4, 2, 4)", "[2, 2, 4]"], bidirectional=True)
seq_case("h0_batch_first", NON_LSTM, lambda c: (X(2, 5, 3), X(2, 5, 4)), ["(2, 2, 4)", "[2, 5, 4]"], batch_first=True)
seq_case("h0_packed_batch", NON_LSTM, lambda c: (pack_padded_sequence(X(5, 2, 3), [5, 3]), X(2, 3, 4)), ["(2, 2, 4)", "[2, 3, 4]"])
seq_case("h0_3d_for_unbatched", NON_LSTM, lambda c: (X(5, 3), X(2, 1, 4)), ["2-D", "3-D"])
seq_case("h0_2d_for_batched", NON_LSTM, lambda c: (X(5, 2, 3), X(2, 4)), ["3-D", "2-D"])
seq_case("h0_unbatched_shape", NON_LSTM, lambda c: (X(5, 3), X(2, 5)), ["(2, 1, 4)", "[2, 1, 5]"])
seq_case("h0_dtype", NON_LSTM, lambda c: (X(5, 2, 3), X(2, 2, 4, dtype=torch.float64)), ["dtype"])
seq_case("h0_int", NON_LSTM, lambda c: (X(5, 2, 3), torch.ones(2, 2, 4, dtype=torch.long)), ["dtype"])
seq_case("h0_tuple", NON_LSTM, lambda c: (X(5, 2, 3), (X(2, 2, 4),)), [])
seq_case("h0_list", NON_LSTM, lambda c: (X(5, 2, 3), [X(2, 2, 4), X(2, 2, 4)]), [])
# LSTM states
seq_case("h0_batch", (nn.LSTM,), lambda c: (X(5, 2, 3), (X(2, 3, 4), X(2, 2, 4))), ["(2, 2, 4)", "[2, 3, 4]"])
seq_case("c0_batch", (nn.LSTM,), lambda c: (X(5, 2, 3), (X(2, 2, 4), X(2, 3, 4))), ["(2, 2, 4)", "[2, 3, 4]"])
seq_case("c0_hidden", (nn.LSTM,), lambda c: (X(5, 2, 3), (X(2, 2, 4), X(2, 2, 5))), ["(2, 2, 4)", "[2, 2, 5]"])
seq_case("c0_layers", (nn.LSTM,), lambda c: (X(5, 2, 3), (X(2, 2, 4), X(3, 2, 4))), ["(2, 2, 4)", "[3, 2, 4]"])
seq_case("proj_h0_is_hidden_size", (nn.LSTM,), lambda c: (X(5, 2, 3), (X(2, 2, 4), X(2, 2, 4))), ["(2, 2, 2)", "[2, 2, 4]"], proj_size=2)
seq_case("proj_c0_is_proj_size", (nn.LSTM,), lambda c: (X(5, 2, 3), (X(2, 2, 2), X(2, 2, 2))), ["(2, 2, 4)", "[2, 2, 2]"], proj_size=2)
seq_case("proj_unbatched_h0", (nn.LSTM,), lambda c: (X(5, 3), (X(2, 4), X(2, 4))), ["(2, 1, 2)", "[2, 1, 4]"], proj_size=2)
seq_case("hx_3d_for_unbatched", (nn.LSTM,), lambda c: (X(5, 3), (X(2, 1, 4), X(2, 1, 4))), ["2-D", "3-D"])
seq_case("cx_3d_for_unbatched", (nn.LSTM,), lambda c: (X(5, 3), (X(2, 4), X(2, 1, 4))), ["2-D", "3-D"])
seq_case("hx_2d_for_batched", (nn.LSTM,), lambda c: (X(5, 2, 3), (X(2, 4), X(2, 4))), ["3-D", "2-D"])
seq_case("hx_tensor_not_tuple", (nn.LSTM,), lambda c: (X(5, 2, 3), X(2, 2, 4)), ["3-D"])
seq_case("hx_tensor_not_tuple_L3", (nn.LSTM,), lambda c: (X(5, 2, 3), X(3, 2, 4)), [], num_layers=3)
seq_case("hx_1_tuple", (nn.LSTM,), lambda c: (X(5, 2, 3), (X(2, 2, 4),)), [])
seq_case("hx_3_tuple", (nn.LSTM,), lambda c: (X(5, 2, 3), (X(2, 2, 4),) * 3), ["two"])
seq_case("h0_dtype", (nn.LSTM,), lambda c: (X(5, 2, 3), (X(2, 2, 4, dtype=torch.float64), X(2, 2, 4))), ["dtype"])
seq_case("c0_dtype", (nn.LSTM,), lambda c: (X(5, 2, 3), (X(2, 2, 4), X(2, 2, 4, dtype=torch.float64))), ["dtype"])
seq_case("h0_int", (nn.LSTM,), lambda c: (X(5, 2, 3), (torch.ones(2, 2, 4, dtype=torch.long),) * 2), ["dtype"])
seq_case("input_on_meta", ALL, lambda c: (X(5, 2, 3).to("meta"), None), ["device"])


# Under no_grad the modules take their fast path first (tests/test_inference_path.py), which must
# hand every wrong call to the checks of the general path.
GRAD_MODES = pytest.mark.parametrize("grad", [True, False], ids=["grad", "no_grad"])


@GRAD_MODES
@pytest.mark.parametrize("torch_cls,kwargs,args,must", SEQ_CASES)
def test_sequence_module_errors_like_torch(torch_cls, kwargs, args, must, grad):
    kw = dict(num_layers=2)
    kw.update(kwargs)
    ref, mod = make_pair(torch_cls, 3, 4, **kw)
    inp, hx = args(None)
    with torch.set_grad_enabled(grad):
        check_same_error(lambda: ref(inp, hx), lambda: mod(inp, hx), must)


@pytest.mark.parametrize("torch_cls", [nn.RNN, nn.LSTM, nn.GRU])
def test_dtype_mismatch_float64_module_float32_input(torch_cls):
    ref, mod = make_pair(torch_cls, 3, 4, dtype=torch.float64)
    x = X(5, 2, 3)
    check_same_error(lambda: ref(x), lambda: mod(x), ["dtype", "float32", "float64"])


@pytest.mark.parametrize("torch_cls", [nn.RNN, nn.LSTM, nn.GRU])
def test_failed_call_leaves_module_usable(torch_cls, assert_close):
    ref, mod = make_pair(torch_cls, 3, 4, num_layers=2, batch_first=True)
    with pytest.raises(RuntimeError):
        mod(X(2, 5, 4))
    hbad = X(2, 3, 4)
    with pytest.raises(RuntimeError):
        mod(X(2, 5, 3), (hbad, hbad) if torch_cls is nn.LSTM else hbad)
    assert mod.batch_first is True  # a failing call must not leave attributes modified
    x = X(2, 5, 3)
    ro, mo = ref(x), mod(x)
    assert_close(mo[0], ro[0], torch.float32)


@pytest.mark.parametrize("torch_cls", [nn.RNN, nn.LSTM, nn.GRU])
def test_pack_enforce_sorted_error_and_both_packings_accepted(torch_cls, assert_close):
    """Unsorted lengths with enforce_sorted=True is pack_padded_sequence's error (not fastrnn's);
    fastrnn accepts what both packings produce and gives torch's results for both."""
    ref, mod = make_pair(torch_cls, 3, 4, num_layers=2, bidirectional=True)
    x = X(5, 3, 3)
    with pytest.raises(RuntimeError, match="sorted"):
        pack_padded_sequence(x, [3, 5, 2], enforce_sorted=True)
    unsorted = pack_padded_sequence(x, [3, 5, 2], enforce_sorted=False)
    perm = [1, 0, 2]
    sorted_ = pack_padded_sequence(x[:, perm], [5, 3, 2], enforce_sorted=True)
    out_u, _ = mod(unsorted)
    out_s, _ = mod(sorted_)
    assert isinstance(out_u, PackedSequence) and isinstance(out_s, PackedSequence)
    assert_close(out_u.data, quiet(lambda: ref(unsorted))[0].data, torch.float32)
    assert_close(out_s.data, quiet(lambda: ref(sorted_))[0].data, torch.float32)
    pu, _ = pad_packed_sequence(out_u)
    ps, _ = pad_packed_sequence(out_s)
    assert_close(pu[:, perm], ps, torch.float32)


# --------------------------------------------------------------------------------------------------
# cells
# --------------------------------------------------------------------------------------------------

CELL_CASES = []


def cell_case(id, classes, args, must):
    for cls in classes:
        CELL_CASES.append(pytest.param(cls, args, must, id=f"{cls.__name__}-{id}"))


CELLS = (nn.RNNCell, nn.LSTMCell, nn.GRUCell)


def H(cls, *shape, dtype=torch.float32):
    """A hidden state of `shape` for cell class `cls` (a (h, c) pair for LSTMCell)."""
    h = X(*shape, dtype=dtype)
    return (h, X(*shape, dtype=dtype)) if cls is nn.LSTMCell else h


# Cells: input_size=3, hidden_size=4
cell_case("input_3d", CELLS, lambda c: (X(2, 2, 3), None), ["1D or 2D", "3D"])
cell_case("input_0d", CELLS, lambda c: (torch.tensor(1.0), None), ["1D or 2D", "0D"])
cell_case("input_size_batched", CELLS, lambda c: (X(2, 4), None), ["input_size", "4", "3"])
cell_case("input_size_unbatched", CELLS, lambda c: (X(4), None), ["input_size", "4", "3"])
cell_case("input_dtype_float64", CELLS, lambda c: (X(2, 3, dtype=torch.float64), None), ["dtype"])
cell_case("input_int64", CELLS, lambda c: (torch.randint(0, 3, (2, 3)), None), ["dtype"])
cell_case("input_bool", CELLS, lambda c: (torch.ones(2, 3, dtype=torch.bool), None), ["dtype"])
cell_case("hx_batch_mismatch", CELLS, lambda c: (X(2, 3), H(c, 3, 4)), ["batch size", "2", "3"])
cell_case("hx_hidden_size", CELLS, lambda c: (X(2, 3), H(c, 2, 5)), ["hidden_size", "5", "4"])
cell_case("hx_3d", (nn.RNNCell, nn.GRUCell), lambda c: (X(2, 3), X(1, 2, 4)), ["1D or 2D", "3D"])
cell_case("hx_1d_for_batched", CELLS, lambda c: (X(2, 3), H(c, 4)), ["batch size"])
cell_case("hx_2d_for_unbatched", CELLS, lambda c: (X(3), H(c, 1, 4)), [])
cell_case("hx_dtype", CELLS, lambda c: (X(2, 3), H(c, 2, 4, dtype=torch.float64)), ["dtype"])
cell_case("hx_int", CELLS, lambda c: (X(2, 3), torch.ones(2, 4, dtype=torch.long) if c is not nn.LSTMCell
                                      else (torch.ones(2, 4, dtype=torch.long),) * 2), ["dtype"])
cell_case("cx_batch_mismatch", (nn.LSTMCell,), lambda c: (X(2, 3), (X(2, 4), X(3, 4))), ["batch size", "2", "3"])
cell_case("cx_hidden_size", (nn.LSTMCell,), lambda c: (X(2, 3), (X(2, 4), X(2, 5))), ["hidden_size", "5", "4"])
# (torch 2.13 accepts a float64 cx with float32 h/input in LSTMCell and promotes: not a rejected misuse)
cell_case("hx_tensor_not_tuple", (nn.LSTMCell,), lambda c: (X(2, 3), X(2, 4)), ["tuple"])
cell_case("hx_stacked_tensor_2BH", (nn.LSTMCell,), lambda c: (X(2, 3), X(2, 2, 4)), ["tuple"])
cell_case("hx_1_tuple", (nn.LSTMCell,), lambda c: (X(2, 3), (X(2, 4),)), ["two"])
cell_case("hx_3_tuple", (nn.LSTMCell,), lambda c: (X(2, 3), (X(2, 4),) * 3), ["two"])
cell_case("hx_tuple", (nn.RNNCell, nn.GRUCell), lambda c: (X(2, 3), (X(2, 4),)), [])


@GRAD_MODES
@pytest.mark.parametrize("torch_cls,args,must", CELL_CASES)
def test_cell_errors_like_torch(torch_cls, args, must, grad):
    ref, mod = make_pair(torch_cls, 3, 4)
    inp, hx = args(torch_cls)
    with torch.set_grad_enabled(grad):
        check_same_error(lambda: ref(inp, hx), lambda: mod(inp, hx), must)


@GRAD_MODES
def test_rnncell_bad_nonlinearity_like_torch(grad):
    ref, mod = make_pair(nn.RNNCell, 3, 4)
    ref.nonlinearity = mod.nonlinearity = "sigmoid"
    x = X(2, 3)
    with torch.set_grad_enabled(grad):
        check_same_error(lambda: ref(x), lambda: mod(x), ["sigmoid"])
    # construction: torch's RNNCell defers the check to forward, torch's RNN raises ValueError
    check_same_error(lambda: nn.RNN(3, 4, nonlinearity="sigmoid"),
                     lambda: fastrnn.RNN(3, 4, nonlinearity="sigmoid"), ["sigmoid"])
    fastrnn.RNNCell(3, 4, nonlinearity="sigmoid")  # accepted, like nn.RNNCell


# --------------------------------------------------------------------------------------------------
# NaN / inf propagate like torch, never crash
# --------------------------------------------------------------------------------------------------

def _nonfinite_pattern(t):
    return torch.stack([torch.isnan(t), torch.isposinf(t), torch.isneginf(t)])


@pytest.mark.parametrize("torch_cls,extra", [(nn.RNN, dict(nonlinearity="tanh")), (nn.RNN, dict(nonlinearity="relu")),
                                             (nn.LSTM, {}), (nn.LSTM, dict(proj_size=2)), (nn.GRU, {})],
                         ids=["rnn_tanh", "rnn_relu", "lstm", "lstm_proj", "gru"])
@pytest.mark.parametrize("poison", ["nan", "inf", "-inf", "nan_h0"])
@pytest.mark.parametrize("form", ["padded", "packed"])
def test_nonfinite_inputs_propagate_like_torch(torch_cls, extra, poison, form, assert_close):
    ref, mod = make_pair(torch_cls, 3, 4, num_layers=2, bidirectional=True, dtype=torch.float64, **extra)
    T, B = 5, 3
    x = torch.randn(T, B, 3, dtype=torch.float64)
    Hout = extra.get("proj_size", 4)
    h0 = torch.randn(4, B, Hout, dtype=torch.float64)
    val = {"nan": float("nan"), "inf": float("inf"), "-inf": float("-inf"), "nan_h0": float("nan")}[poison]
    if poison == "nan_h0":
        h0[1, 2, 0] = val  # layer 0 reverse direction, batch element 2
    else:
        x[2, 1, 0] = val  # one element of one sequence, mid-sequence
    x.requires_grad_(True)
    h0.requires_grad_(True)
    c0 = torch.randn(4, B, 4, dtype=torch.float64, requires_grad=True)
    hx = (h0, c0) if torch_cls is nn.LSTM else h0
    lengths = [5, 2, 4]

    results = []
    for m in (ref, mod):
        inp = pack_padded_sequence(x, lengths, enforce_sorted=False) if form == "packed" else x
        out, state = quiet(lambda: m(inp, hx))
        outs = [out.data if isinstance(out, PackedSequence) else out] + (list(state) if isinstance(state, tuple) else [state])
        gen = torch.Generator().manual_seed(5)
        loss = sum((o * torch.randn(o.shape, generator=gen, dtype=o.dtype)).sum() for o in outs)
        leaves = [x, h0] + ([c0] if torch_cls is nn.LSTM else [])
        grads = torch.autograd.grad(loss, leaves + list(m.parameters()))
        results.append([o.detach() for o in outs] + list(grads))
        n_outs = len(outs)
    names = ["output", "h_n", "c_n"][:n_outs] + ["grad x", "grad h0"] + (["grad c0"] if torch_cls is nn.LSTM else []) + [f"grad {n}" for n, _ in ref.named_parameters()]
    for n, a, b in zip(names, results[1], results[0]):
        assert torch.equal(_nonfinite_pattern(a), _nonfinite_pattern(b)), (
            f"{n}: non-finite positions differ: fastrnn NaN at {torch.isnan(a).nonzero().tolist()}, "
            f"torch NaN at {torch.isnan(b).nonzero().tolist()}")
        finite = torch.isfinite(b)
        assert_close(a[finite], b[finite], torch.float64, msg=lambda m, n=n: f"{n}: {m}")


@pytest.mark.parametrize("torch_cls", [nn.RNNCell, nn.LSTMCell, nn.GRUCell])
@pytest.mark.parametrize("poison", ["nan", "inf"])
def test_cell_nonfinite_like_torch(torch_cls, poison):
    ref, mod = make_pair(torch_cls, 3, 4, dtype=torch.float64)
    x = torch.randn(3, 3, dtype=torch.float64)
    x[1, 2] = float(poison)
    outs = []
    for m in (ref, mod):
        o = m(x)
        outs.append(list(o) if isinstance(o, tuple) else [o])
    for a, b in zip(outs[1], outs[0]):
        assert torch.equal(_nonfinite_pattern(a), _nonfinite_pattern(b))
