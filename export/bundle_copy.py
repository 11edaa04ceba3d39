"""A changed copy of a bundle, written all or nothing."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from export.errors import ExportError
from export.model_card import write_model_card
from export.publish import staged_bundle


@contextmanager
def bundle_copy(base_bundle: Path, out_dir: Path) -> Iterator[Path]:
    """A copy of ``base_bundle`` (``out_dir`` + ``.partial``) for the block to change.

    When the block ends, the model card is rendered from the copy's manifest, the copy is
    verified as a device would verify it and it replaces ``out_dir``
    (:func:`export.publish.staged_bundle`: ``out_dir`` must be absent or a bundle, and not
    inside or around ``base_bundle``; it may be ``base_bundle`` itself, changed in place). If
    the block or the check fails, the copy is removed and ``out_dir`` is left as it was.
    """
    require_diffecg(base_bundle)
    # changing a bundle in place (base = out) is safe: the copy is staged beside it
    same = Path(base_bundle).resolve() == Path(out_dir).resolve()
    with staged_bundle(out_dir, *([] if same else [base_bundle])) as tmp:
        shutil.copytree(base_bundle, tmp, dirs_exist_ok=True)
        yield tmp
        write_model_card(tmp)  # benchmark sections: `ecgedge bench … --card`


def require_diffecg(bundle_dir: Path) -> None:
    """Raise :class:`ExportError` unless ``bundle_dir`` is a DiffECG bundle (what a denoiser,
    a refitted head, anchors, an R-peak rule or the multimodal export build on), before any
    work."""
    try:
        manifest = json.loads((Path(bundle_dir) / "manifest.json").read_text())
    except (OSError, ValueError) as exc:
        raise ExportError(f"{bundle_dir}: no readable manifest.json ({exc})") from exc
    kind = (
        "a DiffAE-LRU bundle"
        if "streaming" in manifest
        else "a DACL bundle"
        if "front_end" in manifest
        else None
    )
    if kind is not None:
        raise ExportError(
            f"{bundle_dir} is {kind}: this export builds on a DiffECG bundle "
            "(ecgedge export --run <an ecgedge train run>)"
        )
