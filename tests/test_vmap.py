"""torch.func.vmap over fastrnn's modules and cells, and what is built on it: per-sample
gradients (vmap of grad), torch.func.jacrev (vmap of the backward), ensembles (vmap over stacked
weights). torch's own RNN modules have no batching rule; the references are torch's modules
called once per sample (and torch.func.jacrev on torch's modules, which it can run). The CTC
losses are held to torch's ``F.ctc_loss`` called per sample the same way.

The batching rules fold the vmapped dimension into the batch where the weights are the same for
every sample, and call once per sample otherwise: the tests count the native calls
(``native_calls``) to hold each case to the way it should run.
"""

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, jacrev, stack_module_state, vmap
from torch.nn.utils.rnn import pack_sequence

import fastrnn
from fastrnn import _C, _ops
from pairs import flat_tensors, make_pair

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not (torch.cuda.is_available() and fastrnn.cuda_build_available()),
    reason="needs a CUDA device and a build with the CUDA module"))]

# (torch class, constructor arguments, keyword arguments); input_size 3, hidden_size 5.
MODULES = {
    "lstm_proj_bidir": (nn.LSTM, (3, 5), dict(num_layers=2, bidirectional=True, proj_size=2)),
    "gru_batch_first": (nn.GRU, (3, 5), dict(num_layers=2, batch_first=True)),
    "rnn_relu_bidir": (nn.RNN, (3, 5), dict(nonlinearity="relu", bidirectional=True)),
    "lstm_cell": (nn.LSTMCell, (3, 5), {}),
    "gru_cell": (nn.GRUCell, (3, 5), {}),
    "rnn_cell": (nn.RNNCell, (3, 5), dict(bias=False)),
}
STEPS, BATCH, SAMPLES = 4, 2, 3


@pytest.fixture
def native_calls(monkeypatch):
    """Counts the general path's native forwards and backwards (``_ops._forward``,
    ``_ops._backward``): {"forward": n, "backward": n}; ``calls.kept`` lists each forward's
    keep_reserve."""

    class Calls(dict):
        kept = []

    calls = Calls(forward=0, backward=0)
    for name in list(calls):
        original = getattr(_ops, "_" + name)

        def counting(*args, name=name, original=original, **kwargs):
            calls[name] += 1
            if "keep_reserve" in kwargs:
                calls.kept.append(kwargs["keep_reserve"])
            return original(*args, **kwargs)

        monkeypatch.setattr(_ops, "_" + name, counting)
    return calls


@pytest.fixture(params=[True, False], ids=["grad", "no_grad"])
def grad_mode(request):
    """The test runs with grad mode on, then off."""
    with torch.set_grad_enabled(request.param):
        yield request.param


def _pair(kind, device, dtype=torch.float64):
    torch_cls, args, kwargs = MODULES[kind]
    ref, mod = make_pair(torch_cls, *args, **kwargs)
    return ref.to(device, dtype), mod.to(device, dtype)


def _is_cell(kind):
    return kind.endswith("_cell")


def _sample(kind, device, dtype=torch.float64, batched=True):
    """One sample's input: [T, B, 3] ([B, T, 3] batch_first, [T, 3] unbatched) for a module,
    [B, 3] ([3]) for a cell."""
    shape = ((BATCH,) if batched else ()) + (3,)
    if not _is_cell(kind):
        shape = ((BATCH, STEPS) if MODULES[kind][2].get("batch_first") else (STEPS, BATCH))[
            :1 + batched] + (3,)
    return torch.randn(*shape, dtype=dtype, device=device)


def _samples_and_parameters(kind, device):
    """(torch's module, fastrnn's, SAMPLES samples stacked, fastrnn's parameters detached)."""
    ref, mod = _pair(kind, device)
    xs = torch.stack([_sample(kind, device) for _ in range(SAMPLES)])
    return ref, mod, xs, {k: v.detach() for k, v in mod.named_parameters()}


