"""A CTC recognizer on synthetic feature sequences: digit strings "spoken" as noisy patterns.

Each digit has a prototype: a short pattern of three feature vectors. A digit string becomes a
sequence of frames by stretching each digit's pattern over a random duration and adding noise,
with gaps of quiet noise frames between digits (always at least one between two equal digits,
as in speech, where a repeated word needs a pause to be heard twice) and around the string.
Nothing tells the model where the digits start or end: that is what CTC learns, through
fastrnn.CTCLoss over a bidirectional GRU (run on a PackedSequence) with a linear layer and
log_softmax on top. Held-out strings are decoded with fastrnn.ctc_greedy_decode and
fastrnn.ctc_beam_search, and scored by label error rate (edit distance / reference length).

    python examples/ctc_recognizer.py              # fastrnn, ~1-2 minutes on 2 cores
    python examples/ctc_recognizer.py --compare    # both implementations, both times
"""

from __future__ import annotations

from typing import List, Sequence

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import fastrnn
from _common import (curves, make_parser, Progress, pyplot, Result, rnn_module, run_experiments,
                     save_figure, Stopwatch)

BLANK = 0
NUM_CLASSES = 11  # blank and the digits 0-9 as labels 1-10
FEATURES = 16
PATTERN_FRAMES = 3


class DigitRenderer:
    """Turns digit strings into (frames, FEATURES) feature sequences."""

    def __init__(self, seed: int, noise: float):
        g = torch.Generator().manual_seed(seed)
        self.prototypes = torch.randn(10, PATTERN_FRAMES, FEATURES, generator=g)
        self.noise = noise

    def render(self, digits: Sequence[int], g: torch.Generator) -> torch.Tensor:
        def gap(at_least: int):
            n = at_least + int(torch.randint(0, 3, (1,), generator=g))
            return [0.3 * torch.randn(n, FEATURES, generator=g)]

        pieces = gap(1)
        for i, d in enumerate(digits):
            if i > 0:
                pieces += gap(1 if digits[i - 1] == d else 0)
            duration = int(torch.randint(3, 8, (1,), generator=g))
            stretch = torch.arange(duration) * PATTERN_FRAMES // duration
            frames = self.prototypes[d][stretch]
            pieces.append(frames + self.noise * torch.randn(frames.shape, generator=g))
        pieces += gap(1)
        return torch.cat(pieces)


def make_batch(renderer: DigitRenderer, batch: int, min_len: int, max_len: int,
               g: torch.Generator):
    """Padded features (T, B, FEATURES), frame counts (B,), concatenated labels, label counts."""
    strings = [torch.randint(0, 10, (int(torch.randint(min_len, max_len + 1, (1,),
                                                       generator=g)),), generator=g).tolist()
               for _ in range(batch)]
    seqs = [renderer.render(s, g) for s in strings]
    lengths = torch.tensor([len(x) for x in seqs])
    features = nn.utils.rnn.pad_sequence(seqs)
    labels = torch.tensor([d + 1 for s in strings for d in s])
    label_lengths = torch.tensor([len(s) for s in strings])
    return features, lengths, labels, label_lengths, strings


class Recognizer(nn.Module):
    def __init__(self, impl: str, hidden: int):
        super().__init__()
        self.rnn = rnn_module("GRU", impl, FEATURES, hidden, num_layers=2, bidirectional=True)
        self.head = nn.Linear(2 * hidden, NUM_CLASSES)

    def forward(self, features, lengths):
        """Log-probabilities (T, B, NUM_CLASSES), as CTC wants them."""
        packed = pack_padded_sequence(features, lengths, enforce_sorted=False)
        output, _ = pad_packed_sequence(self.rnn(packed)[0], total_length=features.shape[0])
        return self.head(output).log_softmax(dim=2)


def edit_distance(a: Sequence[int], b: Sequence[int]) -> int:
    """Levenshtein distance (insertions, deletions, substitutions all cost 1)."""
    previous = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        current = [i]
        for j, y in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1,
                               previous[j - 1] + (x != y)))
        previous = current
    return previous[-1]


def label_error_rate(hypotheses: List[List[int]], references: List[List[int]]) -> float:
    errors = sum(edit_distance(h, r) for h, r in zip(hypotheses, references))
    return errors / sum(len(r) for r in references)


