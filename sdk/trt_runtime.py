"""Native TensorRT backend: serialized engines run through the TensorRT Python runtime.

Same interface as :class:`sdk.runtime.OnnxModel` (``input_names``, ``output_names``,
``run(feeds, outputs) -> list[np.ndarray]``). Engines are built on the device itself
(``ecgedge engines`` or ``trtexec``, see the bundle's MODEL_CARD.md), because an engine only
runs on the TensorRT version and GPU (compute capability) that built it. They are cached as
``<model>.<precision>.trt<version>.sm<major><minor>.b<max batch>.<onnx sha256[:16]>.engine``.

Dependencies, imported lazily: ``tensorrt`` (JetPack's python3-libnvinfer, or the pip wheel
on x86/SBSA) and NVIDIA's ``cuda-python`` for device memory, streams and copies (module
``cuda.bindings.runtime``; older releases: ``cuda.cudart``). No torch, no pycuda.
Works with TensorRT 10 and 11 (the name-based I/O tensor API, ``execute_async_v3``).
"""

from __future__ import annotations

import hashlib
import os
import platform
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sdk.bundle import BundleError, ModelFile, TensorSpec, sha256_file
from sdk.errors import AcceleratorError, ConfigError, MissingDependencyError

BACKEND = "trt-engine"
ENGINE_DIR_ENV = "ECGEDGE_ENGINES"
DEFAULT_MAX_BATCH = 8
DEFAULT_OPT_BATCH = 1


def tensorrt_module() -> Any:
    """``import tensorrt`` or a :class:`MissingDependencyError` naming the extra."""
    try:
        import tensorrt
    except ImportError as exc:
        jetson = platform.machine() == "aarch64"
        hint = (
            "on a Jetson use JetPack's TensorRT instead (apt install python3-libnvinfer; a "
            "virtual environment needs --system-site-packages to see it)"
            if jetson
            else None
        )
        raise MissingDependencyError("tensorrt", "tensorrt", hint=hint) from exc
    return tensorrt


def cuda_runtime() -> Any:
    """The CUDA runtime bindings of cuda-python (new and old module layout)."""
    try:
        from cuda.bindings import runtime
    except ImportError:
        try:
            from cuda import cudart as runtime
        except ImportError as exc:
            raise MissingDependencyError("cuda-python", "tensorrt") from exc
    return runtime


def trt_major(version: str) -> int:
    """Major version of a TensorRT version string (``"10.3.0"`` -> 10)."""
    try:
        return int(str(version).split(".")[0])
    except ValueError as exc:
        raise ConfigError(f"cannot read TensorRT version {version!r}", field="tensorrt") from exc


def _ok(result: Any, what: str) -> Any:
    """Unpack a cuda-python ``(err, value...)`` tuple; raise on an error code."""
    err, *rest = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise AcceleratorError(f"{what} failed: {err}", backend=BACKEND, reason="cuda")
    return rest[0] if len(rest) == 1 else tuple(rest)


def compute_capability(device: int = 0, rt: Any = None) -> tuple[int, int]:
    """(major, minor) of CUDA device ``device``; :class:`AcceleratorError` without a GPU."""
    rt = rt if rt is not None else cuda_runtime()
    err, count = rt.cudaGetDeviceCount()
    if int(err) != 0 or count <= device:
        raise AcceleratorError(
            f"no CUDA device {device} (found {0 if int(err) else count}; {err})",
            backend=BACKEND,
            reason="no-gpu",
        )
    attr = rt.cudaDeviceAttr
    major = _ok(rt.cudaDeviceGetAttribute(attr.cudaDevAttrComputeCapabilityMajor, device), "cc")
    minor = _ok(rt.cudaDeviceGetAttribute(attr.cudaDevAttrComputeCapabilityMinor, device), "cc")
    return int(major), int(minor)


def default_engine_dir() -> Path:
    """``$ECGEDGE_ENGINES``, else ``~/.cache/ecgedge/engines``."""
    env = os.environ.get(ENGINE_DIR_ENV)
    return Path(env) if env else Path.home() / ".cache" / "ecgedge" / "engines"


def engine_checksum_path(engine_path: Path) -> Path:
    """Where an engine's SHA-256 is kept: ``<engine>.sha256`` (``sha256sum`` format)."""
    p = Path(engine_path)
    return p.with_name(p.name + ".sha256")


