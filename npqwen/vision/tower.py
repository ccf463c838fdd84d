"""The vision tower: a ViT that turns an image's patches into tokens of the language model.

    pixel_values [N, C*T*P*P]  (N patches of all images, each image's in 2x2 merge blocks: images.py)
      -> patch embedding: one matmul (a Conv3d whose stride is its kernel)       -> [N, D]
      -> + learned positions, bilinearly resampled to the image's grid          ("qwen3" towers)
      -> depth x block:  x = x + attn(norm1(x))   2-D RoPE, each image (or window) attends to itself
                         x = x + mlp(norm2(x))
      -> merger: norm, then each merge block's m*m patches side by side [N/m^2, m^2 D] -> MLP -> [N/m^2, d]
    = one language-model token per m x m patches, in the order of the image's <|image_pad|> tokens.

Two kinds (config.py): "qwen3" (Qwen3-VL, Qwen3.5, 3.6, 3.8) has LayerNorm, a GELU (tanh) MLP and the
learned position grid, and Qwen3-VL's DeepStack: the outputs of a few chosen blocks each go through a
merger of their own (norm after the merge: "postshuffle") and are added to the language model's hidden
states after its first layers (multimodal.py). "qwen2_5" (Qwen2.5-VL) has RMSNorm, a SwiGLU MLP, no
learned positions, and window attention: patches are reordered window by window (windows of
window_size pixels), blocks attend within a window, but those in fullatt_block_indexes within the
whole image; the merger's output is put back in image order.

2-D RoPE: a head's dimensions [hd] = [h-frequencies | w-frequencies] twice (the rotate_half pairing),
hd/4 frequencies base^(-4i/hd) per axis, turned by the patch's row and column.
Shapes: N patches, D = hidden_size, H heads, hd = D / H, m = spatial_merge_size, d = out_hidden_size.
"""

from dataclasses import dataclass, field

import numpy as np

from ..attention import NO_BIAS, SCORES_BYTES
from ..errors import CheckpointError, NpqwenError
from ..primitives import apply_rope, attention, gelu, gelu_tanh, layer_norm, linear, rms_norm, silu
from ..threads import WORKERS, blas_threads, parallel, scratch, split
from ..weights import to_float32
from .config import VisionConfig

ACT = {"gelu_pytorch_tanh": gelu_tanh, "gelu": lambda x, out=None: gelu(x),   # (out=x: in place where it can)
       "silu": lambda x, out=None: silu(np.ascontiguousarray(x), out=out if out is not None and x.flags.c_contiguous else None),
       "quick_gelu": lambda x, out=None: x / (np.float32(1) + np.exp(np.float32(-1.702) * x))}


@dataclass
class Norm:
    weight: np.ndarray                     # [n]
    bias: np.ndarray | None = None         # [n] (LayerNorm), None (RMSNorm)

    def __call__(self, x):
        return layer_norm(x, self.weight, self.bias) if self.bias is not None else rms_norm(x, self.weight, 1e-6)


@dataclass
class Block:
    norm1: Norm
    w_qkv: np.ndarray                      # [3D, D]: q rows, k rows, v rows (each head after head)
    b_qkv: np.ndarray                      # [3D]
    w_proj: np.ndarray                     # [D, D]
    b_proj: np.ndarray                     # [D]
    norm2: Norm
    w_in: np.ndarray                       # [I, D] (fc1), or [2I, D] gate rows then up rows (SwiGLU)
    b_in: np.ndarray
    w_out: np.ndarray                      # [D, I]
    b_out: np.ndarray


@dataclass
class Merger:
    norm: Norm                             # over D (before the merge) or m^2 D (after it: DeepStack's)
    after_merge: bool
    w1: np.ndarray                         # [m^2 D, m^2 D]
    b1: np.ndarray
    w2: np.ndarray                         # [d, m^2 D]
    b2: np.ndarray

    def __call__(self, x, width):          # [N, D] -> [N / m^2, d]
        x = self.norm(x.reshape(-1, width)) if self.after_merge else self.norm(x).reshape(-1, width)
        return dense(gelu(dense(x, self.w1, self.b1)), self.w2, self.b2)


