"""The rhythm benchmarks rebuild the bundle head's split only from the data it was made with."""

from __future__ import annotations

import pytest

from sdk.bundle import default_bundle_path, load_bundle
from trainer.bench.rhythm import bundle_val_records
from trainer.data import records as rec
from trainer.errors import ConfigError

pytestmark = pytest.mark.data("cinc2017")


def test_the_recorded_split_is_rebuilt() -> None:
    manifest = load_bundle(default_bundle_path()).manifest
    names = bundle_val_records(manifest)
    assert len(names) == manifest.provenance["training_data"]["val_records"]


def test_a_data_root_with_a_record_missing_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """One record fewer moved 12-286 training records into validation, and the benchmark
    reported them as held out."""
    labels = dict(rec.cinc2017_labels_cached())
    labels.pop(sorted(labels)[0])
    monkeypatch.setattr(rec, "cinc2017_labels_cached", lambda: labels)
    with pytest.raises(ConfigError, match="another data root or another copy"):
        bundle_val_records(load_bundle(default_bundle_path()).manifest)
