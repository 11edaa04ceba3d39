"""The lean export-time LRU modules equal the training modules (float32 rounding only)."""

from __future__ import annotations

import pytest
import torch

from trainer.models.lru import LRUConfig, LRUEncoder, LRUStepModel, warm_reference
from trainer.models.lru_lean import (
    LeanStepModel,
    LeanWindowEmbedder,
    pack_step_state,
    unpack_step_state,
)

#: max |lean − training| / max |training|, float32
TOL = 1e-5

SMALL = LRUConfig(patch=8, chunk=16, d_model=16, d_state=12, layers=2, emb_dim=24)
ODD = LRUConfig(patch=4, chunk=8, d_model=12, d_state=7, layers=3, emb_dim=10, r_max=0.96)


def _rel(ref: torch.Tensor, other: torch.Tensor) -> float:
    return float((ref - other).abs().max() / ref.abs().max())


def _encoder(cfg: LRUConfig, seed: int = 0) -> LRUEncoder:
    torch.manual_seed(seed)
    return LRUEncoder(cfg).eval()


@pytest.mark.parametrize(("cfg", "blocks"), [(SMALL, 1), (SMALL, 4), (ODD, 7)])
def test_lean_window_embedder_equals_encoder_forward(cfg: LRUConfig, blocks: int) -> None:
    enc = _encoder(cfg)
    window = blocks * cfg.block_samples
    x = torch.randn(3, 1, window)
    t = torch.tensor([0, 5, 9])
    with torch.no_grad():
        ref = enc(x)
        lean = LeanWindowEmbedder(enc, window)(x, t, torch.randn_like(x))
    assert lean.shape == ref.shape
    assert _rel(ref, lean) <= TOL


def test_lean_window_embedder_with_extreme_eigenvalues() -> None:
    """|Λ| near the cap (slow decay) and |Λ| ≈ 0 (powers underflow) in one layer."""
    enc = _encoder(SMALL, 1)
    with torch.no_grad():
        lru = enc.blocks[0].lru
        lru.nu_log[: SMALL.d_state // 2] = -30.0  # |Λ| → r_cap
        lru.nu_log[SMALL.d_state // 2 :] = 5.0  # |Λ| = exp(-(20 + δ))
        lru.theta_log.normal_(0, 2)
        x = torch.randn(2, 1, 6 * SMALL.block_samples)
        ref = enc(x)
        lean = LeanWindowEmbedder(enc, x.shape[-1])(x, torch.zeros(2, dtype=torch.long), x * 0)
    assert _rel(ref, lean) <= TOL


@pytest.mark.parametrize("cfg", [SMALL, ODD])
def test_lean_step_model_equals_training_step_model(cfg: LRUConfig) -> None:
    enc = _encoder(cfg, 2)
    k, n_blocks, hop = 3, 8, cfg.block_samples
    x = torch.randn(2, 1, n_blocks * hop)
    ref_model, lean_model = LRUStepModel(enc, k), LeanStepModel(enc, k)
    ref_state = ref_model.initial(2)
    lru_state, reducer = lean_model.initial(2)
    with torch.no_grad():
        for b in range(n_blocks):
            block = x[..., b * hop : (b + 1) * hop]
            ref = ref_model(block, *ref_state)
            ref_state = list(ref[1:])
            emb, lru_state, reducer = lean_model(block, lru_state, reducer)
            assert _rel(ref[0], emb) <= TOL
            packed = pack_step_state(ref_state)
            assert _rel(packed[0], lru_state) <= TOL
            assert _rel(packed[1], reducer) <= TOL
        warm = warm_reference(enc, x, k * hop)
    assert _rel(warm, emb) <= TOL


def test_lean_step_initial_state_is_the_packed_training_initial_state() -> None:
    enc = _encoder(SMALL)
    lean = LeanStepModel(enc, 5).initial(2)
    packed = pack_step_state(LRUStepModel(enc, 5).initial(2))
    assert lean[0].shape == (2, SMALL.layers, 2 * SMALL.d_state)
    assert lean[1].shape == (2, 5, 3, SMALL.emb_dim)
    assert torch.equal(lean[0], packed[0]) and torch.equal(lean[1], packed[1])


def test_pack_and_unpack_are_inverse() -> None:
    state = [torch.randn(2, SMALL.d_state) for _ in range(2 * SMALL.layers)]
    state += [torch.randn(2, 4, SMALL.emb_dim) for _ in range(3)]
    lru_state, reducer = pack_step_state(state)
    assert lru_state.shape == (2, SMALL.layers, 2 * SMALL.d_state)
    assert torch.equal(lru_state[:, 1, : SMALL.d_state], state[2])  # layer 1, re
    assert torch.equal(lru_state[:, 1, SMALL.d_state :], state[3])  # layer 1, im
    for a, b in zip(unpack_step_state(lru_state, reducer), state):
        assert torch.equal(a, b)


def test_lean_constants_do_not_track_later_parameter_changes() -> None:
    """The lean module is a snapshot: built once from trained weights."""
    enc = _encoder(SMALL)
    x = torch.randn(1, 1, 2 * SMALL.block_samples)
    lean = LeanWindowEmbedder(enc, x.shape[-1])
    with torch.no_grad():
        before = lean(x, torch.zeros(1, dtype=torch.long), x * 0)
        enc.blocks[0].lru.c_re.mul_(2.0)
        assert torch.equal(lean(x, torch.zeros(1, dtype=torch.long), x * 0), before)
        assert _rel(enc(x), before) > TOL


def test_lean_window_rejects_length_not_multiple_of_block() -> None:
    with pytest.raises(ValueError, match="divide"):
        LeanWindowEmbedder(_encoder(SMALL), SMALL.block_samples + 8)
