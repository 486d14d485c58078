"""Firebolt-VL in PyTorch, written for this project from the model description in docs/model.md.

Module and parameter names follow the released checkpoints, so `state_dict_released()` is exactly the layout
`fbconvert` reads from a real release (`model_type: fireboltlm`):
  base_lm.model.*                                 LFM2 decoder (lm_head tied to embed_tokens)
  model.vision_encoder.encoder.model.vision_model.*   SigLIP vision tower with its attention-pooling head
  model.fuser.fuser.model.*                       Cross-Modal Modulator (token-grid correlation, FiLM, S4)
  model.fuser.fuser.importance.*, model.projector.*   present in the released class, unused on this path

The S4 block is kept in its DPLR parametrisation (inv_dt, A_real, A_imag, B, C, P, D). Training uses the true
output row C; the released layout stores C-tilde = C (I - dA^L) for L = l_kernel = 512, which is what the
authors' code holds after its first forward pass. `s4_c_tilde` / `s4_c_from_tilde` convert between the two.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

GRID_TILE = 128        # four 128x128 tiles of the 256x256 image ...
GRID_STRIDE = 126      # ... at this stride (2 pixels of overlap), after the global view
CMM_HEADS, CMM_HEAD_DIM, CMM_TOPK = 4, 32, 4
S4_L_KERNEL = 512


@dataclass
class TextConfig:
    vocab_size: int
    hidden_size: int = 128
    intermediate_size: int = 384
    layer_types: list = field(default_factory=lambda: ["conv", "full_attention", "conv", "full_attention"])
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    conv_L_cache: int = 3
    norm_eps: float = 1e-5
    rope_theta: float = 1_000_000.0


@dataclass
class VisionConfig:
    hidden_size: int = 96
    intermediate_size: int = 384
    num_hidden_layers: int = 3
    num_attention_heads: int = 3
    image_size: int = 256
    patch_size: int = 16
    layer_norm_eps: float = 1e-6
    position_init_std: float = 0.5   # training only: a small table is drowned by the patch embeddings and position
                                     # is then learnt several times slower (patch-level side of centre: 0.57 vs 0.85)


# ----------------------------------------------------------------------------------------------------- LFM2


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rotate_half(x):
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


class ShortConv(nn.Module):
    """in_proj -> [B | C | x], B*x through a depthwise causal convolution, times C, out_proj."""

    def __init__(self, cfg: TextConfig):
        super().__init__()
        h = cfg.hidden_size
        self.in_proj = nn.Linear(h, 3 * h, bias=False)
        self.conv = nn.Conv1d(h, h, cfg.conv_L_cache, groups=h, padding=cfg.conv_L_cache - 1, bias=False)
        self.out_proj = nn.Linear(h, h, bias=False)

    def forward(self, x):
        t = x.shape[1]
        b, c, xx = self.in_proj(x).transpose(1, 2).chunk(3, dim=1)
        y = c * self.conv(b * xx)[..., :t]
        return self.out_proj(y.transpose(1, 2))


class Attention(nn.Module):
    def __init__(self, cfg: TextConfig):
        super().__init__()
        h = cfg.hidden_size
        self.heads, self.kv_heads = cfg.num_attention_heads, cfg.num_key_value_heads
        self.head_dim = h // self.heads
        self.q_proj = nn.Linear(h, self.heads * self.head_dim, bias=False)
        self.k_proj = nn.Linear(h, self.kv_heads * self.head_dim, bias=False)
        self.v_proj = nn.Linear(h, self.kv_heads * self.head_dim, bias=False)
        self.out_proj = nn.Linear(self.heads * self.head_dim, h, bias=False)
        self.q_layernorm = RMSNorm(self.head_dim, cfg.norm_eps)
        self.k_layernorm = RMSNorm(self.head_dim, cfg.norm_eps)

    def forward(self, x, cos, sin):
        b, t, _ = x.shape
        q = self.q_layernorm(self.q_proj(x).view(b, t, self.heads, self.head_dim)).transpose(1, 2)
        k = self.k_layernorm(self.k_proj(x).view(b, t, self.kv_heads, self.head_dim)).transpose(1, 2)
        v = self.v_proj(x).view(b, t, self.kv_heads, self.head_dim).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        rep = self.heads // self.kv_heads
        k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.out_proj(y.transpose(1, 2).reshape(b, t, -1))


class FeedForward(nn.Module):
    def __init__(self, cfg: TextConfig):
        super().__init__()
        self.w1 = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.w3 = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.w2 = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)

    def forward(self, x):
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class DecoderLayer(nn.Module):
    def __init__(self, cfg: TextConfig, kind: str):
        super().__init__()
        self.kind = kind
        self.operator_norm = RMSNorm(cfg.hidden_size, cfg.norm_eps)
        self.ffn_norm = RMSNorm(cfg.hidden_size, cfg.norm_eps)
        if kind == "conv":
            self.conv = ShortConv(cfg)
        else:
            self.self_attn = Attention(cfg)
        self.feed_forward = FeedForward(cfg)

    def forward(self, x, cos, sin):
        h = self.operator_norm(x)
        h = x + (self.conv(h) if self.kind == "conv" else self.self_attn(h, cos, sin))
        return h + self.feed_forward(self.ffn_norm(h))


class LFM2Model(nn.Module):
    def __init__(self, cfg: TextConfig):
        super().__init__()
        self.cfg = cfg
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        nn.init.normal_(self.embed_tokens.weight, std=0.02)   # tied output head: keeps the first logits near 0
        self.layers = nn.ModuleList(DecoderLayer(cfg, kind) for kind in cfg.layer_types)
        self.embedding_norm = RMSNorm(cfg.hidden_size, cfg.norm_eps)  # the final norm, despite its name

    def forward(self, inputs_embeds):
        t = inputs_embeds.shape[1]
        head_dim = self.cfg.hidden_size // self.cfg.num_attention_heads
        inv_freq = 1.0 / (self.cfg.rope_theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
        freqs = torch.outer(torch.arange(t, dtype=torch.float32), inv_freq)
        emb = torch.cat((freqs, freqs), dim=-1)
        cos, sin = emb.cos().to(inputs_embeds.dtype), emb.sin().to(inputs_embeds.dtype)
        h = inputs_embeds
        for layer in self.layers:
            h = layer(h, cos, sin)
        return self.embedding_norm(h)


class LFM2ForCausalLM(nn.Module):
    def __init__(self, cfg: TextConfig):
        super().__init__()
        self.model = LFM2Model(cfg)

    def logits(self, inputs_embeds):
        return self.model(inputs_embeds) @ self.model.embed_tokens.weight.T  # lm_head tied to embed_tokens


# --------------------------------------------------------------------------------------------------- SigLIP


class SiglipAttention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.q_proj, self.k_proj = nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.v_proj, self.out_proj = nn.Linear(dim, dim), nn.Linear(dim, dim)

    def forward(self, x):
        b, t, d = x.shape
        split = lambda y: y.view(b, t, self.heads, d // self.heads).transpose(1, 2)
        y = F.scaled_dot_product_attention(split(self.q_proj(x)), split(self.k_proj(x)), split(self.v_proj(x)))
        return self.out_proj(y.transpose(1, 2).reshape(b, t, d))


class SiglipMLP(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class SiglipLayer(nn.Module):
    def __init__(self, cfg: VisionConfig):
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.self_attn = SiglipAttention(cfg.hidden_size, cfg.num_attention_heads)
        self.layer_norm2 = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.mlp = SiglipMLP(cfg.hidden_size, cfg.intermediate_size)

    def forward(self, x):
        x = x + self.self_attn(self.layer_norm1(x))
        return x + self.mlp(self.layer_norm2(x))


class SiglipEmbeddings(nn.Module):
    def __init__(self, cfg: VisionConfig):
        super().__init__()
        self.side = cfg.image_size // cfg.patch_size
        self.patch_embedding = nn.Conv2d(3, cfg.hidden_size, cfg.patch_size, stride=cfg.patch_size)
        self.position_embedding = nn.Embedding(self.side * self.side, cfg.hidden_size)
        nn.init.normal_(self.position_embedding.weight, std=cfg.position_init_std)

    def positions(self, grid: int):
        """The position table for a grid x grid patch image: as stored for the full size, otherwise resized
        bicubically (a = -0.75, no antialias, align_corners off), as transformers' interpolate_pos_encoding."""
        table = self.position_embedding.weight
        if grid == self.side:
            return table
        d = table.shape[1]
        square = table.reshape(1, self.side, self.side, d).permute(0, 3, 1, 2)
        resized = F.interpolate(square, size=(grid, grid), mode="bicubic", align_corners=False)
        return resized.permute(0, 2, 3, 1).reshape(grid * grid, d)

    def forward(self, pixels):
        patches = self.patch_embedding(pixels)                 # [B, D, g, g]
        grid = patches.shape[-1]
        return patches.flatten(2).transpose(1, 2) + self.positions(grid)


