"""Devices: training on a GPU through CuPy against the same training on the CPU, moves, saving.

The first tests check the device API's error paths and run everywhere (CI has no GPU: CuPy's
absence and a GPU-less CuPy are simulated). The rest need CuPy and a visible CUDA GPU and are
skipped without them (the `cp` fixture), among them InferenceSession's backend "cupy" against
its NumPy plan.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np
import pytest
from helpers import run_in_threads

import nnforge as nf
from nnforge import backend, nn, optim
from nnforge.autograd.tensor import Tensor
from nnforge.backend import DeviceError
from nnforge.errors import ConfigError, NNForgeError
from nnforge.ops import conv as conv_ops
from nnforge.ops import loss as L
from nnforge.ops import pool as pool_ops
from nnforge.ops.conv_pool import conv_max_pool2d
from nnforge.train import metrics


def _mlp(dtype: object = np.float32) -> nn.Module:
    """Every core layer type: Flatten, Linear (+ the fused Linear-ReLU), BatchNorm1d, ReLU,
    Dropout, LeakyReLU, Sigmoid, Tanh, GELU, Softmax."""
    nf.manual_seed(0)
    return nn.Sequential(
        nn.Flatten(), nn.Linear(12, 16, bias=False), nn.BatchNorm1d(16), nn.ReLU(),
        nn.Dropout(0.25), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 16), nn.LeakyReLU(0.1),
        nn.Linear(16, 16), nn.Sigmoid(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 16),
        nn.GELU(), nn.Linear(16, 16), nn.Softmax(), nn.Linear(16, 5)).to(dtype)


def _data(n: int = 64, classes: int = 5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 3, 4)).astype(np.float32)
    y = (X.reshape(n, -1)[:, :classes].argmax(axis=1) + (X[:, 0, 0] > 1)) % classes
    return X, y.astype(np.int64)


def _params(model: nn.Module) -> list[np.ndarray]:
    return [backend.to_numpy(v) for v in model.state_dict().values()]


def _close(got: object, want: object, rel: float) -> None:
    """Equal to `rel` relative to the array's scale (elements near 0 judged by the scale)."""
    got, want = backend.to_numpy(got), np.asarray(want)
    assert got.shape == want.shape and got.dtype == want.dtype
    scale = float(np.abs(want).max()) if want.size else 0.0
    np.testing.assert_allclose(got, want, rtol=rel, atol=rel * scale)


# -- the device API's errors (no GPU needed) ---------------------------------------------------
def test_to_cuda_without_cupy_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "cupy", None)  # `import cupy` raises ImportError
    model = _mlp()
    before = [p.data for p in model.parameters()]
    for call in (lambda: model.to("cuda"), lambda: model.to("cuda:0", np.float64),
                 lambda: backend.to_device(np.zeros(3), "cuda"),
                 lambda: nf.Trainer(model, device="cuda")):
        with pytest.raises(DeviceError) as info:
            call()
        message = str(info.value)
        assert "pip install nnforge[gpu]" in message and "CuPy" in message
        assert "\n" not in message
        assert isinstance(info.value, NNForgeError) and isinstance(info.value, ConfigError)
    assert all(p.data is b for p, b in zip(model.parameters(), before))  # nothing moved
    assert model.parameters()[0].dtype == np.float32


@pytest.mark.parametrize("failure", ["no devices", "driver error"])
def test_to_cuda_without_a_gpu_says_so(monkeypatch: pytest.MonkeyPatch, failure: str) -> None:
    def count() -> int:
        if failure == "driver error":
            raise RuntimeError("cudaErrorNoDevice: no CUDA-capable device is detected")
        return 0

    fake = types.ModuleType("cupy")  # CuPy installed on a machine without a GPU
    fake.cuda = types.SimpleNamespace(runtime=types.SimpleNamespace(getDeviceCount=count))
    monkeypatch.setitem(sys.modules, "cupy", fake)
    with pytest.raises(DeviceError, match=r"no (usable )?CUDA GPU.*pip install nnforge\[gpu\]"):
        nn.Linear(3, 2).to("cuda")


