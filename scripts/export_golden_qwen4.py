"""Export golden reference data for qwen4_exp (Qwen3.8-Flash-Next) from transformers, once. Not used by the package.

The companion of export_golden.py (whose helpers it imports and whose conventions it follows) for the hyper-connection
/ PLE n-gram / QSA sparse-attention architecture of transformers 5.23's `qwen4_exp`. Two cases:

- qwen4_exp_text: Qwen4ExpForCausalLM as transformers' save_pretrained writes it: one tensor set per expert, the PLE
  n-gram table cut by torch.chunk into `shard_{i}` tensors (split_ngram_parts 29 on 640 rows gives 28 shards of 23
  rows and a last one of 19: more than 10 shards, so shard_10 must follow shard_9, one shard fewer than
  split_ngram_parts, and a shorter last shard), config.json with "indexed_attention", seed (777, not the default),
  number_of_conv_states.
- qwen4_exp_released: Qwen4ExpForConditionalGeneration as Qwen released it: config.json with the released keys (text
  layer_types written "full_attention", mtp / mamba_ssm_dtype / full_attention_interval / language_model_only, no
  seed, no number_of_conv_states), model.language_model.* with FUSED experts, the n-gram shards (12 of 54 rows, the
  last 46) and the three I64 PLE buffers, a random tiny vision tower model.visual.* and the 31 random mtp.* tensors
  of the release's naming, in two `model.safetensors-0000i-of-00002.safetensors` shards with an index.

Each model is built tiny (vocab 320, hidden 64, 3 Gated DeltaNet layers + 1 QSA layer, hc_count 4, PLE on the
one-indexed layer 2, 8 experts top-2 with a shared expert), every parameter randomised as export_golden.py does, saved
in bf16, reloaded from its folder in float32 with eager attention and eager experts, and the references come from that
reload: per prompt the logits, the hyper-connection streams entering each decoder layer and leaving the last one
(p<k>.hidden.<i>, [b, t, hc*H]), the final mixer output (p<k>.mixer, [b, t, H]) and greedy generate tokens (checked
against an uncached argmax loop).

Choices hang on no near tie: the QSA block choice (k-th vs (k+1)-th block score; relu makes exact-zero ties common and
torch's topk breaks ties in no reproducible order), MoE routing and greedy decoding are all checked on every real token
of the prompts, of generate's calls and of a forward over prompt + generated tokens. To get there the indexer, each
router and the lm_head are re-drawn, lowest layer first, until the prompts and their greedy continuations clear every
margin, in rounds until the continuations stop changing (a re-draw mixes a fresh draw of the same rule in with a
growing weight, so that the first re-draws only move the choices that sat on a tie); the whole model is re-drawn from
the next seed if that fails. Each of QSA, the n-gram hash and the hyper-connections (and the shard order and the eos
reset of the n-gram context) is then changed on the same weights and must move the logits by more than 1e-2.

Written with transformers 5.23.0 / torch 2.13.0 (CPU); the reference forwards are float32, eager attention and
experts. Default output: golden/; `--out DIR` writes DIR/checkpoints/<case>/ and DIR/references/<case>.* instead.

    /tmp/goldenv/bin/python scripts/export_golden_qwen4.py --out /tmp/golden_q4
"""

import argparse
import contextlib
import json
import math
import os
import shutil
import sys
import types

import numpy as np
import torch
import transformers
from safetensors.numpy import save_file
from transformers import Qwen4ExpConfig, Qwen4ExpForCausalLM, Qwen4ExpForConditionalGeneration, Qwen4ExpTextConfig
from transformers.models.qwen4_exp import modeling_qwen4_exp as mq4

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import export_golden as eg  # noqa: E402  the conventions and helpers of the other cases

L, IDX, F = "linear_attention", "indexed_attention", "full_attention"
# The released structure, tiny: export_golden's hybrid sizes (head_dim 32 of which 8 rotate, 2 key / 4 value DeltaNet
# heads of 16 / 12, 8 experts top-2 of 16 with a shared expert of 32) plus qwen4_exp's own parts.
TEXT = dict(eg.HYBRID_BASE, **eg.HYBRID_MOE, norm_topk_prob=True, layer_types=[L, L, L, IDX],
            hc_count=4, hc_lowrank=16,
            # PLE on one-indexed layer 2 (layers.1, a DeltaNet layer); 2 orders x 4 heads = 8 heads of 48 / 8 = 6 dims
            # (ple_embed_dim 48 is not hidden_size, so key_proj / value_proj are not square); head primes 53 ... 83
            # (546 rows) padded to 640
            ple_layer_ids=[2], ple_embed_dim=48, ple_conv_kernel_size=4, ngram_size=3, heads_per_ngram=4,
            ngram_vocab_size_base=50, make_ngram_vocab_size_divisible_by=128,
            indexer_n_heads=2, indexer_kv_heads=1, indexer_head_dim=16, indexer_budget=8, indexer_compress_ratio=4,
            output_gate_type="sigmoid")
# The released config.json's keys (/work/shared/assets/qwen4_exp/configs/Qwen3.8-Flash-Next/config.json)
RELEASED_TOP_KEYS = {"architectures", "image_token_id", "language_model_only", "model_type", "text_config",
                     "tie_word_embeddings", "video_token_id", "vision_config", "vision_end_token_id",
                     "vision_start_token_id"}
RELEASED_TEXT_KEYS = {
    "attention_bias", "attention_dropout", "bos_token_id", "dtype", "eos_token_id", "full_attention_interval",
    "hc_count", "hc_lowrank", "head_dim", "heads_per_ngram", "hidden_act", "hidden_size", "indexer_budget",
    "indexer_compress_ratio", "indexer_head_dim", "indexer_kv_heads", "indexer_n_heads", "initializer_range",
    "layer_types", "linear_conv_kernel_dim", "linear_key_head_dim", "linear_num_key_heads", "linear_num_value_heads",
    "linear_value_head_dim", "make_ngram_vocab_size_divisible_by", "mamba_ssm_dtype", "max_position_embeddings",
    "model_type", "moe_intermediate_size", "mtp", "mtp_num_hidden_layers", "mtp_use_dedicated_embeddings", "ngram_size",
    "ngram_vocab_size_base", "num_attention_heads", "num_experts", "num_experts_per_tok", "num_hidden_layers",
    "num_key_value_heads", "output_gate_type", "output_router_logits", "pad_token_id", "partial_rotary_factor",
    "ple_conv_kernel_size", "ple_embed_dim", "ple_layer_ids", "rms_norm_eps", "rope_parameters",
    "router_aux_loss_coef", "shared_expert_intermediate_size", "split_ngram_parts", "tie_word_embeddings", "use_cache",
    "vocab_size"}
