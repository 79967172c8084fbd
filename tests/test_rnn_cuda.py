"""The CUDA backend of fastrnn.RNN / LSTM / GRU: the CPU test grid on CUDA tensors against torch's
CUDA modules (cuDNN) and against fastrnn's own CPU backend; gradcheck in float64, opcheck,
determinism, half precision, streams, devices, long sequences. Skipped without a GPU.

Without a GPU only the first test runs: the CUDA module's functions accept the descriptors the
Python layer builds (this needs no device).
"""

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

import fastrnn
from fastrnn import _ops
from pairs import fr_class, make_pair
from test_rnn_ops import (CONFIGS, assert_bitwise_deterministic, gradcheck_op, make_problem,
                          outputs)
from test_rnn_vs_torch import GRID, MODES, Case, flat_outputs, make_case, run_grid_case

requires_cuda = pytest.mark.skipif(
    not (torch.cuda.is_available() and fastrnn.cuda_build_available()),
    reason="needs a CUDA device and a build with the CUDA module")


@pytest.fixture(autouse=True)
def _exact_float32_reference():
    """cuDNN would use TF32 for float32 by default: compare against exact float32."""
    if not torch.cuda.is_available():
        yield
        return
    saved = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


@pytest.mark.skipif(not fastrnn.cuda_build_available(), reason="build without the CUDA module")
def test_cuda_module_sizes_workspaces_without_a_device():
    cuda = fastrnn._backend.cuda_module()
    for cell in _ops.CELL_GATES:
        for backward in (False, True):
            fields = (int(_ops._CELL_KINDS[cell]), 2, 2, 3, 5, 0, True, 4, 3, [3, 3, 2, 1])
            assert cuda.rnn_workspace_elems(fields, backward, 0) > 0
    with pytest.raises(ValueError, match="non-increasing"):
        cuda.rnn_workspace_elems((2, 1, 1, 3, 5, 0, True, 2, 3, [3, 4]), False, 0)


@requires_cuda
@pytest.mark.parametrize("cfg", GRID)
def test_grid_vs_cudnn(cfg, rng, assert_close):
    run_grid_case(cfg, rng, assert_close, device="cuda")


def _grads(module, case):
    result = module(case.module_input(), case.hx())
    outs = flat_outputs(result)
    torch.manual_seed(0)
    loss = sum((o * torch.randn_like(o)).sum() for o in outs)
    return outs, torch.autograd.grad(loss, case.leaves() + list(module.parameters()))


@requires_cuda
@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("form", ["padded", "packed_unsorted"])
def test_cuda_matches_cpu_backend(mode, form, rng, assert_close):
    torch_cls, extra = MODES[mode]
    kwargs = dict(num_layers=2, bidirectional=True, dtype=torch.float64, **extra)
    if mode == "lstm_proj":
        kwargs["proj_size"] = 3
    cpu = fr_class(torch_cls)(6, 5, **kwargs)
    gpu = fr_class(torch_cls)(6, 5, **kwargs).cuda()
    gpu.load_state_dict(cpu.state_dict())
    case = make_case(rng, cpu, form=form, T=7, B=4, batch_first=False, with_state=True,
                     dtype=torch.float64)
    cpu_outs, cpu_grads = _grads(cpu, case)
    gpu_outs, gpu_grads = _grads(gpu, case.to("cuda"))
    for a, b in zip(gpu_outs + list(gpu_grads), cpu_outs + list(cpu_grads)):
        assert_close(a.cpu(), b)


def _cuda_problem(config, dtype, **kw):
    args = make_problem(*config, dtype, **kw)

    def move(t):
        return None if t is None else t.detach().cuda().requires_grad_(t.requires_grad)

    x, weights, hx, cx, batch_sizes, masks = args[:6]
    return (move(x), [move(w) for w in weights], move(hx), move(cx), batch_sizes,
            [m.cuda() for m in masks]) + args[6:]


@requires_cuda
@pytest.mark.parametrize("config", CONFIGS)
def test_cuda_gradcheck_float64(config):
    assert gradcheck_op(_cuda_problem(config, torch.float64, with_masks=True))


@requires_cuda
@pytest.mark.parametrize("config", CONFIGS[:4])
def test_cuda_opcheck(config):
    torch.library.opcheck(_ops.rnn, _cuda_problem(config, torch.float32, with_masks=True))


@requires_cuda
@pytest.mark.parametrize("cell", ["LSTM", "GRU", "RNN_TANH"])
def test_cuda_bitwise_deterministic(cell):
    assert_bitwise_deterministic(_cuda_problem((cell, 2, True, 0, True, True), torch.float32,
                                               T=6, B=3, I=5, H=7, with_masks=True))


@requires_cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("mode", ["lstm", "gru", "rnn_tanh"])
def test_half_precision_runs_in_float32(mode, dtype, assert_close):
    """float16/bfloat16 compute in float32: equal, up to one rounding of the outputs, to torch in
    float32 on the same (rounded) weights and inputs."""
    torch_cls, extra = MODES[mode]
    ref = torch_cls(8, 16, num_layers=2, bidirectional=True, **extra).cuda()
    with torch.no_grad():
        for p in ref.parameters():
            p.copy_(p.to(dtype).float())
    mod = fr_class(torch_cls)(8, 16, num_layers=2, bidirectional=True, **extra).cuda().to(dtype)
    mod.load_state_dict(ref.state_dict())
    x = torch.randn(12, 4, 8, device="cuda").to(dtype)
    out, _ = mod(x.requires_grad_())
    ref_out, _ = ref(x.detach().float().requires_grad_())
    assert out.dtype == dtype
    assert_close(out.float(), ref_out.detach(), dtype)
    out.float().sum().backward()
    assert x.grad.dtype == dtype and all(p.grad.dtype == dtype for p in mod.parameters())