def test_to_cpu_on_a_cpu_model_changes_nothing() -> None:
    model = _mlp()
    opt = optim.Adam(model.parameters(), lr=1e-2)
    X, y = _data(16)
    loss = nn.get_loss("cross_entropy")(model(X), y)
    loss.backward()
    opt.step()
    arrays = [p.data for p in model.parameters()]
    grads = [p.grad for p in model.parameters()]
    buffers = model.buffers()
    assert model.to("cpu") is model
    assert all(p.data is a for p, a in zip(model.parameters(), arrays))  # the optimizer's views
    assert all(p.grad is g for p, g in zip(model.parameters(), grads))
    assert all(b is c for b, c in zip(model.buffers(), buffers))
    assert backend.device_of(model) == "cpu" and model.parameters()[0].dtype == np.float32
    assert backend.to_device(arrays[0], "cpu") is arrays[0]
    assert backend.device_of(arrays[0]) == "cpu" and Tensor(arrays[0]).device == "cpu"
    opt.step()  # still trains in place
    assert all(p.data is a for p, a in zip(model.parameters(), arrays))


@pytest.mark.parametrize("name", ["tpu", "gpu", "cuda:x", "cuda:-1", "cuda 0", "", 3, None])
def test_unknown_device_names_are_refused(name: object) -> None:
    model = nn.Linear(3, 2)
    with pytest.raises(DeviceError, match="expected a device 'cpu', 'cuda' or 'cuda:N'"):
        backend.to_device(np.zeros(2), name)
    with pytest.raises(DeviceError, match="expected a device"):
        backend.parse_device(name)
    if name is not None:
        with pytest.raises(DeviceError, match="expected a device"):
            model.to(name)
        with pytest.raises(DeviceError, match="expected a device"):
            nf.Trainer(model, device=name)
    assert model.weight.dtype == np.float32


def test_to_keeps_taking_dtypes() -> None:
    model = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    assert model.to(np.float64).parameters()[0].dtype == np.float64
    assert model.to("float32").parameters()[0].dtype == np.float32
    model.to("cpu", np.float64)
    assert model[1].running_mean.dtype == np.float64 and backend.device_of(model) == "cpu"
    with pytest.raises(ConfigError, match="needs a device"):
        model.to()
    with pytest.raises(ConfigError, match="one device"):
        model.to("cpu", "cuda")
    assert backend.parse_device("CUDA:1") == ("cuda", 1) and backend.parse_device("cuda") == (
        "cuda", None)


# -- on a GPU ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cp() -> types.ModuleType:
    """CuPy, or a skip when it is not installed or sees no GPU."""
    cupy = pytest.importorskip("cupy")
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception:  # noqa: BLE001 - CUDARuntimeError without a driver
        count = 0
    if count < 1:
        pytest.skip("CuPy sees no CUDA GPU")
    return cupy


def _fit(device: str, dtype: object, **kwargs: object) -> tuple[nn.Module, nf.Trainer, dict]:
    model = _mlp(dtype)
    opt = optim.Adam(model.parameters(), lr=1e-2)  # made on the CPU: it follows the model
    trainer = nf.Trainer(model, optimizer=opt, metrics=["accuracy", "f1_macro", "top2_accuracy"],
                         seed=0, grad_clip_norm=0.5, verbose=0, device=device, **kwargs)
    X, y = _data()
    Xv, yv = _data(40, seed=1)
    history = trainer.fit(X, y, epochs=2, batch_size=16, validation_data=(Xv, yv))
    return model, trainer, history


def test_gpu_training_matches_cpu_training(cp: types.ModuleType) -> None:
    cpu_model, cpu_trainer, cpu_hist = _fit("cpu", np.float64)
    gpu_model, gpu_trainer, gpu_hist = _fit("cuda", np.float64)
    assert backend.device_of(gpu_model) == "cuda:0"
    assert all(isinstance(p.data, cp.ndarray) for p in gpu_model.parameters())
    assert all(isinstance(b, cp.ndarray) for b in gpu_model.buffers())
    assert gpu_trainer.optimizer._flat.xp is cp and len(gpu_trainer.optimizer._flat.plans) == 1
    for got, want in zip(_params(gpu_model), _params(cpu_model)):
        _close(got, want, 1e-5)
    assert cpu_hist.keys() == gpu_hist.keys()
    for key in set(cpu_hist) - {"time"}:  # loss, val_loss, lr and every metric
        np.testing.assert_allclose(gpu_hist[key], cpu_hist[key], rtol=1e-5, err_msg=key)
    X, y = _data(30, seed=2)
    for name in ("predict", "predict_proba"):
        got, want = getattr(gpu_trainer, name)(X), getattr(cpu_trainer, name)(X)
        assert type(got) is np.ndarray
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-9)
    scores = gpu_trainer.evaluate(X, y)
    want = cpu_trainer.evaluate(X, y)
    assert scores.keys() == want.keys() and all(type(v) is float for v in scores.values())
    np.testing.assert_allclose(list(scores.values()), list(want.values()), rtol=1e-6)


