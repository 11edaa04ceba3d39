"""The model bundle: ``manifest.json`` plus model files, verified before use.

A bundle is refused, with a :class:`~sdk.errors.BundleError` that names the file and
the reason, when the manifest is malformed or of another schema version, when a file
is missing or its SHA-256 differs from the manifest, or when a model's inputs and
outputs do not match the shapes the manifest declares.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import io
import json
import math
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from sdk.errors import BundleError, ConfigError
from sdk.modalities import MODALITIES, LorenzSpec, SpectrogramSpec
from sdk.preprocess import PreprocessSpec
from sdk.rr import RR_FEATURE_NAMES

SCHEMA_VERSION = 1
_SHA256 = re.compile(r"[0-9a-f]{64}")
ROLES = ("embedder", "fusion", "head", "denoiser", "inference_noise", "anchors")
PRECISIONS = ("fp32", "fp16", "int8")
#: The manifest threshold holding the R-peak detector's search-back threshold on the output of
#: the bundle's (most compact) denoiser file (:class:`sdk.denoiser.WindowDenoiser`)
DENOISED_SEARCH_BACK_KEY = "denoised_rpeak_search_back"
#: Largest model file read without a ``bytes`` entry in the manifest
MAX_FILE_BYTES = 1 << 30
#: Largest manifest read
MAX_MANIFEST_BYTES = 16 << 20


@dataclass(frozen=True)
class TensorSpec:
    """Name, element type and shape of a model input/output; ``None`` or a string is a free axis."""

    name: str
    dtype: str
    shape: tuple[int | str | None, ...]


@dataclass(frozen=True)
class ModelFile:
    path: str
    role: str
    precision: str
    sha256: str
    inputs: tuple[TensorSpec, ...] = ()
    outputs: tuple[TensorSpec, ...] = ()
    modality: str = "raw"  # for embedders and inference noise: which input they belong to
    size: int | None = None  # the manifest's ``bytes``: reads stop there


@dataclass(frozen=True)
class Manifest:
    """The parsed manifest. Geometry is read from here, never from constants in code."""

    name: str
    preprocess: PreprocessSpec
    window_samples: int
    hop_samples: int
    leads: tuple[str, ...]
    classes: tuple[str, ...]
    thresholds: dict[str, float]
    alphas_cumprod: np.ndarray
    default_t: dict[str, int]
    head_features: dict[str, Any]
    files: tuple[ModelFile, ...]
    provenance: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    modality_specs: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def fs(self) -> float:
        return self.preprocess.fs

    @property
    def t_max(self) -> int:
        return int(self.alphas_cumprod.shape[0] - 1)

    @property
    def modalities(self) -> tuple[str, ...]:
        """Modalities with an embedder, raw first."""
        have = {f.modality for f in self.files if f.role == "embedder"}
        return tuple(m for m in MODALITIES if m in have)

    def has(self, role: str) -> bool:
        return any(f.role == role for f in self.files)

    def file(self, role: str, precision: str | None = None, modality: str = "raw") -> ModelFile:
        """The file of ``role`` (and ``modality`` for embedders and noise); with
        ``precision=None`` the most compact one present."""
        per_modality = role in ("embedder", "inference_noise")
        candidates = [
            f for f in self.files if f.role == role and (not per_modality or f.modality == modality)
        ]
        if precision is not None:
            candidates = [f for f in candidates if f.precision == precision]
        if not candidates:
            have = sorted({(f.role, f.precision, f.modality) for f in self.files})
            raise BundleError(
                f"no {role} file of precision {precision} for {modality} in the bundle; "
                f"have {have}",
                path=self.name,
                reason="missing",
            )
        return min(candidates, key=lambda f: PRECISIONS[::-1].index(f.precision))


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


#: Largest magnitude of a manifest integer: exactly representable as a float64.
MAX_MANIFEST_INT = 2**53
#: Highest sampling rate a bundle may declare (Hz) and longest window (seconds); beyond them a
#: manifest is refused before any buffer is sized from it.
MAX_BUNDLE_FS_HZ = 20_000.0
MAX_WINDOW_S = 300.0


def _short_repr(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:20]}…({len(text)} characters)"


def manifest_int(value: Any, what: str) -> int:
    """A JSON integer (an integral float such as ``2.0`` too) of magnitude at most
    :data:`MAX_MANIFEST_INT`, never a bool or a string."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{what} must be an integer, got {_short_repr(value)}")
    if isinstance(value, float) and not (math.isfinite(value) and value.is_integer()):
        raise ValueError(f"{what} must be an integer, got {value!r}")
    if abs(value) > MAX_MANIFEST_INT:
        raise ValueError(f"{what} is out of range, got {_short_repr(value)}")
    return int(value)


