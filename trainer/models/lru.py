"""Linear Recurrent Units and the Attention Reducer: DiffAE's semantic encoder.

LRU (Orvieto et al., "Resurrecting Recurrent Neural Networks for Long Sequences", 2023):
``x_k = Λ x_{k-1} + γ ⊙ (B u_k)``, ``y_k = Re(C x_k) + D ⊙ u_k`` with complex diagonal
``Λ = exp(-(exp(ν) + δ) + i exp(θ))``; ``δ = -ln(r_cap)`` bounds ``|Λ| ≤ r_cap < 1`` for any ν,
and ``γ = sqrt(1 - |Λ|²)`` normalizes the input. Complex numbers are carried as separate
real and imaginary float tensors so every graph exports to ONNX.

Training uses a chunked scan: inside a chunk of ``chunk`` steps the recurrence is a
lower-triangular Toeplitz product with the powers ``Λ^d``; across chunks one state is
carried (a short loop over L / chunk chunks). The same code with an initial state is the
streaming step: a block of ``chunk`` steps in, the last state out.

Attention Reducer (the DiffAE-LRU poster): ``A = W_a X``, ``V = W_v X``, ``S = softmax_t(A)``
per channel, ``z_i = Σ_t S_it V_it`` — a fixed-size embedding for any length. For streams the
reducer keeps per-block summaries ``(m, s, v)`` (running max, Σ exp(A - m), Σ exp(A - m) V)
that merge exactly, so a window of K blocks is reduced from K summaries.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from trainer.errors import ConfigError


@dataclass
class LRUConfig:
    """Geometry of the LRU encoder (saved with every checkpoint)."""

    patch: int = 4  # samples per recurrence step (non-overlapping strided conv)
    d_model: int = 64
    d_state: int = 64
    layers: int = 4
    emb_dim: int = 128
    chunk: int = 32  # scan chunk in steps; a 1 s hop at 128 Hz / patch 4 is one chunk
    r_min: float = 0.5  # |Λ| initialised uniformly (in squared radius) in [r_min, r_max]
    r_max: float = 0.95
    r_cap: float = 0.97  # hard bound on |Λ| for every parameter value
    max_phase: float = math.pi / 4
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 < self.r_min < self.r_max < self.r_cap < 1.0:
            raise ConfigError("need 0 < r_min < r_max < r_cap < 1", key="lru.r_cap")
        for key in ("patch", "d_model", "d_state", "layers", "emb_dim", "chunk"):
            if getattr(self, key) <= 0:
                raise ConfigError(f"lru.{key} must be positive", key=f"lru.{key}")

    @property
    def block_samples(self) -> int:
        """Samples per chunk: the hop the step model consumes."""
        return self.patch * self.chunk


def complex_powers(log_r: torch.Tensor, phase: torch.Tensor, n: int) -> tuple[torch.Tensor, ...]:
    """``Λ^d`` for d = 0 … n as (re, im), each (n+1, N), from log-modulus and phase."""
    d = torch.arange(n + 1, dtype=log_r.dtype, device=log_r.device)[:, None]
    mod = torch.exp(d * log_r[None])
    return mod * torch.cos(d * phase[None]), mod * torch.sin(d * phase[None])


def _cmul(ar: torch.Tensor, ai: torch.Tensor, br: torch.Tensor, bi: torch.Tensor) -> tuple:
    """Complex product of (re, im) pairs, broadcasting."""
    return ar * br - ai * bi, ar * bi + ai * br


def _ceinsum(
    eq: str, ar: torch.Tensor, ai: torch.Tensor, br: torch.Tensor, bi: torch.Tensor
) -> tuple:
    """Complex einsum of (re, im) pairs as one real einsum over stacked parts."""
    lhs, out = eq.split("->")
    a_idx, b_idx = lhs.split(",")
    p = torch.einsum(f"x{a_idx},y{b_idx}->xy{out}", torch.stack([ar, ai]), torch.stack([br, bi]))
    return p[0, 0] - p[1, 1], p[0, 1] + p[1, 0]


def _toeplitz(p_re: torch.Tensor, p_im: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Lower-triangular (n, n, N) kernel ``T[k, j] = p[k - j]`` for k ≥ j, else 0."""
    idx = torch.arange(n, device=p_re.device)
    diff = idx[:, None] - idx[None, :]
    mask = (diff >= 0).to(p_re.dtype)[..., None]
    return p_re[diff.clamp_min(0)] * mask, p_im[diff.clamp_min(0)] * mask