RELEASED_VISION_KEYS = {"deepstack_visual_indexes", "depth", "hidden_act", "hidden_size", "in_channels",
                        "initializer_range", "intermediate_size", "model_type", "num_heads", "num_position_embeddings",
                        "out_hidden_size", "patch_size", "spatial_merge_size", "temporal_patch_size"}
RELEASED_CONFIG = "/work/shared/assets/qwen4_exp/configs/Qwen3.8-Flash-Next/config.json"

# name: text overrides, released layout?, prompts. A prompt: (row lengths, [(row, position in the row of an eos)]),
# left-padded to the longest row with pad id 0. Each case's seed is 1000 + its position after export_golden's cases.
CASES = {
    # seed 777 (not the default 1234) feeds the n-gram multipliers; eos 5 = bos, pad 0
    "qwen4_exp_text": dict(text=dict(seed=777, split_ngram_parts=29, bos_token_id=5, eos_token_id=5, pad_token_id=0),
                           released=False, prompts=[([121], [(0, 57)]), ([9, 100, 37], [(1, 44), (2, 20)])]),
    # as released: pad null, bos = eos, seed absent (default 1234), mrope_section in rope_parameters
    "qwen4_exp_released": dict(text=dict(split_ngram_parts=12, bos_token_id=7, eos_token_id=7, pad_token_id=None,
                                         rope_parameters=eg.MROPE),
                               released=True, prompts=[([132], [(0, 70)]), ([100, 13, 56], [(0, 33), (2, 30)])]),
}
NEW_TOKENS = 24          # generate: decode crosses 6 boundaries of the 4-token compressed blocks
MIN_GAP = 1e-3           # QSA scores, router probabilities, top-2 logits: no choice closer than this
# The hyper-connection mix (mean over 4 streams of sigmoid-gated normalised streams) hands routers and lm_head vectors
# of rms ~0.5, not ~1 as a norm would: routers are drawn at 2x export_golden's ROUTER_SCALE for its logit spread (std
# ~1.5: fewest near ties), lm_head at 4x the unit-variance rule (logits of std ~2: greedy choices clear of ties).
ROUTER_SCALE = 2 * eg.ROUTER_SCALE
LM_HEAD_SCALE = 4.0
MAX_ATTEMPTS = 10        # whole-model re-draws (next seed) when the continuations do not settle
MAX_DRAWS = 5000         # re-draws per indexer / router / lm_head and round
MIX_START, MIX_GROWTH = 0.02, 1.03  # re-draw i mixes a fresh draw in with weight min(1, 0.02 * 1.03^(i-1))
MAX_ROUNDS = 30          # draw_clear rounds over the prompts and their greedy continuations
MIN_SENSITIVITY = 1e-2
PAD = 0


# ----------------------------------------------------------------------------------------------
# Building, saving, loading
# ----------------------------------------------------------------------------------------------

def make_config(spec):
    text = {**TEXT, **spec["text"]}
    if spec["released"]:
        return Qwen4ExpConfig(text_config=text, vision_config=dict(eg.VISION), tie_word_embeddings=False)
    return Qwen4ExpTextConfig(**text)


def model_class(spec):
    return Qwen4ExpForConditionalGeneration if spec["released"] else Qwen4ExpForCausalLM


def build(spec, gen):
    config = make_config(spec)
    model = model_class(spec)(config)
    eg.randomize(model, gen, hybrid=True)
    with torch.no_grad():
        model.lm_head.weight.mul_(LM_HEAD_SCALE)
        for layer in eg.decoder_layers(model):
            layer.mlp.gate.weight.mul_(ROUTER_SCALE / eg.ROUTER_SCALE)
    model = model.to(torch.bfloat16).eval()
    tc = config.get_text_config()
    batches = []
    for lengths, eos_at in spec["prompts"]:
        ids, mask = eg.make_batch(lengths, tc.vocab_size, gen)
        for row, pos in eos_at:
            ids[row, ids.shape[1] - lengths[row] + pos] = tc.eos_token_id
        batches.append((ids, mask))
    return config, model, batches


def load(spec, folder, cls=None):
    return (cls or model_class(spec)).from_pretrained(folder, dtype=torch.float32, attn_implementation="eager",
                                                      experts_implementation="eager").eval()


def text_model(model):
    return getattr(model.model, "language_model", model.model)


def ple_modules(model):
    return [(i, layer.ple) for i, layer in enumerate(eg.decoder_layers(model)) if layer.ple is not None]


def indexers(model):
    return [layer.self_attn.indexer for layer in eg.decoder_layers(model) if hasattr(layer, "self_attn")]


def shard_keys(tensors):
    """{layer prefix: [shard names in the numeric order transformers concatenates them]}"""
    out = {}
    for k in tensors:
        head, sep, tail = k.partition(".ngram_embedding.shard_")
        if sep:
            out.setdefault(head, []).append(k)
    return {h: sorted(ks, key=lambda k: int(k.split(".shard_")[1].split(".")[0])) for h, ks in out.items()}


def mtp_tensors_qwen4(tensors, tc, gen):
    """Random multi-token-prediction weights under the released qwen4_exp names (31 tensors: fc_embedding / fc_hidden
    [H, H], pre_fc_norm_embedding [H], pre_fc_norm_hidden [hc*H], a hyper_connection_mixer, and one decoder layer shaped
    like the QSA layer, experts fused). Not built by transformers, ignored on load (^mtp.*); npqwen must ignore them."""
    layer = f"model.language_model.layers.{tc.layer_types.index(IDX)}."
    dtype = tensors["model.language_model.embed_tokens.weight"].dtype
    h, hc = tc.hidden_size, tc.hc_count
    shapes = {"mtp.fc_embedding.weight": (h, h), "mtp.fc_hidden.weight": (h, h),
              "mtp.pre_fc_norm_embedding.weight": (h,), "mtp.pre_fc_norm_hidden.weight": (hc * h,)}
    shapes.update({"mtp." + k[len("model.language_model."):]: tuple(t.shape) for k, t in tensors.items()
                   if k.startswith("model.language_model.hyper_connection_mixer.")})
    shapes.update({"mtp.layers.0." + k[len(layer):]: tuple(t.shape) for k, t in tensors.items() if k.startswith(layer)})
    return eg.random_tensors(shapes, gen, dtype)