def manifest_number(value: Any, what: str) -> float:
    """A finite JSON number, never a bool or a string (an integer too large for a float64 is
    refused, not an ``OverflowError``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{what} must be a number, got {_short_repr(value)}")
    try:
        number = float(value)
    except OverflowError:
        raise ValueError(f"{what} is out of range, got {_short_repr(value)}") from None
    if not math.isfinite(number):
        raise ValueError(f"{what} must be finite, got {value!r}")
    return number


def _names(value: Any, what: str) -> tuple[str, ...]:
    """A non-empty list of unique, non-empty strings."""
    if not isinstance(value, list) or not value:
        raise ValueError(f"{what} must be a non-empty list of names, got {value!r}")
    if not all(isinstance(v, str) and v for v in value) or len(set(value)) != len(value):
        raise ValueError(f"{what} must hold unique non-empty strings, got {value!r}")
    return tuple(value)


def _string(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{what} must be a string, got {value!r}")
    return value


def _tensor_specs(raw: Any, what: str) -> tuple[TensorSpec, ...]:
    if not isinstance(raw, list):
        raise ValueError(f"{what} must be a list, got {raw!r}")
    specs = []
    for r in raw:
        name, dtype, shape = r["name"], r["dtype"], r["shape"]
        if not (isinstance(name, str) and isinstance(dtype, str) and isinstance(shape, list)):
            raise ValueError(f"{what}: name and dtype must be strings, shape a list, got {r!r}")
        axes = tuple(
            a if a is None or isinstance(a, str) else manifest_int(a, f"{name} axis") for a in shape
        )
        specs.append(TensorSpec(name, dtype, axes))
    return tuple(specs)


def _path_problem(value: str) -> str | None:
    """Why ``value`` cannot name a file inside the bundle (None: it can)."""
    pure = PurePosixPath(value)
    if not value or "\x00" in value or "\\" in value:
        return "must be a non-empty POSIX path without NUL or backslash"
    if pure.is_absolute() or ".." in pure.parts:
        return "must be relative to the bundle, without '..'"
    return None


def _model_file(f: Any) -> ModelFile:
    size = f.get("bytes")
    return ModelFile(
        _string(f["path"], "file path"),
        _string(f["role"], f"{f['path']} role"),
        _string(f["precision"], f"{f['path']} precision"),
        f["sha256"],
        _tensor_specs(f.get("inputs", []), f"{f['path']} inputs"),
        _tensor_specs(f.get("outputs", []), f"{f['path']} outputs"),
        _string(f.get("modality", "raw"), f"{f['path']} modality"),
        None if size is None else manifest_int(size, f"{f['path']} bytes"),
    )


def _preprocess(raw: Any) -> PreprocessSpec:
    if not isinstance(raw, dict) or set(raw) != {"fs", "low_hz", "high_hz", "order"}:
        raise ValueError(f"preprocess must give fs, low_hz, high_hz and order, got {raw!r}")
    return PreprocessSpec(
        fs=manifest_number(raw["fs"], "preprocess.fs"),
        low_hz=manifest_number(raw["low_hz"], "preprocess.low_hz"),
        high_hz=manifest_number(raw["high_hz"], "preprocess.high_hz"),
        order=manifest_int(raw["order"], "preprocess.order"),
    )


def unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object whose keys are all different (``json.loads`` keeps the last of a repeated
    key silently: two readers of the file could disagree on its value); else ValueError."""
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen:
            raise ValueError(f"key {key!r} appears twice in one object")
        seen.add(key)
    return dict(pairs)


