"""Shared plumbing for the examples: command line, the fastrnn/torch switch, a progress bar,
timing, running one experiment with either or both implementations, and saving plots.

Every example defines ``experiment(impl, args, init) -> Result`` that builds its models with
``rnn_module(kind, impl, ...)``, passes each through ``init.apply(name, model)`` and times its
training with a ``Stopwatch``; ``run_experiments`` runs it for ``--impl`` or, with ``--compare``,
for both implementations from the same initial weights and prints the times side by side.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List

import torch

import fastrnn

IMPLS = ("fastrnn", "torch")
RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def make_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--impl", choices=IMPLS, default="fastrnn",
                        help="recurrent modules from fastrnn or from torch.nn (default: fastrnn)")
    parser.add_argument("--compare", action="store_true",
                        help="train with both implementations from the same initial weights and "
                             "print both times")
    parser.add_argument("--quick", action="store_true",
                        help="a tiny run of a few seconds (for smoke tests), not a result")
    parser.add_argument("--out", default=RESULTS_DIR,
                        help="directory for the plot (default: examples/results)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch.set_num_threads (default: torch's choice)")
    return parser


def rnn_module(kind: str, impl: str, *args, **kwargs) -> torch.nn.Module:
    """``fastrnn.<kind>`` or ``torch.nn.<kind>`` (kind: RNN, LSTM, GRU or one of the cells), built
    with the same arguments; fastrnn's classes are torch's with another forward, so they take the
    same constructor arguments and have the same parameters."""
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")
    namespace = fastrnn if impl == "fastrnn" else torch.nn
    return getattr(namespace, kind)(*args, **kwargs)


class InitialWeights:
    """Makes every implementation start from the same weights: the first model built under a name
    records its initial state_dict, later models under that name (the other implementation's) load
    it."""

    def __init__(self) -> None:
        self._states: Dict[str, dict] = {}

    def apply(self, name: str, model: torch.nn.Module) -> torch.nn.Module:
        if name in self._states:
            model.load_state_dict(self._states[name])
        else:
            self._states[name] = copy.deepcopy(model.state_dict())
        return model


class Stopwatch:
    """Accumulates wall time over the ``with`` blocks it guards (training steps, not evaluation)."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def __enter__(self) -> "Stopwatch":
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.seconds += time.perf_counter() - self._start


class Progress:
    """A progress bar on stderr: ``for step in Progress(n, "label"): ...; bar.show(loss=...)``.

    On a terminal it redraws one line (at most 10 times a second); otherwise (a log file, a pipe)
    it prints a line at every quarter of the way, so logs stay short.
    """

    WIDTH = 24

    def __init__(self, total: int, desc: str = "", stream=None) -> None:
        self.total = max(int(total), 1)
        self.desc = desc
        self.stream = stream if stream is not None else sys.stderr
        self.interactive = getattr(self.stream, "isatty", lambda: False)()
        self.done = 0
        self.metrics: Dict[str, float] = {}
        self._start = time.perf_counter()
        self._last_draw = 0.0
        self._last_quarter = 0

    def __iter__(self):
        for step in range(self.total):
            yield step
            self.done = step + 1
            self._maybe_draw()
        self._draw(final=True)

    def show(self, **metrics: float) -> None:
        """Metrics shown after the bar from now on."""
        self.metrics.update(metrics)

    def _maybe_draw(self) -> None:
        if self.interactive:
            if time.perf_counter() - self._last_draw >= 0.1 or self.done == self.total:
                self._draw()
        else:
            quarter = self.done * 4 // self.total
            if quarter != self._last_quarter and self.done < self.total:
                self._last_quarter = quarter
                self._draw()

    def _draw(self, final: bool = False) -> None:
        self._last_draw = time.perf_counter()
        elapsed = self._last_draw - self._start
        filled = self.done * self.WIDTH // self.total
        bar = "#" * filled + "." * (self.WIDTH - filled)
        if final:
            timing = f"{elapsed:.1f}s"
        else:
            rate = self.done / elapsed if elapsed > 0 else 0.0
            eta = (self.total - self.done) / rate if rate > 0 else 0.0
            timing = f"{elapsed:.0f}s<{eta:.0f}s"
        shown = " ".join(f"{k}={_fmt(v)}" for k, v in self.metrics.items())
        line = f"{self.desc} [{bar}] {self.done}/{self.total} {timing} {shown}".rstrip()
        if self.interactive:
            self.stream.write("\r\x1b[K" + line + ("\n" if final else ""))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


@dataclass
class Result:
    """What one training run reports: its timed seconds, final metrics (printed side by side under
    --compare) and anything else the example plots (curves, samples)."""

    train_seconds: float
    metrics: Dict[str, float]
    extra: dict = field(default_factory=dict)


Experiment = Callable[[str, argparse.Namespace, InitialWeights], Result]


def run_experiments(args: argparse.Namespace, experiment: Experiment) -> Dict[str, Result]:
    """Runs ``experiment`` for ``args.impl``, or for both implementations under ``--compare``
    (same seed, same initial weights), and prints the times and final metrics."""
    if args.threads:
        torch.set_num_threads(args.threads)
    impls: List[str] = list(IMPLS) if args.compare else [args.impl]
    init = InitialWeights()
    results: Dict[str, Result] = {}
    for impl in impls:
        torch.manual_seed(args.seed)
        results[impl] = experiment(impl, args, init)
    print(f"\nthreads: {torch.get_num_threads()}")
    names = list(results[impls[0]].metrics)
    width = max([len(n) for n in names] + [len("training time (s)")])
    print(f"{'':{width}}  " + "  ".join(f"{impl:>10}" for impl in impls))
    print(f"{'training time (s)':{width}}  "
          + "  ".join(f"{results[impl].train_seconds:10.2f}" for impl in impls))
    for name in names:
        print(f"{name:{width}}  " + "  ".join(f"{_fmt(results[impl].metrics[name]):>10}"
                                            for impl in impls))
    if args.compare:
        ratio = results["torch"].train_seconds / results["fastrnn"].train_seconds
        print(f"speedup (torch time / fastrnn time): {ratio:.2f}x")
    return results


def save_figure(fig, args: argparse.Namespace, filename: str) -> str:
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, filename)
    fig.savefig(path, dpi=90, bbox_inches="tight")
    print(f"plot: {path}")
    return path


# Line style per implementation: with --compare both are drawn on the same axes.
IMPL_STYLES = {"fastrnn": "-", "torch": "--"}


def curves(results: Dict[str, "Result"]):
    """(training curve, line style, label suffix) for each implementation that ran."""
    for impl, result in results.items():
        yield (result.extra["curve"], IMPL_STYLES[impl],
               f" ({impl})" if len(results) > 1 else "")


def pyplot():
    """matplotlib.pyplot on the non-interactive backend (the examples only write files)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt
