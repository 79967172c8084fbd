"""CTC loss: fastrnn.ctc against F.ctc_loss, the float64 reference and hand-computed cases;
gradients (gradcheck), custom-op registration (opcheck), determinism, errors, and CUDA vs CPU.

Torch's gradient for an element whose loss is inf is NaN unless zero_infinity; fastrnn's is 0
(see python/fastrnn/ctc.py), so comparisons with torch mask those elements and check for zeros.
"""

import math

import pytest
import torch
import torch.nn.functional as F

from fastrnn.ctc import CTCLoss, _ctc_loss_backward_op, _ctc_loss_op, _prepare, ctc_loss, \
    ctc_loss_from_logits
from fastrnn.reference.ctc import ctc_nll

# Losses are sums over up to T*L log-add-exp steps, so fp32 gets a little more room than 1e-5.
TOL = {
    torch.float64: dict(rtol=1e-10, atol=1e-10),
    torch.float32: dict(rtol=2e-5, atol=2e-5),
}

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def close(actual, expected, dtype=None):
    torch.testing.assert_close(actual, expected, equal_nan=True,
                               **TOL[dtype or expected.dtype])


def random_problem(T=20, B=4, C=6, S=6, dtype=torch.float64, blank=0, layout="padded",
                   impossible=False, device="cpu"):
    """Random log-probs (never zeros) and targets with labels != blank; with impossible=True the
    first element's target cannot be aligned (more labels than steps, plus a repeat)."""
    logits = torch.randn(T, B, C, dtype=dtype)
    labels = [c for c in range(C) if c != blank]
    targets = torch.tensor(labels)[torch.randint(0, len(labels), (B, S))]
    input_lengths = torch.randint(max(1, T // 2), T + 1, (B,))
    input_lengths[-1] = T
    target_lengths = torch.randint(0, S + 1, (B,))
    target_lengths[0] = S
    if impossible:
        input_lengths[0] = S - 1
        targets[0, 1] = targets[0, 0]
    if layout == "concat":
        targets = torch.cat([targets[b, :target_lengths[b]] for b in range(B)])
    return logits.log_softmax(2).to(device), targets.to(device), input_lengths, target_lengths


def loss_and_grad(fn, log_probs, *args, **kw):
    leaf = log_probs.detach().clone().requires_grad_()
    loss = fn(leaf, *args, **kw)
    (grad,) = torch.autograd.grad(loss.sum(), leaf)
    return loss.detach(), grad


# ------------------------------------------------------------------------------------------
# Against torch


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
@pytest.mark.parametrize("zero_infinity", [False, True])
@pytest.mark.parametrize("layout", ["padded", "concat"])
@pytest.mark.parametrize("blank", [0, 3, 6])
@pytest.mark.parametrize("impossible", [False, True])
def test_matches_torch(dtype, reduction, zero_infinity, layout, blank, impossible):
    lp, targets, il, tl = random_problem(T=16, B=4, C=7, S=5, dtype=dtype, blank=blank,
                                         layout=layout, impossible=impossible)
    kw = dict(blank=blank, reduction=reduction, zero_infinity=zero_infinity)
    loss, grad = loss_and_grad(ctc_loss, lp, targets, il, tl, **kw)
    ref_loss, ref_grad = loss_and_grad(F.ctc_loss, lp, targets, il, tl, **kw)
    close(loss, ref_loss)
    if impossible and not zero_infinity:
        assert torch.all(grad[:, 0] == 0)
        grad, ref_grad = grad[:, 1:], ref_grad[:, 1:]
    assert not torch.isnan(grad).any()
    close(grad, ref_grad)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_larger_problem_matches_torch(dtype):
    lp, targets, il, tl = random_problem(T=120, B=5, C=30, S=40, dtype=dtype)
    loss, grad = loss_and_grad(ctc_loss, lp, targets, il, tl, reduction="none")
    ref_loss, ref_grad = loss_and_grad(F.ctc_loss, lp, targets, il, tl, reduction="none")
    close(loss, ref_loss)
    close(grad, ref_grad)


@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
def test_unbatched(reduction):
    lp, targets, il, tl = random_problem(T=12, B=1, C=5, S=4)
    args = (lp[:, 0], targets[0], il[0], tl[0])
    loss, grad = loss_and_grad(ctc_loss, *args, reduction=reduction)
    ref_loss, ref_grad = loss_and_grad(F.ctc_loss, *args, reduction=reduction)
    assert loss.shape == ref_loss.shape == torch.Size([])
    close(loss, ref_loss)
    close(grad, ref_grad)


def test_lengths_as_sequences_and_int32_targets():
    lp, targets, il, tl = random_problem(T=10, B=3, C=5, S=3)
    ref = F.ctc_loss(lp, targets, il, tl, reduction="none")
    close(ctc_loss(lp, targets.int(), tuple(il.tolist()), list(tl.tolist()), reduction="none"), ref)


def test_non_contiguous_input():
    lp, targets, il, tl = random_problem(T=10, B=3, C=5, S=3)
    batch_first = lp.transpose(0, 1).contiguous()
    close(ctc_loss(batch_first.transpose(0, 1), targets, il, tl),
          F.ctc_loss(lp, targets, il, tl))


def test_module_is_torch_ctcloss():
    lp, targets, il, tl = random_problem(T=10, B=3, C=5, S=3, blank=2)
    mine = CTCLoss(blank=2, reduction="sum", zero_infinity=True)
    assert isinstance(mine, torch.nn.CTCLoss)
    close(mine(lp, targets, il, tl), torch.nn.CTCLoss(blank=2, reduction="sum",
                                                      zero_infinity=True)(lp, targets, il, tl))


# ------------------------------------------------------------------------------------------
# Reference and hand-computed values


@pytest.mark.parametrize("blank", [0, 4])
def test_matches_reference_including_edge_lengths(blank):
    lp, targets, il, tl = random_problem(T=9, B=5, C=5, S=4, blank=blank)
    il[1], tl[1] = 0, 0  # empty input, empty target: probability 1
    il[2], tl[2] = 0, 2  # empty input, non-empty target: impossible
    tl[3] = 0            # empty target: all blanks
    il[4] = 1
    loss, grad = loss_and_grad(ctc_loss, lp, targets, il, tl, blank=blank, reduction="none")
    close(loss, ctc_nll(lp, targets, il, tl, blank=blank))
    assert loss[1] == 0 and loss[2] == math.inf
    assert torch.all(grad[:, 1:3] == 0)

    # The reference's autograd gradient is the exact one w.r.t. log_probs; ours equals it after a
    # log_softmax backward, so compare w.r.t. the logits of a log_softmax.
    logits = lp.detach().clone().requires_grad_()
    keep = [0, 3, 4]
    (g_mine,) = torch.autograd.grad(
        ctc_loss(logits.log_softmax(2), targets, il, tl, blank=blank, reduction="none")[keep]
        .sum(), logits)
    (g_ref,) = torch.autograd.grad(
        ctc_nll(logits.log_softmax(2), targets, il, tl, blank=blank)[keep].sum(), logits)
    close(g_mine, g_ref)


def probs_problem(probs, labels):
    """log_probs (T, 1, C) from a table of probabilities, target (1, S)."""
    p = torch.tensor(probs, dtype=torch.float64)
    return (p.log().unsqueeze(1), torch.tensor([labels], dtype=torch.int64),
            torch.tensor([p.shape[0]]), torch.tensor([len(labels)]))


@pytest.mark.parametrize("probs, labels, expected", [
    # T=1, one label: the only path emits it.
    ([[0.25, 0.75]], [1], 0.75),
    # T=2, target "1": paths 11, 1-, -1.
    ([[0.4, 0.6], [0.3, 0.7]], [1], 0.6 * 0.7 + 0.6 * 0.3 + 0.4 * 0.7),
    # T=2, empty target: -- only.
    ([[0.4, 0.6], [0.3, 0.7]], [], 0.4 * 0.3),
    # T=2, "11" needs a blank between the repeats: impossible.
    ([[0.4, 0.6], [0.3, 0.7]], [1, 1], 0.0),
    # T=3, "11": only 1-1.
    ([[0.1, 0.9], [0.2, 0.8], [0.3, 0.7]], [1, 1], 0.9 * 0.2 * 0.7),
    # T=2, "12": only 12.
    ([[0.2, 0.5, 0.3], [0.1, 0.3, 0.6]], [1, 2], 0.5 * 0.6),
])
def test_hand_computed(probs, labels, expected):
    lp, targets, il, tl = probs_problem(probs, labels)
    loss = ctc_loss(lp, targets, il, tl, reduction="none")
    expected_loss = torch.tensor([-math.log(expected) if expected > 0 else math.inf],
                                 dtype=torch.float64)
    close(loss, expected_loss)


def test_exact_score_and_gradient_t3():
    # T=3, C=3, target "12": paths 12-, 1-2, -12, 112, 122 with probabilities from the table.
    probs = [[0.5, 0.4, 0.1], [0.2, 0.3, 0.5], [0.6, 0.1, 0.3]]
    y = probs
    paths = [(1, 2, 0), (1, 0, 2), (0, 1, 2), (1, 1, 2), (1, 2, 2)]
    p = sum(y[0][a] * y[1][b] * y[2][c] for a, b, c in paths)
    lp, targets, il, tl = probs_problem(probs, [1, 2])
    loss, grad = loss_and_grad(ctc_loss, lp, targets, il, tl, reduction="sum")
    close(loss, torch.tensor(-math.log(p), dtype=torch.float64))
    # grad[t, c] = y_t(c) - (1/p) * sum of the probabilities of the paths through c at t.
    expected = torch.tensor(probs, dtype=torch.float64)
    for t in range(3):
        for c in range(3):
            through = sum(y[0][a] * y[1][b] * y[2][d] for a, b, d in paths if (a, b, d)[t] == c)
            expected[t, c] -= through / p
    close(grad[:, 0], expected)


# ------------------------------------------------------------------------------------------
# Fused logits variant


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("reduction", ["none", "mean"])
def test_from_logits_matches_log_softmax_then_torch(dtype, reduction):
    _, targets, il, tl = random_problem(T=15, B=4, C=9, S=5, dtype=dtype, impossible=True)
    logits = (3 * torch.randn(15, 4, 9, dtype=dtype)).requires_grad_()
    kw = dict(reduction=reduction, zero_infinity=True)
    loss = ctc_loss_from_logits(logits, targets, il, tl, **kw)
    (grad,) = torch.autograd.grad(loss.sum(), logits)
    ref = F.ctc_loss(logits.log_softmax(2), targets, il, tl, **kw)
    (ref_grad,) = torch.autograd.grad(ref.sum(), logits)
    close(loss.detach(), ref.detach())
    close(grad, ref_grad)


# ------------------------------------------------------------------------------------------
# Gradient checks, op registration, double backward


def test_gradcheck_from_logits():
    _, targets, il, tl = random_problem(T=7, B=3, C=4, S=3, layout="concat")
    logits = torch.randn(7, 3, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda x: ctc_loss_from_logits(x, targets, il, tl, reduction="none"), (logits,))


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_gradcheck_through_log_softmax(reduction):
    _, targets, il, tl = random_problem(T=6, B=2, C=4, S=2, blank=1)
    logits = torch.randn(6, 2, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda x: ctc_loss(x.log_softmax(2), targets, il, tl, blank=1, reduction=reduction),
        (logits,))


@pytest.mark.parametrize("from_logits", [False, True])
def test_opcheck(from_logits):
    lp, targets, il, tl = random_problem(T=8, B=3, C=5, S=3, dtype=torch.float64)
    p = _prepare(lp, targets, il, tl, 0, "none", "log_probs")
    x = p["input"].detach().requires_grad_()
    args = (x, p["targets"], p["target_offsets"], p["input_lengths"], p["target_lengths"],
            p["max_target"], 0, False, from_logits, True)
    torch.library.opcheck(_ctc_loss_op, args)
    torch.library.opcheck(_ctc_loss_op, (x.detach(), *args[1:9], False))
    _, log_alpha, row_lse = _ctc_loss_op(*args)
    grad_loss = torch.rand(3, dtype=torch.float64) + 0.5
    torch.library.opcheck(_ctc_loss_backward_op,
                          (grad_loss, x.detach(), *args[1:5], log_alpha.detach(),
                           row_lse.detach(), 0, from_logits),
                          test_utils=("test_schema", "test_faketensor",
                                      "test_aot_dispatch_dynamic"))


@pytest.mark.slow
def test_op_compiles_fullgraph():
    # The public function validates on the host (as torch's does); the op itself traces whole.
    lp, targets, il, tl = random_problem(T=10, B=3, C=5, S=4, dtype=torch.float32)
    p = _prepare(lp, targets, il, tl, 0, "none", "log_probs")
    rest = (p["targets"], p["target_offsets"], p["input_lengths"], p["target_lengths"])

    def f(x, *rest):
        loss, _, _ = _ctc_loss_op(x, *rest, p["max_target"], 0, False, False, True)
        return loss.sum()

    x = p["input"].detach().requires_grad_()
    out = torch.compile(f, fullgraph=True, backend="aot_eager")(x, *rest)
    (grad,) = torch.autograd.grad(out, x)
    ref, ref_grad = loss_and_grad(F.ctc_loss, lp, targets, il, tl, reduction="sum")
    close(out.detach(), ref)
    close(grad, ref_grad)


def test_empty_batch():
    # torch raises for an empty log_probs tensor; fastrnn returns the empty reductions.
    lp = torch.randn(5, 0, 4).log_softmax(2).requires_grad_()
    empty = torch.zeros(0, dtype=torch.int64)
    loss = ctc_loss(lp, torch.zeros(0, 3, dtype=torch.int64), empty, empty, reduction="none")
    assert loss.shape == (0,)
    total = ctc_loss(lp, torch.zeros(0, 3, dtype=torch.int64), empty, empty, reduction="sum")
    total.backward()
    assert total.item() == 0 and lp.grad.shape == lp.shape


def test_double_backward_raises():
    lp, targets, il, tl = random_problem(T=6, B=2, C=4, S=2)
    leaf = lp.detach().requires_grad_()
    (grad,) = torch.autograd.grad(ctc_loss(leaf, targets, il, tl), leaf, create_graph=True)
    with pytest.raises(RuntimeError, match="double backward"):
        grad.sum().backward()


# ------------------------------------------------------------------------------------------
# Determinism


@pytest.mark.parametrize("from_logits", [False, True])
def test_bitwise_deterministic_across_runs_and_threads(from_logits):
    lp, targets, il, tl = random_problem(T=60, B=7, C=12, S=15, dtype=torch.float32)
    fn = ctc_loss_from_logits if from_logits else ctc_loss
    old = torch.get_num_threads()
    results = []
    try:
        for threads in (1, 2, 3, 1, 8):
            torch.set_num_threads(threads)
            results.append(loss_and_grad(fn, lp, targets, il, tl, reduction="none"))
    finally:
        torch.set_num_threads(old)
    for loss, grad in results[1:]:
        assert torch.equal(loss, results[0][0])
        assert torch.equal(grad, results[0][1])
    with torch.no_grad():  # the loss-only path (no stored alpha) gives the same bits
        assert torch.equal(fn(lp, targets, il, tl, reduction="none"), results[0][0])


@pytest.mark.parametrize("isa", ["generic", "avx2", "avx512", "avx512bf16"])
def test_every_cpu_isa(isa):
    from fastrnn import _C
    rank = ["generic", "avx2", "avx512", "avx512bf16"]
    if rank.index(isa) > rank.index(_C.best_cpu_isa()):
        pytest.skip(f"{isa} is not supported by this CPU or build")
    lp, targets, il, tl = random_problem(T=40, B=5, C=9, S=12, dtype=torch.float32, blank=4,
                                         impossible=True)
    kw = dict(blank=4, reduction="none")
    previous = _C.cpu_isa()
    _C.set_cpu_isa(isa)
    try:
        first = loss_and_grad(ctc_loss, lp, targets, il, tl, **kw)
        second = loss_and_grad(ctc_loss, lp, targets, il, tl, **kw)
    finally:
        _C.set_cpu_isa(previous)
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    ref_loss, ref_grad = loss_and_grad(F.ctc_loss, lp, targets, il, tl, **kw)
    close(first[0], ref_loss)
    close(first[1][:, 1:], ref_grad[:, 1:])


# ------------------------------------------------------------------------------------------
# Errors (torch's exception types)


def error_cases():
    lp, targets, il, tl = random_problem(T=6, B=2, C=4, S=3)
    T = 6
    yield "il > T", (lp, targets, torch.tensor([T + 1, T]), tl), {}, RuntimeError, "at most"
    yield "il < 0", (lp, targets, torch.tensor([-1, T]), tl), {}, RuntimeError, "at least 0"
    yield "tl > S", (lp, targets, il, torch.tensor([4, 1])), {}, RuntimeError, "size at least"
    yield "tl < 0", (lp, targets, il, torch.tensor([-1, 1])), {}, RuntimeError, "at least 0"
    yield "label >= C", (lp, torch.tensor([[1, 4, 1], [1, 1, 1]]), il, tl), {}, RuntimeError, \
        "out of range"
    yield "label < 0", (lp, torch.tensor([[1, -1, 1], [1, 1, 1]]), il, tl), {}, RuntimeError, \
        "out of range"
    yield "label == blank", (lp, torch.tensor([[1, 0, 1], [1, 1, 1]]), il, tl), {}, \
        RuntimeError, "blank"
    yield "float targets", (lp, targets.float(), il, tl), {}, RuntimeError, "integral"
    yield "float lengths", (lp, targets, il.float(), tl), {}, RuntimeError, "integral"
    yield "half log_probs", (lp.half(), targets, il, tl), {}, NotImplementedError, "float32"
    yield "blank = C", (lp, targets, il, tl), dict(blank=4), RuntimeError, "blank"
    yield "blank < 0", (lp, targets, il, tl), dict(blank=-1), RuntimeError, "blank"
    yield "reduction", (lp, targets, il, tl), dict(reduction="avg"), ValueError, "reduction"
    yield "il size", (lp, targets, il[:1], tl), {}, RuntimeError, "batch_size"
    yield "tl size", (lp, targets, il, tl[:1]), {}, RuntimeError, "batch_size"
    yield "concat short", (lp, torch.tensor([1, 2]), il, torch.tensor([2, 1])), {}, \
        RuntimeError, "size 3"
    yield "targets batch", (lp, targets[:1], il, tl), {}, RuntimeError, "dimension 0"
    yield "4-d log_probs", (lp.unsqueeze(0), targets, il, tl), {}, RuntimeError, "dimensional"
    yield "3-d targets", (lp, targets.unsqueeze(0), il, tl), {}, RuntimeError, "dimensions"


@pytest.mark.parametrize("case", list(error_cases()), ids=lambda c: c[0])
def test_errors_match_torch_types(case):
    _, args, kw, exc, match = case
    with pytest.raises(exc, match=match):
        ctc_loss(*args, **kw)


def test_native_core_rejects_bad_lengths():
    lp, targets, il, tl = random_problem(T=6, B=2, C=4, S=3)
    p = _prepare(lp, targets, il, tl, 0, "none", "log_probs")
    bad = p["input_lengths"].clone()
    bad[0] = 7
    with pytest.raises(ValueError, match="input length"):
        _ctc_loss_op(p["input"], p["targets"], p["target_offsets"], bad, p["target_lengths"],
                     p["max_target"], 0, False, False, True)


# ------------------------------------------------------------------------------------------
# CUDA (run on a GPU machine)


@requires_cuda
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("from_logits", [False, True])
@pytest.mark.parametrize("layout", ["padded", "concat"])
def test_cuda_matches_cpu(dtype, from_logits, layout):
    lp, targets, il, tl = random_problem(T=40, B=6, C=11, S=12, dtype=dtype, blank=3,
                                         layout=layout, impossible=True)
    fn = ctc_loss_from_logits if from_logits else ctc_loss
    kw = dict(blank=3, reduction="none")
    loss, grad = loss_and_grad(fn, lp, targets, il, tl, **kw)
    loss_cuda, grad_cuda = loss_and_grad(fn, lp.cuda(), targets.cuda(), il.cuda(), tl.cuda(),
                                         **kw)
    close(loss_cuda.cpu(), loss)
    close(grad_cuda.cpu(), grad)


@requires_cuda
@pytest.mark.parametrize("S", [30, 3000])  # shared-memory rows, and global-memory rows
def test_cuda_long_targets_and_determinism(S):
    T = S + S // 4 + 20  # room for the repeats of random labels
    lp, targets, il, tl = random_problem(T=T, B=3, C=50, S=S, dtype=torch.float64)
    il[:] = T
    # float64 against the CPU: fp32 gradients of sequences this long carry ~1e-3 absolute error
    # in any log-space implementation (alpha + beta - log p cancels), torch's included.
    loss, grad = loss_and_grad(ctc_loss, lp.cuda(), targets.cuda(), il, tl, reduction="none")
    ref_loss, ref_grad = loss_and_grad(ctc_loss, lp, targets, il, tl, reduction="none")
    assert torch.isfinite(ref_loss).all()
    torch.testing.assert_close(loss.cpu(), ref_loss, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(grad.cpu(), ref_grad, rtol=1e-9, atol=1e-9)
    # fp32: bitwise repeatable, with and without the stored alpha.
    args = (lp.float().cuda(), targets.cuda(), il, tl)
    first = loss_and_grad(ctc_loss, *args, reduction="none")
    second = loss_and_grad(ctc_loss, *args, reduction="none")
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    with torch.no_grad():
        assert torch.equal(ctc_loss(*args, reduction="none"), first[0])


@requires_cuda
def test_cuda_opcheck():
    lp, targets, il, tl = random_problem(T=8, B=3, C=5, S=3, device="cuda")
    p = _prepare(lp, targets, il, tl, 0, "none", "log_probs")
    torch.library.opcheck(_ctc_loss_op, (p["input"].requires_grad_(), p["targets"],
                                         p["target_offsets"], p["input_lengths"],
                                         p["target_lengths"], p["max_target"], 0, False, False,
                                         True))
