"""LRU scan, eigenvalues, step model and the Attention Reducer."""

from __future__ import annotations

import pytest
import torch

from trainer.errors import ConfigError
from trainer.models.diffae import DiffAE, LRUEmbedder
from trainer.models.lru import (
    LRU,
    AttentionReducer,
    LRUConfig,
    LRUEncoder,
    LRUStepModel,
    warm_reference,
)
from trainer.models.unet1d import UNetConfig

SMALL = LRUConfig(patch=8, chunk=16, d_model=16, d_state=12, layers=2, emb_dim=24)


def _encoder(seed: int = 0, cfg: LRUConfig = SMALL) -> LRUEncoder:
    torch.manual_seed(seed)
    return LRUEncoder(cfg).eval()


def test_chunked_scan_equals_sequential_recurrence() -> None:
    torch.manual_seed(0)
    lru = LRU(LRUConfig(d_model=8, d_state=6, chunk=8))
    u = torch.randn(3, 40, 8)
    h = torch.zeros(3, 6)
    y, _, _ = lru(u, h, h.clone())
    ref = lru.sequential(u)
    assert torch.allclose(y, ref, atol=1e-5 * float(ref.abs().max()))


def test_scan_from_a_state_continues_the_sequence() -> None:
    torch.manual_seed(1)
    lru = LRU(LRUConfig(d_model=8, d_state=6, chunk=8))
    u = torch.randn(2, 48, 8)
    z = torch.zeros(2, 6)
    y_all, _, _ = lru(u, z, z.clone())
    y1, h_re, h_im = lru(u[:, :16], z, z.clone())
    y2, _, _ = lru(u[:, 16:], h_re, h_im)
    assert torch.allclose(torch.cat([y1, y2], 1), y_all, atol=1e-5)


def test_scan_rejects_length_not_multiple_of_chunk() -> None:
    lru = LRU(LRUConfig(d_model=4, d_state=4, chunk=8))
    z = torch.zeros(1, 4)
    with pytest.raises(ValueError, match="multiple of chunk"):
        lru(torch.randn(1, 12, 4), z, z.clone())


@pytest.mark.parametrize("nu_log", [-30.0, 0.0, 5.0])
def test_eigenvalues_inside_unit_circle_for_any_parameter(nu_log: float) -> None:
    cfg = LRUConfig(r_cap=0.95, r_max=0.9)
    lru = LRU(cfg)
    with torch.no_grad():
        lru.nu_log.fill_(nu_log)
        lru.theta_log.normal_(0, 3)
    re, im = lru.eigenvalues()
    modulus = torch.sqrt(re**2 + im**2)
    assert bool((modulus <= cfg.r_cap + 1e-6).all()) and bool((modulus > 0).all())
    z = torch.zeros(2, cfg.d_state)
    y, h_re, _ = lru(torch.randn(2, 2 * cfg.chunk, cfg.d_model), z, z.clone())
    assert bool(torch.isfinite(y).all()) and bool(torch.isfinite(h_re).all())


def test_initial_eigenvalues_in_configured_ring() -> None:
    cfg = LRUConfig(r_min=0.6, r_max=0.9, r_cap=0.95, d_state=256)
    re, im = LRU(cfg).eigenvalues()
    modulus = torch.sqrt(re**2 + im**2)
    assert float(modulus.min()) >= 0.6 - 1e-4 and float(modulus.max()) <= 0.9 + 1e-4


def test_config_rejects_unstable_cap() -> None:
    with pytest.raises(ConfigError):
        LRUConfig(r_cap=1.0)


def test_step_model_equals_whole_window_model() -> None:
    enc = _encoder()
    k = 5
    x = torch.randn(2, 1, k * SMALL.block_samples)
    step = LRUStepModel(enc, k)
    state = step.initial(2)
    with torch.no_grad():
        for b in range(k):
            out = step(x[..., b * SMALL.block_samples : (b + 1) * SMALL.block_samples], *state)
            state = list(out[1:])
        whole = enc(x)
    assert torch.allclose(out[0], whole, atol=1e-5 * float(whole.abs().max()))


