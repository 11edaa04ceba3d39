"""``ecgedge bench dacl`` renders a run's results with intervals and the paper's figures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from trainer.bench.dacl import run
from trainer.errors import ConfigError


def _metric(v: float) -> dict[str, object]:
    return {"value": v, "ci95": [v - 0.01, v + 0.01]}


def _result(anomaly: float) -> dict[str, object]:
    probe = {m: _metric(0.5) for m in ("challenge_f1", "macro_f1", "auroc_normal_vs_af_other")}
    return {
        "anomaly_auroc": _metric(anomaly),
        "embedding_plus_rr": probe,
        "embedding_only": probe,
        "train_seconds": 1.0,
    }


def test_bench_dacl_tables(tmp_path: Path) -> None:
    results = {
        "train": {"steps": 10, "batch_size": 8, "lr": 1e-3, "margin": 1.0, "diffusion_steps": 50},
        "dacl": _result(0.8123),
        "dae": _result(0.7011),
        "ablation_late": _result(0.6044),
    }
    (tmp_path / "dacl.json").write_text(json.dumps(results))
    run(tmp_path, tmp_path / "out")
    md = (tmp_path / "out" / "dacl.md").read_text()
    assert "0.812 [0.802, 0.822]" in md and "0.7815" in md and "0.7532" in md
    assert "Late t 34-50" in md and "0.604" in md
    saved = json.loads((tmp_path / "out" / "dacl.json").read_text())
    assert saved["results"]["dae"]["anomaly_auroc"]["value"] == 0.7011


TRAIN = {"steps": 10, "batch_size": 8, "lr": 1e-3, "margin": 1.0, "diffusion_steps": 50}


@pytest.mark.parametrize(
    "results, message",
    [
        ({"train": {}}, "no train-dacl results"),
        ({"dacl": _result(0.8)}, "no train-dacl results"),
        ({"train": {"steps": 3}, "dacl": _result(0.8)}, "section with \\['batch_size'"),
        ({"train": TRAIN, "dacl": {"anomaly_auroc": 0.8}}, "the 'dacl' results are malformed"),
        ({"train": TRAIN, "dae": _result(0.7), "ablation_late": []}, "'ablation_late' results"),
    ],
)
def test_a_malformed_results_file_is_refused_naming_what(
    tmp_path: Path, results: dict, message: str
) -> None:
    (tmp_path / "dacl.json").write_text(json.dumps(results))
    with pytest.raises(ConfigError, match=message):
        run(tmp_path, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_run_without_the_dacl_row_still_renders(tmp_path: Path) -> None:
    results = {"train": TRAIN, "dae": _result(0.7011)}
    (tmp_path / "dacl.json").write_text(json.dumps(results))
    run(tmp_path, tmp_path / "out")
    assert "0.701 [0.691, 0.711]" in (tmp_path / "out" / "dacl.md").read_text()
