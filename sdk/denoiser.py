"""The bundle's ``denoiser`` (CD-ECGNet) on the device: standardized window in, cleaner out.

The denoiser sits after the band-pass and the per-window standardization
(:func:`sdk.preprocess.standardize_window`), i.e. it sees exactly what the embedder would
see, and returns the window in the same units; the pipeline re-standardizes its output so the
embedder's input statistics are unchanged. A 1-lead denoiser runs on the selected lead; an
N-lead one on all N leads of the stream (it can use the clean leads to denoise the noisy ones).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sdk.bundle import DENOISED_SEARCH_BACK_KEY, Bundle
from sdk.errors import BundleError, ConfigError
from sdk.preprocess import MIN_STD_MV, standardize_window
from sdk.rpeaks import MIN_QRS_ENERGY, SEARCH_BACK_THRESHOLD
from sdk.runtime import open_model, select_backend


class WindowDenoiser:
    """Runs ``denoiser(x) → y`` on (B, leads, window) standardized windows (ONNX Runtime).

    Parameters
    ----------
    bundle : a verified bundle with a ``denoiser`` file.
    precision : which denoiser file (``None`` = the most compact present).
    threads, backend, engine_dir : see :func:`sdk.runtime.open_model` (``"auto"`` resolved
        for the bundle; ``"trt-engine"`` runs the denoiser's engine like the other models').

    Attributes
    ----------
    search_back_threshold : the R-peak detector's search-back threshold on this denoiser's
        output (:func:`sdk.rpeaks.denoised_window_rpeaks`): the manifest's
        ``thresholds.denoised_rpeak_search_back`` (chosen on tuning records by ``ecgedge bench
        rpeak-tuning`` for the bundle's most compact denoiser file and set by ``ecgedge export
        --rpeak-rule``), else the SDK's default. Beats found without the denoiser
        (``StreamPipeline(denoise=False)``, ``record_windows(denoiser=None)``) always use the
        default.
    """

    def __init__(
        self,
        bundle: Bundle,
        *,
        precision: str | None = None,
        threads: int = 1,
        backend: str = "cpu",
        engine_dir: Path | None = None,
    ) -> None:
        spec = bundle.manifest.file("denoiser", precision)
        self.precision = spec.precision
        x = next((t for t in spec.inputs if t.name == "x"), None)
        shape = x.shape if x is not None else ()
        leads, window = shape[1:] if len(shape) == 3 else (None, None)
        if not (isinstance(leads, int) and isinstance(window, int)):
            raise BundleError(
                f"the denoiser's input x must be (batch, leads, window) with fixed leads and "
                f"window, got {list(shape)}",
                path=str(bundle.path_of(spec)),
                reason="shape",
            )
        self.model = open_model(
            bundle.path_of(spec),
            threads=threads,
            backend=select_backend(backend, bundle.manifest),
            spec=spec,
            engine_dir=engine_dir,
            data=bundle.verified_bytes(spec),
        )
        self.leads, self.window = leads, window
        self.search_back_threshold = float(
            bundle.manifest.thresholds.get(DENOISED_SEARCH_BACK_KEY, SEARCH_BACK_THRESHOLD)
        )
        if self.window != bundle.manifest.window_samples:
            raise ConfigError(
                f"the denoiser takes windows of {self.window} samples; the bundle's window is "
                f"{bundle.manifest.window_samples}",
                field="denoiser",
            )

    @staticmethod
    def from_bundle(
        bundle: Bundle,
        n_leads: int,
        *,
        threads: int = 1,
        backend: str = "cpu",
        engine_dir: Path | None = None,
    ) -> WindowDenoiser | None:
        """The bundle's denoiser for a stream of ``n_leads`` leads, or ``None`` if it has none."""
        if not any(f.role == "denoiser" for f in bundle.manifest.files):
            return None
        den = WindowDenoiser(bundle, threads=threads, backend=backend, engine_dir=engine_dir)
        if den.leads not in (1, n_leads):
            raise ConfigError(
                f"the bundle's denoiser takes {den.leads} leads; the stream has {n_leads}",
                field="n_leads",
            )
        return den

    def denoise(self, windows: np.ndarray) -> np.ndarray:
        """(B, leads, window) standardized → (B, leads, window) denoised, same units."""
        x = np.ascontiguousarray(windows, dtype=np.float32)
        if x.ndim != 3 or x.shape[1:] != (self.leads, self.window):
            raise ConfigError(
                f"windows must be (B, {self.leads}, {self.window}), got {x.shape}", field="windows"
            )
        return self.model.run({"x": x}, ["y"])[0]

    def denoise_leads(self, seg: np.ndarray, lead: int) -> DenoisedWindow:
        """A stream's window ``seg`` (n, n_leads) band-passed in mV, n <= window → the leads
        the denoiser sees, denoised, the selected ``lead`` first (a 1-lead denoiser sees only
        that lead): :class:`DenoisedWindow`."""
        n = seg.shape[0]
        cols = seg[:, lead : lead + 1] if self.leads == 1 else seg
        x = np.zeros((1, self.leads, self.window), dtype=np.float32)
        x[0, :, :n] = standardize_window(cols).T
        y = self.denoise(x)[0, :, :n].T
        order = [lead] + [j for j in range(self.leads) if j != lead] if self.leads > 1 else [0]
        scale = np.maximum(cols.std(axis=0), MIN_STD_MV)  # what standardizing divided by
        return DenoisedWindow(
            np.stack([standardize_window(y[:, j]) for j in order], axis=1),
            np.array([float(y[:, j].std() * scale[j]) for j in order]),
        )

    def denoise_window(self, seg: np.ndarray, lead: int) -> np.ndarray:
        """A stream's window ``seg`` (n, n_leads) band-passed, n <= window → the selected
        lead's embedder input (1, 1, window): denoised, re-standardized, zero-padded."""
        return self.denoise_leads(seg, lead).embedder_input(self.window)


