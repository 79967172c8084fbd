"""Size limits: sequences longer than 65,535 steps, index arithmetic past 2^31, and workspaces that
cannot be allocated (a clear error, never a crash).

Why these and not a real run with more than 2^31 elements in one buffer: that needs > 8 GiB per
float32 buffer (and torch's reference as much again). Instead:
- the descriptor's size arithmetic is checked past 2^31 (and 2^32) rows against Python's exact
  integers, and sizes that could overflow int64 are refused;
- every index in the CPU core is int64 (csrc/cpu/recurrence.h, gemm.h, ctc*: audited; products
  of sizes are int64 * int64), and the opt-in large-memory test below runs a real problem whose
  reserve passes 2^31 bytes (FASTRNN_LARGE_MEMORY_TESTS=1, about 4 GiB).
"""

import os

import pytest
import torch
import torch.nn as nn

import fastrnn
from fastrnn import _C
from pairs import make_pair

LONG_T = 70_000  # > 65,535: past a 16-bit step counter and CUDA's grid y/z limit


def _outputs_and_grads(module, x, h0, chunks=1):
    """(output, h_n, [c_n], grad x, grad h0, grad params) of module over x, run whole or as
    `chunks` consecutive pieces with the state carried from one to the next (autograd flows
    through the carried state, so the gradients are those of the whole sequence)."""
    is_lstm = isinstance(module, nn.LSTM)
    state = (h0, h0 * 0.5) if is_lstm else h0
    outs = []
    for piece in x.chunk(chunks, 0):
        out, state = module(piece, state)
        outs.append(out)
    out = torch.cat(outs)
    final = list(state) if is_lstm else [state]
    weights = torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view(out.shape)
    loss = (out * weights).sum() + sum(s.sum() for s in final)
    grads = torch.autograd.grad(loss, [x, h0] + list(module.parameters()))
    return [out.detach()] + [s.detach() for s in final] + list(grads)


