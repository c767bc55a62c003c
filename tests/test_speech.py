"""The speech path: spectra, masks, mixtures, the denoiser, its training and its commands."""

import warnings

import numpy as np
import pytest

sf = pytest.importorskip("soundfile")

from bitnn.binarize import QuantileBinarizer  # noqa: E402
from bitnn.errors import InputError  # noqa: E402
from bitnn.io import load_model, save_model  # noqa: E402
from bitnn.network import BitLayer, BitNetwork  # noqa: E402
from bitnn.speech.denoise import Denoiser, mixture_features, speech_metadata  # noqa: E402
from bitnn.speech.mixtures import (  # noqa: E402
    AudioCache,
    draw_mixtures,
    grid_mixtures,
    manifest_csv,
    mix,
    power,
    read_manifest,
)
from bitnn.speech.spectra import (  # noqa: E402
    SpectrogramConfig,
    apply_mask,
    frame_features,
    ideal_binary_mask,
    istft,
    majority_over_frames,
    mask_error_weights,
    stft,
)

RATE = 8000


def voiced(seconds, f0, seed):
    """A speech-like signal: harmonics of f0 under a syllable-rate envelope."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    x = sum(np.sin(2 * np.pi * k * f0 * t + rng.uniform(0, 6)) / k for k in range(1, 12))
    envelope = np.clip(np.sin(2 * np.pi * 3 * t + rng.uniform(0, 6)), 0, None) ** 2
    return (0.1 * x * envelope).astype(np.float32)


def noise(seconds, seed, color=0.9):
    rng = np.random.default_rng(seed)
    w = rng.standard_normal(int(seconds * RATE))
    out = np.empty_like(w)
    acc = 0.0
    for i, v in enumerate(w):  # first-order low-pass: a brownish noise
        acc = color * acc + v
        out[i] = acc
    return (0.02 * out / out.std()).astype(np.float32)


@pytest.fixture
def corpus(tmp_path):
    """Two voices of three utterances, two noise types of two recordings (one at 16 kHz)."""
    speech, noises = tmp_path / "speech", tmp_path / "noise"
    for v, f0 in (("low", 110), ("high", 220)):
        (speech / v).mkdir(parents=True)
        for i in range(3):
            sf.write(speech / v / f"u{i}.wav", voiced(0.8 + 0.2 * i, f0 + 7 * i, i), RATE)
    for kind, color in (("brown", 0.95), ("white", 0.0)):
        (noises / kind).mkdir(parents=True)
        for i in range(2):
            rate = 16000 if i else RATE
            n = noise(2.0 * rate / RATE, 10 + i, color)
            sf.write(noises / kind / f"n{i}.wav", n, rate)
    return speech, noises


def test_stft_defaults_invert_and_match_the_documented_shape():
    c = SpectrogramConfig()
    assert (c.rate, c.frame, c.hop, c.n_bins) == (8000, 512, 128, 257)
    x = voiced(1.0, 150, 0) + noise(1.0, 1)
    X = stft(x, c)
    assert X.shape[1] == 257 and X.dtype == np.complex64
    np.testing.assert_allclose(istft(X, c, x.size), x, atol=1e-5)
    with pytest.raises(InputError, match="mono"):
        stft(np.zeros((2, 100)), c)
    with pytest.raises(InputError, match="empty"):
        stft(np.zeros(0), c)
    with pytest.raises(InputError, match="hop"):
        SpectrogramConfig(hop=400)


@pytest.mark.parametrize("frame,hop", [(512, 128), (256, 64), (400, 200)])
@pytest.mark.parametrize("n", [1, 255, 256, 257, 1000, 8017])
def test_fast_stft_is_scipys_short_time_fft(frame, hop, n):
    c = SpectrogramConfig(frame=frame, hop=hop)
    x = np.random.default_rng(n).standard_normal(n).astype(np.float32)
    X = stft(x, c)
    np.testing.assert_allclose(istft(X, c, n), x, atol=2e-6)
    if n >= frame // 2:  # ShortTimeFFT takes signals of at least half a frame
        t = c.transform()
        S = t.stft(x.astype(np.float64)).T
        assert X.shape == S.shape
        np.testing.assert_allclose(X, S, atol=1e-4 * np.abs(S).max())
        np.testing.assert_allclose(istft(X, c, n), t.istft(S.T, k1=n), atol=2e-6)


def test_frame_features_put_neighbours_side_by_side():
    m = np.arange(12, dtype=np.float32).reshape(4, 3)
    f = frame_features(m, 1)
    assert f.shape == (4, 9)
    np.testing.assert_array_equal(f[1], np.concatenate([m[0], m[1], m[2]]))
    np.testing.assert_array_equal(f[0], np.concatenate([m[0], m[0], m[1]]))  # repeated edge
    np.testing.assert_array_equal(f[3], np.concatenate([m[2], m[3], m[3]]))
    np.testing.assert_array_equal(frame_features(m, 0), m)
    # a view of overlapping rows, not a copy: nothing can be written through it
    assert not f.flags.writeable and f.strides == (12, 4)
    f2 = frame_features(m, 2)
    rows = [np.clip(np.arange(t - 2, t + 3), 0, 3) for t in range(4)]
    np.testing.assert_array_equal(f2, np.stack([m[r].reshape(-1) for r in rows]))
    assert frame_features(m[:0], 1).shape == (0, 9)


def test_ideal_binary_mask_and_its_local_criterion():
    s = np.array([[1.0, 2.0, 0.5]])
    n = np.array([[1.0, 1.0, 1.0]])
    np.testing.assert_array_equal(ideal_binary_mask(s, n), [[0, 1, 0]])  # |S| > |N|, strictly
    np.testing.assert_array_equal(ideal_binary_mask(s, n, lc_db=-6.1), [[1, 1, 1]])
    np.testing.assert_array_equal(ideal_binary_mask(s, n, lc_db=6.1), [[0, 0, 0]])


def test_oracle_mask_resynthesis_removes_most_of_the_noise():
    c = SpectrogramConfig()
    s, n = voiced(1.5, 140, 3), noise(1.5, 4, 0.0) * 2
    X = stft(s + n, c)
    m = ideal_binary_mask(stft(s, c), stft(n, c))
    y = istft(apply_mask(X, m), c, s.size)
    snr_in = 10 * np.log10(power(s) / power(n))
    snr_out = 10 * np.log10(power(s) / power(y - s))
    assert snr_out > snr_in + 8
    assert np.all(apply_mask(X, np.ones_like(m)) == X)
    # the denoiser's path: uncentred spectra and the mask applied in place, the same samples
    raw = stft(s + n, c, centred=False)
    sign = np.where(np.arange(c.n_bins) % 2, -1, 1)
    np.testing.assert_array_equal(raw * sign, X)
    masked = apply_mask(raw, m, in_place=True)
    assert masked is raw and masked.dtype == np.complex64
    np.testing.assert_array_equal(istft(masked, c, s.size, centred=False), y)
    with pytest.raises(InputError, match="complex64"):
        apply_mask(X.astype(np.complex128), m, in_place=True)


def test_mixtures_are_reproducible_exact_and_listed(corpus, tmp_path):
    speech, noises = corpus
    voices = {v.name: sorted(v.glob("*.wav")) for v in speech.iterdir()}
    types = {t.name: sorted(t.glob("*.wav")) for t in noises.iterdir()}
    audio = AudioCache(RATE)
    a = draw_mixtures(voices, types, (-5.0, 0.0, 5.0), 12, 7, audio)
    assert a == draw_mixtures(voices, types, (-5.0, 0.0, 5.0), 12, 7, audio)
    assert a != draw_mixtures(voices, types, (-5.0, 0.0, 5.0), 12, 8, audio)
    for spec in a:
        m = mix(spec, audio)
        speech_part = m.speech[spec.pad : m.speech.size - spec.pad]
        snr = 10 * np.log10(power(speech_part) / power(m.noise))
        assert snr == pytest.approx(spec.snr_db, abs=1e-3)
        assert m.speech.size == m.noise.size == audio(spec.speech_file).size + 2 * spec.pad
    (tmp_path / "m.csv").write_text(manifest_csv({"train": a, "val": a[:2]}))
    assert read_manifest(tmp_path / "m.csv") == {"train": a, "val": a[:2]}
    with pytest.raises(InputError, match="drawn at 8000 Hz"):
        mix(a[0], AudioCache(16000))
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n")
    with pytest.raises(InputError, match="not a mixture manifest"):
        read_manifest(tmp_path / "bad.csv")
    grid = grid_mixtures(voices, types, (0.0, 5.0), 2, 0, audio)
    assert len(grid) == 2 * 2 * 2 * 2  # voices x noise types x SNRs x utterances


def test_mixtures_skip_broken_and_silent_files(corpus):
    speech, noises = corpus
    (speech / "low" / "empty.wav").write_bytes(b"")
    sf.write(speech / "low" / "silent.wav", np.zeros(4000, np.float32), RATE)
    voices = {v.name: sorted(v.glob("*.wav")) for v in speech.iterdir()}
    types = {t.name: sorted(t.glob("*.wav")) for t in noises.iterdir()}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning leaks out of the corpus check
        specs = draw_mixtures(voices, types, (0.0,), 40, 0, AudioCache(RATE))
    used = {s.speech_file for s in specs}
    assert not any(f.endswith(("empty.wav", "silent.wav")) for f in used)
    only_bad = {"bad": [speech / "low" / "empty.wav"]}
    with pytest.raises(InputError, match="no usable audio"):
        draw_mixtures(only_bad, types, (0.0,), 1, 0, AudioCache(RATE))


def random_denoiser(context=0, seed=0, hidden=32, engine=None):
    c = SpectrogramConfig(context=context)
    rng = np.random.default_rng(seed)
    n_feat = c.n_bins * c.n_frames_seen
    b = QuantileBinarizer(2).fit(rng.gamma(1.0, 1.0, (500, n_feat)).astype(np.float32))
    layers = [
        BitLayer.from_values(rng.choice([-1, 1], (hidden, 2 * n_feat)), bias=np.ones(hidden)),
        BitLayer.from_values(rng.choice([-1, 1], (c.n_bins, hidden)), bias=np.ones(c.n_bins)),
    ]
    net = BitNetwork(layers, b, "bits", speech_metadata(c, 0.05))
    return Denoiser(net, engine)


def test_denoiser_keeps_length_and_guards_its_input():
    d = random_denoiser(context=1)
    x = voiced(1.3, 150, 0) + noise(1.3, 2)
    y = d(x)
    assert y.shape == x.shape and y.dtype == np.float32
    with pytest.warns(UserWarning, match="silent"):
        assert not np.any(d(np.zeros(1000, np.float32)))
    with pytest.raises(InputError, match="NaN"):
        d(np.array([0.1, np.nan, 0.2], np.float32))
    with pytest.raises(InputError, match="mono"):
        d(np.zeros((2, 100), np.float32))
    classifier = BitNetwork([BitLayer.from_values(np.ones((3, 4)))], output="scores")
    with pytest.raises(InputError, match="not a denoiser"):
        Denoiser(classifier)


def test_majority_over_frames_is_a_vote_along_each_bin():
    from scipy.ndimage import convolve

    rng = np.random.default_rng(4)
    for frames in (1, 3, 5, 7):
        for n in (1, 2, 3, 7, 40):
            m = (rng.random((n, 9)) < 0.5).astype(np.uint8)
            votes = convolve(m.astype(np.int32), np.ones((frames, 1), np.int32), mode="nearest")
            expected = (2 * votes > frames).astype(np.uint8)
            got = majority_over_frames(m, frames)
            assert got.dtype == np.uint8
            np.testing.assert_array_equal(got, expected)
    burst = np.zeros((6, 2), np.uint8)
    burst[2, 0] = 1  # one frame of noise let through
    assert not majority_over_frames(burst, 3).any()
    gap = np.ones((6, 2), np.uint8)
    gap[3, 1] = 0  # one frame of speech dropped
    assert majority_over_frames(gap, 3).all()
    ends = np.array([[1], [0], [0], [1], [1]], np.uint8)  # the ends repeat the edge frames
    np.testing.assert_array_equal(majority_over_frames(ends, 3)[:, 0], [1, 0, 0, 1, 1])
    for bad in (0, 2, 17, True, np.True_, 3.0, "3", -1):
        with pytest.raises(InputError, match="odd number of frames"):
            majority_over_frames(burst, bad)
    np.testing.assert_array_equal(majority_over_frames(gap, np.int64(3)), np.ones_like(gap))
    with pytest.raises(InputError, match="frames, bins"):
        majority_over_frames(np.ones(5, np.uint8), 3)


def test_denoiser_applies_its_models_majority_vote():
    from bitnn.progress import ProgressBar

    d = random_denoiser(context=1)
    x = voiced(2.0, 140, 5) + noise(2.0, 6)
    _, feats = mixture_features(x, d.config, d.level_rms)
    raw = d.network.predict(feats)
    np.testing.assert_array_equal(d.mask(x)[1], raw)  # speech_metadata's default: no vote

    def with_meta(meta, **kw):
        net = d.network
        return Denoiser(BitNetwork(net.layers, net.binarizer, "bits", meta), **kw)

    voting = with_meta(speech_metadata(d.config, 0.05, 3))
    voted = voting.mask(x)[1]
    np.testing.assert_array_equal(voted, majority_over_frames(raw, 3))
    assert not np.array_equal(voted, raw)
    bar = ProgressBar(1, enabled=False)  # the path for long files votes over the whole mask
    np.testing.assert_array_equal(voting.mask(x, bar)[1], voted)
    np.testing.assert_array_equal(
        voting(x), istft(apply_mask(voting.mask(x)[0], voted), d.config, x.size)
    )
    np.testing.assert_array_equal(
        with_meta(speech_metadata(d.config, 0.05, 3), mask_majority_frames=1).mask(x)[1], raw
    )
    old = speech_metadata(d.config, 0.05)  # no vote: no key, as in models made before it
    assert "mask_majority_frames" not in old["speech"]
    np.testing.assert_array_equal(with_meta(old).mask(x)[1], raw)
    old["speech"]["mask_majority_frames"] = 4
    with pytest.raises(InputError, match=r"speech settings: .*odd number"):
        with_meta(old)
    with pytest.raises(InputError, match="odd number"):
        with_meta(speech_metadata(d.config, 0.05), mask_majority_frames=2)
    with pytest.raises(InputError, match="odd number"):
        speech_metadata(d.config, 0.05, 0)


def test_denoiser_level_does_not_move_the_mask():
    d = random_denoiser()
    x = voiced(1.0, 150, 0) + noise(1.0, 2)
    _, m1 = d.mask(x)
    _, m2 = d.mask(4 * x)
    assert np.mean(m1 == m2) > 0.999  # up to float rounding at a quantile edge


def test_compiled_engine_gives_the_reference_mask_bits():
    from bitnn.engine.compiled import available_variants

    x = voiced(1.0, 150, 0) + noise(1.0, 2)
    ref = random_denoiser(context=1, engine="reference").mask(x)[1]
    assert available_variants(), "the compiled kernels are not built"
    for name in available_variants():
        np.testing.assert_array_equal(random_denoiser(context=1, engine=name).mask(x)[1], ref)


def test_floor_relative_features_ignore_level_and_follow_each_bin():
    from bitnn.speech.spectra import FLOOR_BLOCK_FRAMES, FLOOR_EPS, relative_to_floor

    c = SpectrogramConfig(floor_percentile=20.0)
    x = voiced(2.0, 150, 0) + noise(2.0, 1)
    _, f1 = mixture_features(x, c, 0.05)
    _, f2 = mixture_features(0.1 * x, c, 0.05)
    np.testing.assert_allclose(f1, f2, rtol=1e-4, atol=1e-4)
    m = np.abs(np.random.default_rng(0).standard_normal((100, 3))).astype(np.float32)
    m[:, 1] *= 50  # a loud bin is as loud as ever relative to its own floor
    r = relative_to_floor(m, 20.0)
    np.testing.assert_allclose(np.percentile(r, 20, axis=0)[[0, 2]], 1.0, rtol=0.05)
    assert np.percentile(r[:, 1], 20) == pytest.approx(1.0, rel=0.01)
    # Long recordings: each block of frames has its own floor (a noise that changes).
    n = int(FLOOR_BLOCK_FRAMES * 2.2)
    long = np.ones((n, 1), np.float32)
    long[FLOOR_BLOCK_FRAMES:] = 10.0
    r = relative_to_floor(long, 20.0)
    np.testing.assert_allclose(
        r[[0, FLOOR_BLOCK_FRAMES, n - 1]].ravel(),
        1 / (1 + FLOOR_EPS * np.array([1, 0.1, 0.1])),
        rtol=1e-5,
    )


@pytest.mark.parametrize("percentile", [0.0, 20.0, 37.5, 50.0, 63.0, 99.9])
def test_column_percentile_is_numpys_bit_for_bit(percentile):
    """The noise floor must not move: the released models learned numpy's values."""
    from bitnn.speech.spectra import column_percentile

    rng = np.random.default_rng(int(percentile * 10))
    for n in (1, 2, 3, 7, 100, 1001, 3753):
        for values in (
            np.abs(rng.standard_normal((n, 9))).astype(np.float32),
            rng.integers(0, 4, (n, 5)).astype(np.float32),  # ties everywhere
            (rng.standard_normal((n, 4)) * 1e30).astype(np.float32),
            rng.standard_normal((n, 3)),  # float64
        ):
            want = np.percentile(values, percentile, axis=0)
            got = column_percentile(values, percentile)
            assert got.dtype == want.dtype
            np.testing.assert_array_equal(got, want)


