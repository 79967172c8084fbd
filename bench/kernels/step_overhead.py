"""Where a streamed step's time goes: one T=1, B=1 call through the module, through
``_ops.run_rnn`` (the general path), and the native call alone, under no_grad; then the module's
forward and forward+backward with autograd, next to torch's module. Then the cells (a decoder
loop's step) at each --batch, the same way. Medians of 7 timeit repeats, microseconds.

    python bench/kernels/step_overhead.py [--cells LSTM,GRU,RNN] [--hidden 128,512]
                                          [--batch 1,16] [--threads 2]
"""

import argparse
import statistics
import timeit

import torch

import fastrnn
from fastrnn import _ops


def per_call_us(fn, number):
    return statistics.median(timeit.repeat(fn, number=number, repeat=7)) / number * 1e6


def native_call(module, x, state):
    """The native forward alone, on buffers prepared once (what the kernels cost): the call
    the module's StreamPlan makes, without its checks and allocations."""
    plan = module._stream_plan(x)
    h0, c0 = plan.states(state)
    weights = plan.weights(module._parameters)
    out, hy, cy = plan.run(x, weights, h0, c0)
    scratch = _ops._scratch_buffer(plan._workspace_bytes[_ops._C.Pass.Inference])
    addresses = (x.data_ptr(), [w.data_ptr() for w in weights], _ops._ptr(h0), _ops._ptr(c0),
                 [], out.data_ptr(), hy.data_ptr(), _ops._ptr(cy), 0, scratch.data_ptr(),
                 torch.get_num_threads())
    # The addresses are plain ints: the tensors behind them must outlive the timing.
    keep_alive = (x, h0, c0, out, hy, cy, scratch)
    return lambda: _ops._C.rnn_forward(plan._desc, plan._dtype, *addresses), keep_alive


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cells", default="LSTM,GRU,RNN")
    p.add_argument("--hidden", default="128,512")
    p.add_argument("--batch", default="1,16", help="batch sizes of the cell rows")
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    print(f"torch {torch.__version__}, {a.threads} threads; us per call, median of 7")
    print(f"{'cell':5} {'H':>4} | no grad: {'module':>7} {'run_rnn':>8} {'native':>7} "
          f"{'torch':>7} | grad: {'fwd':>6} {'torch':>6} {'fwd+bwd':>8} {'torch':>7}")
    for cell in a.cells.split(","):
        for H in (int(h) for h in a.hidden.split(",")):
            ours, theirs = getattr(fastrnn, cell)(H, H), getattr(torch.nn, cell)(H, H)
            theirs.load_state_dict(ours.state_dict())
            x = torch.randn(1, 1, H)
            state = ((torch.randn(1, 1, H), torch.randn(1, 1, H)) if cell == "LSTM"
                     else torch.randn(1, 1, H))
            n = max(200, 200_000 // H)
            with torch.no_grad():
                hx, cx = state if cell == "LSTM" else (state, None)
                args = (x, ours._flat_weights, hx, cx, None, [], ours.mode, 1, False, 0, True)
                module_us = per_call_us(lambda: ours(x, state), n)
                run_rnn_us = per_call_us(lambda: _ops.run_rnn(*args), n)
                call, _buffers = native_call(ours, x, state)
                native_us = per_call_us(call, n)
                torch_us = per_call_us(lambda: theirs(x, state), n)
            xg = x.clone().requires_grad_()
            grad = [per_call_us(lambda m=m: m(xg, state), n // 4) for m in (ours, theirs)]
            both = [per_call_us(lambda m=m: m(xg, state)[0].sum().backward(), n // 4)
                    for m in (ours, theirs)]
            print(f"{cell:5} {H:>4} | {'':8} {module_us:7.1f} {run_rnn_us:8.1f} {native_us:7.1f} "
                  f"{torch_us:7.1f} | {'':5} {grad[0]:6.1f} {grad[1]:6.1f} {both[0]:8.1f} "
                  f"{both[1]:7.1f}")
    print(f"\n{'cell':9} {'H':>4} {'B':>3} | no grad: {'fastrnn':>7} {'torch':>7} | grad: "
          f"{'fwd':>6} {'torch':>6} {'fwd+bwd':>8} {'torch':>7}")
    for cell in a.cells.split(","):
        for H in (int(h) for h in a.hidden.split(",")):
            for B in (int(b) for b in a.batch.split(",")):
                print(f"{cell + 'Cell':9} {H:>4} {B:>3} | " + cell_row(cell, H, B))


def cell_row(cell, H, B):
    """The cell's step (torch's and fastrnn's, same weights), without and with autograd."""
    ours, theirs = getattr(fastrnn, cell + "Cell")(H, H), getattr(torch.nn, cell + "Cell")(H, H)
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(B, H)
    state = (torch.randn(B, H), torch.randn(B, H)) if cell == "LSTM" else torch.randn(B, H)
    n = max(100, 100_000 // (H * B))
    first = (lambda r: r[0]) if cell == "LSTM" else (lambda r: r)
    with torch.no_grad():
        plain = [per_call_us(lambda m=m: m(x, state), n) for m in (ours, theirs)]
    xg = x.clone().requires_grad_()
    grad = [per_call_us(lambda m=m: m(xg, state), n // 4) for m in (ours, theirs)]
    both = [per_call_us(lambda m=m: first(m(xg, state)).sum().backward(), n // 4)
            for m in (ours, theirs)]
    return (f"{'':8} {plain[0]:7.1f} {plain[1]:7.1f} | {'':5} {grad[0]:6.1f} {grad[1]:6.1f} "
            f"{both[0]:8.1f} {both[1]:7.1f}")


if __name__ == "__main__":
    main()