def _state(kind, module, like):
    """An initial state for ``module`` and one sample ``like`` (batched or not)."""
    batch = (BATCH,) if like.dim() == (2 if _is_cell(kind) else 3) else ()
    if _is_cell(kind):
        h = like.new_zeros(*batch, module.hidden_size).normal_()
        return (h, torch.randn_like(h)) if isinstance(module, nn.LSTMCell) else h
    layers = module.num_layers * (2 if module.bidirectional else 1)
    h = like.new_zeros(layers, *batch, module.proj_size or module.hidden_size).normal_()
    if isinstance(module, nn.LSTM):
        return h, like.new_zeros(layers, *batch, module.hidden_size).normal_()
    return h


def _stacked(results):
    return tuple(torch.stack(parts) for parts in zip(*results))


def _weighted_sum(tensors):
    """A loss that weighs every element differently, so each gradient entry is checked."""
    return sum((t * torch.linspace(-1, 1, t.numel(), dtype=t.dtype, device=t.device)
                .view_as(t)).sum() for t in tensors)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("batched", [True, False])
@pytest.mark.parametrize("kind", MODULES)
def test_vmap_over_inputs_and_states_is_one_call(kind, batched, grad_mode, device, native_calls,
                                                 assert_close):
    """With grad mode off (inference) nothing is kept for a backward: no reserve."""
    ref, mod = _pair(kind, device)
    xs = torch.stack([_sample(kind, device, batched=batched) for _ in range(SAMPLES)])
    states = [_state(kind, ref, xs[0]) for _ in range(SAMPLES)]
    hs = _stacked([flat_tensors(s) for s in states])
    # Inputs and states vmapped, then inputs vmapped with one state for all samples.
    pack = (lambda h: tuple(h)) if isinstance(ref, (nn.LSTM, nn.LSTMCell)) else (lambda h: h[0])
    got = vmap(lambda x, h: flat_tensors(mod(x, pack(h))))(xs, hs)
    want = _stacked([flat_tensors(ref(x, s)) for x, s in zip(xs, states)])
    assert native_calls["forward"] == 1
    for g, w in zip(got, want, strict=True):
        assert_close(g, w)
    got = vmap(lambda x: flat_tensors(mod(x, states[0])))(xs)
    want = _stacked([flat_tensors(ref(x, states[0])) for x in xs])
    for g, w in zip(got, want, strict=True):
        assert_close(g, w)
    assert native_calls == {"forward": 2, "backward": 0}
    assert native_calls.kept == [grad_mode] * 2


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind", MODULES)
def test_vmap_over_stacked_weights_runs_each_member(kind, grad_mode, device, native_calls,
                                                    assert_close):
    members = [_pair(kind, device) for _ in range(SAMPLES)]
    params, buffers = stack_module_state([mod for _, mod in members])
    x = _sample(kind, device)
    got = vmap(lambda p, b: flat_tensors(functional_call(members[0][1], (p, b), (x,))))(params, buffers)
    want = _stacked([flat_tensors(ref(x)) for ref, _ in members])
    for g, w in zip(got, want, strict=True):
        assert_close(g, w)
    assert native_calls == {"forward": SAMPLES, "backward": 0}
    assert native_calls.kept == [grad_mode] * SAMPLES


def _sample_loss(mod):
    """One sample's loss (a weighted sum of all of mod's outputs) as a function of mod's
    parameters and the sample, for torch.func.grad."""
    return lambda params, x: _weighted_sum(flat_tensors(functional_call(mod, params, (x,))))


def _assert_per_sample_gradients(ref, xs, got_params, got_inputs, assert_close):
    """Per-sample gradients of _sample_loss (a dict of stacked parameter gradients and, unless
    None, the stacked input gradients) against torch's autograd on ref, one sample at a time."""
    names, leaves = zip(*ref.named_parameters())
    for i, x in enumerate(xs):
        x = x.clone().requires_grad_()
        want = torch.autograd.grad(_weighted_sum(flat_tensors(ref(x))), (*leaves, x))
        for name, w in zip(names, want):
            assert_close(got_params[name][i], w)
        if got_inputs is not None:
            assert_close(got_inputs[i], want[-1])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind", MODULES)