def test_gpu_training_in_float32_stays_float32_and_close(cp: types.ModuleType) -> None:
    cpu_model, _, cpu_hist = _fit("cpu", np.float32)
    gpu_model, trainer, gpu_hist = _fit("cuda", np.float32)
    assert all(p.data.dtype == np.float32 and p.grad.dtype == np.float32
               for p in gpu_model.parameters())
    assert trainer.optimizer._flat.dtype == np.float32
    for got, want in zip(_params(gpu_model), _params(cpu_model)):
        _close(got, want, 1e-3)  # float32 products round differently in cuBLAS
    np.testing.assert_allclose(gpu_hist["loss"], cpu_hist["loss"], rtol=1e-4)


OPTIMIZERS = {
    "adam": lambda ps: optim.Adam(ps, lr=1e-2, weight_decay=1e-3, amsgrad=True),
    "adamw": lambda ps: optim.AdamW(ps, lr=1e-2, weight_decay=0.1),
    "sgd": lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-3),
    "rmsprop": lambda ps: optim.RMSprop(ps, lr=1e-2, momentum=0.5, centered=True,
                                        weight_decay=1e-3),
}


def _steps(device: str, make_opt: object, clip: str, steps: int = 4) -> nn.Module:
    model = _mlp(np.float64).to(device)
    opt = make_opt(model.parameters())
    loss_fn = nn.get_loss("cross_entropy")
    X, y = _data(32)
    nf.manual_seed(1)  # dropout masks
    for _ in range(steps):
        opt.zero_grad()
        loss = loss_fn(model(X), y)  # NumPy input and targets: sent to the model's device
        loss.backward()
        if clip == "norm":
            optim.clip_grad_norm_(model.parameters(), 0.3)
        elif clip == "inf":
            optim.clip_grad_norm_(model.parameters(), 0.05, norm_type=float("inf"))
        else:
            optim.clip_grad_value_(model.parameters(), 0.01)
        opt.step()
    return model


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
@pytest.mark.parametrize("clip", ["norm", "inf", "value"])
def test_optimizers_and_clipping_on_gpu_match_cpu(cp: types.ModuleType, name: str,
                                                  clip: str) -> None:
    want = _params(_steps("cpu", OPTIMIZERS[name], clip))
    got = _params(_steps("cuda", OPTIMIZERS[name], clip))
    for g, w in zip(got, want):
        _close(g, w, 1e-5)


