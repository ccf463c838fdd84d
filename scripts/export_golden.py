"""Export golden reference data from transformers, once. Not used by the package or its tests.

For each case below this builds a small Qwen2 / Qwen3 / Qwen2-MoE / Qwen3-MoE ForCausalLM with
transformers, overwrites EVERY parameter with random values (transformers' init leaves biases at 0
and norms at 1, which would hide whole classes of bugs), saves it as a standard checkpoint folder
(bf16 or f32 safetensors, single file or sharded) under golden/checkpoints/<case>/, reloads that
folder with transformers in float32 with eager attention (and eager experts), and records for fixed
prompts the logits and every hidden state (golden/references/<case>.safetensors), plus the greedy
tokens of `generate(do_sample=False)`.

MoE cases route clear of ties: every router call (the forward, generate's prefill and decode steps,
and a forward over prompt + generated tokens) is hooked, and routers are re-drawn, deterministically,
until no real token's k-th and (k+1)-th router probabilities lie within 1e-3 and every expert serves
a share of the tokens in every sparse layer. Each feature a case covers (sliding window, q/k norm,
o_proj bias, norm_topk_prob, the shared-expert gate) is switched off on the same weights and must
move the logits by more than 1e-2; the json records by how much.

    python -m venv /tmp/goldenv && /tmp/goldenv/bin/pip install torch==2.13.0 && \
    /tmp/goldenv/bin/pip install -e ".[golden]" && /tmp/goldenv/bin/python scripts/export_golden.py

Install torch with that exact pin before transformers: anything else pulls CUDA packages.
`--out DIR` writes DIR/checkpoints/<case>/ and DIR/references/<case>.* instead of golden/ (a staging
folder for cases the package cannot run yet: the tests pick up every case under golden/).
"""

import argparse
import copy
import json
import os
import shutil
import sys

import numpy as np
import torch
import transformers
from safetensors import safe_open
from safetensors.numpy import save_file
from transformers import (Qwen2Config, Qwen2ForCausalLM, Qwen2MoeConfig, Qwen2MoeForCausalLM, Qwen3Config,
                          Qwen3ForCausalLM, Qwen3MoeConfig, Qwen3MoeForCausalLM)

GOLDEN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "golden")
MODELS = {"qwen2": (Qwen2Config, Qwen2ForCausalLM), "qwen3": (Qwen3Config, Qwen3ForCausalLM),
          "qwen2_moe": (Qwen2MoeConfig, Qwen2MoeForCausalLM), "qwen3_moe": (Qwen3MoeConfig, Qwen3MoeForCausalLM)}

BASE = dict(vocab_size=320, hidden_size=64, intermediate_size=160, num_hidden_layers=3,
            num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-6,
            max_position_embeddings=512, tie_word_embeddings=False,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0})
MOE = dict(num_experts=8, moe_intermediate_size=32)

