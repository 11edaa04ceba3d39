"""The four CD-ECGNet losses (L_sup, L_rec, L_cont, L_cons) and the E_noise term.

Everything is in the standardized units of each input window. Our X is itself synthesized
from clean records, so the ground truth of every lead is known: L_sup supervises every lead of
X_S and the noisy leads of X (the paper, with unpaired wearable data, can only use X's clean
leads); L_rec keeps X's clean leads unchanged, as in the paper.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from trainer.models.cdecgnet import CDECGNet, Discriminator


@dataclass
class Losses:
    sup: torch.Tensor
    rec: torch.Tensor
    cont: torch.Tensor
    cons: torch.Tensor
    noise: torch.Tensor

    def total(self, lambda_cons: float, w_noise: float) -> torch.Tensor:
        return self.sup + self.rec + self.cont + lambda_cons * self.cons + w_noise * self.noise

    def as_dict(self) -> dict[str, float]:
        return {k: float(v.detach()) for k, v in vars(self).items()}


def _masked_l1(y: torch.Tensor, t: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Sum of |y − t| over the leads where ``mask`` (B, leads) holds, and how many values."""
    m = mask[..., None].to(y.dtype)
    return ((y - t).abs() * m).sum(), int(mask.sum()) * y.shape[-1]


def contrastive_loss(feats: torch.Tensor, noisy: torch.Tensor, temperature: float) -> torch.Tensor:
    """1 − log(exp(s_cc/σ) / exp(s_cn/σ)) over the lead features of the whole batch.

    ``s_cc`` is the mean cosine similarity between distinct clean-lead features, ``s_cn`` the
    mean between clean and noisy ones; 0 when the batch lacks either kind.
    """
    f = F.normalize(feats.reshape(-1, feats.shape[-1]), dim=-1)
    is_noisy = noisy.reshape(-1)
    clean, dirty = f[~is_noisy], f[is_noisy]
    if clean.shape[0] < 2 or dirty.shape[0] < 1:
        return feats.sum() * 0.0
    cc = clean @ clean.T
    n = clean.shape[0]
    s_cc = (cc.sum() - cc.diagonal().sum()) / (n * (n - 1))
    s_cn = (clean @ dirty.T).mean()
    return 1.0 - (s_cc - s_cn) / temperature


def generator_losses(
    net: CDECGNet,
    dis: Discriminator,
    x: torch.Tensor,
    xs: torch.Tensor,
    target_x: torch.Tensor,
    target_xs: torch.Tensor,
    noisy_x: torch.Tensor,
    temperature: float,
) -> tuple[Losses, torch.Tensor, torch.Tensor]:
    """The generator's losses, and the content codes (c, c_S) for the discriminator step."""
    feats_x, lead_x = net.encode(x)
    feats_s, lead_s = net.encode(xs)
    y_x = net.decode(x, feats_x, lead_x)
    y_s = net.decode(xs, feats_s, lead_s)
    all_s = torch.ones_like(noisy_x)
    sup_s, n_s = _masked_l1(y_s, target_xs, all_s)
    sup_x, n_x = _masked_l1(y_x, target_x, noisy_x)
    rec, n_rec = _masked_l1(y_x, target_x, ~noisy_x)
    c, c_s = feats_x[-1], feats_s[-1]
    cons = ((dis(c) - 0.0) ** 2 + (dis(c_s) - 1.0) ** 2).mean()  # labels swapped: fool Dis
    noise = F.l1_loss(net.noise_of(x), x - target_x) + F.l1_loss(net.noise_of(xs), xs - target_xs)
    losses = Losses(
        sup=(sup_s + sup_x) / max(n_s + n_x, 1),
        rec=rec / max(n_rec, 1),
        cont=contrastive_loss(lead_x, noisy_x, temperature),
        cons=cons,
        noise=noise,
    )
    return losses, c.detach(), c_s.detach()


def discriminator_loss(dis: Discriminator, c: torch.Tensor, c_s: torch.Tensor) -> torch.Tensor:
    """Least squares: Dis(c) → l = 1, Dis(c_S) → l_S = 0."""
    return ((dis(c) - 1.0) ** 2 + dis(c_s) ** 2).mean()