@dataclass
class VisionTower:
    config: VisionConfig
    w_patch: np.ndarray                    # [D, C*T*P*P]: the Conv3d's kernel, flattened
    b_patch: np.ndarray | None             # [D] ("qwen3"), None ("qwen2_5")
    pos_embed: np.ndarray | None           # [side^2, D] learned positions ("qwen3")
    blocks: list
    merger: Merger
    deepstack: list = field(default_factory=list)   # Mergers of the blocks in deepstack_visual_indexes

    def __call__(self, pixel_values, grid):
        return encode(self, pixel_values, grid)


@dataclass
class Encoded:
    features: np.ndarray                   # [N / m^2, d]: the tokens that replace <|image_pad|>, image by image
    deepstack: list                        # of [N / m^2, d], one per DeepStack block
    hidden: list                           # [N, D]: the patches after the embedding and after each block


# ---------------------------------------------------------------------------------------------
# the forward


def encode(tower: VisionTower, pixel_values, grid, keep_hidden=False) -> Encoded:
    """pixel_values [N, C*T*P*P], grid [n_images, 3] (t, h, w in patches) -> Encoded."""
    cfg = tower.config
    x = check_pixels(cfg, pixel_values, grid)
    with np.errstate(over="ignore", invalid="ignore"), blas_threads(1):
        x = dense(x, tower.w_patch, tower.b_patch) if tower.b_patch is not None else linear(x, tower.w_patch)  # [N, D]
        if tower.pos_embed is not None:
            idx, wts = interpolation_taps(grid, cfg.grid_side, cfg.spatial_merge_size)
            x += np.einsum("nk,nkd->nd", wts, tower.pos_embed[idx])             # bilinear, 4 taps a patch
        cos, sin = rotary(cfg, grid)                                             # [N, hd]
        segments = image_segments(grid)
        order = None
        if cfg.kind == "qwen2_5":   # window attention: patches regrouped window by window
            order, windows = window_order(grid, cfg)
            x, cos, sin = x[order], cos[order], sin[order]
        hidden = [x] if keep_hidden else []
        deepstack = []
        for i, blk in enumerate(tower.blocks):
            whole = cfg.kind == "qwen3" or i in cfg.fullatt_block_indexes
            x = block(x, blk, cfg, cos, sin, segments if whole else windows)
            if keep_hidden:
                hidden.append(x)
            if i in cfg.deepstack_visual_indexes:
                deepstack.append(tower.deepstack[cfg.deepstack_visual_indexes.index(i)](x, cfg.merged_size))
        if not np.isfinite(x).all():
            raise NpqwenError("NaN or infinity in the vision tower's output (corrupt weights, or float32 overflow)")
        out = tower.merger(x, cfg.merged_size)                                  # [N / m^2, d]
        if order is not None:   # back to image order, one merged token at a time
            m2 = cfg.spatial_merge_size ** 2
            out[order[::m2] // m2] = out.copy()
        return Encoded(out, deepstack, hidden)


def block(x, w: Block, cfg, cos, sin, segments):  # [N, D] -> [N, D]
    qkv = dense(w.norm1(x), w.w_qkv, w.b_qkv, out=scratch("vit qkv", (len(x), w.w_qkv.shape[0])))
    y = dense(attend_segments(qkv, cfg, cos, sin, segments), w.w_proj, w.b_proj)
    y += x
    h = w.norm2(y)
    if cfg.kind == "qwen2_5":   # SwiGLU with biases: down(act(gate(h)) * up(h))
        gate_up = dense(h, w.w_in, w.b_in)
        i = w.w_out.shape[1]
        h = ACT[cfg.hidden_act](gate_up[:, :i]) * gate_up[:, i:]
    else:
        h = dense(h, w.w_in, w.b_in, out=scratch("vit mlp", (len(x), w.w_in.shape[0])))
        h = ACT[cfg.hidden_act](h, out=h)
    out = dense(h, w.w_out, w.b_out)
    out += y
    return out


def dense(x, w, b, out=None):  # [N, in], [out, in], [out] -> [N, out]
    """x @ w.T + b for the tower's many rows: each core multiplies its share of the rows, BLAS on one
    thread. (BLAS on both cores is as fast for the product, but its threads then keep spinning on the
    cores the next step's workers need.) out: where to write it (a reused buffer: fresh pages cost)."""
    if not isinstance(w, np.ndarray) or len(x) < 256:
        y = linear(x, w, b)
        if out is None:
            return y
        out[...] = y
        return out
    y = np.empty((len(x), w.shape[0]), np.float32) if out is None else out

    def rows(s):
        np.matmul(x[s], w.T, out=y[s])
        y[s] += b
    parallel(rows, split(len(x)))
    return y


def attend_segments(qkv, cfg, cos, sin, segments):  # [N, 3D], [N, hd] x2, boundaries -> [N, D]
    """Full (not causal) attention within each segment (an image, or a window of one): short segments
    of one length are stacked into one batched product; a long one goes a head and a block of queries
    at a time, whose scores [block, L] stay about SCORES_BYTES. (Measured on 4096 patches, 12 heads:
    a head at a time, 256 queries, 0.42 s a layer; all heads together, 21 queries, 0.78 s.)"""
    N, H, hd = qkv.shape[0], cfg.num_heads, cfg.head_dim
    parts = qkv.reshape(N, 3, H, hd)
    q, k, v = (np.empty((H, N, hd), np.float32) for _ in range(3))             # [H, N, hd] each

    def rotate(heads):   # RoPE on q and k, a share of the heads per core; each head contiguous
        for h in heads:
            q[h] = apply_rope(parts[None, None, :, 0, h], cos[None], sin[None])[0, 0]
            k[h] = apply_rope(parts[None, None, :, 1, h], cos[None], sin[None])[0, 0]
            v[h] = parts[:, 2, h]
    parallel(rotate, [range(H)[i::WORKERS] for i in range(min(WORKERS, H))])
    out = np.empty((N, H, hd), np.float32)
    jobs = []                                                   # (first token of each segment, length, q0, q1)
    by_length = {}
    for a, z in zip(segments[:-1], segments[1:]):
        if z > a:
            by_length.setdefault(int(z - a), []).append(int(a))
    for L, starts in by_length.items():
        per = max(1, SCORES_BYTES // (4 * H * L * L))           # segments per product
        block = max(64, SCORES_BYTES // (4 * L))                # queries per product, one segment, one head
        for i in range(0, len(starts), per):
            group = starts[i:i + per]
            if len(group) > 1:
                jobs.append((group, L, None, 0, L))
                continue
            jobs += [(group, L, h, q0, min(L, q0 + block)) for h in range(H) for q0 in range(0, L, block)]

    def run(share):
        for group, L, h, q0, q1 in share:
            if h is not None:     # one segment, one head: views of it, no copies
                a = group[0]
                out[a + q0:a + q1, h] = head_attention(q[h, a + q0:a + q1], k[h, a:a + L], v[h, a:a + L])
            else:                 # equal windows, stacked: [n, H, L, hd]
                rows = np.asarray(group)[:, None] + np.arange(L)                    # [n, L]
                qs, ks, vs = (x[:, rows].transpose(1, 0, 2, 3) for x in (q, k, v))
                out[rows] = attention(qs, ks, vs, NO_BIAS).transpose(0, 2, 1, 3)

    parallel(run, [jobs[i::WORKERS] for i in range(min(WORKERS, len(jobs)))])
    return out.reshape(N, H * hd)


def head_attention(q, k, v):  # [m, hd], [L, hd], [L, hd] -> [m, hd]
    """softmax(q k^T / sqrt(hd)) v for one head, the scores held transposed, [L, m]: BLAS multiplies
    K q^T faster than q K^T when hd is small (OpenBLAS, hd 64, 256 queries x 4096 keys: 1.35 ms
    against 1.81), and NumPy reduces [L, m] over its first axis a row at a time, in cache.
    The softmax's shift by each column's maximum only keeps exp() in range: where every score
    already is (|max| < 64), it is skipped, and the columns are divided by their sums alone."""
    qT = (q * np.float32(q.shape[-1] ** -0.5)).T
    sT = scratch("vit scores", (len(k), len(q)))
    np.matmul(k, qT, out=sT)                                    # [L, m]
    top = sT.max(axis=0)
    if not (np.abs(top) < 64).all():
        sT -= top
    np.exp(sT, out=sT)
    out = sT.T @ v                                              # [m, hd]
    out /= sT.sum(axis=0)[:, None]
    return out


# ---------------------------------------------------------------------------------------------
# where each patch is: its image, its row and column, its window


def check_pixels(cfg: VisionConfig, pixel_values, grid):
    pv, g = np.asarray(pixel_values), np.asarray(grid)
    if g.ndim != 2 or g.shape[1] != 3 or not np.issubdtype(g.dtype, np.integer) or len(g) == 0 or (g <= 0).any():
        raise NpqwenError(f"image_grid_thw must be positive integers of shape [n_images, 3], found shape {g.shape}")
    m = cfg.spatial_merge_size
    if (g[:, 1:] % m).any():
        raise NpqwenError(f"image_grid_thw's heights and widths must be multiples of spatial_merge_size ({m}), "
                          f"found {g.tolist()}")
    if pv.ndim != 2 or pv.shape[1] != cfg.patch_dim:
        raise NpqwenError(f"pixel_values must have shape [n_patches, {cfg.patch_dim}] (C x T x P x P), found {pv.shape}")
    if pv.shape[0] != int(g.prod(axis=1).sum()):
        raise NpqwenError(f"pixel_values has {pv.shape[0]} patches but image_grid_thw {g.tolist()} makes "
                          f"{int(g.prod(axis=1).sum())}")
    return pv.astype(np.float32, copy=False)


def patch_rows_cols(grid, m):  # -> row, col [N]: each patch's place in its frame, patches in merge-block order
    rows, cols = [], []
    for t, h, w in np.asarray(grid).tolist():
        r = np.arange(h).reshape(h // m, m, 1, 1)
        c = np.arange(w).reshape(1, 1, w // m, m)
        r, c = np.broadcast_arrays(r, c)                         # [h/m, m, w/m, m]
        rows.append(np.tile(r.transpose(0, 2, 1, 3).ravel(), t))  # block row, block col, in-row, in-col
        cols.append(np.tile(c.transpose(0, 2, 1, 3).ravel(), t))
    return np.concatenate(rows), np.concatenate(cols)


def image_segments(grid):  # -> boundaries [n_frames + 1]: each frame attends to itself
    g = np.asarray(grid)
    return np.concatenate([[0], np.cumsum(np.repeat(g[:, 1] * g[:, 2], g[:, 0]))])


def rotary(cfg: VisionConfig, grid):  # -> cos, sin [N, hd]
    """2-D RoPE: hd/4 frequencies, turned by the row for the first quarter and by the column for the
    second, the half repeated (rotate_half pairs dimension i with i + hd/2)."""
    quarter = cfg.head_dim // 2
    inv_freq = (np.float32(1) / np.float32(cfg.rope_theta) ** (np.arange(0, quarter, 2, dtype=np.float32)
                                                                / np.float32(quarter))).astype(np.float32)
    row, col = patch_rows_cols(grid, cfg.spatial_merge_size)
    freqs = np.concatenate([row.astype(np.float32)[:, None] * inv_freq, col.astype(np.float32)[:, None] * inv_freq], -1)
    emb = np.concatenate([freqs, freqs], axis=-1)
    return np.cos(emb).astype(np.float32), np.sin(emb).astype(np.float32)


def interpolation_taps(grid, side, m):  # -> indices, weights [N, 4]
    """The learned side x side position grid resampled to each image's h x w patches, bilinearly with
    align_corners=True (corners map to corners: source = index * (side - 1) / (size - 1)), as
    4 taps per patch into the flattened grid (what torch's F.interpolate computes)."""
    g = np.asarray(grid)
    row, col = patch_rows_cols(g, m)
    heights = np.repeat(g[:, 1], g.prod(axis=1))
    widths = np.repeat(g[:, 2], g.prod(axis=1))

    def taps(index, size):  # one axis: two taps and their weights
        src = index.astype(np.float32) * np.float32(side - 1) / np.maximum(size - 1, 1).astype(np.float32)
        floor = np.floor(src)
        tap = floor.astype(np.int64)[:, None] + np.arange(2)
        weight = np.maximum(np.float32(1) - np.abs(src[:, None] - tap.astype(np.float32)), np.float32(0))
        return np.clip(tap, 0, side - 1), weight

    (ht, hw), (wt, ww) = taps(row, heights), taps(col, widths)
    idx = (ht[:, :, None] * side + wt[:, None, :]).reshape(-1, 4)
    wts = (hw[:, :, None] * ww[:, None, :]).reshape(-1, 4).astype(np.float32)
    return idx, wts


def window_order(grid, cfg: VisionConfig):  # -> order [N] (patches, window by window), boundaries
    """Qwen2.5-VL's windows: each image's merge blocks (h/m x w/m) cut into squares of
    window_size / (m * P) blocks, from the top-left (the last row and column of windows may be
    smaller); windows row by row, blocks row by row within a window, a block's m^2 patches together."""
    m, n = cfg.spatial_merge_size, cfg.window_size // cfg.spatial_merge_size // cfg.patch_size
    m2, order, bounds, base = m * m, [], [0], 0
    for t, h, w in np.asarray(grid).tolist():
        bh, bw = h // m, w // m
        ids = np.arange(t * bh * bw).reshape(t, bh, bw)
        for f in range(t):
            for r0 in range(0, bh, n):
                for c0 in range(0, bw, n):
                    blocks = ids[f, r0:r0 + n, c0:c0 + n].ravel() + base
                    order.append(blocks)
                    bounds.append(bounds[-1] + len(blocks) * m2)
        base += t * bh * bw
    blocks = np.concatenate(order)
    return (blocks[:, None] * m2 + np.arange(m2)).ravel(), np.asarray(bounds)


# ---------------------------------------------------------------------------------------------
# loading


def vision_shapes(cfg: VisionConfig) -> dict:
    """The name and shape of every tensor of the tower, as the checkpoint stores it."""
    p, D, I, m2 = cfg.prefix, cfg.hidden_size, cfg.intermediate_size, cfg.spatial_merge_size ** 2
    P, T, C = cfg.patch_size, cfg.temporal_patch_size, cfg.in_channels
    shapes = {p + "patch_embed.proj.weight": (D, C, T, P, P)}
    qwen3 = cfg.kind == "qwen3"
    norm = (lambda n, size: {n + ".weight": (size,), n + ".bias": (size,)}) if qwen3 else \
        (lambda n, size: {n + ".weight": (size,)})
    if qwen3:
        shapes[p + "patch_embed.proj.bias"] = (D,)
        shapes[p + "pos_embed.weight"] = (cfg.num_position_embeddings, D)
    for i in range(cfg.depth):
        b = f"{p}blocks.{i}."
        shapes.update(norm(b + "norm1", D))
        shapes.update(norm(b + "norm2", D))
        shapes.update({b + "attn.qkv.weight": (3 * D, D), b + "attn.qkv.bias": (3 * D,), b + "attn.proj.weight": (D, D),
                       b + "attn.proj.bias": (D,)})
        mlp = {"linear_fc1": (I, D), "linear_fc2": (D, I)} if qwen3 else \
            {"gate_proj": (I, D), "up_proj": (I, D), "down_proj": (D, I)}
        for name, shape in mlp.items():
            shapes.update({f"{b}mlp.{name}.weight": shape, f"{b}mlp.{name}.bias": shape[:1]})
    mergers = [("merger.", False)] + [(f"deepstack_merger_list.{j}.", True)
                                      for j in range(len(cfg.deepstack_visual_indexes))]
    for name, after in mergers:
        q = p + name
        if qwen3:
            shapes.update(norm(q + "norm", m2 * D if after else D))
            shapes.update({q + "linear_fc1.weight": (m2 * D, m2 * D), q + "linear_fc1.bias": (m2 * D,),
                           q + "linear_fc2.weight": (cfg.out_hidden_size, m2 * D),
                           q + "linear_fc2.bias": (cfg.out_hidden_size,)})
        else:
            shapes.update({q + "ln_q.weight": (D,), q + "mlp.0.weight": (m2 * D, m2 * D), q + "mlp.0.bias": (m2 * D,),
                           q + "mlp.2.weight": (cfg.out_hidden_size, m2 * D), q + "mlp.2.bias": (cfg.out_hidden_size,)})
    return shapes


def load_tower(up, cfg: VisionConfig) -> VisionTower:
    """The tower from the checkpoint (weights.Upcast: float32, or bf16 matrices kept as stored)."""
    p, qwen3 = cfg.prefix, cfg.kind == "qwen3"

    def norm(n):
        return Norm(up(n + ".weight"), up(n + ".bias") if qwen3 else None)

    blocks = []
    for i in range(cfg.depth):
        b = f"{p}blocks.{i}."
        fc = ("linear_fc1",) if qwen3 else ("gate_proj", "up_proj")
        out = "linear_fc2" if qwen3 else "down_proj"
        blocks.append(Block(norm1=norm(b + "norm1"), w_qkv=up(b + "attn.qkv.weight"), b_qkv=up(b + "attn.qkv.bias"),
                            w_proj=up(b + "attn.proj.weight"), b_proj=up(b + "attn.proj.bias"), norm2=norm(b + "norm2"),
                            w_in=up(*[f"{b}mlp.{n}.weight" for n in fc]), b_in=up(*[f"{b}mlp.{n}.bias" for n in fc]),
                            w_out=up(f"{b}mlp.{out}.weight"), b_out=up(f"{b}mlp.{out}.bias")))

    def merger(q, after):
        if qwen3:
            return Merger(norm(q + "norm"), after, up(q + "linear_fc1.weight"), up(q + "linear_fc1.bias"),
                          up(q + "linear_fc2.weight"), up(q + "linear_fc2.bias"))
        return Merger(Norm(up(q + "ln_q.weight")), False, up(q + "mlp.0.weight"), up(q + "mlp.0.bias"),
                      up(q + "mlp.2.weight"), up(q + "mlp.2.bias"))

    kernel = up.tensors[p + "patch_embed.proj.weight"]
    w_patch = up.arrays([kernel.reshape(kernel.shape[0], -1)])
    return VisionTower(config=cfg, w_patch=w_patch, b_patch=up(p + "patch_embed.proj.bias") if qwen3 else None,
                       pos_embed=to_float32(up.tensors[p + "pos_embed.weight"]) if qwen3 else None, blocks=blocks,
                       merger=merger(p + "merger.", False),
                       deepstack=[merger(f"{p}deepstack_merger_list.{j}.", True)
                                  for j in range(len(cfg.deepstack_visual_indexes))])


def vision_prefix(tensors, cfg: VisionConfig):
    """Where the tower's tensors are: model.visual.* (transformers 5, Qwen3-VL, Qwen3.5) or visual.*
    (Qwen2.5-VL's hub files); None when the checkpoint has none (a text-only export)."""
    for prefix in ("model.visual.", "visual."):
        if any(name.startswith(prefix) for name in tensors):
            return prefix
    return None


def check_vision_prefix(tensors, prefix, folder):
    others = [n for n in tensors if n.startswith(("model.visual.", "visual.")) and not n.startswith(prefix)]
    if others:
        raise CheckpointError(f"{folder}: vision tensors under two prefixes ({prefix}* and {others[0]})")
