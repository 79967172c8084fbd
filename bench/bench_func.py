"""torch.func workloads and double backward on the CPU: fastrnn against what torch offers for
the same result.

    python bench/bench_func.py [--repeats 7] [--out bench/results/<file>.json]

- ``vmap fwd``: a model vmapped over SAMPLES inputs, under torch.no_grad (inference). torch's RNN modules have no
  batching rule, so its figure is a loop over the samples; fastrnn's batching rule folds them
  into the batch of one call. ``batched`` is fastrnn called once on the samples concatenated
  along the batch by hand: what the rule's plumbing costs on top.
- ``per-sample grads``: ``vmap(grad(loss))`` over SAMPLES sequences of batch 1 (the
  differential-privacy workload), against torch's own vmap of grad, which runs for its LSTM (a
  decomposition into per-step batched ops) but not for its GRU and RNN, and against torch's
  per-sample loop.
- ``jacrev``: the Jacobian of every output with respect to the input, torch.func.jacrev
  through each module.
- ``ctc per-sample grads``: vmap of grad through ctc_loss, against torch's vmap of grad through
  F.ctc_loss (its fallback loops; it needs every sample's longest target to be as long).
- ``gradient penalty``: autograd's double backward, a WGAN-GP critic's step (the gradients of
  the output's mean plus 10 (|d out.sum() / dx| - 1)^2, w.r.t. the input and every weight),
  against torch's module. fastrnn's second order reruns the stack through torch's functions.

Each row: medians over ``--repeats`` interleaved samples (fastrnn, then torch, each sample the
mean over enough calls to last ~0.2 s, timed by common.Timer), every result checked against
torch's first.
"""

from __future__ import annotations

import argparse
import statistics
import sys

import torch
import torch.nn.functional as F
from torch.func import functional_call, grad, jacrev, vmap

import fastrnn

sys.path.insert(0, __file__.rsplit("/", 1)[0])
import common  # noqa: E402

SAMPLES = 16


SAMPLE_MS = 200


def _pair(cls, *args, **kwargs):
    ref = getattr(torch.nn, cls)(*args, **kwargs)
    ours = getattr(fastrnn, cls)(*args, **kwargs)
    ours.load_state_dict(ref.state_dict())
    return ref, ours


def _loss(out):
    return (out[0] if isinstance(out, tuple) else out).square().sum()


def _penalty_step(module, x):
    x = x.clone().requires_grad_()
    out = module(x)[0]
    (g,) = torch.autograd.grad(out.sum(), x, create_graph=True)
    loss = out.mean() + 10 * (g.norm(dim=-1) - 1).square().mean()
    return torch.autograd.grad(loss, [x, *module.parameters()])