class SiglipPoolingHead(nn.Module):
    """Multihead attention pooling: one learned probe attends over the patch features."""

    def __init__(self, cfg: VisionConfig):
        super().__init__()
        self.probe = nn.Parameter(torch.randn(1, 1, cfg.hidden_size))
        self.attention = nn.MultiheadAttention(cfg.hidden_size, cfg.num_attention_heads, batch_first=True)
        self.layernorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.mlp = SiglipMLP(cfg.hidden_size, cfg.intermediate_size)

    def forward(self, x):
        probe = self.probe.expand(x.shape[0], -1, -1)
        h = self.attention(probe, x, x, need_weights=False)[0]
        h = h + self.mlp(self.layernorm(h))
        return h[:, 0]


class SiglipVisionTransformer(nn.Module):
    def __init__(self, cfg: VisionConfig):
        super().__init__()
        self.embeddings = SiglipEmbeddings(cfg)
        self.encoder = nn.Module()
        self.encoder.layers = nn.ModuleList(SiglipLayer(cfg) for _ in range(cfg.num_hidden_layers))
        self.post_layernorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.head = SiglipPoolingHead(cfg)

    def forward(self, pixels, with_patches: bool = False):
        """The pooled vector per image; with `with_patches`, also the patch features the head pools."""
        h = self.embeddings(pixels)
        for layer in self.encoder.layers:
            h = layer(h)
        patches = self.post_layernorm(h)
        pooled = self.head(patches)
        return (pooled, patches) if with_patches else pooled


