"""`python -m npqwen.explain` for Qwen3.8-Flash-Next: one prompt's last token through what is new in
it, with the checkpoint's own numbers: the streams (hyper.py), the n-gram hash and what its
embeddings add (engram.py), the blocks QSA lets the token read (qsa.py), then a logit lens through
the final mixer and the next-token distribution."""

import sys

import numpy as np

from .engram import eos_id, ngram_rows, shifted_ids
from .hyper import read, stream_norm
from .primitives import apply_rope, linear, rms_norm, softmax


def explain_flash_next(model, tok, ids, file=sys.stdout, top=10):
    from .explain import show
    cfg = model.config
    hc, d, t, eps = cfg.hc_count, cfg.hidden_size, len(ids), cfg.rms_norm_eps
    out = model.forward(np.array([ids]), output_hidden_states=True)
    hidden = out.hidden_states                                          # L + 1 arrays [1, t, hc * d]

    def p(*a):
        print(*a, file=file)

    p(f"== tokens: {t}")
    for i, tid in enumerate(ids):
        p(f"  {i:3d}  id {tid:6d}  {show(tok, tid)}")
    p(f"== embedding: embed_tokens[{cfg.vocab_size}, {d}] looked up, then copied into {hc} streams -> "
      f"[{t}, {hc} x {d}]; no norm around any layer: each block reads a mix of the streams and writes into each")

    first = model.layers[0]
    x, inj = read(hidden[0], first.attn_hc, hc, eps)
    p("== layer 0 reads the streams (last token): RMSNorm each stream, weights m = sigmoid(W_up silu(W_down n / hc)),"
      f" x = mean over streams of m * n -> [{d}]; |x| = {np.linalg.norm(x[0, -1]):.3f}")
    p("  and writes its output y back as S[k] += inj[k] * y, inj = 2 sigmoid(W_inject n / hc): "
      + "  ".join(f"stream {k} {v:.3f}" for k, v in enumerate(inj[0, -1])))

    for i, layer in enumerate(model.layers):
        if layer.ple is not None:
            _explain_ngrams(p, cfg, layer.ple, hidden[i], ids, i, tok)
    for i, kind in enumerate(cfg.layer_types):
        if kind == "indexed_attention":
            _explain_qsa(p, cfg, model.layers[i], hidden[i], i)
            break

    p("== every layer: logit lens (the final mixer and the LM head on that layer's streams, last position)")
    for i, S in enumerate(hidden):
        probs = softmax(model.lm_head_logits(S[:, -1:])[0, -1])
        best = np.argsort(-probs, kind="stable")[:3]
        norms = np.linalg.norm(S[0, -1].reshape(hc, d), axis=-1)
        p(f"  {'embedding' if i == 0 else f'layer {i - 1:2d}'}  |streams| {' '.join(f'{n:7.2f}' for n in norms)}   "
          + ", ".join(f"{show(tok, b)} {probs[b]:.2f}" for b in best))
    p("== next token (after the final mixer)")
    probs = softmax(out.logits[0, -1])
    for b in np.argsort(-probs, kind="stable")[:top]:
        p(f"  {show(tok, b):>14}  {probs[b]:.4f}")
    return dict(hidden_states=hidden, next_probs=probs)