def _workloads():
    """(name, what, {implementation: callable}, check) rows; check() asserts the results agree."""
    rows = []
    for cls in ("LSTM", "GRU", "RNN"):
        ref, ours = _pair(cls, 64, 128)
        xs = torch.randn(SAMPLES, 50, 4, 64)
        rows.append((f"{cls.lower()} vmap fwd", "16 x (50x4x64x128)", {
            "fastrnn": torch.no_grad()(lambda ours=ours, xs=xs: vmap(lambda x: ours(x)[0])(xs)),
            "torch loop": torch.no_grad()(
                lambda ref=ref, xs=xs: torch.stack([ref(x)[0] for x in xs])),
            "fastrnn batched": torch.no_grad()(lambda ours=ours, xs=xs: ours(
                xs.transpose(0, 1).reshape(50, -1, 64))[0]),
        }))
        xs = torch.randn(SAMPLES, 50, 1, 64)
        params = {k: v.detach() for k, v in ours.named_parameters()}
        ref_params = {k: v.detach() for k, v in ref.named_parameters()}

        def per_sample(module, params, xs):
            return vmap(grad(lambda p, x: _loss(functional_call(module, p, (x,)))),
                        in_dims=(None, 0))(params, xs)

        def torch_loop(ref=ref, xs=xs):
            names, leaves = zip(*ref.named_parameters())
            grads = [torch.autograd.grad(_loss(ref(x)), leaves) for x in xs]
            return {name: torch.stack(g) for name, g in zip(names, zip(*grads))}

        impls = {"fastrnn": lambda ours=ours, params=params, xs=xs: per_sample(ours, params, xs),
                 "torch loop": torch_loop}
        if cls == "LSTM":
            impls["torch vmap"] = lambda ref=ref, p=ref_params, xs=xs: per_sample(ref, p, xs)
        rows.append((f"{cls.lower()} per-sample grads", "16 x (50x1x64x128)", impls))
        x = torch.randn(50, 16, 64)
        rows.append((f"{cls.lower()} gradient penalty", "50x16x64x128", {
            "fastrnn": lambda ours=ours, x=x: _penalty_step(ours, x),
            "torch": lambda ref=ref, x=x: _penalty_step(ref, x)}))
        small_ref, small = _pair(cls, 16, 32)
        x = torch.randn(20, 1, 16)
        rows.append((f"{cls.lower()} jacrev", "20x1x16x32", {
            "fastrnn": lambda m=small, x=x: jacrev(lambda x: m(x)[0])(x),
            "torch": lambda m=small_ref, x=x: jacrev(lambda x: m(x)[0])(x),
        }))
    T, C, S = 100, 30, 20
    lp = torch.randn(SAMPLES, T, 1, C).log_softmax(-1)
    targets = torch.randint(1, C, (SAMPLES, 1, S))
    lengths = (torch.full((SAMPLES, 1), T), torch.full((SAMPLES, 1), S))

    def ctc_grads(loss):
        return vmap(grad(loss))(lp, targets, *lengths)

    rows.append(("ctc per-sample grads", f"16 x (T={T},B=1,C={C},S={S})", {
        "fastrnn": lambda: ctc_grads(fastrnn.ctc_loss),
        "torch vmap": lambda: ctc_grads(F.ctc_loss),
    }))
    return rows


def _check(impls):
    """Every implementation's result equals the first one's (float32 tolerance)."""
    results = {name: fn() for name, fn in impls.items()}
    flat = {name: torch.utils._pytree.tree_leaves(r) for name, r in results.items()}
    first = next(iter(flat.values()))
    for name, leaves in flat.items():
        if name.endswith("batched"):  # the same values, laid out by hand differently
            continue
        for a, b in zip(first, leaves, strict=True):
            torch.testing.assert_close(a.reshape(b.shape), b, rtol=1e-4, atol=1e-4)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    device, threads = torch.device("cpu"), torch.get_num_threads()
    out = args.out or common.default_results_path(device, "func")
    results, table, timer = [], [], common.Timer(device)
    for name, shape, impls in _workloads():
        _check(impls)
        # One call each (after the check's) sizes its samples: calls filling SAMPLE_MS.
        inner = {impl: max(1, int(SAMPLE_MS / max(timer(fn), 1e-3))) for impl, fn in impls.items()}
        times = {impl: [] for impl in impls}
        for _ in range(args.repeats):
            for impl, fn in impls.items():
                times[impl].append(timer(fn, inner[impl]))
        medians = {impl: statistics.median(t) for impl, t in times.items()}
        ours = medians["fastrnn"]
        for impl, t in times.items():
            results.append({"workload": name, "shape": shape, "impl": impl,
                            **common.summarize(t)})
            speedup = "" if impl == "fastrnn" else f"{medians[impl] / ours:.2f}x"
            table.append([name, shape, impl, f"{medians[impl]:.3g}", speedup])
        print(f"{name} {shape}: " + ", ".join(f"{i} {m:.3g} ms" for i, m in medians.items()),
              flush=True)
    common.write_results(out, common.machine_meta(device, threads, common.command_line()),
                         results)
    print(f"\nfastrnn bench_func: torch {torch.__version__}, {threads} threads, medians of "
          f"{args.repeats}; speedup = that implementation's time / fastrnn's\n")
    print(common.format_table(["workload", "shape", "implementation", "ms", "speedup"], table,
                              right=(3, 4)))
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
