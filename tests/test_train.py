import contextlib
import dataclasses
import io as stdio
import itertools
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from bitnn.binarize import (  # noqa: E402
    LloydMaxBinarizer,
    QuantileBinarizer,
    ThresholdBinarizer,
    WTAHashBinarizer,
)
from bitnn.bits import pack_signs, unpack_bits  # noqa: E402
from bitnn.errors import InputError, TrainingInterrupted  # noqa: E402
from bitnn.io import model_to_bytes  # noqa: E402
from bitnn.train import layers  # noqa: E402
from bitnn.train.convert import to_bit_network  # noqa: E402
from bitnn.train.layers import BitLinear, BitMLP, sign_activation, ternarize  # noqa: E402
from bitnn.train.trainer import (  # noqa: E402
    ImageAugmenter,
    TrainConfig,
    Trainer,
    _gaussian_matrix,
    read_checkpoint,
    to_bipolar,
    train_network,
)


def quiet():
    return contextlib.redirect_stderr(stdio.StringIO())


def randomised_model(kind, sparsity, output="scores", seed=0):
    torch.manual_seed(seed)
    out_kind = "none" if kind == "none" else "bias"
    m = BitMLP(
        70,
        [33, 65],
        10,
        bias_kind=kind,
        output_bias_kind=out_kind,
        sparsity=sparsity,
        output=output,
    )
    m.set_round(2)
    if kind == "threshold":  # realistic running statistics and scales of both signs
        m.train()
        for _ in range(5):
            m(torch.randint(0, 2, (64, 70)).float() * 2 - 1)
        with torch.no_grad():
            for layer in m.layers[:-1]:
                layer.norm.weight.uniform_(-1, 1)
                layer.norm.bias.uniform_(-1, 1)
    m.eval()
    return m


@pytest.mark.parametrize("kind", ["bias", "threshold", "none"])
@pytest.mark.parametrize("sparsity", [0.0, 0.3])
def test_converted_network_is_bit_exact_on_random_inputs(kind, sparsity):
    m = randomised_model(kind, sparsity)
    net = to_bit_network(m)
    x = torch.randint(0, 2, (5000, 70)).float() * 2 - 1
    packed = pack_signs(x.numpy().astype(np.int8))
    with torch.no_grad():
        scores = m(x).numpy()
        hidden = m.hidden_signs(x)
    np.testing.assert_array_equal(net.forward_packed(packed), scores.astype(np.int64))
    for h_torch, h_bits, layer in zip(hidden, net.hidden_packed(packed), net.layers, strict=True):
        np.testing.assert_array_equal(unpack_bits(h_bits, layer.n_out), h_torch.numpy() > 0)
    if sparsity:
        assert all(layer.mask is not None for layer in net.layers)


def test_bit_outputs_are_exact():
    m = randomised_model("threshold", 0.0, output="bits")
    net = to_bit_network(m)
    x = torch.randint(0, 2, (2000, 70)).float() * 2 - 1
    with torch.no_grad():
        expected = (m(x) >= 0).numpy()
    got = unpack_bits(net.forward_packed(pack_signs(x.numpy().astype(np.int8))), 10)
    np.testing.assert_array_equal(got, expected)


def test_trained_on_real_speech_data_is_bit_exact(fsdd):
    train = fsdd.take >= 5
    cfg = TrainConfig(hidden=(128,), epochs_round1=3, epochs_round2=3, batch_size=50, seed=0)
    with quiet():
        net = train_network(fsdd.X[train], fsdd.y[train], cfg, QuantileBinarizer(2, "thermometer"))
    # Rebuild the trained module's view: binarized inputs through torch in binary eval mode.
    from bitnn.train.trainer import to_bipolar

    # The network's bit logic against the same arithmetic as float matmuls in torch.
    x = torch.from_numpy(to_bipolar(net.binarizer.transform(fsdd.X))).float()
    h = x
    for layer in net.layers[:-1]:
        w = torch.from_numpy(layer.weight_values().astype(np.float32))
        h = torch.where(h @ w.T - torch.from_numpy(layer.threshold).float() >= 0, 1.0, -1.0)
    last = net.layers[-1]
    w = torch.from_numpy(last.weight_values().astype(np.float32))
    scores = (h @ w.T - torch.from_numpy(last.threshold).float()).numpy()
    np.testing.assert_array_equal(net.scores(fsdd.X), scores.astype(np.int64))
    acc = np.mean(net.predict(fsdd.X[~train]) == fsdd.y[~train])
    assert acc > 0.5, acc  # it learned something real (chance is 0.1)