def grid_views(pixels):
    """[B, 3, 256, 256] -> the five views: the global image, then the tiles at (0,0) (0,126) (126,0) (126,126)."""
    tiles = [pixels[:, :, y:y + GRID_TILE, x:x + GRID_TILE] for y in (0, GRID_STRIDE) for x in (0, GRID_STRIDE)]
    return pixels, torch.stack(tiles, dim=1)


# ------------------------------------------------------------------------------------------------------ S4


def s4_system(inv_dt, a_real, a_imag, b, p):
    """Per channel, the bilinear-discretised DPLR system on the conjugate-extended state (2 N2 entries):
    returns dA [H, Nf, Nf] and dB [H, Nf] (complex). Channel h uses the (A, B, P) copy h % S."""
    h = inv_dt.shape[0]
    s = a_real.shape[0]
    idx = torch.arange(h) % s
    dt = torch.exp(inv_dt.reshape(h))
    lam = torch.complex(-torch.exp(a_real), -a_imag)[idx]                      # [H, N2]
    bc = torch.complex(b[0, ..., 0], b[0, ..., 1])[idx]                        # [H, N2]
    pc = torch.complex(p[..., 0], p[..., 1])[:, idx]                           # [R, H, N2]
    lam_f = torch.cat([lam, lam.conj()], dim=-1)
    b_f = torch.cat([bc, bc.conj()], dim=-1)
    p_f = torch.cat([pc, pc.conj()], dim=-1)
    nf = lam_f.shape[-1]
    a = torch.diag_embed(lam_f) - torch.einsum("rhi,rhj->hij", p_f, p_f.conj())
    eye = torch.eye(nf, dtype=a.dtype)
    half = (dt / 2).to(a.dtype)[:, None, None]
    m = eye - half * a
    d_a = torch.linalg.solve(m, eye + half * a)
    d_b = torch.linalg.solve(m, (dt.to(a.dtype)[:, None] * b_f).unsqueeze(-1)).squeeze(-1)
    return d_a, d_b


