"""Export golden reference data from transformers, once. Not used by the package or its tests.

For each case below this builds a small Qwen2ForCausalLM with transformers, overwrites EVERY
parameter with random values (transformers' init leaves biases at 0 and norms at 1, which would
hide whole classes of bugs), saves it as a standard checkpoint folder (bf16 or f32 safetensors,
single file or sharded) under golden/checkpoints/<case>/, reloads that folder with transformers in
float32 with eager attention, and records for fixed prompts the logits and every hidden state
(golden/references/<case>.safetensors), plus the greedy tokens of `generate(do_sample=False)`.

    python -m venv /tmp/goldenv && /tmp/goldenv/bin/pip install torch==2.13.0 && \
    /tmp/goldenv/bin/pip install -e ".[golden]" && /tmp/goldenv/bin/python scripts/export_golden.py

Install torch with that exact pin before transformers: anything else pulls CUDA packages.
"""

import json
import os
import shutil
import sys

import numpy as np
import torch
import transformers
from safetensors.numpy import save_file
from transformers import Qwen2Config, Qwen2ForCausalLM

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "golden")
CKPT, REF = os.path.join(ROOT, "checkpoints"), os.path.join(ROOT, "references")

BASE = dict(vocab_size=320, hidden_size=64, intermediate_size=160, num_hidden_layers=3,
            num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-6,
            max_position_embeddings=512, tie_word_embeddings=False,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0})

# name: (config overrides, dtype, shard size or None, prompts, rewrite config.json in 4.x form)
# A prompt is a list of lengths: one row each, left-padded to the longest.
CASES = {
    "gqa3_bf16": (dict(hidden_size=96, num_attention_heads=6, num_key_value_heads=2,  # 3 q heads per kv head
                       rope_parameters={"rope_type": "default", "rope_theta": 1000000.0}),
                  torch.bfloat16, None, [[7], [33], [300], [5, 12, 9]], False),
    "mha_f32_tied": (dict(num_attention_heads=4, num_key_value_heads=4, tie_word_embeddings=True),
                     torch.float32, None, [[11], [4, 16]], False),
    "mqa_bf16_sharded": (dict(num_attention_heads=4, num_key_value_heads=1, num_hidden_layers=4),
                         torch.bfloat16, "60KB", [[19], [3, 8, 8]], False),
    "rope_linear": (dict(rope_parameters={"rope_type": "linear", "factor": 2.0, "rope_theta": 10000.0}),
                    torch.bfloat16, None, [[13], [90]], False),
    "rope_yarn_4x": (dict(max_position_embeddings=128,
                          rope_parameters={"rope_type": "yarn", "factor": 4.0, "rope_theta": 10000.0,
                                           "original_max_position_embeddings": 32}),
                     torch.bfloat16, None, [[10], [100]], True),
    "rope_dynamic": (dict(max_position_embeddings=32,
                          rope_parameters={"rope_type": "dynamic", "factor": 2.0, "rope_theta": 10000.0}),
                     torch.bfloat16, None, [[20], [80]], False),
    "sliding_window": (dict(use_sliding_window=True, sliding_window=8, max_window_layers=1,
                            num_key_value_heads=1),
                       torch.bfloat16, None, [[40], [25, 40, 31]], False),
}
GENERATE_NEW_TOKENS = 12


