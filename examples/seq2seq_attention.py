"""Sequence to sequence with attention: sorting (or reversing) strings of digits.

The encoder is a bidirectional LSTM over the embedded source digits, run on a PackedSequence so
that the variable-length inputs are not padded inside the recurrence. The decoder is an LSTMCell
stepped once per output token; at each step it attends (Luong's "general" score, h^T W e_s) over
the encoder's outputs, masked to the real source positions, and feeds the attended context into
the next step ("input feeding"). Training uses teacher forcing; evaluation decodes greedily on a
held-out set and reports token accuracy (per target position, end token included) and sequence
accuracy (the whole output exactly right).

    python examples/seq2seq_attention.py                  # sort, fastrnn, ~2 minutes on 2 cores
    python examples/seq2seq_attention.py --task reverse
    python examples/seq2seq_attention.py --compare        # both implementations, both times
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from _common import (curves, make_parser, Progress, pyplot, Result, rnn_module, run_experiments,
                     save_figure, Stopwatch)

PAD, BOS, EOS = 0, 1, 2
DIGIT0 = 3  # token of digit d is DIGIT0 + d
VOCAB = DIGIT0 + 10


def make_batch(batch: int, min_len: int, max_len: int, task: str, generator: torch.Generator):
    """Padded source (B, max_len), its lengths, decoder input (BOS + target) and decoder target
    (target + EOS), both (B, max_len + 1) and padded with PAD."""
    lengths = torch.randint(min_len, max_len + 1, (batch,), generator=generator)
    src = torch.full((batch, max_len), PAD)
    dec_in = torch.full((batch, max_len + 1), PAD)
    dec_out = torch.full((batch, max_len + 1), PAD)
    for b, n in enumerate(lengths.tolist()):
        digits = torch.randint(0, 10, (n,), generator=generator)
        target = digits.sort().values if task == "sort" else digits.flip(0)
        src[b, :n] = DIGIT0 + digits
        dec_in[b, 0] = BOS
        dec_in[b, 1:n + 1] = DIGIT0 + target
        dec_out[b, :n] = DIGIT0 + target
        dec_out[b, n] = EOS
    return src, lengths, dec_in, dec_out


class Seq2Seq(nn.Module):
    def __init__(self, impl: str, embed: int = 32, hidden: int = 64):
        super().__init__()
        dec_hidden = 2 * hidden  # the size of the encoder's outputs (both directions)
        self.embed = nn.Embedding(VOCAB, embed, padding_idx=PAD)
        self.encoder = rnn_module("LSTM", impl, embed, hidden, batch_first=True,
                                  bidirectional=True)
        self.bridge = nn.Linear(2 * hidden, dec_hidden)
        self.decoder = rnn_module("LSTMCell", impl, embed + dec_hidden, dec_hidden)
        self.score = nn.Linear(dec_hidden, dec_hidden, bias=False)
        self.combine = nn.Linear(2 * dec_hidden, dec_hidden)
        self.out = nn.Linear(dec_hidden, VOCAB)

    def encode(self, src, lengths):
        packed = pack_padded_sequence(self.embed(src), lengths, batch_first=True,
                                      enforce_sorted=False)
        enc_packed, (h_n, _) = self.encoder(packed)
        enc, _ = pad_packed_sequence(enc_packed, batch_first=True, total_length=src.shape[1])
        h = torch.tanh(self.bridge(torch.cat([h_n[0], h_n[1]], dim=1)))
        mask = torch.arange(src.shape[1]).unsqueeze(0) < lengths.unsqueeze(1)
        return enc, mask, (h, torch.zeros_like(h)), torch.zeros_like(h)

    def step(self, token, enc, mask, state, context):
        """One decoder step: logits (B, VOCAB), the new state and context, attention (B, S)."""
        h, c = self.decoder(torch.cat([self.embed(token), context], dim=1), state)
        scores = torch.bmm(enc, self.score(h).unsqueeze(2)).squeeze(2)
        attention = scores.masked_fill(~mask, float("-inf")).softmax(dim=1)
        attended = torch.bmm(attention.unsqueeze(1), enc).squeeze(1)
        context = torch.tanh(self.combine(torch.cat([h, attended], dim=1)))
        return self.out(context), (h, c), context, attention

    def forward(self, src, lengths, dec_in):
        """Teacher forcing: logits (B, T_out, VOCAB) for the given decoder inputs."""
        enc, mask, state, context = self.encode(src, lengths)
        logits = []
        for t in range(dec_in.shape[1]):
            step_logits, state, context, _ = self.step(dec_in[:, t], enc, mask, state, context)
            logits.append(step_logits)
        return torch.stack(logits, dim=1)

    @torch.no_grad()
    def greedy(self, src, lengths, steps: int):
        """Greedy decoding: tokens (B, steps) and attention weights (B, steps, S)."""
        enc, mask, state, context = self.encode(src, lengths)
        token = torch.full((src.shape[0],), BOS)
        tokens, attentions = [], []
        for _ in range(steps):
            logits, state, context, attention = self.step(token, enc, mask, state, context)
            token = logits.argmax(dim=1)
            tokens.append(token)
            attentions.append(attention)
        return torch.stack(tokens, dim=1), torch.stack(attentions, dim=1)


def accuracy(predicted, target):
    """Token accuracy over the target's real positions (end token included) and the fraction of
    sequences whose every such position is right (nothing after the end token is looked at)."""
    real = target != PAD
    correct = (predicted == target) & real
    token_acc = correct.sum().item() / real.sum().item()
    seq_acc = (correct.sum(dim=1) == real.sum(dim=1)).float().mean().item()
    return token_acc, seq_acc


def experiment(impl, args, init) -> Result:
    iters, batch, every, max_len = (40, 32, 10, 6) if args.quick else (args.iters, 64, 25, 10)
    min_len = 3
    data = torch.Generator().manual_seed(args.seed)
    test = make_batch(1000, min_len, max_len, args.task, data)
    model = init.apply("seq2seq", Seq2Seq(impl))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    # Linear decay to a tenth of the rate, so that the final accuracy settles.
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda it: 1.0 - 0.9 * it / iters)
    gen = torch.Generator().manual_seed(args.seed + 1)
    watch = Stopwatch()
    curve = dict(step=[], loss=[], token_acc=[], seq_acc=[])
    bar = Progress(iters, f"seq2seq {args.task} [{impl}]")
    for it in bar:
        src, lengths, dec_in, dec_out = make_batch(batch, min_len, max_len, args.task, gen)
        with watch:
            logits = model(src, lengths, dec_in)
            loss = nn.functional.cross_entropy(logits.flatten(0, 1), dec_out.flatten(),
                                               ignore_index=PAD)
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            schedule.step()
        if (it + 1) % every == 0 or it + 1 == iters:
            predicted, _ = model.greedy(test[0], test[1], max_len + 1)
            token_acc, seq_acc = accuracy(predicted, test[3])
            for key, value in (("step", it + 1), ("loss", loss.item()),
                               ("token_acc", token_acc), ("seq_acc", seq_acc)):
                curve[key].append(value)
            bar.show(loss=loss.item(), token_acc=token_acc, seq_acc=seq_acc)
    predicted, attention = model.greedy(test[0][:1], test[1][:1], max_len + 1)
    example = dict(src=test[0][0], length=int(test[1][0]), predicted=predicted[0],
                   attention=attention[0])
    return Result(watch.seconds,
                  {"held-out token accuracy": curve["token_acc"][-1],
                   "held-out sequence accuracy": curve["seq_acc"][-1]},
                  dict(curve=curve, example=example, task=args.task))


def token_name(token) -> str:
    token = int(token)
    return {PAD: "pad", BOS: "start", EOS: "end"}.get(token, str(token - DIGIT0))


def plot(results, args):
    plt = pyplot()
    fig, (ax_acc, ax_att) = plt.subplots(1, 2, figsize=(12, 4.2),
                                         gridspec_kw=dict(width_ratios=[1.6, 1]))
    for c, style, suffix in curves(results):
        ax_acc.plot(c["step"], c["token_acc"], style, color="tab:blue",
                    label="token accuracy" + suffix)
        ax_acc.plot(c["step"], c["seq_acc"], style, color="tab:orange",
                    label="sequence accuracy" + suffix)
    first = next(iter(results.values())).extra
    ax_acc.set(xlabel="training step", ylabel="held-out accuracy (greedy decoding)",
               ylim=(0, 1.02), title=f"seq2seq with attention: {first['task']} digit strings")
    ax_acc.legend(fontsize=8)
    ex = first["example"]
    n = ex["length"]
    source = [token_name(t) for t in ex["src"][:n]]
    output = [token_name(t) for t in ex["predicted"][:n + 1]]  # n digits, then (ideally) end
    ax_att.imshow(ex["attention"][:n + 1, :n].numpy(), cmap="Greys", vmin=0, vmax=1)
    ax_att.set_xticks(range(n), source)
    ax_att.set_yticks(range(n + 1), output)
    ax_att.set(xlabel="source digit", ylabel="decoded token",
               title="attention on a held-out example")
    fig.tight_layout()
    save_figure(fig, args, f"seq2seq_{first['task']}.png")


def main():
    parser = make_parser(__doc__.splitlines()[0])
    parser.add_argument("--task", choices=("sort", "reverse"), default="sort")
    parser.add_argument("--iters", type=int, default=600, help="training steps")
    args = parser.parse_args()
    plot(run_experiments(args, experiment), args)


if __name__ == "__main__":
    main()
