"""A changed copy of a bundle, written all or nothing."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from export.model_card import write_model_card
from sdk.bundle import load_bundle


@contextmanager
def bundle_copy(base_bundle: Path, out_dir: Path) -> Iterator[Path]:
    """A copy of ``base_bundle`` (``out_dir`` + ``.partial``) for the block to change.

    When the block ends, the model card is rendered from the copy's manifest, the copy is
    verified as a device would verify it (:func:`sdk.bundle.load_bundle`) and it replaces
    ``out_dir``. If the block or the check fails, the copy is removed and ``out_dir`` is left
    as it was.
    """
    tmp = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        shutil.copytree(base_bundle, tmp)
        yield tmp
        write_model_card(tmp)  # benchmark sections: `ecgedge bench … --card`
        load_bundle(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)
