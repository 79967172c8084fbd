"""CTC decoding: greedy (best path) and prefix beam search, on CPU, in plain Python/torch.

Inputs follow ``ctc_loss``: ``log_probs`` of shape (T, B, C) (or unbatched (T, C)), with
``input_lengths`` (B,) giving each element's number of valid steps (default: all T). Labels are
class indices; ``blank`` is removed from the output and separates repeated labels.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence, Union

import torch
from torch import Tensor

from .ctc import _as_blank, _as_lengths

__all__ = ["ctc_greedy_decode", "ctc_beam_search"]

Lengths = Union[Tensor, Sequence[int], None]


def _normalize(log_probs: Tensor, input_lengths: Lengths, blank: int):
    """(log_probs as float64 (T, B, C) on CPU, lengths as ints, unbatched, blank as int), with the
    arguments checked as ctc_loss checks them (same error types)."""
    blank = _as_blank(blank)
    if not log_probs.is_floating_point():
        raise NotImplementedError("CTC decoding needs floating-point log_probs, got "
                                  f"{log_probs.dtype}")
    if log_probs.dim() not in (2, 3):
        raise RuntimeError(f"Expected log_probs of shape (T, B, C) or (T, C), "
                           f"but got {log_probs.dim()}-dimensional tensor")
    unbatched = log_probs.dim() == 2
    lp = log_probs.detach().to("cpu", torch.float64)
    if unbatched:
        lp = lp.unsqueeze(1)
    T, B, C = lp.shape
    if not 0 <= blank < C:
        raise RuntimeError("blank must be in label range")
    if input_lengths is None:
        lengths = [T] * B
    else:
        lengths = _as_lengths(input_lengths, "input_lengths", B).tolist()
        if any(n < 0 or n > T for n in lengths):
            raise RuntimeError(f"input_lengths must lie in [0, {T}]")
    return lp, lengths, unbatched, blank


def ctc_greedy_decode(log_probs: Tensor, input_lengths: Lengths = None, blank: int = 0):
    """Best-path decoding: the most probable class at each step, repeats merged, blanks removed.

    Returns ``(tokens, scores)``: ``tokens`` a list (one per batch element) of label lists and
    ``scores`` a float64 tensor (B,) with the log-probability of the best path (the sum of the
    per-step maxima over the element's valid steps). Ties go to the lowest class index.
    Unbatched input gives a single label list and a 0-d score.
    """
    lp, lengths, unbatched, blank = _normalize(log_probs, input_lengths, blank)
    best, best_idx = lp.max(dim=2)  # (T, B)
    tokens, scores = [], []
    for b, n in enumerate(lengths):
        path = best_idx[:n, b].tolist()
        out, prev = [], None
        for c in path:
            if c != prev and c != blank:
                out.append(c)
            prev = c
        tokens.append(out)
        scores.append(float(best[:n, b].sum()))
    scores_t = torch.tensor(scores, dtype=torch.float64)
    return (tokens[0], scores_t[0]) if unbatched else (tokens, scores_t)


def _logaddexp(a: float, b: float) -> float:
    if a == -math.inf:
        return b
    if b == -math.inf:
        return a
    m = max(a, b)
    return m + math.log1p(math.exp(-abs(a - b)))


def _beam_search_one(rows: list[list[float]], beam_width: int, blank: int,
                     top_k: Optional[int]) -> list[tuple[list[int], float]]:
    ninf = -math.inf
    # prefix -> [log p(prefix, ending in blank), log p(prefix, ending in its last label)]
    beams: dict[tuple, list[float]] = {(): [0.0, ninf]}
    for row in rows:
        if top_k is not None and top_k < len(row):
            candidates = sorted(range(len(row)), key=lambda c: (-row[c], c))[:top_k]
        else:
            candidates = range(len(row))
        candidates = [c for c in candidates if c != blank]
        nxt: dict[tuple, list[float]] = {}

        def slot(prefix):
            if prefix not in nxt:
                nxt[prefix] = [ninf, ninf]
            return nxt[prefix]

        for prefix, (p_b, p_nb) in beams.items():
            total = _logaddexp(p_b, p_nb)
            s = slot(prefix)
            s[0] = _logaddexp(s[0], total + row[blank])
            last = prefix[-1] if prefix else None
            for c in candidates:
                p = row[c]
                ext = slot(prefix + (c,))
                if c == last:
                    # A repeat merges with the last label unless a blank separates them.
                    s[1] = _logaddexp(s[1], p_nb + p)
                    ext[1] = _logaddexp(ext[1], p_b + p)
                else:
                    ext[1] = _logaddexp(ext[1], total + p)
        ranked = sorted(nxt.items(), key=lambda kv: (-_logaddexp(*kv[1]), kv[0]))
        beams = dict(ranked[:beam_width])
    ranked = sorted(beams.items(), key=lambda kv: (-_logaddexp(*kv[1]), kv[0]))
    return [(list(prefix), _logaddexp(*probs)) for prefix, probs in ranked]


def ctc_beam_search(log_probs: Tensor, input_lengths: Lengths = None, beam_width: int = 8,
                    blank: int = 0, top_k: Optional[int] = None, num_results: int = 1):
    """Prefix beam search: keeps the ``beam_width`` most probable label prefixes, each scored by
    the total probability of all its alignments seen so far (blank- and label-ending paths kept
    apart so that repeats merge correctly).

    top_k: consider only the top_k classes of each step (plus blank), which bounds the work per
    step for large alphabets. Ties are broken by the label sequence, so results are deterministic.
    Returns, per batch element, a list of up to ``num_results`` ``(labels, log_prob)`` pairs, best
    first (unbatched input: the list for its one element). With a beam at least as large as the
    number of distinct prefixes, the search is exact and log_prob = -ctc_loss of those labels.
    """
    if beam_width < 1 or num_results < 1 or (top_k is not None and top_k < 1):
        raise ValueError("beam_width, num_results and top_k must be >= 1")
    lp, lengths, unbatched, blank = _normalize(log_probs, input_lengths, blank)
    results = []
    for b, n in enumerate(lengths):
        hyps = _beam_search_one(lp[:n, b].tolist(), beam_width, blank, top_k)
        results.append(hyps[:num_results])
    return results[0] if unbatched else results