def read_verified_engine(engine_path: Path) -> bytes:
    """An engine's bytes, checked against the SHA-256 written beside it when it was built.

    A serialized engine can carry plugin code, so one without a checksum, or whose bytes
    differ from it, is refused (:class:`BundleError`, reasons ``"engine_checksum"`` and
    ``"checksum"``) before TensorRT sees it.
    """
    path = Path(engine_path)
    sidecar = engine_checksum_path(path)
    if not sidecar.is_file():
        raise BundleError(
            f"no checksum {sidecar.name} beside the engine: rebuild it with `ecgedge engines`, "
            f"or after trtexec run `sha256sum {path.name} > {sidecar.name}`",
            path=str(path),
            reason="engine_checksum",
        )
    try:
        with open(sidecar, "rb") as fh:  # sha256sum's line: a digest, a space, a name
            expected = (fh.read(4096).decode("ascii", errors="replace").split() or [""])[0]
        blob = path.read_bytes()
    except OSError as exc:
        raise BundleError(
            f"cannot read the engine: {exc}", path=str(path), reason="missing"
        ) from exc
    if hashlib.sha256(blob).hexdigest() != expected.lower():
        raise BundleError("engine does not match its SHA-256", path=str(path), reason="checksum")
    return blob


def write_engine_checksum(engine_path: Path, blob: bytes) -> Path:
    """Write ``<engine>.sha256`` for ``blob`` (owner-only), as ``sha256sum`` would."""
    sidecar = engine_checksum_path(engine_path)
    tmp = sidecar.with_name(sidecar.name + f".{os.getpid()}.partial")
    tmp.write_text(f"{hashlib.sha256(blob).hexdigest()}  {Path(engine_path).name}\n")
    os.chmod(tmp, 0o600)
    tmp.replace(sidecar)
    return sidecar


def engine_name(
    onnx_path: Path,
    precision: str,
    trt_version: str,
    capability: tuple[int, int],
    *,
    max_batch: int = DEFAULT_MAX_BATCH,
    sha256: str | None = None,
) -> str:
    """Cache file name: one engine per (model, precision, TensorRT, GPU, profile, ONNX bytes)."""
    stem = Path(onnx_path).stem
    if stem.endswith(f".{precision}"):
        stem = stem[: -len(precision) - 1]
    digest = (sha256 or sha256_file(Path(onnx_path)))[:16]
    major, minor = capability
    return f"{stem}.{precision}.trt{trt_version}.sm{major}{minor}.b{max_batch}.{digest}.engine"


def profile_shapes(
    inputs: Sequence[TensorSpec],
    *,
    max_batch: int = DEFAULT_MAX_BATCH,
    opt_batch: int = DEFAULT_OPT_BATCH,
) -> dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]:
    """(min, opt, max) per input from manifest shapes: symbolic axes are the batch axis."""
    out = {}
    for t in inputs:
        lo: list[int] = []
        opt: list[int] = []
        hi: list[int] = []
        for d in t.shape:
            lo.append(d if isinstance(d, int) else 1)
            opt.append(d if isinstance(d, int) else opt_batch)
            hi.append(d if isinstance(d, int) else max_batch)
        out[t.name] = (tuple(lo), tuple(opt), tuple(hi))
    return out


