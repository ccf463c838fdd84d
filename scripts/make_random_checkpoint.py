"""Write a checkpoint folder with random bf16 weights of a real model's shape, for benchmarks.

    python scripts/make_random_checkpoint.py OUT [--shape 0.5b|7b|qwen3-0.6b|qwen3-30b-a3b|...] [--layers N]

The weights are random (no download is possible here); the shapes, dtype and file layout are the
real thing, so loading, memory and speed behave as with the real checkpoint. Written with numpy
only (the safetensors package cannot take bf16 arrays from NumPy).
"""

import argparse
import json
import os
import sys

import ml_dtypes
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from npqwen.config import ModelConfig  # noqa: E402
from npqwen.weights import expected_shapes  # noqa: E402

QWEN2 = dict(model_type="qwen2", architectures=["Qwen2ForCausalLM"], rope_theta=1000000.0,
             bos_token_id=151643, eos_token_id=151643)
QWEN3 = dict(model_type="qwen3", architectures=["Qwen3ForCausalLM"], rope_theta=1000000.0, attention_bias=False,
             bos_token_id=151643, eos_token_id=151645)
QWEN3_MOE = dict(QWEN3, model_type="qwen3_moe", architectures=["Qwen3MoeForCausalLM"], norm_topk_prob=True,
                 decoder_sparse_step=1, mlp_only_layers=[])
QWEN3_5 = dict(model_type="qwen3_5_text", architectures=["Qwen3_5ForCausalLM"], vocab_size=248320, head_dim=256,
               linear_conv_kernel_dim=4, linear_key_head_dim=128, linear_value_head_dim=128, linear_num_key_heads=16,
               linear_num_value_heads=32, full_attention_interval=4, max_position_embeddings=262144,
               rope_parameters={"rope_type": "default", "rope_theta": 10000000.0, "partial_rotary_factor": 0.25})
SHARED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "assets")


def qwen3_5_0_8b():
    """The released Qwen3.5-0.8B layout, read from ../shared (its config.json, shapes only)."""
    with open(os.path.join(SHARED, "qwen3_5", "configs", "Qwen3.5-0.8B", "config.json")) as f:
        return json.load(f)


def qwen3_5_0_8b_vision():
    """Qwen3.5-0.8B with a vision tower of the release's depth and width (12 x 768; the rest assumed:
    scripts/bench_vision.py says which) and the Qwen3.5 image token ids."""
    from bench_vision import VISION
    return dict(qwen3_5_0_8b(), vision_config=dict(VISION), image_token_id=248056, video_token_id=248057,
                vision_start_token_id=248053, vision_end_token_id=248054)


def qwen3_8_flash_next():
    """The released Qwen3.8-Flash-Next text model (../shared/assets/qwen4_exp), its n-gram tables with
    the released row width (160) but fewer rows (a base of 50,000 instead of 20 M: 256 MB instead of
    102 GB), and 64 experts of the released size instead of 512 (a token still runs 10 of them, so its
    work is the release's; the release's 512 would be 5 GB of bf16 per layer)."""
    with open(os.path.join(SHARED, "qwen4_exp", "configs", "Qwen3.8-Flash-Next", "config.json")) as f:
        text = json.load(f)["text_config"]
    return dict(text, model_type="qwen4_exp_text", architectures=["Qwen4ExpForCausalLM"], ngram_vocab_size_base=50_000,
                num_experts=64)


