"""`python -m npqwen.explain [--model DIR] PROMPT`: walk one prompt through Qwen2, with real numbers.

The seed walkthrough, step by step on layer 0 (RMSNorm, q/k/v with biases, RoPE, grouped-query
attention, o_proj, residual, SwiGLU MLP), reading the weights by their checkpoint names as the seed
does, then a logit-lens line for every layer (what the model would predict if it stopped there) and
the final next-token distribution. `--plot FILE.png` (needs matplotlib) also draws the pictures of
npqwen/plots.py: which kv head each query head reads, attention maps of the layers and heads chosen
with `--layers` and `--heads`, and the logit-lens grid (layers x positions, top token and its
probability). notebooks/qwen2_walkthrough.ipynb is the same walk as a notebook.
"""

import argparse
import sys

import numpy as np

from .cli import DEMO_MODEL
from .errors import NpqwenError
from .hub import add_revision_option, resolve_model
from .model import load_model
from .tokenizer import token_bytes
from .primitives import (NEG, apply_rope, causal_mask, linear, repeat_kv, rms_norm, rope_cos_sin, rope_inv_freq, silu,
                         softmax)
from .tokenizer import Tokenizer
from .deltanet import fused_ba_order, fused_qkvz_order, l2_normalise, softplus
from .quant import wrap
from .weights import open_checkpoint

LENS_POSITIONS = 20     # the logit-lens picture shows at most the last 20 prompt positions
MAX_MAPS = 32           # attention maps in one picture


class LayerTensors:
    """Decoder layer i's weights by their checkpoint names ("self_attn.q_proj.weight", ...), upcast
    to float32 on first use and kept as the file stores them ([out, in]), as the seed walkthrough
    reads them from the state dict. Lazy, so that a mixture of experts upcasts only the experts used."""

    def __init__(self, tensors, i, prefix="model."):
        self.tensors, self.prefix, self.done = tensors, f"{prefix}layers.{i}.", {}

    def __contains__(self, name):
        return self.prefix + name in self.tensors

    def __getitem__(self, name):
        if name not in self.done:
            self.done[name] = np.asarray(self.tensors[self.prefix + name], np.float32)
        return self.done[name]

    def proj(self, h, name):  # a linear layer: h W^T (+ b); the file stores W as [out, in]
        y = h @ self[f"{name}.weight"].T
        return y + self[f"{name}.bias"] if f"{name}.bias" in self else y


def layer_by_hand(cfg, tensors, x, i):  # [t, d] -> dict of every intermediate of decoder layer i
    """Decoder layer i written out step by step from the checkpoint's tensors, as the seed walkthrough
    does it (one matmul per projection, repeat_kv and explicit attention weights, for reading)."""
    w = LayerTensors(tensors, i, cfg.weight_prefix)

    def norm(name):  # the hybrid generation stores its RMSNorm weights zero-centred: applied as 1 + w
        return w[name] + np.float32(1) if cfg.hybrid else w[name]

    h = rms_norm(x, norm("input_layernorm.weight"), cfg.rms_norm_eps)
    if cfg.layer_types[i] == "linear_attention":
        steps = deltanet_by_hand(cfg, w, h)
    else:
        steps = attention_by_hand(cfg, w, h, i, norm)
    x1 = x + steps["attn_out"]
    g = rms_norm(x1, norm("post_attention_layernorm.weight"), cfg.rms_norm_eps)
    return dict(steps, normed=h, after_attention=x1, mlp_in=g, **mlp_by_hand(cfg, w, g, x1))