class TrtEngineModel:
    """One deserialized engine with an execution context, a stream and device buffers.

    Parameters
    ----------
    engine_path : a serialized engine (``.engine`` / ``.plan``).
    spec : the manifest entry; its tensor names must be the engine's I/O tensors.
    device : CUDA device index.
    max_batch : the largest batch of the engine's optimization profile; :meth:`run` feeds a
        larger batch (a calibration's windows) in pieces of this size.

    Not thread-safe for concurrent :meth:`run` calls on one instance. Call :meth:`close`
    (or use it as a context manager) to free device memory early.
    """

    def __init__(
        self,
        engine_path: Path,
        *,
        spec: ModelFile | None = None,
        device: int = 0,
    ) -> None:
        self.trt = trt = tensorrt_module()
        self.rt = rt = cuda_runtime()
        compute_capability(device, rt)
        _ok(rt.cudaSetDevice(device), "cudaSetDevice")
        self.path = Path(engine_path)
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        engine = self._runtime.deserialize_cuda_engine(read_verified_engine(self.path))
        if engine is None:
            raise AcceleratorError(
                f"{self.path.name} cannot be deserialized: built by another TensorRT version "
                f"(this is {trt.__version__}) or GPU; rebuild it on this device",
                backend=BACKEND,
                reason="engine",
            )
        self.engine = engine
        self.device = device
        context = engine.create_execution_context()
        if context is None:  # TensorRT's answer when it cannot allocate the activations
            raise AcceleratorError(
                f"{self.path.name}: no execution context (GPU {device} is out of memory?)",
                backend=BACKEND,
                reason="cuda",
            )
        self.context = context
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        is_in = {n: engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT for n in names}
        self.input_names = [n for n in names if is_in[n]]
        self.output_names = [n for n in names if not is_in[n]]
        self._dtypes = {n: np.dtype(trt.nptype(engine.get_tensor_dtype(n))) for n in names}
        self.max_batch = self._profile_max_batch()
        self._buffers: dict[str, tuple[int, int]] = {}
        self._stream = _ok(rt.cudaStreamCreate(), "cudaStreamCreate")
        if spec is not None:
            self._check(spec)

    def _profile_max_batch(self) -> int:
        """The largest batch of the engine's optimization profile 0 (its inputs' batch axis);
        the fixed first dimension for an engine of fixed shapes. Read from the engine, not
        from its file name: an engine built with ``--max-batch N`` or by trtexec has its own
        range."""
        sizes = []
        for name in self.input_names:
            shape = tuple(self.engine.get_tensor_shape(name))
            if shape and shape[0] == -1:  # dynamic batch: the profile bounds it
                _, _, hi = self.engine.get_tensor_profile_shape(name, 0)
                sizes.append(int(hi[0]))
            elif shape:
                sizes.append(int(shape[0]))
        return max(1, min(sizes, default=1))

    def _check(self, spec: ModelFile) -> None:
        have = set(self.input_names) | set(self.output_names)
        for t in (*spec.inputs, *spec.outputs):
            if t.name not in have:
                raise AcceleratorError(
                    f"engine {self.path.name} has no tensor {t.name!r} (has {sorted(have)}); "
                    "it was built from another model",
                    backend=BACKEND,
                    reason="engine",
                )

    def _buffer(self, name: str, nbytes: int) -> int:
        ptr, size = self._buffers.get(name, (0, 0))
        if size < nbytes:
            if ptr:
                _ok(self.rt.cudaFree(ptr), "cudaFree")
            ptr = int(_ok(self.rt.cudaMalloc(max(nbytes, 1)), "cudaMalloc"))
            self._buffers[name] = (ptr, nbytes)
        return ptr

    def _copy(self, dst: int, src: int, nbytes: int, kind: str) -> None:
        k = getattr(self.rt.cudaMemcpyKind, kind)
        _ok(self.rt.cudaMemcpyAsync(dst, src, nbytes, k, self._stream), "cudaMemcpyAsync")

    def _set_inputs(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        missing = [n for n in self.input_names if n not in feeds]
        if missing:
            raise ConfigError(f"missing inputs {missing} (engine takes {self.input_names})")
        hosts = []
        for name in self.input_names:
            host = np.ascontiguousarray(feeds[name], dtype=self._dtypes[name])
            if not self.context.set_input_shape(name, tuple(host.shape)):
                raise ConfigError(
                    f"input {name!r} shape {host.shape} outside the engine's optimization "
                    "profile (fixed window, batch 1..max)",
                    field=name,
                )
            ptr = self._buffer(name, host.nbytes)
            self._copy(ptr, host.ctypes.data, host.nbytes, "cudaMemcpyHostToDevice")
            self.context.set_tensor_address(name, ptr)
            hosts.append(host)  # keep alive until the stream is synchronized
        return hosts

    def run(
        self, feeds: dict[str, np.ndarray], outputs: Sequence[str] | None = None
    ) -> list[np.ndarray]:
        """Run on host arrays (batch first); returns host arrays of ``outputs`` (default:
        all). A batch beyond :attr:`max_batch` runs in pieces."""
        n = max((len(v) for v in feeds.values()), default=0)
        if n <= self.max_batch:
            return self._run_batch(feeds, outputs)
        parts = [
            self._run_batch({k: v[i : i + self.max_batch] for k, v in feeds.items()}, outputs)
            for i in range(0, n, self.max_batch)
        ]
        return [np.concatenate(piece) for piece in zip(*parts)]

    def _run_batch(
        self, feeds: dict[str, np.ndarray], outputs: Sequence[str] | None
    ) -> list[np.ndarray]:
        wanted = list(outputs) if outputs else list(self.output_names)
        unknown = [n for n in wanted if n not in self.output_names]
        if unknown:
            raise ConfigError(f"unknown outputs {unknown} (engine has {self.output_names})")
        # the engine's GPU for this thread: buffers allocated below must live on it, whatever
        # GPU another model (or another thread) made current since
        _ok(self.rt.cudaSetDevice(self.device), "cudaSetDevice")
        hosts = self._set_inputs(feeds)
        results = {}
        for name in self.output_names:
            shape = tuple(int(d) for d in self.context.get_tensor_shape(name))
            results[name] = np.empty(shape, dtype=self._dtypes[name])
            self.context.set_tensor_address(name, self._buffer(name, results[name].nbytes))
        if not self.context.execute_async_v3(int(self._stream)):
            raise AcceleratorError("execute_async_v3 failed", backend=BACKEND, reason="cuda")
        for name in wanted:
            out = results[name]
            self._copy(
                out.ctypes.data, self._buffers[name][0], out.nbytes, "cudaMemcpyDeviceToHost"
            )
        _ok(self.rt.cudaStreamSynchronize(self._stream), "cudaStreamSynchronize")
        del hosts
        return [results[n] for n in wanted]

    def close(self) -> None:
        for ptr, _ in self._buffers.values():
            self.rt.cudaFree(ptr)
        self._buffers.clear()
        if self._stream is not None:
            self.rt.cudaStreamDestroy(self._stream)
            self._stream = None

    def __enter__(self) -> TrtEngineModel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown: the CUDA bindings may be gone
            pass


def trtexec_engine_name(onnx_path: Path | str, sha256: str) -> str:
    """The ``--saveEngine`` name of the model card's trtexec lines: ``<onnx stem>.<ONNX
    sha256[:16]>.engine``, so an engine built from another model's ONNX is never picked up."""
    return f"{Path(onnx_path).stem}.{sha256[:16]}.engine"


def find_engine(
    onnx_path: Path,
    precision: str,
    *,
    engine_dir: Path | None = None,
    max_batch: int = DEFAULT_MAX_BATCH,
    device: int = 0,
    sha256: str | None = None,
) -> Path:
    """The cached engine for ``onnx_path`` on this TensorRT and GPU, else a precise error.

    Looks for the keyed name (``ecgedge engines``) with profile ``max_batch``, then the same
    name with any other profile (an engine built with ``--max-batch N``; the largest wins),
    then :func:`trtexec_engine_name` (the model card's trtexec lines). All carry the ONNX
    file's SHA-256 (``sha256``: the manifest's, else the file is hashed).
    """
    trt = tensorrt_module()
    cc = compute_capability(device)
    folder = Path(engine_dir) if engine_dir else default_engine_dir()
    digest = sha256 or sha256_file(Path(onnx_path))
    keyed = folder / engine_name(
        onnx_path, precision, trt.__version__, cc, max_batch=max_batch, sha256=digest
    )
    head, tail = keyed.name.split(f".b{max_batch}.", 1)
    batch = {p: p.name[len(head) + 2 :].split(".")[0] for p in folder.glob(f"{head}.b*.{tail}")}
    others = sorted((p for p, b in batch.items() if b.isdigit()), key=lambda p: -int(batch[p]))
    for candidate in (keyed, *others, folder / trtexec_engine_name(onnx_path, digest)):
        if candidate.is_file():
            return candidate
    raise BundleError(
        f"no TensorRT {trt.__version__} engine for sm{cc[0]}{cc[1]} (looked for {keyed.name} "
        f"in {folder}); build it on this device: ecgedge engines --bundle "
        f"{Path(onnx_path).parent} --precision {precision} --out {folder}",
        path=str(onnx_path),
        reason="engine",
    )


def open_engine(
    onnx_path: Path,
    *,
    precision: str,
    spec: ModelFile | None = None,
    engine_dir: Path | None = None,
    max_batch: int = DEFAULT_MAX_BATCH,
    device: int = 0,
) -> TrtEngineModel:
    """:class:`TrtEngineModel` for a bundle's ONNX file (its engine looked up in the cache)."""
    path = find_engine(
        onnx_path,
        precision,
        engine_dir=engine_dir,
        max_batch=max_batch,
        device=device,
        sha256=spec.sha256 if spec is not None else None,
    )
    return TrtEngineModel(path, spec=spec, device=device)
