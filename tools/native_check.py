"""Runs fastrnn's native CPU core through its bindings with NumPy alone (no torch), so that a build
for another platform can be checked against this one's: tools/aarch64_check.sh runs it here and
on an aarch64 build under qemu and compares the two. The same seeded inputs (NumPy's generators
give the same values everywhere) go through the RNN forward (training and inference) and
backward of every cell, over configurations that reach each code path (direct and packed-weight
mode, both directions, stacked layers with dropout masks, PackedSequence rows, a projection,
16-bit weights, one and two threads), and through the CTC loss's forward and backward.

    python tools/native_check.py run PATH/TO/_C.so OUT.npz   # results, one array per name
    python tools/native_check.py compare EXPECTED.npz GOT.npz

compare allows what separates two correct builds: instruction sets round differently (aarch64
fuses multiply-adds that x86's baseline build does not), not more.
"""

import importlib.util
import sys

import numpy as np

# Allowed difference between platforms, per compute dtype: |got - want| <= atol + rtol * |want|.
TOLERANCES = {"float32": (2e-5, 2e-5), "float64": (1e-12, 1e-12)}
GATES = {"RNN_TANH": 1, "RNN_RELU": 1, "LSTM": 4, "GRU": 3}


def load_bindings(path: str):
    """fastrnn._C from its file, without importing the fastrnn package (which needs torch)."""
    spec = importlib.util.spec_from_file_location("_C", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def rnn_weights(rng, cell, layers, directions, input_size, hidden, proj, bias, dtype):
    """torch's flat weight list (per layer and direction: w_ih, w_hh, [b_ih, b_hh], [w_hr])."""
    rows, out = GATES[cell] * hidden, proj or hidden
    weights = []
    for layer in range(layers):
        layer_input = input_size if layer == 0 else directions * out
        shapes = [(rows, layer_input), (rows, out)] + ([(rows,), (rows,)] if bias else [])
        shapes += [(proj, hidden)] if proj else []
        for _ in range(directions):
            # torch's initialization range, so that the states stay O(1) over the steps
            bound = 1 / np.sqrt(hidden)
            weights += [rng.uniform(-bound, bound, s).astype(dtype) for s in shapes]
    return weights


def bfloat16_bits(a):
    """The bfloat16 bit patterns of a float32 array (rounded to nearest even), and their values."""
    bits = a.astype(np.float32).view(np.uint32)
    rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)
    return rounded, (rounded.astype(np.uint32) << 16).view(np.float32)


def addr(a):
    return 0 if a is None else a.ctypes.data


