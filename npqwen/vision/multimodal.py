"""How images enter the language model: their tokens' embeddings, their positions, DeepStack.

    input_ids  ... <|vision_start|> <|image_pad|> x n <|vision_end|> ...     (the processor expands each
                                                                            image to n = t h w / m^2 pads)
    embeddings: each <|image_pad|>'s row is replaced by the tower's next feature row (tower.py)
    positions [3, b, t] (time, height, width) for M-RoPE (primitives.mrope_cos_sin):
        a text token:   p, p, p                   p = the position after the previous token's largest
        an image token: s + frame, s + row, s + col   s = where the image starts; row, col in merged tokens
        the text after an image resumes at s + max(h, w) / m (not s + n: an image is as long as its side)
    decode: the next token's position is the prompt's largest + 1, i.e. its index + delta
        (delta = largest + 1 - length, kept in the KV cache: cache.rope_delta)
    DeepStack (Qwen3-VL): after decoder layer k < n_deepstack, the image tokens' hidden states get the
        k-th DeepStack feature added (transformers' hidden_states[k + 1] is recorded before it).

As transformers' get_rope_index, the tokens counted are the real ones (left padding is skipped), a run
of consecutive <|image_pad|> tokens is one image, and images are taken in order, row after row.
"""

from dataclasses import dataclass

import numpy as np

from ..errors import NpqwenError
from .tower import encode


@dataclass
class ImageInputs:
    features: np.ndarray        # [n_image_tokens, d]: in the order of the <|image_pad|> tokens, row by row
    deepstack: list             # of [n_image_tokens, d] (Qwen3-VL), else empty
    mask: np.ndarray            # [b, t] bool: where the <|image_pad|> tokens are
    positions: np.ndarray       # [3, b, t]
    delta: np.ndarray           # [b]: a later token's position minus its index

    def embed(self, x):  # [b, t, d] -> the same with the image tokens' rows replaced
        x[self.mask] = self.features
        return x

    def after_layer(self, x, layer):  # [b, t, d] -> a new array, with DeepStack's feature added after `layer`
        if layer >= len(self.deepstack):
            return x
        x = x.copy()
        x[self.mask] += self.deepstack[layer]
        return x


def image_inputs(model, ids, mask, pixel_values, grid, past=0) -> ImageInputs:
    """Run the vision tower on the images and place them in the prompt ids [b, t] (mask [b, t] or None)."""
    cfg, tower = model.config, getattr(model, "vision", None)
    if tower is None:
        why = "its config.json has no vision_config" if cfg.vision is None else "its checkpoint has no vision tower weights"
        raise NpqwenError(f"this model cannot read images: {why}")
    if grid is None:
        raise NpqwenError("pixel_values needs image_grid_thw (each image's t, h, w in patches)")
    if past:
        raise NpqwenError("images must come with the whole prompt, in its first forward (the cache is not empty)")
    grid = np.asarray(grid)
    pads = ids == cfg.image_token_id
    if mask is not None:
        pads &= mask.astype(bool)
    m2 = model.config.vision.spatial_merge_size ** 2
    check_placeholders(pads, grid, m2)
    out = encode(tower, pixel_values, grid)
    positions, delta = rope_index(pads, mask, grid, model.config.vision.spatial_merge_size)
    return ImageInputs(out.features, out.deepstack, pads, positions, delta)


def runs(row):  # [t] bool -> [(start, stop)] of its runs of True
    edges = np.flatnonzero(np.diff(np.concatenate([[0], row.astype(np.int8), [0]])))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist()))


def check_placeholders(pads, grid, m2):
    """Each run of <|image_pad|> tokens must be exactly one image's tokens, images in order."""
    want = (grid.prod(axis=1) // m2).tolist()
    found = [z - a for row in pads for a, z in runs(row)]
    if len(found) != len(want):
        raise NpqwenError(f"the prompt has {len(found)} image{'s' if len(found) != 1 else ''} (runs of <|image_pad|> "
                          f"tokens) but {len(want)} image{'s were' if len(want) != 1 else ' was'} given")
    for k, (f, w) in enumerate(zip(found, want)):
        if f != w:
            raise NpqwenError(f"image {k + 1} has {w} tokens (grid {grid[k].tolist()}, {m2} patches a token) but its "
                              f"run of <|image_pad|> tokens in the prompt is {f} long")


def rope_index(pads, mask, grid, m):  # [b, t] bool, [b, t] or None, [n, 3] -> positions [3, b, t], delta [b]
    b, t = pads.shape
    real = np.ones((b, t), bool) if mask is None else mask.astype(bool)
    positions = np.zeros((3, b, t), np.int64)
    delta = np.zeros(b, np.int64)
    images = iter(grid.tolist())
    for r in range(b):
        where = np.flatnonzero(real[r])
        kind = pads[r, where]
        out, p, i = np.zeros((3, len(where)), np.int64), 0, 0
        for a, z in runs(kind) + [(len(where), len(where))]:
            out[:, i:a] = p + np.arange(a - i)                  # text: one position, thrice
            p += a - i
            if z > a:
                gt, gh, gw = next(images)
                gh, gw = gh // m, gw // m
                tt, hh, ww = np.meshgrid(np.arange(gt), np.arange(gh), np.arange(gw), indexing="ij")
                out[:, a:z] = p + np.stack([tt.ravel(), hh.ravel(), ww.ravel()])
                p += max(gh, gw)
            i = z
        positions[:, r, where] = out
        delta[r] = (out.max() + 1 - len(where)) if len(where) else 0
    return positions, delta


# ---------------------------------------------------------------------------------------------
# prompts


def expand_image_pads(ids, grid, image_token_id, merge) -> list:
    """The processor's step after the chat template: each image's one <|image_pad|> becomes one per
    token of the image (t h w / m^2), images in order."""
    n = [int(t) * int(h) * int(w) // merge ** 2 for t, h, w in np.asarray(grid).tolist()]
    found = sum(i == image_token_id for i in ids)
    if found != len(n):
        raise NpqwenError(f"the prompt has {found} image placeholder{'s' if found != 1 else ''} (<|image_pad|>) but "
                          f"{len(n)} image{'s were' if len(n) != 1 else ' was'} given")
    out, k = [], 0
    for i in ids:
        if i == image_token_id:
            out += [i] * n[k]
            k += 1
        else:
            out.append(i)
    return out


def user_message(text, n_images) -> dict:
    """A user turn with images first, as transformers' processors take it."""
    if not n_images:
        return {"role": "user", "content": text}
    return {"role": "user", "content": [{"type": "image"}] * n_images + [{"type": "text", "text": text}]}
