"""Noise simulation: SNR mixing, the time split, em recovery from 118e*/119e*."""

from __future__ import annotations

import numpy as np
import pytest

from sdk.preprocess import PreprocessSpec, standardize_window
from trainer.data import noise
from trainer.errors import ConfigError


@pytest.mark.parametrize("target", [-6.0, 0.0, 6.0, 12.0, 24.0])
def test_mixing_hits_the_requested_snr(target):
    rng = np.random.default_rng(0)
    clean = np.sin(np.linspace(0, 60, 1280))[None].repeat(3, 0) * [[1.0], [0.3], [2.0]]
    raw_noise = (
        rng.standard_normal((3, 1280)) + 0.5 * np.cumsum(rng.standard_normal((3, 1280)), 1) / 30
    )
    noisy, k = noise.mix_at_snr(clean, raw_noise, target)
    added = noisy - clean
    # the definition written out (variance about the mean), not the module's own power()
    by_hand = 10 * np.log10(np.var(clean, axis=1) / np.var(added, axis=1))
    np.testing.assert_allclose(by_hand, target, atol=1e-9)
    np.testing.assert_allclose(noise.snr_db(clean, added), target, atol=1e-9)
    assert k.shape == (3, 1)


def test_time_split_is_disjoint_ordered_and_covering():
    x = np.arange(1000)
    parts = [noise.time_split(x, p) for p in ("train", "select", "eval")]
    assert [p.size for p in parts] == [700, 100, 200]
    np.testing.assert_array_equal(np.concatenate(parts), x)
    with pytest.raises(ConfigError):
        noise.time_split(x, "test")


def test_standardize_with_matches_the_sdk():
    rng = np.random.default_rng(1)
    noisy = rng.standard_normal((2, 3, 1280)) * 0.4 + 0.1
    clean = noisy * 0.5
    z, c, mean, std = noise.standardize_with(noisy, clean)
    for b in range(2):
        np.testing.assert_allclose(z[b], standardize_window(noisy[b].T).T, atol=1e-6)
    # the target in z's units, written out: (clean - mean of noisy) / std of noisy per lead
    by_hand = (clean - noisy.mean(-1, keepdims=True)) / noisy.std(-1, keepdims=True)
    np.testing.assert_allclose(c, by_hand, atol=1e-5)
    # here clean = noisy / 2: in z's units it is (z - mean/std) / 2, the same shape at half scale
    np.testing.assert_allclose(c, (z - mean / std) / 2, atol=1e-5)


def test_em_segments_follow_the_nstdb_layout():
    segs = noise.em_segments(650000)
    assert segs[0] == (300 * 360, 420 * 360)
    assert segs[1][0] - segs[0][0] == 240 * 360
    assert segs[-1][1] == 650000 - 1  # the last sample (an artefact) is dropped


@pytest.mark.data("mitdb", "nstdb")
@pytest.mark.parametrize("record", ["118", "119"])
@pytest.mark.parametrize("tag", ["24", "00", "_6"])
def test_em_recovery_reproduces_the_noisy_records(record, tag):
    rec = noise.recover_em(record, tag)
    clean = noise._digital("mitdb", record)
    noisy = noise._digital("nstdb", f"{record}e{tag}")
    i = 0
    for (start, end), offset in zip(rec.segments, rec.offsets):
        n = end - start
        rebuilt = clean[start:end] + rec.noise[i : i + n] + offset
        np.testing.assert_allclose(rebuilt, noisy[start:end], atol=1e-3)
        i += n
    assert i == rec.noise.shape[0]
    # outside the noisy segments the difference is one constant per clean gap
    gap = slice(rec.segments[0][1] + 10, rec.segments[1][0] - 10)
    assert np.ptp(noisy[gap] - clean[gap], axis=0).max() == 0


@pytest.mark.data("mitdb", "nstdb")
def test_em_is_the_same_noise_at_every_snr_and_in_both_records():
    a = noise.recover_em("118", "00").noise
    for other in (noise.recover_em("118", "12").noise, noise.recover_em("119", "00").noise):
        for ch in range(2):
            assert np.corrcoef(a[:, ch], other[:, ch])[0, 1] > 0.999


@pytest.mark.data("mitdb", "nstdb")
def test_sampler_fixed_snr_and_lead_subset():
    from trainer.data.denoise_data import PairSampler, clean_signals

    clean = clean_signals("mitdb", ["101", "106"], 128.0, 2)
    s = PairSampler(clean, PreprocessSpec(), "eval", window=1280, context=640, seed=0)
    ex = s.draw(6, p_noisy=1.0, snr_db=6.0, kinds=("ma",))
    np.testing.assert_allclose(ex.snr, 6.0, atol=1e-6)
    x, xs = s.draw_pair(8, p_noisy=0.5)
    np.testing.assert_array_equal(xs.noisy, True)
    clean_leads = ~x.noisy
    assert clean_leads.any() and x.noisy.any()
    # a lead without noise: input equals target (both clipped alike)
    np.testing.assert_allclose(x.x[clean_leads], x.target[clean_leads], atol=1e-5)


def test_a_truncated_record_for_em_recovery_names_its_path(tmp_data_root):
    import wfdb

    from trainer.errors import DataError

    folder = tmp_data_root / "mitdb"
    folder.mkdir()
    x = np.sin(np.arange(3600) / 10.0)[:, None].repeat(2, axis=1)
    wfdb.wrsamp(
        "118",
        fs=360,
        units=["mV", "mV"],
        sig_name=["MLII", "V1"],
        p_signal=x,
        fmt=["212", "212"],
        adc_gain=[200.0, 200.0],
        baseline=[0, 0],
        write_dir=str(folder),
    )
    dat = folder / "118.dat"
    dat.write_bytes(dat.read_bytes()[:1001])
    with pytest.raises(DataError) as err:
        noise.recover_em("118")
    assert err.value.reason == "corrupt" and str(folder / "118") in str(err.value)