def released_config(folder):
    """config.json rewritten with exactly the released keys: layer_types as "full_attention", the mtp extras, no seed /
    number_of_conv_states / norm_topk_prob (their defaults 1234 / derived / true apply), the vision_config's old
    model_type "qwen4_exp", no top-level dtype or transformers_version."""
    path = os.path.join(folder, "config.json")
    with open(path) as f:
        cfg = json.load(f)
    text, vision = cfg["text_config"], cfg["vision_config"]
    assert text.get("seed", 1234) == 1234 and text.get("norm_topk_prob", True), "released config relies on defaults"
    text["layer_types"] = [F if t == IDX else t for t in text["layer_types"]]
    text["full_attention_interval"] = eg.regular_interval(text["layer_types"])
    text["partial_rotary_factor"] = text["rope_parameters"]["partial_rotary_factor"]
    text["mamba_ssm_dtype"] = "float32"
    text["mtp"] = {"hybrid": True, "layer_types": [F], "mtp_use_hidden_state_from_layer": None, "num_hidden_layers": 1,
                   "rope_theta": text["rope_parameters"]["rope_theta"]}
    text["mtp_num_hidden_layers"] = 1
    text["mtp_use_dedicated_embeddings"] = False
    text["dtype"] = "bfloat16"
    vision["model_type"] = "qwen4_exp"  # released so; transformers renames it to qwen4_exp_vision
    vision.setdefault("deepstack_visual_indexes", [])
    cfg["language_model_only"] = False
    cfg = {k: v for k, v in cfg.items() if k in RELEASED_TOP_KEYS}
    cfg["text_config"] = {k: v for k, v in text.items() if k in RELEASED_TEXT_KEYS}
    cfg["vision_config"] = {k: v for k, v in vision.items() if k in RELEASED_VISION_KEYS}
    assert set(cfg) == RELEASED_TOP_KEYS and set(cfg["text_config"]) == RELEASED_TEXT_KEYS
    assert set(cfg["vision_config"]) == RELEASED_VISION_KEYS
    if os.path.exists(RELEASED_CONFIG):  # the key sets above are the released file's
        with open(RELEASED_CONFIG) as f:
            real = json.load(f)
        assert (set(real), set(real["text_config"]), set(real["vision_config"])) == (
            RELEASED_TOP_KEYS, RELEASED_TEXT_KEYS, RELEASED_VISION_KEYS)
    with open(path, "w") as f:
        json.dump(cfg, f, indent=2, sort_keys=True)


def save(spec, model, folder, gen):
    shutil.rmtree(folder, ignore_errors=True)
    model.save_pretrained(folder)
    if spec["released"]:
        tensors = eg.fuse_experts(eg.read_tensors(folder))
        assert shard_keys(tensors), "save_pretrained wrote no n-gram shards"
        tensors.update(mtp_tensors_qwen4(tensors, model.config.get_text_config(), gen))
        eg.write_released_shards(folder, tensors)
        released_config(folder)


# ----------------------------------------------------------------------------------------------
# What the model chooses: QSA blocks, routers, hidden streams
# ----------------------------------------------------------------------------------------------

def qsa_rows(indexer, hidden_states, position_embeddings, attention_mask, past_key_values, real, selected=None):
    """The indexer's block scores recomputed from its own tensors, transformers' algorithm and ops: per real query row
    with at least one complete block of visible tokens, the number of visible tokens and blocks and, where the block
    choice is active (more complete blocks than budget / ratio), the sorted scores' k-th vs (k+1)-th gap. With
    `selected` (the indexer's output [b, 1, t, T]) the choice is checked against the top-k of these scores."""
    b, t, _ = hidden_states.shape
    cos, sin = position_embeddings
    d, R, k = indexer.index_head_dim, indexer.compress_ratio, indexer.block_topk
    with torch.no_grad():
        q, raw = torch.split(indexer.index_qk_proj(hidden_states), [indexer.index_n_heads * d, d], dim=-1)
        q = indexer.q_layernorm(q.reshape(b, t, -1, d))
        q = mq4.apply_rotary_pos_emb(q, cos=cos[:, -t:], sin=sin[:, -t:], unsqueeze_dim=2)
        if past_key_values is not None:  # the hook runs after the indexer appended this call's raw keys
            raw = past_key_values.layers[indexer.layer_idx].indexer_keys
        visible = attention_mask if attention_mask.dtype == torch.bool else attention_mask == 0
        T = visible.shape[-1]
        rows = []
        for bi in range(b):
            for qi in range(t):
                if not real[bi, qi]:
                    continue
                vis = torch.nonzero(visible[bi, 0, qi], as_tuple=False).flatten()
                nb = vis.numel() // R
                row = {"visible": vis.numel(), "blocks": nb, "active": nb > k}
                expect = set(vis.tolist())
                if nb > k:
                    blocks = vis[:nb * R].view(nb, R)
                    pooled = raw[bi].index_select(0, blocks.flatten()).view(nb, R, d).float().mean(1).to(raw.dtype)
                    bk = mq4.apply_rotary_pos_emb(indexer.k_layernorm(pooled).unsqueeze(1),
                                                  cos=cos[bi].index_select(0, blocks[:, 0]),
                                                  sin=sin[bi].index_select(0, blocks[:, 0])).squeeze(1)
                    scores = torch.relu(q[bi, qi].float() @ bk.float().T).sum(0) / math.sqrt(d)
                    top = scores.sort(descending=True)
                    row["gap"] = float(top.values[k - 1] - top.values[k])
                    row["top"] = float(top.values[0])
                    row["zero_blocks"] = int((scores == 0).sum())
                    expect = set(blocks[top.indices[:k]].flatten().tolist()) | set(vis[nb * R:].tolist())
                if selected is not None:
                    got = set(torch.nonzero(selected[bi, 0, qi]).flatten().tolist())
                    if row.get("gap", 1.0) > 0:
                        assert got == expect, ("QSA choice differs from the recomputed scores", bi, qi)
                    row["selected"] = len(got)
                    row["own_token_dropped"] = (T - t + qi) not in got
                rows.append(row)
    return rows


