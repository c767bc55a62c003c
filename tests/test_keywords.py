"""Keyword classification from recordings: utterance features, training from class folders,
`bitnn predict MODEL file.wav`, and the real-valued twin read from a checkpoint."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from bitnn.cli import main
from bitnn.data.audio import write_wav
from bitnn.errors import InputError
from bitnn.io import load_model, read_provenance
from bitnn.speech.keywords import (
    UtteranceFeatures,
    audio_class_folders,
    keyword_settings,
    mel_filterbank,
    segment_means,
    utterance_features,
)

RATE = 8000


def _tone(freq: float, seconds: float, delay: float = 0.0, gain: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    x = gain * np.sin(2 * np.pi * freq * t).astype(np.float32)
    return np.concatenate([np.zeros(int(delay * RATE), np.float32), x])


def test_mel_bands_cover_the_spectrum_in_order():
    cfg = UtteranceFeatures()
    bank = mel_filterbank(cfg)
    assert bank.shape == (cfg.frame // 2 + 1, cfg.n_bands)
    assert np.all(bank.sum(axis=0) > 0)  # no band is empty
    centres = np.argmax(bank, axis=0)
    assert np.all(np.diff(centres) >= 0) and centres[-1] > centres[0]


def test_features_follow_the_sound_not_its_gain_or_silence():
    cfg = UtteranceFeatures()
    low, high = _tone(300, 0.5), _tone(2500, 0.5)
    f_low, f_high = utterance_features(low, cfg), utterance_features(high, cfg)
    assert f_low.shape == (cfg.n_features,) and f_low.dtype == np.float32
    band = lambda f: np.argmax(f.reshape(cfg.n_segments, cfg.n_bands).mean(axis=0))  # noqa: E731
    assert band(f_high) > band(f_low)
    # Gain and leading/trailing silence do not change the features (trimmed, relative to peak).
    quiet_late = np.concatenate([_tone(300, 0.5, delay=0.3, gain=0.01), np.zeros(2000, "f4")])
    # (30 dB quieter; segment edges move by up to a frame, so within 1.5 dB)
    np.testing.assert_allclose(utterance_features(quiet_late, cfg), f_low, atol=1.5)
    assert f_low.max() == 0.0 and f_low.min() >= cfg.floor_db


def test_a_rising_sweep_is_laid_out_in_time():
    cfg = UtteranceFeatures()
    t = np.arange(RATE) / RATE
    sweep = 0.3 * np.sin(2 * np.pi * (200 * t + 1500 * t**2)).astype(np.float32)
    levels = utterance_features(sweep, cfg).reshape(cfg.n_segments, cfg.n_bands)
    peaks = np.argmax(levels, axis=1)
    assert peaks[-1] > peaks[0] and np.all(np.diff(peaks) >= -1)


def test_segment_means_of_short_and_long_parts():
    rows = np.arange(10, dtype=float)[:, None]
    np.testing.assert_array_equal(segment_means(rows, 5)[:, 0], [0.5, 2.5, 4.5, 6.5, 8.5])
    np.testing.assert_array_equal(segment_means(rows[:3], 6)[:, 0], [0, 0, 1, 1, 2, 2])


def test_bad_signals_and_settings_are_refused():
    with pytest.raises(InputError, match="non-empty mono"):
        utterance_features(np.zeros(0, np.float32))
    with pytest.raises(InputError, match="NaN"):
        utterance_features(np.array([0.1, np.nan] * 400, np.float32))
    silent = utterance_features(np.zeros(4000, np.float32))
    assert np.all(silent == UtteranceFeatures().floor_db)
    with pytest.raises(InputError, match="n_bands"):
        UtteranceFeatures(n_bands=1)
    with pytest.raises(InputError, match="mapping"):
        UtteranceFeatures.from_json("x")
    assert UtteranceFeatures.from_json(UtteranceFeatures().to_json()) == UtteranceFeatures()


def _class_folders(root, n_per_class=12):
    """Two classes of synthetic 'words': a low and a high tone of varying length and level."""
    pytest.importorskip("soundfile")  # the speech extra: writing and reading recordings
    rng = np.random.default_rng(0)
    for name, freq in (("high", 2200.0), ("low", 400.0)):
        (root / name).mkdir(parents=True)
        for i in range(n_per_class):
            x = _tone(freq * rng.uniform(0.9, 1.1), rng.uniform(0.3, 0.7), rng.uniform(0, 0.2))
            x += 0.003 * rng.standard_normal(x.size).astype(np.float32)
            write_wav(root / name / f"{i}.wav", x * rng.uniform(0.2, 1.0), RATE)
    return root


def test_class_folders_are_listed_with_sorted_names(tmp_path):
    root = _class_folders(tmp_path / "words", 3)
    files, y, classes = audio_class_folders(root)
    assert classes == ["high", "low"] and len(files) == 6
    assert list(y) == [0, 0, 0, 1, 1, 1]
    (tmp_path / "one" / "only").mkdir(parents=True)
    with pytest.raises(InputError, match="at least 2"):
        audio_class_folders(tmp_path / "one")
    (tmp_path / "one" / "other").mkdir()
    with pytest.raises(InputError, match="class 'only'"):
        audio_class_folders(tmp_path / "one")


def test_train_predict_and_eval_on_a_folder_of_recordings(tmp_path, capsys):
    root = _class_folders(tmp_path / "words")
    model = str(tmp_path / "words.bnn")
    args = ["train", str(root), "-o", model, "--hidden", "32", "--epochs1", "15"]
    assert main([*args, "--epochs2", "15", "--val-fraction", "0"]) == 0
    net = load_model(model)
    config, classes = keyword_settings(net.metadata)
    assert classes == ["high", "low"] and config == UtteranceFeatures()
    capsys.readouterr()
    assert main(["eval", model, str(root)]) == 0
    assert "accuracy 100.00%" in capsys.readouterr().out
    # predict names the class of each file, for files and for folders of files
    write_wav(tmp_path / "new.wav", _tone(2100, 0.4) * 0.5, RATE)
    assert main(["predict", model, str(tmp_path / "new.wav"), str(root / "low")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"{tmp_path / 'new.wav'}\thigh"
    assert len(lines) == 13 and all(line.endswith("\tlow") for line in lines[1:])
    # any rate and channel count in, converted with a note
    tone = _tone(190, 1.0)  # 8,000 samples of 190 Hz at 8 kHz: 380 Hz for 0.5 s at 16 kHz
    stereo = np.stack([tone, tone], axis=1)
    import soundfile

    soundfile.write(tmp_path / "stereo.wav", stereo, 16000)
    assert main(["predict", model, str(tmp_path / "stereo.wav")]) == 0
    out = capsys.readouterr()
    assert out.out.endswith("\tlow\n") and "note:" in out.err


def test_audio_inputs_to_models_of_another_kind_are_refused(tmp_path, capsys):
    pytest.importorskip("soundfile")
    write_wav(tmp_path / "a.wav", _tone(300, 0.3), RATE)
    assert main(["predict", "models/mnist-small.bnn", str(tmp_path / "a.wav")]) == 2
    assert "not a keyword model" in capsys.readouterr().err
    root = _class_folders(tmp_path / "words", 2)
    shutil.copytree(root / "low", root / "extra")
    model = str(tmp_path / "m.bnn")
    main(["train", str(root), "-o", model, "--hidden", "8", "--epochs1", "1", "--epochs2", "1"])
    capsys.readouterr()
    other = tmp_path / "other"
    _class_folders(other, 1)
    (other / "unknown").mkdir()
    shutil.copy(tmp_path / "a.wav", other / "unknown")
    assert main(["eval", model, str(other)]) == 2
    assert "class folders the model does not know: unknown" in capsys.readouterr().err


def test_fsdd_digits_train_on_takes_5_to_49_and_test_on_0_to_4(fsdd, tmp_path, capsys):
    model = str(tmp_path / "digits.bnn")
    assert main(["train", "fsdd", "-o", model, "--epochs1", "3", "--val-fraction", "0.3"]) == 2
    assert "takes 5-9" in capsys.readouterr().err
    args = ["train", "fsdd", "-o", model, "--hidden", "64", "--epochs1", "4", "--epochs2", "4"]
    assert main(args) == 0
    net = load_model(model)
    training = read_provenance(model)["training"]
    assert training["n_train"] == 2400 and training["n_val"] == 300
    assert keyword_settings(net.metadata)[1] == [str(d) for d in range(10)]
    capsys.readouterr()
    assert main(["eval", model, "fsdd", "--json"]) == 0
    import json

    r = json.loads(capsys.readouterr().out)
    assert r["n"] == 300 and r["accuracy"] > 0.7  # chance is 0.1
    wav = sorted(fsdd.files)[0]
    assert main(["predict", model, str(wav)]) == 0
    assert capsys.readouterr().out.startswith(f"{wav}\t")


def test_twin_from_a_checkpoint_predicts_classes(tmp_path):
    from bitnn.binarize import QuantileBinarizer
    from bitnn.train.trainer import TrainConfig, train_network
    from bitnn.train.twin import CheckpointNetwork

    rng = np.random.default_rng(1)
    X = rng.standard_normal((300, 6)).astype(np.float32)
    y = (X[:, 0] + X[:, 1] > 0).astype(int) + 2 * (X[:, 2] > 0)
    cfg = TrainConfig(hidden=(32,), epochs_round1=20, epochs_round2=8, val_fraction=0.0)
    ckpt = tmp_path / "m.ckpt"
    net = train_network(X, y, cfg, QuantileBinarizer(2), checkpoint_path=ckpt)
    round2, twin = CheckpointNetwork(ckpt, 2), CheckpointNetwork(ckpt, 1)
    np.testing.assert_array_equal(round2.predict(X), net.predict(X))  # round 2 is the BNN
    assert twin.predict(X).shape == (300,) and np.mean(twin.predict(X) == y) > 0.6  # chance 0.25


def test_the_model_file_keeps_keyword_settings_and_refuses_bad_ones(tmp_path):
    from bitnn import io
    from bitnn.errors import ModelFormatError

    net = load_model("models/digits-8k.bnn")
    assert keyword_settings(net.metadata)[1] == [str(d) for d in range(10)]  # not in a sidecar
    tensors, description = io.decode_container(io.model_to_bytes(net))
    for key, value in (("n_segments", 0), ("f_min", None), ("extra", 1)):
        bad = {**description, "metadata": {**description["metadata"]}}
        bad["metadata"]["keywords"] = {
            **description["metadata"]["keywords"],
            "features": {**description["metadata"]["keywords"]["features"], key: value},
        }
        with pytest.raises(ModelFormatError, match=r"metadata\.keywords"):
            io.model_from_bytes(io.encode_container(tensors, bad))
    bad = {**description, "metadata": {**description["metadata"]}}
    bad["metadata"]["keywords"] = {**description["metadata"]["keywords"], "classes": ["a", "b"]}
    with pytest.raises(ModelFormatError, match="each of the model's output classes"):
        io.model_from_bytes(io.encode_container(tensors, bad))


def test_deployment_commands_need_numpy_only(tmp_path):
    """info, eval and predict on features import neither scipy, soundfile, matplotlib nor torch,
    also for keyword models (whose feature code needs scipy only for recordings)."""
    import subprocess
    import sys

    np.savez(tmp_path / "x.npz", X=np.zeros((2, 784), np.float32))
    code = f"""
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("scipy", "soundfile", "matplotlib", "torch"):
            raise ImportError("blocked " + name)
sys.meta_path.insert(0, Block())
from bitnn.cli import main
assert main(["info", "models/digits-8k.bnn"]) == 0
assert main(["info", "models/denoise-8k.bnn"]) == 0
assert main(["predict", "models/mnist-small.bnn", {str(tmp_path / "x.npz")!r}]) == 0
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
