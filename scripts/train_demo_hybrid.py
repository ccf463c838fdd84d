"""Train npqwen's hybrid demo model with transformers' own Qwen3_5ForCausalLM. Not used by the package.

The Qwen2 demo (scripts/train_demo.py) shows a new user real language; this one does the same with the
architecture of Qwen3.5: Gated DeltaNet "linear attention" layers (a fixed-size recurrent state, the
delta rule) and gated full-attention layers, 3 to 1 as in the released configs. Everything but the
model comes from train_demo.py, imported rather than copied, so that the two perplexities compare:

1. the same corpus and split (scripts/demo_corpus.py), checked by its sha256 against
   golden/references/demo_train.json, and the demo's own tokenizer.json (not retrained): the
   validation tokens are the Qwen2 demo's, token for token (their sha256 is recorded too);
2. a tiny Qwen3_5ForCausalLM of the demo's width, depth and MLP (hidden 256, 4 layers, MLP 512, tied
   embeddings): layers 0-2 Gated DeltaNet (2 key heads of 64 each serving 2 of 4 value heads of 64,
   causal convolution of 4), layer 3 gated full attention (4 query heads of 64 with an output gate
   each, 2 kv heads, RoPE on a quarter of each head, theta 1e7, as released). transformers' init,
   but for the decay's A_log and dt_bias, drawn as the Gated DeltaNet authors' library draws them
   (decay_init). transformers' torch fallback kernels run the delta rule (no flash-linear-attention);
3. trained with train_demo.fit (AdamW, warmup then cosine decay, rows starting at a document start,
   the written documents seen 4 times an epoch), the demo's settings except the number of steps: 300,
   not 1150, because with the demo's 1150 this architecture memorised the training split and did worse
   on held-out text than the unigram baseline (STEPS_CHOSEN below has that run's curve); saved in
   bf16 under golden/checkpoints/demo_hybrid/ with the demo's tokenizer.json and tokenizer_config.json
   (Qwen2-Instruct's ChatML template) and a greedy generation_config.json;
4. evaluated by train_demo.evaluate on the saved bf16 weights loaded back in float32 (eager): held-out
   perplexity on the same scored tokens as the Qwen2 demo's 372.9, the add-one unigram baseline, the
   acceptance check (greedy next token after "学习如逆水行舟,不进则" is 退) and greedy continuations,
   written with settings, wall time and versions to golden/references/demo_hybrid_train.json;
5. golden references with export_golden's loading and run(): golden/references/demo_hybrid.*, the
   demo's three prompts and a left-padded batch of an 80-token validation excerpt and the proverb,
   with what export_golden records for hybrid cases (decode-step logits of generate, the decode paths
   checked against the chunked prefill, each hybrid detail switched off moving the logits).

    /tmp/goldenv/bin/python scripts/train_demo_hybrid.py                    # everything, ~7 minutes
    /tmp/goldenv/bin/python scripts/train_demo_hybrid.py --references-only  # step 5 on the saved folder
"""

import argparse
import hashlib
import json
import math
import os
import shutil
import sys
import time

import numpy as np
import torch
import transformers
from safetensors.numpy import save_file
from safetensors.torch import load_file as load_torch
from tokenizers import Tokenizer
from transformers import Qwen3_5ForCausalLM, Qwen3_5TextConfig

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import train_demo as demo  # noqa: E402
from export_golden import (GENERATE_NEW_TOKENS, MIN_SENSITIVITY, decode_paths, hybrid_meta,  # noqa: E402
                           hybrid_variants, load, padding_not_zeroed, relative_change, run)

NAME, MODEL_TYPE = "demo_hybrid", "qwen3_5_text"
FOLDER = os.path.join(demo.CKPT, NAME)
DEMO_RECORD = os.path.join(demo.REF, "demo_train.json")
L, F = "linear_attention", "full_attention"
MODEL = dict(hidden_size=256, intermediate_size=512, num_hidden_layers=4, layer_types=[L, L, L, F],
             num_attention_heads=4, num_key_value_heads=2, head_dim=64,
             linear_num_key_heads=2, linear_num_value_heads=4, linear_key_head_dim=64, linear_value_head_dim=64,
             linear_conv_kernel_dim=4, max_position_embeddings=512, rms_norm_eps=1e-6, tie_word_embeddings=True,
             rope_parameters={"rope_type": "default", "rope_theta": 10000000.0, "partial_rotary_factor": 0.25},
             initializer_range=0.02)
