"""Tensor plumbing for the batching rules (torch.func.vmap) of fastrnn's autograd Functions.

A rule gets its arguments without the vmapped dimension's wrapper: each tensor either carries
that dimension (of size ``n``) at a physical position ``dim``, or does not (``dim`` None: the
same value for every sample). The RNN's rules (``_ops``) run a vmapped call either as one
call with the vmapped dimension folded into the batch, where a sample's rows are independent of
the others' (``fold_rows``, ``unfold_rows``), or as one call per sample (``per_sample``).

A reserve (what backward reads) is a sequence of [rows, width] blocks (rnn.h, ReserveLayout),
rows step-major. Between the rules it travels per sample, [n, one sample's reserve]:
``reserve_per_sample`` and ``reserve_folded`` convert a folded call's reserve to and from that.
"""

from __future__ import annotations

from typing import Callable, List, Optional, Sequence

import torch
from torch import Tensor


def fold_rows(t: Optional[Tensor], dim: Optional[int], n: int, at: int = 1) -> Optional[Tensor]:
    """A sample's tensor with its batch at dimension ``at`` (the RNN's [A, B, C]: steps or
    layers, batch, features) as one with n times the batch there, samples outermost; one
    without the vmapped dimension is repeated n times."""
    if t is None:
        return None
    if dim is None:
        t = t.unsqueeze(at).expand(*t.shape[:at], n, *t.shape[at:])
    else:
        t = t.movedim(dim, at)
    return t.flatten(at, at + 1)


def unfold_rows(t: Tensor, n: int, at: int = 1) -> Tensor:
    """fold_rows undone: n * B at ``at`` as [n, B], the vmapped dimension at ``at``."""
    return t.view(*t.shape[:at], n, -1, *t.shape[at + 1:])


def _blocks(reserve: Tensor, rows: int, widths: Sequence[int], dim: int) -> List[Tensor]:
    return list(reserve.split([rows * w for w in widths], dim=dim))


def reserve_per_sample(reserve: Tensor, steps: int, n: int, batch: int,
                       widths: Sequence[int]) -> Tensor:
    """The reserve of a call over [steps, n * batch] rows (fold_rows) as [n, one sample's
    reserve over its [steps, batch] rows]."""
    return torch.cat([block.view(steps, n, batch, w).movedim(1, 0).reshape(n, -1)
                      for block, w in zip(_blocks(reserve, steps * n * batch, widths, 0),
                                          widths)], dim=1)


def reserve_folded(reserve: Tensor, steps: int, n: int, batch: int,
                   widths: Sequence[int]) -> Tensor:
    """reserve_per_sample undone: [n, one sample's reserve] as a folded call's reserve."""
    return torch.cat([block.view(n, steps, batch, w).movedim(0, 1).reshape(-1)
                      for block, w in zip(_blocks(reserve, steps * batch, widths, 1), widths)])


def per_sample(apply: Callable, n: int, in_dims: Sequence[Optional[int]], args: Sequence,
               stack: Callable[[List[Tensor]], Tensor] = torch.stack):
    """(results, out_dims) of one ``apply(*args)`` per sample: a tensor result, or each of a
    tuple's, stacked by ``stack`` along a new dimension 0. Arguments that are not tensors pass
    as they are (vmap gives them in_dims shaped like them, of None)."""
    results = [apply(*(a.select(d, i) if isinstance(a, Tensor) and d is not None else a
                       for a, d in zip(args, in_dims)))
               for i in range(n)]
    if isinstance(results[0], Tensor):
        return stack(results), 0
    stacked = tuple(stack(list(r)) for r in zip(*results))
    return stacked, (0,) * len(stacked)