def test_spectrogram_settings_are_checked_when_made():
    for bad in ({"window": "nope"}, {"frame": 500, "hop": 128}, {"context": 1.5}):
        with pytest.raises(InputError):
            SpectrogramConfig(**bad)
    with pytest.raises(InputError, match="mapping"):
        SpectrogramConfig.from_json([512])
    with pytest.raises(InputError, match="invalid spectrogram"):
        SpectrogramConfig.from_json({"frames": 512})


def test_features_use_the_normalised_level():
    c = SpectrogramConfig()
    x = voiced(1.0, 150, 0)
    X1, f1 = mixture_features(x, c, 0.05)
    X2, f2 = mixture_features(10 * x, c, 0.05)
    np.testing.assert_allclose(f1, f2, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.abs(X2), 10 * np.abs(X1), rtol=1e-4, atol=1e-5)


torch = pytest.importorskip("torch")


def test_mask_error_weights_are_what_a_wrong_bit_costs():
    s = np.array([[3.0, 1.0, 0.0, 2j]])
    n = np.array([[1.0, 1.0, 2.0, 0.0]])
    # | |S|^2 - |N|^2 | = 8, 0, 4, 4 (mean 4); a complex bin counts by its magnitude
    np.testing.assert_allclose(mask_error_weights(s, n, 1.0), [[2.0, 0.0, 1.0, 1.0]])
    root = np.sqrt([[8.0, 0.0, 4.0, 4.0]])
    np.testing.assert_allclose(mask_error_weights(s, n, 0.5), root / root.mean(), rtol=1e-6)
    assert mask_error_weights(s, n, 1.0).dtype == np.float32
    np.testing.assert_array_equal(mask_error_weights(s, s, 1.0), np.ones((1, 4)))  # all 0: even
    steep = mask_error_weights(s * 100, n * 100, 200.0)  # 80000 ** 200 would overflow float64
    assert np.all(np.isfinite(steep)) and steep.mean() == pytest.approx(1.0)
    assert steep[0, 0] == pytest.approx(4.0)  # the peak bin takes it all (the rest: 0.5 ** 200)
    with pytest.raises(InputError, match="must match"):
        mask_error_weights(s, n[:, :3], 1.0)
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(InputError, match="positive number"):
            mask_error_weights(s, n, bad)


