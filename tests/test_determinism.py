"""Determinism as the design promises it (README, docs/design-notes.md): the same inputs give
bitwise-identical outputs and gradients on repeated runs and for any thread count, for every
cell, padded and packed, bidirectional, and the cells. (CTC across runs and thread counts is in
tests/test_ctc.py; across instruction sets results differ by rounding, which is not promised.)

Sizes are chosen so that both the recurrence (B*O*G*H >= 2^15) and the GEMMs (M*N*K >= 64^3)
are split across threads, so the thread-count comparison is not vacuous; streamed steps (a few
rows, unpacked weights) split from 2^18 multiply-adds per product and have a test of their own.
"""

import pytest
import torch
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

import fastrnn

T, B, I, H = 12, 16, 32, 96
MODES = {
    "rnn_tanh": (fastrnn.RNN, dict(nonlinearity="tanh")),
    "rnn_relu": (fastrnn.RNN, dict(nonlinearity="relu")),
    "lstm": (fastrnn.LSTM, {}),
    "lstm_proj": (fastrnn.LSTM, dict(proj_size=48)),
    "gru": (fastrnn.GRU, {}),
}
THREAD_COUNTS = (1, 2, 1, 2)  # and back: repeated runs at each count


def run_with_threads(threads, fn):
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return fn()
    finally:
        torch.set_num_threads(previous)


def flat_outputs(result):
    """[output (a PackedSequence's data), h_n(, c_n)] of a module's (output, state)."""
    out, state = result
    out = out.data if isinstance(out, PackedSequence) else out
    return [out] + (list(state) if isinstance(state, tuple) else [state])


def outputs_and_grads(module, x):
    """A module's outputs on x and the gradients of their sum with respect to x and its
    parameters, detached."""
    outs = flat_outputs(module(x))
    grads = torch.autograd.grad(sum(o.sum() for o in outs), [x] + list(module.parameters()))
    return [o.detach() for o in outs] + list(grads)


def assert_bitwise_equal(runs):
    for run in runs[1:]:
        assert len(run) == len(runs[0])
        for i, (a, b) in enumerate(zip(run, runs[0])):
            assert torch.equal(a, b), f"tensor {i} differs between runs"


@pytest.mark.parametrize("form", ["padded", "packed"])
@pytest.mark.parametrize("mode", list(MODES))
def test_sequence_modules_bitwise_across_runs_and_threads(mode, form):
    cls, extra = MODES[mode]
    module = cls(I, H, num_layers=2, bidirectional=True, **extra)
    x = torch.randn(T, B, I, requires_grad=True)
    lengths = torch.randint(1, T + 1, (B,))
    lengths[0] = T
    O = extra.get("proj_size", H)
    h0 = torch.randn(4, B, O, requires_grad=True)
    c0 = torch.randn(4, B, H, requires_grad=True)
    states = [h0, c0] if cls is fastrnn.LSTM else [h0]
    hx = tuple(states) if cls is fastrnn.LSTM else h0

    def run():
        inp = pack_padded_sequence(x, lengths, enforce_sorted=False) if form == "packed" else x
        outs = flat_outputs(module(inp, hx))
        loss = sum((o * (i + 1.5)).sum() for i, o in enumerate(outs))
        grads = torch.autograd.grad(loss, [x] + states + list(module.parameters()))
        return [o.detach() for o in outs] + list(grads)

    assert_bitwise_equal([run_with_threads(n, run) for n in THREAD_COUNTS])


@pytest.mark.parametrize("cls", [fastrnn.RNNCell, fastrnn.LSTMCell, fastrnn.GRUCell],
                         ids=lambda c: c.__name__)