def to_digits(labels: Sequence[int]) -> List[int]:
    return [label - 1 for label in labels]


def experiment(impl, args, init) -> Result:
    iters, batch, hidden, every, max_len, n_test = ((30, 16, 32, 10, 4, 64) if args.quick
                                                    else (args.iters, 32, 64, 20, 8, 300))
    renderer = DigitRenderer(args.seed, args.noise)
    data = torch.Generator().manual_seed(args.seed)
    test_x, test_len, _, _, test_strings = make_batch(renderer, n_test, 3, max_len, data)
    model = init.apply("recognizer", Recognizer(impl, hidden))
    ctc = fastrnn.CTCLoss(blank=BLANK)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(args.seed + 1)
    watch = Stopwatch()
    curve = dict(step=[], loss=[], greedy_ler=[])
    bar = Progress(iters, f"CTC recognizer [{impl}]")
    for it in bar:
        x, lengths, labels, label_lengths, _ = make_batch(renderer, batch, 3, max_len, gen)
        with watch:
            loss = ctc(model(x, lengths), labels, lengths, label_lengths)
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            opt.step()
        if (it + 1) % every == 0 or it + 1 == iters:
            with torch.no_grad():
                hyps, _ = fastrnn.ctc_greedy_decode(model(test_x, test_len), test_len, BLANK)
            ler = label_error_rate([to_digits(h) for h in hyps], test_strings)
            for key, value in (("step", it + 1), ("loss", loss.item()), ("greedy_ler", ler)):
                curve[key].append(value)
            bar.show(loss=loss.item(), greedy_ler=ler)

    with torch.no_grad():
        log_probs = model(test_x, test_len)
    greedy, _ = fastrnn.ctc_greedy_decode(log_probs, test_len, BLANK)
    beams = fastrnn.ctc_beam_search(log_probs, test_len, beam_width=args.beam, blank=BLANK)
    greedy_ler = label_error_rate([to_digits(h) for h in greedy], test_strings)
    beam_ler = label_error_rate([to_digits(b[0][0]) for b in beams], test_strings)
    example = dict(posteriors=log_probs[:int(test_len[0]), 0].exp(), truth=test_strings[0],
                   decoded=to_digits(beams[0][0][0]))
    return Result(watch.seconds,
                  {"held-out LER, greedy": greedy_ler,
                   f"held-out LER, beam {args.beam}": beam_ler},
                  dict(curve=curve, example=example))


def plot(results, args):
    plt = pyplot()
    fig, (ax_ler, ax_post) = plt.subplots(1, 2, figsize=(13, 4.2))
    for c, style, suffix in curves(results):
        ax_ler.plot(c["step"], c["greedy_ler"], style, color="tab:blue",
                    label="held-out label error rate (greedy)" + suffix)
        ax_ler.plot(c["step"], c["loss"], style, color="tab:gray",
                    label="training CTC loss" + suffix)
    ax_ler.set(yscale="log", xlabel="training step", title="CTC recognizer (BiGRU)")
    ax_ler.legend(fontsize=8)
    ex = next(iter(results.values())).extra["example"]
    posteriors = ex["posteriors"].numpy()
    ax_post.plot(posteriors[:, BLANK], color="lightgray", label="blank")
    cmap = plt.get_cmap("tab10")
    for digit in range(10):
        ax_post.plot(posteriors[:, digit + 1], color=cmap(digit), label=str(digit))
    truth = "".join(map(str, ex["truth"]))
    decoded = "".join(map(str, ex["decoded"]))
    ax_post.set(xlabel="frame", ylabel="posterior", ylim=(0, 1.02),
                title=f"held-out example: truth {truth}, beam search {decoded}")
    ax_post.legend(fontsize=7, ncol=11, loc="upper center", bbox_to_anchor=(0.5, -0.15))
    fig.tight_layout()
    save_figure(fig, args, "ctc_recognizer.png")


def main():
    parser = make_parser(__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=600, help="training steps")
    parser.add_argument("--noise", type=float, default=2.0,
                        help="standard deviation of the noise added to the digit patterns")
    parser.add_argument("--beam", type=int, default=8, help="beam width")
    args = parser.parse_args()
    plot(run_experiments(args, experiment), args)


if __name__ == "__main__":
    main()