def run_rnn(C, name, rng, results, cell, dtype, T, B, I, H, layers=1, directions=1, proj=0,
            bias=True, lengths=None, threads=1, half=None, groups=1):
    """Training forward, inference forward and backward of one configuration; results under
    ``name``. ``lengths``: a PackedSequence's sorted lengths (rows are then its packed rows);
    ``groups``: the backward's weight groups (one weight gradient per group of batch rows)."""
    batch_sizes = [] if lengths is None else [sum(n > t for n in lengths) for t in range(T)]
    desc = C.RnnDesc(list(GATES).index(cell), layers, directions, I, H, proj, bias, T, B,
                     batch_sizes)
    ndtype = getattr(C.DType, dtype)
    N, O, S = desc.total_rows, proj or H, layers * directions
    x = rng.standard_normal((N, I)).astype(dtype)
    weights = rnn_weights(rng, cell, layers, directions, I, H, proj, bias, dtype)
    h0 = rng.standard_normal((S, B, O)).astype(dtype)
    c0 = rng.standard_normal((S, B, H)).astype(dtype) if cell == "LSTM" else None
    keep = np.dtype(dtype).type(0.7)
    masks = [(rng.random((N, directions * O)) < keep).astype(dtype) / keep
             for _ in range(layers - 1)]
    flags = {}
    if half is not None:  # the weight matrices 16-bit, everything else float32
        assert C.rnn_takes_half_weights(desc, ndtype), name
        bits = [(w, w) if w.ndim == 1 else bfloat16_bits(w) if half == "bfloat16" else
                (w.astype(np.float16).view(np.uint16), w.astype(np.float16).astype(np.float32))
                for w in weights]
        weights = [values for _, values in bits]  # what the kernels multiply by
        passed = [stored for stored, _ in bits]
        flags["half_weights"] = getattr(C.HalfWeights, half)
    else:
        passed = weights
    reserve = np.empty(N * desc.reserve_elems_per_row, dtype)
    results_of = {}
    for pass_, keep in (("train", reserve), ("infer", None)):
        y = np.empty((N, directions * O), dtype)
        hy = np.empty((S, B, O), dtype)
        cy = np.empty((S, B, H), dtype) if c0 is not None else None
        ws = np.empty(desc.workspace_elems(C.Pass.Forward if keep is not None
                                           else C.Pass.Inference, ndtype), dtype)
        C.rnn_forward(desc, ndtype, addr(x), [addr(w) for w in passed], addr(h0), addr(c0),
                      [addr(m) for m in masks], addr(y), addr(hy), addr(cy), addr(keep),
                      addr(ws), threads, **flags)
        results_of[pass_] = (y, hy, cy)
    dy = rng.standard_normal((N, directions * O)).astype(dtype)
    dhy = rng.standard_normal((S, B, O)).astype(dtype)
    dcy = rng.standard_normal((S, B, H)).astype(dtype) if c0 is not None else None
    dx, dh0 = np.empty_like(x), np.empty_like(h0)
    dc0 = np.empty_like(c0) if c0 is not None else None
    dweights = [np.empty((groups,) * (groups > 1) + w.shape, w.dtype) for w in weights]
    ws = np.empty(desc.workspace_elems(C.Pass.GroupedBackward if groups > 1 else C.Pass.Backward,
                                       ndtype), dtype)
    C.rnn_backward(desc, ndtype, addr(x), [addr(w) for w in passed], addr(h0), addr(c0),
                   [addr(m) for m in masks], addr(reserve), addr(dy), addr(dhy), addr(dcy),
                   addr(dx), addr(dh0), addr(dc0), [addr(g) for g in dweights], addr(ws), threads,
                   **flags, **({"weight_groups": groups} if groups > 1 else {}))
    for pass_, (y, hy, cy) in results_of.items():
        results[f"{name}/{pass_}/y"], results[f"{name}/{pass_}/hy"] = y, hy
        if cy is not None:
            results[f"{name}/{pass_}/cy"] = cy
    results[f"{name}/dx"], results[f"{name}/dh0"] = dx, dh0
    if dc0 is not None:
        results[f"{name}/dc0"] = dc0
    for i, g in enumerate(dweights):
        results[f"{name}/dw{i}"] = g


