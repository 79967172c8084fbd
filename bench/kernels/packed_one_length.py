"""PackedSequences of one length (one sequence, or equal lengths) on the modules' fast path
against the general path, which took them before session 19 (restored here by making
``_stream_packed`` decline), and torch. One process, the three alternating, three rounds;
prints min-max us per call of each, no grad (fwd) and forward+backward of every parameter and
the input (fwdbwd), and checks that both paths give the same bits.

    python bench/kernels/packed_one_length.py [--steps 67] [--threads 2]
"""

import argparse
import statistics
import timeit

import torch
from torch.nn.utils.rnn import PackedSequence, pack_sequence

import fastrnn
from fastrnn.modules import _FastRNNBase

FAST = _FastRNNBase._stream_packed


def median_us(fn, repeats=201):
    timeit.repeat(fn, number=1, repeat=10)  # warm-up
    return statistics.median(timeit.repeat(fn, number=1, repeat=repeats)) * 1e6


def call(module, packed, hx, backward):
    """module(packed, hx) under no_grad, or with a backward through the output's data."""
    if not backward:
        with torch.no_grad():
            return module(packed, hx)[0].data
    for p in module.parameters():
        p.grad = None
    out = module(packed, hx)[0].data
    out.sum().backward()
    return out.detach()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=67)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"{args.threads} threads, {args.steps} steps, (64 -> 128), us per call, min-max of 3 "
          f"rounds of medians: fast path / general path / torch")
    for name in ("LSTM", "GRU", "RNN"):
        ours, ref = getattr(fastrnn, name)(64, 128), getattr(torch.nn, name)(64, 128)
        ref.load_state_dict(ours.state_dict())
        for batch in (1, 16):
            data = pack_sequence([torch.randn(args.steps, 64) for _ in range(batch)])
            packed = PackedSequence(data.data.requires_grad_(), data.batch_sizes)
            h0 = torch.randn(1, batch, 128)
            hx = (h0, torch.randn(1, batch, 128)) if name == "LSTM" else h0
            for backward in (False, True):
                fast = call(ours, packed, hx, backward)
                _FastRNNBase._stream_packed = lambda *a: None
                try:
                    assert torch.equal(fast, call(ours, packed, hx, backward))
                finally:
                    _FastRNNBase._stream_packed = FAST
                rounds = {"fast": [], "general": [], "torch": []}
                for _ in range(3):
                    rounds["fast"].append(median_us(lambda: call(ours, packed, hx, backward)))
                    _FastRNNBase._stream_packed = lambda *a: None
                    try:
                        rounds["general"].append(
                            median_us(lambda: call(ours, packed, hx, backward)))
                    finally:
                        _FastRNNBase._stream_packed = FAST
                    rounds["torch"].append(median_us(lambda: call(ref, packed, hx, backward)))
                cells = " / ".join(f"{min(t):7.0f}-{max(t):<7.0f}" for t in rounds.values())
                print(f"{name:4s} B={batch:<3d} {'fwdbwd' if backward else 'fwd   '}  {cells}")


if __name__ == "__main__":
    main()
