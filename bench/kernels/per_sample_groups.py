"""Per-sample weight gradients (torch.func ``vmap(grad(loss))``) with the CPU core's weight groups
(one backward for all samples) against one backward per sample, the rule before session 18,
which this script restores by patching _EagerRnnBackward's vmap rule. One process, the two
rules alternating, three rounds; prints min-max ms of each and their largest relative
difference.

    python bench/kernels/per_sample_groups.py [--samples 64] [--steps 50] [--threads 2]
"""

import argparse
import statistics
import time

import torch
from torch.func import functional_call, grad, vmap

import fastrnn
from fastrnn import _batching, _ops

GROUPED = _ops._EagerRnnBackward.vmap


def one_backward_per_sample(info, in_dims, config, *args):
    """The rule with weight gradients asked for, as it was: one native backward per sample."""
    if config[7]:  # weight_grad
        return _batching.per_sample(_ops._EagerRnnBackward.apply, info.batch_size, in_dims,
                                    (config, *args))
    return GROUPED(info, in_dims, config, *args)


def median_ms(fn, repeats=11):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--samples", type=int, default=64)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    for name in ("LSTM", "GRU", "RNN"):
        module = getattr(fastrnn, name)(64, 128)
        params = {k: v.detach() for k, v in module.named_parameters()}
        xs = torch.randn(a.samples, a.steps, 1, 64)
        per_sample_grads = vmap(grad(lambda p, x: functional_call(module, p, (x,))[0].sum()),
                                in_dims=(None, 0))
        times, results = {"per sample": [], "grouped": []}, {}
        for _ in range(3):
            for key, rule in (("per sample", one_backward_per_sample), ("grouped", GROUPED)):
                _ops._EagerRnnBackward.vmap = staticmethod(rule)
                results[key] = per_sample_grads(params, xs)
                times[key].append(median_ms(lambda: per_sample_grads(params, xs)))
        _ops._EagerRnnBackward.vmap = staticmethod(GROUPED)
        diff = max(((results["grouped"][k] - w).abs().max() / w.abs().max()).item()
                   for k, w in results["per sample"].items())
        print(f"{name} {a.samples} x ({a.steps}x1x64x128): one backward per sample "
              f"{min(times['per sample']):.2f}-{max(times['per sample']):.2f} ms, weight groups "
              f"{min(times['grouped']):.2f}-{max(times['grouped']):.2f} ms; max relative "
              f"difference {diff:.1e}")


if __name__ == "__main__":
    main()