@dataclass(frozen=True)
class DenoisedWindow:
    """One window's denoised leads (:meth:`WindowDenoiser.denoise_leads`), selected first.

    Attributes
    ----------
    leads : (n, leads) float32, each lead re-standardized (what an embedder sees).
    amplitude_mv : (leads,) each denoised lead's standard deviation in mV.
    """

    leads: np.ndarray
    amplitude_mv: np.ndarray

    def embedder_input(self, window: int) -> np.ndarray:
        """The selected lead zero-padded to ``window`` samples, (1, 1, window)."""
        out = np.zeros((1, 1, window), dtype=np.float32)
        out[0, 0, : self.leads.shape[0]] = self.leads[:, 0]
        return out

    @property
    def min_qrs_energy(self) -> float:
        """The R-peak detector's :data:`~sdk.rpeaks.MIN_QRS_ENERGY` on the scale of
        :meth:`beat_signal`: for the one standardized lead, divided by its amplitude in mV
        squared, so a window the denoiser found nothing in (a flat or held line, which
        standardizing blows up to unit variance) gives no beats."""
        if self.leads.shape[1] > 1:
            return MIN_QRS_ENERGY
        return MIN_QRS_ENERGY / max(float(self.amplitude_mv[0]), 1e-9) ** 2

    def beat_signal(self) -> np.ndarray:
        """What the R-peak detector takes: the one lead as standardized, (n,); several leads
        back at their amplitude in mV, (n, leads), so each weighs in the detector's summed
        slopes as it does in mV (a lead with a larger QRS counts more, as in stitched records
        in ``bench noise-stress``)."""
        if self.leads.shape[1] == 1:
            return self.leads[:, 0]
        return self.leads * self.amplitude_mv[None, :].astype(np.float32)


def denoise_signal(den: WindowDenoiser, y: np.ndarray, hop: int | None = None) -> np.ndarray:
    """Denoise a whole band-passed record (n, leads) in mV, window by window, back in mV.

    Windows overlap by ``window - hop`` (default half a window); each output sample comes from
    the window in which it lies most centrally. Records shorter than a window are zero-padded.
    ``hop`` must lie in 1 … window, so every sample is covered.
    """
    y2 = np.asarray(y, dtype=np.float64)
    if y2.ndim != 2 or y2.shape[1] != den.leads:
        raise ConfigError(f"signal must be (n, {den.leads}), got {y2.shape}", field="signal")
    n, w = y2.shape[0], den.window
    hop = w // 2 if hop is None else int(hop)
    if not 0 < hop <= w:
        raise ConfigError(f"hop must be in 1 … {w} samples, got {hop}", field="hop")
    starts = list(range(0, max(n - w, 0) + 1, hop))
    if n > w and starts[-1] != n - w:
        starts.append(n - w)
    out = np.zeros_like(y2)
    best = np.full(n, -1.0)  # distance of each sample to its window's edge (larger = central)
    for s in starts:
        seg = y2[s : s + w]
        m = seg.shape[0]
        mean = seg.mean(axis=0)
        std = np.maximum(seg.std(axis=0), MIN_STD_MV)
        x = np.zeros((1, den.leads, w), dtype=np.float32)
        x[0, :, :m] = standardize_window(seg).T
        d = den.denoise(x)[0, :, :m].T * std + mean
        idx = np.arange(m)
        margin = np.minimum(idx, m - 1 - idx).astype(np.float64)
        take = margin > best[s : s + m]
        out[s : s + m][take] = d[take]
        best[s : s + m] = np.maximum(best[s : s + m], margin)
    return out.astype(np.float32)