def test_per_sample_gradients_match_torch(kind, device, native_calls, assert_close):
    ref, mod, xs, params = _samples_and_parameters(kind, device)
    got = vmap(grad(_sample_loss(mod), argnums=(0, 1)), in_dims=(None, 0))(params, xs)
    # One forward over all samples; on the CPU one backward too, whose weight groups give each
    # sample its own weight gradients (the CUDA core has none: a backward per sample).
    assert native_calls == {"forward": 1, "backward": 1 if device == "cpu" else SAMPLES}
    _assert_per_sample_gradients(ref, xs, *got, assert_close)


@pytest.mark.parametrize("cls", [nn.LSTM, nn.GRU])
def test_per_sample_gradients_over_several_backward_chunks(cls, native_calls, assert_close):
    # 3 samples of 100 steps x 2 rows: more steps than a grouped backward's chunk (64 steps at
    # this batch), so each sample's weight gradients add up over chunks, a row stride of the
    # folded batch apart.
    ref, mod = make_pair(cls, 3, 4, num_layers=2, bidirectional=True)
    ref, mod = ref.double(), mod.double()
    xs = torch.randn(3, 100, 2, 3, dtype=torch.float64)
    params = {k: v.detach() for k, v in mod.named_parameters()}
    got = vmap(grad(_sample_loss(mod)), in_dims=(None, 0))(params, xs)
    assert native_calls == {"forward": 1, "backward": 1}
    _assert_per_sample_gradients(ref, xs, got, None, assert_close)


@pytest.mark.parametrize("cls", [nn.LSTM, nn.GRU])
def test_jacrev_with_respect_to_the_weights_matches_torch(cls, native_calls, assert_close):
    # Every cotangent's weight gradients from one backward (a weight group per cotangent);
    # torch's jacrev cannot run its RNNs, so the reference takes one gradient per output entry.
    ref, mod = make_pair(cls, 3, 4, num_layers=2, bidirectional=True)
    ref, mod = ref.double(), mod.double()
    x = torch.randn(3, 2, 3, dtype=torch.float64)
    params = {k: v.detach() for k, v in mod.named_parameters()}
    got = jacrev(lambda p: functional_call(mod, p, (x,))[0])(params)
    assert native_calls == {"forward": 1, "backward": 1}
    y = ref(x)[0].reshape(-1)
    names, leaves = zip(*ref.named_parameters())
    rows = [torch.autograd.grad(y[i], leaves, retain_graph=True) for i in range(y.numel())]
    for j, name in enumerate(names):
        want = torch.stack([r[j] for r in rows]).reshape(3, 2, 8, *leaves[j].shape)
        assert_close(got[name], want)


@pytest.mark.parametrize("batch_sizes, groups", [([], 3), ([], 0), ([2, 1], 2)])
def test_weight_groups_must_divide_a_padded_batch(batch_sizes, groups):
    # The CPU core's precondition (rnn.h, RnnBackwardArgs::weight_groups), checked before it
    # touches any buffer: here a batch of 2 split in 3 groups or 0, and packed rows.
    T, B, I, H = 2, 2, 3, 4
    desc = _C.RnnDesc(int(_C.CellKind.RNN_TANH), 1, 1, I, H, 0, True, T, B, batch_sizes)
    rows = desc.total_rows
    x, dy, dx = torch.zeros(rows, I), torch.zeros(rows, H), torch.zeros(rows, I)
    weights = [torch.zeros(H, I), torch.zeros(H, H), torch.zeros(H), torch.zeros(H)]
    grads = [torch.zeros(max(groups, 1), *w.shape) for w in weights]
    h0, dh0 = torch.zeros(1, B, H), torch.zeros(1, B, H)
    reserve = torch.zeros(rows * desc.reserve_elems_per_row)
    workspace = torch.zeros(desc.workspace_elems(_C.Pass.Backward, _C.DType.float32))
    with pytest.raises(ValueError, match="weight_groups"):
        _C.rnn_backward(desc, _C.DType.float32, x.data_ptr(), [w.data_ptr() for w in weights],
                        h0.data_ptr(), 0, [], reserve.data_ptr(), dy.data_ptr(), 0, 0,
                        dx.data_ptr(), dh0.data_ptr(), 0, [g.data_ptr() for g in grads],
                        workspace.data_ptr(), 1, weight_groups=groups)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind", MODULES)