def qsa_summary(rows):
    active = [r for r in rows if r["active"]]
    out = {"query_rows": len(rows), "rows_selection_active": len(active),
           "rows_strict_subset": (sum(r["selected"] < r["visible"] for r in rows)
                                  if rows and "selected" in rows[0] else len(active)),
           "min_gap_kth_vs_next_score": min((r["gap"] for r in active), default=None),
           "min_relative_gap": min((r["gap"] / r["top"] for r in active if r["top"] > 0), default=None),
           "median_top_score": float(np.median([r["top"] for r in active])) if active else None,
           "rows_with_zero_score_blocks": sum(r["zero_blocks"] > 0 for r in active)}
    if rows and "own_token_dropped" in rows[0]:
        out["rows_own_token_not_selected"] = sum(r["own_token_dropped"] for r in rows)
    return out


def qsa_ok(summary):
    return summary["min_gap_kth_vs_next_score"] is None or summary["min_gap_kth_vs_next_score"] >= MIN_GAP


class QSALog:
    """Forward hooks on every indexer: per call, the rows of qsa_rows (checked against the indexer's choice).
    `mask` is the 2D attention mask of the multi-token calls (single-token calls are real tokens)."""

    def __init__(self, model):
        self.rows, self.mask, self.enabled = [], None, True
        self.handles = [ix.register_forward_hook(self.hook) for ix in indexers(model)]

    def hook(self, module, args, output):
        if not self.enabled:
            return
        hs = args[0]
        b, t = hs.shape[:2]
        real = self.mask[:, -t:] == 1 if self.mask is not None and t == self.mask.shape[1] else np.ones((b, t), bool)
        self.rows += qsa_rows(module, *args, real=real, selected=output)

    def take(self):
        rows, self.rows = self.rows, []
        return rows

    def close(self):
        for h in self.handles:
            h.remove()


class StreamLog:
    """hidden.0 = the streams entering decoder layer 0, hidden.i = the streams leaving decoder layer i-1."""

    def __init__(self, model):
        layers = eg.decoder_layers(model)
        self.streams = []
        self.handles = [layers[0].register_forward_pre_hook(lambda m, args: self.streams.append(args[0].clone()))]
        self.handles += [layer.register_forward_hook(lambda m, args, out: self.streams.append(out.clone()))
                         for layer in layers]

    def close(self):
        for h in self.handles:
            h.remove()


@contextlib.contextmanager
def captured(module, pre=True):
    """The positional arguments (pre=True) or the output of each call of module."""
    calls = []
    if pre:
        handle = module.register_forward_pre_hook(lambda m, args: calls.append(args))
    else:
        handle = module.register_forward_hook(lambda m, args, out: calls.append(out))
    try:
        yield calls
    finally:
        handle.remove()


def forward(model, ids, mask, **kwargs):
    with torch.no_grad():
        return model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask),
                     position_ids=eg.positions(mask), use_cache=False, **kwargs)


def top2_gaps(logits):
    top = logits.topk(2, dim=-1).values
    return top[..., 0] - top[..., 1]


# ----------------------------------------------------------------------------------------------
# Re-drawing the choosing weights until every choice is clear of ties
# ----------------------------------------------------------------------------------------------

def redraws(params, gen):
    """Re-draws of zero-mean Gaussian parameters [(param, std)], one per iteration (the first keeps them): each
    W = sqrt(1 - a^2) W0 + a W_fresh with W_fresh drawn by the same rule, so W keeps the rule's distribution, and a
    grows from MIX_START to 1 (a fresh draw): the first re-draws move only the choices that sat on a near tie, so the
    tokens chosen above stay put. Yields the draw count."""
    base = [p.detach().float().clone() for p, _ in params]
    for draw in range(MAX_DRAWS):
        if draw:
            a = min(1.0, MIX_START * MIX_GROWTH ** (draw - 1))
            with torch.no_grad():
                for (p, std), b in zip(params, base):
                    p.copy_(math.sqrt(1.0 - a * a) * b + a * std * torch.randn(p.shape, generator=gen))
        yield draw


def probe_of(model):
    """A float32 eager copy of the bf16 model, as a reload from its folder computes: a fresh model given the weights
    (model.float() would keep the bf16-rounded RoPE inv_freq buffers that .to(bfloat16) made)."""
    probe = type(model)(model.config).eval()
    probe.load_state_dict(model.state_dict())
    probe.set_attn_implementation("eager")
    probe.set_experts_implementation("eager")
    assert all(p.dtype == torch.float32 for p in probe.parameters())
    return probe


