"""User profiles: round trip, atomic owner-only files, tamper and wrong-bundle refusal,
and the pipeline's fallback to the bundle's defaults."""

from __future__ import annotations

import json
import os
import shutil
import stat

import numpy as np
import pytest

from sdk.bundle import default_bundle_path, load_bundle
from sdk.calibration import UserProfile, load_profile, save_profile
from sdk.errors import ProfileError
from sdk.head import SoftmaxHead
from sdk.pipeline import StreamPipeline
from sdk.synthetic import synthetic_ecg


@pytest.fixture(scope="module")
def bundle():
    return load_bundle(default_bundle_path())


def make_profile(bundle, t: int = 42) -> UserProfile:
    m = bundle.manifest
    d = int(m.file("head").inputs[0].shape[1])  # embeddings (+ fused) ++ RR features
    k = len(m.classes)
    rng = np.random.default_rng(0)
    head = SoftmaxHead(
        rng.normal(size=(d, k)), rng.normal(size=k), np.zeros(d), np.ones(d), m.classes
    )
    return UserProfile("u1", m.name, bundle.manifest_sha256, {"raw": t}, head, {"windows": 60})


def test_round_trip_is_exact_and_owner_only(bundle, tmp_path):
    p = make_profile(bundle)
    path = save_profile(p, tmp_path / "sub" / "u1.json")
    if os.name == "posix":
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    q = load_profile(path, bundle)
    assert q.t == {"raw": 42} and q.user == "u1" and q.calibration == {"windows": 60}
    np.testing.assert_array_equal(q.head.weight, p.head.weight)
    np.testing.assert_array_equal(q.head.bias, p.head.bias)
    assert q.head.classes == p.head.classes
    assert [f.name for f in tmp_path.joinpath("sub").iterdir()] == ["u1.json"]  # no temp left


def test_tampered_profile_is_refused(bundle, tmp_path):
    path = save_profile(make_profile(bundle), tmp_path / "p.json")
    data = json.loads(path.read_text())
    data["t"]["raw"] = 7  # an edit without a new checksum
    path.write_text(json.dumps(data))
    os.chmod(path, 0o600)
    with pytest.raises(ProfileError) as err:
        load_profile(path, bundle)
    assert err.value.reason == "checksum"


@pytest.mark.parametrize(
    "content, reason",
    [
        (b"{not json", "malformed"),
        (b'{"format": "x"}', "malformed"),
        (b"", "malformed"),
        (b'{"format": 1' + b"0" * 5000 + b', "sha256": "x"}', "malformed"),  # > 4300 digits
    ],
)
def test_corrupt_profile_is_refused(tmp_path, content, reason):
    path = tmp_path / "p.json"
    path.write_bytes(content)
    os.chmod(path, 0o600)
    with pytest.raises(ProfileError) as err:
        load_profile(path)
    assert err.value.reason == reason


def test_truncated_profile_is_refused(bundle, tmp_path):
    path = save_profile(make_profile(bundle), tmp_path / "p.json")
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(ProfileError) as err:
        load_profile(path)
    assert err.value.reason == "malformed"


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_world_readable_profile_is_refused(bundle, tmp_path):
    path = save_profile(make_profile(bundle), tmp_path / "p.json")
    os.chmod(path, 0o644)
    with pytest.raises(ProfileError) as err:
        load_profile(path)
    assert err.value.reason == "permissions" and "chmod 600" in str(err.value)


def test_profile_of_another_bundle_is_refused(bundle, tmp_path):
    other = tmp_path / "bundle"
    shutil.copytree(default_bundle_path(), other)
    manifest = other / "manifest.json"
    data = json.loads(manifest.read_text())
    data["name"] = "another-bundle"
    manifest.write_text(json.dumps(data))
    path = save_profile(make_profile(bundle), tmp_path / "p.json")
    with pytest.raises(ProfileError) as err:
        load_profile(path, load_bundle(other))
    assert err.value.reason == "bundle"
    assert load_profile(path, bundle).t == {"raw": 42}


def test_missing_profile(tmp_path):
    with pytest.raises(ProfileError) as err:
        load_profile(tmp_path / "none.json")
    assert err.value.reason == "missing"


def test_a_folder_given_as_the_profile_is_a_profile_error_naming_it(bundle, tmp_path, caplog):
    """It raised IsADirectoryError naming a file descriptor, and the stream did not fall back."""
    with pytest.raises(ProfileError, match="is a folder, not a profile file") as err:
        load_profile(tmp_path)
    assert err.value.path == str(tmp_path) and err.value.reason == "missing"
    pipeline = StreamPipeline(bundle, fs_in=250.0, profile=tmp_path)
    assert pipeline.profile is None and "user profile not used" in caplog.text


def _stream(pipeline: StreamPipeline, ecg) -> list:
    events = pipeline.push(ecg.signal) + pipeline.close()
    return [e for e in events if e.kind == "window"]