@pytest.mark.slow
@pytest.mark.parametrize("cls", [fastrnn.LSTM, fastrnn.GRU], ids=["lstm", "gru"])
def test_sequence_longer_than_65535_steps_cpu(cls, assert_close):
    """The whole sequence in one call equals the same sequence in four pieces of 17,500 steps
    (well inside what the rest of the suite checks against torch), forward and backward.
    torch itself needs minutes for this length on CPU, so the pieces are the reference. (On CUDA,
    where cuDNN is fast, tests/test_rnn_cuda.py compares this length with torch directly.)"""
    module = cls(2, 3, bidirectional=False, dtype=torch.float64)
    x = torch.randn(LONG_T, 2, 2, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(1, 2, 3, dtype=torch.float64, requires_grad=True)
    whole = _outputs_and_grads(module, x, h0)
    pieces = _outputs_and_grads(module, x, h0, chunks=4)
    for a, b in zip(whole, pieces):
        assert_close(a, b)


# --------------------------------------------------------------------------------------------------
# Index arithmetic past 2^31, at the descriptor (no memory needed)
# --------------------------------------------------------------------------------------------------

CELLS = [_C.CellKind.RNN_TANH, _C.CellKind.LSTM, _C.CellKind.GRU]


def _desc(cell, seq_len, batch, batch_sizes=(), hidden=64, input_size=32, layers=2, dirs=2,
          proj=0):
    return _C.RnnDesc(cell=cell, num_layers=layers, num_directions=dirs, input_size=input_size,
                      hidden_size=hidden, proj_size=proj, has_bias=True, seq_len=seq_len,
                      batch=batch, batch_sizes=list(batch_sizes))


@pytest.mark.parametrize("cell", CELLS, ids=str)
def test_row_counts_past_2_31_are_exact(cell):
    padded = _desc(cell, seq_len=2**20, batch=2**13)  # 2^33 rows
    assert padded.total_rows == 2**33
    sizes = [2**16 + 5] * 40_000 + [3] * 25_000  # 65,000 steps, packed, about 2^31.3 rows
    packed = _desc(cell, seq_len=len(sizes), batch=sizes[0], batch_sizes=sizes)
    assert packed.total_rows == sum(sizes) > 2**31


@pytest.mark.parametrize("pass_", [_C.Pass.Forward, _C.Pass.Inference, _C.Pass.Backward],
                         ids=str)
@pytest.mark.parametrize("dtype", [_C.DType.float32, _C.DType.float64], ids=str)
@pytest.mark.parametrize("cell", CELLS, ids=str)
def test_workspace_size_is_exact_past_2_31(cell, dtype, pass_):
    """The workspace is an affine function of the number of rows N once N exceeds the GEMM block
    sizes, so its size at N = 2^33 + 7 must be exactly what the slope measured at small N
    predicts: a 32-bit product anywhere in the size computation would break that."""
    def ws(rows):  # one step of `rows` sequences (many steps would need a T-entry offset table)
        return _desc(cell, seq_len=1, batch=rows).workspace_elems(pass_, dtype)
    small = 10_000
    slope = ws(small + 1) - ws(small)
    assert slope > 0
    big = 2**33 + 7
    assert ws(big) == ws(small) + slope * (big - small)
    # the reserve is linear in N with a per-row size that does not depend on N
    per_row = _desc(cell, seq_len=1, batch=big).reserve_elems_per_row
    assert per_row == _desc(cell, seq_len=1, batch=small).reserve_elems_per_row > 0


@pytest.mark.parametrize("sizes", [
    dict(seq_len=2**40, batch=2**20),            # rows alone near 2^60
    dict(seq_len=2**20, batch=2**20, hidden=2**30),
    dict(seq_len=1, batch=1, hidden=2**40),      # weights alone past 2^62
], ids=["rows", "rows_x_hidden", "hidden"])
def test_sizes_that_would_overflow_int64_are_refused(sizes):
    with pytest.raises(ValueError, match="too large"):
        _desc(_C.CellKind.LSTM, **sizes)


# --------------------------------------------------------------------------------------------------
# A workspace or reserve that cannot be allocated: a clear error from the allocator, no crash
# --------------------------------------------------------------------------------------------------

def test_unallocatable_reserve_is_a_clear_error():
    """An LSTM with a projection keeps its weights small while every row of the reserve needs
    about 12.6M values: 2^24 rows need 2^49.6 bytes, beyond any address space. torch's allocator
    refuses (RuntimeError) before anything is written, and the module still works afterwards.
    Under autograd: inference (no_grad) keeps no reserve."""
    hidden = 2**20
    module = fastrnn.LSTM(1, hidden, proj_size=1, bidirectional=True)
    per_row = _C.RnnDesc(cell=_C.CellKind.LSTM, num_layers=1, num_directions=2, input_size=1,
                         hidden_size=hidden, proj_size=1, has_bias=True, seq_len=0,
                         batch=0).reserve_elems_per_row
    rows = 2**24
    assert rows * per_row * 4 > 2**48  # bytes: more than a 48-bit address space holds
    x = torch.empty(rows, 1, 1)  # never read: the reserve's allocation fails first
    with pytest.raises((RuntimeError, MemoryError), match="(?i)alloc|memory"):
        module(x)
    with torch.no_grad():
        out, _ = module(torch.randn(3, 2, 1))
    assert out.shape == (3, 2, 2) and torch.isfinite(out).all()


# --------------------------------------------------------------------------------------------------
# Opt-in: a real run whose reserve passes 2^31 bytes (about 4 GiB of memory)
# --------------------------------------------------------------------------------------------------

@pytest.mark.skipif(os.environ.get("FASTRNN_LARGE_MEMORY_TESTS") != "1",
                    reason="needs about 4 GiB; set FASTRNN_LARGE_MEMORY_TESTS=1")
def test_reserve_past_2_31_bytes_matches_torch_on_sampled_sequences(assert_close):
    """RNN forward over T x B = 4100 x 8192 rows: the reserve passes 2^31 bytes, the output 1 GiB.
    Batch elements are independent, so the first, a middle and the last sequence (whose rows sit
    at the ends of every buffer) are checked against torch run on those three alone."""
    torch.manual_seed(0)
    ref, mod = make_pair(nn.RNN, 1, 8)
    T, B = 4100, 8192
    x = torch.randn(T, B, 1)
    with torch.no_grad():
        out, h_n = mod(x)
        assert B * T * _C.RnnDesc(cell=_C.CellKind.RNN_TANH, num_layers=1, num_directions=1,
                                  input_size=1, hidden_size=8, proj_size=0, has_bias=True,
                                  seq_len=0, batch=0).reserve_elems_per_row * 4 > 2**31
        picked = torch.tensor([0, B // 2 + 1, B - 1])
        want_out, want_h = ref(x[:, picked])
    assert_close(out[:, picked], want_out)
    assert_close(h_n[:, picked], want_h)
