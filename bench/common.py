"""Shared benchmark helpers: machine description, FLOP counts, timers, peak measurement, output.

Used by bench/run.py. Nothing here imports fastrnn, so these helpers also serve kernel labs.
See DESIGN.md section 5 for the results-file format written by :func:`write_results`.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
import re
import statistics
import sys
import time
from typing import Callable, Dict, List, Optional

import torch

GATES = {"rnn_tanh": 1, "rnn_relu": 1, "gru": 3, "lstm": 4}

# ----------------------------------------------------------------------------------------------
# Machine description (the "meta" block of a results file)
# ----------------------------------------------------------------------------------------------

FLAGS_OF_INTEREST = ("avx2", "avx512f", "fma")


def cpu_info() -> Dict[str, object]:
    """CPU model name and the SIMD flags fastrnn dispatches on, from /proc/cpuinfo where present."""
    model, flags = None, set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, val = line.partition(":")
                key = key.strip()
                if key == "model name" and model is None:
                    model = val.strip()
                elif key in ("flags", "Features") and not flags:
                    flags = set(val.split())
                if model is not None and flags:
                    break
    except OSError:
        pass
    return {"cpu": model or platform.processor() or platform.machine(),
            "cpu_flags": [f for f in FLAGS_OF_INTEREST if f in flags]}


def gpu_info(device: torch.device) -> Dict[str, Optional[str]]:
    if device.type != "cuda":
        return {"gpu": None, "cudnn": None, "cuda": None, "driver": None}
    idx = device.index if device.index is not None else torch.cuda.current_device()
    props = torch.cuda.get_device_properties(idx)
    driver = None
    try:  # the driver version is not exposed by torch; nvidia-smi's proc file has it on Linux
        with open("/proc/driver/nvidia/version") as f:
            m = re.search(r"Kernel Module\s+([\d.]+)", f.read())
            driver = m.group(1) if m else None
    except OSError:
        pass
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    return {"gpu": f"{props.name} (sm_{props.major}{props.minor}, "
                   f"{props.total_memory / 2**30:.0f} GiB, {props.multi_processor_count} SMs)",
            "cudnn": str(cudnn) if cudnn is not None else None,
            "cuda": torch.version.cuda, "driver": driver}


def machine_meta(device: torch.device, threads: int, command: str, extra=None) -> Dict[str, object]:
    meta: Dict[str, object] = {"device": device.type}
    meta.update(cpu_info())
    g = gpu_info(device)
    meta["gpu"] = g["gpu"]
    meta["torch"] = torch.__version__
    meta["cudnn"] = g["cudnn"]
    if device.type == "cuda":
        meta["cuda"] = g["cuda"]
        meta["driver"] = g["driver"]
    meta["threads"] = threads
    meta["python"] = platform.python_version()
    meta["command"] = command
    meta["date"] = _dt.datetime.now().astimezone().isoformat(timespec="seconds")
    if extra:
        meta.update(extra)
    return meta


def load_average() -> Optional[List[float]]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (OSError, AttributeError):
        return None


class CpuMonitor:
    """How busy other processes kept the CPUs between start() and stop(), in cores on average:
    all CPUs' busy time (/proc/stat) minus this process's own CPU time (os.times). Linux only;
    elsewhere it reports None. A value well above 0 means the timings shared the machine."""

    def __init__(self):
        self._t = None

    @staticmethod
    def _sample():
        try:
            with open("/proc/stat") as f:
                v = [int(x) for x in f.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        # user nice system idle iowait irq softirq steal ...
        busy = v[0] + v[1] + v[2] + v[5] + v[6] + (v[7] if len(v) > 7 else 0)
        own = os.times()
        return busy / os.sysconf("SC_CLK_TCK"), own.user + own.system, time.perf_counter()

    def start(self) -> "CpuMonitor":
        self._t = self._sample()
        return self

    def stop(self) -> Optional[float]:
        end = self._sample()
        if self._t is None or end is None:
            return None
        busy, own, wall = (e - s for e, s in zip(end, self._t))
        if wall <= 0:
            return None
        return max(0.0, (busy - own) / wall)


def device_slug(device: torch.device) -> str:
    """Short file-name label for the machine: 'cpu-amd-epyc', 'cuda-nvidia-h200', ..."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        return "cuda-" + _slug(name, 3)
    model = str(cpu_info()["cpu"])
    model = re.sub(r"\(R\)|\(TM\)|CPU|Processor|@.*$|\d+-Core", " ", model)
    return "cpu-" + _slug(model, 3)


def _slug(text: str, words: int) -> str:
    parts = [p for p in re.split(r"[^a-z0-9]+", text.lower()) if p]
    return "-".join(parts[:words]) or "unknown"


# ----------------------------------------------------------------------------------------------
# FLOP counts
# ----------------------------------------------------------------------------------------------