def test_training_examples_carry_float16_loss_weights_capped_not_infinite():
    from types import SimpleNamespace

    from bitnn.speech.denoise import training_examples

    config = SpectrogramConfig()
    s, n = voiced(1.0, 140, 4), noise(1.0, 5)
    plain = training_examples([SimpleNamespace(speech=s, noise=n, mixture=s + n)], config, 0.05)
    assert plain[2] is None  # no weights asked: none made
    X, Y, W = training_examples(
        [SimpleNamespace(speech=s, noise=n, mixture=s + n)], config, 0.05, loss_weights=0.5
    )
    np.testing.assert_array_equal(X, plain[0])
    np.testing.assert_array_equal(Y, plain[1])
    want = mask_error_weights(stft(s, config), stft(n, config), 0.5)
    assert W.dtype == np.float16 and W.shape == Y.shape
    np.testing.assert_allclose(W, want, rtol=1e-3)
    # 20 s of silence but one short tone: its peak weighs over 65,504, float16's largest
    # value, which the weights keep instead of becoming infinite
    tone = np.zeros(20 * RATE, np.float32)
    tone[80000:80512] = np.sin(2 * np.pi * 1000 * np.arange(512) / RATE) * np.hanning(512)
    quiet = np.zeros_like(tone)
    peak = mask_error_weights(stft(tone, config), stft(quiet, config), 1.0).max()
    _, _, W = training_examples(
        [SimpleNamespace(speech=tone, noise=quiet, mixture=tone)], config, 0.05, loss_weights=1.0
    )
    assert peak > 65504 and np.all(np.isfinite(W)) and W.max() == np.finfo(np.float16).max


