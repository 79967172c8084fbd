"""Peak memory and time of one no-grad forward over a long sequence at batch 1.

    python bench/kernels/inference_memory.py ours 200000
    python bench/kernels/inference_memory.py torch 200000

Run each in a fresh process: peak RSS only grows, so the growth measured is this call's."""
import resource
import sys
import time

import torch

import fastrnn


def main():
    which, steps = sys.argv[1], int(sys.argv[2])
    module = (fastrnn.LSTM if which == "ours" else torch.nn.LSTM)(64, 128)
    x = torch.randn(steps, 1, 64)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    with torch.no_grad():
        out, _ = module(x)
    seconds = time.perf_counter() - start
    grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024
    print(f"{which} LSTM(64, 128), T={steps}, B=1, no grad: {seconds * 1e3:.0f} ms, peak RSS grew "
          f"{grown:.0f} MiB (the output itself: {out.numel() * 4 / 2**20:.0f} MiB)")


if __name__ == "__main__":
    main()