@pytest.mark.parametrize("loss", ["mse", "l1", "huber", "ce", "ce_weighted", "ce_probs",
                                  "bce_logits", "bce_logits_weighted", "bce"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_losses_on_gpu_match_cpu(cp: types.ModuleType, loss: str, dtype: object) -> None:
    rng = np.random.default_rng(3)
    z = rng.standard_normal((20, 4)).astype(dtype)
    labels = rng.integers(0, 4, 20)
    probs = rng.dirichlet(np.ones(4), 20).astype(dtype)
    calls = {
        "mse": lambda p, xp: L.mse_loss(p, xp.asarray(probs)),
        "l1": lambda p, xp: L.l1_loss(p, probs),  # a NumPy target: follows the predictions
        "huber": lambda p, xp: L.huber_loss(p, xp.asarray(probs), delta=0.3),
        "ce": lambda p, xp: L.cross_entropy(p, labels),
        "ce_weighted": lambda p, xp: L.cross_entropy(
            p, xp.asarray(labels), weight=[0.5, 1.0, 2.0, 1.5], label_smoothing=0.1),
        "ce_probs": lambda p, xp: L.cross_entropy(p, xp.asarray(probs), label_smoothing=0.2),
        "bce_logits": lambda p, xp: L.binary_cross_entropy_with_logits(p, probs > 0.25),
        "bce_logits_weighted": lambda p, xp: L.binary_cross_entropy_with_logits(
            p, xp.asarray((probs > 0.25).astype(dtype)), pos_weight=xp.asarray([1, 2, 3, 4.0])),
        "bce": lambda p, xp: L.binary_cross_entropy(p.clip(0.01, 0.99), probs > 0.25),
    }
    results = []
    for xp in (np, cp):
        pred = Tensor(xp.asarray(z), requires_grad=True)
        value = calls[loss](pred, xp)
        value.backward()
        assert type(value.data) is xp.ndarray and type(pred.grad) is xp.ndarray
        assert value.dtype == dtype and pred.grad.dtype == dtype
        results.append((value.data, pred.grad))
    rel = 1e-5 if dtype == np.float32 else 1e-10
    for got, want in zip(results[1], results[0]):
        _close(got, want, rel)


def test_tensor_ops_on_gpu_match_cpu(cp: types.ModuleType) -> None:
    rng = np.random.default_rng(4)
    a = rng.standard_normal((6, 5))
    b = rng.standard_normal((5, 3))

    def expression(x: Tensor, w: Tensor) -> Tensor:
        xp = backend.xp_of(x.data)
        parts = [
            (x[xp.asarray([0, 2, 2])] * 2.0).sum(), x[1:3, ::2].mean(),
            nf.where(x.data > 0, x, 0.5).sum(), x.maximum(0.1).sum(), x.minimum(w[0, 0]).sum(),
            x.clip(-0.5, None).sum(), x.clip(None, 0.7).sum(), x.std(axis=0).sum(),
            x.var(axis=1, ddof=1).sum(), x.max(axis=1).sum(), x.min().reshape(()),
            (x ** 2).sum(), (2.0 ** x).sum(), (abs(x) + 1.0).log().sum(),
            x.exp().mean(axis=0).sum(),
            (x @ w).transpose().flatten(0).sum(), (1.0 - x / 3.0).sum(), nf.concat(
                [x, x * 3.0], axis=1).sum(axis=0)[::3].sum(), x.split(2, axis=0)[1].sum(),
            nf.stack([x, -x], axis=0)[1].sum(), x.expand(2, 6, 5).sum() * 0.5,
            x.unsqueeze(0).squeeze(0).sum(),
            (x.astype(np.float32).astype(np.float64) * 1.5).sum(),
        ]
        total = parts[0]
        for p in parts[1:]:
            total = total + p
        return total

    grads = []
    for xp in (np, cp):
        x = Tensor(xp.asarray(a), requires_grad=True)
        w = Tensor(xp.asarray(b), requires_grad=True)
        out = expression(x, w)
        out.backward()
        idx = x.argmax(axis=1)
        assert type(idx.data) is xp.ndarray and idx.dtype == np.int64
        grads.append((out.data, x.grad, w.grad, idx.data))
    for got, want in zip(grads[1], grads[0]):
        _close(got, want, 1e-10)


def _conv_model() -> nn.Module:
    nf.manual_seed(0)
    return nn.Sequential(
        # Conv2d, ReLU, MaxPool2d: one fused op on the CPU, three on the GPU
        nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.BatchNorm2d(4),
        nn.Conv2d(4, 6, 3, padding=2, dilation=2, groups=2), nn.ReLU(),
        nn.AvgPool2d(2, stride=1, padding=1, count_include_pad=False),
        nn.Conv2d(6, 6, 3, stride=2, bias=False), nn.AdaptiveAvgPool2d((2, 3)),
        nn.MaxPool2d(2, stride=1, ceil_mode=True), nn.GlobalAvgPool2d(),
        nn.Linear(6, 3)).to(np.float64)


def test_conv_and_pool_training_on_gpu_matches_cpu(cp: types.ModuleType) -> None:
    rng = np.random.default_rng(5)
    X = rng.standard_normal((24, 2, 10, 9)).astype(np.float32)
    y = rng.integers(0, 3, 24)
    models = []
    for device in ("cpu", "cuda"):
        model = _conv_model()
        trainer = nf.Trainer(model, optimizer=optim.Adam(model.parameters(), lr=1e-2),
                             seed=0, verbose=0, device=device, metrics=["accuracy"])
        trainer.fit(X, y, epochs=2, batch_size=8)
        models.append(model)
    for got, want in zip(_params(models[1]), _params(models[0])):
        _close(got, want, 1e-5)


@pytest.mark.parametrize("stride,padding,dilation,groups,bias", [
    (1, 0, 1, 1, True), (2, 1, 1, 2, False), (1, 2, 2, 1, True), ((2, 1), (1, 0), 1, 4, True)])
def test_conv_op_on_gpu_matches_cpu(cp: types.ModuleType, stride: object, padding: object,
                                    dilation: int, groups: int, bias: bool) -> None:
    rng = np.random.default_rng(6)
    x = rng.standard_normal((3, 4, 9, 8))
    w = rng.standard_normal((8, 4 // groups, 3, 2))
    b = rng.standard_normal(8)
    results = []
    for xp in (np, cp):
        tx, tw = Tensor(xp.asarray(x), requires_grad=True), Tensor(xp.asarray(w), True)
        tb = Tensor(xp.asarray(b), requires_grad=True) if bias else None
        y = conv_ops.conv2d(tx, tw, tb, stride, padding, dilation, groups)
        y2 = pool_ops.max_pool2d(y, 2, 1, 1)
        (y2 * y2).sum().backward()
        results.append([y.data, tx.grad, tw.grad] + ([tb.grad] if bias else []))
    for got, want in zip(results[1], results[0]):
        _close(got, want, 1e-10)


def test_save_and_load_a_gpu_model(cp: types.ModuleType, tmp_path: object) -> None:
    model, trainer, _ = _fit("cuda", np.float32)
    model.eval()
    X, _ = _data(20, seed=3)
    want = backend.to_numpy(model(X).data)
    sd = model.state_dict()
    assert all(type(v) is np.ndarray for v in sd.values())
    path = tmp_path / "gpu.nnf"
    nf.save(model, path, task="multiclass")
    loaded = nf.load(path)
    assert backend.device_of(loaded) == "cpu"
    for got, w in zip(_params(loaded), _params(model)):
        np.testing.assert_array_equal(got, w)
    np.testing.assert_allclose(backend.to_numpy(loaded(X).data), want, rtol=1e-4, atol=1e-6)
    loaded.to("cuda")
    assert backend.device_of(loaded) == "cuda:0"
    out = loaded(X)
    assert out.device == "cuda:0"
    np.testing.assert_allclose(backend.to_numpy(out.data), want, rtol=1e-6, atol=1e-7)
    # a checkpoint of the GPU run resumes on the GPU and on the CPU alike
    ckpt = tmp_path / "gpu.ckpt.nnf"
    trainer.save_checkpoint(ckpt)
    rng_state = nf.random.get_rng_state()  # the dropout stream where the checkpoint has it
    X, y = _data()
    results = []
    for device in ("cuda", "cpu", None):
        fresh = _mlp()
        resumed = nf.Trainer(fresh, optimizer=optim.Adam(fresh.parameters(), lr=1e-2), seed=0,
                             grad_clip_norm=0.5, verbose=0, device=device)
        resumed.load_checkpoint(ckpt)
        resumed.fit(X, y, epochs=3, batch_size=16)  # the third epoch of the original run
        results.append(_params(fresh))
    nf.random.set_rng_state(rng_state)  # _mlp() above reseeded it
    trainer.fit(X, y, epochs=1, batch_size=16)
    for run in results:
        for got, w in zip(run, _params(model)):
            _close(got, w, 1e-3)


def test_moves_between_devices_keep_training(cp: types.ModuleType) -> None:
    model = _mlp(np.float64)
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    X, y = _data(32)
    loss_fn = nn.get_loss("cross_entropy")
    reference = _mlp(np.float64)
    ref_opt = optim.SGD(reference.parameters(), lr=0.1, momentum=0.9)
    for device in ("cuda", "cpu", "cuda:0", "cuda"):
        model.to(device)
        for m, o in ((model, opt), (reference, ref_opt)):
            nf.manual_seed(2)
            o.zero_grad()
            loss_fn(m(X), y).backward()
            o.step()
        assert backend.device_of(model) == backend.device_of(model.parameters()[0]) == (
            "cpu" if device == "cpu" else "cuda:0")
        assert opt._flat.xp is (np if device == "cpu" else cp)
    for got, want in zip(_params(model), _params(reference)):
        _close(got, want, 1e-10)
    state = opt.state_dict()
    assert all(type(v) is np.ndarray for v in state["arrays"].values())
    opt.load_state_dict(state)
    assert type(opt.state_view("momentum_buffer", 0)) is cp.ndarray


def test_device_errors_on_a_gpu_machine(cp: types.ModuleType) -> None:
    count = cp.cuda.runtime.getDeviceCount()
    with pytest.raises(DeviceError, match=rf"cuda:{count}.* does not exist.*{count} CUDA GPU"):
        nn.Linear(3, 2).to(f"cuda:{count}")
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    opt = optim.Adam(model.parameters())
    model[0].weight.data = backend.to_device(model[0].weight.data, "cuda")  # half moved
    for p in model.parameters():
        p.grad = backend.xp_of(p.data).ones_like(p.data)
    with pytest.raises(DeviceError, match="one device.*model.to"):
        opt.step()
    with pytest.raises(DeviceError, match="CPU only"):
        conv_max_pool2d(Tensor(cp.zeros((1, 1, 4, 4))), Tensor(cp.zeros((1, 1, 3, 3))), None,
                        (2, 2), padding=1)
    assert backend.device_of(backend.to_device(np.zeros(2), "cuda:0")) == "cuda:0"
    assert type(backend.to_device(cp.zeros(2), "cpu")) is np.ndarray


def test_metrics_take_gpu_arrays(cp: types.ModuleType) -> None:
    rng = np.random.default_rng(7)
    y, pred = rng.integers(0, 4, 50), rng.integers(0, 4, 50)
    scores, values = rng.random((50, 4)), rng.standard_normal(50)
    for name in ("accuracy", "f1_macro", "precision_weighted", "recall_micro"):
        fn = metrics.get_metric(name)
        assert fn(cp.asarray(y), cp.asarray(pred)) == fn(y, pred)
    assert metrics.top_k_accuracy(cp.asarray(y), cp.asarray(scores), k=2) == \
        metrics.top_k_accuracy(y, scores, k=2)
    for name in ("mse", "mae", "rmse", "r2"):
        fn = metrics.get_metric(name)
        assert fn(cp.asarray(values), cp.asarray(values[::-1])) == fn(values, values[::-1])


def test_an_inference_session_compiles_a_gpu_model(cp: types.ModuleType) -> None:
    # tracing read the weights and BatchNorm statistics with np.asarray, which CuPy refuses
    nf.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                          nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4 * 4 * 4, 3)).to("cuda")
    X = np.random.default_rng(1).standard_normal((5, 1, 8, 8)).astype(np.float32)
    model.train()
    model(X)  # running statistics that differ from the initial ones
    model.eval()
    want = backend.to_numpy(model(X).data)
    got = nf.InferenceSession(model, input_shape=(1, 8, 8)).run(X)
    _close(got, want, 1e-5)
    assert backend.device_of(model) == "cuda:0"  # compiling left the model where it was


# -- InferenceSession(backend="cupy"): the graph on the GPU against the NumPy plan ------------
def _lenet_bn() -> nn.Module:
    """A LeNet-style CNN with BatchNorm (trained statistics), every pool and a GELU."""
    nf.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2), nn.BatchNorm2d(6), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), nn.BatchNorm2d(16), nn.Tanh(), nn.AvgPool2d(2), nn.Flatten(),
        nn.Linear(400, 120), nn.BatchNorm1d(120), nn.ReLU(), nn.Dropout(0.2),
        nn.Linear(120, 84), nn.GELU(), nn.Linear(84, 10))
    model.train()
    model(np.random.default_rng(2).standard_normal((16, 1, 28, 28)).astype(np.float32))
    return model.eval()