def test_trained_denoiser_converts_bit_exactly_and_round_trips(corpus, tmp_path):
    from bitnn.speech.training import denoising_data, train_denoiser
    from bitnn.train.trainer import TrainConfig
    from bitnn.train.twin import CheckpointNetwork

    speech, noises = corpus
    data = denoising_data(speech, noises, n_mixtures=30, context=1, seed=3)
    assert len(data.val) == 1 and data.spectrogram.context == 1
    cfg = TrainConfig(
        hidden=(64,), bias_kind="threshold", epochs_round1=4, epochs_round2=4, batch_size=32,
        keep="last", seed=1,
    )  # fmt: skip
    ckpt = tmp_path / "d.ckpt"
    net = train_denoiser(data, cfg, QuantileBinarizer(2), checkpoint_path=ckpt)
    assert net.output == "bits" and net.n_outputs == 257 and net.n_inputs == 2 * 3 * 257
    save_model(net, tmp_path / "d.bnn")
    d = Denoiser(load_model(tmp_path / "d.bnn"))
    x = voiced(1.2, 130, 9) + noise(1.2, 9)
    _, feats = mixture_features(x, d.config, d.level_rms)
    # The deployed bits are the PyTorch round-2 module's bits, for every frame.
    np.testing.assert_array_equal(d.mask(x)[1], CheckpointNetwork(ckpt, 2).predict(feats))
    assert CheckpointNetwork(ckpt, 1).predict(feats).shape == (feats.shape[0], 257)
    # It learned: on its training frames it finds most speech bins and keeps most noise out.
    from bitnn.speech.denoise import training_examples
    from bitnn.speech.mixtures import iter_mixtures

    X, Y, _ = training_examples(iter_mixtures(data.train, AudioCache(RATE)), d.config, d.level_rms)
    P = load_model(tmp_path / "d.bnn").predict(X)
    assert P[Y == 1].mean() > 0.5 and P[Y == 0].mean() < 0.1
    # Its report plays the real-valued twin too, from the checkpoint (--twin).
    from bitnn.cli import main
    from bitnn.speech.mixtures import manifest_csv

    (tmp_path / "m.csv").write_text(manifest_csv({"val": data.val}))
    args = ["report", str(tmp_path / "d.bnn"), "-o", str(tmp_path / "r"), "--twin", str(ckpt)]
    assert main([*args, "--mixtures", str(tmp_path / "m.csv")]) == 0
    page = (tmp_path / "r" / "index.html").read_text()
    assert (
        "real-valued twin" in page
        and (tmp_path / "r/audio/example1-real-valued-twin.wav").is_file()
    )