def test_pipeline_uses_a_profile_and_falls_back_from_a_bad_one(bundle, tmp_path, caplog):
    ecg = synthetic_ecg(fs=250.0, seed=3)
    profile = make_profile(bundle, t=42)
    good = StreamPipeline(bundle, fs_in=ecg.fs, profile=save_profile(profile, tmp_path / "p.json"))
    assert good.profile is not None and good.profile_error is None and good.t == 42
    events = _stream(good, ecg)
    assert events and all(e.personalized and e.t == 42 for e in events)

    bad = tmp_path / "bad.json"
    bad.write_bytes(b"garbage")
    os.chmod(bad, 0o600)
    with caplog.at_level("WARNING"):
        fallback = StreamPipeline(bundle, fs_in=ecg.fs, profile=bad)
    assert fallback.profile is None and fallback.profile_error.reason == "malformed"
    assert "bundle's defaults" in caplog.text
    plain = StreamPipeline(bundle, fs_in=ecg.fs)
    ev_fallback, ev_plain = _stream(fallback, ecg), _stream(plain, ecg)
    assert not any(e.personalized for e in ev_fallback)
    assert [e.probabilities for e in ev_fallback] == [e.probabilities for e in ev_plain]


def test_explicit_t_overrides_the_profile(bundle):
    p = StreamPipeline(bundle, fs_in=250.0, profile=make_profile(bundle, t=42), t=5)
    assert p.t == 5 and p.t_steps["raw"] == 5
    defaults = {m: t for m, t in bundle.manifest.default_t.items() if m != "raw"}
    assert {m: t for m, t in p.t_steps.items() if m != "raw"} == defaults  # profile: raw only


def _forge(path, change) -> None:
    """Edit a profile and recompute its checksum, as someone who can write the file could."""
    from sdk.calibration.profile import _digest

    data = json.loads(path.read_text())
    data.pop("sha256")
    change(data)
    path.write_text(json.dumps({**data, "sha256": _digest(data)}))
    os.chmod(path, 0o600)


@pytest.mark.parametrize(
    "change",
    [
        lambda d: d["t"].update({"raw": 999_999}),
        lambda d: d["t"].update({"raw": 3.9}),
        lambda d: d["t"].update({"ecg2": 5}),
        lambda d: d["head"].update({"classes": ["N", "A", "O", "X"]}),
        lambda d: d["head"].update({"scale": [0.0] * len(d["head"]["scale"])}),
        lambda d: d["head"]["bias"].__setitem__(0, 10**400),
    ],
    ids=["t-out-of-range", "t-not-int", "unknown-modality", "classes", "zero-scale", "huge-int"],
)
def test_a_profile_unusable_with_the_bundle_is_refused_and_the_stream_falls_back(
    bundle, tmp_path, change
):
    path = save_profile(make_profile(bundle), tmp_path / "p.json")
    _forge(path, change)
    with pytest.raises(ProfileError) as err:
        load_profile(path, bundle)
    assert err.value.reason == "malformed"
    pipe = StreamPipeline(bundle, fs_in=250.0, profile=path)
    assert pipe.profile is None and pipe.profile_error is not None


@pytest.mark.skipif(os.name != "posix", reason="symbolic links and modes are POSIX")
def test_a_symbolic_link_to_a_profile_is_refused(bundle, tmp_path):
    real = save_profile(make_profile(bundle), tmp_path / "real.json")
    link = tmp_path / "link.json"
    link.symlink_to(real)
    with pytest.raises(ProfileError, match="is a symbolic link") as err:
        load_profile(link, bundle)
    assert err.value.reason == "permissions"
    assert load_profile(real, bundle).user == "u1"


def test_a_profile_with_a_non_finite_head_is_neither_saved_nor_used(bundle, tmp_path):
    p = make_profile(bundle)
    p.head.mean[:5] = np.nan
    with pytest.raises(ProfileError) as err:
        save_profile(p, tmp_path / "nan.json")
    assert err.value.reason == "malformed" and not (tmp_path / "nan.json").exists()
    with pytest.raises(ProfileError, match="not all finite"):
        p.check_bundle(bundle)
    pipeline = StreamPipeline(bundle, fs_in=250.0, profile=p)
    assert pipeline.profile is None and "finite" in str(pipeline.profile_error)


def test_an_oversized_profile_file_is_refused_unread(tmp_path, monkeypatch):
    from sdk.calibration import profile as profile_module

    monkeypatch.setattr(profile_module, "MAX_PROFILE_BYTES", 1024)
    path = tmp_path / "big.json"
    path.write_bytes(b" " * 2048)
    os.chmod(path, 0o600)
    with pytest.raises(ProfileError, match="far smaller") as err:
        load_profile(path)
    assert err.value.reason == "malformed"


@pytest.mark.parametrize("field, value", [("weight", 1e300), ("scale", 1e-300)])
def test_a_head_no_fit_could_produce_is_refused(bundle, field, value):
    p = make_profile(bundle)
    getattr(p.head, field)[0] = value
    with pytest.raises(ProfileError) as err:
        p.check_bundle(bundle)
    assert err.value.reason == "malformed"


def test_a_profile_without_a_modalitys_t_says_the_bundles_default_is_used(bundle, caplog):
    """It was used silently with the bundle's default t for the modalities it lacks."""
    profile = make_profile(bundle)  # t of the raw embedder only; the bundle is multimodal
    pipeline = StreamPipeline(bundle, fs_in=250.0, profile=profile)
    assert pipeline.profile is profile and pipeline.t_steps["raw"] == 42
    assert "the user profile gives no t for spectrogram, lorenz" in caplog.text
    caplog.clear()
    StreamPipeline(bundle, fs_in=250.0, profile=profile, t={"spectrogram": 3, "lorenz": 4})
    assert "gives no t" not in caplog.text  # every modality's t given
