"""Export-time ("lean") forms of a trained LRU encoder: same math, few graph nodes.

The training modules (:mod:`trainer.models.lru`) recompute every parameter-only quantity on
each call (Λ from ν and θ, its powers, γ, the Toeplitz kernels) and carry complex numbers as
separate real/imaginary tensors; exported as is, each graph has hundreds of small nodes and
per-node overhead dominates its run time. The modules here are built once from a trained
:class:`~trainer.models.lru.LRUEncoder` and hold all of it as constant buffers, computed in
float64 and stored as float32:

- the strided patch convolution as one matrix on (L', patch) rows;
- per layer, γ folded into B as one real (H → 2N) matrix ``[γB_re | γB_im]``; the complex
  state packed as one real vector ``[re | im]`` (2N); multiplication by ``Λ^d`` as a real
  2 × 2 block per state dimension; the in-chunk Toeplitz kernel with the state entering the
  chunk as an extra step (``x_k = Σ_{j' ≤ k+1} Λ^{k+1-j'} a_{j'}``, ``a_0`` = entering state,
  ``a_{j+1} = γBu_j``), so one batched MatMul (one (2(c+1) → 2c) matrix per state
  dimension) gives all states of a chunk; for a whole window the chunk-end kernel
  ``Λ^(c-1-j)`` and the chunk-carry kernel ``Λ^(c(q-1-p))`` (p < q), two more small batched
  MatMuls; C as one real (2N → H) matrix ``[C_re; -C_im]``;
- the output Linear folded into the Attention Reducer's ``W_a`` and ``W_v`` (one matrix).

No Einsum: ONNX Runtime's CPU Einsum took ~0.65 ms for the step's Toeplitz product alone
(one thread) against ~0.03 ms for Transpose → batched MatMul → Transpose. Tensors are kept 2-D
(rows = batch · time) where possible so ONNX Runtime fuses MatMul + bias into Gemm.

:class:`LeanWindowEmbedder` equals ``LRUEncoder.forward`` with the SDK's (x, t, noise)
interface; :class:`LeanStepModel` equals :class:`~trainer.models.lru.LRUStepModel` with the
states packed into two tensors (:func:`pack_step_state`).
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn import functional as F

from trainer.models.lru import LRU, LRUBlock, LRUEncoder, LRUStepModel


def _rot(log_r: torch.Tensor, phase: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """Real 2 × 2 blocks of ``Λ^d``: (*d.shape, 2, 2, N); ``out[r] = Σ_s M[r, s] in[s]``."""
    d = d[..., None]
    mod = torch.exp(d * log_r)
    re, im = mod * torch.cos(d * phase), mod * torch.sin(d * phase)
    return torch.stack([torch.stack([re, -im], -2), torch.stack([im, re], -2)], -3)


def _lower(kernel: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Zero the blocks of ``kernel`` (A, B, 2, 2, N) where ``keep`` (A, B) is False."""
    return kernel * keep[..., None, None, None].to(kernel.dtype)


