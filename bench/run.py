"""fastrnn benchmark suite: fastrnn.{LSTM,GRU,RNN} against torch.nn's on whatever device is here.

    python bench/run.py                  # full suite on cuda if available, else cpu
    python bench/run.py --quick          # two smallest CPU shapes, 5 repeats (< 1 min on 2 cores)
    python bench/run.py --peak           # also measure sgemm GFLOP/s and print % of it
    python bench/run.py --ops lstm --modes fwd,fwdbwd --shapes '100x64x*' --repeats 11
    python bench/run.py --self           # torch against itself (noise floor; no fastrnn needed)

Modes (DESIGN.md section 5):
  fwd     forward under torch.no_grad(), random initial state
  fwdbwd  forward + backward of (out * g).sum() for a fixed random g; input and parameters
          require grad (their .grad is reset before each call)
  train   fwdbwd with an input that needs no gradient (data, as a first layer sees it)
  step    single-step latency: T=1, B=1, I=H, the state returned by one call passed into the next,
          under torch.no_grad(); reported per step
  frozen  fwdbwd with every parameter frozen: the input's and states' gradients only (--modes
          frozen; not in the default run)

Method: both modules hold the same weights (load_state_dict). Each configuration is first checked
(fastrnn's outputs, final states and, for fwdbwd, input and parameter gradients against torch's;
fp32 tolerance 1e-4 relative to the reference's scale); a configuration that does not match is
reported as MISMATCH and never timed. The check is the first warm-up call; at least one more
warm-up call of each follows (--warmup counts both, minimum 2), then --repeats
samples, fastrnn and torch interleaved (alternating which goes first). A sample times `inner`
back-to-back calls (chosen in warm-up so a sample lasts about --sample-ms), wall clock on CPU,
CUDA events on GPU. min/median/max over samples; the table shows medians.

Output: a progress line per configuration, then the table (last), and the raw JSON in
bench/results/<device>-<yyyymmdd>-<what>.json (format in DESIGN.md section 5) plus a PNG of the
speedups next to it when matplotlib is installed.
"""

from __future__ import annotations

import argparse
import fnmatch
import math
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
from plot import plot_speedups  # noqa: E402

# ----------------------------------------------------------------------------------------------
# Standard shapes (DESIGN.md section 5): keep them stable so results compare across versions.
# ----------------------------------------------------------------------------------------------

CPU_SHAPES = [(100, 1, 64, 128), (100, 16, 256, 256), (100, 64, 512, 512), (50, 64, 1024, 1024)]
CPU_PROJ_SHAPES = CPU_SHAPES[1:3]            # LSTM proj_size = H/2 at the middle shapes
GPU_SHAPES = [(1024, B, H, H) for H in (256, 768, 1024) for B in (1, 16, 64, 256)]
GPU_PROJ_SHAPES = [(1024, 16, 768, 768), (1024, 64, 768, 768)]
GPU_HEADLINE = (1024, 16, 768, 768)
STEP_HIDDEN = (128, 512)                      # step: T=1, B=1, I=H
BUSY_CORES = 0.25                             # other processes' CPU use that marks a row noisy
STEP_STATE_STEPS = 8                          # steps run (and compared) by the step check

ALL_OPS = ("lstm", "gru", "rnn_tanh", "rnn_relu")
# train: forward + backward with an input that needs no gradient (data, as a first layer sees it):
# parameter and state gradients only. frozen: forward + backward with every parameter frozen
# (requires_grad False): the input's and the states' gradients only. Not run unless asked for.
ALL_MODES = ("fwd", "fwdbwd", "train", "step", "frozen")
DEFAULT_MODES = ("fwd", "fwdbwd", "train", "step")
BACKWARD_MODES = ("fwdbwd", "train", "frozen")
INPUT_GRAD_MODES = ("fwdbwd", "frozen")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16,
          "float64": torch.float64}