def _images(n: int, seed: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 1, 28, 28)).astype(np.float32)


def _sessions(model: nn.Module, level: str, shape: tuple) -> tuple:
    return (nf.InferenceSession(model, optimization=level, input_shape=shape, backend="cupy"),
            nf.InferenceSession(model, optimization=level, input_shape=shape, backend="numpy"))


@pytest.mark.parametrize("level", ["none", "basic", "all"])
def test_cupy_session_matches_numpy_for_an_mlp(cp: types.ModuleType, level: str) -> None:
    gpu, cpu = _sessions(_mlp().eval(), level, (3, 4))
    X = _data(300)[0]
    for n in (1, 7, 64, 300):
        got = gpu.run(X[:n])
        assert type(got) is np.ndarray
        _close(got, cpu.run(X[:n]), 1e-5)


@pytest.mark.parametrize("level", ["none", "all"])
def test_cupy_session_matches_numpy_for_a_lenet_with_batchnorm(cp: types.ModuleType,
                                                              level: str) -> None:
    gpu, cpu = _sessions(_lenet_bn(), level, (1, 28, 28))
    for n in (1, 5, 32):
        _close(gpu.run(_images(n)), cpu.run(_images(n)), 1e-5)
    got, want = gpu.predict(_images(9)), cpu.predict(_images(9))
    np.testing.assert_array_equal(got.values.argmax(axis=1), want.values.argmax(axis=1))