def parse_manifest(data: dict[str, Any], path: str = "manifest.json") -> Manifest:
    """Validate and parse a manifest dict; raise :class:`BundleError` on any defect.

    Types are checked, not coerced: integers are JSON integers, numbers finite, names lists of
    unique strings, file paths relative to the bundle without ``..``.
    """
    if not isinstance(data, dict):
        raise BundleError("manifest must be a JSON object", path=path, reason="malformed")
    version = data.get("schema_version")
    if version != SCHEMA_VERSION or isinstance(version, bool):  # true == 1 in Python
        raise BundleError(
            f"schema_version {version!r} is not supported (expected {SCHEMA_VERSION})",
            path=path,
            reason="schema_version",
        )
    try:
        if not isinstance(data["files"], list):
            raise ValueError("files must be a list")
        files = tuple(_model_file(f) for f in data["files"])
        diffusion = data["diffusion"]
        manifest = Manifest(
            name=_string(data["name"], "name"),
            preprocess=_preprocess(data["preprocess"]),
            window_samples=manifest_int(data["window_samples"], "window_samples"),
            hop_samples=manifest_int(data["hop_samples"], "hop_samples"),
            leads=_names(data["leads"], "leads"),
            classes=_names(data["classes"], "classes"),
            thresholds={str(k): manifest_number(v, k) for k, v in data["thresholds"].items()},
            alphas_cumprod=np.asarray(
                [manifest_number(v, "alphas_cumprod") for v in diffusion["alphas_cumprod"]],
                dtype=np.float64,
            ),
            default_t={
                str(k): manifest_int(v, f"default_t {k}") for k, v in diffusion["default_t"].items()
            },
            head_features=dict(data["head_features"]),
            files=files,
            provenance=dict(data.get("provenance", {})),
            metrics=dict(data.get("metrics", {})),
            modality_specs={k: dict(v) for k, v in data.get("modalities", {}).items()},
        )
    except (KeyError, TypeError, ValueError, AttributeError, ConfigError) as exc:
        raise BundleError(f"malformed manifest: {exc!r}", path=path, reason="malformed") from exc
    for f in files:
        problem = _path_problem(f.path)
        if problem is not None:
            raise BundleError(f"file path {f.path!r} {problem}", path=path, reason="path")
        if not isinstance(f.sha256, str) or not _SHA256.fullmatch(f.sha256):
            raise BundleError(
                f"file entry {f.path!r}: sha256 must be 64 lowercase hex digits",
                path=path,
                reason="malformed",
            )
    _check_consistency(manifest, path)
    return manifest


def _tensor(specs: tuple[TensorSpec, ...], name: str) -> TensorSpec | None:
    return next((t for t in specs if t.name == name), None)


