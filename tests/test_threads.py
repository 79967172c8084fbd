"""The CPU thread pool under concurrent callers: several Python threads running forward and
backward at once (the GIL is released during native work) get the same bits as one at a time."""

import threading
import warnings

import torch
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

import fastrnn


def _run(module, x):
    out, (h, c) = module(x)
    grads = torch.autograd.grad(out.sum() + h.sum() + c.sum(), [x, *module.parameters()])
    return (out, h, c) + grads


def _concurrent_results_equal_serial(jobs, rounds=3):
    """Runs every job (a function returning tensors) once alone, then all of them at once from
    their own threads, `rounds` times each; every concurrent result must be the serial bits."""
    expected = [job() for job in jobs]
    mismatches = []
    errors = []

    def worker(i):
        try:
            for r in range(rounds):
                got = jobs[i]()
                if not all(torch.equal(a, b) for a, b in zip(got, expected[i], strict=True)):
                    mismatches.append((i, r))
        except Exception as exc:  # surfaced below, never swallowed
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a worker hung"
    assert not errors, errors
    assert not mismatches, f"(job, round) pairs that differ from the serial bits: {mismatches}"


def test_concurrent_callers_get_serial_results():
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        # Big enough that the recurrence and the GEMMs use the thread pool.
        modules = [fastrnn.LSTM(16, 72, bidirectional=True) for _ in range(4)]
        inputs = [torch.randn(6, 20, 16, requires_grad=True) for _ in modules]
        _concurrent_results_equal_serial(
            [lambda m=m, x=x: _run(m, x) for m, x in zip(modules, inputs)])
    finally:
        torch.set_num_threads(previous)


def test_concurrent_mixed_callers_get_serial_results():
    """Different cells, packed input and CTC at the same time, forward and backward."""
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        gru = fastrnn.GRU(16, 96, num_layers=2)
        rnn = fastrnn.RNN(16, 128, nonlinearity="relu", bidirectional=True)
        x = torch.randn(8, 24, 16, requires_grad=True)
        lengths = torch.arange(24, 0, -1).clamp(max=8)
        log_probs = torch.randn(50, 6, 20).log_softmax(2).requires_grad_()
        targets = torch.randint(1, 20, (6, 12))

        def run_module(module, inp):
            out, h = module(inp)
            data = out.data if isinstance(out, PackedSequence) else out
            grads = torch.autograd.grad(data.sum() + h.sum(), [x, *module.parameters()])
            return (data, h) + grads

        def run_ctc():
            loss = fastrnn.ctc_loss(log_probs, targets, torch.full((6,), 50),
                                    torch.arange(7, 13), reduction="none")
            return (loss,) + torch.autograd.grad(loss.sum(), log_probs)

        _concurrent_results_equal_serial([lambda: run_module(gru, pack_padded_sequence(x, lengths)),
                                          lambda: run_module(rnn, x), run_ctc])
    finally:
        torch.set_num_threads(previous)


def test_concurrent_inference_gets_serial_results():
    """Without autograd the forward skips the op and takes its workspace from a per-thread
    scratch buffer (small workspaces) or a fresh allocation (large ones): streamed steps and
    whole sequences from several threads at once must still get the serial bits."""
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        lstm = fastrnn.LSTM(32, 64, num_layers=2)
        gru = fastrnn.GRU(128, 256, bidirectional=True)  # workspace over the scratch's 1 MiB
        steps = torch.randn(40, 1, 3, 32)

        @torch.no_grad()
        def stream():
            state, outs = None, []
            for step in steps:
                out, state = lstm(step, state)
                outs.append(out)
            return (torch.cat(outs), *state)

        @torch.no_grad()
        def sequence(module, x):
            out, state = module(x)
            return (out, *state) if isinstance(state, tuple) else (out, state)

        jobs = [stream, stream, lambda: sequence(lstm, steps.flatten(1, 2)),
                lambda: sequence(lstm, steps.flatten(1, 2).flip(0)),
                lambda: sequence(gru, torch.ones(20, 16, 128))]
        _concurrent_results_equal_serial(jobs, rounds=20)
    finally:
        torch.set_num_threads(previous)


def _child_forward(queue):
    torch.set_num_threads(2)
    module = fastrnn.LSTM(16, 72)
    with torch.no_grad():
        queue.put(float(module(torch.randn(6, 20, 16))[0].abs().sum()))


def test_pool_works_in_a_forked_child():
    import multiprocessing

    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with torch.no_grad():  # start the parent's workers before forking
            fastrnn.LSTM(16, 72)(torch.randn(6, 20, 16))
        ctx = multiprocessing.get_context("fork")
        queue = ctx.Queue()
        child = ctx.Process(target=_child_forward, args=(queue,))
        with warnings.catch_warnings():
            # Python >= 3.12 warns about forking a multi-threaded process: that is the point here.
            warnings.simplefilter("ignore", DeprecationWarning)
            child.start()
        child.join(timeout=120)
        if child.is_alive():
            child.kill()
        assert child.exitcode == 0, "the forked child failed or hung"
        assert queue.get(timeout=5) > 0
    finally:
        torch.set_num_threads(previous)