# The demo's settings but for the number of steps (and a finer validation curve): see STEPS_CHOSEN.
TRAIN = dict(demo.TRAIN, steps=300, eval_every=50)
# Two earlier runs, both with transformers' own init of the decay (see decay_init), led to these settings. The first,
# with the demo's 1150 steps (4.7 M tokens, ~15 epochs; 1894 s on 2 cores), memorised the training split: train
# perplexity 1.30 and held-out perplexity 1462.7, worse than the add-one unigram's 1161.1, though it completed the
# proverb (p(退) = 1.000). Its validation curve was lowest at the first evaluation and rose from there: this
# architecture fits the 309 k-token epoch about three times faster than the Qwen2 demo (train loss 2.81 at step 250
# against the Qwen2 demo's 4.56), so the budget was cut to 300 steps, chosen from that curve, which is the held-out
# split itself (the perplexity reported is therefore an early-stopped one). The second, 300 steps, reached 200.8 but
# its DeltaNet heads had learned next to no memory: a write's half-life under one token in 11 of its 12 heads (the
# mean decay over the proverb prompt), the decay's parameters hardly moved from transformers' init.
STEPS_CHOSEN = {
    "first_run": {"decay_init": "transformers' (dt_bias = 1)", "steps": 1150, "train_seconds": 1893.6,
                  "valid_perplexity": 1462.68, "train_perplexity": 1.296, "acceptance_p_tui": 1.0,
                  "curve": [{"step": 250, "train_loss_avg": 2.8072, "valid_nll": 5.3603},
                            {"step": 500, "train_loss_avg": 1.5437, "valid_nll": 5.7571},
                            {"step": 750, "train_loss_avg": 0.5514, "valid_nll": 6.5565},
                            {"step": 1000, "train_loss_avg": 0.2186, "valid_nll": 7.1019},
                            {"step": 1150, "train_loss_avg": 0.1724, "valid_nll": 7.2877}]},
    "second_run": {"decay_init": "transformers' (dt_bias = 1)", "steps": 300, "train_seconds": 397.2,
                   "valid_perplexity": 200.80, "train_perplexity": 12.46, "acceptance_p_tui": 0.998,
                   "heads_with_a_half_life_over_one_token": "1 of 12",
                   "curve": [{"step": 50, "valid_nll": 6.1651}, {"step": 100, "valid_nll": 5.661},
                             {"step": 150, "valid_nll": 5.4532}, {"step": 200, "valid_nll": 5.3029},
                             {"step": 250, "valid_nll": 5.2346}, {"step": 300, "valid_nll": 5.3024}]},
    "why": "the first run's held-out perplexity was lowest at step 250 (212.8) and rose to 1462.7 at 1150 while the "
           "training split was memorised; 300 steps keep the schedule's warmup and cosine decay over that span. Chosen "
           "by looking at the held-out curve, so the held-out perplexity is an early-stopped, optimistic one. The "
           "decay is drawn as flash-linear-attention draws it (decay_init) so that the recurrent state is used.",
}
EXCERPT = 80  # tokens of validation text in the padded batch: two chunks of the chunked prefill (64 + 16)


def log(*args):
    print(*args, file=sys.stderr, flush=True)


def sha256_ids(ids):
    return hashlib.sha256(np.asarray(ids, np.int64).tobytes()).hexdigest()


def demo_tokenizer():
    return Tokenizer.from_file(os.path.join(demo.FOLDER, "tokenizer.json"))


def build_model(tok):
    torch.manual_seed(TRAIN["seed"])
    config = Qwen3_5TextConfig(vocab_size=tok.get_vocab_size(), **demo.special_ids(tok), **MODEL)
    model = Qwen3_5ForCausalLM(config)
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()  # tied
    decay_init(model, torch.Generator().manual_seed(TRAIN["seed"]))
    return model