def draw_clear(model, seqs, gen):
    """Lowest layer first: the QSA indexer (index_qk_proj, q/k layernorm weights), then the router, re-drawn until every
    real token of seqs [(ids, mask, prompt length)] chooses clear of ties (and every expert serves >= 2% of the rows);
    last the lm_head, until every real position's top-2 logits are apart and no generate decision (positions from
    prompt length - 1) has eos as its argmax (generate suppresses eos until min_new_tokens: the argmax loop would not).
    A choice depends only on the weights below it: one forward of a float32 copy (of the bf16 weights) per
    component, then cheap re-draws. Returns {component: draws} or None."""
    tc = model.config.get_text_config()
    H = tc.hidden_size
    probe = probe_of(model)
    draws = {}

    def sync(src, dst):
        with torch.no_grad():
            for p1, p2 in zip(src.parameters(), dst.parameters()):
                p2.copy_(p1.float())

    def run(module, pre=True):
        with captured(module, pre) as calls:
            for ids, mask, _ in seqs:
                forward(probe, ids, mask)
        return calls

    for i, (layer, player) in enumerate(zip(eg.decoder_layers(model), eg.decoder_layers(probe))):
        if hasattr(layer, "self_attn"):
            ix, pix = layer.self_attn.indexer, player.self_attn.indexer
            calls = run(pix)
            rule = [(ix.index_qk_proj.weight, H ** -0.5), (ix.q_layernorm.weight, 0.3), (ix.k_layernorm.weight, 0.3)]
            for draw in redraws(rule, gen):  # as randomize draws them
                sync(ix, pix)
                rows = [r for args, (ids, mask, _) in zip(calls, seqs) for r in qsa_rows(pix, *args, real=mask == 1)]
                if qsa_ok(qsa_summary(rows)):
                    draws[f"layers.{i}.self_attn.indexer"] = draw
                    break
            else:
                return None
        gate, pgate = layer.mlp.gate, player.mlp.gate
        calls = run(pgate)
        for draw in redraws([(gate.weight, ROUTER_SCALE * H ** -0.5)], gen):
            sync(gate, pgate)
            taken = []
            for (x,), (ids, mask, _) in zip(calls, seqs):
                with torch.no_grad():
                    probs = torch.softmax(x[torch.from_numpy(mask.reshape(-1) == 1)] @ pgate.weight.T, dim=-1)
                taken.append({i: (probs, probs.topk(tc.num_experts_per_tok, dim=-1).indices)})
            if eg.routing_ok(eg.routing_facts(taken, tc.num_experts_per_tok, tc.num_experts), tc.num_experts):
                draws[f"layers.{i}.mlp.gate"] = draw
                break
        else:
            return None
    outs = run(text_model(probe).hyper_connection_mixer, pre=False)
    for draw in redraws([(model.lm_head.weight, LM_HEAD_SCALE * H ** -0.5)], gen):
        ok = True
        for h, (ids, mask, n) in zip(outs, seqs):
            with torch.no_grad():
                logits = h @ model.lm_head.weight.float().T
            ok &= float(top2_gaps(logits)[torch.from_numpy(mask == 1)].min()) >= MIN_GAP
            ok &= not bool((logits[:, n - 1:-1].argmax(-1) == tc.eos_token_id).any())
        if ok:
            draws["lm_head"] = draw
            return draws
    return None


def settle(model, batches, gen):
    """Re-draw (draw_clear) over the prompts and their greedy continuations until the continuations stop changing:
    then every choice generate makes has been checked too. Returns ({component: total re-draws}, rounds) or None."""
    seqs = [(ids, mask, ids.shape[1]) for ids, mask in batches]
    total = {}
    for rnd in range(MAX_ROUNDS):
        draws = draw_clear(model, seqs, gen)
        if draws is None:
            return None
        for what, n in draws.items():
            total[what] = total.get(what, 0) + n
        probe = probe_of(model)
        new = []
        for ids, mask in batches:
            with torch.no_grad():
                g = probe.generate(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask),
                                   do_sample=False, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS,
                                   pad_token_id=PAD, use_cache=True).numpy()
            new.append((g, np.concatenate([mask, np.ones_like(g[:, ids.shape[1]:])], 1), ids.shape[1]))
        if all(np.array_equal(a[0], b[0]) for a, b in zip(new, seqs)):
            return total, rnd
        seqs = new
    return None


# ----------------------------------------------------------------------------------------------
# References
# ----------------------------------------------------------------------------------------------

def reference(spec, model, folder, ids, mask):
    """Arrays and facts of one prompt from a fresh float32 eager reload; raises AssertionError on a near tie."""
    loaded = load(spec, folder)
    for (n1, p1), (n2, p2) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert n1 == n2 and torch.equal(p1.to(p2.dtype), p2), n1  # exactly the saved weights (bf16 -> f32, I64)
    tc = loaded.config.get_text_config()
    L_, hc, H = tc.num_hidden_layers, tc.hc_count, tc.hidden_size
    real = torch.from_numpy(mask == 1)
    qlog, rlog = QSALog(loaded), eg.RouterLog(loaded)
    streams = StreamLog(loaded)
    qlog.mask = mask
    out = forward(loaded, ids, mask, output_hidden_states=True)
    streams.close()
    qsa = {"prompt": qsa_summary(qlog.take())}
    arrays = {"input_ids": ids, "attention_mask": mask, "logits": out.logits.numpy().astype(np.float32)}
    hs = streams.streams
    assert len(hs) == L_ + 1 and len(out.hidden_states) == L_ + 1
    assert torch.equal(hs[0], text_model(loaded).embed_tokens(torch.from_numpy(ids)).repeat(1, 1, hc))
    for i in range(L_):  # transformers' own entries 0..L-1 are these streams; its last is the mixer output
        assert torch.equal(out.hidden_states[i], hs[i]), i
    mixer = out.hidden_states[L_]
    assert mixer.shape[-1] == H and hs[L_].shape[-1] == hc * H
    assert torch.equal(loaded.lm_head(mixer), out.logits)
    assert torch.equal(text_model(loaded).hyper_connection_mixer(hs[L_]), mixer)
    for i, h in enumerate(hs):
        arrays[f"hidden.{i}"] = h.numpy().astype(np.float32)
    arrays["mixer"] = mixer.numpy().astype(np.float32)
    prompt_gap = float(top2_gaps(out.logits)[real].min())

    # greedy generate, cached (use_cache=True given explicitly: None re-feeds the whole prefix on top of the cache)
    with torch.no_grad():
        gen = loaded.generate(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask), do_sample=False,
                              max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, pad_token_id=PAD, use_cache=True,
                              output_logits=True, return_dict_in_generate=True)
    qsa["generate"] = qsa_summary(qlog.take())
    routed = [rlog.take(len(ids), mask)]  # the forward and generate's prefill (real tokens), each decode step
    new = gen.sequences[:, ids.shape[1]:].numpy()
    step_logits = torch.stack(gen.logits, dim=1)  # [b, n, V], raw (before the min_new_tokens eos suppression)
    # the same tokens by argmax over uncached full forwards of prompt + tokens so far (no eos suppression)
    qlog.enabled = False
    seq, seq_mask = ids, mask
    for _ in range(NEW_TOKENS):
        nxt = forward(loaded, seq, seq_mask).logits[:, -1].argmax(-1).numpy()[:, None]
        seq, seq_mask = np.concatenate([seq, nxt], 1), np.concatenate([seq_mask, np.ones_like(nxt)], 1)
    for calls in rlog.calls.values():  # (these forwards are subsets of the one below)
        calls.clear()
    differ = np.argwhere(seq[:, ids.shape[1]:] != new)
    assert not len(differ), ("generate differs from the uncached argmax loop", differ[:1].tolist(),
                             "argmax eos" if seq[differ[0][0], ids.shape[1] + differ[0][1]] == tc.eos_token_id else "")
    qlog.enabled, qlog.mask = True, seq_mask
    full = forward(loaded, seq, seq_mask).logits
    qsa["prompt_and_generated"] = qsa_summary(qlog.take())
    routed.append(rlog.take(len(ids), seq_mask))
    qlog.close(), rlog.close()
    chosen = full[:, ids.shape[1] - 1:-1]
    assert torch.equal(chosen.argmax(-1), torch.from_numpy(new))
    arrays["generated"] = np.ascontiguousarray(new)
    arrays["generate_logits"] = step_logits.numpy().astype(np.float32)
    facts = {"lengths": [int(n) for n in mask.sum(-1)], "hidden_states": len(hs),
             "eos_columns": [[int(p) for p in np.nonzero(r == tc.eos_token_id)[0]] for r in ids],  # of input_ids
             "min_top2_margin": prompt_gap,
             "min_top2_margin_generated": min(float(top2_gaps(step_logits).min()), float(top2_gaps(chosen).min())),
             "relative_difference_generate_steps_vs_forward": float((step_logits - chosen).norm() / chosen.norm()),
             "qsa": qsa}
    assert facts["relative_difference_generate_steps_vs_forward"] < 1e-4, facts
    return arrays, facts, routed, loaded