def test_trainer_module_and_network_agree_after_training(fsdd):
    """The model the trainer returns, in binary eval mode, equals the network it converts to."""
    from bitnn.train.trainer import TrainData, Trainer, to_bipolar

    b = QuantileBinarizer(1).fit(fsdd.X)
    x = to_bipolar(b.transform(fsdd.X))
    data = TrainData(x, fsdd.y, None, None, 10, "scores")
    cfg = TrainConfig(
        hidden=(64, 64),
        epochs_round1=1,
        epochs_round2=2,
        sparsity=0.2,
        seed=3,
        round2_weights="clip",
    )
    with quiet():
        model = Trainer(cfg, data, b).run()
    assert all(not bool(layer.compressed) for layer in model.layers)
    assert all(layer.weight.abs().max() <= 1 for layer in model.layers)
    net = to_bit_network(model, b)
    with torch.no_grad():
        scores = model(torch.from_numpy(x).float()).numpy()
    np.testing.assert_array_equal(net.scores(fsdd.X), scores.astype(np.int64))


def test_round_2_weight_op_equals_the_composed_ops():
    """sign(W) forward / tanh'(W) backward in one op: the values and gradients of
    ternarize(tanh(W)), bit for bit, for tiny, zero, negative-zero and large weights."""
    torch.manual_seed(0)
    layer = BitLinear(700, 300)
    for scale in (1e-30, 1e-3, 1.0, 30.0):
        with torch.no_grad():
            layer.weight.copy_(torch.randn(300, 700) * scale)
            layer.weight[0, :2] = torch.tensor([0.0, -0.0])
        layer.binary = True
        grad = torch.randn(300, 700)
        fused = layer.effective_weight()
        (g_fused,) = torch.autograd.grad(fused, layer.weight, grad)
        composed = ternarize(torch.tanh(layer.weight))
        (g_composed,) = torch.autograd.grad(composed, layer.weight, grad)
        assert torch.equal(fused, composed) and torch.equal(g_fused, g_composed)
        assert fused[0, 0] == 1 and fused[0, 1] == 1  # sign(0) = sign(-0) = +1
    z = torch.tensor([-2.0, -0.0, 0.0, 1e-38, 3.0])
    assert sign_activation(z).tolist() == [-1.0, 1.0, 1.0, 1.0, 1.0]
    assert ternarize(z, 0.5).tolist() == [-1.0, 0.0, 0.0, 0.0, 1.0]


def test_round_2_leaves_out_the_sparsity_share_of_smallest_weights():
    """sparsity=0.3: 0 for about 30% of the weights, those of smallest |W| (the threshold from
    a fixed sample of the weights), sign(W) for the rest; the gradient is tanh'(W) everywhere
    (straight through ternarize, as without sparsity); the paper's beta is tanh of the
    threshold: the same values as ternarize(tanh(W), beta) where tanh does not saturate."""
    torch.manual_seed(0)
    layer = BitLinear(700, 300, sparsity=0.3)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(300, 700))
    layer.binary = True
    t = layer.absent_below()
    w = layer.effective_weight()
    assert (w == 0).float().mean().item() == pytest.approx(0.3, abs=0.005)
    assert torch.equal(w == 0, layer.weight.abs() < t)
    assert torch.equal(w, ternarize(torch.tanh(layer.weight), math.tanh(t)))
    grad = torch.randn(300, 700)
    (g,) = torch.autograd.grad(w, layer.weight, grad)
    assert torch.equal(g, torch.ops.aten.tanh_backward(grad, torch.tanh(layer.weight)))
    assert layer.absent_below() == t  # the same sample every step
    layer.sparsity = 0.0
    assert layer.absent_below() == 0.0 and not torch.any(layer.effective_weight() == 0)