def s4_taps(inv_dt, a_real, a_imag, b, c_true, p, length: int):
    """K_j = Re(C dA^j dB), j < length, per channel: [H, length]. `c_true` is the plain output row C."""
    d_a, d_b = s4_system(inv_dt, a_real, a_imag, b, p)
    c = torch.complex(c_true[0, ..., 0], c_true[0, ..., 1])
    c_f = torch.cat([c, c.conj()], dim=-1)
    taps, v = [], d_b
    for _ in range(length):
        taps.append((c_f * v).sum(-1).real)
        v = torch.einsum("hij,hj->hi", d_a, v)
    return torch.stack(taps, dim=-1)


def _c_transform(c_stored, d_a, length, inverse):
    n2 = c_stored.shape[2]
    c = torch.complex(c_stored[0, ..., 0], c_stored[0, ..., 1])
    c_f = torch.cat([c, c.conj()], dim=-1)
    t = torch.eye(d_a.shape[-1], dtype=d_a.dtype) - torch.linalg.matrix_power(d_a, length)
    if inverse:   # C = C~ (I - dA^L)^-1  <=>  (I - dA^L)^T C^T = C~^T
        out = torch.linalg.solve(t.transpose(-1, -2), c_f.unsqueeze(-1)).squeeze(-1)
    else:
        out = torch.einsum("hi,hij->hj", c_f, t)
    out = out[:, :n2]   # the conjugate-extended row stays [C', conj C']: keep the stored half
    return torch.stack([out.real, out.imag], dim=-1).unsqueeze(0)


def s4_c_tilde(kernel, length=S4_L_KERNEL):
    """C-tilde = C (I - dA^L), in float64, from a kernel module holding the true C."""
    with torch.no_grad():
        d_a, _ = s4_system(*(getattr(kernel, n).double() for n in ("inv_dt", "A_real", "A_imag", "B", "P")))
        return _c_transform(kernel.C.double(), d_a, length, inverse=False).float()


def s4_c_from_tilde(params: dict, length: int):
    """The true C from a stored C-tilde (tensors by their kernel names), in float64."""
    d_a, _ = s4_system(*(params[n].double() for n in ("inv_dt", "A_real", "A_imag", "B", "P")))
    return _c_transform(params["C"].double(), d_a, length, inverse=True).float()


class S4Kernel(nn.Module):
    """DPLR parameters; initialised diagonal-plus-small-low-rank (S4D-Lin eigenvalues -1/2 + i pi n)."""

    def __init__(self, h: int, half_state: int = 32, rank: int = 1):
        super().__init__()
        n = torch.arange(half_state, dtype=torch.float32)
        dt = torch.exp(torch.empty(h, 1).uniform_(math.log(1e-3), math.log(1e-1)))
        self.inv_dt = nn.Parameter(torch.log(dt))
        self.A_real = nn.Parameter(torch.full((h, half_state), math.log(0.5)))
        self.A_imag = nn.Parameter((math.pi * n).repeat(h, 1))
        self.B = nn.Parameter(torch.stack([torch.ones(1, h, half_state), torch.zeros(1, h, half_state)], dim=-1))
        self.C = nn.Parameter(torch.randn(1, h, half_state, 2) * 0.5)   # the true C while training
        self.P = nn.Parameter(torch.randn(rank, h, half_state, 2) * 0.05)

    def forward(self, length: int):
        return s4_taps(self.inv_dt, self.A_real, self.A_imag, self.B, self.C, self.P, length)