# The published shapes (config.json) of these models. Qwen3.5-9B: transformers' Qwen3_5TextConfig
# defaults, which its documentation calls the Qwen3.5-9B style; Qwen3.5-35B-A3B: Qwen3_5MoeTextConfig's.
SHAPES = {
    "0.5b": dict(QWEN2, hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                 num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True, max_position_embeddings=32768),
    "7b": dict(QWEN2, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
               num_key_value_heads=4, vocab_size=152064, tie_word_embeddings=False, max_position_embeddings=32768),
    "qwen3-0.6b": dict(QWEN3, hidden_size=1024, intermediate_size=3072, num_hidden_layers=28, num_attention_heads=16,
                       num_key_value_heads=8, head_dim=128, vocab_size=151936, tie_word_embeddings=True,
                       max_position_embeddings=40960),
    "qwen3-30b-a3b": dict(QWEN3_MOE, hidden_size=2048, intermediate_size=6144, num_hidden_layers=48,
                          num_attention_heads=32, num_key_value_heads=4, head_dim=128, vocab_size=151936,
                          moe_intermediate_size=768, num_experts=128, num_experts_per_tok=8,
                          tie_word_embeddings=False, max_position_embeddings=40960),
    "qwen3.5-0.8b": qwen3_5_0_8b,
    "qwen3.5-0.8b-vision": qwen3_5_0_8b_vision,
    "qwen3.8-flash-next": qwen3_8_flash_next,
    "qwen3.5-9b": dict(QWEN3_5, hidden_size=4096, intermediate_size=12288, num_hidden_layers=32, num_attention_heads=16,
                       num_key_value_heads=4, tie_word_embeddings=False),
    "qwen3.5-35b-a3b": dict(QWEN3_5, model_type="qwen3_5_moe_text", architectures=["Qwen3_5MoeForCausalLM"],
                            hidden_size=2048, num_hidden_layers=40, num_attention_heads=16, num_key_value_heads=2,
                            num_experts=256, num_experts_per_tok=8, moe_intermediate_size=512,
                            shared_expert_intermediate_size=512, tie_word_embeddings=False),
}


def shape_config(shape):
    return SHAPES[shape]() if callable(SHAPES[shape]) else dict(SHAPES[shape])


def ngram_tables(cfg) -> dict:
    """Qwen3.8-Flash-Next's n-gram tables, in the shards transformers writes (torch.chunk into
    split_ngram_parts pieces: equal ones and a shorter last)."""
    from npqwen.engram import head_primes, table_rows
    out = {}
    for k, i in enumerate(cfg.ple_layer_ids):
        rows = table_rows(head_primes(cfg.ngram_vocab_size_base, cfg.ngram_heads, k), cfg.make_ngram_vocab_size_divisible_by)
        chunk = -(-rows // cfg.split_ngram_parts)
        for n, start in enumerate(range(0, rows, chunk)):
            out[f"{cfg.weight_prefix}layers.{i - 1}.ple.ple_embedding.ngram_embedding.shard_{n}.weight"] = \
                (min(chunk, rows - start), cfg.ple_embed_dim // cfg.ngram_heads)
    return out


def write(out, shape="0.5b", layers=None, seed=0):
    cfg = dict(shape_config(shape), torch_dtype="bfloat16")
    text = cfg.get("text_config", cfg)  # a composite checkpoint's text model
    text.setdefault("rms_norm_eps", 1e-6)
    if layers:
        text["num_hidden_layers"] = layers
        if "layer_types" in text:
            text["layer_types"] = text["layer_types"][:layers]
        if "ple_layer_ids" in text:
            text["ple_layer_ids"] = [i for i in text["ple_layer_ids"] if i <= layers]
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    parsed = ModelConfig.from_dict(cfg)
    shapes = dict(expected_shapes(parsed), **ngram_tables(parsed))
    if parsed.vision is not None:   # a vision tower too (npqwen/vision/tower.py)
        from npqwen.vision.tower import vision_shapes
        shapes.update(vision_shapes(parsed.vision))
    rng = np.random.default_rng(seed)
    header, offset = {}, 0
    for name, shp in shapes.items():
        n = int(np.prod(shp)) * 2
        header[name] = {"dtype": "BF16", "shape": list(shp), "data_offsets": [offset, offset + n]}
        offset += n
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    with open(os.path.join(out, "model.safetensors"), "wb") as f:
        f.write(len(raw).to_bytes(8, "little"))
        f.write(raw)
        for name, shp in shapes.items():
            if name.endswith("norm.weight") or ".norm_" in name:  # norms (the hybrid generation: zero-centred, 1 + w)
                a = (0.0 if parsed.hybrid and "linear_attn" not in name else 1.0) + 0.1 * rng.standard_normal(shp, np.float32)
            else:
                fan_in = shp[-1] if len(shp) == 2 else int(np.prod(shp[1:])) if ".visual." in name else 1
                a = rng.standard_normal(shp, np.float32) * (0.02 if "embed" in name else fan_in ** -0.5)
            f.write(a.astype(ml_dtypes.bfloat16).tobytes())
    return out


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("--shape", choices=list(SHAPES), default="0.5b")
    p.add_argument("--layers", type=int)
    a = p.parse_args()
    print(write(a.out, a.shape, a.layers))