def _blobs(n=400, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((4, 8)) * 2
    y = rng.integers(0, 4, n)
    return centers[y] + rng.standard_normal((n, 8)), y


def _interrupted_then_resumed(X, y, cfg, ckpt, stop_at):
    """Train, stop after batch ``stop_at`` (as Ctrl-C would), resume from the checkpoint."""

    def stop(trainer):
        trainer.steps = getattr(trainer, "steps", 0) + 1
        trainer.stop["stop"] = trainer.steps == stop_at

    with quiet(), pytest.raises(TrainingInterrupted):
        train_network(X, y, cfg, QuantileBinarizer(2), checkpoint_path=ckpt, on_batch=stop)
    with quiet():
        return train_network(X, y, checkpoint_path=ckpt, resume=True)


def _layers_equal(a, b):
    return all(
        np.array_equal(la.weight, lb.weight) and np.array_equal(la.threshold, lb.threshold)
        for la, lb in zip(a.layers, b.layers, strict=True)
    )


@pytest.mark.parametrize(
    "stop_at,round2_weights,shift,elastic",
    [
        (3, "tanh", 0, 0.0),
        (17, "tanh", 0, 0.0),
        (24, "clip", 0, 0.0),
        (40, "clip", 0, 0.0),
        (30, "tanh", 1, 0.0),
        (30, "tanh", 1, 3.0),
    ],
)
def test_interrupted_then_resumed_equals_uninterrupted(
    tmp_path, stop_at, round2_weights, shift, elastic
):
    X, y = _blobs()
    cfg = TrainConfig(
        round2_weights=round2_weights,
        augment_shift=shift,
        augment_elastic=elastic,
        image_shape=(2, 4),
        hidden=(32,),
        epochs_round1=2,
        epochs_round2=2,
        batch_size=32,
        dropout_hidden=0.2,
        seed=7,
    )
    with quiet():
        full = train_network(X, y, cfg, QuantileBinarizer(2), checkpoint_path=tmp_path / "a.ckpt")

    resumed = _interrupted_then_resumed(X, y, cfg, tmp_path / "b.ckpt", stop_at)
    assert _layers_equal(full, resumed)
    losses = [h["loss"] for h in full.metadata["training"]["history"]]
    assert losses == [h["loss"] for h in resumed.metadata["training"]["history"]]


def test_keep_last_without_validation_evaluates_nothing_and_resumes(tmp_path, monkeypatch):
    X, y = _blobs()
    cfg = TrainConfig(hidden=(16,), epochs_round1=2, epochs_round2=2, batch_size=50)
    cfg = dataclasses.replace(cfg, val_fraction=0.0, keep="last", dropout_hidden=0.1)

    def no_evaluation(*args, **kwargs):
        raise AssertionError("keep=last without validation data must not evaluate")

    monkeypatch.setattr(Trainer, "evaluate", no_evaluation)
    with quiet():
        full = train_network(X, y, cfg, QuantileBinarizer(2), checkpoint_path=tmp_path / "a.ckpt")
    history = full.metadata["training"]["history"]
    assert len(history) == 4 and all(h["val_accuracy"] is None for h in history)
    tensors, description = read_checkpoint(tmp_path / "a.ckpt")
    assert description["best_metric"] == {"1": None, "2": None}
    for key in (k for k in tensors if k.startswith("model.")):  # round 2's network is the last
        np.testing.assert_array_equal(tensors["best2." + key[6:]], tensors[key])

    resumed = _interrupted_then_resumed(X, y, cfg, tmp_path / "b.ckpt", 20)  # inside round 2
    assert _layers_equal(full, resumed)


@pytest.mark.parametrize("compiled", [True, False])
@pytest.mark.parametrize(
    "binarizer",
    [
        ThresholdBinarizer(128.0),
        QuantileBinarizer(2, "thermometer"),
        QuantileBinarizer(3, "thermometer"),
        QuantileBinarizer(3, "gray"),
        LloydMaxBinarizer(2, "binary"),
    ],
)
def test_shift_augmenter_equals_binarizing_moved_images(binarizer, compiled, monkeypatch):
    """Both ways: bitnn.train._fused's one pass (thermometer codes as comparisons, other codes
    by their level table) and PyTorch's ops."""
    if compiled and layers._fused is None:
        pytest.skip("bitnn.train._fused not built")
    if not compiled:
        monkeypatch.setattr(layers, "_fused", None)
    rng = np.random.default_rng(0)
    images = np.where(rng.random((40, 5, 7)) < 0.6, 0, rng.integers(1, 256, (40, 5, 7)))
    X = images.reshape(40, -1).astype(np.float32)
    binarizer.fit(X)
    augment = ImageAugmenter(binarizer, (5, 7), 2, torch.device("cpu"))
    # the comparisons-are-the-bits path for thermometer codes, the level table for the rest
    assert augment.thermometer == (getattr(binarizer, "code", "thermometer") == "thermometer")
    shifts = rng.integers(-2, 3, (40, 2))
    assert augment._compiled(torch.from_numpy(X), torch.from_numpy(shifts)) == compiled
    got = augment(torch.from_numpy(X), torch.from_numpy(shifts)).numpy()
    moved = np.zeros_like(images)
    for i, (dy, dx) in enumerate(shifts):  # moved[r, c] = image[r - dy, c - dx], 0 outside
        for r, c in itertools.product(range(5), range(7)):
            if 0 <= r - dy < 5 and 0 <= c - dx < 7:
                moved[i, r, c] = images[i, r - dy, c - dx]
    want = to_bipolar(binarizer.transform(moved.reshape(40, -1).astype(np.float32)))
    np.testing.assert_array_equal(got, want)


def test_elastic_distortion_resamples_at_the_nearest_pixel_then_binarizes():
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (6, 5, 7)).astype(np.float32)
    X = images.reshape(6, -1)
    binarizer = QuantileBinarizer(3, "thermometer").fit(X)
    augment = ImageAugmenter(binarizer, (5, 7), 2, torch.device("cpu"), 4.0, 1.5)
    x, shifts = torch.from_numpy(X), torch.from_numpy(rng.integers(-2, 3, (6, 2)))
    # no distortion: the whole-pixel shifts, resampled at whole pixels
    flat = torch.zeros(6, 2, 5, 7)
    np.testing.assert_array_equal(augment._distort(x, shifts, flat), augment._shift(x, shifts))
    # the same noise everywhere moves every pixel alike: noise 0.25 x alpha 4 along the rows
    # takes each pixel from one row below (the bottom row from outside: 0), 0.2 from the
    # nearest pixel to 0.8 rows below (the same), 0.1 from 0.4 rows below (itself)
    no_shift = torch.zeros(6, 2, dtype=torch.long)
    one_up = np.concatenate([images[:, 1:], np.zeros((6, 1, 7))], axis=1)
    for noise, want in ((0.25, one_up), (0.2, one_up), (0.1, images)):
        field = torch.zeros(6, 2, 5, 7)
        field[:, 0] = noise
        got = augment._distort(x, no_shift, field).numpy().reshape(6, 5, 7)
        np.testing.assert_array_equal(got, want)
    # the bits are the binarizer's bits of the resampled images
    noise = torch.rand(6, 2, 5, 7, generator=torch.Generator().manual_seed(0)) * 2 - 1
    moved = augment._distort(x, shifts, noise).numpy()
    np.testing.assert_array_equal(
        augment(x, shifts, noise).numpy(), to_bipolar(binarizer.transform(moved))
    )
    assert np.abs(moved - X).max() > 10  # it did move them


