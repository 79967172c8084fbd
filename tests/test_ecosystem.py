"""fastrnn inside the PyTorch ecosystem: torch.compile (fullgraph), torch.export, opcheck of the
ops not covered by test_rnn_ops.py / test_ctc.py, autocast (CPU here; CUDA on a GPU machine), and
DistributedDataParallel (2 processes, gloo) against single-process training."""

import functools
import os
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.rnn import pack_padded_sequence

import fastrnn
from fastrnn import _ops
from pairs import make_pair

# ------------------------------------------------------------------------------------------
# torch.compile


class _Tagger(nn.Module):
    """Every recurrent kind fastrnn provides, feeding a CTC loss."""

    def __init__(self, inputs=6, hidden=8, classes=5):
        super().__init__()
        self.lstm = fastrnn.LSTM(inputs, hidden, num_layers=2, bidirectional=True,
                                 batch_first=True)
        self.gru = fastrnn.GRU(2 * hidden, hidden, batch_first=True)
        self.rnn = fastrnn.RNN(hidden, hidden, nonlinearity="relu", batch_first=True)
        self.cell = fastrnn.LSTMCell(hidden, hidden)
        self.head = nn.Linear(2 * hidden, classes)
        self.ctc = fastrnn.CTCLoss()

    def forward(self, x, targets, concatenated_targets, input_lengths, target_lengths):
        y, _ = self.lstm(x)
        y, _ = self.gru(y)
        y, h_n = self.rnn(y)
        h, c = self.cell(y[:, -1], (h_n[0], h_n[0]))
        y = torch.cat([y, (h + c).unsqueeze(1).expand_as(y)], dim=2)
        logits = self.head(y).transpose(0, 1)
        return (self.ctc(logits.log_softmax(2), targets, input_lengths, target_lengths)
                + fastrnn.ctc_loss_from_logits(logits, concatenated_targets, input_lengths,
                                               target_lengths, reduction="sum"))


def _tagger_batch(B=3, T=7, C=5, S=3):
    """(x, padded targets, the same targets concatenated, input lengths, target lengths)"""
    x = torch.randn(B, T, 6)
    targets = torch.randint(1, C, (B, S))
    target_lengths = torch.tensor([S, 2, 1])
    concatenated = torch.cat([t[:n] for t, n in zip(targets, target_lengths)])
    return x, targets, concatenated, torch.tensor([T, T - 1, T - 3]), target_lengths


def _loss_and_grads(model, *args):
    loss = model(*args)
    return loss.detach(), torch.autograd.grad(loss, list(model.parameters()))


def _assert_compiled_matches_eager(model, batch, backend, assert_close):
    compiled = torch.compile(model, fullgraph=True, backend=backend)
    got_loss, got_grads = _loss_and_grads(compiled, *batch)
    want_loss, want_grads = _loss_and_grads(model, *batch)
    assert_close(got_loss, want_loss)
    for got, want in zip(got_grads, want_grads):
        assert_close(got, want)


def test_compile_fullgraph_matches_eager(assert_close):
    # aot_eager traces what inductor traces (Dynamo, AOT autograd, the fake kernels) without
    # generating code for torch's own ops, which takes a minute on 2 cores for this model.
    _assert_compiled_matches_eager(_Tagger(), _tagger_batch(), "aot_eager", assert_close)


