"""A character-level language model: teacher forcing, scheduled sampling, gradient clipping,
then sampling text one character at a time (the streaming fast path).

The corpus is generated here from a small English-like grammar (subject-verb number agreement,
optional adjectives, prepositional phrases, conjunctions, paragraphs), so nothing is downloaded
and the samples can be judged by eye: a model that has learned the grammar writes well-formed
sentences with agreeing verbs.

Training: each batch of sequences runs its first half with teacher forcing through one call of
the LSTM over the whole half (the fused full-sequence kernel), then steps the LSTM one step at a
time (T=1, passing the state back) over the second half, feeding each sequence either the true
previous character (with the teacher-forcing probability, which decays linearly during training)
or one sampled from the model's own prediction (scheduled sampling). Gradients are clipped with
torch.nn.utils.clip_grad_norm_. Afterwards the model writes text one character at a time.

    python examples/char_lm.py              # fastrnn, ~2 minutes on 2 cores
    python examples/char_lm.py --compare    # both implementations, both times
"""

from __future__ import annotations

import math
import os
import random
import time

import torch
from torch import nn

from _common import (curves, make_parser, Progress, pyplot, Result, rnn_module, run_experiments,
                     save_figure, Stopwatch)

# name: (singular, plural) for nouns; (3rd person singular, plural) for verbs.
NOUNS = [("cat", "cats"), ("dog", "dogs"), ("child", "children"), ("farmer", "farmers"),
         ("bird", "birds"), ("river", "rivers"), ("teacher", "teachers"), ("fox", "foxes"),
         ("baker", "bakers"), ("horse", "horses"), ("sailor", "sailors"), ("mouse", "mice")]
THINGS = ["the bread", "a letter", "the old bridge", "some apples", "the garden", "a small boat",
          "the lamp", "the hill", "a green door", "the market", "the window", "a song"]
TRANSITIVE = [("sees", "see"), ("finds", "find"), ("carries", "carry"), ("watches", "watch"),
              ("paints", "paint"), ("follows", "follow"), ("remembers", "remember")]
INTRANSITIVE = [("sleeps", "sleep"), ("runs", "run"), ("waits", "wait"), ("sings", "sing"),
                ("laughs", "laugh"), ("rests", "rest")]
ADJECTIVES = ["quiet", "old", "young", "clever", "tired", "brave", "hungry", "little"]
ADVERBS = ["slowly", "quietly", "happily", "again", "at night", "every morning"]
PLACES = ["near the river", "in the garden", "under the bridge", "behind the market",
          "on the hill", "by the window"]
CONJUNCTIONS = ["and", "but", "while", "because"]


def _noun_phrase(rng: random.Random):
    singular, plural = rng.choice(NOUNS)
    is_plural = rng.random() < 0.4
    noun = plural if is_plural else singular
    det = rng.choice(["the", "the", "some", "many"] if is_plural else ["the", "the", "a", "every"])
    words = [noun]
    if rng.random() < 0.4:
        words.insert(0, rng.choice(ADJECTIVES))
    if det == "a" and words[0][0] in "aeiou":
        det = "an"
    return " ".join([det] + words), is_plural


def _clause(rng: random.Random) -> str:
    subject, is_plural = _noun_phrase(rng)
    if rng.random() < 0.6:
        verb = rng.choice(TRANSITIVE)[is_plural]
        obj = rng.choice(THINGS) if rng.random() < 0.6 else _noun_phrase(rng)[0]
        words = [subject, verb, obj]
    else:
        words = [subject, rng.choice(INTRANSITIVE)[is_plural]]
    if rng.random() < 0.35:
        words.append(rng.choice(ADVERBS))
    if rng.random() < 0.3:
        words.append(rng.choice(PLACES))
    return " ".join(words)