def margins_ok(facts, routing, tc):
    return (all(qsa_ok(s) for f in facts for s in f["qsa"].values())
            and eg.routing_ok(routing, tc.num_experts)
            and min(min(f["min_top2_margin"], f["min_top2_margin_generated"]) for f in facts) >= MIN_GAP)


# ----------------------------------------------------------------------------------------------
# Sensitivity: one detail changed on the same weights must move the logits
# ----------------------------------------------------------------------------------------------

def plain_residual(self, hyper_input):
    """A hyper-connection read as a plain pre-norm residual: the sublayer gets the mean of the normalised streams
    (no learned input mix) and its output is added to every stream with weight 1 (no injection weights)."""
    normed = self.hc_norm(hyper_input).unflatten(-1, (self.hc_count, self.hidden_size)).mean(dim=-2)
    if self.block_inject_weight is None:
        return normed
    return normed, hyper_input, torch.ones((*hyper_input.shape[:-1], self.hc_count), dtype=hyper_input.dtype)


def no_eos_reset(self, token_ids, shift):
    """The n-gram context without the eos reset: plain shift, eos only before the sequence start."""
    if shift == 0:
        return token_ids
    pad = token_ids.new_full((token_ids.shape[0], shift), self.eos_token_id)
    return torch.cat([pad, token_ids[:, :-shift]], dim=1)


def variants(spec, folder):
    """{meta name: model with one detail changed}."""
    out = {}

    def variant(name, change):
        m = load(spec, folder)
        with torch.no_grad():
            change(m)
        out[name] = m

    def dense(m):  # every visible key selected: plain causal attention in the QSA layers
        for ix in indexers(m):
            ix.token_budget = ix.block_topk = 1 << 16
    variant("relative_change_qsa_dense", dense)

    def offsets_shifted(m):  # every hashed n-gram id one row further down the table
        for _, ple in ple_modules(m):
            ple.ple_embedding.ngram_heads_offsets += 1
    variant("relative_change_ngram_offsets_plus_one", offsets_shifted)

    def plain(m):
        for module in m.modules():
            if isinstance(module, mq4.Qwen4ExpTextGatedResidual):
                module.forward = types.MethodType(plain_residual, module)
    variant("relative_change_plain_residual", plain)

    saved = eg.read_tensors(folder)

    def string_order(m):  # the n-gram shards concatenated in string order (shard_10 after shard_1)
        for i, ple in ple_modules(m):
            keys = next(ks for h, ks in shard_keys(saved).items() if h.endswith(f"layers.{i}.ple.ple_embedding"))
            assert sorted(keys) != keys, "string and numeric order agree"
            w = ple.ple_embedding.ngram_embedding.weight
            w.copy_(torch.cat([saved[k] for k in sorted(keys)]).to(w.dtype))
    variant("relative_change_ngram_shards_in_string_order", string_order)

    def eos_ignored(m):
        for _, ple in ple_modules(m):
            ple.ple_embedding._shift_right_ignore_eos = types.MethodType(no_eos_reset, ple.ple_embedding)
    variant("relative_change_ngram_without_eos_reset", eos_ignored)
    return out


# ----------------------------------------------------------------------------------------------
# One case
# ----------------------------------------------------------------------------------------------

