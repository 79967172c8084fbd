"""CTC decoding: greedy and prefix beam search against known answers and exhaustive search."""

import itertools
import math

import pytest
import torch

from fastrnn.ctc import ctc_loss
from fastrnn.decode import ctc_beam_search, ctc_greedy_decode

TOL = dict(rtol=1e-10, atol=1e-10)


def peaked(path, C, peak=0.9):
    """(T, C) log-probs whose argmax at step t is path[t]."""
    p = torch.full((len(path), C), (1 - peak) / (C - 1), dtype=torch.float64)
    p[torch.arange(len(path)), torch.tensor(path)] = peak
    return p.log()


def collapse(path, blank):
    out, prev = [], None
    for c in path:
        if c != prev and c != blank:
            out.append(c)
        prev = c
    return out


def labeling_log_prob(lp, labels, blank=0):
    """log p(labels | lp) for lp (T, C), from ctc_loss."""
    return -float(ctc_loss(lp.unsqueeze(1), torch.tensor([labels], dtype=torch.int64),
                           [lp.shape[0]], [len(labels)], blank=blank, reduction="sum"))


def test_greedy_known_answer():
    lp = peaked([1, 1, 0, 2, 2, 0, 0, 1, 3, 3], C=4)
    tokens, score = ctc_greedy_decode(lp)
    assert tokens == [1, 2, 1, 3]
    assert math.isclose(float(score), 10 * math.log(0.9), rel_tol=1e-12)


def test_greedy_batched_respects_lengths_and_blank():
    a = peaked([2, 2, 1, 0, 1, 1], C=3)
    b = peaked([0, 1, 1, 2, 2, 2], C=3)
    lp = torch.stack([a, b], 1)
    tokens, scores = ctc_greedy_decode(lp, input_lengths=[6, 3], blank=2)
    assert tokens == [[1, 0, 1], [0, 1]]
    assert scores.shape == (2,)
    assert math.isclose(float(scores[1]), 3 * math.log(0.9), rel_tol=1e-12)


def test_greedy_is_best_path_exhaustively():
    T, C = 4, 3
    lp = torch.randn(T, C, dtype=torch.float64).log_softmax(1)
    best = max(itertools.product(range(C), repeat=T),
               key=lambda path: sum(float(lp[t, c]) for t, c in enumerate(path)))
    tokens, score = ctc_greedy_decode(lp)
    assert tokens == collapse(best, 0)
    torch.testing.assert_close(score, torch.tensor(sum(float(lp[t, c]) for t, c in enumerate(best)),
                                                    dtype=torch.float64), **TOL)


def test_beam_search_known_answer():
    lp = peaked([1, 1, 0, 2, 2, 0, 0, 1, 3, 3], C=4, peak=0.97)
    [(labels, _)] = ctc_beam_search(lp, beam_width=4)
    assert labels == [1, 2, 1, 3]


@pytest.mark.parametrize("blank", [0, 2])
def test_beam_search_exact_against_exhaustive(blank):
    T, C = 5, 3
    lp = (2 * torch.randn(T, C, dtype=torch.float64)).log_softmax(1)
    labels_alphabet = [c for c in range(C) if c != blank]
    candidates = [list(seq) for n in range(T + 1)
                  for seq in itertools.product(labels_alphabet, repeat=n)]
    scored = sorted(((labeling_log_prob(lp, seq, blank), seq) for seq in candidates),
                    key=lambda x: -x[0])
    scored = [(s, seq) for s, seq in scored if s > -math.inf]
    results = ctc_beam_search(lp, beam_width=1000, blank=blank, num_results=5)
    assert [seq for _, seq in scored[:5]] == [labels for labels, _ in results]
    for (s, _), (_, score) in zip(scored, results):
        assert math.isclose(score, s, rel_tol=1e-9, abs_tol=1e-12)


def test_beam_search_batched_lengths_and_top_k():
    T, B, C = 8, 3, 6
    lp = torch.randn(T, B, C, dtype=torch.float64).log_softmax(2)
    lengths = [8, 5, 0]
    full = ctc_beam_search(lp, lengths, beam_width=16, num_results=3)
    pruned = ctc_beam_search(lp, lengths, beam_width=16, num_results=3, top_k=C)
    assert full == pruned  # top_k = C prunes nothing
    for b, n in enumerate(lengths):
        single = ctc_beam_search(lp[:n, b], beam_width=16, num_results=3)
        assert full[b] == single
    assert full[2] == [([], 0.0)]
    # Scores never exceed the exact probability of the labeling (beam search may miss paths).
    for labels, score in full[0]:
        assert score <= labeling_log_prob(lp[:, 0], labels) + 1e-9
    # A beam of one with top_k=1 follows the greedy path's labels here (peaked input).
    peaked_lp = peaked([1, 0, 2, 2, 0, 3], C=4, peak=0.99)
    [(labels, _)] = ctc_beam_search(peaked_lp, beam_width=1, top_k=1)
    assert labels == ctc_greedy_decode(peaked_lp)[0]


def test_decode_errors():
    lp = torch.randn(4, 2, 3).log_softmax(2)
    with pytest.raises(RuntimeError, match="batch_size"):
        ctc_greedy_decode(lp, input_lengths=[4])
    with pytest.raises(RuntimeError, match="input_lengths"):
        ctc_beam_search(lp, input_lengths=[5, 4])
    with pytest.raises(RuntimeError, match="blank"):
        ctc_greedy_decode(lp, blank=3)
    with pytest.raises(ValueError, match="beam_width"):
        ctc_beam_search(lp, beam_width=0)
