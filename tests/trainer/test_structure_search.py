"""The structure search reads the same stages the shipped extractor pools."""

from __future__ import annotations

import torch

from trainer.models.unet1d import DiffusionFeatureExtractor, UNet1d, UNetConfig
from trainer.structure_search import candidates, stage_outputs


def test_shipped_candidate_equals_the_deployed_extractor():
    cfg = UNetConfig(dims=(8, 16, 16), kernel_size=5, time_dim=16, groups=4, attn_heads=2)
    unet = UNet1d(cfg).eval()
    abar = torch.linspace(0.999, 0.01, 50)
    x0, noise = torch.randn(3, 1, 64), torch.randn(3, 1, 64)
    t = torch.tensor([0, 7, 30])
    a = abar[t].view(-1, 1, 1)
    stages = stage_outputs(unet, a.sqrt() * x0 + (1 - a).sqrt() * noise, t)
    shipped = candidates(len(cfg.dims))["encoder levels + 2 attention bottleneck layers (shipped)"]
    with torch.no_grad():
        deployed = DiffusionFeatureExtractor(unet.encoder, abar)(x0, t, noise)
    torch.testing.assert_close(torch.cat([stages[s] for s in shipped], dim=1), deployed)
    assert set(stages) == {"level1", "level2", "level3", "bottleneck1", "bottleneck2", "decoder"}
    assert all(set(parts) <= set(stages) for parts in candidates(len(cfg.dims)).values())


def test_token_output_pools_the_bottleneck():
    cfg = UNetConfig(dims=(8, 16), kernel_size=5, time_dim=16, groups=4, attn_heads=2)
    unet = UNet1d(cfg).eval()
    ext = DiffusionFeatureExtractor(unet.encoder, torch.linspace(0.999, 0.01, 20), n_tokens=4)
    x = torch.randn(2, 1, 32)
    with torch.no_grad():
        emb, tokens = ext(x, torch.tensor([1, 2]), torch.zeros_like(x))
        _, h, _ = unet.encoder(
            x * ext.abar[torch.tensor([1, 2])].sqrt().view(-1, 1, 1), torch.tensor([1, 2])
        )
    assert tokens.shape == (2, 16, 4)
    torch.testing.assert_close(tokens, h.reshape(2, 16, 4, 4).mean(-1))
    torch.testing.assert_close(
        emb,
        DiffusionFeatureExtractor(unet.encoder, ext.abar)(
            x, torch.tensor([1, 2]), torch.zeros_like(x)
        ),
    )


def test_choose_prefers_the_cheaper_of_tied_candidates():
    from trainer.structure_search import choose

    rows = {
        "with decoder": {
            "stages": ["level1", "bottleneck2", "decoder"],
            "inner_challenge_f1": 0.755,
            "dim": 9,
        },
        "encoder + bottleneck": {
            "stages": ["level1", "bottleneck2"],
            "inner_challenge_f1": 0.7515,
            "dim": 8,
        },
        "levels only": {"stages": ["level1", "level2"], "inner_challenge_f1": 0.72, "dim": 4},
    }
    assert choose(rows, 2) == "encoder + bottleneck"  # within 0.01 of the best, one stage less
    assert choose(rows, 2, tolerance=0.001) == "with decoder"
    assert choose(rows, 2, tolerance=0.05) == "levels only"
