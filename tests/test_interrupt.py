"""Native work releases the GIL, and a KeyboardInterrupt during a long call leaves the process
usable.

Ctrl-C during a native call: Python's C-level handler only sets a flag; the native call runs to
its end (it cannot be cancelled halfway, which is also what keeps its buffers consistent), and
KeyboardInterrupt is raised at the next Python bytecode. What must hold afterwards: the thread
pool and the modules still work and still give torch's results. That runs in a child process so
that the signal cannot reach pytest itself.
"""

import json
import subprocess
import sys
import textwrap
import threading
import time

import torch

import fastrnn

CHILD = textwrap.dedent(r"""
    import json, os, signal, threading, time
    import torch
    import fastrnn

    torch.manual_seed(0)
    torch.set_num_threads(2)
    ref = torch.nn.LSTM(16, 128)
    mod = fastrnn.LSTM(16, 128)
    mod.load_state_dict(ref.state_dict())
    long_input = torch.randn(10000, 8, 16)
    report = {}
    for phase in ("forward", "backward"):
        x = long_input.clone().requires_grad_(phase == "backward")
        out = mod(x)[0] if phase == "backward" else None

        def interrupt():
            time.sleep(0.05)
            os.kill(os.getpid(), signal.SIGINT)

        timer = threading.Thread(target=interrupt)
        timer.start()
        in_call = True
        try:
            if phase == "forward":
                with torch.no_grad():
                    mod(x)
            else:
                out.sum().backward()
            in_call = False
            while timer.is_alive():  # a call that beat the timer: take the signal here
                time.sleep(0.01)
            report[phase] = "no KeyboardInterrupt"
        except KeyboardInterrupt:
            report[phase] = "interrupted" if in_call else "interrupted after the call"
        timer.join()
    # The same process afterwards: forward and backward still agree with torch.
    x = torch.randn(30, 4, 16, requires_grad=True)
    results = []
    for m in (ref, mod):
        out, (h, c) = m(x)
        grads = torch.autograd.grad(out.sum() + h.sum() + c.sum(), [x] + list(m.parameters()))
        results.append([out, h, c, *grads])
    report["max_difference_after"] = max(float((a - b).abs().max())
                                         for a, b in zip(results[1], results[0]))
    print(json.dumps(report))
""")


def test_keyboard_interrupt_during_native_call_leaves_process_usable():
    child = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True,
                           timeout=600)
    assert child.returncode == 0, child.stderr
    report = json.loads(child.stdout.strip().splitlines()[-1])
    for phase in ("forward", "backward"):
        # raised by the long call itself (so the signal came while it ran)
        assert report[phase] == "interrupted", report
    assert report["max_difference_after"] < 1e-4, report


def _python_progress_during(call):
    """How far a pure-Python counter thread gets while call() runs, relative to how far it gets
    in the same time on its own: about 1 when the call releases the GIL, about 0 when it holds it."""
    count = [0]
    stop = threading.Event()

    def counter():
        while not stop.is_set():
            count[0] += 1

    worker = threading.Thread(target=counter)
    worker.start()
    try:
        begin, t0 = count[0], time.perf_counter()
        time.sleep(0.3)
        rate_alone = (count[0] - begin) / (time.perf_counter() - t0)
        begin, t0 = count[0], time.perf_counter()
        call()
        during = count[0] - begin
        elapsed = time.perf_counter() - t0
    finally:
        stop.set()
        worker.join()
    assert elapsed > 0.2, "precondition: the native call should take a while"
    return during / (rate_alone * elapsed)


def test_gil_released_during_native_work():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)  # leave a core to the Python thread
    try:
        module = fastrnn.LSTM(16, 192)
        x = torch.randn(12000, 4, 16)
        lp = torch.randn(4000, 8, 50).log_softmax(2)
        targets = torch.randint(1, 50, (8, 600))
        lengths = torch.full((8,), 4000), torch.full((8,), 600)
        with torch.no_grad():
            rnn = _python_progress_during(lambda: module(x))
            ctc = _python_progress_during(lambda: fastrnn.ctc_loss(lp, targets, *lengths))
    finally:
        torch.set_num_threads(previous)
    # Holding the GIL would leave the counter a few switch intervals (5 ms each) at most.
    assert rnn > 0.25, f"Python made {rnn:.0%} of its progress during the RNN call"
    assert ctc > 0.25, f"Python made {ctc:.0%} of its progress during the CTC call"
