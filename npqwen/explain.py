"""`python -m npqwen.explain [--model DIR] PROMPT`: walk one prompt through Qwen2, with real numbers.

The seed walkthrough, step by step on layer 0 (RMSNorm, q/k/v with biases, RoPE, grouped-query
attention, o_proj, residual, SwiGLU MLP), then a logit-lens line for every layer (what the model
would predict if it stopped there) and the final next-token distribution. `--plot FILE.png`
(needs matplotlib) draws attention maps and the logit lens as pictures.
"""

import argparse
import sys

import numpy as np

from .cli import DEMO_MODEL
from .errors import NpqwenError
from .model import load_model
from .primitives import (apply_rope, causal_mask, repeat_kv, rms_norm, rope_cos_sin, rope_inv_freq, silu,
                         softmax)
from .tokenizer import Tokenizer


def layer_by_hand(model, x, i):  # [t, d] -> dict of every intermediate of decoder layer i
    """Decoder layer i written out step by step, as the seed walkthrough does it (repeat_kv and
    explicit attention weights, for reading; the model itself uses the grouped path)."""
    cfg, w = model.config, model.layers[i]
    t = x.shape[0]
    H, K, hd = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
    h = rms_norm(x, w.input_norm, cfg.rms_norm_eps)
    # the model stacks q|k|v and gate|up side by side; here each projection gets its own matmul
    a, m = w.mixer, w.mlp
    (wq, wk, wv), (bq, bk, bv) = (np.split(x, [H * hd, (H + K) * hd], axis=-1) for x in (a.w_qkv, a.b_qkv))
    w_gate, w_up = np.split(m.w_gate_up, 2, axis=-1)
    q = (h @ wq + bq).reshape(t, H, hd).transpose(1, 0, 2)         # [H, t, hd]
    k = (h @ wk + bk).reshape(t, K, hd).transpose(1, 0, 2)         # [K, t, hd]
    v = (h @ wv + bv).reshape(t, K, hd).transpose(1, 0, 2)
    inv_freq, scale = rope_inv_freq(hd, cfg.rope_parameters, cfg.max_position_embeddings, seq_len=t)
    cos, sin = rope_cos_sin(inv_freq, np.arange(t)[None], scale)   # [1, t, hd]
    q, k = apply_rope(q[None], cos, sin)[0], apply_rope(k[None], cos, sin)[0]
    kr, vr = repeat_kv(k[None], H // K)[0], repeat_kv(v[None], H // K)[0]   # [H, t, hd]
    mask = causal_mask(t, t, window=cfg.layer_window(i))[0]
    scores = q @ kr.transpose(0, 2, 1) * np.float32(hd ** -0.5) + mask
    weights = softmax(scores)                                      # [H, t, t]
    attn = (weights @ vr).transpose(1, 0, 2).reshape(t, H * hd) @ a.wo
    x1 = x + attn
    g = rms_norm(x1, w.post_norm, cfg.rms_norm_eps)
    gate, up = g @ w_gate, g @ w_up
    out = x1 + (silu(gate) * up) @ m.w_down
    return dict(normed=h, q=q, k=k, v=v, inv_freq=inv_freq, scores=scores, attention=weights, attn_out=attn,
                after_attention=x1, gate=gate, up=up, out=out)


def walk(model, ids):
    """Run the prompt and collect everything the explanation prints. -> dict of arrays."""
    cfg = model.config
    out = model.forward(np.array([ids]), output_hidden_states=True)
    r = layer_by_hand(model, out.hidden_states[0][0], 0)

    # logit lens: the final norm and LM head applied to every layer's output at the last position
    lens = []
    for i in range(cfg.num_hidden_layers):
        hs = out.hidden_states[i + 1][0, -1]
        if i < cfg.num_hidden_layers - 1:  # the last entry is already normed (transformers' convention)
            hs = rms_norm(hs, model.norm, cfg.rms_norm_eps)
        lens.append(softmax(model.lm_head_logits(hs[None, None])[0, 0]))
    residual_norms = [float(np.linalg.norm(hh[0, -1])) for hh in out.hidden_states[1:]]
    return dict(r, embeddings=out.hidden_states[0][0], layer0_out=r["out"], lens=np.stack(lens),
                residual_norms=residual_norms, next_probs=softmax(out.logits[0, -1]),
                hidden_states=out.hidden_states)


def show(tok, i):
    return repr(tok.decode([i])) if tok is not None else str(i)


def explain(model, tok, ids, file=sys.stdout, top=10):
    cfg = model.config
    H, K, hd, d = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim, cfg.hidden_size
    r = walk(model, ids)
    t = len(ids)

    def p(*a):
        print(*a, file=file)

    p(f"== tokens: byte-level BPE split the prompt into {t} tokens")
    for i, tid in enumerate(ids):
        p(f"  {i:3d}  id {tid:6d}  {show(tok, tid)}")
    p(f"== embedding: embed_tokens[{cfg.vocab_size}, {d}] looked up -> {list(r['embeddings'].shape)}")
    p("== layer 0, step by step")
    p(f"  input RMSNorm: x / rms(x) * weight; rms of the last token {np.sqrt(np.mean(r['embeddings'][-1] ** 2)):.4f}"
      f" -> {np.sqrt(np.mean(r['normed'][-1] ** 2)):.4f} (before the weight: 1)")
    p(f"  q = x Wq + bq -> {H} heads x {hd}: {list(r['q'].shape)};  k, v = x Wk + bk, x Wv + bv -> "
      f"{K} heads: {list(r['k'].shape)}")
    G = H // K
    p(f"  grouped-query attention: {H} query heads share {K} key/value heads, {G} per kv head")
    for j in range(K):
        p(f"    kv head {j} serves query heads {j * G}..{j * G + G - 1}")
    p(f"  RoPE ({cfg.rope_parameters['rope_type']}, theta {cfg.rope_theta:g}): dimension pairs (i, i+{hd // 2}) "
      f"rotate by position x theta_i; theta_0..3 = {np.array2string(r['inv_freq'][:4], precision=4)}")
    for pos in range(min(t, 4)):
        angles = pos * r["inv_freq"][:4]
        p(f"    position {pos}: angles {np.array2string(angles, precision=4)} rad")
    p(f"  scores = q k^T / sqrt({hd}) + causal mask: {list(r['scores'].shape)}; softmax rows sum to 1")
    p("  attention of the last token over the prompt (head 0, and the mean over heads):")
    for j, tid in enumerate(ids):
        p(f"    {show(tok, tid):>14}  {r['attention'][0, -1, j]:.3f}  {r['attention'][:, -1, j].mean():.3f}")
    p(f"  o_proj (no bias) -> {list(r['attn_out'].shape)}, added to the residual stream")
    p(f"  post-attention RMSNorm, then SwiGLU: down(silu(gate) * up), gate and up {list(r['gate'].shape)}"
      f" -> {list(r['layer0_out'].shape)}, added to the residual stream")
    p("== every layer: logit lens (final norm + LM head on that layer's output, last position)")
    for i, probs in enumerate(r["lens"]):
        best = np.argsort(-probs, kind="stable")[:3]
        guesses = ", ".join(f"{show(tok, b)} {probs[b]:.2f}" for b in best)
        note = " (after the final norm)" if i == len(r["lens"]) - 1 else ""
        p(f"  layer {i:2d}  |residual| {r['residual_norms'][i]:9.2f}   {guesses}{note}")
    p("== next token")
    probs = r["next_probs"]
    for b in np.argsort(-probs, kind="stable")[:top]:
        p(f"  {show(tok, b):>14}  {probs[b]:.4f}")
    return r


def plot(model, r, ids, tok, path, layers=None, heads=(0,)):
    """Attention maps of the chosen layers and heads, and the logit lens as a heatmap."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise NpqwenError("--plot needs matplotlib (pip install matplotlib)") from None
    n = model.config.num_hidden_layers
    layers = [0, n - 1] if layers is None else layers
    labels = [tok.decode([i]) if tok is not None else str(i) for i in ids]
    maps = [(i, h, layer_by_hand(model, r["hidden_states"][i][0], i)["attention"][h])
            for i in layers for h in heads]
    fig, axes = plt.subplots(1, len(maps) + 1, figsize=(5 * (len(maps) + 1), 5))
    for ax, (i, h, a) in zip(axes, maps):
        ax.imshow(a, cmap="viridis", vmin=0, vmax=1)
        ax.set_title(f"layer {i}, head {h}: attention")
        ax.set_xticks(range(len(ids)), labels, rotation=90, fontsize=7)
        ax.set_yticks(range(len(ids)), labels, fontsize=7)
    lens = r["lens"]                                  # [layers, vocab]
    top = np.argsort(-r["next_probs"], kind="stable")[:8]
    ax = axes[-1]
    ax.imshow(lens[:, top], cmap="magma", aspect="auto", vmin=0)
    ax.set_title("logit lens: P(final top-8 tokens) by layer")
    ax.set_xticks(range(len(top)), [tok.decode([int(b)]) if tok is not None else str(b) for b in top],
                  rotation=90, fontsize=8)
    ax.set_yticks(range(n), [f"layer {i}" for i in range(n)], fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m npqwen.explain", description=__doc__.splitlines()[0])
    ap.add_argument("prompt")
    ap.add_argument("--model", default=DEMO_MODEL)
    ap.add_argument("--plot", help="also draw attention and logit-lens pictures to this PNG (needs matplotlib)")
    try:
        args = ap.parse_args(argv)
        if not args.prompt.strip():
            raise NpqwenError("the prompt is empty")
        model = load_model(args.model)
        tok = Tokenizer(args.model)
        ids = tok.encode(args.prompt)
        r = explain(model, tok, ids)
        if args.plot:
            plot(model, r, ids, tok, args.plot)
    except NpqwenError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