def test_jacrev_matches_torch_and_is_one_backward(kind, device, native_calls, assert_close):
    ref, mod = _pair(kind, device)
    x = _sample(kind, device)
    state = _state(kind, ref, x)
    got = jacrev(lambda x, s: flat_tensors(mod(x, s)), argnums=(0, 1))(x, state)
    assert native_calls == {"forward": 1, "backward": 1}  # every cotangent in one backward
    want = jacrev(lambda x, s: flat_tensors(ref(x, s)), argnums=(0, 1))(x, state)
    for g, w in zip(torch.utils._pytree.tree_leaves(got), torch.utils._pytree.tree_leaves(want),
                    strict=True):
        assert_close(g, w)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind", MODULES)
def test_grad_of_a_vmapped_call_matches_torch(kind, device, native_calls, assert_close):
    ref, mod, xs, params = _samples_and_parameters(kind, device)

    def loss(params, xs):
        return _weighted_sum(vmap(lambda x: flat_tensors(functional_call(mod, params, (x,))))(xs))

    got = grad(loss, argnums=(0, 1))(params, xs)
    assert native_calls == {"forward": 1, "backward": 1}
    xs = xs.clone().requires_grad_()
    names, leaves = zip(*ref.named_parameters())
    want = torch.autograd.grad(_weighted_sum(_stacked([flat_tensors(ref(x)) for x in xs])),
                               (*leaves, xs))
    for name, w in zip(names, want):
        assert_close(got[0][name], w)
    assert_close(got[1], want[-1])


@pytest.mark.parametrize("kind", ["lstm_proj_bidir", "gru_batch_first", "lstm_cell"])
def test_nested_vmaps_match_torch(kind, assert_close):
    """Two vmapped dimensions: the rules nest (a folded call inside a folded call, the reserve
    converted at each level), for forward, per-sample gradients and Jacobians."""
    ref, mod = _pair(kind, "cpu")
    xs = torch.stack([torch.stack([_sample(kind, "cpu") for _ in range(2)])
                      for _ in range(SAMPLES)])
    got = vmap(vmap(lambda x: flat_tensors(mod(x))))(xs)
    for i in range(SAMPLES):
        for j in range(2):
            for g, w in zip(got, flat_tensors(ref(xs[i, j])), strict=True):
                assert_close(g[i, j], w)
    params = {k: v.detach() for k, v in mod.named_parameters()}

    def loss(params, x):
        return _weighted_sum(flat_tensors(functional_call(mod, params, (x,))))

    per_sample = vmap(vmap(grad(loss), in_dims=(None, 0)), in_dims=(None, 0))(params, xs)
    jacobians = vmap(jacrev(lambda x: flat_tensors(mod(x))))(xs[0])
    for i in range(SAMPLES):
        for j in range(2):
            want = torch.autograd.grad(_weighted_sum(flat_tensors(ref(xs[i, j]))),
                                       list(ref.parameters()))
            for (name, _), w in zip(ref.named_parameters(), want):
                assert_close(per_sample[name][i, j], w)
    for j in range(2):
        want = jacrev(lambda x: flat_tensors(ref(x)))(xs[0, j])
        for g, w in zip(jacobians, want, strict=True):
            assert_close(g[j], w)


def test_vmap_over_stacked_weights_with_packed_input(native_calls, assert_close):
    members = [_pair("lstm_proj_bidir", "cpu") for _ in range(SAMPLES)]
    params, buffers = stack_module_state([mod for _, mod in members])
    packed = pack_sequence([torch.randn(n, 3, dtype=torch.float64) for n in (4, 2, 1)])
    got = vmap(lambda p, b: flat_tensors(functional_call(members[0][1], (p, b), (packed,))[1]) +
               (functional_call(members[0][1], (p, b), (packed,))[0].data,))(params, buffers)
    for i, (ref, _) in enumerate(members):
        output, hidden = ref(packed)
        for g, w in zip(got, flat_tensors(hidden) + (output.data,), strict=True):
            assert_close(g[i], w)
    assert native_calls == {"forward": 2 * SAMPLES, "backward": 0}