def randomize(model, gen):
    """Overwrite every parameter: biases and norm weights too, so none is a no-op."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1.0 + 0.3 * torch.randn(p.shape, generator=gen))
            elif name.endswith("bias"):
                p.copy_(0.5 * torch.randn(p.shape, generator=gen))
            elif "embed_tokens" in name:
                p.copy_(0.5 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(torch.randn(p.shape, generator=gen) / p.shape[1] ** 0.5)


def to_v4_config(folder):
    """Rewrite config.json the way transformers 4.x saved it (rope_theta + rope_scaling, torch_dtype)."""
    path = os.path.join(folder, "config.json")
    with open(path) as f:
        cfg = json.load(f)
    rp = cfg.pop("rope_parameters")
    cfg["rope_theta"] = rp.pop("rope_theta")
    rp["type"] = rp.pop("rope_type")
    cfg["rope_scaling"] = rp
    cfg["torch_dtype"] = cfg.pop("dtype")
    cfg.pop("layer_types", None)
    cfg["transformers_version"] = "4.43.1"
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


def run(folder, ids, mask):
    """A fresh float32 eager model per call: dynamic RoPE keeps state between calls in transformers."""
    model = Qwen2ForCausalLM.from_pretrained(folder, dtype=torch.float32, attn_implementation="eager").eval()
    ids_t, mask_t = torch.from_numpy(ids), torch.from_numpy(mask)
    pos = mask_t.cumsum(-1) - 1
    pos.masked_fill_(mask_t == 0, 1)  # as generate() does for left padding
    with torch.no_grad():
        out = model(input_ids=ids_t, attention_mask=mask_t, position_ids=pos, output_hidden_states=True)
        gen = model.generate(input_ids=ids_t, attention_mask=mask_t, do_sample=False,
                             max_new_tokens=GENERATE_NEW_TOKENS, min_new_tokens=GENERATE_NEW_TOKENS,
                             pad_token_id=0)
    return model, out, gen[:, ids.shape[1]:].numpy()


def export_case(name, overrides, dtype, shard, prompts, v4, seed):
    gen = torch.Generator().manual_seed(seed)
    folder = os.path.join(CKPT, name)
    shutil.rmtree(folder, ignore_errors=True)
    config = Qwen2Config(**{**BASE, **overrides})
    model = Qwen2ForCausalLM(config)
    randomize(model, gen)
    model = model.to(dtype)
    kwargs = {"max_shard_size": shard} if shard else {}
    model.save_pretrained(folder, **kwargs)
    if v4:
        to_v4_config(folder)

    arrays, meta = {}, {"case": name, "dtype": str(dtype).replace("torch.", ""), "sharded": bool(shard),
                        "config_form": "4.x" if v4 else "5.x", "prompts": []}
    for k, lengths in enumerate(prompts):
        ids, mask = make_batch(lengths, config.vocab_size, gen)
        loaded, out, new_tokens = run(folder, ids, mask)
        # The reloaded model must hold exactly the bf16/f32 weights that were saved.
        for (n1, p1), (n2, p2) in zip(model.state_dict().items(), loaded.state_dict().items()):
            assert n1 == n2 and torch.equal(p1.float(), p2), n1
        arrays[f"p{k}.input_ids"] = ids
        arrays[f"p{k}.attention_mask"] = mask
        arrays[f"p{k}.logits"] = out.logits.numpy().astype(np.float32)
        for i, h in enumerate(out.hidden_states):
            arrays[f"p{k}.hidden.{i}"] = h.numpy().astype(np.float32)
        arrays[f"p{k}.generated"] = np.ascontiguousarray(new_tokens)  # save_file needs C order
        top2 = np.sort(out.logits.numpy(), axis=-1)[..., -2:]
        margin = float((top2[..., 1] - top2[..., 0])[mask == 1].min())
        entry = {"lengths": lengths, "min_top2_margin": margin, "hidden_states": len(out.hidden_states)}
        if name == "sliding_window":
            # Prove the window matters: the same weights with full attention give other logits.
            full = Qwen2ForCausalLM.from_pretrained(folder, dtype=torch.float32, attn_implementation="eager",
                                                    layer_types=["full_attention"] * config.num_hidden_layers)
            pos = torch.from_numpy(np.where(mask == 0, 1, mask.cumsum(-1) - 1))
            with torch.no_grad():
                lf = full(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask),
                          position_ids=pos).logits
            diff = float((lf - out.logits)[torch.from_numpy(mask) == 1].norm() /
                         out.logits[torch.from_numpy(mask) == 1].norm())
            assert diff > 1e-2, diff
            entry["relative_change_without_window"] = diff
        meta["prompts"].append(entry)
    os.makedirs(REF, exist_ok=True)
    save_file(arrays, os.path.join(REF, f"{name}.safetensors"))
    meta["transformers"], meta["torch"] = transformers.__version__, torch.__version__
    meta["layer_types"] = loaded.config.layer_types
    meta["rope_parameters"] = loaded.config.rope_parameters
    with open(os.path.join(REF, f"{name}.json"), "w") as f:
        json.dump(meta, f, indent=2, sort_keys=True)
    print(f"{name}: {[p['lengths'] for p in meta['prompts']]} "
          f"margin>={min(p['min_top2_margin'] for p in meta['prompts']):.4f}", file=sys.stderr)


def main():
    torch.set_num_threads(2)
    only = sys.argv[1:]
    for seed, (name, case) in enumerate(CASES.items()):
        if not only or name in only:
            export_case(name, *case, seed=1000 + seed)


if __name__ == "__main__":
    main()