class S4Layer(nn.Module):
    def __init__(self, h: int):
        super().__init__()
        self.kernel = S4Kernel(h)
        self.D = nn.Parameter(torch.randn(1, h))

    def forward(self, x):
        """x [B, T, H] -> causal FIR with the kernel taps, plus D x."""
        t = x.shape[1]
        if self.training or torch.is_grad_enabled():
            self._frozen_taps = None
            k = self.kernel(t)                                           # [H, T]
        else:  # inference: the taps do not depend on the input, so compute them once
            if getattr(self, "_frozen_taps", None) is None or self._frozen_taps.shape[1] < t:
                self._frozen_taps = self.kernel(max(t, 64))
            k = self._frozen_taps[:, :t]
        xc = F.pad(x.transpose(1, 2), (t - 1, 0))                        # [B, H, 2T-1]
        y = F.conv1d(xc, k.flip(-1).unsqueeze(1), groups=k.shape[0])     # y[t] = sum_j k[j] x[t-j]
        return y.transpose(1, 2) + x * self.D


class S4Block(nn.Module):
    def __init__(self, h: int):
        super().__init__()
        self.layer = S4Layer(h)
        self.output_linear = nn.Sequential(nn.Conv1d(h, 2 * h, 1), nn.GLU(dim=1))

    def forward(self, x):
        y = F.gelu(self.layer(x))
        return self.output_linear(y.transpose(1, 2)).transpose(1, 2)


# ------------------------------------------------------------------------------------------------------ CMM


class CrossModalModulator(nn.Module):
    """Token-grid correlation (top-k of the 5 views per head, mean over heads), FiLM in, S4, FiLM out, FFN."""

    def __init__(self, dt: int, dv: int):
        super().__init__()
        inner = CMM_HEADS * CMM_HEAD_DIM
        self.q_proj = nn.Linear(dt, inner, bias=False)
        self.k_proj = nn.Linear(dv, inner, bias=False)
        self.v_proj = nn.Linear(dv, dt, bias=False)
        self.norm_in = nn.LayerNorm(dt, eps=1e-5)
        self.film_in = nn.Linear(dt, 2 * dt)
        self.film_out = nn.Linear(dt, 2 * dt)
        self.mod_gate = nn.Parameter(torch.tensor(0.5))
        self.s4 = S4Block(dt)
        self.ffn = nn.Sequential(nn.LayerNorm(dt, eps=1e-5), nn.Linear(dt, 4 * dt), nn.GELU(), nn.Dropout(0.0),
                                 nn.Linear(4 * dt, dt))
        self.norm_out = nn.LayerNorm(dt, eps=1e-5)
        for film in (self.film_in, self.film_out):   # start as the identity modulation
            nn.init.zeros_(film.weight)
            nn.init.zeros_(film.bias)

    def forward(self, text, grid):
        """text [B, T, Dt], grid [B, G, Dv] -> [B, T, Dt]"""
        b, t, _ = text.shape
        q = self.q_proj(text).view(b, t, CMM_HEADS, CMM_HEAD_DIM)
        k = self.k_proj(grid).view(b, grid.shape[1], CMM_HEADS, CMM_HEAD_DIM)
        scores = torch.einsum("bthd,bghd->bhtg", q, k) / math.sqrt(CMM_HEAD_DIM)
        kth = scores.topk(CMM_TOPK, dim=-1).values[..., -1:]
        scores = scores.masked_fill(scores < kth, float("-inf"))
        weights = scores.softmax(dim=-1).mean(dim=1)                     # [B, T, G]
        context = weights @ self.v_proj(grid)                            # [B, T, Dt]
        g = self.mod_gate
        s_in, b_in = self.film_in(context).chunk(2, dim=-1)
        x = self.norm_in(text) * (1 + g * s_in) + g * b_in
        y = self.s4(x)
        s_out, b_out = self.film_out(context).chunk(2, dim=-1)
        y = y * (1 + g * s_out) + g * b_out
        h = text + y
        h = h + self.ffn(h)
        return self.norm_out(h)


# ------------------------------------------------------------------------------------------------ the model