def export_case(name, spec, *, seed, out_dir):
    folder = os.path.join(out_dir, "checkpoints", name)
    for attempt in range(MAX_ATTEMPTS):
        case_seed = seed + 10000 * attempt
        gen = torch.Generator().manual_seed(case_seed)
        config, model, batches = build(spec, gen)
        tc = config.get_text_config()
        settled = settle(model, batches, gen)
        if settled is None:
            print(f"{name}: seed {case_seed}: no clean draw", file=sys.stderr)
            continue
        draws, rounds = settled
        print(f"{name}: seed {case_seed}: settled after {rounds} rounds, re-draws {draws}", file=sys.stderr)
        save(spec, model, folder, gen)
        arrays, facts, routed = {}, [], []
        try:
            for k, (ids, mask) in enumerate(batches):
                a, f, r, loaded = reference(spec, model, folder, ids, mask)
                arrays.update({f"p{k}.{key}": v for key, v in a.items()})
                facts.append(f)
                routed += r
        except AssertionError as e:
            print(f"{name}: seed {case_seed}: {e}", file=sys.stderr)
            continue
        routing = eg.routing_facts(routed, tc.num_experts_per_tok, tc.num_experts)
        if margins_ok(facts, routing, tc):
            break
        print(f"{name}: seed {case_seed}: generated tokens near a tie: qsa "
              f"{[s['min_gap_kth_vs_next_score'] for f in facts for s in f['qsa'].values()]}, routing "
              f"{[r['min_gap_kth_vs_next_prob'] for r in routing]} / "
              f"{[min(r['selections_per_expert']) for r in routing]}, top2 "
              f"{[(f['min_top2_margin'], f['min_top2_margin_generated']) for f in facts]}", file=sys.stderr)
    else:
        raise SystemExit(f"{name}: no seed in {MAX_ATTEMPTS} attempts clears every margin")

    # sensitivity on the same weights
    for what, other in variants(spec, folder).items():
        for k, (entry, (ids, mask)) in enumerate(zip(facts, batches)):
            change = eg.relative_change(forward(other, ids, mask).logits, torch.from_numpy(arrays[f"p{k}.logits"]),
                                        mask)
            entry[what] = change
            assert change > MIN_SENSITIVITY, (name, k, what, change)
    # the prompt fed token by token through the cache (unpadded prompts)
    for entry, (ids, mask) in zip(facts, batches):
        if mask.all():
            step = eg.stepwise_logits(load(spec, folder), ids)
            ref = forward(load(spec, folder), ids, mask).logits
            entry["relative_difference_stepwise_cached_decode"] = eg.relative_change(step, ref, mask)
            assert entry["relative_difference_stepwise_cached_decode"] < 1e-4, entry
    # generate(use_cache=None), for the record (transformers 5.23 re-feeds the prefix on top of the cache)
    for k, (entry, (ids, mask)) in enumerate(zip(facts, batches)):
        with torch.no_grad():
            g = load(spec, folder).generate(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask),
                                            do_sample=False, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS,
                                            pad_token_id=PAD, use_cache=None)
        entry["generate_use_cache_none_equals_reference"] = bool(
            np.array_equal(g[:, ids.shape[1]:].numpy(), arrays[f"p{k}.generated"]))
    extra = {}
    if spec["released"]:  # the composite read text-only, as npqwen reads it
        causal = load(spec, folder, Qwen4ExpForCausalLM)
        extra["causal_lm_from_composite_max_abs_logit_difference"] = max(
            float((forward(causal, ids, mask).logits - torch.from_numpy(arrays[f"p{k}.logits"]))[mask == 1].abs().max())
            for k, (ids, mask) in enumerate(batches))
        assert extra["causal_lm_from_composite_max_abs_logit_difference"] < 1e-5, extra

    meta = {"case": name, "model_type": config.model_type, "dtype": "bfloat16", "seed": case_seed, "config_form": "5.x",
            "attempts": attempt + 1, "redraws": draws, "redraw_rounds": rounds, "prompts": facts,
            "transformers": transformers.__version__, "torch": torch.__version__,
            "experts_implementation": "eager", "attn_implementation": "eager"}
    meta.update(case_meta(spec, loaded, folder))
    meta.update(extra)
    meta["margins"] = {
        "min_gap_required": MIN_GAP,
        "qsa": {"score": "sum over indexer heads of relu(q . block_key) / sqrt(indexer_head_dim), float32; gap = k-th "
                         "minus (k+1)-th largest block score, k = budget / ratio, absolute (scores are O(1): see "
                         "median_top_score), over real query rows with more than k complete visible blocks",
                "checked": "every indexer call of the reference forward, generate (prefill and each decode step) and "
                           "a forward over prompt + generated tokens; real tokens only; the indexer's own choice "
                           "equals the top-k of the recomputed scores",
                "min_gap": min(s["min_gap_kth_vs_next_score"] for f in facts for s in f["qsa"].values()
                               if s["min_gap_kth_vs_next_score"] is not None),
                "min_relative_gap": min(s["min_relative_gap"] for f in facts for s in f["qsa"].values()
                                        if s["min_relative_gap"] is not None),
                "rows_strict_subset": {f"p{k}": {w: s["rows_strict_subset"] for w, s in f["qsa"].items()}
                                       for k, f in enumerate(facts)}},
        "routing": {"top_k": tc.num_experts_per_tok, "num_experts": tc.num_experts, "norm_topk_prob": tc.norm_topk_prob,
                    "router_probability": "softmax over all experts, float32",
                    "checked": "every router call of the forward, generate (prefill and each decode step) and a "
                               "forward over prompt + generated tokens; real tokens only",
                    "min_gap_kth_vs_next_prob": min(f["min_gap_kth_vs_next_prob"] for f in routing),
                    "layers": routing},
        "greedy": {"min_top2_margin_prompt": min(f["min_top2_margin"] for f in facts),
                   "min_top2_margin_generated": min(f["min_top2_margin_generated"] for f in facts)},
    }
    ref = os.path.join(out_dir, "references")
    os.makedirs(ref, exist_ok=True)
    save_file(arrays, os.path.join(ref, f"{name}.safetensors"))
    with open(os.path.join(ref, f"{name}.json"), "w") as f:
        json.dump(meta, f, indent=2, sort_keys=True)
    for path in [os.path.join(folder, f) for f in os.listdir(folder)] + [os.path.join(ref, f"{name}.safetensors")]:
        os.chmod(path, 0o644)  # safetensors writes 0600
    print(f"{name}: seed {case_seed}, {[p['lengths'] for p in facts]}, "
          f"margins qsa>={meta['margins']['qsa']['min_gap']:.4f} "
          f"routing>={meta['margins']['routing']['min_gap_kth_vs_next_prob']:.4f} "
          f"top2>={min(meta['margins']['greedy'].values()):.4f}", file=sys.stderr)