class LeanLRULayer(nn.Module):
    """One :class:`~trainer.models.lru.LRUBlock` on ``chunks`` chunks with constant buffers.

    ``forward(h, state)``: ``h`` (B · chunks · chunk, H), rows in time order per batch item;
    ``state`` (B, 1, 2N) the packed state entering the first chunk, or None for a zero state.
    Returns the block output (same shape as ``h``) and the packed last state (B, 1, 2N), or
    None with a zero initial state (the whole-window form needs no state out).
    """

    def __init__(self, block: LRUBlock, chunks: int) -> None:
        super().__init__()
        lru: LRU = block.lru
        self.c, self.q = lru.chunk, chunks
        self.n = int(lru.nu_log.shape[0])
        self.norm = copy.deepcopy(block.norm)
        self.proj = copy.deepcopy(block.proj)
        f64 = copy.deepcopy(lru).double()
        with torch.no_grad():
            log_r, phase = f64.polar()
            gamma = torch.sqrt(1.0 - torch.exp(2.0 * log_r))
            w_in = torch.cat([(f64.b_re * gamma[:, None]).T, (f64.b_im * gamma[:, None]).T], 1)
            k = torch.arange(self.c, dtype=torch.float64)
            j = torch.arange(self.c + 1, dtype=torch.float64)
            diff = k[:, None] + 1 - j[None]  # (c, c+1): power of Λ from a_j' to x_k
            kernel = _lower(_rot(log_r, phase, diff.clamp_min(0)), diff >= 0)
            q = torch.arange(chunks, dtype=torch.float64)
            carry_pow = self.c * (q[:, None] - 1 - q[None])  # (Q, Q)
            carry = _lower(_rot(log_r, phase, carry_pow.clamp_min(0)), carry_pow >= 0)
            ends = _rot(log_r, phase, self.c - 1 - k)  # (c, 2, 2, N)
            c_out = torch.cat([f64.c_re.T, -f64.c_im.T], 0)  # (2N, H)
        # per state dimension n, matrices on rows ordered (time, re/im): (N, in, out)
        kernel = kernel.permute(4, 1, 3, 0, 2).reshape(self.n, 2 * (self.c + 1), 2 * self.c)
        ends = ends.permute(3, 0, 2, 1).reshape(self.n, 2 * self.c, 2)
        carry = carry.permute(4, 1, 3, 0, 2).reshape(self.n, 2 * chunks, 2 * chunks)
        for name, value in (
            ("w_in", w_in),
            ("kernel", kernel),
            ("carry", carry),
            ("ends", ends),
            ("c_out", c_out),
            ("d", f64.d.detach()),
        ):
            self.register_buffer(name, value.float().contiguous())

    def forward(
        self, h: torch.Tensor, state: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        c, q, n = self.c, self.q, self.n
        u = self.norm(h)
        b = u @ self.w_in  # (B·L, 2N): [re | im] of γ B u
        if state is None:  # zero state: chunk q is entered by Σ_{p<q} Λ^(c(q-1-p)) end_p
            bt = b.reshape(-1, q, c, 2, n).permute(4, 0, 1, 2, 3).reshape(n, -1, 2 * c)
            e = (bt @ self.ends).reshape(n, -1, 2 * q)  # chunk ends from zero, (N, B, 2Q)
            a = torch.cat([(e @ self.carry).reshape(n, -1, 2), bt], -1)
        else:
            a = torch.cat([state, b.reshape(-1, c, 2 * n)], 1).reshape(-1, c + 1, 2, n)
            a = a.permute(3, 0, 1, 2).reshape(n, -1, 2 * (c + 1))
        x = (a @ self.kernel).reshape(n, -1, 2).permute(1, 2, 0).reshape(-1, 2 * n)
        y = x @ self.c_out + u * self.d
        last = None if state is None else x.reshape(-1, c, 2 * n)[:, -1:]
        return h + F.glu(self.proj(F.gelu(y)), dim=-1), last


class _LeanTrunk(nn.Module):
    """Patch matrix, lean layers, final LayerNorm and the reducer's folded (H → 2C) matrix."""

    def __init__(self, encoder: LRUEncoder, chunks: int) -> None:
        super().__init__()
        cfg = encoder.cfg
        self.patch, self.steps, self.emb = cfg.patch, chunks * cfg.chunk, cfg.emb_dim
        self.layers = nn.ModuleList([LeanLRULayer(b, chunks) for b in encoder.blocks])
        self.norm = copy.deepcopy(encoder.norm)
        with torch.no_grad():
            w_o, b_o = encoder.out.weight.double(), encoder.out.bias.double()
            w_a, w_v = encoder.reducer.w_a.weight.double(), encoder.reducer.w_v.weight.double()
            w_av = torch.cat([(w_a @ w_o).T, (w_v @ w_o).T], 1)  # (H, 2C)
            b_av = torch.cat([w_a @ b_o, w_v @ b_o])
            w_p = encoder.patch.weight[:, 0, :].T  # (patch, H)
        self.register_buffer("w_patch", w_p.detach().float().contiguous())
        self.register_buffer("b_patch", encoder.patch.bias.detach().float().clone())
        self.register_buffer("w_av", w_av.float().contiguous())
        self.register_buffer("b_av", b_av.float())

    def attention(
        self, x: torch.Tensor, states: list[torch.Tensor | None]
    ) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor | None]]:
        """``x`` (B, 1, steps · patch) → reducer logits A and values V (B, steps, C) and the
        layers' last states."""
        h = x.reshape(-1, self.patch) @ self.w_patch + self.b_patch  # (B·steps, H)
        last = []
        for layer, s in zip(self.layers, states):
            h, s_out = layer(h, s)
            last.append(s_out)
        av = (self.norm(h) @ self.w_av + self.b_av).reshape(-1, self.steps, 2 * self.emb)
        return av[..., : self.emb], av[..., self.emb :], last


