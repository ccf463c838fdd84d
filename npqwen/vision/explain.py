"""`python -m npqwen.explain --model DIR --image PATH "TEXT"`: how an image becomes tokens.

The walk, with the real numbers of this checkpoint and image: the resize (smart_resize), the grid of
patches, the patch vectors, the merge into language-model tokens, the placeholders the prompt gets,
the 3-D positions (M-RoPE) of the image's tokens and of the text after it, what the vision tower
makes of the patches, and the model's next token.
"""

import sys

import numpy as np

from ..errors import NpqwenError
from .images import load_image_processor, open_image, smart_resize
from .multimodal import expand_image_pads, rope_index, user_message
from .tower import encode


def explain_image(model, tok, folder, paths, text, file=sys.stdout):
    cfg, vcfg = model.config, model.config.vision
    if vcfg is None or model.vision is None:
        raise NpqwenError(f"--image: {folder} has no vision tower: it reads text only")

    def p(*a):
        print(*a, file=file)

    proc = load_image_processor(folder)
    P, m, T = proc.patch_size, proc.merge_size, proc.temporal_patch_size
    pictures = [open_image(path) for path in paths]
    pixel_values, grid = proc(pictures)
    p(f"== the vision tower ({vcfg.kind}: {'LayerNorm, learned positions' if vcfg.kind == 'qwen3' else 'RMSNorm, windows'})")
    p(f"{vcfg.depth} blocks of width {vcfg.hidden_size}, {vcfg.num_heads} heads; patches of {P} x {P} pixels x {T} "
      f"frames; {m} x {m} patches merge into one token of width {vcfg.out_hidden_size}")
    for k, (path, pic, g) in enumerate(zip(paths, pictures, grid.tolist())):
        h, w = smart_resize(pic.height, pic.width, P * m, proc.min_pixels, proc.max_pixels, path)
        p(f"\n== image {k + 1}: {path}")
        p(f"{pic.width} x {pic.height} pixels -> resized to {w} x {h}: sides multiples of {P * m} (patch x merge), "
          f"{h * w:,} pixels within [{proc.min_pixels:,}, {proc.max_pixels:,}]")
        p(f"grid: {g[0]} frame x {g[1]} x {g[2]} patches = {int(np.prod(g))} patches, each a vector of "
          f"{vcfg.in_channels} x {T} x {P} x {P} = {vcfg.patch_dim} numbers (a still image is {T} equal frames)")
        p(f"merged: {g[1] // m} x {g[2] // m} = {int(np.prod(g)) // m ** 2} tokens (<|image_pad|> in the prompt)")
    messages = [user_message(text, len(paths))]
    ids = expand_image_pads(tok.encode_chat(messages), grid, cfg.image_token_id, m)
    pads = np.asarray(ids)[None] == cfg.image_token_id
    positions, delta = rope_index(pads, None, grid, m)
    p(f"\n== the prompt: {len(ids)} tokens, {int(pads.sum())} of them image tokens")
    p("position (t, h, w) of each token, M-RoPE: text tokens count up; an image's tokens share its start and "
      "add their row and column; the text after it resumes at start + max(rows, columns)")
    shown_image = set()
    for i, tid in enumerate(ids):
        t, h, w = positions[:, 0, i].tolist()
        if tid == cfg.image_token_id:
            start = next(a for a in range(i, -1, -1) if a == 0 or ids[a - 1] != cfg.image_token_id)
            if start in shown_image:
                continue
            shown_image.add(start)
            n = next((z for z in range(i, len(ids)) if ids[z] != cfg.image_token_id), len(ids)) - i
            rows = positions[1, 0, i:i + n] - positions[1, 0, i]
            cols = positions[2, 0, i:i + n] - positions[2, 0, i]
            p(f"  {i:4d}-{i + n - 1:<4d} <|image_pad|> x {n}: t = {t}, h = {t} + row (0..{rows.max()}), "
              f"w = {t} + column (0..{cols.max()})")
            continue
        p(f"  {i:9d} {tok.decode([tid])!r:24} ({t}, {h}, {w})")
    d = int(delta[0])
    p(f"after the prompt, token i sits at position i {'-' if d < 0 else '+'} {abs(d)} (the cache keeps this shift: "
      f"rope_delta)")

    out = encode(model.vision, pixel_values, grid)
    embed = np.asarray(model.embed[np.asarray(ids)[~pads[0]]], np.float32)
    p(f"\n== what the tower gives the language model: {out.features.shape[0]} vectors of {out.features.shape[1]}")
    p(f"their mean length {np.linalg.norm(out.features, axis=-1).mean():.3g}, against {np.linalg.norm(embed, axis=-1).mean():.3g}"
      f" for the prompt's text embeddings" + (f"; DeepStack adds {len(out.deepstack)} more sets after the first "
                                                 f"{len(out.deepstack)} decoder layers" if out.deepstack else ""))
    logits = model.forward(np.asarray(ids)[None], pixel_values=pixel_values, image_grid_thw=grid).logits[0, -1]
    top = np.argsort(-logits)[:5]
    probs = np.exp(logits - logits.max())
    probs /= probs.sum()
    p("\n== the next token: " + ", ".join(f"{tok.decode([int(i)])!r} {probs[i]:.3f}" for i in top))
    return ids, positions, out