def test_a_gpu_model_runs_on_the_cupy_backend_by_default(cp: types.ModuleType) -> None:
    model = _lenet_bn()
    want = nf.InferenceSession(model, input_shape=(1, 28, 28)).run(_images(6))
    model.to("cuda")
    session = nf.InferenceSession(model, input_shape=(1, 28, 28))
    assert session.backend == "cupy"
    assert all(isinstance(a, cp.ndarray) for a in session._shared.consts.values())
    _close(session.run(_images(6)), want, 1e-5)
    assert backend.device_of(model) == "cuda:0"  # compiling left the model where it was
    assert nf.InferenceSession(model, input_shape=(1, 28, 28),
                               backend="numpy").backend == "numpy"  # explicit wins


def test_cupy_session_takes_cupy_inputs(cp: types.ModuleType) -> None:
    gpu, cpu = _sessions(_lenet_bn(), "all", (1, 28, 28))
    X = _images(8)
    want = cpu.run(X)
    _close(gpu.run(cp.asarray(X)), want, 1e-5)
    _close(gpu.run(cp.asarray(X, dtype=cp.float64)), want, 1e-5)  # cast on the GPU
    flipped = cp.asarray(X[:, :, ::-1])[:, :, ::-1]  # not contiguous
    _close(gpu.run(flipped), want, 1e-5)
    _close(cpu.run(cp.asarray(X)), want, 1e-6)  # the NumPy backend copies it over
    assert gpu.run(cp.zeros((0, 1, 28, 28), cp.float32)).shape == (0, 10)
    bad = cp.asarray(X)
    bad[2, 0, 3, 4] = cp.nan
    with pytest.raises(nf.errors.DataError, match="found nan at row 2"):
        gpu.run(bad)
    result = gpu.predict(cp.asarray(X))  # post-processing on the host
    _close(result.values, want, 1e-5)