def _check_consistency(m: Manifest, path: str) -> None:
    problems = []
    if m.preprocess.fs > MAX_BUNDLE_FS_HZ:
        problems.append(f"preprocess.fs ({m.preprocess.fs:g} Hz) above {MAX_BUNDLE_FS_HZ:g} Hz")
    elif m.window_samples > MAX_WINDOW_S * m.preprocess.fs:
        problems.append(f"window ({m.window_samples} samples) longer than {MAX_WINDOW_S:g} s")
    if not 0 < m.hop_samples <= m.window_samples:
        problems.append(f"0 < hop ({m.hop_samples}) <= window ({m.window_samples}) must hold")
    for f in m.files:
        if f.role not in ROLES or f.precision not in PRECISIONS or f.modality not in MODALITIES:
            problems.append(
                f"{f.path}: role {f.role!r} / precision {f.precision!r} / "
                f"modality {f.modality!r} unknown"
            )
    for role in ("embedder", "head", "inference_noise"):
        if not any(f.role == role for f in m.files):
            problems.append(f"no file with role {role!r}")
    for modality in m.modalities:
        if not any(f.role == "inference_noise" and f.modality == modality for f in m.files):
            problems.append(f"no inference noise for the {modality} embedder")
    for f in m.files:
        if f.role == "embedder" and f.modality != "raw" and _tensor(f.inputs, "x") is None:
            problems.append(f"{f.path}: a {f.modality} embedder must declare its input 'x'")
        if f.role == "head":
            proba = _tensor(f.outputs, "probabilities")
            if _tensor(f.inputs, "features") is None or proba is None:
                problems.append(f"{f.path}: a head must declare 'features' and 'probabilities'")
            elif not proba.shape or proba.shape[-1] != len(m.classes):
                problems.append(
                    f"{f.path}: probabilities {list(proba.shape)} do not give one per class "
                    f"({len(m.classes)}: {list(m.classes)})"
                )
    if not all(np.isfinite(v) for v in m.thresholds.values()):
        problems.append("thresholds must be finite")
    search_back = m.thresholds.get(DENOISED_SEARCH_BACK_KEY)
    if search_back is not None and not 0.0 <= search_back <= 1.0:
        problems.append(f"{DENOISED_SEARCH_BACK_KEY} ({search_back}) must lie in [0, 1]")
    if search_back is not None and not m.has("denoiser"):
        problems.append(f"{DENOISED_SEARCH_BACK_KEY} is set but the bundle has no denoiser")
    abar = m.alphas_cumprod
    if (
        abar.ndim != 1
        or not np.all(np.isfinite(abar))
        or abar.size < 2
        or np.any(np.diff(abar) >= 0)
        or abar[0] > 1
        or abar[-1] <= 0
    ):
        problems.append("alphas_cumprod must be a decreasing table in (0, 1]")
    implemented = {
        "spectrogram": dataclasses.asdict(SpectrogramSpec()),
        "lorenz": dataclasses.asdict(LorenzSpec()),
    }
    for modality in m.modalities:
        if modality not in m.default_t:
            problems.append(f"no default t for the {modality} embedder")
        if modality != "raw" and m.modality_specs.get(modality) != implemented[modality]:
            problems.append(
                f"{modality} geometry {m.modality_specs.get(modality)} is not the one this SDK "
                f"computes ({implemented[modality]})"
            )
    for modality, t in m.default_t.items():
        if not 0 <= t <= m.t_max:
            problems.append(f"default t of {modality} ({t}) outside 0..{m.t_max}")
    problems += _head_feature_problems(m)
    if problems:
        raise BundleError("; ".join(problems), path=path, reason="inconsistent")


def _head_feature_problems(m: Manifest) -> list[str]:
    """The head's input must be what the SDK builds: the embeddings (and the fusion's output)
    followed by the RR features :func:`sdk.rr.rr_features` computes, in its order."""
    rr = m.head_features.get("rr_features")
    if rr != list(RR_FEATURE_NAMES):
        return [
            f"head_features.rr_features {rr!r} are not the ones this SDK computes "
            f"({list(RR_FEATURE_NAMES)})"
        ]
    dims = m.head_features.get("embedding_dims", {"raw": m.head_features.get("embedding_dim")})
    fused = m.head_features.get("fused_dim", 0)
    given = [*dims.values(), fused] if isinstance(dims, dict) else [None]
    widths = [w for w in given if isinstance(w, int) and not isinstance(w, bool) and w >= 0]
    if len(widths) != len(given):
        return [f"head_features must give each embedding's width as an integer, got {dims!r}"]
    expected = sum(widths) + len(RR_FEATURE_NAMES)
    problems = []
    for f in m.files:  # what each embedder and the fusion give is what the head takes
        out, want = None, None
        if f.role == "embedder" and isinstance(dims, dict):
            out, want = _tensor(f.outputs, "embedding"), dims.get(f.modality)
        elif f.role == "fusion":
            out, want = _tensor(f.outputs, "fused"), fused
        given_width = out.shape[-1] if out is not None and out.shape else None
        if isinstance(given_width, int) and given_width != want:
            problems.append(
                f"{f.path}: gives {given_width} features ({out.name if out else ''}), but "
                f"head_features say {want}"
            )
    for f in m.files:
        features = _tensor(f.inputs, "features") if f.role == "head" else None
        width = features.shape[-1] if features is not None and features.shape else None
        if isinstance(width, int) and width != expected:
            problems.append(
                f"{f.path}: takes {width} features, but head_features give {expected} "
                f"(embeddings {dims}, fused {fused}, {len(RR_FEATURE_NAMES)} RR features)"
            )
    return problems


