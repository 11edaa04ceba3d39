"""Tests of trainer.bench.episodes (AF episodes as a stream reports them)."""

from __future__ import annotations

import pytest

from trainer.bench import episodes as ep


def _row(reference, reported, seconds=3600.0):
    return {"record": "r", "seconds": seconds, "reference": reference, "reported": reported}


def test_scores_count_episodes_time_and_false_alarms():
    rows = [
        # reference 100-400 s found by 150-450; a 20 s false episode; reference 1000-1100 missed
        _row([(100.0, 400.0), (1000.0, 1100.0)], [(150.0, 450.0), (2000.0, 2020.0)]),
        _row([], [(10.0, 70.0)]),  # a non-AF record with one 60 s false episode
    ]
    s = ep.score(rows, 0.0)
    assert (s["reference_episodes"], s["reported_episodes"]) == (2, 3)
    assert s["episode_se"] == pytest.approx(50.0)
    assert (s["reference_episodes_30s"], s["episode_se_30s"]) == (2, pytest.approx(50.0))
    assert s["episode_pp"] == pytest.approx(100.0 / 3)
    assert s["duration_se"] == pytest.approx(100.0 * 250 / 400)
    assert s["duration_pp"] == pytest.approx(100.0 * 250 / 380)
    assert s["false_episodes"] == 2 and s["false_episodes_per_hour"] == pytest.approx(1.0)
    # burden: |320 - 400| / 3600 and 60 / 3600, in percentage points
    assert s["burden_mae_pct_points"] == pytest.approx((80 / 36 + 60 / 36) / 2)
    long = ep.score(rows, 30.0)  # the 20 s false episode is dropped
    assert long["reported_episodes"] == 2 and long["false_episodes"] == 1
    assert long["duration_se"] == s["duration_se"]


def test_nothing_reported_has_no_positive_predictivity():
    s = ep.score([_row([(0.0, 60.0)], [])], 0.0)
    assert s["episode_pp"] is None and s["duration_pp"] is None and s["episode_se"] == 0.0


@pytest.mark.data("cpsc2021")
def test_the_30_s_row_is_what_a_stream_with_that_minimum_reports():
    """On real AF records (tail windows included): the bench's derived 30 s episodes equal a
    pipeline run with ``episode_min_s=30``."""
    from sdk.bundle import default_bundle_path, load_bundle
    from sdk.events import EpisodeEvent
    from sdk.pipeline import StreamPipeline
    from trainer.data import records as rec

    bundle = load_bundle(default_bundle_path())
    checked = 0
    for name in rec.list_records("cpsc2021"):
        r = rec.read_cpsc2021(name)
        if not ep.reference_af(r):
            continue
        plain = ep.stream_episodes(bundle, r)
        p = StreamPipeline(bundle, fs_in=r.fs, episode_min_s=30.0)
        events = p.push(r.signal[:, :1]) + p.close()
        times = [e.time_s for e in events if isinstance(e, EpisodeEvent)]
        gated = list(zip(times[::2], times[1::2], strict=True))
        assert gated == [s for s in plain if s[1] - s[0] >= 30.0]
        checked += 1
        if checked == 3:
            break
    assert checked == 3


def test_timeline_plot_is_written_for_records_with_af(tmp_path):
    rows = {
        "db": [
            _row([(60.0, 400.0)], [(50.0, 70.0), (100.0, 420.0)], seconds=600.0),
            _row([], [], seconds=600.0),  # nothing to show: left out
        ]
    }
    path = ep.plot_timelines(rows, tmp_path / "t.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000
    none = ep.plot_timelines({"db": [_row([], [], seconds=600.0)]}, tmp_path / "none.png")
    assert none.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"  # no AF anywhere: still a figure
