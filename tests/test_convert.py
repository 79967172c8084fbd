"""fastrnn.convert(model): swaps every torch recurrent module in a model for fastrnn's, in place,
keeping parameters (and their identity), so that outputs, optimizers and training are unchanged."""

import copy

import pytest
import torch
import torch.nn as nn

import fastrnn

TORCH_TO_FR = {
    nn.RNN: "RNN", nn.LSTM: "LSTM", nn.GRU: "GRU",
    nn.RNNCell: "RNNCell", nn.LSTMCell: "LSTMCell", nn.GRUCell: "GRUCell",
}
RNN_TYPES = tuple(TORCH_TO_FR)


class Block(nn.Module):
    """A custom module holding recurrent modules as attributes, in a ModuleList and a ModuleDict."""

    def __init__(self, dtype):
        super().__init__()
        self.lstm = nn.LSTM(3, 4, num_layers=2, batch_first=True, bidirectional=True, dtype=dtype)
        self.stack = nn.ModuleList([nn.GRU(8, 5, dtype=dtype), nn.Linear(5, 5, dtype=dtype)])
        self.cell = nn.RNNCell(5, 6, nonlinearity="relu", dtype=dtype)
        self.cells = nn.ModuleDict({"lstm": nn.LSTMCell(6, 4, dtype=dtype), "gru": nn.GRUCell(4, 3, dtype=dtype)})
        self.proj = nn.LSTM(3, 6, proj_size=2, dtype=dtype)
        self.head = nn.Linear(2, 2, dtype=dtype)

    def forward(self, x):  # x: (B, T, 3)
        y, _ = self.lstm(x)  # (B, T, 8)
        y, _ = self.stack[0](y.transpose(0, 1))  # (T, B, 5)
        y = torch.tanh(self.stack[1](y))
        h = hc = g = None
        outs = []
        for t in range(y.shape[0]):
            h = self.cell(y[t], h)
            hc = self.cells["lstm"](h, hc)
            g = self.cells["gru"](hc[0], g)
            outs.append(g)
        z, _ = self.proj(torch.stack(outs))  # (T, B, 2)
        return self.head(z)


def make_model(dtype=torch.float64):
    return nn.Sequential(
        Block(dtype),
        nn.Sequential(nn.Tanh(), nn.Identity()),
    )


def rnn_modules(model):
    return [(n, m) for n, m in model.named_modules() if isinstance(m, RNN_TYPES)]


def test_convert_replaces_every_rnn_module_in_place():
    model = make_model()
    before = dict(model.named_modules())
    torch_types = {n: type(m) for n, m in rnn_modules(model)}
    assert len(torch_types) == 6
    others = {n: (m, type(m)) for n, m in model.named_modules() if not isinstance(m, RNN_TYPES)}
    out = fastrnn.convert(model)
    assert out is model
    after = dict(model.named_modules())
    assert list(after) == list(before)  # same structure, same names
    for n, t in torch_types.items():
        want = getattr(fastrnn, TORCH_TO_FR[t])
        assert type(after[n]) is want, f"{n}: {type(after[n])} is not {want}"
        assert isinstance(after[n], t)
    for n, (m, t) in others.items():
        assert after[n] is m and type(m) is t, f"non-RNN module {n} was touched"


def test_convert_keeps_parameter_identity_and_values():
    model = make_model()
    params = dict(model.named_parameters())
    values = {n: p.detach().clone() for n, p in params.items()}
    old_lstm_w = model[0].lstm.weight_ih_l0
    fastrnn.convert(model)
    assert model[0].lstm.weight_ih_l0 is old_lstm_w
    new = dict(model.named_parameters())
    assert list(new) == list(params)
    for n, p in new.items():
        assert p is params[n], f"parameter {n} was replaced"
        assert torch.equal(p, values[n])
        assert isinstance(p, nn.Parameter) and p.requires_grad
    # each recurrent module's _flat_weights still refers to its registered parameters
    for n, m in rnn_modules(model):
        if isinstance(m, nn.RNNBase):
            for w, name in zip(m._flat_weights, m._flat_weights_names):
                assert w is getattr(m, name), f"{n}.{name}"


def test_convert_outputs_equal_torch_model(assert_close):
    model = make_model()
    ref = copy.deepcopy(model)
    x = torch.randn(3, 4, 3, dtype=torch.float64, requires_grad=True)
    y_before = model(x)
    fastrnn.convert(model)
    y_after = model(x)
    y_ref = ref(x)
    assert_close(y_after, y_before, torch.float64)
    assert_close(y_after, y_ref, torch.float64)
    g = torch.randn_like(y_ref)
    ga = torch.autograd.grad((y_after * g).sum(), [x] + list(model.parameters()))
    gr = torch.autograd.grad((y_ref * g).sum(), [x] + list(ref.parameters()))
    names = ["x"] + [n for n, _ in model.named_parameters()]
    for n, a, b in zip(names, ga, gr):
        assert_close(a, b, torch.float64, msg=lambda m, n=n: f"grad {n}: {m}")