def attention_by_hand(cfg, w, h, i, norm):  # [t, d] -> the steps of (gated) self-attention
    t = h.shape[0]
    H, K, hd = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
    q = w.proj(h, "self_attn.q_proj")
    gate = None
    if cfg.hybrid:  # gated attention: each head's query, then its gate
        q, gate = np.split(q.reshape(t, H, 2 * hd), 2, axis=-1)
    q = q.reshape(t, H, hd)                                               # [t, H, hd]
    k = w.proj(h, "self_attn.k_proj").reshape(t, K, hd)                   # [t, K, hd]
    v = w.proj(h, "self_attn.v_proj").reshape(t, K, hd).transpose(1, 0, 2)  # [K, t, hd]
    q_raw = q.transpose(1, 0, 2)
    if "self_attn.q_norm.weight" in w:  # Qwen3 on: each head of q and k RMS-normalised, before RoPE
        q = rms_norm(q, norm("self_attn.q_norm.weight"), cfg.rms_norm_eps)
        k = rms_norm(k, norm("self_attn.k_norm.weight"), cfg.rms_norm_eps)
    q, k = q.transpose(1, 0, 2), k.transpose(1, 0, 2)                     # [heads, t, hd]
    q_normed = q
    inv_freq, scale = rope_inv_freq(cfg.rotary_dim, cfg.rope_parameters, cfg.max_position_embeddings, seq_len=t)
    cos, sin = rope_cos_sin(inv_freq, np.arange(t)[None], scale)          # [1, t, rotary dims]
    q, k = apply_rope(q[None], cos, sin)[0], apply_rope(k[None], cos, sin)[0]
    kr, vr = repeat_kv(k[None], H // K)[0], repeat_kv(v[None], H // K)[0]   # [H, t, hd]
    mask = causal_mask(t, t, window=cfg.layer_window(i))[0]
    scores = q @ kr.transpose(0, 2, 1) * np.float32(hd ** -0.5) + mask
    weights = softmax(scores)                                             # [H, t, t]
    heads = (weights @ vr).transpose(1, 0, 2).reshape(t, H * hd)
    if gate is not None:  # each head scaled by its gate, in (0, 1)
        heads = heads * (1 / (1 + np.exp(-gate.reshape(t, H * hd))))
    attn = w.proj(heads, "self_attn.o_proj")
    return dict(q_raw=q_raw, q_normed=q_normed, q=q, k=k, v=v, inv_freq=inv_freq, scores=scores,
                attention=weights, masked=mask[0] <= NEG / 2, attn_out=attn)


def deltanet_by_hand(cfg, w, h):  # [t, d] -> the steps of a Gated DeltaNet layer, token by token
    t = h.shape[0]
    Hk, Hv, dk, dv = cfg.linear_num_key_heads, cfg.linear_num_value_heads, cfg.linear_key_head_dim, \
        cfg.linear_value_head_dim
    if cfg.deltanet_layout == "fused":  # Qwen3-Next: rows grouped per key head; put them flat first
        qkvz = h @ w["linear_attn.in_proj_qkvz.weight"][fused_qkvz_order(Hk, Hv, dk, dv)].T
        b, a = np.split(h @ w["linear_attn.in_proj_ba.weight"][fused_ba_order(Hk, Hv)].T, 2, axis=-1)
        qkv, z = qkvz[:, :2 * Hk * dk + Hv * dv], qkvz[:, 2 * Hk * dk + Hv * dv:]
    else:
        qkv, z = w.proj(h, "linear_attn.in_proj_qkv"), w.proj(h, "linear_attn.in_proj_z")
        b, a = w.proj(h, "linear_attn.in_proj_b"), w.proj(h, "linear_attn.in_proj_a")
    conv = w["linear_attn.conv1d.weight"][:, 0]                           # [channels, kernel]
    kernel = conv.shape[1]
    padded = np.concatenate([np.zeros((kernel - 1, qkv.shape[1]), np.float32), qkv])
    qkv = silu(sum(conv[:, j] * padded[j:j + t] for j in range(kernel)))  # causal, one filter per channel
    q, k, v = np.split(qkv, [Hk * dk, 2 * Hk * dk], axis=-1)
    q = l2_normalise(q.reshape(t, Hk, dk)) * np.float32(dk ** -0.5)
    k = l2_normalise(k.reshape(t, Hk, dk))
    v = v.reshape(t, Hv, dv)
    beta = 1 / (1 + np.exp(-b))                                            # [t, Hv], the write rate
    g = -np.exp(w["linear_attn.A_log"]) * softplus(a + w["linear_attn.dt_bias"])   # [t, Hv], log decay
    S = np.zeros((Hv, dk, dv), np.float32)
    out = np.zeros((t, Hv, dv), np.float32)
    r = Hv // Hk
    for i in range(t):                                                    # the recurrence, one token at a time
        for head in range(Hv):
            kh, qh = k[i, head // r], q[i, head // r]                     # key head head // r serves it
            S[head] *= np.exp(g[i, head])
            S[head] += beta[i, head] * np.outer(kh, v[i, head] - S[head].T @ kh)
            out[i, head] = S[head].T @ qh
    normed = rms_norm(out, w["linear_attn.norm.weight"], cfg.rms_norm_eps) * silu(z.reshape(t, Hv, dv))
    attn = w.proj(normed.reshape(t, Hv * dv), "linear_attn.out_proj")
    return dict(beta=beta, decay=np.exp(g), state=S, deltanet_out=out, attn_out=attn)


def mlp_by_hand(cfg, w, g, x1):  # the post-attention-norm input [t, d] -> the MLP's steps and the layer output
    def swiglu(h, name):  # an MLP (or one expert): down(silu(gate(h)) * up(h))
        gate, up = w.proj(h, f"{name}.gate_proj"), w.proj(h, f"{name}.up_proj")
        return w.proj(silu(gate) * up, f"{name}.down_proj"), gate, up

    if "mlp.gate.weight" not in w:  # a dense SwiGLU MLP
        mlp, gate, up = swiglu(g, "mlp")
        return dict(gate=gate, up=up, out=x1 + mlp)
    # a sparse mixture of experts: the router picks k experts per token, their outputs are mixed
    router_probs = softmax(w.proj(g, "mlp.gate"))                         # [t, E], over all experts
    chosen = np.argsort(-router_probs, axis=-1, kind="stable")[:, :cfg.num_experts_per_tok]   # [t, k]
    mix = np.take_along_axis(router_probs, chosen, -1)
    if cfg.norm_topk_prob:
        mix = mix / mix.sum(-1, keepdims=True)
    mlp = np.zeros_like(g)
    fused = "mlp.experts.gate_up_proj" in w
    for e in np.unique(chosen):                                           # each expert over its tokens
        rows, slot = np.nonzero(chosen == e)
        if fused:  # Qwen3.5-MoE's files: all experts in two tensors, gate rows then up rows
            gate, up = np.split(g[rows] @ w["mlp.experts.gate_up_proj"][e].T, 2, axis=-1)
            out = (silu(gate) * up) @ w["mlp.experts.down_proj"][e].T
        else:
            out = swiglu(g[rows], f"mlp.experts.{e}")[0]
        mlp[rows] += mix[rows, slot, None] * out
    if "mlp.shared_expert_gate.weight" in w:  # a shared expert every token uses, sigmoid-gated
        mlp += 1 / (1 + np.exp(-w.proj(g, "mlp.shared_expert_gate"))) * swiglu(g, "mlp.shared_expert")[0]
    return dict(router_probs=router_probs, chosen=chosen, mix=mix, out=x1 + mlp)


def router_of(model, hidden, i):  # [t, d] (the input of sparse layer i) -> router probabilities [t, E]
    """What the router of layer i saw: the layer's own attention block, then its post-attention norm."""
    layer, cfg = model.layers[i], model.config
    x1 = hidden + layer.mixer(rms_norm(hidden[None], layer.input_norm, cfg.rms_norm_eps), cfg,
                              _context(cfg, len(hidden)), None, i)[0]
    return softmax(linear(rms_norm(x1, layer.post_norm, cfg.rms_norm_eps), layer.mlp.router))


def _context(cfg, t):
    from .attention import Context
    inv_freq, scale = rope_inv_freq(cfg.rotary_dim, cfg.rope_parameters, cfg.max_position_embeddings, seq_len=t)
    cos, sin = rope_cos_sin(inv_freq, np.arange(t)[None], scale)
    return Context(cos, sin, padding=None)


def logit_lens(model, hidden_states, positions):
    """The final norm and LM head applied to the embedding and to every layer's output, at the last
    `positions` prompt positions. -> top token [layers + 1, P], its probability, and each layer's
    whole distribution at the last position [layers, vocab]."""
    n = model.config.num_hidden_layers
    top, top_p, last = [], [], []
    for i, hs in enumerate(hidden_states):  # the embedding, then each layer's output
        h = hs[0, -positions:]
        if i < n:  # the last entry is already normed (transformers' convention)
            h = rms_norm(h, model.norm, model.config.rms_norm_eps)
        probs = softmax(model.lm_head_logits(h[None])[0])               # [P, vocab]
        top.append(probs.argmax(-1))
        top_p.append(probs.max(-1))
        if i > 0:
            last.append(probs[-1])
    return np.stack(top), np.stack(top_p), np.stack(last)


def walk(model, tensors, ids, positions=LENS_POSITIONS):
    """Run the prompt and collect everything the explanation prints and draws. -> dict of arrays."""
    out = model.forward(np.array([ids]), output_hidden_states=True)
    r = layer_by_hand(model.config, tensors, out.hidden_states[0][0], 0)
    top, top_p, lens = logit_lens(model, out.hidden_states, min(positions, len(ids)))
    residual_norms = [float(np.linalg.norm(hh[0, -1])) for hh in out.hidden_states[1:]]
    cfg = model.config
    routers = {i: router_of(model, out.hidden_states[i][0], i) for i in range(cfg.num_hidden_layers)
               if cfg.is_sparse(i)}
    return dict(r, routers=routers, embeddings=out.hidden_states[0][0], layer0_out=r["out"], lens=lens, lens_top=top,
                lens_top_p=top_p, residual_norms=residual_norms, next_probs=softmax(out.logits[0, -1]),
                hidden_states=out.hidden_states)


def show(tok, i):
    """A token as text, or as its bytes when it holds part of a character (which alone decodes to '\ufffd')."""
    if tok is None:
        return str(i)
    text = tok.decode([i])
    return repr(token_bytes(tok, i)) if "\ufffd" in text else repr(text)


def explain(model, tensors, tok, ids, file=sys.stdout, top=10):
    cfg = model.config
    d = cfg.hidden_size
    r = walk(model, tensors, ids)
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
    if cfg.layer_types[0] == "linear_attention":
        explain_deltanet(p, cfg, r, t)
    else:
        explain_attention(p, cfg, r, ids, tok)
    if "gate" in r:
        p(f"  post-attention RMSNorm, then SwiGLU: down(silu(gate) * up), gate and up {list(r['gate'].shape)}"
          f" -> {list(r['layer0_out'].shape)}, added to the residual stream")
    else:
        p(f"  post-attention RMSNorm, then a sparse mixture of {cfg.num_experts} experts: the router's softmax "
          f"picks {cfg.num_experts_per_tok} per token" + (", renormalised to sum to 1" if cfg.norm_topk_prob else "")
          + (", plus a sigmoid-gated shared expert" if cfg.shared_expert_intermediate_size else "")
          + f" -> {list(r['layer0_out'].shape)}, added to the residual stream")
    if r["routers"]:
        k = cfg.num_experts_per_tok
        p(f"== the router of each sparse layer, last token: probabilities over {cfg.num_experts} experts, "
          f"the {k} chosen marked *")
        for i, probs in r["routers"].items():
            last = probs[-1]
            chosen = set(np.argsort(-last, kind="stable")[:k].tolist())
            shown = np.argsort(-last, kind="stable")[:max(k + 2, 6)]
            p(f"  layer {i:2d}  " + "  ".join(f"{'*' if e in chosen else ' '}e{e} {last[e]:.3f}" for e in shown))
    if cfg.hybrid:
        explain_layer_pattern(p, cfg, t)
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


def explain_attention(p, cfg, r, ids, tok):
    H, K, hd, t = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim, len(ids)
    bq, bk, bv = (" + bq", " + bk", " + bv") if cfg.qkv_bias else ("", "", " (no biases)")
    p(f"  q = x Wq{bq} -> {H} heads x {hd}: {list(r['q'].shape)};  k, v = x Wk{bk}, x Wv{bv} -> "
      f"{K} heads: {list(r['k'].shape)}")
    if cfg.qk_norm:
        rms = np.sqrt(np.mean(r["q_raw"][0, -1] ** 2))
        p(f"  q_norm, k_norm (Qwen3): RMSNorm over the {hd} dims of each head, before RoPE, so no head's "
          f"scores can grow without bound; q head 0, last token: rms {rms:.4f} -> "
          f"{np.sqrt(np.mean(r['q_normed'][0, -1] ** 2)):.4f} (after the weight)")
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
    p(f"  o_proj ({'with' if cfg.o_proj_bias else 'no'} bias) -> {list(r['attn_out'].shape)}, "
      f"added to the residual stream")


def explain_deltanet(p, cfg, r, t):
    Hk, Hv, dk, dv = cfg.linear_num_key_heads, cfg.linear_num_value_heads, cfg.linear_key_head_dim, \
        cfg.linear_value_head_dim
    p(f"  layer 0 is a Gated DeltaNet layer (linear attention): no attention scores, but a state S per value "
      f"head, [{dk} x {dv}], updated token by token")
    p(f"  projections: q, k ({Hk} key heads x {dk}), v ({Hv} value heads x {dv}), z (the output gate), "
      f"b and a (one per value head); a causal convolution of kernel {cfg.linear_conv_kernel_dim} over q, k, v "
      f"(each channel mixes its own last {cfg.linear_conv_kernel_dim} inputs), then SiLU; q and k L2-normalised")
    p(f"  each key head serves {Hv // Hk} value heads; per token: S = decay * S;  S += beta * k (v - S^T k)^T;  "
      f"out = S^T q")
    p("  last token, per value head: beta = sigmoid(b) (how much it writes), decay = exp(g) (how much of S it keeps)")
    for head in range(min(Hv, 8)):
        p(f"    head {head:2d}  beta {r['beta'][-1, head]:.3f}  decay {r['decay'][-1, head]:.3f}  "
          f"|S| {np.linalg.norm(r['state'][head]):.3f}")
    p(f"  RMSNorm(out) * silu(z), out_proj -> {list(r['attn_out'].shape)}, added to the residual stream")


def explain_layer_pattern(p, cfg, t):
    """Which layers are linear, which full, and what each keeps for this prompt."""
    from .info import summary
    s = summary(cfg)
    kinds = "".join("L" if kind == "linear_attention" else "F" for kind in cfg.layer_types)
    p(f"== the layers: {kinds} (L = Gated DeltaNet, F = full attention)")
    state = s["state_bytes_float32"] / s["linear_layers"]
    kv = 2 * cfg.num_key_value_heads * cfg.head_dim * 4 * t
    p(f"  a DeltaNet layer keeps {state / 1024:.1f} KiB of state (float32) whatever the prompt's length; "
      f"a full-attention layer's KV cache holds {kv / 1024:.1f} KiB for these {t} tokens "
      f"({2 * cfg.num_key_value_heads * cfg.head_dim * 4 / 1024:.1f} KiB per token), so the KV cache "
      f"outgrows the state after {int(state // (kv / t)) + 1} tokens")


def default_heads(cfg):
    """The first query head of the first and the last kv head: two heads that read different keys."""
    G, K = cfg.num_key_value_groups, cfg.num_key_value_heads
    return sorted({0, (K - 1) * G})


def pictures(cfg, tensors, r, ids, tok, fonts, layers, heads):
    """The panels `--plot` draws, in rows: the GQA wiring, attention maps, the routers of the chosen
    layers that are sparse, then (mixture-of-experts models) the routing of every sparse layer beside
    each expert's load, and the logit lens."""
    from .plots import (attention_panel, expert_load_panel, gqa_panel, logit_lens_panel, router_panel, routing_panel,
                        token_label)

    H, K, G = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.num_key_value_groups
    labels = [token_label(tok, i, fonts) for i in ids]
    rows = [[gqa_panel(H, K, shown=heads)]] if K < H else []
    maps = []
    for i in [i for i in layers if cfg.layer_types[i] != "linear_attention"]:  # DeltaNet layers have no map
        a = layer_by_hand(cfg, tensors, r["hidden_states"][i][0], i)
        maps += [attention_panel(a["attention"][h], labels, f"layer {i}, query head {h} (reads kv head {h // G})",
                                 masked=a["masked"]) for h in heads]
    per_row = max(len(heads), 1) if len(heads) <= 4 else 4
    rows += [maps[j:j + per_row] for j in range(0, len(maps), per_row)]
    routers = [router_panel(r["routers"][i], cfg.num_experts_per_tok, labels, f"layer {i}: the router")
               for i in layers if i in r["routers"]]
    rows += [routers[j:j + 4] for j in range(0, len(routers), 4)]
    if r["routers"]:  # every sparse layer at once: which experts each token runs, and how busy each expert is
        sparse = sorted(r["routers"])
        P = min(LENS_POSITIONS, len(ids))                                 # the last positions, as the logit lens
        probs = np.stack([r["routers"][i][-P:] for i in sparse])          # [sparse layers, P, E]
        title = (f"expert routing: the {cfg.num_experts_per_tok} of {cfg.num_experts} experts each token runs, "
                 f"in every sparse layer" + (f" (last {P} of {len(ids)} tokens)" if P < len(ids) else ""))
        rows.append([routing_panel(probs, cfg.num_experts_per_tok, sparse, labels[-P:], cfg.norm_topk_prob, title),
                     expert_load_panel(probs, cfg.num_experts_per_tok, sparse)])

    P = r["lens_top"].shape[1]
    n = cfg.num_hidden_layers
    nxt = list(ids[len(ids) - P + 1:])                                  # the prompt's real next tokens
    cells = [[token_label(tok, b, fonts, max_chars=8) for b in row] for row in r["lens_top"]]
    hits = np.array([[j < len(nxt) and b == nxt[j] for j, b in enumerate(row)] for row in r["lens_top"]])
    names = ["embedding"] + [f"layer {i}" for i in range(n - 1)] + [f"layer {n - 1} = output"]
    title = "logit lens: the top next-token guess at each layer and position"
    if P < len(ids):
        title += f" (last {P} of {len(ids)} positions)"
    rows.append([logit_lens_panel(r["lens_top_p"], cells, names, [labels[len(ids) - P + j] for j in range(P)],
                                  hits=hits, above=[labels[len(ids) - P + j + 1] for j in range(len(nxt))] + [""],
                                  title=title)])
    return rows


def plot(cfg, tensors, r, ids, tok, path, layers=None, heads=None, fonts=None):
    """Attention maps of the chosen layers and heads, and the logit lens, written to `path`."""
    try:
        from .plots import find_fonts, save
    except ImportError:
        raise NpqwenError("--plot needs matplotlib (pip install matplotlib)") from None
    full = [i for i, kind in enumerate(cfg.layer_types) if kind != "linear_attention"]
    layers = sorted({full[0], full[-1]}) if layers is None else layers
    heads = default_heads(cfg) if heads is None else heads
    if len(layers) * len(heads) > MAX_MAPS:
        raise NpqwenError(f"--layers and --heads ask for {len(layers) * len(heads)} attention maps; "
                          f"at most {MAX_MAPS} fit in one picture")
    fonts = find_fonts() if fonts is None else fonts
    rows = pictures(cfg, tensors, r, ids, tok, fonts, layers, heads)
    try:
        save(rows, path, fonts)
    except OSError as e:
        raise NpqwenError(f"--plot {path}: cannot write ({e.strerror or e})") from None
    except ValueError as e:  # an extension matplotlib cannot write
        raise NpqwenError(f"--plot {path}: {e}") from None


def pick(text, n, option):  # "0,3" or "all" -> sorted indices in [0, n)
    if text is None:
        return None
    if text.strip() == "all":
        return list(range(n))
    try:
        picked = sorted({int(x) for x in text.split(",")})
    except ValueError:
        picked = None
    if not picked or picked[0] < 0 or picked[-1] >= n:
        raise NpqwenError(f"{option} must be 'all' or comma-separated numbers from 0 to {n - 1}, found {text!r}")
    return picked


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2, no usage dump
        raise NpqwenError(message)


def main(argv=None):
    ap = _Parser(prog="python -m npqwen.explain", description=__doc__.splitlines()[0])
    ap.add_argument("prompt")
    ap.add_argument("--model", default=DEMO_MODEL, help="checkpoint folder or hub id")
    add_revision_option(ap)
    ap.add_argument("--plot", metavar="FILE.png",
                    help="also draw the attention maps and the logit lens to this picture (needs matplotlib)")
    ap.add_argument("--layers", help="layers whose attention to draw: 'all' or e.g. 0,3 (default: first and last)")
    ap.add_argument("--heads", help="query heads to draw: 'all' or e.g. 0,4 (default: the first head of the "
                                    "first and last kv head)")
    ap.add_argument("--image", action="append", metavar="PATH",
                    help="show how this image becomes tokens (a vision-language checkpoint; repeat for several): "
                         "the prompt is then the user message of a chat, with the images first")
    try:
        args = ap.parse_args(argv)
        if not args.prompt.strip():
            raise NpqwenError("the prompt is empty")
        if (args.layers or args.heads) and not args.plot:
            raise NpqwenError("--layers and --heads choose what --plot draws; add --plot FILE.png")
        if args.image and (args.plot or args.layers or args.heads):
            raise NpqwenError("--image prints the image's walk; --plot, --layers and --heads draw the text walk")
        args.model = resolve_model(args.model, args.revision)
        model = load_model(args.model)
        cfg = model.config
        if args.image:   # how an image becomes tokens (vision/explain.py)
            from .vision.explain import explain_image
            explain_image(model, Tokenizer(args.model), args.model, args.image, args.prompt)
            return 0
        if cfg.hyper_connections:   # Qwen3.8-Flash-Next: its own walk (explain_next.py)
            if args.plot:
                raise NpqwenError("--plot draws the attention maps of the Qwen2 walk; for Qwen3.8-Flash-Next "
                                  "explain prints its walk only")
            from .explain_next import explain_flash_next
            tok = Tokenizer(args.model)
            explain_flash_next(model, tok, tok.encode(args.prompt))
            return 0
        layers = pick(args.layers, cfg.num_hidden_layers, "--layers")
        heads = pick(args.heads, cfg.num_attention_heads, "--heads")
        tensors = wrap(open_checkpoint(args.model), cfg.quant, args.model)   # (a quantized checkpoint's weights dequantized as read)
        tok = Tokenizer(args.model)
        ids = tok.encode(args.prompt)
        r = explain(model, tensors, tok, ids)
        if args.plot:
            plot(cfg, tensors, r, ids, tok, args.plot, layers, heads)
    except NpqwenError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