def test_vmap_dropout_follows_the_randomness_mode():
    """Dropout masks come from torch's RNG inside the vmapped function: the same masks for
    every sample with randomness="same", each its own with "different", an error by default,
    as torch's own dropout under vmap."""
    mod = fastrnn.GRU(3, 5, num_layers=3, dropout=0.5)
    xs = torch.randn(STEPS, BATCH, 3).expand(SAMPLES, STEPS, BATCH, 3)
    same = vmap(lambda x: mod(x)[0], randomness="same")(xs)
    assert all(torch.equal(same[0], s) for s in same[1:])
    different = vmap(lambda x: mod(x)[0], randomness="different")(xs)
    assert not all(torch.equal(different[0], d) for d in different[1:])
    with pytest.raises(RuntimeError, match="randomness"):
        vmap(lambda x: mod(x)[0])(xs)
    per_sample = vmap(grad(lambda x: mod(x)[0].sum()), randomness="different")(xs)
    assert per_sample.shape == xs.shape and torch.isfinite(per_sample).all()


def test_second_order_under_vmap_raises():
    """jacrev of jacrev (a Hessian) differentiates fastrnn's backward, which has no derivative:
    it raises rather than leaving fastrnn's terms out."""
    lstm = fastrnn.LSTM(3, 4).double()
    x = torch.randn(STEPS, 3, dtype=torch.float64)
    with pytest.raises(RuntimeError, match="double backward"):
        jacrev(jacrev(lambda x: lstm(x)[0].sum(0)))(x)


# ------------------------------------------------------------------------------------------
# CTC losses

CTC_T, CTC_C, CTC_S = 6, 5, 3


def _ctc_reference(log_probs, targets, input_lengths, target_lengths, reduction, from_logits):
    if from_logits:
        log_probs = log_probs.log_softmax(-1)
    return F.ctc_loss(log_probs, targets, input_lengths, target_lengths, reduction=reduction)


def _ctc_samples(device, batched=True, concatenated=False):
    """SAMPLES problems, each its own targets and lengths: (inputs [n, T, B, C] ([n, T, C]
    unbatched), targets (padded [n, B, S], or [n, B * S] concatenated), input lengths, target
    lengths). The longest target differs between samples (except unbatched, where vmap needs
    every sample's targets as long as the others' and torch needs them as long as the target):
    a per-sample call's alignment variables then differ in size."""
    batch = (BATCH,) if batched else ()
    inputs = torch.randn(SAMPLES, CTC_T, *batch, CTC_C, dtype=torch.float64, device=device)
    # No label repeats its predecessor, so that every target fits the shortest input.
    steps = torch.randint(1, CTC_C - 1, (SAMPLES, *batch, CTC_S + 1), device=device)
    targets = 1 + steps.cumsum(-1) % (CTC_C - 1)
    input_lengths = torch.randint(CTC_T - 2, CTC_T + 1, (SAMPLES, *batch), device=device)
    if not batched:
        return inputs, targets[..., :CTC_S], input_lengths, torch.full((SAMPLES,), CTC_S)
    # Samples 1, 3, ... have a longest target of CTC_S + 1, the others CTC_S at most.
    longer = torch.arange(SAMPLES, device=device) % 2 == 1
    if concatenated:  # torch takes concatenated targets only as long as the targets, exactly
        target_lengths = torch.full((SAMPLES, *batch), CTC_S, device=device)
        target_lengths[longer, 0] -= 1
        target_lengths[longer, 1] += 1
        return inputs, targets[..., :CTC_S].flatten(1), input_lengths, target_lengths
    target_lengths = torch.randint(0, CTC_S + 1, (SAMPLES, *batch), device=device)
    target_lengths[longer, 0] = CTC_S + 1
    return inputs, targets, input_lengths, target_lengths