def test_elastic_distortion_of_one_pixel_high_images_moves_like_the_shifts():
    X = np.arange(1, 9, dtype=np.float32)[None].repeat(3, 0)
    binarizer = QuantileBinarizer(2, "thermometer").fit(X)
    augment = ImageAugmenter(binarizer, (1, 8), 1, torch.device("cpu"), 2.0)
    x, shifts = torch.from_numpy(X), torch.tensor([[1, 0], [0, 1], [0, -1]])
    moved = augment._distort(x, shifts, torch.zeros(3, 2, 1, 8))
    np.testing.assert_array_equal(moved, augment._shift(x, shifts))
    assert moved[0].abs().sum() == 0  # moved down out of its only row


def test_gaussian_matrix_smooths_with_edges_repeated():
    g = _gaussian_matrix(9, 1.0).numpy()
    np.testing.assert_allclose(g.sum(axis=1), 1.0, rtol=1e-6)  # a constant field stays put
    taps = np.exp(-0.5 * np.arange(-3, 4) ** 2)
    np.testing.assert_allclose(g[4, 1:8], taps / taps.sum(), rtol=1e-6)
    assert g[0, 0] > g[4, 4]  # the taps beyond the edge fall on the edge position
    flat = _gaussian_matrix(28, 1e9).numpy()  # a sigma far above the image: no huge window
    np.testing.assert_allclose(flat.sum(axis=1), 1.0, rtol=1e-5)