def decay_init(model, gen):
    """The decay's parameters drawn as the Gated DeltaNet authors' library draws them (flash-linear-attention,
    fla/layers/gated_deltanet.py): A uniform in (0, 16) (here from 0.01, as transformers, so that log A is finite)
    and dt_bias the inverse softplus of a step dt log-uniform in [0.001, 0.1], so that a head starts by keeping
    exp(-A dt) of its state per token, between about 0.2 and 1. transformers' own init (meant for loading trained
    weights) sets dt_bias to 1: then every head keeps exp(-1.3 A), mostly under 1%, and 300 steps leave it there
    (STEPS_CHOSEN's second run: the recurrent state forgotten at every token in 11 of 12 heads)."""
    with torch.no_grad():
        for layer in model.model.layers:
            if hasattr(layer, "linear_attn"):
                la = layer.linear_attn
                n = la.A_log.numel()
                la.A_log.copy_(torch.empty(n).uniform_(0.01, 16, generator=gen).log())
                dt = torch.exp(math.log(1e-3) + torch.rand(n, generator=gen) * math.log(100)).clamp(min=1e-4)
                la.dt_bias.copy_(dt + torch.log(-torch.expm1(-dt)))     # softplus(dt_bias) = dt


def save(model, tok):
    demo.save_folder(model, tok, FOLDER)
    for name in ("tokenizer.json", "tokenizer_config.json"):  # the demo's own files, byte for byte
        shutil.copyfile(os.path.join(demo.FOLDER, name), os.path.join(FOLDER, name))


def load_saved():
    model = Qwen3_5ForCausalLM.from_pretrained(FOLDER, dtype=torch.float32, attn_implementation="eager").eval()
    return model, Tokenizer.from_file(os.path.join(FOLDER, "tokenizer.json"))


# ---------------------------------------------------------------------------------- references
def reference_prompts(tok, hf_tok):
    """[(text, ids [rows, T], mask [rows, T])]: the demo's three prompts, then a left-padded batch."""
    chat_text, _ = demo.chat_prompt(FOLDER)
    out = []
    for text in [demo.PROVERB_PROMPT, demo.ENGLISH_PROMPTS[0], chat_text]:
        enc = tok.encode(text).ids
        assert hf_tok(text)["input_ids"] == enc, "transformers and tokenizers disagree"
        out.append((text, np.array([enc], np.int64), np.ones((1, len(enc)), np.int64)))
    _, valid_texts, _, _ = demo.corpus()
    excerpt = [t for d in demo.encode(tok, valid_texts, tok.token_to_id("<|endoftext|>")) for t in d][:EXCERPT]
    rows = [excerpt, tok.encode(demo.PROVERB_PROMPT).ids]
    ids = np.full((2, EXCERPT), tok.token_to_id("<|endoftext|>"), np.int64)
    mask = np.zeros((2, EXCERPT), np.int64)
    for r, row in enumerate(rows):
        ids[r, EXCERPT - len(row):], mask[r, EXCERPT - len(row):] = row, 1
    out.append(([tok.decode(r, skip_special_tokens=False) for r in rows], ids, mask))
    return out