@requires_cuda
def test_current_stream_is_used(assert_close):
    ref, mod = make_pair(nn.LSTM, 16, 32, num_layers=2)
    ref, mod = ref.cuda(), mod.cuda()
    x = torch.randn(50, 8, 16, device="cuda")
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        out, _ = mod(x)
    torch.cuda.current_stream().wait_stream(side)
    assert_close(out, ref(x)[0])


@requires_cuda
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_second_device(assert_close):
    ref, mod = make_pair(nn.GRU, 5, 7, bidirectional=True)
    x = torch.randn(9, 3, 5)
    want, _ = ref(x)
    got, _ = mod.to("cuda:1")(x.to("cuda:1"))
    assert got.device == torch.device("cuda:1")
    assert_close(got.cpu(), want)


@requires_cuda
def test_empty_batch_and_zero_steps():
    mod = fastrnn.LSTM(3, 4, num_layers=2).cuda()
    out, (h, c) = mod(torch.randn(5, 0, 3, device="cuda", requires_grad=True))
    assert out.shape == (5, 0, 4) and h.shape == (2, 0, 4)
    out.sum().backward()
    assert all(torch.equal(p.grad, torch.zeros_like(p)) for p in mod.parameters())


@requires_cuda
def test_more_than_65535_steps(assert_close):
    """cuDNN refuses sequences this long; the per-step path has no limit. Checked against the CPU
    backend on the same weights."""
    cpu = fastrnn.LSTM(2, 3, dtype=torch.float64)
    gpu = fastrnn.LSTM(2, 3, dtype=torch.float64).cuda()
    gpu.load_state_dict(cpu.state_dict())
    x = torch.randn(70_000, 2, 2, dtype=torch.float64) * 0.1
    case = Case(x=x.requires_grad_())
    cpu_outs, cpu_grads = _grads(cpu, case)
    gpu_outs, gpu_grads = _grads(gpu, case.to("cuda"))
    for a, b in zip(gpu_outs + list(gpu_grads), cpu_outs + list(cpu_grads)):
        assert_close(a.cpu(), b, rtol=1e-8, atol=1e-8)


@requires_cuda
def test_packed_sequence_on_cuda_keeps_metadata():
    mod = fastrnn.GRU(3, 4).cuda()
    packed = pack_padded_sequence(torch.randn(6, 3, 3, device="cuda"), torch.tensor([4, 6, 2]),
                                  enforce_sorted=False)
    out, h = mod(packed)
    assert isinstance(out, PackedSequence) and out.data.is_cuda
    assert torch.equal(out.batch_sizes, packed.batch_sizes)


@pytest.fixture
def persistent_switch():
    """Sets whether the persistent kernels may run; restores the setting afterwards."""
    cuda = fastrnn._backend.cuda_module()
    saved = cuda.persistent_kernels_enabled()
    yield cuda.set_persistent_kernels
    cuda.set_persistent_kernels(saved)


@requires_cuda
@pytest.mark.parametrize("mode", ["lstm", "gru", "rnn_tanh", "rnn_relu"])
@pytest.mark.parametrize("shape", [(9, 3, 5, 7), (33, 16, 64, 768)], ids=["small", "H768"])
@pytest.mark.parametrize("form", ["padded", "packed_unsorted"])
def test_persistent_kernels_match_per_step(mode, shape, form, persistent_switch, rng,
                                           assert_close):
    """The persistent kernels (forward and backward) against the per-step path, outputs and every
    gradient; H=768 puts several units in each block."""
    cuda = fastrnn._backend.cuda_module()
    T, B, I, H = shape
    torch_cls, extra = MODES[mode]
    mod = fr_class(torch_cls)(I, H, num_layers=2, bidirectional=True, **extra).cuda()
    case = make_case(rng, mod, form=form, T=T, B=B, batch_first=False, with_state=True,
                     dtype=torch.float32).to("cuda")
    runs = []
    for persistent in (False, True):
        persistent_switch(persistent)
        before = cuda.persistent_kernel_launches()
        runs.append(_grads(mod, case))
        launched = cuda.persistent_kernel_launches() - before
        # forward and backward for each of 2 layers x 2 directions
        assert launched == (8 if persistent else 0)
    (outs_step, grads_step), (outs_pers, grads_pers) = runs
    for a, b in zip(outs_pers + list(grads_pers), outs_step + list(grads_step)):
        assert_close(a, b)


@requires_cuda
def test_persistent_forward_falls_back_when_weights_do_not_fit(persistent_switch, assert_close):
    cuda = fastrnn._backend.cuda_module()
    persistent_switch(True)
    ref, mod = make_pair(nn.LSTM, 16, 4096)  # G*H*H floats: more than all the shared memory
    ref, mod = ref.cuda(), mod.cuda()
    x = torch.randn(3, 2, 16, device="cuda")
    before = cuda.persistent_kernel_launches()
    out, _ = mod(x)
    assert cuda.persistent_kernel_launches() == before
    assert_close(out, ref(x)[0])