def test_cupy_session_from_many_threads(cp: types.ModuleType) -> None:

    gpu, cpu = _sessions(_lenet_bn(), "all", (1, 28, 28))
    inputs = [_images(1 + i % 6, seed=i) for i in range(12)]
    wants = [cpu.run(x) for x in inputs]
    failures: list[str] = []

    def work(i: int) -> None:
        for _ in range(10):
            got = gpu.run(inputs[i] if i % 2 else cp.asarray(inputs[i]))
            scale = float(np.abs(wants[i]).max())
            if got.shape != wants[i].shape or not np.allclose(got, wants[i], rtol=1e-5,
                                                              atol=1e-5 * scale):
                failures.append(f"thread {i}")

    run_in_threads(work, 12)
    assert failures == []


ONNX_FIXTURES = sorted((Path(__file__).parent / "fixtures" / "onnx").glob("*.onnx"))


@pytest.mark.parametrize("path", ONNX_FIXTURES, ids=lambda p: p.name)
def test_imported_onnx_models_on_the_cupy_backend(cp: types.ModuleType, path: Path) -> None:
    cpu = nf.InferenceSession(path)
    gpu = nf.InferenceSession(path, backend="cupy")
    for n in (1, 4):
        x = np.random.default_rng(n).standard_normal((n, *cpu.input_shape)).astype(np.float32)
        _close(gpu.run(x), cpu.run(x), 1e-5)


def _i64(*v: int) -> np.ndarray:
    return np.asarray(v, np.int64)