def export_references():
    """Golden references of the saved model, as export_golden.py writes a hybrid case's."""
    torch.set_num_threads(TRAIN["threads"])
    tok = Tokenizer.from_file(os.path.join(FOLDER, "tokenizer.json"))
    _, hf_tok = demo.chat_prompt(FOLDER)
    saved = load_torch(os.path.join(FOLDER, "model.safetensors"))  # bf16: read through torch
    prompts = reference_prompts(tok, hf_tok)
    others = hybrid_variants(MODEL_TYPE, load(MODEL_TYPE, FOLDER).config, FOLDER)
    unpadded = padding_not_zeroed(MODEL_TYPE, FOLDER)
    arrays, entries = {}, []
    for k, (text, ids, mask) in enumerate(prompts):
        loaded = load(MODEL_TYPE, FOLDER)
        state = loaded.state_dict()
        for name, w in saved.items():  # the reloaded model holds exactly the saved bf16 weights
            assert w.dtype == torch.bfloat16 and torch.equal(w.float(), state[name]), name
        out, new_tokens = run(loaded, ids, mask)
        arrays[f"p{k}.input_ids"] = ids
        arrays[f"p{k}.attention_mask"] = mask
        arrays[f"p{k}.logits"] = out.logits.numpy().astype(np.float32)
        for i, h in enumerate(out.hidden_states):
            arrays[f"p{k}.hidden.{i}"] = h.numpy().astype(np.float32)
        arrays[f"p{k}.generated"] = np.ascontiguousarray(new_tokens)
        top2 = np.sort(out.logits.numpy(), axis=-1)[..., -2:]
        margin = float((top2[..., 1] - top2[..., 0])[mask == 1].min())
        entry = {"lengths": [int(n) for n in mask.sum(-1)], "min_top2_margin": margin,
                 "hidden_states": len(out.hidden_states), "text": text,
                 "generated_text": [tok.decode(row.tolist(), skip_special_tokens=False) for row in new_tokens]
                 if len(ids) > 1 else tok.decode(new_tokens[0].tolist(), skip_special_tokens=False)}
        ref_logits = torch.from_numpy(arrays[f"p{k}.logits"])
        changes = {what: relative_change(other(ids, mask), ref_logits, mask) for what, other in others.items()}
        if not mask.all():
            changes["relative_change_padding_not_zeroed"] = relative_change(unpadded(ids, mask), ref_logits, mask)
        for what, change in changes.items():
            entry[what] = change
            assert change > MIN_SENSITIVITY, (k, what, change)
        arrays[f"p{k}.generate_logits"], facts = decode_paths(MODEL_TYPE, FOLDER, ids, mask, ref_logits, new_tokens)
        entry.update(facts)
        entries.append(entry)
        log(f"p{k}: {entry['lengths']} tokens, margin {margin:.4f} (generated {facts['min_top2_margin_generated']:.4f}), "
            f"-> {entry['generated_text']!r}")
    save_file(arrays, os.path.join(demo.REF, f"{NAME}.safetensors"))
    meta = {"case": NAME, "dtype": "bfloat16", "sharded": False, "config_form": "5.x", "prompts": entries,
            "model_type": MODEL_TYPE, "seed": TRAIN["seed"], "trained": "scripts/train_demo_hybrid.py",
            "transformers": transformers.__version__, "torch": torch.__version__,
            "layer_types": loaded.config.layer_types, "rope_parameters": loaded.config.rope_parameters,
            "generate_new_tokens": GENERATE_NEW_TOKENS, **hybrid_meta(MODEL_TYPE, loaded, FOLDER, {})}
    with open(os.path.join(demo.REF, f"{NAME}.json"), "w") as f:
        json.dump(meta, f, indent=2, sort_keys=True, ensure_ascii=False)
        f.write("\n")