@dataclass(frozen=True)
class Bundle:
    """A verified bundle on disk."""

    root: Path
    manifest: Manifest
    manifest_sha256: str
    #: the manifest's ``streaming`` entry as verified (a stateful step model; LRU bundles)
    streaming: dict[str, Any] | None = None

    def path_of(self, f: ModelFile) -> Path:
        return self.root / f.path

    def verified_bytes(self, f: ModelFile) -> bytes:
        """The file's bytes, checked against the manifest's SHA-256 as they are read, so what
        is used is exactly what was verified (a file replaced after :func:`load_bundle` is
        refused with reason ``"checksum"``). Only a regular file is read, and no more than
        the manifest's ``bytes`` (else :data:`MAX_FILE_BYTES`)."""
        path = self.path_of(f)
        limit = f.size if f.size is not None else MAX_FILE_BYTES
        data = _read_regular(path, limit)
        if data is None or hashlib.sha256(data).hexdigest() != f.sha256:
            raise BundleError(
                "changed since the bundle was verified (not the regular file of the manifest's "
                "size and SHA-256)",
                path=str(path),
                reason="checksum",
            )
        return data

    def inference_noise(self, modality: str = "raw") -> np.ndarray:
        """The fixed inference noise of ``modality`` float32: (1, leads, window) for raw,
        shaped like the embedder's input ``x`` otherwise."""
        f = self.manifest.file("inference_noise", modality=modality)
        try:
            noise = np.asarray(read_npy(self.verified_bytes(f)), dtype=np.float32)
        except (ValueError, TypeError, OSError, EOFError) as exc:
            raise BundleError(
                f"not a numeric .npy array: {exc}", path=str(self.path_of(f)), reason="malformed"
            ) from exc
        if not np.all(np.isfinite(noise)):
            raise BundleError(
                "inference noise holds NaN or inf", path=str(self.path_of(f)), reason="malformed"
            )
        expected: tuple[object, ...] = (1, len(self.manifest.leads), self.manifest.window_samples)
        if modality != "raw":
            x = _tensor(self.manifest.file("embedder", modality=modality).inputs, "x")
            assert x is not None  # parse_manifest requires it
            expected = (1, *x.shape[1:])
        if noise.shape != expected:
            raise BundleError(
                f"noise shape {noise.shape} != {expected}",
                path=str(self.path_of(f)),
                reason="shape",
            )
        return noise