def test_cells_bitwise_across_runs_and_threads(cls):
    cell = cls(I, 2 * H)
    x = torch.randn(64, I, requires_grad=True)
    h = torch.randn(64, 2 * H, requires_grad=True)

    def run():
        out = cell(x, (h, h * 0.5) if cls is fastrnn.LSTMCell else h)
        outs = list(out) if isinstance(out, tuple) else [out]
        grads = torch.autograd.grad(sum(o.sum() for o in outs), [x, h] + list(cell.parameters()))
        return [o.detach() for o in outs] + list(grads)

    assert_bitwise_equal([run_with_threads(n, run) for n in THREAD_COUNTS])


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("T_steps", [1, 4])
def test_streamed_steps_bitwise_across_runs_and_threads(mode, T_steps):
    """A few rows (T_steps x batch 1) and H=300: the unpacked products (the input projection and
    the recurrent step, over 2^18 multiply-adds each) are split over two threads."""
    cls, extra = MODES[mode]
    extra = dict(extra, proj_size=150) if "proj_size" in extra else extra
    module = cls(300, 300, **extra)
    x = torch.randn(T_steps, 1, 300, requires_grad=True)

    assert_bitwise_equal([run_with_threads(n, lambda: outputs_and_grads(module, x))
                          for n in THREAD_COUNTS])


def test_dropout_bitwise_with_the_same_seed_across_threads():
    module = fastrnn.GRU(I, H, num_layers=3, dropout=0.3, bidirectional=True)
    x = torch.randn(T, B, I, requires_grad=True)

    def run():
        torch.manual_seed(123)
        out, h = module(x)
        grads = torch.autograd.grad(out.sum() + h.sum(), [x] + list(module.parameters()))
        return [out.detach(), h.detach()] + list(grads)

    assert_bitwise_equal([run_with_threads(n, run) for n in THREAD_COUNTS])


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("T_steps,batch,form", [
    (2, 3, "padded"),    # 6 rows: direct mode, every row projected at once
    (13, 3, "packed"),   # one chunk of steps holds the whole sequence
    (13, 16, "padded"),  # chunks of 4 steps, the last one short
    (13, 16, "packed"),  # ... with rows that end inside a chunk
    (5, 70, "padded"),   # one step per chunk
], ids=["direct", "one_chunk", "chunks", "chunks_packed", "step_chunks"])
def test_inference_pass_bitwise_equal_to_training_forward(mode, T_steps, batch, form):
    """Without autograd the CPU core runs its inference pass: input projections chunk by chunk
    into scratch, no reserve. Its outputs must be the training forward's bits, at 1 and 2
    threads: 3 layers (the layer outputs alternate between two buffers), both directions,
    dropout between layers (the same seed gives the same masks)."""
    cls, extra = MODES[mode]
    module = cls(I, H, num_layers=3, bidirectional=True, dropout=0.25, **extra)
    x = torch.randn(T_steps, batch, I)
    lengths = torch.randint(1, T_steps + 1, (batch,))
    lengths[0] = T_steps

    def run(grad):
        torch.manual_seed(7)
        inp = pack_padded_sequence(x, lengths, enforce_sorted=False) if form == "packed" else x
        with torch.set_grad_enabled(grad):
            return [t.detach() for t in flat_outputs(module(inp))]

    for threads in (1, 2):
        training = run_with_threads(threads, lambda: run(True))
        inference = run_with_threads(threads, lambda: run(False))
        assert_bitwise_equal([training, inference])


@pytest.mark.parametrize("mode", list(MODES))
def test_shared_projection_bitwise_across_runs_and_threads(mode):
    """Steps too small for two threads (B*O*G*H < 2^15) with a wide input: each chunk's input
    projection alone is split over the threads, in training and in inference."""
    cls, extra = MODES[mode]
    extra = dict(extra, proj_size=20) if "proj_size" in extra else extra
    module = cls(300, 40, **extra)
    x = torch.randn(70, 3, 300, requires_grad=True)

    def run():
        with torch.no_grad():
            inference = flat_outputs(module(x))
        return outputs_and_grads(module, x) + inference

    assert_bitwise_equal([run_with_threads(n, run) for n in THREAD_COUNTS])
