"""Plain-torch CTC reference (slow, obviously correct), used by the tests.

``ctc_nll`` runs the textbook alpha recursion in log space, in float64, one batch element at a
time, with ordinary differentiable torch ops: autograd through it gives the exact gradient of
-log p(target | log_probs) w.r.t. log_probs (which, unlike torch's ctc_loss gradient, has no
``exp(log_probs)`` term; the two agree after a ``log_softmax`` backward).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["ctc_nll"]


def _nll_one(lp: Tensor, labels: list[int], blank: int) -> Tensor:
    """-log p(labels | lp) for lp (T_b, C) float64. Unreachable states are None rather than
    -inf, so that autograd never differentiates a logsumexp of only -inf terms (NaN)."""
    T = lp.shape[0]
    ext = [blank]
    for label in labels:
        ext += [label, blank]
    L = len(ext)
    if T == 0:
        return lp.new_tensor(0.0 if not labels else float("inf"))
    alpha = [lp[0, ext[s]] if s < 2 else None for s in range(L)]
    for t in range(1, T):
        new = []
        for s in range(L):
            terms = [alpha[s]]
            if s >= 1:
                terms.append(alpha[s - 1])
            if s >= 2 and ext[s] != blank and ext[s] != ext[s - 2]:
                terms.append(alpha[s - 2])
            terms = [x for x in terms if x is not None]
            new.append(torch.logsumexp(torch.stack(terms), 0) + lp[t, ext[s]] if terms else None)
        alpha = new
    final = [x for x in alpha[-2:] if x is not None] if L > 1 else [alpha[0]]
    if not final:
        return lp.new_tensor(float("inf"))
    return -torch.logsumexp(torch.stack(final), 0)


def ctc_nll(log_probs: Tensor, targets: Tensor, input_lengths, target_lengths,
            blank: int = 0) -> Tensor:
    """Per-element negative log-likelihood, shape (B,), float64.

    log_probs (T, B, C); targets padded (B, S) or concatenated 1-D; lengths sequences or tensors.
    Impossible alignments give inf.
    """
    lp = log_probs.double()
    input_lengths = [int(x) for x in torch.as_tensor(input_lengths).reshape(-1)]
    target_lengths = [int(x) for x in torch.as_tensor(target_lengths).reshape(-1)]
    out = []
    offset = 0
    for b, (T_b, S_b) in enumerate(zip(input_lengths, target_lengths)):
        if targets.dim() == 2:
            labels = targets[b, :S_b].tolist()
        else:
            labels = targets[offset:offset + S_b].tolist()
            offset += S_b
        out.append(_nll_one(lp[:T_b, b], labels, blank))
    return torch.stack(out)
