"""CTC loss benchmark: fastrnn vs torch (F.ctc_loss) on the CPU, or on CUDA when asked.

Run from the repository root:
    python bench/bench_ctc.py            # standard shapes, 15 repeats
    python bench/bench_ctc.py --quick    # 3 repeats
    python bench/bench_ctc.py --threads 1  # both implementations single-threaded
    python bench/bench_ctc.py --device cuda
Prints a table (medians, speedup = torch / fastrnn) and writes
bench/results/<device>-<date>-ctc[-quick][-t<threads>].json in the format of DESIGN.md section 5. Inputs are random log-probabilities (never zeros); targets
are random labels of full length. Repeats are interleaved (torch, fastrnn, torch, ...) after a
warm-up of each, so that both see the same machine state.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time

import torch
import torch.nn.functional as F

from fastrnn.ctc import ctc_loss

SHAPES = [(150, 32, 29, 40), (500, 16, 5000, 100), (2000, 8, 32, 500)]  # (T, B, C, S)


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def cpu_flags() -> list[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    wanted = ("avx", "fma", "sse4_2", "neon")
                    return sorted(x for x in line.split(":", 1)[1].split() if x.startswith(wanted))
    except OSError:
        pass
    return []


def make_problem(T, B, C, S, device, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    log_probs = torch.randn(T, B, C, generator=g, dtype=dtype).log_softmax(2).to(device)
    targets = torch.randint(1, C, (B, S), generator=g).to(device)
    input_lengths = torch.full((B,), T, dtype=torch.int64)
    target_lengths = torch.full((B,), S, dtype=torch.int64)
    return log_probs, targets, input_lengths, target_lengths


def timed(fn, device) -> float:
    """Milliseconds of one call (CUDA: events on the current stream)."""
    if device == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        return start.elapsed_time(end)
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1e3


def runner(impl, mode, problem):
    log_probs, targets, il, tl = problem
    loss_fn = F.ctc_loss if impl == "torch" else ctc_loss
    if mode == "fwd":
        def run():
            with torch.no_grad():
                loss_fn(log_probs, targets, il, tl)
    else:
        leaf = log_probs.detach().requires_grad_()

        def run():
            leaf.grad = None
            loss_fn(leaf, targets, il, tl).backward()
    return run


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="3 repeats instead of 15")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    ap.add_argument("--threads", type=int, default=None,
                    help="torch.set_num_threads for both implementations (default: torch's)")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                  "results"))
    args = ap.parse_args(argv)
    repeats = args.repeats or (3 if args.quick else 15)
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    device = args.device

    results = []
    header = (f"{'T':>5} {'B':>3} {'C':>5} {'S':>4} {'mode':>7} {'torch ms':>10} "
              f"{'fastrnn ms':>11} {'speedup':>8}")
    print(f"threads={torch.get_num_threads()} device={device} dtype={args.dtype} repeats={repeats}")
    print(header)
    for T, B, C, S in SHAPES:
        problem = make_problem(T, B, C, S, device, dtype)
        for mode in ("fwd", "fwdbwd"):
            runs = {impl: runner(impl, mode, problem) for impl in ("torch", "fastrnn")}
            for run in runs.values():  # warm-up
                run()
            times = {impl: [] for impl in runs}
            for _ in range(repeats):
                for impl, run in runs.items():
                    times[impl].append(timed(run, device))
            med = {impl: statistics.median(ts) for impl, ts in times.items()}
            print(f"{T:>5} {B:>3} {C:>5} {S:>4} {mode:>7} {med['torch']:>10.2f} "
                  f"{med['fastrnn']:>11.2f} {med['torch'] / med['fastrnn']:>7.2f}x")
            for impl, ts in times.items():
                results.append({
                    "impl": impl, "op": "ctc", "mode": mode, "device": device,
                    "dtype": args.dtype, "shape": {"T": T, "B": B, "C": C, "S": S},
                    "packed": False, "min_ms": min(ts), "median_ms": statistics.median(ts),
                    "max_ms": max(ts),
                })

    gpu = torch.cuda.get_device_name() if device == "cuda" else None
    meta = {
        "device": device,
        "cpu": cpu_model(),
        "cpu_flags": cpu_flags(),
        "gpu": gpu,
        "torch": torch.__version__,
        "cudnn": str(torch.backends.cudnn.version()) if device == "cuda" else None,
        "threads": torch.get_num_threads(),
        "command": " ".join([os.path.basename(sys.executable)] + sys.argv),
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
    }
    os.makedirs(args.out, exist_ok=True)
    suffix = ("-quick" if args.quick else "") + (f"-t{args.threads}" if args.threads else "")
    name = f"{device}-{datetime.date.today():%Y%m%d}-ctc{suffix}.json"
    path = os.path.join(args.out, name)
    with open(path, "w") as f:
        json.dump({"meta": meta, "results": results}, f, indent=1)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