# name: (model type, config overrides, dtype, shard size or None, prompts, rewrite config.json in 4.x form)
# A prompt is a list of lengths: one row each, left-padded to the longest.
# New cases go at the END: each case's seed is its position in this table.
CASES = {
    "gqa3_bf16": ("qwen2", dict(hidden_size=96, num_attention_heads=6, num_key_value_heads=2,  # 3 q heads per kv head
                                rope_parameters={"rope_type": "default", "rope_theta": 1000000.0}),
                  torch.bfloat16, None, [[7], [33], [300], [5, 12, 9]], False),
    "mha_f32_tied": ("qwen2", dict(num_attention_heads=4, num_key_value_heads=4, tie_word_embeddings=True),
                     torch.float32, None, [[11], [4, 16]], False),
    "mqa_bf16_sharded": ("qwen2", dict(num_attention_heads=4, num_key_value_heads=1, num_hidden_layers=4),
                         torch.bfloat16, "60KB", [[19], [3, 8, 8]], False),
    "rope_linear": ("qwen2", dict(rope_parameters={"rope_type": "linear", "factor": 2.0, "rope_theta": 10000.0}),
                    torch.bfloat16, None, [[13], [90]], False),
    "rope_yarn_4x": ("qwen2", dict(max_position_embeddings=128,
                                   rope_parameters={"rope_type": "yarn", "factor": 4.0, "rope_theta": 10000.0,
                                                    "original_max_position_embeddings": 32}),
                     torch.bfloat16, None, [[10], [100]], True),
    "rope_dynamic": ("qwen2", dict(max_position_embeddings=32,
                                   rope_parameters={"rope_type": "dynamic", "factor": 2.0, "rope_theta": 10000.0}),
                     torch.bfloat16, None, [[20], [80]], False),
    "sliding_window": ("qwen2", dict(use_sliding_window=True, sliding_window=8, max_window_layers=1,
                                     num_key_value_heads=1),
                       torch.bfloat16, None, [[40], [25, 40, 31]], False),
    # Qwen3: q/k RMSNorm per head; head_dim 24 is not hidden/heads = 16; biases on q, k, v AND o_proj.
    "qwen3_headdim_bias": ("qwen3", dict(head_dim=24, attention_bias=True),
                           torch.bfloat16, None, [[110], [5, 30, 17]], False),
    # Qwen3, tied embeddings, no bias, window 8 on layers >= max_window_layers (2 and 3).
    "qwen3_tied_window": ("qwen3", dict(head_dim=16, num_hidden_layers=4, tie_word_embeddings=True,
                                        use_sliding_window=True, sliding_window=8, max_window_layers=2),
                          torch.bfloat16, None, [[120], [25, 40, 31]], False),
    # Qwen2-MoE: top-2 of 8 experts plus a sigmoid-gated shared expert; layer 1 dense; qkv biases.
    "qwen2_moe_shared": ("qwen2_moe", dict(**MOE, num_experts_per_tok=2, shared_expert_intermediate_size=96,
                                           norm_topk_prob=False, mlp_only_layers=[1]),
                         torch.bfloat16, None, [[110], [20, 45, 33]], False),
    # Qwen3-MoE: top-3 of 8, renormalised; decoder_sparse_step 2 makes layers 1 and 3 sparse, 0 and 2 dense.
    "qwen3_moe_step2": ("qwen3_moe", dict(**MOE, head_dim=16, num_hidden_layers=4, num_experts_per_tok=3,
                                          norm_topk_prob=True, decoder_sparse_step=2),
                        torch.bfloat16, None, [[105], [12, 50, 29]], False),
    # Qwen3-MoE as hub checkpoints ship it: 4.x config.json (num_experts, rope_theta, torch_dtype), sharded;
    # top-2 of 8 without renormalising, layer 0 dense via mlp_only_layers, head_dim 32 (not 16), tied.
    "qwen3_moe_v4_sharded": ("qwen3_moe", dict(**MOE, head_dim=32, num_experts_per_tok=2, norm_topk_prob=False,
                                               mlp_only_layers=[0], tie_word_embeddings=True),
                             torch.bfloat16, "60KB", [[100], [9, 40, 22]], True),
}
GENERATE_NEW_TOKENS = 12
ROUTER_SCALE = 1.5       # router logits of std ~1.5: fewest near ties (larger shrinks the k-th probability)
MIN_ROUTER_GAP = 1e-3    # no token's k-th and (k+1)-th router probabilities closer than this
MIN_EXPERT_SHARE = 0.02  # every expert chosen in at least this share of the routed rows, in every sparse layer
MIN_SENSITIVITY = 1e-2   # each feature must move the logits by at least this (relative)
MAX_ATTEMPTS = 100       # whole-model re-draws, when generated tokens route near a tie
MAX_ROUTER_DRAWS = 2000  # router re-draws per sparse layer, against the prompt tokens