class LRU(nn.Module):
    """One LRU layer on (B, L, H) real inputs; L must be a multiple of ``chunk``."""

    def __init__(self, cfg: LRUConfig) -> None:
        super().__init__()
        h, n = cfg.d_model, cfg.d_state
        self.chunk = cfg.chunk
        self.delta = -math.log(cfg.r_cap)
        u1, u2 = torch.rand(n), torch.rand(n)
        r2 = u1 * (cfg.r_max**2 - cfg.r_min**2) + cfg.r_min**2
        decay = -0.5 * torch.log(r2) - self.delta  # exp(nu) = decay > 0
        self.nu_log = nn.Parameter(torch.log(decay.clamp_min(1e-4)))
        self.theta_log = nn.Parameter(torch.log(u2 * cfg.max_phase + 1e-3))
        self.b_re = nn.Parameter(torch.randn(n, h) / math.sqrt(2 * h))
        self.b_im = nn.Parameter(torch.randn(n, h) / math.sqrt(2 * h))
        self.c_re = nn.Parameter(torch.randn(h, n) / math.sqrt(n))
        self.c_im = nn.Parameter(torch.randn(h, n) / math.sqrt(n))
        self.d = nn.Parameter(torch.randn(h))

    def polar(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(log |Λ|, arg Λ), each (N,); log |Λ| ∈ [-(20 + δ), -δ] so 0 < |Λ| ≤ r_cap."""
        log_r = -(torch.exp(self.nu_log).clamp(max=20.0) + self.delta)
        return log_r, torch.exp(self.theta_log)

    def eigenvalues(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Λ as (re, im), each (N,)."""
        log_r, phase = self.polar()
        mod = torch.exp(log_r)
        return mod * torch.cos(phase), mod * torch.sin(phase)

    def inputs(self, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """γ ⊙ B u as (re, im): (B, L, N)."""
        lam_re, lam_im = self.eigenvalues()
        gamma = torch.sqrt(1.0 - (lam_re**2 + lam_im**2))
        return (u @ self.b_re.T) * gamma, (u @ self.b_im.T) * gamma

    def output(self, x_re: torch.Tensor, x_im: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        return x_re @ self.c_re.T - x_im @ self.c_im.T + u * self.d

    def forward(
        self, u: torch.Tensor, h_re: torch.Tensor, h_im: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``u`` (B, L, H), state (B, N) re/im → (y (B, L, H), last state re, im).

        Always in float32, also under mixed-precision autocast: the powers of Λ and the
        states carried over a window lose too much in float16."""
        with torch.autocast(u.device.type, enabled=False):
            u, h_re, h_im = u.float(), h_re.float(), h_im.float()
            b_re, b_im = self.inputs(u)
            x_re, x_im, h_re, h_im = self.scan(b_re, b_im, h_re, h_im)
            return self.output(x_re, x_im, u), h_re, h_im

    def scan(
        self, b_re: torch.Tensor, b_im: torch.Tensor, h_re: torch.Tensor, h_im: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        """Chunked scan of ``x_k = Λ x_{k-1} + b_k`` from state h: all states and the last.

        Two levels, no loop: inside each chunk a Toeplitz product with ``Λ^(k-j)``; across
        the Q chunks a Q × Q Toeplitz product with ``Λ^(c (q-q'))`` gives each chunk's end
        state, which enters the next chunk as ``Λ^(k+1) S``.
        """
        bsz, length, n = b_re.shape
        c = self.chunk
        if length % c:
            raise ValueError(f"sequence length {length} must be a multiple of chunk {c}")
        q = length // c
        log_r, phase = self.polar()
        p_re, p_im = complex_powers(log_r, phase, c)  # Λ^0 … Λ^c, (c+1, N)
        k_re, k_im = _toeplitz(p_re, p_im, c)  # (c, c, N)
        br, bi = b_re.reshape(bsz, q, c, n), b_im.reshape(bsz, q, c, n)
        loc_re, loc_im = _ceinsum("kjn,bqjn->bqkn", k_re, k_im, br, bi)
        g_re, g_im = complex_powers(c * log_r, c * phase, q)  # Λ^(c d), d = 0 … Q
        if q == 1:  # one chunk (the streaming step): its end state needs no chunk-level product
            s_re, s_im = loc_re[:, :, -1], loc_im[:, :, -1]
        else:
            t_re, t_im = _toeplitz(g_re, g_im, q)  # (Q, Q, N)
            s_re, s_im = _ceinsum("qpn,bpn->bqn", t_re, t_im, loc_re[:, :, -1], loc_im[:, :, -1])
        h0_re, h0_im = _cmul(g_re[1:, None], g_im[1:, None], h_re[None], h_im[None])  # (Q, B, N)
        s_re, s_im = s_re + h0_re.transpose(0, 1), s_im + h0_im.transpose(0, 1)  # chunk ends
        in_re = torch.cat([h_re[:, None], s_re[:, :-1]], dim=1)  # state entering chunk q
        in_im = torch.cat([h_im[:, None], s_im[:, :-1]], dim=1)
        c_re, c_im = _cmul(
            p_re[None, None, 1:], p_im[None, None, 1:], in_re[:, :, None], in_im[:, :, None]
        )
        x_re = (loc_re + c_re).reshape(bsz, length, n)
        x_im = (loc_im + c_im).reshape(bsz, length, n)
        return x_re, x_im, s_re[:, -1], s_im[:, -1]

    def sequential(self, u: torch.Tensor) -> torch.Tensor:
        """Reference: the recurrence one step at a time from a zero state (tests only)."""
        b_re, b_im = self.inputs(u)
        lam_re, lam_im = self.eigenvalues()
        h_re = torch.zeros(u.shape[0], b_re.shape[-1], dtype=u.dtype, device=u.device)
        h_im = torch.zeros_like(h_re)
        xs_re, xs_im = [], []
        for k in range(u.shape[1]):
            h_re, h_im = (
                lam_re * h_re - lam_im * h_im + b_re[:, k],
                lam_re * h_im + lam_im * h_re + b_im[:, k],
            )
            xs_re.append(h_re)
            xs_im.append(h_im)
        return self.output(torch.stack(xs_re, 1), torch.stack(xs_im, 1), u)


class LRUBlock(nn.Module):
    """Pre-norm residual block: LayerNorm → LRU → GELU → GLU projection → dropout, + input."""

    def __init__(self, cfg: LRUConfig) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(cfg.d_model)
        self.lru = LRU(cfg)
        self.proj = nn.Linear(cfg.d_model, 2 * cfg.d_model)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(
        self, u: torch.Tensor, h_re: torch.Tensor, h_im: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        y, h_re, h_im = self.lru(self.norm(u), h_re, h_im)
        return u + self.drop(F.glu(self.proj(F.gelu(y)), dim=-1)), h_re, h_im


class AttentionReducer(nn.Module):
    """``(B, L, C) → (B, C)``: per-channel softmax over time of ``W_a X`` weighting ``W_v X``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.w_a = nn.Linear(channels, channels, bias=False)
        self.w_v = nn.Linear(channels, channels, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = torch.softmax(self.w_a(x), dim=1)
        return (s * self.w_v(x)).sum(dim=1)

    def summary(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Mergeable summary of one block: (max m, Σ exp(A - m), Σ exp(A - m) V), each (B, C)."""
        a, v = self.w_a(x), self.w_v(x)
        m = a.amax(dim=1)
        e = torch.exp(a - m[:, None])
        return m, e.sum(dim=1), (e * v).sum(dim=1)

    @staticmethod
    def merge(m: torch.Tensor, s: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Embedding from K block summaries (B, K, C) each."""
        top = m.amax(dim=1, keepdim=True)
        w = torch.exp(m - top)
        return (w * v).sum(dim=1) / (w * s).sum(dim=1)


class LRUEncoder(nn.Module):
    """Semantic encoder: strided patch conv → LRU blocks → LayerNorm → Linear → reducer.

    ``forward(x)``: (B, 1, L) → (B, emb_dim), zero initial states; L a multiple of
    ``cfg.block_samples``.
    """

    def __init__(self, cfg: LRUConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.patch = nn.Conv1d(1, cfg.d_model, cfg.patch, stride=cfg.patch)
        self.blocks = nn.ModuleList([LRUBlock(cfg) for _ in range(cfg.layers)])
        self.norm = nn.LayerNorm(cfg.d_model)
        self.out = nn.Linear(cfg.d_model, cfg.emb_dim)
        self.reducer = AttentionReducer(cfg.emb_dim)

    def zero_states(self, batch: int) -> list[torch.Tensor]:
        p = self.out.weight
        z = torch.zeros(batch, self.cfg.d_state, device=p.device, dtype=p.dtype)
        return [z.clone() for _ in range(2 * self.cfg.layers)]

    def features(
        self, x: torch.Tensor, states: list[torch.Tensor]
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Per-step features (B, L/patch, emb_dim) and the new states [re0, im0, re1, ...]."""
        if x.shape[-1] % self.cfg.block_samples:
            raise ValueError(f"length {x.shape[-1]} must divide by {self.cfg.block_samples}")
        h = self.patch(x).transpose(1, 2)  # (B, L', d_model)
        new = []
        for i, block in enumerate(self.blocks):
            h, s_re, s_im = block(h, states[2 * i], states[2 * i + 1])
            new += [s_re, s_im]
        return self.out(self.norm(h)), new

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats, _ = self.features(x, self.zero_states(x.shape[0]))
        return self.reducer(feats)


class LRUStepModel(nn.Module):
    """Streaming form: one block of ``block_samples`` in, embedding of the last K blocks out.

    Inputs: ``x_block`` (B, 1, block_samples); ``state_re_i``/``state_im_i`` (B, N) per layer;
    ``red_m``, ``red_s``, ``red_v`` (B, K, C) reducer summaries of the previous K blocks (oldest
    first; an empty slot is m = -1e4, s = v = 0). Outputs: ``embedding`` (B, C), the new
    states and summaries (the oldest block dropped, this block appended).
    """

    EMPTY_M = -1.0e4

    def __init__(self, encoder: LRUEncoder, blocks_per_window: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.k = blocks_per_window

    def initial(self, batch: int) -> list[torch.Tensor]:
        c = self.encoder.cfg.emb_dim
        p = self.encoder.out.weight
        m = torch.full((batch, self.k, c), self.EMPTY_M, device=p.device, dtype=p.dtype)
        z = torch.zeros(batch, self.k, c, device=p.device, dtype=p.dtype)
        return [*self.encoder.zero_states(batch), m, z, z.clone()]

    def forward(self, x_block: torch.Tensor, *state: torch.Tensor) -> tuple[torch.Tensor, ...]:
        n = 2 * self.encoder.cfg.layers
        lru_states, (m, s, v) = list(state[:n]), state[n : n + 3]
        feats, new_states = self.encoder.features(x_block, lru_states)
        bm, bs, bv = self.encoder.reducer.summary(feats)
        m = torch.cat([m[:, 1:], bm[:, None]], dim=1)
        s = torch.cat([s[:, 1:], bs[:, None]], dim=1)
        v = torch.cat([v[:, 1:], bv[:, None]], dim=1)
        return (AttentionReducer.merge(m, s, v), *new_states, m, s, v)


def warm_reference(encoder: LRUEncoder, x: torch.Tensor, window_samples: int) -> torch.Tensor:
    """What the step model emits after streaming all of ``x`` (B, 1, L) from a zero state:
    LRU features over the whole stream, the reducer over its last ``window_samples`` samples.

    The whole-window model (:meth:`LRUEncoder.forward`) is the special case L = window: it
    starts the recurrences from zero at the window's first sample, whereas a continuing
    stream carries the states of everything before the window into it.
    """
    feats, _ = encoder.features(x, encoder.zero_states(x.shape[0]))
    return encoder.reducer(feats[:, -(window_samples // encoder.cfg.patch) :])