def make_corpus(chars: int, seed: int) -> str:
    """Paragraphs of 2-5 generated sentences, up to ``chars`` characters."""
    rng = random.Random(seed)
    paragraphs, total = [], 0
    while total < chars:
        sentences = []
        for _ in range(rng.randint(2, 5)):
            text = _clause(rng)
            if rng.random() < 0.3:
                text += f" {rng.choice(CONJUNCTIONS)} {_clause(rng)}"
            sentences.append(text[0].upper() + text[1:] + ".")
        paragraphs.append(" ".join(sentences))
        total += len(paragraphs[-1]) + 1
    return "\n".join(paragraphs)[:chars]


class CharLM(nn.Module):
    def __init__(self, vocab: int, impl: str, embed: int, hidden: int):
        super().__init__()
        self.embed = nn.Embedding(vocab, embed)
        self.lstm = rnn_module("LSTM", impl, embed, hidden, batch_first=True)
        self.head = nn.Linear(hidden, vocab)

    def forward(self, chars, state=None):
        """chars (B, T) -> logits (B, T, vocab) and the LSTM state after the last step."""
        output, state = self.lstm(self.embed(chars), state)
        return self.head(output), state


def scheduled_sampling_loss(model: CharLM, inputs, targets, teacher_prob: float,
                            generator: torch.Generator):
    """Cross-entropy over the whole sequence; the first half is teacher-forced in one call, the
    second half is stepped, each sequence's input being the true character with probability
    ``teacher_prob`` and otherwise one sampled from the model's previous prediction."""
    split = inputs.shape[1] // 2
    logits, state = model(inputs[:, :split])
    step_logits = [logits]
    prev = logits[:, -1]
    for t in range(split, inputs.shape[1]):
        sampled = torch.multinomial(prev.detach().softmax(-1), 1, generator=generator)
        keep_true = torch.rand(inputs.shape[0], 1, generator=generator) < teacher_prob
        step_input = torch.where(keep_true, inputs[:, t:t + 1], sampled)
        logits_t, state = model(step_input, state)  # T=1 with the state passed back
        step_logits.append(logits_t)
        prev = logits_t[:, -1]
    logits = torch.cat(step_logits, dim=1)
    return nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten())


@torch.no_grad()
def bits_per_char(model: CharLM, data, seq: int) -> float:
    usable = (len(data) - 1) // seq * seq
    inputs = data[:usable].view(-1, seq)
    targets = data[1:usable + 1].view(-1, seq)
    logits, _ = model(inputs)
    loss = nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten())
    return loss.item() / math.log(2)


@torch.no_grad()
def generate(model: CharLM, prompt, length: int, temperature: float,
             generator: torch.Generator):
    """Feeds the prompt in one call, then writes ``length`` characters one at a time (T=1, B=1,
    the LSTM state passed back each step). Returns the indices and the seconds spent."""
    start = time.perf_counter()
    logits, state = model(prompt.view(1, -1))
    out = []
    for _ in range(length):
        probs = (logits[0, -1] / temperature).softmax(-1)
        char = torch.multinomial(probs, 1, generator=generator)
        out.append(int(char))
        logits, state = model(char.view(1, 1), state)
    return out, time.perf_counter() - start