def test_train_denoiser_hands_the_loss_weights_to_the_trainer(corpus, monkeypatch):
    from bitnn.speech import training
    from bitnn.speech.denoise import training_examples
    from bitnn.speech.mixtures import iter_mixtures

    speech, noises = corpus
    data = training.denoising_data(speech, noises, n_mixtures=4, preset="best")
    assert data.loss_weights == 0.5  # the preset's
    given = {}
    monkeypatch.setattr(training, "train_network", lambda *a, **kw: given.update(kw))
    training.train_denoiser(data, None, None)
    _, _, W = training_examples(
        iter_mixtures(data.train, data.audio), data.spectrogram, 0.05, loss_weights=0.5
    )  # 0.05: the default input level (DEFAULT_LEVEL_RMS)
    np.testing.assert_array_equal(given["bit_weights"], W)
    assert given["metadata"]["speech"]["loss_weights"] == 0.5
    training.train_denoiser(training.denoising_data(speech, noises, n_mixtures=4), None, None)
    assert given["bit_weights"] is None  # the paper preset: every bit the same


def test_cli_trains_a_denoiser_resumes_and_denoises_a_file(corpus, tmp_path, capsys):
    from bitnn.cli import main

    speech, noises = corpus
    model = tmp_path / "den.bnn"
    base = ["train-denoiser", "-o", str(model), "--speech", str(speech), "--noise", str(noises)]
    small = ["--mixtures", "20", "--hidden", "32", "--epochs1", "1", "--epochs2", "1"]
    assert main(base + small + ["--preset", "paper", "--keep-checkpoint"]) == 0
    best = tmp_path / "best.bnn"
    assert main([*base[:2], str(best), *base[3:], *small]) == 0  # the default preset: best
    assert not (tmp_path / "best.bnn.ckpt").exists()  # removed after success
    sp = load_model(best).metadata["speech"]
    assert sp["spectrogram"]["context"] == 1 and sp["spectrogram"]["floor_percentile"] == 50
    from bitnn.io import read_provenance  # how the mixtures were drawn: beside the model

    assert read_provenance(best)["speech"]["data_options"]["mixtures"] == 20
    assert read_provenance(best)["speech"]["loss_weights"] == 0.5  # the preset's bit weights
    assert read_provenance(model)["speech"]["loss_weights"] == 0.0
    assert sp["mask_majority_frames"] == 5  # the presets' majority votes over frames
    assert "mask_majority_frames" not in load_model(model).metadata["speech"]  # no vote
    assert (tmp_path / "den.bnn.mixtures.csv").exists()
    first = load_model(model)
    resumed = [*base, "--resume", "--force", "--keep-checkpoint"]
    assert main(resumed) == 0  # the data options come from the run
    again = load_model(model)  # a finished run resumed is the same model
    assert "resumed_with" in again.metadata
    for a, b in zip(first.layers, again.layers, strict=True):
        np.testing.assert_array_equal(a.weight, b.weight)
        np.testing.assert_array_equal(a.threshold, b.threshold)
    manifest = (tmp_path / "den.bnn.mixtures.csv").read_text()
    assert main([*base, "--mixtures", "21", "--resume", "--force"]) == 2
    assert "--mixtures 21 differs" in capsys.readouterr().err
    assert (tmp_path / "den.bnn.mixtures.csv").read_text() == manifest  # untouched
    assert load_model(model).metadata["command"].startswith("bitnn train-denoiser")
    assert main([*base, "--context", "2", "--resume", "--force"]) == 2
    assert "--context 2 differs" in capsys.readouterr().err
    assert main([*base, "--loss-weights", "1", "--resume", "--force"]) == 2
    assert "--loss-weights 1.0 differs from the run being resumed (0.0)" in capsys.readouterr().err
    # a checkpoint from before --loss-weights existed: its run had none
    from bitnn.io import encode_container
    from bitnn.train.trainer import read_checkpoint

    ckpt = tmp_path / "den.bnn.ckpt"
    tensors, description = read_checkpoint(ckpt)
    del description["metadata"]["speech"]["data_options"]["loss_weights"]
    ckpt.write_bytes(encode_container(dict(tensors), description))
    assert main([*base, "--loss-weights", "0.5", "--resume", "--force"]) == 2
    assert "--loss-weights 0.5 differs from the run being resumed (0.0)" in capsys.readouterr().err
    assert main([*base[:2], str(tmp_path / "w.bnn"), *base[3:], "--loss-weights", "-1"]) == 2
    assert "number >= 0" in capsys.readouterr().err
    lost = ["train-denoiser", "-o", str(tmp_path / "x.bnn"), "--speech", str(tmp_path / "nowhere")]
    assert main([*lost, "--noise", str(noises), "--mixtures", "5"]) == 2
    err = capsys.readouterr().err
    assert "nowhere" in err and err.count("\n") == 1
    # Denoise a stereo 16 kHz recording: downmixed and resampled, with notes.
    x = np.stack([voiced(1.0, 150, 1), voiced(1.0, 150, 1)], 1) + noise(2.0, 3)[:, None][::2]
    src = tmp_path / "noisy.wav"
    sf.write(src, np.repeat(x, 2, axis=0), 16000)
    out = tmp_path / "clean.wav"
    assert main(["denoise", str(model), str(src), "-o", str(out)]) == 0
    captured = capsys.readouterr()
    assert (
        "downmixed 2 channels" in captured.err and "resampled 16000 Hz -> 8000 Hz" in captured.err
    )
    assert "faster than real time" in captured.out
    y, rate = sf.read(out)
    assert rate == 8000 and y.shape == (8000,)  # 1 s
    assert main(["denoise", str(model), str(src), "-o", str(out)]) == 2  # no silent overwrite
    assert "already exists" in capsys.readouterr().err
    voted = tmp_path / "voted.wav"
    assert main(["denoise", str(model), str(src), "-o", str(voted), "--mask-majority", "3"]) == 0
    capsys.readouterr()
    assert not np.array_equal(sf.read(voted)[0], y)  # the vote changed some bits
    bad = tmp_path / "even.wav"
    assert main(["denoise", str(model), str(src), "-o", str(bad), "--mask-majority", "2"]) == 2
    assert "odd number of frames" in capsys.readouterr().err and not bad.exists()
    assert main([*base, "--resume", "--force", "--mask-majority", "4"]) == 2
    assert "odd number of frames" in capsys.readouterr().err
    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(4000, np.float32), RATE)
    assert main(["denoise", str(model), str(silent), "-o", str(tmp_path / "s.wav")]) == 0
    err = capsys.readouterr().err
    assert "bitnn: warning:" in err and "silent" in err and ".py:" not in err
    (tmp_path / "text.wav").write_text("not audio")
    assert (
        main(["denoise", str(model), str(tmp_path / "text.wav"), "-o", str(tmp_path / "o.wav")])
        == 2
    )
    err = capsys.readouterr().err
    assert err.startswith("bitnn: error:") and err.count("\n") == 1
    assert not (tmp_path / "o.wav").exists()
    import subprocess
    import sys

    code = (  # deployment needs no PyTorch: denoising a file must not import it
        "import sys; from bitnn.cli import main; "
        f"rc = main(['denoise', {str(model)!r}, {str(src)!r}, '-o', {str(tmp_path / 'n.wav')!r}]); "
        "assert 'torch' not in sys.modules, 'torch was imported'; sys.exit(rc)"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
    classifier = tmp_path / "cls.bnn"
    save_model(BitNetwork([BitLayer.from_values(np.ones((3, 4)))]), classifier)
    assert main(["denoise", str(classifier), str(src), "-o", str(tmp_path / "o.wav")]) == 2
    assert "not a denoiser" in capsys.readouterr().err


def test_separation_metrics_follow_the_estimate():
    from bitnn.speech.metrics import separation_metrics

    s, n = voiced(2.0, 140, 5), noise(2.0, 6, 0.0)
    n *= np.sqrt(power(s) / power(n))  # 0 dB
    noisy = separation_metrics(s, n, s + n, RATE)
    assert noisy["sdr"] == pytest.approx(0.0, abs=0.5)
    assert noisy["sir"] == pytest.approx(0.0, abs=0.5)
    better = separation_metrics(s, n, s + 0.1 * n, RATE)
    assert better["sdr"] == pytest.approx(20.0, abs=1.0) and better["stoi"] > noisy["stoi"]
    silent = separation_metrics(s, n, np.zeros_like(s), RATE)  # defined thanks to the dither
    assert np.isfinite(silent["sdr"]) and silent["sdr"] < 0
    with pytest.raises(InputError, match="one length"):
        separation_metrics(s, n, s[:-1], RATE)
    short = separation_metrics(s[:2000], n[:2000], s[:2000], RATE)  # 0.25 s: too short
    assert np.isnan(short["stoi"]) and short["sdr"] > 30


def test_set_mask_majority_script_keeps_the_network_and_its_provenance(tmp_path):
    import json
    import subprocess
    import sys
    from pathlib import Path

    d = random_denoiser(context=1)
    net = d.network
    net.metadata = {**net.metadata, "training": {"history": [{"loss": 1.0}]}}
    save_model(net, tmp_path / "m.bnn")
    script = Path(__file__).resolve().parents[1] / "scripts" / "set_mask_majority.py"
    out = tmp_path / "voted.bnn"
    run = [sys.executable, str(script), str(tmp_path / "m.bnn"), "5", "-o", str(out)]
    assert subprocess.run(run, capture_output=True, text=True).returncode == 0
    voted = load_model(out)
    for a, b in zip(net.layers, voted.layers, strict=True):
        np.testing.assert_array_equal(a.weight, b.weight)
        np.testing.assert_array_equal(a.threshold, b.threshold)
    assert Denoiser(voted).mask_majority_frames == 5
    side = json.loads((tmp_path / "voted.bnn.json").read_text())["metadata"]
    assert side["training"] == {"history": [{"loss": 1.0}]}  # the provenance carried over
    assert side["revisions"] == ["mask_majority_frames 1 -> 5 (scripts/set_mask_majority.py)"]
    off = tmp_path / "off.bnn"  # back to no vote: the key goes, as training writes it
    assert subprocess.run([*run[:3], "1", "-o", str(off)], capture_output=True).returncode == 0
    assert "mask_majority_frames" not in load_model(off).metadata["speech"]
    again = subprocess.run(run, capture_output=True, text=True)  # never over a finished file
    assert again.returncode == 2 and "exists" in again.stderr
    even = [*run[:3], "4", "-o", str(tmp_path / "even.bnn")]
    bad = subprocess.run(even, capture_output=True, text=True)
    assert bad.returncode == 2 and "odd number" in bad.stderr and "Traceback" not in bad.stderr
