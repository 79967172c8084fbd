"""The adding problem: long-range memory in RNN vs LSTM vs GRU.

Each input is a sequence of T steps with two channels: a random value in [0, 1] and a marker that
is 1 at exactly two steps, one in each half of the sequence. The target is the sum of the two
marked values, read from the network's state after the last step. Always predicting 1 (the mean)
gives an MSE of 1/6 = 0.167 (the variance of a sum of two uniform values); a network that stays
there has learned nothing. To remember a value from step ~T/4 until step T, the gradient must
flow back through ~3T/4 steps of recurrence: in a plain tanh RNN it shrinks geometrically on the
way (vanishing gradients) and training stalls at the baseline, while the LSTM's and GRU's gated,
additive state updates carry it.

The script trains the three models and plots their validation MSE, and the norm of the loss's
gradient with respect to each input step x_t (how much the loss can still "see" step t), at
initialization and after training.

    python examples/adding_problem.py              # fastrnn, ~1-2 minutes on 2 cores
    python examples/adding_problem.py --impl torch
    python examples/adding_problem.py --compare    # both, same initial weights, both times
"""

from __future__ import annotations

import torch
from torch import nn

from _common import (IMPL_STYLES, make_parser, Progress, pyplot, Result, rnn_module,
                     run_experiments, save_figure, Stopwatch)

KINDS = ("RNN", "LSTM", "GRU")
BASELINE_MSE = 1.0 / 6.0


def adding_batch(batch: int, steps: int, generator: torch.Generator):
    """Inputs (batch, steps, 2) and targets (batch,): one marker in each half of the sequence."""
    values = torch.rand(batch, steps, generator=generator)
    first = torch.randint(0, steps // 2, (batch,), generator=generator)
    second = torch.randint(steps // 2, steps, (batch,), generator=generator)
    markers = torch.zeros(batch, steps)
    rows = torch.arange(batch)
    markers[rows, first] = 1.0
    markers[rows, second] = 1.0
    return torch.stack([values, markers], dim=2), (values * markers).sum(dim=1)


class Adder(nn.Module):
    def __init__(self, kind: str, impl: str, hidden: int):
        super().__init__()
        self.rnn = rnn_module(kind, impl, 2, hidden, batch_first=True)
        self.head = nn.Linear(hidden, 1)
        if kind == "LSTM":
            # The usual forget-gate bias of 1: the cell starts out remembering rather than
            # forgetting, which shortens the LSTM's initial plateau.
            with torch.no_grad():
                self.rnn.bias_ih_l0[hidden:2 * hidden].fill_(1.0)
                self.rnn.bias_hh_l0[hidden:2 * hidden].zero_()

    def forward(self, x):
        output, _ = self.rnn(x)
        return self.head(output[:, -1]).squeeze(1)


def input_gradient_norms(model: Adder, x, y):
    """Mean over the batch of ||d loss / d x_t|| for every step t."""
    x = x.clone().requires_grad_(True)
    nn.functional.mse_loss(model(x), y).backward()
    model.zero_grad()
    return x.grad.norm(dim=2).mean(dim=0).tolist()


def experiment(impl, args, init) -> Result:
    steps, hidden, iters, batch, every = ((20, 16, 60, 32, 20) if args.quick
                                          else (args.steps, 32, args.iters, 64, 50))
    data = torch.Generator().manual_seed(args.seed)
    val_x, val_y = adding_batch(1000, steps, data)
    watches = {kind: Stopwatch() for kind in KINDS}
    curves, grads_init, grads_trained, final = {}, {}, {}, {}
    for kind in KINDS:
        model = init.apply(kind, Adder(kind, impl, hidden))
        grads_init[kind] = input_gradient_norms(model, val_x[:256], val_y[:256])
        opt = torch.optim.Adam(model.parameters(), lr=3e-3)
        train = torch.Generator().manual_seed(args.seed + 1)
        curve = []
        bar = Progress(iters, f"{kind:4} [{impl}]")
        for it in bar:
            x, y = adding_batch(batch, steps, train)
            with watches[kind]:
                loss = nn.functional.mse_loss(model(x), y)
                opt.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                opt.step()
            if (it + 1) % every == 0 or it == 0:
                with torch.no_grad():
                    mse = nn.functional.mse_loss(model(val_x), val_y).item()
                curve.append((it + 1, mse))
                bar.show(val_mse=mse)
        curves[kind] = curve
        final[kind] = curve[-1][1]
        grads_trained[kind] = input_gradient_norms(model, val_x[:256], val_y[:256])
    metrics = {f"{kind} training time (s)": watches[kind].seconds for kind in KINDS}
    metrics.update({f"{kind} val MSE": final[kind] for kind in KINDS})
    # How much of the gradient reaches a typical first-marker position (T/4) from the end.
    for kind in KINDS:
        g = grads_trained[kind]
        metrics[f"{kind} |dL/dx_T/4| / |dL/dx_T-1|"] = g[steps // 4] / g[-1]
    return Result(sum(w.seconds for w in watches.values()), metrics,
                  dict(curves=curves, grads_init=grads_init, grads_trained=grads_trained,
                       steps=steps))


def plot(results, args):
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    colors = {"RNN": "tab:red", "LSTM": "tab:blue", "GRU": "tab:green"}
    for impl, result in results.items():
        extra = result.extra
        for kind in KINDS:
            label = f"{kind} ({impl})" if len(results) > 1 else kind
            its, mse = zip(*extra["curves"][kind])
            axes[0].plot(its, mse, IMPL_STYLES[impl], color=colors[kind], label=label)
            for ax, key in ((axes[1], "grads_init"), (axes[2], "grads_trained")):
                ax.semilogy(extra[key][kind], IMPL_STYLES[impl], color=colors[kind], label=label)
    steps = next(iter(results.values())).extra["steps"]
    axes[0].axhline(BASELINE_MSE, color="gray", linestyle=":", label="predict 1 (0.167)")
    axes[0].set(yscale="log", xlabel="training step", ylabel="validation MSE",
                title=f"adding problem, T={steps}")
    axes[1].set(xlabel="input step t", ylabel="mean |dL/dx_t|", title="gradient at initialization")
    axes[2].set(xlabel="input step t", ylabel="mean |dL/dx_t|", title="gradient after training")
    for ax in axes:
        ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, args, "adding_problem.png")


def main():
    parser = make_parser(__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60, help="sequence length T")
    parser.add_argument("--iters", type=int, default=1500, help="training steps per model")
    args = parser.parse_args()
    plot(run_experiments(args, experiment), args)


if __name__ == "__main__":
    main()