def _explain_ngrams(p, cfg, w, S, ids, layer, tok):
    from .explain import show
    n, eos, H = cfg.ngram_size, eos_id(cfg), cfg.heads_per_ngram
    history = np.array([[eos] * (n - 1) + list(ids)], np.int64)
    context = [int(shifted_ids(history, s, eos)[0, -1]) for s in range(n)]
    p(f"== n-gram embeddings before layer {layer} (ple_layer_ids {cfg.ple_layer_ids}, one-indexed), last token: its "
      f"context, newest first, is {', '.join(show(tok, c) for c in context)} (eos before the start and after any eos)")
    p(f"  multipliers {', '.join(str(int(m)) for m in w.multipliers)}: order g mixes XOR of id x multiplier over "
      f"the last g ids; head h takes that modulo its prime, plus its offset")
    rows = ngram_rows(history, eos, w.multipliers, w.sizes, w.offsets, H)[0, -1]
    mixed = None
    for g in range(2, n + 1):
        mixed = int(context[0] * w.multipliers[0]) if mixed is None else mixed
        mixed ^= int(context[g - 1] * w.multipliers[g - 1])
        heads = range((g - 2) * H, (g - 1) * H)
        p(f"  {g}-gram: mixed {mixed}; " + "; ".join(
            f"head {h}: % {int(w.sizes[h])} + {int(w.offsets[h])} = row {int(rows[h])}" for h in list(heads)[:3])
          + (f"; ... ({H} heads)" if H > 3 else ""))
    e = w.table.rows(rows[None])                                         # [1, heads, width]
    k = stream_norm(linear(e.reshape(1, -1), w.w_key), w.norm_key, cfg.hc_count, cfg.rms_norm_eps)
    q = stream_norm(S[0, -1:], w.norm_query, cfg.hc_count, cfg.rms_norm_eps)
    d = cfg.hidden_size
    g = (k.reshape(cfg.hc_count, d) * q.reshape(cfg.hc_count, d)).sum(-1) / np.sqrt(d)
    g = np.sqrt(np.maximum(np.abs(g), 1e-6)) * np.sign(g)
    p(f"  {cfg.ngram_heads} rows of {e.shape[-1]} -> [{cfg.ple_embed_dim}]; each stream's gate sigmoid(sign(g) "
      f"sqrt|g|), g = <key, stream> / sqrt(d): " + "  ".join(f"{1 / (1 + np.exp(-v)):.3f}" for v in g)
      + "; then a dilated convolution over the last tokens' values, added to every stream")


def _explain_qsa(p, cfg, layer, S, i):
    from .qsa import Selection
    from .primitives import rope_cos_sin, rope_inv_freq
    x, _ = read(S, layer.attn_hc, cfg.hc_count, cfg.rms_norm_eps)
    t, n, di, R = x.shape[1], cfg.indexer_n_heads, cfg.indexer_head_dim, cfg.indexer_compress_ratio
    qk = linear(x, layer.mixer.w_index)
    inv_freq, scale = rope_inv_freq(cfg.rotary_dim, cfg.rope_parameters, cfg.max_position_embeddings, seq_len=t)
    cos, sin = rope_cos_sin(inv_freq, np.arange(t)[None], scale)
    q = apply_rope(rms_norm(qk[..., :n * di].reshape(1, t, n, di), layer.mixer.index_q_norm, cfg.rms_norm_eps)
                   .transpose(0, 2, 1, 3), cos, sin)
    ctx = type("Ctx", (), dict(padding=None, inv_freq=inv_freq, rope_scale=scale))
    sel = Selection(q, np.ascontiguousarray(qk[..., n * di:]), layer.mixer, cfg, ctx)
    blocks, topk = t // R, cfg.indexer_budget // R
    keep = sel.keep(t - 1, t, t)[0, 0, 0]
    p(f"== QSA at layer {i}, last token: it sees {t} tokens, {blocks} complete blocks of {R}; it reads "
      f"{int(keep.sum())} of them")
    if blocks <= topk:
        p(f"  no more than {topk} complete blocks (indexer_budget {cfg.indexer_budget} / {R}): every token is read, "
          f"as in dense attention; a longer prompt makes it choose")
        return
    scores = np.maximum(np.einsum("hd,nd->nh", q[0, :, -1], sel.block_keys[0, :blocks]), 0).sum(-1) * sel.scale
    chosen = [j for j in range(blocks) if keep[j * R]]
    p(f"  indexer scores (sum over {n} heads of relu(q . block key) / sqrt({di})): "
      + " ".join(f"{'*' if j in chosen else ''}{s:.2f}" for j, s in enumerate(scores)))
    p(f"  the top {topk} blocks (*) and the tail of {t - blocks * R} newest tokens are read; the rest are masked")