def case_meta(spec, loaded, folder):
    """What the case's files and model hold, for the record."""
    cfg, tc = loaded.config, loaded.config.get_text_config()
    saved = eg.read_tensors(folder)
    with open(os.path.join(folder, "config.json")) as f:
        on_disk = json.load(f)
    shards = shard_keys(saved)
    ples = {}
    for i, ple in ple_modules(loaded):
        pe = ple.ple_embedding
        keys = next(ks for h, ks in shards.items() if h.endswith(f"layers.{i}.ple.ple_embedding"))
        ples[f"layers.{i}"] = {
            "ple_layer_index": pe.ple_layer_index, "ngram_heads": pe.ngram_heads,
            "head_dim_per_ngram": pe.ngram_embedding.weight.shape[1],
            "head_vocab_sizes": [int(v) for v in pe.ngram_heads_vocab_sizes],
            "head_offsets": [int(v) for v in pe.ngram_heads_offsets],
            "layer_multipliers": [int(v) for v in pe.layer_multipliers],
            "total_rows": int(pe.total_vocab_size), "padded_rows": pe.ngram_embedding.weight.shape[0],
            "shard_count": len(keys), "shard_rows": [saved[k].shape[0] for k in keys],
            "shard_names_numeric_order": keys,
            "buffers_in_file": sorted(k for k in saved if k.startswith(keys[0].split(".ngram_embedding.")[0])
                                      and saved[k].dtype == torch.int64)}
        with torch.no_grad():
            assert torch.equal(torch.cat([saved[k] for k in keys]).float(), pe.ngram_embedding.weight)
    text_on_disk = on_disk.get("text_config", on_disk)
    la = next(layer.linear_attn for layer in eg.decoder_layers(loaded) if hasattr(layer, "linear_attn"))
    ix = indexers(loaded)[0]
    eg.check_expert_layout(folder, loaded, fused=spec["released"])
    return {
        "architecture": type(loaded).__name__,
        "file_layout": {
            "released": spec["released"],
            "files": sorted(f for f in os.listdir(folder) if f.endswith((".safetensors", ".json"))),
            "experts": "fused" if spec["released"] else "per_expert",
            "tensors": len(saved), "float32_tensors": sorted(k for k, t in saved.items() if t.dtype == torch.float32),
            "int64_tensors": sorted(k for k, t in saved.items() if t.dtype == torch.int64),
            "mtp_tensors": sorted(k for k in saved if k.startswith("mtp.")),
            "vision_tensors": sum(k.startswith("model.visual.") for k in saved),
            "ngram_table_reloads_from_fewer_shards_than_split_ngram_parts":
                any(p["shard_count"] < tc.split_ngram_parts for p in ples.values()),
        },
        "layer_types": tc.layer_types, "layer_types_in_config_json": text_on_disk["layer_types"],
        "rope_parameters": tc.rope_parameters, "head_dim": tc.head_dim,
        "rotary_dims": 2 * len(text_model(loaded).rotary_emb.inv_freq),
        "eos_token_id": tc.eos_token_id, "bos_token_id": tc.bos_token_id, "pad_token_id": tc.pad_token_id,
        "pad_id_in_prompts": PAD, "tie_word_embeddings": cfg.tie_word_embeddings,
        "hyper_connections": {"hc_count": tc.hc_count, "hc_lowrank": tc.hc_lowrank,
                              "hidden_convention":
                                  "p<k>.hidden.0 = embeddings repeated over the hc streams, p<k>.hidden.<i> = "
                                  "streams leaving decoder layer i-1 (i = 1..L, hidden.L before the final mixer), "
                                  "[b, t, hc*H], stream j in columns j*H:(j+1)*H; p<k>.mixer = the final "
                                  "hyper_connection_mixer output [b, t, H] (transformers' last hidden_states entry)"},
        "ple": {"ple_layer_ids": tc.ple_layer_ids, "ple_embed_dim": tc.ple_embed_dim,
                "ple_conv_kernel_size": tc.ple_conv_kernel_size, "ngram_size": tc.ngram_size,
                "heads_per_ngram": tc.heads_per_ngram, "ngram_vocab_size_base": tc.ngram_vocab_size_base,
                "make_ngram_vocab_size_divisible_by": tc.make_ngram_vocab_size_divisible_by,
                "seed": tc.seed, "seed_in_config_json": "seed" in text_on_disk,
                "split_ngram_parts": tc.split_ngram_parts, "layers": ples,
                "shards_note": "save_pretrained cuts the table with torch.chunk(table, split_ngram_parts) into "
                               "shards of ceil(rows / split_ngram_parts) rows, the last shorter, named shard_0, "
                               "shard_1, ...; torch.chunk can return fewer chunks than split_ngram_parts (the unused "
                               "names are dropped) and transformers reloads such a checkpoint (it concatenates every "
                               "shard_* it finds, in numeric order)"},
        "indexer": {"n_heads": ix.index_n_heads, "kv_heads": ix.index_kv_heads, "head_dim": ix.index_head_dim,
                    "budget": ix.token_budget, "compress_ratio": ix.compress_ratio, "block_topk": ix.block_topk},
        "moe": {"num_experts": tc.num_experts, "num_experts_per_tok": tc.num_experts_per_tok,
                "moe_intermediate_size": tc.moe_intermediate_size,
                "shared_expert_intermediate_size": tc.shared_expert_intermediate_size,
                "norm_topk_prob": tc.norm_topk_prob, "norm_topk_prob_in_config_json": "norm_topk_prob" in text_on_disk},
        "linear_attention": {"num_key_heads": la.num_k_heads, "num_value_heads": la.num_v_heads,
                             "key_head_dim": la.head_k_dim, "value_head_dim": la.head_v_dim,
                             "conv_kernel": la.conv_kernel_size, "output_gate": tc.output_gate_type,
                             "number_of_conv_states": tc.number_of_conv_states},
        "generate": {"new_tokens": NEW_TOKENS, "do_sample": False, "use_cache": True, "pad_token_id": PAD,
                     "min_new_tokens": NEW_TOKENS,
                     "checked": "equal to an argmax loop over uncached full forwards (prompt + tokens so far, "
                                "position ids cumsum(mask) - 1); p<k>.generate_logits are generate's raw step logits"},
        "sensitivity": {
            "relative_change_qsa_dense": "QSA replaced by dense causal attention (every visible key selected)",
            "relative_change_ngram_offsets_plus_one": "every n-gram head offset + 1 (ids one table row further)",
            "relative_change_plain_residual": "hyper-connections read as a plain pre-norm residual: sublayer input = "
                                              "mean of the hc_norm'ed streams, output added to every stream with "
                                              "weight 1, final mixer = mean of the hc_norm'ed streams",
            "relative_change_ngram_shards_in_string_order": "n-gram shards concatenated in string order",
            "relative_change_ngram_without_eos_reset": "n-gram context shifted without the eos reset",
            "measure": "norm(a - b) / norm(b) over the real tokens' logits"},
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("cases", nargs="*", help=f"cases to export (default: all): {', '.join(CASES)}")
    parser.add_argument("--out", default=eg.GOLDEN, help="folder for checkpoints/ and references/ (default: golden/)")
    args = parser.parse_args()
    unknown = set(args.cases) - set(CASES)
    if unknown:
        parser.error(f"unknown case(s): {', '.join(sorted(unknown))}")
    torch.set_num_threads(2)
    for seed, (name, spec) in enumerate(CASES.items(), start=len(eg.CASES)):
        if not args.cases or name in args.cases:
            export_case(name, spec, seed=1000 + seed, out_dir=args.out)


if __name__ == "__main__":
    main()