@pytest.mark.parametrize("opt_name", ["sgd_momentum", "adam"])
def test_optimizer_built_before_convert_trains_like_torch(opt_name, assert_close):
    model = make_model()
    ref = copy.deepcopy(model)

    def make_opt(m):
        if opt_name == "adam":
            return torch.optim.Adam(m.parameters(), lr=1e-2)
        return torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)

    opt, ref_opt = make_opt(model), make_opt(ref)
    fastrnn.convert(model)
    opt_params = [p for group in opt.param_groups for p in group["params"]]
    model_params = list(model.parameters())
    assert len(opt_params) == len(model_params)
    assert all(a is b for a, b in zip(opt_params, model_params))
    x = torch.randn(2, 5, 3, dtype=torch.float64)
    target = torch.randn(5, 2, 2, dtype=torch.float64)
    for step in range(3):
        losses = []
        for m, o in ((model, opt), (ref, ref_opt)):
            o.zero_grad()
            loss = nn.functional.mse_loss(m(x), target)
            loss.backward()
            o.step()
            losses.append(loss.detach())
        assert_close(losses[0], losses[1], torch.float64, msg=lambda m: f"step {step} loss: {m}")
    for (n, a), (_, b) in zip(model.named_parameters(), ref.named_parameters()):
        assert_close(a.detach(), b.detach(), torch.float64, msg=lambda m, n=n: f"{n} after training: {m}")
        assert a.grad is not None
    # the updates really went into the converted model's tensors
    assert not all(torch.equal(a, b) for a, b in zip(model.parameters(), make_model().parameters()))


def test_convert_twice_and_already_fastrnn_untouched():
    model = make_model()
    direct = fastrnn.GRU(2, 2, dtype=torch.float64)
    model.add_module("direct", direct)
    direct_params = list(direct.parameters())
    fastrnn.convert(model)
    mods = dict(model.named_modules())
    types = {n: type(m) for n, m in mods.items()}
    params = dict(model.named_parameters())
    assert fastrnn.convert(model) is model
    assert {n: type(m) for n, m in model.named_modules()} == types
    assert all(a is b for a, b in zip(dict(model.named_modules()).values(), mods.values()))
    assert all(p is params[n] for n, p in model.named_parameters())
    assert model.direct is direct and type(direct) is fastrnn.GRU
    assert all(a is b for a, b in zip(direct.parameters(), direct_params))


@pytest.mark.parametrize("torch_cls,args", [(nn.RNN, (3, 4)), (nn.LSTM, (3, 4)), (nn.GRU, (3, 4)),
                                            (nn.RNNCell, (3, 4)), (nn.LSTMCell, (3, 4)), (nn.GRUCell, (3, 4))])
def test_convert_bare_module(torch_cls, args, assert_close):
    m = torch_cls(*args)
    ref = copy.deepcopy(m)
    p0 = list(m.parameters())
    out = fastrnn.convert(m)
    assert isinstance(out, torch_cls) and type(out) is getattr(fastrnn, TORCH_TO_FR[torch_cls])
    assert all(a is b for a, b in zip(out.parameters(), p0))
    x = torch.randn(2, 3) if "Cell" in torch_cls.__name__ else torch.randn(5, 2, 3)
    o, r = out(x), ref(x)
    flat = lambda v: [t for part in (v if isinstance(v, tuple) else (v,))
                      for t in (part if isinstance(part, tuple) else (part,))]
    for a, b in zip(flat(o), flat(r)):
        assert_close(a, b, torch.float32)


def test_convert_model_without_rnn_is_unchanged():
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.ModuleDict({"a": nn.Conv1d(1, 1, 3)}))
    mods = [(n, m, type(m)) for n, m in model.named_modules()]
    params = list(model.parameters())
    assert fastrnn.convert(model) is model
    assert [(n, m, type(m)) for n, m in model.named_modules()] == mods
    assert all(a is b for a, b in zip(model.parameters(), params))


def test_convert_keeps_mode_state_dict_and_hooks(assert_close):
    model = make_model().eval()
    sd_before = {k: v.clone() for k, v in model.state_dict().items()}
    calls = []
    model[0].lstm.register_forward_hook(lambda mod, inp, out: calls.append("lstm"))
    model[0].cells["gru"].register_forward_pre_hook(lambda mod, inp: calls.append("gru_cell"))
    fastrnn.convert(model)
    assert not model.training and not any(m.training for m in model.modules())
    sd = model.state_dict()
    assert list(sd) == list(sd_before)
    for k in sd:
        assert torch.equal(sd[k], sd_before[k]), k
    model.load_state_dict(sd_before)  # torch's state_dict loads into the converted model
    model(torch.randn(2, 3, 3, dtype=torch.float64))
    assert calls.count("lstm") == 1 and calls.count("gru_cell") == 3


def test_convert_shared_module_and_deepcopy():
    shared = nn.GRU(3, 3)
    model = nn.ModuleDict({"a": shared, "b": nn.Sequential(shared)})
    fastrnn.convert(model)
    assert model["a"] is model["b"][0] and type(model["a"]) is fastrnn.GRU
    clone = copy.deepcopy(model)
    assert type(clone["a"]) is fastrnn.GRU and clone["a"] is clone["b"][0]


def test_convert_leaves_user_subclasses_alone():
    """Documented in fastrnn.convert: subclasses of torch's modules may override forward; kept."""

    class MyLSTM(nn.LSTM):
        def forward(self, x, hx=None):
            out, state = super().forward(x, hx)
            return out * 2, state

    model = nn.Sequential(MyLSTM(3, 4))
    fastrnn.convert(model)
    assert type(model[0]) is MyLSTM