def test_shift_augmentation_needs_images_and_edges():
    X, y = _blobs()
    with pytest.raises(InputError, match="image_shape"):
        TrainConfig(augment_shift=1)
    with pytest.raises(InputError, match="augment_elastic needs image_shape"):
        TrainConfig(augment_elastic=2.0)
    for bad in ({"augment_elastic": -1.0}, {"augment_elastic": float("nan")}):
        with pytest.raises(InputError, match="augment_elastic must be a number >= 0"):
            TrainConfig(image_shape=(2, 4), **bad)
    with pytest.raises(InputError, match="augment_elastic_sigma must be a positive number"):
        TrainConfig(image_shape=(2, 4), augment_elastic=1.0, augment_elastic_sigma=0.0)
    cfg = TrainConfig(
        hidden=(8,), epochs_round1=1, epochs_round2=0, augment_shift=1, image_shape=(3, 3)
    )
    with pytest.raises(InputError, match="does not match the 8 input features"):
        train_network(X, y, cfg, QuantileBinarizer(2))
    with pytest.raises(InputError, match="binarizer with edges"):
        train_network(X, y, dataclasses.replace(cfg, image_shape=(2, 4)), WTAHashBinarizer(4, 2))


def test_same_seed_same_model_and_resume_checks_data(tmp_path):
    X, y = _blobs()
    cfg = TrainConfig(hidden=(16,), epochs_round1=1, epochs_round2=1, seed=1)
    with quiet():
        a = train_network(X, y, cfg, QuantileBinarizer(2), checkpoint_path=tmp_path / "c.ckpt")
        b = train_network(X, y, cfg, QuantileBinarizer(2))
    assert _layers_equal(a, b)
    with pytest.raises(InputError, match="data differ"):
        train_network(X + 1, y, checkpoint_path=tmp_path / "c.ckpt", resume=True)
    with pytest.raises(InputError, match="nothing to resume"):
        train_network(X, y, checkpoint_path=tmp_path / "missing.ckpt", resume=True)
    assert model_to_bytes(a)  # serialisable


@pytest.mark.parametrize("n_inputs,seed", [(4, 0), (5, 1), (6, 2), (6, 3)])
def test_random_boolean_functions_are_learned_exactly(n_inputs, seed):
    X = np.array(list(itertools.product([0, 1], repeat=n_inputs)), dtype=float)
    y = np.random.default_rng(100 + seed).integers(0, 2, len(X))
    cfg = TrainConfig(
        hidden=(128,),
        bias_kind="bias",
        epochs_round1=150,
        epochs_round2=150,
        batch_size=len(X),
        val_fraction=0.0,
        lr_round1=0.03,
        lr_round2=0.01,
        seed=seed,
    )
    with quiet():
        net = train_network(np.repeat(X, 4, 0), np.repeat(y, 4), cfg, ThresholdBinarizer(0.5))
    assert np.array_equal(net.predict(X), y)


def test_bad_training_input():
    X, y = _blobs(50)
    cfg = TrainConfig(hidden=(4,), epochs_round1=1, epochs_round2=0)
    bad = X.copy()
    bad[3, 2] = np.nan
    with pytest.raises(InputError, match="NaN"):
        train_network(bad, y, cfg)
    with pytest.raises(InputError, match="out of range"):
        train_network(X, y, cfg, n_classes=3)
    with pytest.raises(InputError, match="negative"):
        train_network(X, y - 1, cfg)
    with pytest.raises(InputError, match="must match"):
        train_network(X, y[:-1], cfg)
    with pytest.raises(InputError, match="whole numbers"):
        train_network(X, y + 0.5, cfg)
    with pytest.raises(InputError, match="empty"):
        train_network(X[:0], y[:0], cfg)
    with pytest.raises(InputError, match="features"):
        train_network(X, y, cfg, X_val=X[:, :3], y_val=y)
    with pytest.raises(InputError, match="optimizer"):
        TrainConfig(optimizer="lbfgs")


