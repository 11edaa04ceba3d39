"""Inference sessions: ONNX Runtime (CPU, CUDA, TensorRT providers) and native TensorRT.

Backends (:func:`open_model`):

``"cpu"``         ONNX Runtime, CPU provider (the default; what phones and SBCs run)
``"cuda"``        ONNX Runtime, CUDA provider (onnxruntime-gpu)
``"tensorrt"``    ONNX Runtime's TensorRT execution provider (the middle path: TensorRT
                  kernels, engines built and cached by ONNX Runtime, CUDA/CPU fallback)
``"trt-engine"``  native TensorRT engines built on the device (:mod:`sdk.trt_runtime`)
``"auto"``        ``"trt-engine"`` for a bundle exported with ``--target jetson`` when
                  tensorrt, cuda-python and a GPU are present, else ``"cpu"``

onnxruntime and tensorrt are imported lazily so that importing :mod:`sdk` stays cheap.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from sdk.bundle import BundleError, Manifest, ModelFile
from sdk.errors import AcceleratorError, ConfigError, MissingDependencyError
from sdk.onnx_external import WireFormatError, external_tensors
from sdk.ort_trt_cache import (
    CACHE_PREFIX,
    cache_signature,
    check_engine_cache,
    record_engine_cache,
)
from sdk.trt_runtime import DEFAULT_MAX_BATCH

_log = logging.getLogger(__name__)

PROVIDERS = {
    "cpu": ["CPUExecutionProvider"],
    "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
}


BACKENDS = (*PROVIDERS, "trt-engine")


def select_backend(backend: str, manifest: Manifest | None = None) -> str:
    """Resolve ``"auto"`` (see the module docstring); any other name is returned as is."""
    if backend != "auto":
        return backend
    if manifest is not None and manifest.provenance.get("target") == "jetson":
        from sdk.trt_runtime import compute_capability, cuda_runtime, tensorrt_module

        try:
            tensorrt_module()
            compute_capability(0, cuda_runtime())
        except (MissingDependencyError, AcceleratorError):
            return "cpu"
        return "trt-engine"
    return "cpu"


class Model(Protocol):
    """What every backend offers: tensor names and a run on host arrays."""

    input_names: list[str]
    output_names: list[str]

    def run(
        self, feeds: dict[str, np.ndarray], outputs: Sequence[str] | None = None
    ) -> list[np.ndarray]: ...


def _tensorrt_ep_options(
    spec: ModelFile | None, cache_dir: Path, ort_version: str
) -> dict[str, Any]:
    """TensorRT EP options: engine cache, INT8 for Q/DQ graphs, the window's shape profile.

    The provider names its cached engines after the graph's structure, not its weights, so a
    retrained model of the same architecture would load the old engine: with ``spec`` the
    cache prefix carries the model's SHA-256 and the ONNX Runtime version (whose engines do
    not load in another one), and keeps :data:`CACHE_PREFIX`, whose files
    :mod:`sdk.ort_trt_cache` checks."""
    from sdk.trt_runtime import profile_shapes

    opts: dict[str, Any] = {
        "trt_engine_cache_enable": True,
        "trt_engine_cache_path": str(cache_dir),
    }
    if spec is None:
        return opts
    stem = re.sub(r"[^A-Za-z0-9]", "_", Path(spec.path).stem)
    version = re.sub(r"[^A-Za-z0-9]", "_", ort_version)
    opts["trt_engine_cache_prefix"] = f"{CACHE_PREFIX}{stem}_{spec.sha256[:16]}_ort{version}"
    # Q/DQ graphs: INT8 with the graph's scales (no calibration table). With no precision flag
    # ONNX Runtime builds a strongly typed network, so an FP16 graph runs as typed.
    opts["trt_int8_enable"] = spec.precision == "int8"
    profile = profile_shapes(spec.inputs)
    for k, key in enumerate(
        ("trt_profile_min_shapes", "trt_profile_opt_shapes", "trt_profile_max_shapes")
    ):
        opts[key] = ",".join(
            f"{name}:{'x'.join(str(d) for d in shapes[k])}" for name, shapes in profile.items()
        )
    return opts


def _batch_first(shape: Sequence[Any]) -> bool:
    """A tensor whose first axis is symbolic (the batch), as ONNX Runtime reports shapes."""
    return len(shape) > 0 and not isinstance(shape[0], int)


def _refuses_profiles(exc: Exception) -> bool:
    """Whether a session error is the TensorRT provider refusing the shape profiles."""
    text = str(exc).lower()
    return "profile" in text or "shape" in text


#: tensors whose last axis is a feature width the manifest chains (embedders → fusion → head)
CHAINED_WIDTHS = ("embedding", "fused", "features")


def _read_model(path: Path) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise BundleError(f"cannot read the model: {exc}", path=str(path), reason="read") from exc


def _refuse_external_data(model: bytes, path: Path) -> None:
    """A model whose tensors keep their data in other files is refused: ONNX Runtime would read
    those files (from the working directory for a model given as bytes), and no bundle checksum
    covers them."""
    try:
        names = external_tensors(model)
    except WireFormatError as exc:
        raise BundleError(
            f"not an ONNX model (malformed protobuf: {exc})", path=str(path), reason="load"
        ) from exc
    if names:
        shown = ", ".join(repr(n) for n in names[:3]) + (" …" if len(names) > 3 else "")
        raise BundleError(
            f"{len(names)} tensor(s) keep their data outside the model file ({shown}): a "
            "bundle's models must be self-contained, so that its checksums cover every byte "
            "(re-export without external data)",
            path=str(path),
            reason="external_data",
        )


def _has_profiles(providers: list[Any]) -> bool:
    """Whether the first provider is configured with explicit TensorRT shape profiles."""
    first = providers[0] if providers else None
    return isinstance(first, tuple) and any(k.startswith("trt_profile_") for k in first[1])


def open_model(
    path: Path,
    *,
    backend: str = "cpu",
    threads: int = 1,
    spec: ModelFile | None = None,
    engine_dir: Path | None = None,
    data: bytes | None = None,
) -> Model:
    """Open ``path`` (a bundle's ONNX file) on ``backend`` (one of :data:`BACKENDS`).

    ``data``: the file's bytes as verified (:meth:`sdk.bundle.Bundle.verified_bytes`); ONNX
    Runtime then builds the session from them rather than re-reading ``path``.

    ``"trt-engine"`` looks the engine built for ``path`` (and ``spec.precision``) up in
    ``engine_dir`` (default :func:`sdk.trt_runtime.default_engine_dir`); ``"tensorrt"`` caches
    ONNX Runtime's engines there. Missing packages raise
    :class:`sdk.errors.MissingDependencyError`, a missing GPU :class:`sdk.errors.AcceleratorError`.
    """
    backend = select_backend(backend)
    if backend not in BACKENDS:
        raise ConfigError(
            f"backend {backend!r} unknown; expected one of {[*BACKENDS, 'auto']}", field="backend"
        )
    if backend == "trt-engine":
        from sdk.trt_runtime import open_engine

        precision = spec.precision if spec is not None else "fp32"
        return open_engine(Path(path), precision=precision, spec=spec, engine_dir=engine_dir)
    return OnnxModel(
        Path(path), threads=threads, backend=backend, spec=spec, cache_dir=engine_dir, data=data
    )


def _ort() -> Any:
    try:
        import onnxruntime
    except ImportError as exc:
        raise MissingDependencyError("onnxruntime", "core") from exc
    return onnxruntime


#: Most intra-op threads a session may ask for (a typo of 10**6 threads took 19 GB).
MAX_THREADS = 256


def check_threads(threads: object) -> int:
    """``threads`` as ONNX Runtime's intra-op thread count: an integer from 0 (its default,
    one per core) to :data:`MAX_THREADS`; else :class:`ConfigError`."""
    if not (
        isinstance(threads, (int, np.integer))
        and not isinstance(threads, (bool, np.bool_))
        and 0 <= threads <= MAX_THREADS
    ):
        raise ConfigError(
            f"threads must be an integer from 0 (one per core) to {MAX_THREADS}, got {threads!r}",
            field="threads",
        )
    return int(threads)


class OnnxModel:
    """One ONNX model with its input/output names and shapes read from the session.

    Parameters
    ----------
    path : model file.
    threads : intra-op threads (1 = one core, the device benchmark's setting).
    backend : ``"cpu"``, ``"cuda"`` or ``"tensorrt"``; unavailable providers raise.
    spec : the manifest entry; its declared inputs/outputs are checked against the model.
    cache_dir : where the TensorRT provider caches its engines (default
        ``<default engine dir>/ort``; the engines' names carry the ONNX Runtime version);
        checked and indexed by :mod:`sdk.ort_trt_cache`. Batches beyond the engines'
        profile (8) run in pieces, so the provider never rebuilds an engine mid-stream.
    data : the model's verified bytes; the session is built from them (``path`` then only
        names the model in errors; on ``"tensorrt"`` the engine cache is keyed by the
        manifest's SHA-256 of them, :func:`_tensorrt_ep_options`).

    Not thread-safe for concurrent :meth:`run` calls on one instance.
    """

    def __init__(
        self,
        path: Path,
        *,
        threads: int = 1,
        backend: str = "cpu",
        spec: ModelFile | None = None,
        cache_dir: Path | None = None,
        data: bytes | None = None,
    ) -> None:
        check_threads(threads)
        ort = _ort()
        if backend not in PROVIDERS:
            raise ValueError(f"backend {backend!r} unknown; expected one of {sorted(PROVIDERS)}")
        available = set(ort.get_available_providers())
        providers: list[Any] = [p for p in PROVIDERS[backend] if p in available]
        if PROVIDERS[backend][0] not in available:
            raise AcceleratorError(
                f"this onnxruntime has no {PROVIDERS[backend][0]} (it has "
                f"{sorted(available)}): on a GPU host install onnxruntime-gpu, on a Jetson "
                "JetPack's onnxruntime build; or use backend='cpu'",
                backend=backend,
                reason="provider",
            )
        #: ONNX Runtime's TensorRT engine cache, checked before use (:mod:`sdk.ort_trt_cache`)
        self.trt_cache_dir: Path | None = None
        if backend == "tensorrt":
            from sdk.trt_runtime import default_engine_dir

            self.trt_cache_dir = Path(cache_dir or default_engine_dir() / "ort")
            try:
                check_engine_cache(self.trt_cache_dir)
            except OSError as exc:
                raise BundleError(
                    f"TensorRT engine cache cannot be checked: {exc}",
                    path=str(self.trt_cache_dir),
                    reason="engine_cache",
                ) from exc
            options = _tensorrt_ep_options(spec, self.trt_cache_dir, ort.__version__)
            providers[0] = (providers[0], options)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        source = data if data is not None else str(path)
        _refuse_external_data(data if data is not None else _read_model(path), path)
        try:
            self.session = ort.InferenceSession(source, sess_options=opts, providers=providers)
        except Exception as exc:  # onnxruntime raises its own exception types
            if not (_has_profiles(providers) and _refuses_profiles(exc)):
                raise BundleError(
                    f"onnxruntime cannot load the model: {exc}", path=str(path), reason="load"
                ) from exc
            # explicit shape profiles must cover every TensorRT subgraph's inputs; a graph
            # TensorRT takes only in part can fail on them: retry with profiles from the shapes
            # of the runs (CUDA/CPU take the rest of the graph; engines are built at a run)
            _log.warning(
                "%s: the TensorRT provider refused the window's shape profiles; retrying "
                "without them (engines are then built at the first run, and again for a "
                "larger batch)",
                Path(path).name,
            )
            name, options = providers[0]
            keep = {k: v for k, v in options.items() if not k.startswith("trt_profile_")}
            providers[0] = (name, keep)
            try:
                self.session = ort.InferenceSession(source, sess_options=opts, providers=providers)
            except Exception as exc2:
                raise BundleError(
                    f"onnxruntime cannot load the model: {exc2} (with the shape profiles: {exc})",
                    path=str(path),
                    reason="load",
                ) from exc2
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]
        #: tensors whose first axis is symbolic: the batch the TensorRT profile bounds
        self._batch_inputs = {i.name for i in self.session.get_inputs() if _batch_first(i.shape)}
        self._batch_outputs = {o.name for o in self.session.get_outputs() if _batch_first(o.shape)}
        #: the TensorRT provider with the window's explicit profiles (batch 1 … 8)
        self._profiled = _has_profiles(providers)
        self._cache_seen: tuple[tuple[str, int, int, int], ...] | None = None
        self._index_cache()  # engines built at session creation
        if spec is not None:
            self._check(spec, path)

    def _check(self, spec: ModelFile, path: Path) -> None:
        actual = {i.name: i.shape for i in self.session.get_inputs()}
        actual.update({o.name: o.shape for o in self.session.get_outputs()})
        for t in (*spec.inputs, *spec.outputs):
            if t.name not in actual:
                raise BundleError(
                    f"model has no tensor {t.name!r} (has {sorted(actual)})",
                    path=str(path),
                    reason="shape",
                )
            got = actual[t.name]
            fixed_mismatch = len(got) != len(t.shape) or any(
                isinstance(e, int) and isinstance(g, int) and e != g for e, g in zip(t.shape, got)
            )
            # the widths chained from embedders to the head must be fixed in the graph too: a
            # symbolic one loads, then every window fails inside ONNX Runtime
            if t.name in CHAINED_WIDTHS and got and not isinstance(got[-1], int):
                fixed_mismatch = True
            if fixed_mismatch:
                raise BundleError(
                    f"tensor {t.name!r} has shape {got}, manifest says {list(t.shape)}",
                    path=str(path),
                    reason="shape",
                )

    def run(
        self, feeds: dict[str, np.ndarray], outputs: Sequence[str] | None = None
    ) -> list[np.ndarray]:
        batched = [k for k in feeds if k in self._batch_inputs]
        n = max((len(feeds[k]) for k in batched), default=0)
        if self._profiled and n > DEFAULT_MAX_BATCH:
            # beyond the engine's profile the provider would rebuild it: run the batch-first
            # inputs in pieces; join the batch-first outputs, take the others from one piece
            names = list(outputs) if outputs else list(self.output_names)
            parts = [
                self.run(
                    {
                        k: v[i : i + DEFAULT_MAX_BATCH] if k in batched else v
                        for k, v in feeds.items()
                    },
                    names,
                )
                for i in range(0, n, DEFAULT_MAX_BATCH)
            ]
            return [
                np.concatenate(p) if name in self._batch_outputs else p[0]
                for name, p in zip(names, zip(*parts))
            ]
        out = self.session.run(list(outputs) if outputs else None, feeds)
        self._index_cache()  # engines built at a run (first run, new input shapes)
        return out

    def _index_cache(self) -> None:
        """Re-index the TensorRT engine cache when its files changed; an index that cannot
        be written is logged, never fails inference (the next session then rebuilds)."""
        if self.trt_cache_dir is None:
            return
        try:
            seen = cache_signature(self.trt_cache_dir)
            if seen == self._cache_seen:
                return
            self._cache_seen = seen  # one try (and one warning) per change
            record_engine_cache(self.trt_cache_dir)
        except OSError as exc:
            _log.warning("TensorRT engine cache not indexed: %s", exc)