def test_step_model_on_a_continuing_stream_equals_warm_reference() -> None:
    enc = _encoder(2)
    k, n_blocks = 4, 11
    x = torch.randn(1, 1, n_blocks * SMALL.block_samples)
    step = LRUStepModel(enc, k)
    state = step.initial(1)
    with torch.no_grad():
        for b in range(n_blocks):
            out = step(x[..., b * SMALL.block_samples : (b + 1) * SMALL.block_samples], *state)
            state = list(out[1:])
        ref = warm_reference(enc, x, k * SMALL.block_samples)
        cold = enc(x[..., -k * SMALL.block_samples :])
    assert torch.allclose(out[0], ref, atol=1e-5 * float(ref.abs().max()))
    assert not torch.allclose(out[0], cold, atol=1e-5)  # the carried state matters


def test_attention_reducer_size_independent_of_length() -> None:
    red = AttentionReducer(12)
    assert red(torch.randn(3, 7, 12)).shape == red(torch.randn(3, 301, 12)).shape == (3, 12)


def test_attention_reducer_invariant_to_time_permutation() -> None:
    torch.manual_seed(0)
    red = AttentionReducer(10)
    x = torch.randn(2, 50, 10)
    perm = torch.randperm(50)
    assert torch.allclose(red(x), red(x[:, perm]), atol=1e-5)


def test_encoder_is_order_sensitive_through_the_recurrence() -> None:
    enc = _encoder(3)
    x = torch.randn(1, 1, 2 * SMALL.block_samples)
    with torch.no_grad():
        assert not torch.allclose(enc(x), enc(torch.flip(x, dims=[-1])), atol=1e-4)


def test_reducer_summaries_merge_exactly() -> None:
    torch.manual_seed(0)
    red = AttentionReducer(6)
    x = torch.randn(2, 30, 6)
    parts = [red.summary(x[:, i : i + 10]) for i in (0, 10, 20)]
    m, s, v = (torch.stack([p[j] for p in parts], 1) for j in range(3))
    assert torch.allclose(AttentionReducer.merge(m, s, v), red(x), atol=1e-5)


def test_diffae_trains_one_step() -> None:
    torch.manual_seed(0)
    model = DiffAE(UNetConfig(dims=(8, 16), time_dim=16), SMALL)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x0 = torch.randn(2, 1, 2 * SMALL.block_samples)
    t = torch.tensor([3, 400])
    eps = torch.randn_like(x0)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    loss = torch.mean((model(x0 + eps, t, x0) - eps) ** 2)
    loss.backward()
    assert torch.isfinite(loss)
    nu_log = model.encoder.blocks[0].lru.nu_log
    assert nu_log.grad is not None and nu_log.grad.abs().sum() > 0  # trained jointly, via z
    opt.step()
    assert not torch.equal(nu_log.detach(), before["encoder.blocks.0.lru.nu_log"])
    changed = {
        n.split(".")[0] for n, p in model.named_parameters() if not torch.equal(p, before[n])
    }
    assert changed == {"unet", "encoder", "z_proj"}


def test_embedder_ignores_t_and_noise() -> None:
    emb = LRUEmbedder(_encoder())
    x = torch.randn(2, 1, 2 * SMALL.block_samples)
    with torch.no_grad():
        a = emb(x, torch.tensor([1, 2]), torch.randn_like(x))
        b = emb(x, torch.tensor([50, 9]), torch.randn_like(x))
    assert a.shape == (2, SMALL.emb_dim) and torch.equal(a, b)


def test_starting_states_are_made_where_the_model_lives() -> None:
    """Zero states follow the model's device and dtype (a CUDA model got CPU tensors)."""
    enc = LRUEncoder(SMALL).to(dtype=torch.float64, device="meta")
    for z in [*enc.zero_states(2), *LRUStepModel(enc, 4).initial(2)]:
        assert z.device.type == "meta" and z.dtype == torch.float64


def test_an_lru_layer_ignores_mixed_precision_autocast():
    """Under float16 autocast (a CUDA AMP training step; float16 autocast on the CPU here) an
    LRU layer still computes in float32: the same result as without autocast."""
    torch.manual_seed(0)
    lru = LRU(LRUConfig(d_model=16, d_state=16, chunk=8))
    u = torch.randn(2, 64, 16)
    h = torch.zeros(2, 16)
    ref = lru(u, h, h)
    with torch.autocast("cpu", dtype=torch.float16):
        got = lru(u, h, h)
    for a, b in zip(ref, got):
        assert b.dtype == torch.float32
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