class LeanWindowEmbedder(nn.Module):
    """Whole-window embedder ``(x, t, noise) → embedding`` equal to ``LRUEncoder.forward``
    (zero initial states) for windows of ``window`` samples; ``t`` and ``noise`` are ignored
    (kept as graph inputs through a term multiplied by zero, as in
    :class:`~trainer.models.diffae.LRUEmbedder`)."""

    def __init__(self, encoder: LRUEncoder, window: int) -> None:
        super().__init__()
        if window % encoder.cfg.block_samples:
            raise ValueError(f"window {window} must divide by {encoder.cfg.block_samples}")
        self.trunk = _LeanTrunk(encoder, window // encoder.cfg.block_samples)

    def forward(self, x: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        a, v, _ = self.trunk.attention(x, [None] * len(self.trunk.layers))
        emb = (torch.softmax(a, dim=1) * v).sum(dim=1)
        return emb + (noise[:, 0, :1] * t[:, None].to(x.dtype)) * 0.0


class LeanStepModel(nn.Module):
    """Streaming step equal to :class:`~trainer.models.lru.LRUStepModel`, states packed.

    ``forward(x_block, lru_state, reducer)``: ``x_block`` (B, 1, block_samples);
    ``lru_state`` (B, layers, 2N), per layer ``[re | im]`` of the LRU state; ``reducer``
    (B, K, 3, C), per block of the last K (oldest first) the summary (m, s, v) — an empty slot
    is m = -1e4, s = v = 0. Returns ``embedding`` (B, C), the new ``lru_state`` and
    ``reducer`` (oldest block dropped, this block appended).
    """

    def __init__(self, encoder: LRUEncoder, blocks_per_window: int) -> None:
        super().__init__()
        self.trunk = _LeanTrunk(encoder, 1)
        self.k, self.layers = blocks_per_window, encoder.cfg.layers

    def forward(
        self, x_block: torch.Tensor, lru_state: torch.Tensor, reducer: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        states = list(torch.split(lru_state, 1, dim=1))
        a, v, last = self.trunk.attention(x_block, states)
        m = a.amax(dim=1, keepdim=True)
        e = torch.exp(a - m)
        block = torch.cat([m, e.sum(1, keepdim=True), (e * v).sum(1, keepdim=True)], 1)
        red = torch.cat([reducer[:, 1:], block.reshape(-1, 1, 3, self.trunk.emb)], 1)
        m_all = red[:, :, :1]
        w = torch.exp(m_all - m_all.amax(dim=1, keepdim=True))
        sv = (w * red[:, :, 1:]).sum(dim=1)  # (B, 2, C): Σ w s, Σ w v
        return sv[:, 1] / sv[:, 0], torch.cat(last, 1), red

    def initial(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Zero LRU states and an empty reducer window."""
        n2 = self.trunk.layers[0].w_in.shape[1]
        red = torch.zeros(batch, self.k, 3, self.trunk.emb)
        red[:, :, 0] = LRUStepModel.EMPTY_M
        return torch.zeros(batch, self.layers, n2), red


def pack_step_state(state: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """:class:`LRUStepModel` state ``[re0, im0, re1, im1, …, m, s, v]`` → (lru_state, reducer)."""
    lru = torch.stack(
        [torch.cat([state[i], state[i + 1]], -1) for i in range(0, len(state) - 3, 2)], 1
    )
    return lru, torch.stack(state[-3:], 2)


def unpack_step_state(lru_state: torch.Tensor, reducer: torch.Tensor) -> list[torch.Tensor]:
    """Inverse of :func:`pack_step_state`."""
    n = lru_state.shape[-1] // 2
    out = []
    for i in range(lru_state.shape[1]):
        out += [lru_state[:, i, :n], lru_state[:, i, n:]]
    return [*out, *reducer.unbind(2)]
