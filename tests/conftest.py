"""Shared pytest configuration for the fastrnn test suite.

Everything every test file needs lives here, in one place:

* ``TOLERANCES``: the one per-dtype tolerance table (DESIGN.md section 4). Tests get it through the
  ``tol`` fixture (``tol(dtype)`` -> ``dict(rtol=..., atol=...)``) or compare through the
  ``assert_close`` fixture, which picks the tolerance from the expected tensor's dtype.
* ``_seed_per_test`` (autouse): seeds torch, ``random`` and numpy from a hash of the test's node id,
  so every test is reproducible on its own and different tests see different random inputs.
  The ``seed`` fixture returns that seed; ``rng`` gives a ``random.Random`` seeded from it (for
  choosing sizes, lengths, ...), independent of torch's generator.

* ``general_calls``: counts the calls that take the modules' general path (``_ops.run_rnn``),
  so tests can require the fast path, or its absence.

* ``input_grad_requests``: records whether each general backward (``_ops._backward``) was asked
  for the input's gradient.

``from conftest import ...`` is deliberately not the interface (it depends on rootdir/sys.path
details under pytest); use the fixtures.
"""

import hashlib
import random

import pytest
import torch

from fastrnn import _ops

try:  # numpy is a test dependency, but keep the seeding fixture usable without it
    import numpy as _np
except ImportError:  # pragma: no cover
    _np = None


# The one tolerance table. fp64: exact up to reduction order. fp32: rel 1e-5 on well-conditioned
# (O(1), small sizes) inputs. bf16/fp16: fp32 accumulation, result rounded to 8/11 mantissa bits.
TOLERANCES = {
    torch.float64: dict(rtol=1e-10, atol=1e-10),
    torch.float32: dict(rtol=1e-5, atol=1e-5),
    torch.bfloat16: dict(rtol=1e-2, atol=1e-2),
    torch.float16: dict(rtol=1e-2, atol=1e-2),
}


def tolerance(dtype):
    """rtol/atol for comparing results computed in ``dtype``."""
    try:
        return dict(TOLERANCES[dtype])
    except KeyError:
        raise KeyError(f"no tolerance defined for dtype {dtype}; add it to TOLERANCES in tests/conftest.py")


def _assert_close(actual, expected, dtype=None, msg=None, **overrides):
    """torch.testing.assert_close with the table's tolerance for ``dtype`` (default: expected's).

    Also checks dtype, device and shape equality (assert_close does) and that NaNs are in the same
    positions (equal_nan=True: NaN must match NaN).
    """
    if dtype is None:
        dtype = expected.dtype if isinstance(expected, torch.Tensor) else torch.float64
    kw = tolerance(dtype)
    kw.update(overrides)
    torch.testing.assert_close(actual, expected, equal_nan=True, msg=msg, **kw)


def _seed_from_nodeid(nodeid):
    return int.from_bytes(hashlib.sha256(nodeid.encode("utf-8")).digest()[:4], "little")


@pytest.fixture(autouse=True)
def _seed_per_test(request):
    """Seed every RNG from the test's node id (reproducible per test, different across tests)."""
    seed = _seed_from_nodeid(request.node.nodeid)
    torch.manual_seed(seed)
    random.seed(seed)
    if _np is not None:
        _np.random.seed(seed)
    return seed


@pytest.fixture
def seed(_seed_per_test):
    """The seed this test was given (already applied to torch, random and numpy)."""
    return _seed_per_test


@pytest.fixture
def rng(_seed_per_test):
    """A ``random.Random`` seeded per test, for drawing sizes/lengths without touching torch's RNG."""
    return random.Random(_seed_per_test ^ 0x5EED)


@pytest.fixture
def tol():
    """``tol(dtype)`` -> ``dict(rtol=..., atol=...)`` from the shared TOLERANCES table."""
    return tolerance


@pytest.fixture
def tolerances():
    """The whole shared tolerance table (a copy)."""
    return {k: dict(v) for k, v in TOLERANCES.items()}


@pytest.fixture
def assert_close():
    """``assert_close(actual, expected, dtype=None, msg=None, **overrides)`` using TOLERANCES."""
    return _assert_close


@pytest.fixture
def general_calls(monkeypatch):
    """Counts calls of the general path's entry (``_ops.run_rnn``) into the returned list."""
    calls = []
    original = _ops.run_rnn

    def counting(*args, **kwargs):
        calls.append(args[6])  # the cell name
        return original(*args, **kwargs)

    monkeypatch.setattr(_ops, "run_rnn", counting)
    return calls


@pytest.fixture
def input_grad_requests(monkeypatch):
    """Records, per call of the general backward (``_ops._backward``, which the op's and the
    eager path's autograd formulas reach), whether it was asked for the input's gradient."""
    asked = []
    original = _ops._backward

    def recording(*args, **kwargs):
        asked.append(args[-1])  # input_grad
        return original(*args, **kwargs)

    monkeypatch.setattr(_ops, "_backward", recording)
    return asked