def randomize(model, gen):
    """Overwrite every parameter: biases and norm weights too, so none is a no-op."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:  # input/post-attention/final norms, q_norm and k_norm
                p.copy_(1.0 + 0.3 * torch.randn(p.shape, generator=gen))
            elif name.endswith("bias"):
                p.copy_(0.5 * torch.randn(p.shape, generator=gen))
            elif "embed_tokens" in name:
                p.copy_(0.5 * torch.randn(p.shape, generator=gen))
            elif name.endswith("mlp.gate.weight"):  # MoE router [experts, hidden]
                p.copy_(ROUTER_SCALE * torch.randn(p.shape, generator=gen) / p.shape[-1] ** 0.5)
            else:  # [out, in] matrices and fused experts [experts, out, in]: unit-variance outputs
                p.copy_(torch.randn(p.shape, generator=gen) / p.shape[-1] ** 0.5)


def to_v4_config(folder):
    """Rewrite config.json the way transformers 4.x saved it (rope_theta + rope_scaling, torch_dtype,
    and num_experts for Qwen3-MoE, which 5.x writes as num_local_experts)."""
    path = os.path.join(folder, "config.json")
    with open(path) as f:
        cfg = json.load(f)
    rp = cfg.pop("rope_parameters")
    cfg["rope_theta"] = rp.pop("rope_theta")
    rp["type"] = rp.pop("rope_type")
    cfg["rope_scaling"] = None if rp == {"type": "default"} else rp  # hub configs: null for plain RoPE
    cfg["torch_dtype"] = cfg.pop("dtype")
    cfg.pop("layer_types", None)
    if "num_local_experts" in cfg:
        cfg["num_experts"] = cfg.pop("num_local_experts")
    cfg["transformers_version"] = "4.51.0" if cfg["model_type"].startswith("qwen3") else "4.43.1"  # Qwen3: 4.51
    with open(path, "w") as f:
        json.dump(cfg, f, indent=2, sort_keys=True)


def make_batch(lengths, vocab, gen):
    """Random ids, left-padded to the longest row with pad id 0, and the 0/1 attention mask."""
    T = max(lengths)
    ids = np.zeros((len(lengths), T), np.int64)
    mask = np.zeros((len(lengths), T), np.int64)
    for r, n in enumerate(lengths):
        ids[r, T - n:] = torch.randint(1, vocab, (n,), generator=gen).numpy()
        mask[r, T - n:] = 1
    return ids, mask


def positions(mask):
    """Position ids as generate() computes them for left padding."""
    return torch.from_numpy(np.where(mask == 0, 1, mask.cumsum(-1) - 1))


def load(model_type, folder, **overrides):
    """A fresh float32 eager model per call: dynamic RoPE keeps state between calls in transformers."""
    if model_type.endswith("_moe"):
        overrides = {"experts_implementation": "eager", **overrides}
    cls = MODELS[model_type][1]
    return cls.from_pretrained(folder, dtype=torch.float32, attn_implementation="eager", **overrides).eval()


def run(model, ids, mask):
    ids_t, mask_t = torch.from_numpy(ids), torch.from_numpy(mask)
    with torch.no_grad():
        out = model(input_ids=ids_t, attention_mask=mask_t, position_ids=positions(mask), output_hidden_states=True)
        gen = model.generate(input_ids=ids_t, attention_mask=mask_t, do_sample=False,
                             max_new_tokens=GENERATE_NEW_TOKENS, min_new_tokens=GENERATE_NEW_TOKENS,
                             pad_token_id=0)
    return out, gen[:, ids.shape[1]:].numpy()


def logits(model, ids, mask):
    with torch.no_grad():
        return model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask),
                     position_ids=positions(mask)).logits


def relative_change(other, ref, mask):
    valid = torch.from_numpy(mask) == 1
    return float((other - ref)[valid].norm() / ref[valid].norm())


# ----------------------------------------------------------------------------------------------
# MoE routing: record every router call, check that no choice hangs on a near tie
# ----------------------------------------------------------------------------------------------

def sparse_layers(model):
    return [i for i, layer in enumerate(model.model.layers) if hasattr(layer.mlp, "experts")]


class RouterLog:
    """Forward hooks on every router: its float32 logits and chosen experts, per call, per layer."""

    def __init__(self, model):
        self.calls = {i: [] for i in sparse_layers(model)}
        self.handles = [model.model.layers[i].mlp.gate.register_forward_hook(self.hook(i)) for i in self.calls]

    def hook(self, i):
        def record(module, inputs, output):
            self.calls[i].append((output[0].detach().float().clone(), output[2].detach().clone()))
        return record

    def take(self, batch, mask=None):
        """The calls since the last take, as {layer: (probs [n, E], chosen [n, k])} over real tokens only.
        mask [B, T] selects the real tokens of a call over T positions; calls over 1 position are all real."""
        out = {}
        for i, calls in self.calls.items():
            probs, chosen = [], []
            for router_logits, idx in calls:
                p = torch.softmax(router_logits, dim=-1).reshape(batch, -1, router_logits.shape[-1])
                idx = idx.reshape(batch, p.shape[1], -1)
                keep = torch.ones(p.shape[:2], dtype=torch.bool) if p.shape[1] == 1 else torch.from_numpy(mask == 1)
                probs.append(p[keep])
                chosen.append(idx[keep])
            out[i] = (torch.cat(probs), torch.cat(chosen))
            calls.clear()
        return out

    def close(self):
        for h in self.handles:
            h.remove()


def routing_facts(taken, k, num_experts):
    """Per sparse layer: experts used, how often, distinct top-k sets, smallest k-th/(k+1)-th gap."""
    facts = []
    for i in sorted(taken[0]):
        probs = torch.cat([t[i][0] for t in taken])
        chosen = torch.cat([t[i][1] for t in taken])
        top = probs.sort(dim=-1, descending=True)
        gap = top.values[:, k - 1] - top.values[:, k]
        clear = gap > 1e-6  # where the choice is not a tie, it is the top k of these probabilities
        assert torch.equal(top.indices[clear, :k].sort(-1).values, chosen[clear].sort(-1).values)
        counts = torch.bincount(chosen.flatten(), minlength=num_experts)
        facts.append({"layer": i, "rows_checked": int(probs.shape[0]),
                      "experts_used": [int(e) for e in torch.nonzero(counts).flatten()],
                      "selections_per_expert": [int(c) for c in counts],
                      "distinct_expert_sets": len({tuple(r) for r in chosen.sort(-1).values.tolist()}),
                      "min_gap_kth_vs_next_prob": float(gap.min())})
    return facts


def routing_ok(facts, num_experts):
    return all(min(f["selections_per_expert"]) >= MIN_EXPERT_SHARE * f["rows_checked"]
               and f["distinct_expert_sets"] > 1 and f["min_gap_kth_vs_next_prob"] >= MIN_ROUTER_GAP for f in facts)


# ----------------------------------------------------------------------------------------------
# Sensitivity: the same weights with one feature switched off must give other logits
# ----------------------------------------------------------------------------------------------

class SigmoidOne(torch.nn.Module):
    """Stands in for shared_expert_gate: +inf, so sigmoid(gate) is exactly 1 (the shared expert ungated)."""

    def forward(self, x):
        return torch.full((*x.shape[:-1], 1), float("inf"), dtype=x.dtype)


def variants(model_type, config, folder):
    """{meta name: model with one feature switched off or flipped}; each must change the logits."""
    out = {}
    if "sliding_attention" in (getattr(config, "layer_types", None) or []):
        out["relative_change_without_window"] = load(model_type, folder,
                                                     layer_types=["full_attention"] * config.num_hidden_layers)
    if model_type in ("qwen3", "qwen3_moe"):
        m = load(model_type, folder)
        for layer in m.model.layers:  # skipped, which is not the same as weight 1
            layer.self_attn.q_norm = torch.nn.Identity()
            layer.self_attn.k_norm = torch.nn.Identity()
        out["relative_change_without_qk_norm"] = m
    if getattr(config, "attention_bias", False):
        m = load(model_type, folder)
        with torch.no_grad():
            for layer in m.model.layers:
                layer.self_attn.o_proj.bias.zero_()
        out["relative_change_without_o_proj_bias"] = m
    if model_type.endswith("_moe"):
        out["relative_change_norm_topk_prob_flipped"] = load(model_type, folder,
                                                             norm_topk_prob=not config.norm_topk_prob)
    if model_type == "qwen2_moe":
        m = load(model_type, folder)
        for i in sparse_layers(m):
            m.model.layers[i].mlp.shared_expert_gate = SigmoidOne()
        out["relative_change_shared_expert_ungated"] = m
    return out


def check_expert_layout(folder, model):
    """The saved files hold one [out, in] matrix per expert; the model fuses them: gate_up_proj[e] is
    gate_proj (the first half of its rows) over up_proj, and down_proj[e] is down_proj."""
    saved = {}
    for name in sorted(os.listdir(folder)):
        if name.endswith(".safetensors"):
            with safe_open(os.path.join(folder, name), "pt") as f:
                saved.update({k: f.get_tensor(k) for k in f.keys()})
    assert not any(".experts.gate_up_proj" in k or k.endswith(".experts.down_proj") for k in saved)
    for i in sparse_layers(model):
        experts = model.model.layers[i].mlp.experts
        n = experts.gate_up_proj.shape[1] // 2
        for e in range(experts.gate_up_proj.shape[0]):
            pre = f"model.layers.{i}.mlp.experts.{e}."
            assert torch.equal(saved[pre + "gate_proj.weight"].float(), experts.gate_up_proj[e, :n])
            assert torch.equal(saved[pre + "up_proj.weight"].float(), experts.gate_up_proj[e, n:])
            assert torch.equal(saved[pre + "down_proj.weight"].float(), experts.down_proj[e])


# ----------------------------------------------------------------------------------------------
# One case
# ----------------------------------------------------------------------------------------------

def build(model_type, overrides, dtype, prompts, gen):
    """The randomised model in its checkpoint dtype, then the prompt batches, from one generator."""
    config_cls, model_cls = MODELS[model_type]
    config = config_cls(**{**BASE, **overrides})
    model = model_cls(config)
    randomize(model, gen)
    model = model.to(dtype)
    return config, model, [make_batch(lengths, config.vocab_size, gen) for lengths in prompts]


def save(model, shard, v4, folder):
    shutil.rmtree(folder, ignore_errors=True)
    kwargs = {"max_shard_size": shard} if shard else {}
    model.save_pretrained(folder, **kwargs)
    if v4:
        to_v4_config(folder)


def export_prompts(model_type, model, folder, batches):
    """Reference arrays and meta for each prompt, the last reloaded model, router records."""
    arrays, entries, taken = {}, [], []
    for k, (ids, mask) in enumerate(batches):
        loaded = load(model_type, folder)
        # The reloaded model must hold exactly the bf16/f32 weights that were saved.
        for (n1, p1), (n2, p2) in zip(model.state_dict().items(), loaded.state_dict().items()):
            assert n1 == n2 and torch.equal(p1.float(), p2), n1
        log = RouterLog(loaded) if model_type.endswith("_moe") else None
        out, new_tokens = run(loaded, ids, mask)
        if log:
            # Every router call: the forward and generate's prefill (real tokens), each decode step, and a
            # forward over prompt + generated tokens (the only one that routes the last generated token).
            taken.append(log.take(len(ids), mask))
            full_mask = np.concatenate([mask, np.ones_like(new_tokens)], axis=1)
            logits(loaded, np.concatenate([ids, new_tokens], axis=1), full_mask)
            taken.append(log.take(len(ids), full_mask))
            log.close()
        arrays[f"p{k}.input_ids"] = ids
        arrays[f"p{k}.attention_mask"] = mask
        arrays[f"p{k}.logits"] = out.logits.numpy().astype(np.float32)
        for i, h in enumerate(out.hidden_states):
            arrays[f"p{k}.hidden.{i}"] = h.numpy().astype(np.float32)
        arrays[f"p{k}.generated"] = np.ascontiguousarray(new_tokens)  # save_file needs C order
        top2 = np.sort(out.logits.numpy(), axis=-1)[..., -2:]
        margin = float((top2[..., 1] - top2[..., 0])[mask == 1].min())
        entries.append({"lengths": [int(n) for n in mask.sum(-1)], "min_top2_margin": margin,
                        "hidden_states": len(out.hidden_states)})
    return arrays, entries, loaded, taken


def draw_routers(model, config, batches, gen):
    """Re-draw each sparse layer's router, lowest layer first, until the prompt tokens route clear of
    ties and use every expert there. A layer's router input depends only on the layers below it, so
    this takes tens of draws per layer where re-drawing the whole model would take many thousands.
    Returns the draws per layer, or None if some layer found no clean router."""
    probe = copy.deepcopy(model).float()  # runs in float32 on the checkpoint's (bf16) weights
    log, draws = RouterLog(probe), {}
    for i in sparse_layers(model):
        gate = model.model.layers[i].mlp.gate.weight
        for draw in range(MAX_ROUTER_DRAWS):
            if draw:
                with torch.no_grad():
                    gate.copy_(ROUTER_SCALE * torch.randn(gate.shape, generator=gen) / gate.shape[-1] ** 0.5)
                    probe.model.layers[i].mlp.gate.weight.copy_(gate.float())
            taken = []
            for ids, mask in batches:
                logits(probe, ids, mask)
                taken.append({i: log.take(len(ids), mask)[i]})
            if routing_ok(routing_facts(taken, config.num_experts_per_tok, config.num_experts), config.num_experts):
                draws[i] = draw + 1
                break
        else:
            return None
    log.close()
    return draws


def export_case(name, model_type, overrides, dtype, shard, prompts, v4, seed, out_dir):
    folder = os.path.join(out_dir, "checkpoints", name)
    moe = model_type.endswith("_moe")
    for attempt in range(MAX_ATTEMPTS if moe else 1):
        case_seed = seed + 10000 * attempt  # attempt 0 is the table position, as for every case
        gen = torch.Generator().manual_seed(case_seed)
        config, model, batches = build(model_type, overrides, dtype, prompts, gen)
        if moe:
            router_draws = draw_routers(model, config, batches, gen)
            if router_draws is None:
                continue
        save(model, shard, v4, folder)
        arrays, entries, loaded, taken = export_prompts(model_type, model, folder, batches)
        if not moe:
            break
        facts = routing_facts(taken, config.num_experts_per_tok, config.num_experts)
        if routing_ok(facts, config.num_experts):
            break
    else:
        raise SystemExit(f"{name}: no seed in {MAX_ATTEMPTS} attempts routes clear of ties with every expert used")

    others = variants(model_type, loaded.config, folder)
    grouped = load(model_type, folder, experts_implementation="grouped_mm") if moe else None
    for k, (entry, (ids, mask)) in enumerate(zip(entries, batches)):
        ref_logits = torch.from_numpy(arrays[f"p{k}.logits"])
        for what, other in others.items():
            entry[what] = relative_change(logits(other, ids, mask), ref_logits, mask)
            assert entry[what] > MIN_SENSITIVITY, (name, what, entry[what])
        if grouped is not None:  # transformers' default experts kernel: the same maths, for the record
            entry["relative_change_grouped_mm_experts"] = relative_change(logits(grouped, ids, mask), ref_logits, mask)

    meta = {"case": name, "dtype": str(dtype).replace("torch.", ""), "sharded": bool(shard),
            "config_form": "4.x" if v4 else "5.x", "prompts": entries}
    if model_type != "qwen2":  # the Qwen2 cases' json stays byte-identical to the committed one
        meta["model_type"], meta["seed"] = model_type, case_seed
    if moe:
        check_expert_layout(folder, loaded)
        meta["experts_implementation"] = "eager"
        meta["routing"] = {"sparse_layers": sparse_layers(loaded), "top_k": config.num_experts_per_tok,
                           "num_experts": config.num_experts, "norm_topk_prob": config.norm_topk_prob,
                           "router_probability": "softmax over all experts, float32",
                           "checked": "every router call of the forward, generate (prefill and each decode step) "
                                      "and a forward over prompt + generated tokens; real tokens only",
                           "min_gap_required": MIN_ROUTER_GAP, "layers": facts,
                           "router_draws": {str(i): n for i, n in router_draws.items()}}
    ref = os.path.join(out_dir, "references")
    os.makedirs(ref, exist_ok=True)
    save_file(arrays, os.path.join(ref, f"{name}.safetensors"))
    meta["transformers"], meta["torch"] = transformers.__version__, torch.__version__
    meta["layer_types"] = getattr(loaded.config, "layer_types", None)  # Qwen3-MoE has none
    meta["rope_parameters"] = loaded.config.rope_parameters
    with open(os.path.join(ref, f"{name}.json"), "w") as f:
        json.dump(meta, f, indent=2, sort_keys=True)
    print(f"{name}: {[p['lengths'] for p in meta['prompts']]} "
          f"margin>={min(p['min_top2_margin'] for p in meta['prompts']):.4f}", file=sys.stderr)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("cases", nargs="*", help=f"cases to export (default: all): {', '.join(CASES)}")
    parser.add_argument("--out", default=GOLDEN, help="folder for checkpoints/ and references/ (default: golden/)")
    args = parser.parse_args()
    unknown = set(args.cases) - set(CASES)
    if unknown:
        parser.error(f"unknown case(s): {', '.join(sorted(unknown))}")
    torch.set_num_threads(2)
    for seed, (name, case) in enumerate(CASES.items()):
        if not args.cases or name in args.cases:
            export_case(name, *case, seed=1000 + seed, out_dir=args.out)


if __name__ == "__main__":
    main()
