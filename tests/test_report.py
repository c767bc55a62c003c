"""`bitnn report`: the HTML listening report of a denoiser and the report of a classifier,
checked in a real browser (headless Chromium driven by Playwright) where one is installed."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from bitnn.cli import main
from bitnn.data.audio import write_wav
from bitnn.speech.mixtures import MixtureSpec, manifest_csv

ROOT = Path(__file__).resolve().parents[1]
DENOISER = ROOT / "models" / "denoise-8k.bnn"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_ARGS = [  # as root, offline: no sandbox, no background connections
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def manifest(fsdd, tmp_path_factory) -> Path:
    """Two FSDD utterances mixed at 0 dB with a recorded-like noise (filtered random noise)."""
    pytest.importorskip("soundfile")
    folder = tmp_path_factory.mktemp("mixtures")
    rng = np.random.default_rng(0)
    noise = np.convolve(rng.standard_normal(8000 * 4), np.ones(4) / 4, "same") * 0.1
    write_wav(folder / "hiss.wav", noise.astype(np.float32), 8000)
    specs = [
        MixtureSpec("fsdd-" + str(fsdd.speaker[i]), str(fsdd.files[i]), "hiss",
                    str(folder / "hiss.wav"), 1000 * k, 0.0, 8000, 800)
        for k, i in enumerate((0, 1500))
    ]  # fmt: skip
    path = folder / "mixtures.csv"
    path.write_text(manifest_csv({"test": specs}))
    return path


@pytest.fixture(scope="module")
def denoise_report(manifest, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("denoise")
    model = folder / "denoiser.bnn"  # a copy without its checkpoint: no twin
    shutil.copy(DENOISER, model)
    out = folder / "report"
    assert main(["report", str(model), "-o", str(out), "--mixtures", str(manifest)]) == 0
    return out


@pytest.fixture(scope="module")
def classifier_report(tmp_path_factory) -> Path:
    from bitnn.binarize import QuantileBinarizer
    from bitnn.io import save_model
    from bitnn.train.trainer import TrainConfig, train_network

    folder = tmp_path_factory.mktemp("classifier")
    rng = np.random.default_rng(0)
    X = rng.standard_normal((400, 8)).astype(np.float32)
    y = (X[:, 0] > 0).astype(int) + 2 * (X[:, 1] > 0)
    cfg = TrainConfig(hidden=(32,), epochs_round1=4, epochs_round2=4)
    save_model(train_network(X, y, cfg, QuantileBinarizer(2)), folder / "m.bnn")
    np.savez(folder / "data.npz", X=X, y=y)
    out = folder / "report"
    assert (
        main(["report", str(folder / "m.bnn"), "-o", str(out), "--data", str(folder / "data.npz")])
        == 0
    )
    return out


def test_denoising_report_has_every_player_figure_and_metric(denoise_report):
    page = (denoise_report / "index.html").read_text()
    audio = sorted(p.name for p in (denoise_report / "audio").iterdir())
    assert len(audio) == 8  # 2 examples x noisy, BNN, oracle IBM, clean (no checkpoint: no twin)
    for name in ("noisy", "bnn", "oracle-ibm", "clean"):
        assert f"example1-{name}.wav" in audio and f'src="audio/example1-{name}.wav"' in page
    assert sorted(p.name for p in (denoise_report / "figures").iterdir()) == [
        "example1-masks.png",
        "example1-spectrograms.jpg",
        "example2-masks.png",
        "example2-spectrograms.jpg",
    ]
    for word in ("SDR (dB)", "SIR (dB)", "SAR (dB)", "STOI", "faster than real time", "bytes"):
        assert word in page
    assert "http://" not in page and "https://" not in page  # nothing fetched to view it


def test_report_refuses_to_lose_files_or_mix_kinds(denoise_report, manifest, tmp_path, capsys):
    model = str(DENOISER)
    # an earlier report is replaced only with --force; other files are never touched
    assert main(["report", model, "-o", str(denoise_report), "--mixtures", str(manifest)]) == 2
    assert "--force" in capsys.readouterr().err
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    assert main(["report", model, "-o", str(busy), "--mixtures", str(manifest)]) == 2
    assert "holds other files" in capsys.readouterr().err
    assert sorted(p.name for p in busy.iterdir()) == ["notes.txt"]
    # a denoiser takes mixtures, a classifier labelled data
    out = str(tmp_path / "r")
    assert main(["report", model, "-o", out, "--data", "x.npz"]) == 2
    assert "is a denoiser" in capsys.readouterr().err
    assert main(["report", "models/mnist-small.bnn", "-o", out, "--mixtures", str(manifest)]) == 2
    assert "is a classifier" in capsys.readouterr().err
    assert main(["report", model, "-o", out, "--mixtures", str(tmp_path / "none.csv")]) == 2
    assert "cannot read the manifest" in capsys.readouterr().err
    assert main(["report", model, "-o", out, "--mixtures", str(manifest), "--snr", "5"]) == 2
    assert "no mixtures at 5 dB" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left


def test_classifier_report_has_confusion_matrix_per_class_accuracy_and_curves(
    classifier_report,
):
    page = (classifier_report / "index.html").read_text()
    assert sorted(p.name for p in (classifier_report / "figures").iterdir()) == [
        "confusion.png",
        "training.png",
    ]
    assert not (classifier_report / "audio").exists()
    assert "Per-class accuracy" in page and "<td>3</td>" in page  # a row for class 3


def _browser_check(index: Path) -> dict:
    """Open a report in headless Chromium: audio durations, figure sizes, console errors."""
    from playwright.sync_api import sync_playwright

    problems: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.on("requestfailed", lambda r: problems.append(f"failed: {r.url}"))
            page.goto(index.as_uri(), wait_until="load")
            page.wait_for_function(
                "[...document.querySelectorAll('audio')].every(a => a.readyState >= 1 || a.error)",
                timeout=30_000,
            )
            audio = page.evaluate(
                "[...document.querySelectorAll('audio')].map(a => ({src: a.getAttribute('src'), "
                "duration: a.duration, error: a.error ? a.error.code : 0, "
                "seconds: Number(a.dataset.seconds)}))"
            )
            images = page.evaluate(
                "[...document.images].map(i => ({src: i.getAttribute('src'), "
                "complete: i.complete, width: i.naturalWidth}))"
            )
        finally:
            browser.close()
    return {"audio": audio, "images": images, "problems": problems}


needs_browser = pytest.mark.skipif(
    CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium; .ci/run does)"
)


@needs_browser
def test_denoising_report_plays_and_shows_in_a_real_browser(denoise_report):
    import soundfile

    seen = _browser_check(denoise_report / "index.html")
    assert seen["problems"] == []
    assert len(seen["audio"]) == 8
    for a in seen["audio"]:
        assert a["error"] == 0, a
        on_disk = soundfile.info(str(denoise_report / a["src"])).duration
        assert abs(a["duration"] - on_disk) < 1e-3, a
        assert abs(a["seconds"] - on_disk) < 1e-3, a
    assert len(seen["images"]) == 4
    assert all(i["complete"] and i["width"] > 0 for i in seen["images"]), seen["images"]


@needs_browser
def test_classifier_report_shows_in_a_real_browser(classifier_report):
    seen = _browser_check(classifier_report / "index.html")
    assert seen["problems"] == [] and seen["audio"] == []
    assert len(seen["images"]) == 2
    assert all(i["complete"] and i["width"] > 0 for i in seen["images"]), seen["images"]