def experiment(impl, args, init) -> Result:
    corpus_chars, hidden, iters, batch, seq, sample_len = (
        (20_000, 64, 15, 16, 16, 100) if args.quick
        else (200_000, args.hidden, args.iters, 32, 48, 600))
    text = make_corpus(corpus_chars, args.seed)
    vocab = sorted(set(text))
    index = {c: i for i, c in enumerate(vocab)}
    data = torch.tensor([index[c] for c in text])
    cut = int(len(data) * 0.9)
    train_data, val_data = data[:cut], data[cut:]

    model = init.apply("charlm", CharLM(len(vocab), impl, 32, hidden))
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    gen = torch.Generator().manual_seed(args.seed + 1)
    watch = Stopwatch()
    curve = dict(step=[], train_bpc=[], val_bpc=[], teacher_prob=[], grad_norm=[])
    every = max(iters // 40, 1)
    running = None
    bar = Progress(iters, f"char LM [{impl}]")
    for it in bar:
        # Linear decay of the teacher-forcing probability: from 1 to args.min_teacher_prob.
        teacher_prob = 1.0 - (1.0 - args.min_teacher_prob) * it / max(iters - 1, 1)
        starts = torch.randint(0, len(train_data) - seq - 1, (batch,), generator=gen)
        window = torch.stack([train_data[s:s + seq + 1] for s in starts.tolist()])
        with watch:
            loss = scheduled_sampling_loss(model, window[:, :-1], window[:, 1:], teacher_prob,
                                           gen)
            opt.zero_grad()
            loss.backward()
            grad_norm = float(nn.utils.clip_grad_norm_(model.parameters(), args.clip))
            opt.step()
        bpc = loss.item() / math.log(2)
        running = bpc if running is None else 0.9 * running + 0.1 * bpc
        if (it + 1) % every == 0 or it + 1 == iters:
            curve["step"].append(it + 1)
            curve["train_bpc"].append(running)
            curve["val_bpc"].append(bits_per_char(model, val_data, seq))
            curve["teacher_prob"].append(teacher_prob)
            bar.show(train_bpc=running, val_bpc=curve["val_bpc"][-1], p_teacher=teacher_prob)
        curve["grad_norm"].append(grad_norm)

    prompt = "The "
    sampled, seconds = generate(model, torch.tensor([index[c] for c in prompt]), sample_len,
                                args.temperature, torch.Generator().manual_seed(args.seed + 2))
    sample = prompt + "".join(vocab[i] for i in sampled)
    print(f"\n--- sample [{impl}], temperature {args.temperature} ---\n{sample}\n---")
    clipped = sum(norm > args.clip for norm in curve["grad_norm"]) / len(curve["grad_norm"])
    return Result(watch.seconds,
                  {"val bits/char": curve["val_bpc"][-1],
                   "fraction of steps clipped": clipped,
                   "sampling chars/s (T=1, B=1)": sample_len / seconds},
                  dict(curve=curve, sample=sample, clip=args.clip))


def plot(results, args):
    plt = pyplot()
    fig, (ax_loss, ax_grad) = plt.subplots(1, 2, figsize=(12, 4.2))
    for c, style, suffix in curves(results):
        ax_loss.plot(c["step"], c["train_bpc"], style, color="tab:blue",
                     label="train (scheduled sampling)" + suffix)
        ax_loss.plot(c["step"], c["val_bpc"], style, color="tab:orange",
                     label="validation (teacher forced)" + suffix)
        ax_grad.semilogy(c["grad_norm"], style, color="tab:gray", linewidth=0.6,
                         label="gradient norm before clipping" + suffix)
    first = next(iter(results.values())).extra
    prob_axis = ax_loss.twinx()
    prob_axis.plot(first["curve"]["step"], first["curve"]["teacher_prob"], ":", color="tab:green")
    prob_axis.set_ylabel("teacher-forcing probability (dotted)", color="tab:green")
    prob_axis.set_ylim(0, 1.05)
    ax_loss.set(xlabel="training step", ylabel="bits per character",
                title="character LSTM language model")
    ax_grad.axhline(first["clip"], color="tab:red", linestyle=":", label="clip threshold")
    ax_grad.set(xlabel="training step", ylabel="global L2 norm", title="gradient clipping")
    ax_loss.legend(fontsize=8)
    ax_grad.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, args, "char_lm.png")
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "char_lm_sample.txt"), "w") as f:
        f.write(first["sample"] + "\n")


def main():
    parser = make_parser(__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=1200, help="training steps")
    parser.add_argument("--hidden", type=int, default=128, help="LSTM hidden size")
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--clip", type=float, default=0.5, help="max gradient norm")
    parser.add_argument("--min-teacher-prob", type=float, default=0.7,
                        help="teacher-forcing probability reached at the end of training")
    parser.add_argument("--temperature", type=float, default=0.7, help="sampling temperature")
    args = parser.parse_args()
    plot(run_experiments(args, experiment), args)


if __name__ == "__main__":
    main()
