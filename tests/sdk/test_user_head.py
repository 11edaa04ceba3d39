"""A user's head fitted on some classes only: the classes it never saw keep the bundle's."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from sdk.bundle import default_bundle_path, load_bundle
from sdk.classifier import WindowClassifier, WindowInputs
from sdk.denoiser import WindowDenoiser
from sdk.events import WindowEvent
from sdk.head import defer_unfitted
from sdk.pipeline import StreamPipeline
from sdk.synthetic import synthetic_ecg
from sdk.windowing import record_windows
from tests.sdk.test_profile import make_profile


def test_unfitted_classes_keep_the_global_probabilities_and_the_rest_splits_as_the_user():
    rng = np.random.default_rng(0)
    user = rng.dirichlet(np.ones(4), size=50)
    glob = rng.dirichlet(np.ones(4), size=50)
    fitted = np.array([True, True, False, False])  # N and A
    out = defer_unfitted(user, glob, fitted)
    np.testing.assert_allclose(out.sum(axis=1), 1.0)
    np.testing.assert_allclose(out[:, 2:], glob[:, 2:])  # O and ~ as the bundle's head says
    np.testing.assert_allclose(out[:, 0] / out[:, 1], user[:, 0] / user[:, 1])
    np.testing.assert_allclose(out[:, :2].sum(1), glob[:, :2].sum(1))
    np.testing.assert_allclose(defer_unfitted(user, glob, np.ones(4, bool)), user)


def test_fitted_classes_come_from_the_calibration_labels():
    bundle = load_bundle(default_bundle_path())
    p = make_profile(bundle)
    assert p.fitted_classes == bundle.manifest.classes  # no label counts: every class
    labelled = dataclasses.replace(p, calibration={"label_counts": {"A": 12, "N": 48, "O": 0}})
    assert labelled.fitted_classes == ("N", "A")  # in the head's order
    junk = dataclasses.replace(p, calibration={"label_counts": {"A": "many", "N": True}})
    assert junk.fitted_classes == bundle.manifest.classes


@pytest.mark.parametrize("fitted", [("N", "A"), None])
def test_a_pipeline_with_a_profile_defers_the_classes_it_never_saw(fitted):
    bundle = load_bundle(default_bundle_path())
    m = bundle.manifest
    p = make_profile(bundle)
    if fitted is not None:
        p = dataclasses.replace(p, calibration={"label_counts": {c: 10 for c in fitted}})
    pipe = StreamPipeline(bundle, fs_in=m.fs, profile=p, precision="fp32")
    x = synthetic_ecg((("sinus", 30.0),), fs=m.fs, seed=1).signal
    got = [e for e in pipe.push(x) + pipe.close() if isinstance(e, WindowEvent)]
    assert got
    clf = WindowClassifier(bundle, precision="fp32")
    den = WindowDenoiser(bundle)
    rw = record_windows(x, m.fs, m.preprocess, m.window_samples, m.hop_samples, denoiser=den)
    feats = clf.features(WindowInputs(rw.windows, rw.rr, rw.lorenz), p.t)
    user = p.head.predict_proba(feats)
    glob = clf.head_probabilities(feats)
    mask = np.array([c in (fitted or m.classes) for c in m.classes])
    expected = defer_unfitted(user, glob, mask)
    probs = np.array([[e.probabilities[c] for c in m.classes] for e in got])
    np.testing.assert_allclose(probs, expected, atol=1e-4)
    if fitted is not None:
        np.testing.assert_allclose(probs[:, 2:], glob[:, 2:], atol=1e-4)