def _read_regular(path: Path, limit: int) -> bytes | None:
    """The bytes of the regular file ``path``, or ``None`` when it is something else (a FIFO,
    a device, a folder) or holds more than ``limit`` bytes; read at most once, never blocking.
    An unreadable file raises :class:`BundleError` (reason ``"missing"``)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))  # a FIFO never blocks
        with os.fdopen(fd, "rb") as fh:
            st = os.fstat(fh.fileno())
            if not stat.S_ISREG(st.st_mode) or st.st_size > limit:
                return None
            data = fh.read(limit + 1)
    except (OSError, ValueError) as exc:
        raise BundleError(f"cannot read: {exc}", path=str(path), reason="missing") from exc
    return data if len(data) <= limit else None


def read_npy(data: bytes) -> np.ndarray:
    """The numeric array of the ``.npy`` bytes ``data``; its header is checked against the
    data's size before anything is allocated, and object arrays are refused (nothing is
    unpickled). Raises ValueError."""
    raw = io.BytesIO(data)
    version = np.lib.format.read_magic(raw)
    if version not in ((1, 0), (2, 0)):
        raise ValueError(f".npy format {version} (numpy writes 1.0 or 2.0)")
    header = (
        np.lib.format.read_array_header_1_0
        if version == (1, 0)
        else np.lib.format.read_array_header_2_0
    )
    shape, _, dtype = header(raw)
    if dtype.hasobject:
        raise ValueError("object dtype (never unpickled)")
    if dtype.kind not in "fiu":
        raise ValueError(f"dtype {dtype} is not numeric")
    if math.prod(shape) * dtype.itemsize != len(data) - raw.tell():
        raise ValueError(f"header shape {shape} does not match its data ({len(data)} bytes)")
    raw.seek(0)
    return np.load(raw, allow_pickle=False)


def load_bundle(root: Path | str, *, manifest_sha256: str | None = None) -> Bundle:
    """Open and verify a bundle directory: schema, consistency and every file's SHA-256.

    The manifest is the root of trust: every file is checked against it, but nothing inside
    the bundle can check the manifest itself (an edited class order or noise file with its
    checksum updated would verify). An app that ships a bundle should pin it: pass the SHA-256
    of the manifest it shipped (``sha256sum manifest.json``, or :attr:`Bundle.manifest_sha256`)
    as ``manifest_sha256`` and any other manifest is refused (``reason="checksum"``) before
    anything is read from it."""
    root = Path(root)
    manifest_path = root / "manifest.json"
    if not manifest_path.is_file():
        raise BundleError("manifest.json not found", path=str(manifest_path), reason="missing")
    _check_inside(root, "manifest.json")
    raw = _read_regular(manifest_path, MAX_MANIFEST_BYTES)
    if raw is None:
        raise BundleError(
            f"manifest is not a regular file of at most {MAX_MANIFEST_BYTES} bytes",
            path=str(manifest_path),
            reason="malformed",
        )
    if manifest_sha256 is not None:
        if not isinstance(manifest_sha256, str) or not _SHA256.fullmatch(manifest_sha256.lower()):
            raise ConfigError(
                f"manifest_sha256 must be 64 hex digits, got {manifest_sha256!r}",
                field="manifest_sha256",
            )
        digest = hashlib.sha256(raw).hexdigest()
        if not hmac.compare_digest(digest, manifest_sha256.lower()):
            raise BundleError(
                f"manifest SHA-256 {digest[:12]}… is not the pinned {manifest_sha256[:12]}…",
                path=str(manifest_path),
                reason="checksum",
            )
    try:
        data = json.loads(raw, object_pairs_hook=unique_keys)
    except (ValueError, RecursionError) as exc:  # also an integer of too many digits
        raise BundleError(
            f"manifest is not valid JSON: {exc}", path=str(manifest_path), reason="malformed"
        ) from exc
    manifest = parse_manifest(data, str(manifest_path))
    _check_front_end(data.get("front_end"), manifest, str(manifest_path))
    extra = data.get("streaming")  # a stateful step model beside the files (LRU bundles)
    checked = list(manifest.files)
    if isinstance(extra, dict):
        try:
            checked.append(ModelFile(str(extra["path"]), "embedder", "fp32", str(extra["sha256"])))
        except KeyError as exc:
            raise BundleError(
                f"streaming entry lacks {exc}", path=str(manifest_path), reason="malformed"
            ) from exc
    for f in checked:
        file_path = _check_inside(root, f.path)
        try:
            is_file = file_path.is_file()
            size = file_path.stat().st_size if is_file else 0
            digest = sha256_file(file_path) if is_file else ""
        except OSError as exc:  # unreadable, or gone between the calls
            raise BundleError(f"cannot read: {exc}", path=str(file_path), reason="missing") from exc
        if not is_file:
            raise BundleError(
                "listed in the manifest but missing", path=str(file_path), reason="missing"
            )
        if f.size is not None and f.size != size:
            raise BundleError(
                f"{size} bytes, the manifest says {f.size}", path=str(file_path), reason="checksum"
            )
        if digest != f.sha256:
            raise BundleError(
                f"SHA-256 {digest[:12]}… does not match the manifest's {f.sha256[:12]}…",
                path=str(file_path),
                reason="checksum",
            )
    return Bundle(
        root,
        manifest,
        hashlib.sha256(raw).hexdigest(),
        dict(extra) if isinstance(extra, dict) else None,
    )


def _check_front_end(front_end: Any, m: Manifest, path: str) -> None:
    """An embedder fed features (DACL's) needs the wavelet-scattering front end the SDK
    computes (:mod:`sdk.scattering`): the manifest must give its J, Q and feature count."""
    from sdk import scattering

    fed = [
        t
        for f in m.files
        if f.role == "embedder" and (t := _tensor(f.inputs, "features")) is not None
    ]
    if not fed and front_end is None:
        return
    width = fed[0].shape[-1] if fed and fed[0].shape else None
    given = (
        {k: front_end.get(k) for k in ("J", "Q", "features")}
        if isinstance(front_end, dict)
        else front_end
    )
    computed = {"J": scattering.J, "Q": scattering.Q, "features": width}
    if given != computed:
        raise BundleError(
            f"front_end {given!r} is not the scattering this SDK computes ({computed}: "
            "sdk.scattering)",
            path=path,
            reason="inconsistent",
        )


def _check_inside(root: Path, relative: str) -> Path:
    """``root / relative`` resolved (links followed), refused unless it lies inside ``root``."""
    try:
        path = (root / relative).resolve()
        inside = root.resolve() in path.parents
    except (OSError, ValueError, RuntimeError) as exc:  # too long, NUL, a loop of links
        raise BundleError(f"unusable file path: {exc}", path=relative, reason="path") from exc
    if not inside:
        raise BundleError("file path escapes the bundle", path=relative, reason="path")
    return path


def default_bundle_path() -> Path:
    """The default bundle shipped inside the package (DiffECG multimodal + denoiser)."""
    return Path(__file__).resolve().parent / "default_bundle"


def shipped_bundles() -> dict[str, Path]:
    """Every bundle shipped inside the package by name: ``"default"`` and the other
    embedders' bundles under ``sdk/bundles/`` (``"diffae-lru-cpu"``, ``"dacl-cpu"``)."""
    found = {"default": default_bundle_path()}
    extra = Path(__file__).resolve().parent / "bundles"
    if extra.is_dir():
        found.update(
            (d.name, d) for d in sorted(extra.iterdir()) if (d / "manifest.json").is_file()
        )
    return found


def bundle_path(name_or_path: str | os.PathLike[str] | None = None) -> Path:
    """A bundle folder from a path or the name of a shipped bundle (:func:`shipped_bundles`);
    ``None`` is the default bundle. An existing path wins over a name.

    Raises
    ------
    BundleError
        reason ``"missing"``: neither an existing path nor a shipped bundle's name.
    """
    if name_or_path is None:
        return default_bundle_path()
    path = Path(name_or_path)
    if path.exists():
        return path
    shipped = shipped_bundles()
    if str(name_or_path) in shipped:
        return shipped[str(name_or_path)]
    raise BundleError(
        f"no bundle at {str(name_or_path)!r} and no shipped bundle of that name "
        f"(shipped: {', '.join(shipped)})",
        path=str(path),
        reason="missing",
    )