# ---------------------------------------------------------------------------------- main
def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--references-only", action="store_true", help=f"only re-export golden/references/{NAME}.*")
    ap.add_argument("--steps", type=int, default=TRAIN["steps"], help="training steps (default: the recorded budget)")
    args = ap.parse_args()
    torch.set_num_threads(TRAIN["threads"])
    torch.use_deterministic_algorithms(True)
    if args.references_only:
        export_references()
        return
    TRAIN["steps"] = args.steps
    t0 = time.time()
    with open(DEMO_RECORD) as f:
        record = json.load(f)
    train_texts, valid_texts, written, corpus_sha = demo.corpus()
    assert corpus_sha == record["corpus"]["sha256"], "not the corpus the Qwen2 demo was trained on (Python version?)"
    tok = demo_tokenizer()
    eot = tok.token_to_id("<|endoftext|>")
    train_docs, valid_docs = demo.encode(tok, train_texts, eot), demo.encode(tok, valid_texts, eot)
    valid_stream = [t for d in valid_docs for t in d]
    n_train, n_valid = sum(map(len, train_docs)), len(valid_stream)
    assert (n_train, n_valid) == (record["corpus"]["train_tokens"], record["corpus"]["valid_tokens"])
    log(f"corpus: {len(train_texts)} train documents ({n_train} tokens), {len(valid_texts)} validation "
        f"documents ({n_valid} tokens); the demo's tokenizer, {tok.get_vocab_size()} tokens")
    units = demo.training_units(train_docs, written, TRAIN["seq_len"], TRAIN["written_repeat"])
    epoch_tokens = sum(map(len, units))
    model = build_model(tok)
    n_params = sum(p.numel() for p in model.parameters())
    log(f"model: {n_params:,} parameters, layers {MODEL['layer_types']}")
    # Decays multiplied over a chunk fall below float32's smallest normal number (1.2e-38), and the CPU takes tens
    # of times longer on such subnormal numbers: flushed to zero while training (they are far below float32's
    # precision of the sums they enter), and not after, so that evaluation and golden data are transformers' own.
    torch.set_flush_denormal(True)
    load_before = os.getloadavg()
    curve, train_s = demo.fit(model, units, valid_stream, TRAIN["steps"], TRAIN)
    load_after = os.getloadavg()
    torch.set_flush_denormal(False)
    save(model, tok)
    results = demo.evaluate(train_docs, valid_docs, saved=load_saved(), folder=FOLDER)
    assert results["valid_tokens_scored"] == record["evaluation"]["valid_tokens_scored"]
    tokens_seen = TRAIN["steps"] * TRAIN["seq_len"] * TRAIN["batch_size"]
    qwen2 = record["evaluation"]
    report = {
        "model": {"architecture": "Qwen3_5ForCausalLM", "model_type": MODEL_TYPE, **MODEL,
                  "vocab_size": tok.get_vocab_size(), "parameters": n_params, "saved_dtype": "bfloat16",
                  "folder_bytes": demo.folder_size(FOLDER),
                  "delta_rule_kernels": "transformers' torch fallbacks (torch_chunk_gated_delta_rule in training "
                                        "and prefill, torch_recurrent_gated_delta_rule in decode); no "
                                        "flash-linear-attention, no causal-conv1d"},
        "tokenizer": {"file": "golden/checkpoints/demo/tokenizer.json, copied unchanged",
                      "sha256": hashlib.sha256(open(os.path.join(FOLDER, "tokenizer.json"), "rb").read()).hexdigest()},
        "training": {**TRAIN, "steps_chosen": STEPS_CHOSEN, "optimizer": "AdamW", "schedule": "linear warmup, cosine decay",
                     "packing": "rows start at a document start; the overflowing document is cut",
                     "loop": "scripts/train_demo.py's fit()",
                     "epoch_tokens": epoch_tokens, "tokens_seen": tokens_seen,
                     "epochs_approx": tokens_seen / epoch_tokens, "train_seconds": train_s,
                     "total_seconds": None, "curve": curve,
                     "load_average_1_5_15_min": {"before_training": load_before, "after_training": load_after}},
        "corpus": {**demo.corpus_record(train_texts, valid_texts, written, corpus_sha, train_docs, valid_docs),
                   "valid_token_ids_sha256": sha256_ids(valid_stream)},
        "evaluation": results,
        "against_the_qwen2_demo": {
            "same_valid_tokens_scored": True,
            "qwen2_demo_valid_perplexity": qwen2["valid_perplexity"],
            "hybrid_valid_perplexity": results["valid_perplexity"],
            "unigram_add_one_valid_perplexity": qwen2["unigram_add_one_valid_perplexity"],
            "qwen2_demo_parameters": record["model"]["parameters"], "hybrid_parameters": n_params,
            "qwen2_demo_train_seconds": record["training"]["train_seconds"], "hybrid_train_seconds": train_s,
            "qwen2_demo_steps": record["training"]["steps"], "hybrid_steps": TRAIN["steps"]},
        "versions": demo.versions(),
    }
    assert results["unigram_add_one_valid_perplexity"] == qwen2["unigram_add_one_valid_perplexity"]
    write_record(report)  # written before the references, so that a failed run leaves its record
    log(f"training {train_s:.0f}s; {FOLDER}: {demo.folder_size(FOLDER) / 1e6:.2f} MB; valid perplexity "
        f"{results['valid_perplexity']:.1f} (Qwen2 demo {qwen2['valid_perplexity']:.1f}, unigram "
        f"{qwen2['unigram_add_one_valid_perplexity']:.1f})")
    if not results["acceptance"]["passed"]:
        sys.exit("acceptance check failed: the next token after the proverb prompt is not 退")
    export_references()
    report["training"]["total_seconds"] = time.time() - t0
    write_record(report)
    log(f"done in {time.time() - t0:.0f}s")


def write_record(report):
    with open(os.path.join(demo.REF, f"{NAME}_train.json"), "w") as f:
        json.dump(report, f, indent=2, ensure_ascii=False)
        f.write("\n")


if __name__ == "__main__":
    main()