class FireboltVL(nn.Module):
    def __init__(self, text: TextConfig, vision: VisionConfig):
        super().__init__()
        self.text_config, self.vision_config = text, vision
        self.base_lm = LFM2ForCausalLM(text)
        self.vision = SiglipVisionTransformer(vision)
        self.cmm = CrossModalModulator(text.hidden_size, vision.hidden_size)

    def vision_grid(self, pixels, with_patches: bool = False):
        """pixels [B, 3, 256, 256] (processor output) -> X_v [B, 5, Dv]; with `with_patches`, also the patch
        features of the whole image [B, 256, Dv] and of the tiles [B, 4, 64, Dv] (for training-only losses)."""
        whole, tiles = grid_views(pixels)
        b = pixels.shape[0]
        g, gp = self.vision(whole, with_patches=True)
        t, tp = self.vision(tiles.flatten(0, 1), with_patches=True)
        grid = torch.cat([g.unsqueeze(1), t.view(b, 4, -1)], dim=1)
        return (grid, gp, tp.view(b, 4, tp.shape[1], -1)) if with_patches else grid

    def forward(self, input_ids, grid=None):
        """Logits [B, T, V]; `grid` (X_v per sequence) None runs plain LFM2 (text only)."""
        text = self.base_lm.model.embed_tokens(input_ids)
        embeds = text if grid is None else self.cmm(text, grid)
        return self.base_lm.logits(embeds)

    # -- the released layout

    VISION_PREFIX = "model.vision_encoder.encoder.model.vision_model."
    CMM_PREFIX = "model.fuser.fuser.model."

    def _renamed(self):
        for name, tensor in self.state_dict().items():
            if name.startswith("vision."):
                yield self.VISION_PREFIX + name[len("vision."):], tensor
            elif name.startswith("cmm."):
                yield self.CMM_PREFIX + name[len("cmm."):], tensor
            else:
                yield name, tensor

    def state_dict_released(self) -> dict:
        """Tensors under the authors' names, S4 C stored as C-tilde for l_kernel = 512."""
        out = {name: t.detach().clone().contiguous() for name, t in self._renamed()}
        out[self.CMM_PREFIX + "s4.layer.kernel.C"] = s4_c_tilde(self.cmm.s4.layer.kernel).contiguous()
        out[self.CMM_PREFIX + "s4.layer.kernel.l_kernel"] = torch.tensor(S4_L_KERNEL, dtype=torch.int64)
        # In the released class, unused on the cossm path: kept so the file holds what a release holds.
        dt, dv = self.text_config.hidden_size, self.vision_config.hidden_size
        gen = torch.Generator().manual_seed(0)
        unused = {"model.fuser.fuser.importance.weight": (1, dt), "model.fuser.fuser.importance.bias": (1,),
                  "model.projector.projector.fc.weight": (dt, dv), "model.projector.projector.fc.bias": (dt,)}
        for name, shape in unused.items():
            out[name] = torch.randn(*shape, generator=gen) * 0.02
        return out

    def load_released(self, tensors: dict) -> None:
        """Loads a released-layout state dict (C-tilde converted back to the true C)."""
        own = {}
        reverse = {released: mine for mine, released in
                   ((n, r) for (n, _), (r, _) in zip(self.state_dict().items(), self._renamed()))}
        kernel_prefix = self.CMM_PREFIX + "s4.layer.kernel."
        l_kernel = int(tensors.get(kernel_prefix + "l_kernel", torch.tensor(0)))
        for name, t in tensors.items():
            if name in reverse:
                own[reverse[name]] = t
        if l_kernel > 0:
            params = {n: tensors[kernel_prefix + n] for n in ("inv_dt", "A_real", "A_imag", "B", "C", "P")}
            own["cmm.s4.layer.kernel.C"] = s4_c_from_tilde(params, l_kernel)
        missing = set(self.state_dict()) - set(own)
        if missing:
            raise KeyError(f"tensors missing from the checkpoint: {sorted(missing)[:5]}")
        self.load_state_dict(own)