GPU_ONNX_OPS = {  # the ONNX-import ops that run on the GPU, with their constant inputs
    "Erf": ({}, []), "Neg": ({}, []), "Abs": ({}, []), "Exp": ({}, []), "Reciprocal": ({}, []),
    "Pow": ({}, [np.full(4, 2.0, np.float32)]), "Pow(int)": ({}, [np.asarray(3, np.int64)]),
    "Clip": ({}, [np.asarray(-0.5, np.float32), np.asarray(0.5, np.float32)]),
    "Squeeze": ({}, [_i64(0)]), "Unsqueeze": ({}, [_i64(1)]),
    "Concat": ({"axis": 1}, [np.ones((1, 2, 5, 4), np.float32)]),
    "Pad": ({}, [_i64(0, 0, 1, 1, 0, 0, 1, 2)]),
    "Pad(reflect)": ({"mode": "reflect"}, [_i64(0, 0, 1, 1, 0, 0, 1, 2)]),
    "Pad(edge)": ({"mode": "edge"}, [_i64(0, 0, 1, 1, 0, 0, 1, 2)]),
    "Slice": ({}, [_i64(1), _i64(4), _i64(2), _i64(2)]),
    "Gather": ({"axis": 1}, [_i64(0, 2, -1)]),
    "Gather(2-D)": ({"axis": 3}, [np.array([[1, 0], [3, -1]], np.int64)]),
    "Transpose": ({"perm": [0, 2, 3, 1]}, []), "Softmax": ({"axis": 1}, []),
    "LogSoftmax": ({}, []), "Gelu": ({}, []), "GlobalAveragePool": ({}, []),
    "MatMul": ({}, [np.random.default_rng(0).standard_normal((4, 6)).astype(np.float32)]),
    "Cast": ({"to": 11}, []), "ReduceMean": ({}, [_i64(2, 3)]),
    "ReduceSum": ({"keepdims": 0}, [_i64(1)]), "ReduceMax": ({}, []),
    "ReduceMin": ({"keepdims": 0}, []), "ReduceProd": ({}, [_i64(-1)]),
    "ArgMax": ({"axis": 1}, []), "ArgMin": ({"axis": -1, "keepdims": 0}, []),
    "Where": ({}, [np.zeros(4, np.float32), np.ones(4, np.float32)]),
    "Max": ({}, [np.zeros(4, np.float32)]), "Min": ({}, [np.zeros(4, np.float32)]),
    "Greater": ({}, [np.zeros(4, np.float32)]), "Expand": ({}, [_i64(2, 3, 5, 4)]),
    "Split": ({"axis": 1}, [_i64(3)]),
}


@pytest.mark.parametrize("key", list(GPU_ONNX_OPS))
def test_onnx_ops_on_the_cupy_backend(cp: types.ModuleType, key: str) -> None:
    from nnforge.graph.ir import Graph, Node, ValueInfo  # noqa: PLC0415
    from nnforge.runtime.cupy_plan import CupyPlan  # noqa: PLC0415

    attrs, consts = GPU_ONNX_OPS[key]
    x = np.random.default_rng(4).standard_normal((1, 3, 5, 4)).astype(np.float32)
    names = ["x"] + [f"c{k}" for k in range(len(consts))]
    graph = Graph([Node(key.split("(", maxsplit=1)[0], names, ["y"], attrs, key)],
                  [ValueInfo("x", x.shape)], [ValueInfo("y", None)],
                  dict(zip(names[1:], consts)))
    _close(CupyPlan(graph).run_one((cp.asarray(x),)), CupyPlan(graph, xp=np).run_one((x,)),
           1e-5)


def test_a_graph_module_moves_to_the_gpu(cp: types.ModuleType) -> None:
    from nnforge.onnx import GraphModule, load  # noqa: PLC0415

    gm = GraphModule(load(ONNX_FIXTURES[0].parent / "mlp_classic.onnx"))
    X = np.random.default_rng(5).standard_normal((6, 8)).astype(np.float32)
    want = gm(X).data
    assert gm.to("cuda") is gm and backend.device_of(gm) == "cuda:0"
    out = gm(cp.asarray(X))
    assert isinstance(out.data, cp.ndarray)  # a layer on the GPU answers there
    _close(out.data, want, 1e-5)
    session = nf.InferenceSession(gm)
    assert session.backend == "cupy"
    _close(session.run(X), want, 1e-5)
    gm.to("cpu")
    assert backend.device_of(gm) == "cpu" and type(gm(X).data) is np.ndarray