@pytest.fixture
def ctc_calls(monkeypatch):
    """Records the calls of the CTC loss's ops: {"forward": [need_alpha of each call of
    fastrnn::ctc_loss], "backward": number of calls of fastrnn::ctc_loss_backward}."""
    calls = dict(forward=[], backward=0)
    forward, backward = fastrnn.ctc._ctc_loss_op, fastrnn.ctc._ctc_loss_backward_op

    def counting_forward(*args):
        calls["forward"].append(args[-1])
        return forward(*args)

    def counting_backward(*args):
        calls["backward"] += 1
        return backward(*args)

    monkeypatch.setattr(fastrnn.ctc, "_ctc_loss_op", counting_forward)
    monkeypatch.setattr(fastrnn.ctc, "_ctc_loss_backward_op", counting_backward)
    return calls


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("layout", ["padded", "concatenated", "unbatched"])
@pytest.mark.parametrize("reduction", ["mean", "none"])
@pytest.mark.parametrize("from_logits", [False, True])
def test_ctc_vmap_and_per_sample_gradients_match_torch(from_logits, reduction, layout, device,
                                                      ctc_calls, assert_close):
    """Each sample with its own targets and lengths (the longest target differs from sample to
    sample, which torch's own vmap of grad through F.ctc_loss cannot do). The samples fold into
    one call's batch, except concatenated targets: one call per sample. The backward reads the
    forward's alignment variables, which only a forward in grad mode keeps."""
    ours = fastrnn.ctc_loss_from_logits if from_logits else fastrnn.ctc_loss
    inputs, *rest = _ctc_samples(device, layout != "unbatched", layout == "concatenated")
    if not from_logits:
        inputs = inputs.log_softmax(-1)

    def loss(x, targets, input_lengths, target_lengths):
        return ours(x, targets, input_lengths, target_lengths, reduction=reduction)

    calls = SAMPLES if layout == "concatenated" else 1
    with torch.no_grad():
        got = vmap(loss)(inputs, *rest)
    got_grads = vmap(grad(lambda *args: loss(*args).sum()))(inputs, *rest)
    assert ctc_calls == dict(forward=[False] * calls + [True] * calls, backward=calls)
    inputs = inputs.clone().requires_grad_()
    want = torch.stack([_ctc_reference(*sample, reduction, from_logits)
                        for sample in zip(inputs, *rest)])
    assert_close(got, want.detach())
    assert_close(got_grads, torch.autograd.grad(want.sum(), inputs)[0])


@pytest.mark.parametrize("from_logits", [False, True])
def test_ctc_func_grad_runs_the_forward_once(from_logits, ctc_calls, assert_close):
    """torch.func.grad's backward reads the alignment variables of its forward, as autograd's
    does: one forward, one backward."""
    ours = fastrnn.ctc_loss_from_logits if from_logits else fastrnn.ctc_loss
    x, targets, input_lengths, target_lengths = (t[0] for t in _ctc_samples("cpu"))
    got = grad(lambda x: ours(x, targets, input_lengths, target_lengths))(x)
    assert ctc_calls == dict(forward=[True], backward=1)
    x = x.clone().requires_grad_()
    want = _ctc_reference(x, targets, input_lengths, target_lengths, "mean", from_logits)
    assert_close(got, torch.autograd.grad(want, x)[0])


# torch's jacrev through F.ctc_loss takes its vmap fallback, and says so.
@pytest.mark.filterwarnings("ignore:There is a performance drop:UserWarning")
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("from_logits", [False, True])
def test_ctc_jacrev_matches_torch(from_logits, device, ctc_calls, assert_close):
    ours = fastrnn.ctc_loss_from_logits if from_logits else fastrnn.ctc_loss
    x, targets, input_lengths, target_lengths = (t[0] for t in _ctc_samples(device))
    got = jacrev(lambda x: ours(x, targets, input_lengths, target_lengths, reduction="none"))(x)
    assert ctc_calls == dict(forward=[True], backward=1)  # every cotangent in one backward
    want = jacrev(lambda x: _ctc_reference(x, targets, input_lengths, target_lengths, "none",
                                           from_logits))(x)
    assert_close(got, want)


def test_ctc_second_order_under_vmap_raises():
    x, targets, input_lengths, target_lengths = (t[0] for t in _ctc_samples("cpu"))
    with pytest.raises(RuntimeError, match="double backward"):
        jacrev(jacrev(lambda x: fastrnn.ctc_loss_from_logits(x, targets, input_lengths,
                                                             target_lengths)))(x)