class _LstmRegressor(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = fastrnn.LSTM(6, 8, batch_first=True)

    def forward(self, x):
        output, (h_n, _) = self.lstm(x)
        return (output.tanh().sum(dim=1) - h_n[0]).square().mean()


@pytest.mark.slow
# Importing inductor imports torch.utils.mkldnn, which uses a deprecated torch.jit decorator.
@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")
def test_compile_fullgraph_default_backend(assert_close):
    _assert_compiled_matches_eager(_LstmRegressor(), (torch.randn(3, 7, 6),), "inductor",
                                   assert_close)


def test_compile_fullgraph_packed_input(assert_close):
    # A PackedSequence made outside the compiled function (Dynamo refuses torch's packing
    # functions), unsorted, without initial state: the batch size comes from its shape.
    lstm = fastrnn.LSTM(4, 5, bidirectional=True)
    packed = pack_padded_sequence(torch.randn(6, 3, 4), torch.tensor([4, 6, 2]),
                                  enforce_sorted=False)
    # A leaf: Dynamo warns when a graph input is a non-leaf that requires grad.
    x = packed.data.requires_grad_()

    def run(seq):
        output, (h_n, c_n) = lstm(seq)
        return output.data.sum() + h_n.sum() + c_n.sum()

    got = torch.compile(run, fullgraph=True, backend="aot_eager")(packed)
    want = run(packed)
    assert_close(got, want)
    for g, w in zip(torch.autograd.grad(got, [x, *lstm.parameters()]),
                    torch.autograd.grad(want, [x, *lstm.parameters()])):
        assert_close(g, w)


def test_compiled_backward_skips_the_input_gradient_of_data(input_grad_requests, assert_close):
    # The data fed to a first layer needs no gradient: the compiled backward graph's
    # rnn_backward is asked not to compute it (the CPU core then skips its products), and
    # still gives eager's gradients.
    model, batch = _LstmRegressor(), (torch.randn(3, 7, 6),)
    _assert_compiled_matches_eager(model, batch, "aot_eager", assert_close)
    assert input_grad_requests == [False]


def test_torch_rnn_modules_still_graph_break():
    # fastrnn lets Dynamo trace its own modules only; torch's nn.LSTM keeps torch's behaviour.
    with pytest.raises(torch._dynamo.exc.Unsupported, match="RNN, GRU, or LSTM"):
        torch.compile(nn.LSTM(3, 4), fullgraph=True, backend="eager")(torch.randn(2, 1, 3))
    assert torch._dynamo.config.allow_rnn is False


def test_dynamo_support_installs_when_dynamo_was_imported_first():
    # This process imported fastrnn first (the import hook path); a fresh one covers the other.
    code = textwrap.dedent("""
        from torch._dynamo.variables.builder import VariableBuilder
        import fastrnn
        assert VariableBuilder.wrap_module._fastrnn_allows_rnn
    """)
    subprocess.run([sys.executable, "-c", code], check=True)


def test_ctc_rejects_bad_lengths_inside_a_compiled_graph():
    _, targets, _, il, tl = _tagger_batch()
    loss = torch.compile(fastrnn.ctc_loss, fullgraph=True, backend="aot_eager")
    logits = torch.randn(7, 3, 5).log_softmax(2)
    with pytest.raises(RuntimeError, match="input_lengths must not exceed"):
        loss(logits, targets, il + 1, tl)


# ------------------------------------------------------------------------------------------
# functorch transforms (torch.func)

_FUNC_MODULES = {
    "lstm_proj": (nn.LSTM, (3, 5), dict(num_layers=2, bidirectional=True, proj_size=2)),
    "gru": (nn.GRU, (3, 5), dict(num_layers=2, batch_first=True)),
    "rnn_relu": (nn.RNN, (3, 5), dict(nonlinearity="relu", bidirectional=True)),
    "lstm_cell": (nn.LSTMCell, (3, 5), {}),
}


def _func_loss(module, params, x):
    out = torch.func.functional_call(module, params, (x,))
    out = out[0] if isinstance(out, tuple) else out
    return (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum()


# torch warns that its oneDNN LSTM has no projection (torch's module only).
@pytest.mark.filterwarnings("ignore:LSTM with projections is not supported with oneDNN")
@pytest.mark.parametrize("kind", _FUNC_MODULES)
def test_func_grad_matches_torch(kind, assert_close):
    # torch.func.grad runs backward at its own level; the op's torch.library autograd cannot
    # (pytorch/pytorch#168393), so the modules take their eager autograd.Function there.
    torch_cls, args, kwargs = _FUNC_MODULES[kind]
    ref, mod = make_pair(torch_cls, *args, **kwargs)
    x = torch.randn(2, 4, 3) if torch_cls is not nn.LSTMCell else torch.randn(4, 3)
    for params in ({k: v.detach() for k, v in mod.named_parameters()},
                   dict(mod.named_parameters())):  # also parameters that require grad
        got = torch.func.grad(functools.partial(_func_loss, mod))(params, x)
        want = torch.func.grad(functools.partial(_func_loss, ref))(params, x)
        for name in want:
            assert_close(got[name], want[name])
    params = {k: v.detach() for k, v in mod.named_parameters()}
    assert_close(torch.func.grad(functools.partial(_func_loss, mod), argnums=1)(params, x),
                 torch.func.grad(functools.partial(_func_loss, ref), argnums=1)(params, x))


def test_func_grad_second_order_raises():
    # fastrnn has no double backward: a gradient of torch.func.grad's result, by autograd or
    # by a second torch.func.grad, raises rather than silently leaving fastrnn's terms out.
    lstm = fastrnn.LSTM(3, 4)
    x = torch.randn(5, 2, 3)
    params = dict(lstm.named_parameters())
    grads = torch.func.grad(functools.partial(_func_loss, lstm))(params, x)
    with pytest.raises(RuntimeError, match="double backward"):
        torch.autograd.grad(grads["weight_hh_l0"].sum() + params["bias_ih_l0"].sum(),
                            params["weight_hh_l0"])
    detached = {k: v.detach() for k, v in params.items()}
    input_grad = torch.func.grad(functools.partial(_func_loss, lstm), argnums=1)
    with pytest.raises(RuntimeError, match="double backward"):
        torch.func.grad(lambda x: input_grad(detached, x).sum())(x)


# torch.func.jvp imports code that uses a deprecated torch.jit decorator.
@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
def test_func_hessian_raises():
    # Forward-mode AD works (tests/test_double_backward.py), but not over fastrnn's backward
    # under functorch: torch.func.hessian (jacfwd of jacrev) raises, it does not return zeros.
    gru = fastrnn.GRU(3, 4)
    x = torch.randn(5, 2, 3)
    with pytest.raises(NotImplementedError, match="jvp"):
        torch.func.hessian(lambda x: gru(x)[0].sum())(x)


@pytest.mark.parametrize("from_logits", [False, True])
def test_func_grad_ctc_matches_torch(from_logits, assert_close):
    T, B, C, S = 6, 3, 5, 2
    x = torch.randn(T, B, C, dtype=torch.float64)
    targets, il, tl = torch.randint(1, C, (B, S)), torch.tensor([6, 5, 4]), torch.tensor([2, 1, 2])
    ours = fastrnn.ctc_loss_from_logits if from_logits else fastrnn.ctc_loss

    def theirs(x, *args):
        return F.ctc_loss(x.log_softmax(2) if from_logits else x, *args)

    if not from_logits:
        x = x.log_softmax(2)
    assert_close(torch.func.grad(ours)(x, targets, il, tl),
                 torch.func.grad(theirs)(x, targets, il, tl))
    with pytest.raises(RuntimeError, match="double backward"):
        torch.func.grad(lambda x: torch.func.grad(ours)(x, targets, il, tl).sum())(x)


# torch.func.jvp imports code that uses a deprecated torch.jit decorator.
@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
def test_func_jvp_ctc_raises():
    # The op alone returned a zero tangent.
    lp = torch.randn(6, 2, 4).log_softmax(2)
    args = (torch.randint(1, 4, (2, 2)), torch.tensor([6, 6]), torch.tensor([2, 2]))
    with pytest.raises(NotImplementedError, match="jvp"):
        torch.func.jvp(lambda lp: fastrnn.ctc_loss(lp, *args), (lp,), (torch.ones_like(lp),))


# ------------------------------------------------------------------------------------------
# torch.export


def test_export_inference_model(assert_close):
    class Classifier(nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = fastrnn.LSTM(5, 6, num_layers=2, bidirectional=True, batch_first=True)
            self.head = nn.Linear(12, 3)

        def forward(self, x):
            output, (h_n, _) = self.lstm(x)
            return self.head(output[:, -1]), h_n

    model = Classifier().eval()
    x = torch.randn(2, 9, 5)
    program = torch.export.export(model, (x,))
    assert any(node.target == torch.ops.fastrnn.rnn.default for node in program.graph.nodes)
    fresh = torch.randn(2, 9, 5)
    for got, want in zip(program.module()(fresh), model(fresh)):
        assert_close(got, want)


# ------------------------------------------------------------------------------------------
# torch.jit.trace: it records only what passes the dispatcher, so under tracing every call must
# take the ops (the direct paths would leave the trace with empty tensors in place of results).


@pytest.mark.filterwarnings("ignore:`torch.jit.*` is deprecated:DeprecationWarning")
@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")  # torch's own shape checks warn too
@pytest.mark.parametrize("grad", [False, True], ids=["no_grad", "grad"])
def test_jit_trace_records_the_ops(grad, tmp_path, assert_close):
    model = _Tagger()
    with torch.set_grad_enabled(grad):
        traced = torch.jit.trace(model, _tagger_batch(), check_trace=False)
    kinds = [node.kind() for node in traced.inlined_graph.nodes()]
    assert kinds.count("fastrnn::rnn") == 4  # lstm, gru, rnn, cell
    assert kinds.count("fastrnn::ctc_loss") == 2
    assert "prim::PythonOp" not in kinds  # saved and loaded without Python
    torch.jit.save(traced, tmp_path / "tagger.pt")
    loaded = torch.jit.load(tmp_path / "tagger.pt")
    fresh = _tagger_batch()
    want_loss, want_grads = _loss_and_grads(model, *fresh)
    for runner in (traced, loaded):
        with torch.no_grad():
            assert_close(runner(*fresh), want_loss)
        got_loss, got_grads = _loss_and_grads(runner, *fresh)
        assert_close(got_loss, want_loss)
        for got, want in zip(got_grads, want_grads):
            assert_close(got, want)


@pytest.mark.filterwarnings("ignore:`torch.jit.*` is deprecated:DeprecationWarning")
def test_jit_script_refused_with_a_clear_error():
    """TorchScript cannot compile fastrnn's forwards: every module kind, also inside a model,
    says so and points to the tools that work, instead of the compiler's error about a line."""
    for model, name in ((_Tagger(), "LSTM"), (fastrnn.GRUCell(3, 4), "GRUCell"),
                        (fastrnn.CTCLoss(), "CTCLoss")):
        with pytest.raises(RuntimeError, match=rf"fastrnn\.{name} cannot be compiled by "
                                               r"torch\.jit\.script.*torch\.jit\.trace"):
            torch.jit.script(model)
    torch.jit.script(nn.LSTM(3, 4))  # torch's own modules are left alone


# ------------------------------------------------------------------------------------------
# opcheck: the cases test_rnn_ops.py (RNN tanh/relu, LSTM, with states and masks) does not cover


@pytest.mark.parametrize("packed", [False, True])
def test_opcheck_gru(packed):
    gru = fastrnn.GRU(3, 4, num_layers=2)
    x = torch.randn(5, 2, 3)
    batch_sizes = None
    if packed:
        seq = pack_padded_sequence(x, torch.tensor([5, 3]))
        x, batch_sizes = seq.data, seq.batch_sizes
    hx = torch.randn(2, 2, 4, requires_grad=True)
    torch.library.opcheck(_ops.rnn, (x.requires_grad_(), list(gru._flat_weights), hx, None,
                                     batch_sizes, [], "GRU", 2, False, 0, True))


def test_opcheck_backward_op_all_checks():
    # test_rnn_ops.py checks rnn_backward's schema and fake kernel; with inputs that do not require
    # grad (as in a backward pass) the autograd-registration and AOT-dispatch checks apply too.
    gru = fastrnn.GRU(3, 4, num_layers=2, bidirectional=True)
    seq = pack_padded_sequence(torch.randn(5, 2, 3), torch.tensor([5, 3]))
    hx = torch.randn(4, 2, 4)
    config = ("GRU", 2, True, 0, True)
    weights = [w.detach() for w in gru._flat_weights]
    output, hy, _, reserve = _ops.rnn(seq.data, weights, hx, None, seq.batch_sizes, [], *config)
    torch.library.opcheck(_ops.rnn_backward,
                          (seq.data, weights, hx, None, seq.batch_sizes, [], reserve,
                           torch.randn_like(output), torch.randn_like(hy), None, *config))


def test_opcheck_without_initial_states():
    lstm = fastrnn.LSTM(3, 4, bidirectional=True)
    x = torch.randn(4, 2, 3, requires_grad=True)
    torch.library.opcheck(_ops.rnn, (x, list(lstm._flat_weights), None, None, None, [], "LSTM",
                                     1, True, 0, True))


# ------------------------------------------------------------------------------------------
# Autocast. Torch's own CPU modules return bf16 from some paths and float32 from others (which
# of its ATen ops are on autocast's lower-precision list); fastrnn computes in float32 and returns
# the dtypes torch returns, so code downstream sees the same tensors.


def _dtypes(result):
    if isinstance(result, torch.nn.utils.rnn.PackedSequence):
        return result.data.dtype
    if isinstance(result, tuple):
        return tuple(_dtypes(r) for r in result)
    return result.dtype


def _floats(result):
    if isinstance(result, torch.nn.utils.rnn.PackedSequence):
        return [result.data.float()]
    if isinstance(result, tuple):
        return [t for r in result for t in _floats(r)]
    return [result.float()]


def _module_calls(cls):
    x = torch.randn(6, 3, 5)
    h0 = torch.randn(1, 3, 7)
    state = (lambda h: (h, h)) if cls is nn.LSTM else (lambda h: h)
    return {
        "padded": (x,),
        "packed": (pack_padded_sequence(x, [6, 4, 2]),),
        "bf16 input": (x.bfloat16(),),
        "float32 state": (x, state(h0)),
        "bf16 state": (x, state(h0.bfloat16())),
    }


@pytest.mark.parametrize("cls", [nn.LSTM, nn.GRU, nn.RNN])
def test_autocast_cpu_modules_match_torch(cls, assert_close):
    ref, mod = make_pair(cls, 5, 7)
    for name, args in _module_calls(cls).items():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got, want = mod(*args), ref(*args)
        assert _dtypes(got) == _dtypes(want), name
        # fastrnn's float32 result rounded to the output dtype, against torch's partly-bf16 one.
        for g, w in zip(_floats(got), _floats(want)):
            assert_close(g, w, dtype=torch.bfloat16, msg=name)


_FLOATS = (torch.float32, torch.bfloat16, torch.float16)


@pytest.mark.parametrize("module_dtype", _FLOATS, ids=["float32", "bfloat16", "float16"])
@pytest.mark.parametrize("cls", [nn.LSTM, nn.GRU, nn.RNN, nn.LSTMCell, nn.GRUCell, nn.RNNCell])
def test_autocast_cpu_any_module_and_input_dtype_match_torch(cls, module_dtype, assert_close):
    """Under bf16 autocast, a module of any floating dtype fed inputs and states of any floating
    dtype returns torch's result dtypes (float16 input into an LSTM, say, gives float32: torch's
    oneDNN LSTM does not take it and its fallback promotes), with values within bf16's
    tolerance of torch's."""
    ref, mod = make_pair(cls, 5, 7, dtype=module_dtype)
    is_cell = cls in (nn.LSTMCell, nn.GRUCell, nn.RNNCell)
    rows, state_lead = ((3,), (3,)) if is_cell else ((4, 3), (1, 3))
    for input_dtype in _FLOATS:
        x = torch.randn(*rows, 5, dtype=input_dtype)
        for state_dtype in (None, input_dtype, torch.float32):
            hx = None if state_dtype is None else torch.randn(*state_lead, 7, dtype=state_dtype)
            if hx is not None and cls in (nn.LSTM, nn.LSTMCell):
                hx = (hx, hx.clone())
            with torch.autocast("cpu", dtype=torch.bfloat16):
                got, want = mod(x, hx), ref(x, hx)
            assert _dtypes(got) == _dtypes(want), (input_dtype, state_dtype)
            for g, w in zip(_floats(got), _floats(want)):
                assert_close(g, w, dtype=torch.bfloat16, msg=f"{input_dtype}, {state_dtype}")


def test_autocast_cpu_trains_float32_parameters(assert_close):
    ref, mod = make_pair(nn.LSTM, 5, 7, num_layers=2)
    x = torch.randn(6, 3, 5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mod(x)[0].float().sum().backward()
    ref(x)[0].sum().backward()  # torch in float32: fastrnn computes in float32 under autocast
    for p, q in zip(mod.parameters(), ref.parameters()):
        assert p.grad.dtype == torch.float32
        assert_close(p.grad, q.grad, dtype=torch.bfloat16)


def test_autocast_cpu_compiles_fullgraph():
    lstm = fastrnn.LSTM(4, 5)
    x = torch.randn(6, 2, 4)

    def run(inputs):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return lstm(inputs)[0]

    got = torch.compile(run, fullgraph=True, backend="aot_eager")(x)
    assert got.dtype == torch.bfloat16
    assert torch.equal(got, run(x))


def test_autocast_cpu_op_casts_its_inputs(assert_close):
    lstm = fastrnn.LSTM(3, 4)
    x = torch.randn(5, 2, 3)
    args = (list(lstm._flat_weights), None, None, None, [], "LSTM", 1, False, 0, True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        output = _ops.rnn(x.bfloat16(), *args)[0]
    assert output.dtype == torch.float32
    assert_close(output, _ops.rnn(x.bfloat16().float(), *args)[0])


def test_autocast_cpu_ctc_runs_in_float32(assert_close):
    log_probs = torch.randn(8, 2, 5).log_softmax(2).bfloat16()
    targets, lengths = torch.randint(1, 5, (2, 3)), (torch.tensor([8, 6]), torch.tensor([3, 2]))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = fastrnn.ctc_loss(log_probs, targets, *lengths)
        want = nn.functional.ctc_loss(log_probs, targets, *lengths)
    assert got.dtype == want.dtype == torch.float32
    assert_close(got, want)


def _cuda_rnn_available():
    if not torch.cuda.is_available():
        return False
    try:
        fastrnn.LSTM(2, 2).cuda()(torch.randn(1, 1, 2, device="cuda"))
    except (NotImplementedError, RuntimeError):
        return False
    return True


@pytest.mark.skipif(not _cuda_rnn_available(), reason="needs a GPU and fastrnn's CUDA RNN")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("cls", [nn.LSTM, nn.GRU, nn.RNN])
def test_autocast_cuda_modules_match_torch(cls, dtype, assert_close):
    ref, mod = (m.cuda() for m in make_pair(cls, 5, 7, num_layers=2))
    x = torch.randn(6, 3, 5, device="cuda")
    with torch.autocast("cuda", dtype=dtype):
        got, want = mod(x), ref(x)
    assert _dtypes(got) == _dtypes(want)
    for g, w in zip(_floats(got), _floats(want)):
        assert_close(g, w, dtype=dtype)


# ------------------------------------------------------------------------------------------
# DistributedDataParallel: 2 CPU processes on gloo, each with half the batch, give the same
# parameters as one process training on the whole batch (DDP averages the gradients, and the loss
# is a mean over the batch).

_STEPS, _BATCH = 3, 8


class _Regressor(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = fastrnn.LSTM(4, 5, num_layers=2, bidirectional=True, batch_first=True)
        self.head = nn.Linear(10, 1)

    def forward(self, x):
        output, _ = self.lstm(x)
        return self.head(output[:, -1])


def _ddp_model():
    torch.manual_seed(0)
    return _Regressor().double()


def _ddp_data():
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(_BATCH, 6, 4, dtype=torch.float64, generator=generator)
    return x, torch.randn(_BATCH, 1, dtype=torch.float64, generator=generator)


def _train(model, x, y):
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    for _ in range(_STEPS):
        optimizer.zero_grad()
        nn.functional.mse_loss(model(x), y).backward()
        optimizer.step()


def _ddp_worker(rank, world_size, store_path, result_path):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store_path}", rank=rank,
                            world_size=world_size)
    try:
        model = _ddp_model()
        x, y = _ddp_data()
        shard = slice(rank * _BATCH // world_size, (rank + 1) * _BATCH // world_size)
        _train(nn.parallel.DistributedDataParallel(model), x[shard], y[shard])
        if rank == 0:
            torch.save(model.state_dict(), result_path)
    finally:
        dist.destroy_process_group()
    # DDP's reducer keeps the gloo process group alive past destroy_process_group (with torch
    # 2.13, even a plain nn.Linear under DDP leaves its pt_gloo_runloop threads running), and one
    # of those threads can then try to take the GIL while the interpreter finalizes, which aborts
    # the process ("terminate called without an active exception"; about 1 run in 50 here, and
    # a gdb backtrace shows it in Py_FinalizeEx). The worker's work is done and its file written,
    # so it leaves without finalizing.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


@pytest.mark.slow
def test_ddp_gloo_matches_single_process(tmp_path, assert_close):
    result_path = tmp_path / "ddp.pt"
    mp.spawn(_ddp_worker, args=(2, str(tmp_path / "store"), str(result_path)), nprocs=2)
    model = _ddp_model()
    _train(model, *_ddp_data())
    got = torch.load(result_path)
    for name, want in model.state_dict().items():
        assert_close(got[name], want, msg=name)
