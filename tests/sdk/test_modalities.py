"""The spectrogram and Lorenz modalities: physics checks, and trainer == device."""

from __future__ import annotations

import numpy as np
import pytest

from sdk.errors import ConfigError
from sdk.modalities import LorenzSpec, SpectrogramSpec, lorenz_image, rr_from_peaks, spectrogram
from sdk.preprocess import PreprocessSpec
from sdk.synthetic import synthetic_ecg
from sdk.windowing import record_windows

FS, L = 128.0, 1280


def test_spectrogram_geometry_and_a_sine_peaks_in_its_bin():
    spec = SpectrogramSpec()
    t = np.arange(L) / FS
    x = np.sin(2 * np.pi * 10.0 * t)  # 10 Hz = bin 5 at 2 Hz resolution
    s = spectrogram(x, spec)
    assert s.shape == (spec.n_bins, spec.n_frames(L)) == (20, 80) and s.dtype == np.float32
    assert abs(float(s.mean())) < 1e-5 and abs(float(s.std()) - 1.0) < 1e-4
    assert np.all(s[:, 5:-5].argmax(axis=0) == 5)


def test_spectrogram_of_a_batch_equals_each_window():
    x = np.random.default_rng(0).standard_normal((3, L))
    batch = spectrogram(x)
    for i in range(3):
        np.testing.assert_array_equal(batch[i], spectrogram(x[i]))


def test_lorenz_regular_rhythm_sits_at_the_centre_and_af_spreads():
    spec = LorenzSpec()
    regular = lorenz_image(np.full(12, 0.8), spec)
    assert regular.shape == (spec.grid, spec.grid) and regular.max() == 1.0
    centre = spec.grid // 2
    assert regular[centre - 1 : centre + 1, centre - 1 : centre + 1].min() > 0.5
    assert regular[0, 0] == -1.0
    irregular = lorenz_image(np.random.default_rng(1).uniform(0.4, 1.2, 12), spec)
    assert (irregular > -0.5).sum() > 3 * (regular > -0.5).sum()


def test_lorenz_axes_are_successive_differences():
    spec = LorenzSpec(grid=24, limit_s=0.6, sigma_px=0.3)
    img = lorenz_image(np.array([0.8, 0.8, 1.1]), spec)  # one point: (ΔRR_i, ΔRR_{i-1}) = (0.3, 0)
    row, col = np.unravel_index(int(np.argmax(img)), img.shape)
    px = 2 * spec.limit_s / spec.grid
    assert abs((col + 0.5) * px - spec.limit_s - 0.3) <= px and abs((row + 0.5) * px - 0.6) <= px


def test_lorenz_edge_cases():
    assert np.all(lorenz_image(np.array([0.8, 0.9])) == -1.0)  # fewer than 3 intervals
    assert np.all(lorenz_image(np.array([])) == -1.0)
    clipped = lorenz_image(np.array([0.3, 2.0, 0.3, 2.0]))  # beyond the limit: on the border
    assert np.isfinite(clipped).all() and clipped.max() == 1.0
    with pytest.raises(ConfigError):
        lorenz_image(np.array([0.8, np.nan, 0.8]))


def test_beat_times_alone_give_the_same_image_as_peaks():
    peaks = np.array([10, 112, 230, 330, 455, 560])  # samples at 128 Hz
    rr = np.diff(peaks) / FS  # what a Heart Rate Service or an annotation file delivers
    np.testing.assert_array_equal(lorenz_image(rr), lorenz_image(rr_from_peaks(peaks, FS)))


def test_the_trainer_takes_its_modalities_from_the_sdk_with_the_devices_parameters():
    """The trainer calls the SDK's code (one source of truth), so this checks the wiring only
    (preprocessing, window, hop, the same record); the images themselves are checked by the
    tests above (axes, bins, beat times)."""
    pytest.importorskip("torch", reason="compares with the trainer (ecgedge[train])")
    from trainer.config import DataConfig
    from trainer.data.datasets import synthetic_windows

    cfg = DataConfig(source="synthetic")
    ws = synthetic_windows(cfg, n_records=2)
    ecg = synthetic_ecg((("sinus", 30.0),), fs=250.0, seed=0)  # synthetic_windows' record 0
    rw = record_windows(ecg.signal, ecg.fs, PreprocessSpec(fs=cfg.fs), cfg.window, cfg.hop)
    first = ws.record_index == 0
    np.testing.assert_array_equal(ws.lorenz[first], rw.lorenz)
    np.testing.assert_array_equal(ws.modality("spectrogram")[first], spectrogram(rw.windows[:, 0]))
    assert ws.modality("lorenz").shape[1:] == (LorenzSpec().grid,) * 2