@dataclass
class Config:
    op: str
    mode: str
    T: int
    B: int
    I: int
    H: int
    P: int = 0
    dtype: str = "float32"
    packed: bool = False
    rows: int = 0                              # real rows: T*B, or sum(lengths) when packed
    lengths: Optional[torch.Tensor] = field(default=None, repr=False)

    @property
    def label(self) -> str:
        s = f"{self.T}x{self.B}x{self.I}x{self.H}"
        return s + (f"/P{self.P}" if self.P else "")

    def shape(self) -> Dict[str, int]:
        d = {"T": self.T, "B": self.B, "I": self.I, "H": self.H}
        if self.P:
            d["P"] = self.P
        if self.packed:
            d["rows"] = self.rows
        return d

    def flops(self) -> float:
        return common.rnn_flops(self.op, self.mode, self.rows, self.I, self.H, self.P)


# ----------------------------------------------------------------------------------------------
# Configurations
# ----------------------------------------------------------------------------------------------

def build_configs(args, device: torch.device) -> List[Config]:
    gpu = device.type == "cuda"
    if gpu:
        shapes, proj_shapes = list(GPU_SHAPES), list(GPU_PROJ_SHAPES)
        if args.quick:
            shapes = [(1024, 1, 256, 256), GPU_HEADLINE]
            proj_shapes = [GPU_HEADLINE]
    else:
        shapes, proj_shapes = list(CPU_SHAPES), list(CPU_PROJ_SHAPES)
        if args.quick:
            shapes = CPU_SHAPES[:2]
            proj_shapes = [s for s in proj_shapes if s in shapes]
    step_shapes = [(1, 1, H, H) for H in STEP_HIDDEN]

    def wanted(T, B, I, H, P=0):
        if not args.shapes:
            return True
        label = f"{T}x{B}x{I}x{H}" + (f"/P{P}" if P else "")
        return any(fnmatch.fnmatchcase(label, pat) or fnmatch.fnmatchcase(label.split("/")[0], pat)
                   for pat in args.shapes)

    def lengths(T, B):
        """Packed lengths, uniform in [T/4, T]: a function of (seed, T, B) only, so every run
        (whatever the filters) times the same batches."""
        gen = torch.Generator().manual_seed(args.seed * 1_000_003 + T * 10_007 + B)
        return torch.randint(max(1, T // 4), T + 1, (B,), generator=gen)

    out: List[Config] = []
    for dtype in args.dtypes:
        for op in args.ops:
            for mode in args.modes:
                if mode == "step":
                    for (T, B, I, H) in step_shapes:
                        if wanted(T, B, I, H):
                            out.append(Config(op, mode, T, B, I, H, dtype=dtype, rows=1))
                    continue
                for (T, B, I, H) in shapes:
                    if not wanted(T, B, I, H):
                        continue
                    out.append(Config(op, mode, T, B, I, H, dtype=dtype, rows=T * B))
                    if args.packed:
                        ln = lengths(T, B)
                        out.append(Config(op, mode, T, B, I, H, dtype=dtype, packed=True,
                                          rows=int(ln.sum()), lengths=ln))
                    if op == "lstm" and args.proj and (T, B, I, H) in proj_shapes \
                            and wanted(T, B, I, H, H // 2):
                        out.append(Config(op, mode, T, B, I, H, P=H // 2, dtype=dtype,
                                          rows=T * B))
    return out


# ----------------------------------------------------------------------------------------------
# Modules, inputs, calls
# ----------------------------------------------------------------------------------------------

TORCH_CLASSES = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn_tanh": nn.RNN, "rnn_relu": nn.RNN}


def module_kwargs(cfg: Config) -> Dict[str, object]:
    kw: Dict[str, object] = {"input_size": cfg.I, "hidden_size": cfg.H}
    if cfg.op.startswith("rnn_"):
        kw["nonlinearity"] = cfg.op[4:]
    if cfg.P:
        kw["proj_size"] = cfg.P
    return kw


def fastrnn_classes(self_baseline: bool):
    if self_baseline:
        return dict(TORCH_CLASSES)
    import fastrnn
    return {"lstm": fastrnn.LSTM, "gru": fastrnn.GRU, "rnn_tanh": fastrnn.RNN,
            "rnn_relu": fastrnn.RNN}


@dataclass
class Inputs:
    """The data a configuration runs on, in the module's dtype and device (one copy per impl for
    the gradient leaves, so the two implementations never share .grad)."""
    x: object                       # Tensor [T,B,I] or PackedSequence
    leaf: Optional[torch.Tensor]    # the tensor whose .grad fwdbwd produces (None otherwise)
    hx: object                      # h0 or (h0, c0)
    g: Optional[torch.Tensor]       # upstream gradient for fwdbwd, shaped like the output data
    steps: Optional[torch.Tensor]   # step mode: [K, 1, 1, I] inputs cycled through


def make_data(cfg: Config, device: torch.device, dtype: torch.dtype, seed: int) -> Dict:
    """Random normal data (never zeros), made once per configuration in float32 on CPU with a
    fixed seed, then cast; every implementation gets the same values."""
    gen = torch.Generator().manual_seed(seed)
    R = cfg.P or cfg.H
    d = {"x": torch.randn(cfg.T, cfg.B, cfg.I, generator=gen),
         "h0": 0.5 * torch.randn(1, cfg.B, R, generator=gen),
         "c0": 0.5 * torch.randn(1, cfg.B, cfg.H, generator=gen),
         "steps": torch.randn(64, 1, 1, cfg.I, generator=gen)}
    if cfg.packed:
        packed = pack_padded_sequence(d["x"], cfg.lengths, enforce_sorted=False)
        d["packed"] = packed
        d["g"] = torch.randn(packed.data.shape[0], R, generator=gen)
    else:
        d["g"] = torch.randn(cfg.T, cfg.B, R, generator=gen)
    return d


def make_inputs(cfg: Config, data: Dict, device: torch.device, dtype: torch.dtype) -> Inputs:
    to = lambda t: t.to(device=device, dtype=dtype)  # noqa: E731
    hx = (to(data["h0"]), to(data["c0"])) if cfg.op == "lstm" else to(data["h0"])
    leaf = None
    if cfg.packed:
        p = data["packed"]
        pdata = to(p.data)
        if cfg.mode in INPUT_GRAD_MODES:
            leaf = pdata = pdata.clone().requires_grad_(True)
        x = PackedSequence(pdata, p.batch_sizes, p.sorted_indices.to(device),
                           p.unsorted_indices.to(device))
    else:
        x = to(data["x"])
        if cfg.mode in INPUT_GRAD_MODES:
            leaf = x = x.clone().requires_grad_(True)
    g = to(data["g"]) if cfg.mode in BACKWARD_MODES else None
    steps = to(data["steps"]) if cfg.mode == "step" else None
    if cfg.mode == "step":
        hx = (hx[0][:, :1].contiguous(), hx[1][:, :1].contiguous()) if cfg.op == "lstm" \
            else hx[:, :1].contiguous()
    return Inputs(x, leaf, hx, g, steps)


def make_call(mod: nn.Module, cfg: Config, inp: Inputs) -> Callable[[], object]:
    params = list(mod.parameters())
    if cfg.mode == "fwd":
        def call():
            with torch.no_grad():
                return mod(inp.x, inp.hx)
        return call
    if cfg.mode in BACKWARD_MODES:
        def call():
            for p in params:
                p.grad = None
            if inp.leaf is not None:
                inp.leaf.grad = None
            out, _ = mod(inp.x, inp.hx)
            data = out.data if isinstance(out, PackedSequence) else out
            (data * inp.g).sum().backward()
            return out
        return call
    # step: the state returned by one call is the next call's state
    state = {"hx": inp.hx, "i": 0}
    n = inp.steps.shape[0]

    def call():
        i = state["i"]
        with torch.no_grad():
            out, state["hx"] = mod(inp.steps[i], state["hx"])
        state["i"] = i + 1 if i + 1 < n else 0
        return out
    return call


# ----------------------------------------------------------------------------------------------
# Correctness check before timing
# ----------------------------------------------------------------------------------------------

def outputs_for_check(mod: nn.Module, cfg: Config, inp: Inputs) -> Dict[str, torch.Tensor]:
    """Everything a configuration produces, as float32 CPU tensors keyed by name."""
    res: Dict[str, torch.Tensor] = {}

    def put(name, t):
        res[name] = t.detach().float().cpu()

    def put_state(hx):
        if isinstance(hx, tuple):
            put("h_n", hx[0])
            put("c_n", hx[1])
        else:
            put("h_n", hx)

    if cfg.mode == "step":
        hx = inp.hx
        with torch.no_grad():
            for i in range(STEP_STATE_STEPS):
                out, hx = mod(inp.steps[i], hx)
        put("out", out)
        put_state(hx)
        return res
    if cfg.mode == "fwd":
        with torch.no_grad():
            out, hx = mod(inp.x, inp.hx)
    else:
        mod.zero_grad(set_to_none=True)
        if inp.leaf is not None:
            inp.leaf.grad = None
        out, hx = mod(inp.x, inp.hx)
        data = out.data if isinstance(out, PackedSequence) else out
        (data * inp.g).sum().backward()
        if inp.leaf is not None:
            put("grad_input", inp.leaf.grad)
        for name, p in mod.named_parameters():
            if p.requires_grad:
                put("grad_" + name, p.grad)
    put("out", out.data if isinstance(out, PackedSequence) else out)
    put_state(hx)
    return res


def compare(fast: Dict[str, torch.Tensor], ref: Dict[str, torch.Tensor], dtype: str,
            ref32: Optional[Dict[str, torch.Tensor]] = None) -> Tuple[bool, str]:
    """fp32/fp64: |fast - torch| <= tol * max(1, max|torch|) elementwise-max, tol 1e-4 (fp32),
    1e-10 (fp64). bf16/fp16: both are compared with an fp32 torch run on the same (rounded)
    weights and data; fastrnn passes if its error is at most 2x torch's own plus 1e-2 * scale."""
    worst, worst_name = 0.0, ""
    for name, r in ref.items():
        f = fast.get(name)
        if f is None or f.shape != r.shape:
            return False, f"{name}: shape {None if f is None else tuple(f.shape)} != {tuple(r.shape)}"
        if not torch.isfinite(f).all():
            return False, f"{name}: non-finite values"
        if ref32 is None:
            tol = 1e-10 if dtype == "float64" else 1e-4
            scale = max(1.0, r.abs().max().item()) if r.numel() else 1.0
            err = (f - r).abs().max().item() if r.numel() else 0.0
            rel = err / scale
            if rel > tol:
                return False, f"{name}: max abs err {err:.3g} (scale {scale:.3g}, tol {tol:g})"
        else:
            r32 = ref32[name]
            scale = max(1.0, r32.abs().max().item()) if r32.numel() else 1.0
            err_f = (f - r32).abs().max().item() if r32.numel() else 0.0
            err_t = (r - r32).abs().max().item() if r32.numel() else 0.0
            rel = err_f / scale
            if err_f > 2.0 * err_t + 1e-2 * scale:
                return False, (f"{name}: err vs fp32 {err_f:.3g}, torch's own {err_t:.3g} "
                               f"(scale {scale:.3g})")
        if rel >= worst:
            worst, worst_name = rel, name
    return True, f"max rel err {worst:.2g} ({worst_name})"


# ----------------------------------------------------------------------------------------------
# One configuration
# ----------------------------------------------------------------------------------------------

def run_config(cfg: Config, args, device: torch.device, fast_classes) -> Dict[str, object]:
    dtype = DTYPES[cfg.dtype]
    torch.manual_seed(args.seed)
    kw = module_kwargs(cfg)
    ref = TORCH_CLASSES[cfg.op](**kw).to(device=device, dtype=dtype)
    fast = fast_classes[cfg.op](**kw).to(device=device, dtype=dtype)
    fast.load_state_dict(ref.state_dict())
    if cfg.mode not in BACKWARD_MODES:
        ref.eval()
        fast.eval()
    if cfg.mode not in BACKWARD_MODES or cfg.mode == "frozen":
        for m in (ref, fast):
            m.requires_grad_(False)
    data = make_data(cfg, device, dtype, args.seed + 1)
    inp_f = make_inputs(cfg, data, device, dtype)
    inp_t = make_inputs(cfg, data, device, dtype)

    # --- correctness, once, before any timing
    try:
        got = outputs_for_check(fast, cfg, inp_f)
    except Exception as e:  # noqa: BLE001 - report and move on; a benchmark never times failures
        return {"status": "ERROR", "detail": f"{type(e).__name__}: {e}".splitlines()[0][:200]}
    want = outputs_for_check(ref, cfg, inp_t)
    ref32 = None
    if dtype in (torch.bfloat16, torch.float16):
        ref_f32 = TORCH_CLASSES[cfg.op](**kw).to(device=device)
        ref_f32.load_state_dict({k: v.float() for k, v in ref.state_dict().items()})
        if cfg.mode not in BACKWARD_MODES or cfg.mode == "frozen":
            ref_f32.requires_grad_(False)
        # the fp32 reference sees the same rounded values as the low-precision runs
        data32 = {k: (v.to(dtype).float() if isinstance(v, torch.Tensor) else v)
                  for k, v in data.items()}
        if cfg.packed:
            p = data["packed"]
            data32["packed"] = PackedSequence(p.data.to(dtype).float(), p.batch_sizes,
                                              p.sorted_indices, p.unsorted_indices)
        ref32 = outputs_for_check(ref_f32, cfg, make_inputs(cfg, data32, device, torch.float32))
        del ref_f32
    ok, detail = compare(got, want, cfg.dtype, ref32)
    if not ok:
        return {"status": "MISMATCH", "detail": detail}

    # --- timing: warm-up, choose `inner`, interleaved samples
    timer = common.Timer(device)
    calls = {"fastrnn": make_call(fast, cfg, inp_f), "torch": make_call(ref, cfg, inp_t)}
    est = {}
    for name, fn in calls.items():
        # the check above was the first warm-up call (same code path); then warmup-1 more
        for _ in range(args.warmup - 2):
            fn()
        est[name] = timer(fn)  # the last warm-up call, timed, to size the samples
    fastest = max(min(est.values()), 1e-4)
    inner = int(min(max(1, math.ceil(args.sample_ms / fastest)), args.max_inner))
    if inner > 1:  # warm the inner-loop path too (caches, allocator) at the sample size
        for fn in calls.values():
            timer(fn, min(inner, 16))
    samples: Dict[str, List[float]] = {"fastrnn": [], "torch": []}
    order = ["fastrnn", "torch"]
    monitor = common.CpuMonitor().start()
    for r in range(args.repeats):
        for name in (order if r % 2 == 0 else order[::-1]):
            samples[name].append(timer(calls[name], inner))
    timer.sync()
    others = monitor.stop() if device.type == "cpu" else None
    return {"status": "ok", "detail": detail, "inner": inner, "others": others,
            "fastrnn": common.summarize(samples["fastrnn"]),
            "torch": common.summarize(samples["torch"])}


# ----------------------------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------------------------

def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n", 1)[1])
    p.add_argument("--device", default=None,
                   help="cpu or cuda[:N] (default: cuda if available, else cpu)")
    p.add_argument("--ops", default="lstm,gru,rnn_tanh",
                   help=f"comma list from {','.join(ALL_OPS)} (default lstm,gru,rnn_tanh)")
    p.add_argument("--rnn-relu", action="store_true", help="also benchmark rnn_relu")
    p.add_argument("--modes", default=",".join(DEFAULT_MODES),
                   help="comma list of fwd,fwdbwd,train,step,frozen (default all but frozen)")
    p.add_argument("--shapes", default="",
                   help="comma list of TxBxIxH patterns (fnmatch globs, e.g. '100x16x*,1x1x512x512')")
    p.add_argument("--dtypes", default=None,
                   help="comma list (default: float32 on cpu; float32,bfloat16 on cuda)")
    p.add_argument("--repeats", type=int, default=None, help="timed samples per impl (default 7; "
                   "5 with --quick)")
    p.add_argument("--warmup", type=int, default=2,
                   help="warm-up calls per impl, the correctness-check call included (at least 2)")
    p.add_argument("--sample-ms", type=float, default=None,
                   help="target duration of one sample; short calls are repeated inside a sample "
                        "(default 20 ms; 5 ms with --quick)")
    p.add_argument("--max-inner", type=int, default=2000, help="cap on calls per sample")
    p.add_argument("--quick", action="store_true",
                   help="fewer repeats and only the two smallest shapes (under a minute on CPU)")
    p.add_argument("--no-packed", dest="packed", action="store_false", help="skip packed cases")
    p.add_argument("--no-proj", dest="proj", action="store_false", help="skip LSTM proj_size cases")
    p.add_argument("--peak", action="store_true",
                   help="measure the peak and report %% of it: on CPU the FMA throughput of the "
                        "cores (native probe; torch's sgemm is measured too, for reference), on "
                        "CUDA torch.matmul's GEMM")
    p.add_argument("--threads", type=int, default=None,
                   help="torch.set_num_threads first (default: leave torch's choice)")
    p.add_argument("--tf32", action="store_true",
                   help="CUDA: allow TF32 in cuDNN/cuBLAS fp32 (default off: fp32 means fp32)")
    p.add_argument("--self", dest="self_baseline", action="store_true",
                   help="benchmark torch against itself in place of fastrnn (noise floor; also "
                        "for developing without fastrnn's modules)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="results JSON path (default "
                   "bench/results/<device>-<yyyymmdd>-<what>.json)")
    p.add_argument("--what", default=None, help="<what> in the default file name "
                   "(default rnn, rnn-quick, rnn-self)")
    p.add_argument("--list", action="store_true",
                   help="print the configurations (with their GFLOP per call) and exit")
    p.add_argument("--no-json", action="store_true", help="print only, write no files")
    p.add_argument("--no-plot", action="store_true", help="write no PNG")
    args = p.parse_args(argv)

    args.ops = [o.strip() for o in args.ops.split(",") if o.strip()]
    if args.rnn_relu and "rnn_relu" not in args.ops:
        args.ops.append("rnn_relu")
    args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    args.shapes = [s.strip() for s in args.shapes.split(",") if s.strip()]
    for o in args.ops:
        if o not in ALL_OPS:
            p.error(f"unknown op {o!r}; choose from {', '.join(ALL_OPS)}")
    for m in args.modes:
        if m not in ALL_MODES:
            p.error(f"unknown mode {m!r}; choose from {', '.join(ALL_MODES)}")
    if args.repeats is None:
        args.repeats = 5 if args.quick else 7
    if args.repeats < 1:
        p.error("--repeats must be at least 1")
    args.warmup = max(2, args.warmup)
    if args.sample_ms is None:
        args.sample_ms = 5.0 if args.quick else 20.0
    return p, args


def fmt_ms(v: float) -> str:
    if v >= 100:
        return f"{v:.0f}"
    if v >= 10:
        return f"{v:.1f}"
    if v >= 1:
        return f"{v:.2f}"
    return f"{v:.3g}"


def main(argv=None) -> int:
    p, args = parse_args(argv)
    t_start = time.perf_counter()
    load_start = common.load_average()
    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(args.device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            p.error("--device cuda asked, but torch sees no CUDA device")
        if device.index is not None:
            torch.cuda.set_device(device)
        torch.backends.cudnn.allow_tf32 = args.tf32
        torch.backends.cuda.matmul.allow_tf32 = args.tf32
    elif device.type != "cpu":
        p.error(f"unsupported device {args.device!r}")
    if args.dtypes is None:
        args.dtypes = ["float32", "bfloat16"] if device.type == "cuda" else ["float32"]
    else:
        args.dtypes = [d.strip() for d in args.dtypes.split(",") if d.strip()]
    for d in args.dtypes:
        if d not in DTYPES:
            p.error(f"unknown dtype {d!r}; choose from {', '.join(DTYPES)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()

    try:
        fast_classes = fastrnn_classes(args.self_baseline)
    except (ImportError, AttributeError) as e:
        print(f"cannot import fastrnn's modules ({e}); use --self to benchmark torch against "
              f"itself meanwhile", file=sys.stderr)
        return 2
    fast_impl = "torch-self" if args.self_baseline else "fastrnn"

    configs = build_configs(args, device)
    if not configs:
        print("no configuration matches the filters", file=sys.stderr)
        return 2

    if args.list:
        for cfg in configs:
            print(f"{cfg.op:8s} {cfg.mode:6s} {cfg.label:20s} {cfg.dtype:8s} "
                  f"{'packed' if cfg.packed else 'padded'} rows={cfg.rows:<6d} "
                  f"{cfg.flops() / 1e9:9.4f} GFLOP")
        print(f"{len(configs)} configurations, {sum(c.flops() for c in configs) / 1e9:.1f} GFLOP "
              f"per round of calls")
        return 0

    print(f"fastrnn bench: device {device} ({common.device_slug(device)}), torch {torch.__version__}, "
          f"{threads} threads, {len(configs)} configurations, {args.repeats} repeats"
          + (" [torch against itself]" if args.self_baseline else ""))
    others_idle = warn_start = None
    if device.type == "cpu":
        idle = common.CpuMonitor().start()
        time.sleep(0.5)
        others_idle = idle.stop()
    if others_idle is not None and others_idle > BUSY_CORES:
        warn_start = (f"warning: before starting, other processes kept {others_idle:.2f} of "
                      f"{os.cpu_count()} cores busy: timings will be noisy")
        print(warn_start)
    peaks: Dict[str, float] = {}       # the % column's denominator, per dtype
    gemm_peaks: Dict[str, float] = {}  # torch.matmul's GEMM, per dtype
    fma_peak = device.type == "cpu"

    def measure_peaks(when: str) -> None:
        # Measured at the start and at the end; the better of the two (a busy moment only
        # lowers a peak).
        for d in args.dtypes:
            gemm = common.measure_peak(device, DTYPES[d])
            if gemm > gemm_peaks.get(d, 0.0):
                gemm_peaks[d] = gemm
            line = f"{when}: torch.matmul {d} GEMM {gemm:.1f} GFLOP/s"
            if not fma_peak:
                peaks[d] = gemm_peaks[d]
            elif d in ("float32", "float64"):  # bf16/fp16 run in float32 on CPU: no own peak
                fma = common.measure_fma_peak(DTYPES[d], threads)
                line += f", FMA peak {fma:.1f} GFLOP/s"
                peaks[d] = max(peaks.get(d, 0.0), fma)
            print(line + f" ({threads} threads)")

    if args.peak:
        measure_peaks("measured at the start")

    results: List[Dict[str, object]] = []
    skipped: List[Dict[str, object]] = []
    rows: List[List[str]] = []
    row_gflops: List[Tuple[Optional[float], str]] = []   # for the % of peak column, added last
    n_busy = 0
    run_monitor = common.CpuMonitor().start()
    for k, cfg in enumerate(configs, 1):
        t0 = time.perf_counter()
        res = run_config(cfg, args, device, fast_classes)
        tag = (f"[{k}/{len(configs)}] {cfg.op} {cfg.mode} {cfg.label} {cfg.dtype}"
               + (" packed" if cfg.packed else ""))
        packed = "true" if cfg.packed else "false"
        if res["status"] != "ok":
            print(f"{tag}: {res['status']}: {res['detail']}", flush=True)
            skipped.append({"op": cfg.op, "mode": cfg.mode, "dtype": cfg.dtype,
                            "shape": cfg.shape(), "packed": cfg.packed,
                            "status": res["status"], "detail": res["detail"]})
            rows.append([cfg.op, cfg.mode, cfg.label, cfg.dtype, packed, res["status"], "-", "- ",
                         "-"])
            row_gflops.append((None, cfg.dtype))
            continue
        f, t = res["fastrnn"], res["torch"]
        for impl, s in ((fast_impl, f), ("torch", t)):
            results.append({"impl": impl, "op": cfg.op, "mode": cfg.mode, "device": device.type,
                            "dtype": cfg.dtype, "shape": cfg.shape(), "packed": cfg.packed,
                            "min_ms": round(s["min_ms"], 6), "median_ms": round(s["median_ms"], 6),
                            "max_ms": round(s["max_ms"], 6)})
        gflops = cfg.flops() / (f["median_ms"] * 1e-3) / 1e9
        speed = t["median_ms"] / f["median_ms"]
        others = res["others"]
        busy = others is not None and others > BUSY_CORES
        n_busy += busy
        row = [cfg.op, cfg.mode, cfg.label, cfg.dtype, packed, fmt_ms(f["median_ms"]),
               fmt_ms(t["median_ms"]), f"{speed:.2f}x" + ("*" if busy else " "), f"{gflops:.1f}"]
        row_gflops.append((gflops, cfg.dtype))
        rows.append(row)
        print(f"{tag}: {fast_impl} {fmt_ms(f['median_ms'])} ms, torch {fmt_ms(t['median_ms'])} ms, "
              f"{speed:.2f}x (check {res['detail']}; {res['inner']} calls/sample; "
              + (f"other processes used {others:.2f} cores; " if others is not None else "") +
              f"{time.perf_counter() - t0:.1f} s)", flush=True)

    if args.peak:
        measure_peaks("measured at the end")
        for row, (gf, d) in zip(rows, row_gflops):
            row.append("-" if gf is None or d not in peaks else f"{100 * gf / peaks[d]:.1f}%")
    elapsed = time.perf_counter() - t_start
    load_end = common.load_average()
    others_run = run_monitor.stop()
    warn_end = None
    if n_busy:
        warn_end = (f"* other processes used more than {BUSY_CORES} of {os.cpu_count()} cores "
                    f"while {n_busy} configuration(s) were timed: those timings are unreliable")
    if not args.no_json:
        what = args.what or ("rnn-self" if args.self_baseline else
                             "rnn-quick" if args.quick else "rnn")
        path = args.out or common.default_results_path(device, what)
        extra = {"quick": args.quick, "repeats": args.repeats, "fastrnn_impl": fast_impl,
                 "elapsed_s": round(elapsed, 1), "loadavg_start": load_start,
                 "loadavg_end": load_end,
                 "other_processes_cores_before": None if others_idle is None
                 else round(others_idle, 2),
                 "other_processes_cores": None if others_run is None else round(others_run, 2)}
        if device.type == "cuda":
            extra["tf32"] = args.tf32
        if gemm_peaks:
            extra["measured_gemm_gflops"] = {d: round(v, 1) for d, v in gemm_peaks.items()}
        if fma_peak and peaks:
            extra["measured_fma_peak_gflops"] = {d: round(v, 1) for d, v in peaks.items()}
        if skipped:
            extra["not_timed"] = skipped  # MISMATCH / ERROR configurations, never timed
        meta = common.machine_meta(device, threads, common.command_line(), extra)
        common.write_results(path, meta, results)
        print(f"wrote {path}")
        if not args.no_plot:
            png = plot_speedups({"meta": meta, "results": results}, path[:-5] + ".png")
            print(f"wrote {png}" if png else "plot skipped: matplotlib is not installed")

    header = ["op", "mode", "shape TxBxIxH", "dtype", "packed", f"{fast_impl} ms", "torch ms",
              "speedup x", f"{fast_impl} GFLOP/s"]
    if args.peak:
        header.append("% of FMA peak" if fma_peak else "% of GEMM (same dtype)")
    print(f"\n{fast_impl} vs torch {torch.__version__} on {device.type} "
          f"({common.cpu_info()['cpu'] if device.type == 'cpu' else torch.cuda.get_device_name(device)}), "
          f"{threads} threads; median of {args.repeats}; speedup = torch / {fast_impl}; "
          f"step rows are ms per step; total {elapsed:.0f} s")
    print(common.format_table(header, rows, right=range(5, len(header))))
    for w in dict.fromkeys(x for x in (warn_start, warn_end) if x):
        print(w)
    n_bad = len(skipped)
    if n_bad:
        print(f"\n{n_bad} configuration(s) not timed (MISMATCH/ERROR); see the lines above")
    return 1 if n_bad else 0


if __name__ == "__main__":
    sys.exit(main())