def run_ctc(C, name, rng, results, dtype, T, B, classes, from_logits, threads=1):
    """The CTC loss and its gradient for random lengths and targets (concatenated)."""
    input_lengths = rng.integers(T // 2, T + 1, B).astype(np.int64)
    target_lengths = rng.integers(0, T // 2, B).astype(np.int64)
    targets = rng.integers(1, classes, int(target_lengths.sum())).astype(np.int64)
    offsets = np.concatenate([[0], np.cumsum(target_lengths)[:-1]]).astype(np.int64)
    scores = rng.standard_normal((T, B, classes)).astype(dtype)
    if not from_logits:  # log-probabilities
        scores = scores - np.log(np.exp(scores).sum(-1, keepdims=True))
    max_target = int(target_lengths.max())
    desc = C.CtcDesc(T, B, classes, max_target, 0, targets.size, from_logits)
    ndtype = getattr(C.DType, dtype)
    loss = np.empty(B, dtype)
    log_alpha = np.empty((B, T, 2 * max_target + 1), dtype)
    row_lse = np.empty((T, B), dtype) if from_logits else np.empty(0, dtype)
    ws = np.empty(C.ctc_cpu_workspace_bytes(desc, ndtype, threads), np.uint8)
    common = dict(input=addr(scores), targets=addr(targets), target_offsets=addr(offsets),
                  input_lengths=addr(input_lengths), target_lengths=addr(target_lengths),
                  log_alpha=addr(log_alpha), row_lse=addr(row_lse), workspace=addr(ws),
                  num_threads=threads)
    C.ctc_forward(desc, ndtype, zero_infinity=True, loss=addr(loss), **common)
    grad_loss = rng.uniform(0.5, 1.5, B).astype(dtype)
    grad = np.empty_like(scores)
    C.ctc_backward(desc, ndtype, grad_loss=addr(grad_loss), grad_input=addr(grad), **common)
    results[f"{name}/loss"], results[f"{name}/grad"] = loss, grad


def run_all(C):
    rng = np.random.default_rng(20261125)
    results = {}
    for dtype in ("float32", "float64"):
        for cell in GATES:
            tag = f"{cell}/{dtype}"
            # Direct mode (a handful of rows), one and two threads.
            for threads in (1, 2):
                run_rnn(C, f"{tag}/direct/t{threads}", rng, results, cell, dtype, 1, 3, 5, 7,
                        threads=threads)
            # Packed-weight mode: odd sizes (partial vectors and unit blocks), two layers in
            # both directions with dropout masks, on one and two threads.
            for threads in (1, 2):
                run_rnn(C, f"{tag}/stack/t{threads}", rng, results, cell, dtype, 9, 6, 13, 21,
                        layers=2, directions=2, threads=threads)
            # PackedSequence rows, reversed direction included.
            run_rnn(C, f"{tag}/packed", rng, results, cell, dtype, 7, 4, 6, 10, directions=2,
                    lengths=[7, 5, 5, 2], threads=2)
            # Wide enough for the blocked GEMMs' full tiles and several backward chunks.
            run_rnn(C, f"{tag}/wide", rng, results, cell, dtype, 40, 16, 48, 64, threads=2)
            run_rnn(C, f"{tag}/nobias", rng, results, cell, dtype, 4, 3, 5, 8, bias=False)
        run_rnn(C, f"LSTM/{dtype}/proj", rng, results, "LSTM", dtype, 8, 5, 7, 12, layers=2,
                directions=2, proj=5, threads=2)
        for from_logits in (False, True):
            run_ctc(C, f"CTC/{dtype}/logits{int(from_logits)}", rng, results, dtype, 30, 5, 9,
                    from_logits, threads=2)
    for half in ("bfloat16", "float16"):
        for cell in GATES:
            run_rnn(C, f"{cell}/{half}-weights", rng, results, cell, "float32", 2, 3, 6, 10,
                    layers=2, half=half)
    # Per-group weight gradients (per-sample gradients), over two backward chunks (70 steps).
    for dtype in ("float32", "float64"):
        for cell in GATES:
            run_rnn(C, f"{cell}/{dtype}/groups", rng, results, cell, dtype, 70, 8, 12, 20,
                    layers=2, directions=2, threads=2, groups=4)
    return results


def compare(expected, got) -> int:
    """Prints one line per failing array and a summary; returns the number of failures."""
    failures = 0
    missing = sorted(set(expected.files) ^ set(got.files))
    for name in missing:
        print(f"{name}: in only one of the two sets")
    worst = {}
    for name in sorted(set(expected.files) & set(got.files)):
        want, have = expected[name], got[name]
        if want.shape != have.shape or want.dtype != have.dtype:
            print(f"{name}: {have.dtype}{list(have.shape)}, expected {want.dtype}{list(want.shape)}")
            failures += 1
            continue
        rtol, atol = TOLERANCES[str(want.dtype)]
        error = np.abs(have.astype(np.float64) - want) - rtol * np.abs(want)
        if not np.isfinite(have).all() or error.max(initial=-np.inf) > atol:
            print(f"{name}: max |difference| beyond tolerance by {error.max():.3g}")
            failures += 1
        scale = np.abs(have.astype(np.float64) - want).max(initial=0.0)
        worst[str(want.dtype)] = max(worst.get(str(want.dtype), 0.0), scale)
    print(f"{len(expected.files)} arrays, {failures + len(missing)} differ beyond the tolerance; "
          "largest absolute difference " +
          ", ".join(f"{d}: {v:.3g}" for d, v in sorted(worst.items())))
    return failures + len(missing)


def main(argv):
    if len(argv) == 4 and argv[1] == "run":
        C = load_bindings(argv[2])
        results = run_all(C)
        np.savez(argv[3], **results)
        print(f"{len(results)} arrays from the {C.cpu_isa()} kernels -> {argv[3]}")
        return 0
    if len(argv) == 4 and argv[1] == "compare":
        return 1 if compare(np.load(argv[2]), np.load(argv[3])) else 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
