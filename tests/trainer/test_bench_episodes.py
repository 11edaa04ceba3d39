"""Tests of trainer.bench.episodes (AF episodes as a stream reports them)."""

from __future__ import annotations

import pytest

from trainer.bench import episodes as ep


def _row(reference, reported, seconds=3600.0):
    """A record whose every setting reported ``reported`` (a dict: per setting)."""
    per = reported if isinstance(reported, dict) else dict.fromkeys(ep.SETTINGS, reported)
    return {"record": "r", "seconds": seconds, "reference": reference, "reported": per}


def test_scores_count_episodes_time_and_false_alarms():
    rows = [
        # reference 100-400 s found by 150-450; a 20 s false episode; reference 1000-1100 missed
        _row([(100.0, 400.0), (1000.0, 1100.0)], [(150.0, 450.0), (2000.0, 2020.0)]),
        _row([], [(10.0, 70.0)]),  # a non-AF record with one 60 s false episode
    ]
    s = ep.score(rows, "no minimum")
    assert (s["reference_episodes"], s["reported_episodes"]) == (2, 3)
    assert s["episode_se"] == pytest.approx(50.0)
    assert (s["reference_episodes_30s"], s["episode_se_30s"]) == (2, pytest.approx(50.0))
    assert s["episode_pp"] == pytest.approx(100.0 / 3)
    assert s["duration_se"] == pytest.approx(100.0 * 250 / 400)
    assert s["duration_pp"] == pytest.approx(100.0 * 250 / 380)
    assert s["false_episodes"] == 2 and s["false_episodes_per_hour"] == pytest.approx(1.0)
    # burden: |320 - 400| / 3600 and 60 / 3600, in percentage points
    assert s["burden_mae_pct_points"] == pytest.approx((80 / 36 + 60 / 36) / 2)
    assert s["window_burden_mae_pct_points"] is None  # no window time given
    rows[0]["window_af_s"], rows[1]["window_af_s"] = 380.0, 30.0
    # from the windows: |380 - 400| / 3600 and 30 / 3600, in percentage points
    got = ep.score(rows, "no minimum")["window_burden_mae_pct_points"]
    assert got == pytest.approx((20 / 36 + 30 / 36) / 2)
    rows[0]["reported"]["≥ 30 s"] = [(150.0, 450.0)]  # a setting without the 20 s episode
    long = ep.score(rows, "≥ 30 s")
    assert long["reported_episodes"] == 2 and long["false_episodes"] == 1
    assert long["duration_se"] == s["duration_se"] and long["setting"] == "≥ 30 s"


def test_nothing_reported_has_no_positive_predictivity():
    s = ep.score([_row([(0.0, 60.0)], [])], "no minimum")
    assert s["episode_pp"] is None and s["duration_pp"] is None and s["episode_se"] == 0.0


@pytest.mark.data("cpsc2021")
def test_the_sdk_default_joins_and_filters_the_plain_runs_on_real_records():
    """On real AF records (tail windows included): the default tracker's episodes are the
    plain tracker's runs joined across gaps shorter than 30 s, those with 30 s of AF."""
    from sdk.bundle import default_bundle_path, load_bundle
    from trainer.data import records as rec

    bundle = load_bundle(default_bundle_path())
    checked = joined_any = 0
    for name in rec.list_records("cpsc2021"):
        r = rec.read_cpsc2021(name)
        if not ep.reference_af(r):
            continue
        plain, window_af_s = ep.stream_episodes(bundle, r)
        assert 0.0 < window_af_s <= r.duration_s
        merged: list[list[float]] = []  # onset, end, AF time (the runs' sum)
        for a, b in plain:
            if merged and a - merged[-1][1] < 30.0:
                merged[-1][1] = b
                merged[-1][2] += b - a
            else:
                merged.append([a, b, b - a])
        joined_any += len(merged) < len(plain)
        expected = [(a, b) for a, b, af in merged if af >= 30.0]
        assert ep.stream_episodes(bundle, r, 30.0, 30.0) == (expected, window_af_s)
        checked += 1
        if checked == 4:
            break
    assert checked == 4 and joined_any  # some record had runs to join


def test_timeline_plot_is_written_for_records_with_af(tmp_path, monkeypatch):
    from matplotlib.axes import Axes

    drawn: list[tuple[str, object]] = []
    barh, text = Axes.broken_barh, Axes.text

    def spy_barh(self, xranges, *args, **kwargs):
        drawn.append(("bars", [tuple(map(float, x)) for x in xranges]))
        return barh(self, xranges, *args, **kwargs)

    def spy_text(self, x, y, s, *args, **kwargs):
        drawn.append(("name", s))
        return text(self, x, y, s, *args, **kwargs)

    monkeypatch.setattr(Axes, "broken_barh", spy_barh)
    monkeypatch.setattr(Axes, "text", spy_text)
    af = _row(
        [(60.0, 400.0)],
        {
            "no minimum": [(50.0, 70.0), (100.0, 420.0)],
            "≥ 30 s": [(100.0, 420.0)],
            "≥ 30 s of AF, gaps < 30 s joined (SDK)": [(50.0, 420.0)],
        },
        seconds=600.0,
    )
    quiet = {**_row([], [], seconds=600.0), "record": "quiet"}  # nothing to show: left out
    path = ep.plot_timelines({"db": [af, quiet]}, tmp_path / "t.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000
    assert [s for kind, s in drawn if kind == "name"] == ["db/r"]
    bars = [s for kind, s in drawn if kind == "bars"]
    assert bars[0] == [(1.0, 340.0 / 60)]  # the reference, in minutes
    assert bars[1:] == [
        [(50.0 / 60, 20.0 / 60), (100.0 / 60, 320.0 / 60)],
        [(100.0 / 60, 320.0 / 60)],
        [(50.0 / 60, 370.0 / 60)],
    ]
    none = ep.plot_timelines({"db": [_row([], [], seconds=600.0)]}, tmp_path / "none.png")
    assert none.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"  # no AF anywhere: still a figure