def rnn_flops(op: str, mode: str, rows: int, I: int, H: int, P: int = 0) -> float:
    """Useful FLOPs of one layer, one direction (multiply-add = 2 FLOPs; pointwise math ignored).

    rows = T*B for padded input, sum(lengths) for a PackedSequence (only real rows are computed),
    1 for a single step. G gates (RNN 1, GRU 3, LSTM 4); R = P if proj_size P > 0 else H is the
    width of the recurrent state h.

      forward  = 2*rows*G*H*I        input projection  X @ W_ih^T
               + 2*rows*G*H*R        recurrence        h_{t-1} @ W_hh^T
               + 2*rows*H*P          projection        (LSTM proj_size only) h = W_hr (o*tanh c)
               = 2*rows*G*H*(I+R) + 2*rows*H*P
      backward ~ 2 x forward         (each GEMM gives two: the data gradient and the weight gradient)
      fwdbwd   = 3 x forward
      train    = fwdbwd less the input's data gradient (2*rows*G*H*I), which it does not need
      frozen   = 2 x forward     (the data gradients only: no weight gradient)
    """
    G = GATES[op]
    R = P if P else H
    fwd = 2.0 * rows * G * H * (I + R) + (2.0 * rows * H * P if P else 0.0)
    if mode in ("fwd", "step"):
        return fwd
    if mode == "fwdbwd":
        return 3.0 * fwd
    if mode == "train":
        return 3.0 * fwd - 2.0 * rows * G * H * I
    if mode == "frozen":
        return 2.0 * fwd
    raise ValueError(mode)


# ----------------------------------------------------------------------------------------------
# Timing
# ----------------------------------------------------------------------------------------------

class Timer:
    """Times `inner` back-to-back calls of a function and returns ms per call.

    CPU: wall clock (perf_counter). CUDA: a pair of cuda Events on the current stream, with a
    synchronize before (so earlier work is not counted) and after (to read the events).
    """

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        if self.cuda:
            self.start = torch.cuda.Event(enable_timing=True)
            self.end = torch.cuda.Event(enable_timing=True)

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def __call__(self, fn: Callable[[], object], inner: int = 1) -> float:
        if self.cuda:
            torch.cuda.synchronize()
            self.start.record()
            for _ in range(inner):
                fn()
            self.end.record()
            self.end.synchronize()
            return self.start.elapsed_time(self.end) / inner
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        return (time.perf_counter() - t0) * 1e3 / inner


def summarize(samples: List[float]) -> Dict[str, float]:
    return {"min_ms": min(samples), "median_ms": statistics.median(samples), "max_ms": max(samples)}


def measure_fma_peak(dtype: torch.dtype, threads: int) -> float:
    """Measured multiply-add throughput (GFLOP/s) of the CPU's vectors on `threads` threads,
    from fastrnn's native probe (independent FMA chains in registers, the active ISA): the
    hardware ceiling, which no kernel of this dtype can pass. Raises TypeError for dtypes the
    CPU kernels do not compute in."""
    import fastrnn._C as native
    codes = {torch.float32: native.DType.float32, torch.float64: native.DType.float64}
    if dtype not in codes:
        raise TypeError(f"no FMA probe for {dtype}")
    return native.cpu_fma_peak_gflops(codes[dtype], threads)


def measure_peak(device: torch.device, dtype: torch.dtype = torch.float32,
                 seconds: float = 1.0) -> float:
    """Measured GEMM throughput (GFLOP/s) of torch.matmul at a large square size: a practical
    ceiling for what an RNN kernel of this dtype can reach on this machine with these threads.
    This is *measured sgemm* (or bf16 GEMM) throughput, not the datasheet peak (on CPU,
    measure_fma_peak gives that)."""
    n = 2048 if device.type == "cpu" else 8192
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    c = torch.empty(n, n, device=device, dtype=dtype)
    timer = Timer(device)
    fn = lambda: torch.matmul(a, b, out=c)  # noqa: E731
    for _ in range(2):
        timer(fn)
    best, t_end = math.inf, time.perf_counter() + seconds
    reps = 0
    while reps < 3 or (time.perf_counter() < t_end and reps < 50):
        best = min(best, timer(fn))
        reps += 1
    return 2.0 * n ** 3 / (best * 1e-3) / 1e9


# ----------------------------------------------------------------------------------------------
# Output
# ----------------------------------------------------------------------------------------------

def default_results_path(device: torch.device, what: str) -> str:
    here = os.path.dirname(os.path.abspath(__file__))
    day = _dt.date.today().strftime("%Y%m%d")
    base = os.path.join(here, "results", f"{device_slug(device)}-{day}-{what}")
    path, n = base + ".json", 2
    while os.path.exists(path):  # never overwrite an earlier run of the same day
        path, n = f"{base}-{n}.json", n + 1
    return path


def write_results(path: str, meta: Dict[str, object], results: List[Dict[str, object]]) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)) or ".", exist_ok=True)
    with open(path, "w") as f:
        json.dump({"meta": meta, "results": results}, f, indent=1)
        f.write("\n")


def format_table(header: List[str], rows: List[List[str]], right=()) -> str:
    """Plain-text table; columns whose index is in `right` are right-aligned."""
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]

    def line(cells):
        return "  ".join(str(c).rjust(w) if i in right else str(c).ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths)))

    out = [line(header), line(["-" * w for w in widths])]
    out += [line(r) for r in rows]
    return "\n".join(out)


def command_line() -> str:
    return " ".join([os.path.basename(sys.executable)] + sys.argv)