def test_bit_weights_weigh_each_bits_loss_and_are_checked(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((200, 6))
    Y = np.stack([X[:, 0] > 0, X[:, 1] > 0, X[:, 2] > X[:, 3]], axis=1).astype(np.uint8)
    cfg = TrainConfig(hidden=(16,), epochs_round1=1, epochs_round2=1, batch_size=50, seed=4)
    cfg = dataclasses.replace(cfg, val_fraction=0.0, keep="last")
    with quiet():
        plain = train_network(X, Y, cfg, QuantileBinarizer(2))
        ones = train_network(X, Y, cfg, QuantileBinarizer(2), bit_weights=np.ones(Y.shape))
    assert _layers_equal(plain, ones)  # weights of 1: the plain per-bit loss, bit for bit

    weights = np.ones(Y.shape, np.float16)
    weights[:, 1] = 0  # bit 1 does not count: no gradient reaches its output unit
    grads = []

    def record(trainer):
        grads.append(trainer.model.layers[-1].weight.grad.clone())

    with quiet():
        train_network(
            X, Y, cfg, QuantileBinarizer(2), bit_weights=weights, on_batch=record,
            checkpoint_path=tmp_path / "w.ckpt",
        )  # fmt: skip
    assert len(grads) == 8 and all(g[1].abs().max() == 0 and g[0].abs().max() > 0 for g in grads)
    with pytest.raises(InputError, match="data differ"):  # the weights are part of the data
        with quiet():
            train_network(X, Y, checkpoint_path=tmp_path / "w.ckpt", resume=True)

    for bad, match in [
        (np.ones((200, 2)), r"shape \(200, 2\); the targets' is \(200, 3\)"),
        (-weights, ">= 0"),
        (np.full(Y.shape, np.nan), "finite"),
        (np.zeros(Y.shape), "all 0: no bit's loss would count"),
    ]:
        with pytest.raises(InputError, match=match):
            train_network(X, Y, cfg, bit_weights=bad)
    with pytest.raises(InputError, match="classes"):
        train_network(X, Y[:, 0], cfg, bit_weights=np.ones(200))


def test_label_smoothing_trains_toward_smoothed_targets_and_is_checked():
    """The loss is the cross-entropy against targets with 1 - eps on the label and eps spread
    evenly over all C classes, in training; for bit outputs, and
    outside [0, 1), it is refused."""
    X, y = _blobs(400)
    cfg = TrainConfig(hidden=(16,), epochs_round1=6, epochs_round2=1, batch_size=50, seed=3)
    trainer = Trainer.__new__(Trainer)  # only _loss's inputs: the config and the outputs' kind
    trainer.config = dataclasses.replace(cfg, label_smoothing=0.2)
    trainer.data = type("D", (), {"output": "scores"})()
    out = torch.tensor([[2.0, -1.0, 0.5, 0.0], [0.0, 3.0, -2.0, 1.0]])
    labels = torch.tensor([2, 1])
    target = torch.full((2, 4), 0.2 / 4) + 0.8 * torch.nn.functional.one_hot(labels, 4)
    want = -(target * torch.log_softmax(out, 1)).sum(1).mean()
    torch.testing.assert_close(trainer._loss(out, labels), want)
    with quiet():
        plain = train_network(X, y, cfg, QuantileBinarizer(2))
        smooth = train_network(
            X, y, dataclasses.replace(cfg, label_smoothing=0.2), QuantileBinarizer(2)
        )
    # round 1's last loss: the smoothed targets' is higher (1.13 against 1.04 here)
    last = [n.metadata["training"]["history"][-2]["loss"] for n in (plain, smooth)]
    assert last[1] > last[0] + 0.05
    assert smooth.metadata["training"]["config"]["label_smoothing"] == 0.2
    bits = np.stack([X[:, 0] > 0, X[:, 1] > 0], axis=1).astype(np.uint8)
    with pytest.raises(InputError, match="label_smoothing is for class labels"):
        train_network(X, bits, dataclasses.replace(cfg, label_smoothing=0.1))
    for bad in (-0.1, 1.0):
        with pytest.raises(InputError, match="label_smoothing must be in"):
            TrainConfig(label_smoothing=bad)


def test_report_sets_measure_each_round_and_round_2_is_the_network(tmp_path):
    X, y = _blobs(500)
    Xt, yt = _blobs(200, seed=5)
    cfg = TrainConfig(hidden=(16,), epochs_round1=2, epochs_round2=2, seed=2)
    with quiet():
        net = train_network(X, y, cfg, QuantileBinarizer(2), report={"test": (Xt, yt)})
    acc = net.metadata["training"]["round_accuracy"]["test"]
    assert set(acc) == {"1", "2"} and all(0 <= a <= 1 for a in acc.values())
    # round 2 in binary eval mode is exactly the deployed network
    assert acc["2"] == float(np.mean(net.predict(Xt) == yt))


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")


@needs_cuda
@pytest.mark.parametrize("output", ["scores", "bits"])
def test_training_on_cuda_gives_a_bit_exact_network(tmp_path, output):
    """The GPU path: both rounds on CUDA (with image shifts done on the device), then the
    deployed network agrees bit for bit with the round-2 module run on the GPU."""
    rng = np.random.default_rng(0)
    X = rng.integers(0, 256, (600, 64)).astype(np.float32)
    if output == "scores":
        y = (X[:, :32].mean(axis=1) > X[:, 32:].mean(axis=1)).astype(int)
    else:
        y = (X[:, :8] > 128).astype(np.uint8)
    cfg = TrainConfig(
        hidden=(48, 40),
        bias_kind="threshold",
        epochs_round1=3,
        epochs_round2=3,
        augment_shift=1,
        image_shape=(8, 8),
        device="cuda",
    )
    ckpt = tmp_path / "m.ckpt"
    with quiet():
        net = train_network(X, y, cfg, QuantileBinarizer(2), checkpoint_path=ckpt)
    from bitnn.train.twin import CheckpointNetwork

    gpu = CheckpointNetwork(ckpt, 2)
    gpu.model.to("cuda")
    x = torch.from_numpy(to_bipolar(gpu.binarizer.transform(X))).float().to("cuda")
    with torch.no_grad():
        out = gpu.model(x).cpu().numpy()
    want = (out >= 0).astype(np.uint8) if output == "bits" else np.argmax(out, axis=1)
    np.testing.assert_array_equal(net.predict(X), want)


def test_cpu_threads_default_leaves_busy_cores_to_others(monkeypatch):
    from bitnn.train import trainer as tr

    cpus = min(len(__import__("os").sched_getaffinity(0)), torch.get_num_threads())
    monkeypatch.setattr(tr, "_busy_elsewhere", lambda: 0)
    assert tr.cpu_threads() == cpus
    monkeypatch.setattr(tr, "_busy_elsewhere", lambda: cpus + 3)
    assert tr.cpu_threads() == 1
    assert tr.cpu_threads(3) == 3
    for bad in (0, -1, 1.5, True):
        with pytest.raises(InputError, match="threads"):
            tr.cpu_threads(bad)


@pytest.mark.parametrize(
    ("readings", "busy"),
    [(["2", "1", "1"], 0), (["1", "2", "1"], 0), (["3", "3", "2"], 1), (["3", "3", "3"], 2)],
)
def test_busy_cores_are_those_busy_in_every_reading(monkeypatch, readings, busy):
    """A thread runnable in one reading of /proc/loadavg only (one of ours falling asleep, a
    kernel worker) is not a busy neighbour; one in every reading is."""
    import io as stdio

    from bitnn.train import trainer as tr

    left = list(readings)
    monkeypatch.setattr(tr, "_own_running", lambda: 1)
    monkeypatch.setattr(
        tr, "open", lambda path: stdio.StringIO(f"0 0 0 {left.pop(0)}/90 7\n"), raising=False
    )
    assert tr._busy_elsewhere(gap=0) == busy
    assert not left


def test_threads_are_recorded_restored_and_a_resume_on_others_warns(tmp_path):
    X, y = _blobs()
    cfg = TrainConfig(hidden=(16,), epochs_round1=1, epochs_round2=1, seed=3, device="cpu")
    before = torch.get_num_threads()
    ckpt = tmp_path / "m.ckpt"
    with quiet():
        a = train_network(X, y, cfg, QuantileBinarizer(2), threads=1, checkpoint_path=ckpt)
        b = train_network(X, y, cfg, QuantileBinarizer(2), threads=1)
    assert torch.get_num_threads() == before
    assert a.metadata["training"]["threads"] == 1
    assert _layers_equal(a, b)  # same seed, same thread count: the same network
    with quiet(), pytest.warns(UserWarning, match="trained on 1 CPU thread"):
        train_network(X, y, None, None, threads=2, checkpoint_path=ckpt, resume=True)
    import warnings

    with quiet(), warnings.catch_warnings():
        warnings.simplefilter("error")  # without --threads a resume keeps the run's own count
        again = train_network(X, y, None, None, checkpoint_path=ckpt, resume=True)
    assert again.metadata["training"]["threads"] == 1
