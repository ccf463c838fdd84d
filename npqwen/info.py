"""`python -m npqwen.info --model DIR` (or a config.json): what a configuration means for memory.

Parameter counts (by part), the weights' size in bf16 and float32, and the KV cache per token:
2 (keys and values) x layers x kv_heads x head_dim values, which grouped-query attention keeps
small by storing only the kv heads. For a mixture-of-experts model, also the active parameters
(those one token uses: k of the E experts of each sparse layer) and what streaming its bf16
weights reads per token.
"""

import argparse
import sys

import numpy as np

from .config import ModelConfig
from .errors import NpqwenError
from .hub import CONFIG_ONLY, add_revision_option, resolve_model
from .weights import expected_shapes


def summary(cfg: ModelConfig) -> dict:
    shapes = expected_shapes(cfg)
    count = {name: int(np.prod(s)) for name, s in shapes.items()}
    m = cfg.weight_prefix
    embed = count[m + "embed_tokens.weight"]
    head = count.get("lm_head.weight", 0)
    layers = sum(v for k, v in count.items() if k.startswith(m + "layers."))
    attn = sum(v for k, v in count.items() if ".self_attn." in k or ".linear_attn." in k)  # the token mixers
    total = sum(count.values())
    experts = sum(v for k, v in count.items() if ".mlp.experts." in k)
    sparse_layers = cfg.mlp_types.count("sparse")
    idle = experts * (cfg.num_experts - cfg.num_experts_per_tok) // cfg.num_experts if sparse_layers else 0
    full = sum(kind != "linear_attention" for kind in cfg.layer_types)   # layers with a KV cache
    kv_values = 2 * full * cfg.num_key_value_heads * cfg.head_dim
    linear = cfg.num_hidden_layers - full                                # DeltaNet layers: a fixed state
    channels = 2 * cfg.linear_num_key_heads * cfg.linear_key_head_dim + \
        cfg.linear_num_value_heads * cfg.linear_value_head_dim
    state_values = linear * ((cfg.linear_conv_kernel_dim - 1) * channels +
                             cfg.linear_num_value_heads * cfg.linear_key_head_dim * cfg.linear_value_head_dim)
    D, V = cfg.hidden_size, cfg.vocab_size
    return dict(total=total, active=total - idle, experts=experts, sparse_layers=sparse_layers,
                stream_read_bytes=2 * (total - idle - embed + V * D),
                embedding=embed, lm_head=head, layers=layers, attention=attn, mlp=layers - attn -
                2 * cfg.hidden_size * cfg.num_hidden_layers, bf16_bytes=2 * total, float32_bytes=4 * total,
                kv_bytes_per_token_bf16=2 * kv_values, kv_bytes_per_token_float32=4 * kv_values,
                kv_bytes_per_token_without_gqa_bf16=2 * kv_values * cfg.num_key_value_groups,
                full_attention_layers=full, linear_layers=linear, state_bytes_float32=4 * state_values)


def flash_next_summary(cfg: ModelConfig) -> dict:
    """Qwen3.8-Flash-Next by part: the routed experts, the n-gram tables (which no forward reads
    whole: a token reads one row per hash head), the rest of the layers, the embedding and the LM
    head; and the bytes one decode step reads in each weights mode."""
    from .engram import head_primes, table_rows
    count = {name: int(np.prod(s)) for name, s in expected_shapes(cfg).items()}
    m = cfg.weight_prefix
    embed, head = count[m + "embed_tokens.weight"], count.get("lm_head.weight", 0)
    experts = sum(v for k, v in count.items() if ".mlp.experts." in k)
    width = cfg.ple_embed_dim // cfg.ngram_heads
    tables = sum(table_rows(head_primes(cfg.ngram_vocab_size_base, cfg.ngram_heads, i),
                            cfg.make_ngram_vocab_size_divisible_by) * width for i in range(len(cfg.ple_layer_ids)))
    rest = sum(count.values()) - embed - head - experts
    routed_active = experts * cfg.num_experts_per_tok // cfg.num_experts
    active = rest + routed_active                                   # the layers' weights one token uses
    rows = len(cfg.ple_layer_ids) * cfg.ngram_heads * width         # the n-gram rows one token reads
    D, V = cfg.hidden_size, cfg.vocab_size
    return dict(total=embed + head + experts + tables + rest, experts=experts, ngram_tables=tables, rest=rest,
                embedding=embed, lm_head=head if head else embed, active=active,
                read_bf16=2 * (active + V * D + D + rows),          # + the LM head, an embedding row, the n-gram rows
                read_float32=4 * (active + V * D + D) + 2 * rows)   # (the n-gram rows stay as stored)


def _print_quantized(cfg, s):
    """A quantized checkpoint: its size as stored, and the memory each weights mode keeps resident."""
    from .quant import released_quantized, stored_bytes
    shapes = expected_shapes(cfg)
    q = {n: sh for n, sh in shapes.items() if released_quantized(n, sh)}
    n_q = sum(int(np.prod(sh)) for sh in q.values())
    stored = sum(stored_bytes(cfg.quant, sh) for sh in q.values()) + 2 * (s["total"] - n_q)
    print(f"quantized: {cfg.quant.label}; about {_gb(stored)} as stored ({n_q / s['total']:.0%} of the parameters "
          f"quantized, as in Qwen's releases; the rest bf16)")
    print(f"resident weights: --weights float32 {_gb(s['float32_bytes'])} (dequantized once at load); --weights bf16 "
          f"(kept as stored) none beyond small vectors and per-core buffers: the {_gb(stored)} are memory-mapped")


def _gb(n):
    return f"{n / 1e9:.2f} GB"


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m npqwen.info", description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="a checkpoint folder, a config.json or a hub id")
    add_revision_option(ap)
    args = ap.parse_args(argv)
    try:
        cfg = ModelConfig.from_file(resolve_model(args.model, args.revision, files=CONFIG_ONLY))
    except NpqwenError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if cfg.hyper_connections:
        return _print_flash_next(cfg)
    s = summary(cfg)
    dense = cfg.mlp_types.count("dense")
    mlp = f"MLP {cfg.intermediate_size}" if dense == cfg.num_hidden_layers else (
        "sparse MLPs" + (f" and {dense} dense of {cfg.intermediate_size}" if dense else ""))
    ctx = cfg.max_position_embeddings
    print(f"{cfg.num_hidden_layers} layers, hidden {cfg.hidden_size}, {cfg.num_attention_heads} query heads / "
          f"{cfg.num_key_value_heads} kv heads of {cfg.head_dim} ({cfg.num_key_value_groups} per kv head), "
          f"{mlp}, vocab {cfg.vocab_size}, tied embeddings: {cfg.tie_word_embeddings}")
    print(f"parameters: {s['total'] / 1e9:.3f} B  (embedding {s['embedding'] / 1e6:.1f} M, "
          f"LM head {s['lm_head'] / 1e6:.1f} M, layers {s['layers'] / 1e6:.1f} M: "
          f"{'attention and DeltaNet' if s['linear_layers'] else 'attention'} "
          f"{s['attention'] / 1e6:.1f} M, MLP {s['mlp'] / 1e6:.1f} M)")
    print(f"weights: {_gb(s['bf16_bytes'])} in bf16, {_gb(s['float32_bytes'])} in float32")
    if cfg.quant is not None:
        _print_quantized(cfg, s)
    if s["sparse_layers"]:
        k, E = cfg.num_experts_per_tok, cfg.num_experts
        print(f"mixture of experts: {s['sparse_layers']} of {cfg.num_hidden_layers} layers sparse, {E} experts of "
              f"{cfg.moe_intermediate_size}, {k} per token"
              + (f", plus a shared expert of {cfg.shared_expert_intermediate_size}"
                 if cfg.shared_expert_intermediate_size else "")
              + f"; experts hold {s['experts'] / 1e9:.3f} B parameters")
        print(f"active parameters per token: {s['active'] / 1e9:.3f} B of {s['total'] / 1e9:.3f} B "
              f"({100 * s['active'] / s['total']:.1f}%)")
        print(f"--weights bf16 reads {_gb(s['stream_read_bytes'])} of bf16 weights per token (the active "
              f"experts, the rest of every layer and the LM head) from a {_gb(s['bf16_bytes'])} memory-mapped "
              f"file, upcasting them a cache-sized block at a time, plus the KV cache")
    if s["linear_layers"]:
        print(f"hybrid: {s['linear_layers']} Gated DeltaNet layers (linear attention: a fixed state each) and "
              f"{s['full_attention_layers']} full-attention layers (a KV cache); the DeltaNet state takes "
              f"{s['state_bytes_float32'] / 2**20:.1f} MiB in float32, whatever the length of the context")
        print(f"memory per token of context (the full-attention layers' KV cache only): "
              f"{s['kv_bytes_per_token_bf16'] / 1024:.1f} KiB in bf16, "
              f"{s['kv_bytes_per_token_float32'] / 1024:.1f} KiB in float32; if every layer were full attention: "
              f"{s['kv_bytes_per_token_bf16'] * cfg.num_hidden_layers / s['full_attention_layers'] / 1024:.1f} KiB in bf16")
    print(f"KV cache per token: {s['kv_bytes_per_token_bf16'] / 1024:.1f} KiB in bf16, "
          f"{s['kv_bytes_per_token_float32'] / 1024:.1f} KiB in float32 (npqwen); "
          f"without GQA it would be {s['kv_bytes_per_token_without_gqa_bf16'] / 1024:.1f} KiB in bf16")
    print(f"KV cache at the full context of {ctx} tokens: {_gb(s['kv_bytes_per_token_bf16'] * ctx)} in bf16, "
          f"{_gb(s['kv_bytes_per_token_float32'] * ctx)} in float32")
    return 0


def _print_flash_next(cfg):
    s = flash_next_summary(cfg)
    b = lambda n: f"{n / 1e9:.3f} B"  # noqa: E731
    qsa = cfg.layer_types.count("indexed_attention")
    print(f"Qwen3.8-Flash-Next: {cfg.num_hidden_layers} layers ({cfg.num_hidden_layers - qsa} Gated DeltaNet, {qsa} "
          f"QSA attention), hidden {cfg.hidden_size} in {cfg.hc_count} streams, {cfg.num_experts} experts of "
          f"{cfg.moe_intermediate_size} ({cfg.num_experts_per_tok} per token) and a shared expert, n-gram embeddings "
          f"at layer{'s' if len(cfg.ple_layer_ids) > 1 else ''} {', '.join(str(i - 1) for i in cfg.ple_layer_ids)}, "
          f"vocab {cfg.vocab_size}")
    print(f"parameters (the text model): {b(s['total'])} = routed experts {b(s['experts'])} + n-gram tables "
          f"{b(s['ngram_tables'])} + the rest of the layers {b(s['rest'])} + embedding {b(s['embedding'])} + "
          f"LM head {b(s['lm_head'])} (the vision tower, read for images, and the MTP layer, not read, are not counted)")
    print(f"active per token: {b(s['active'])} in the layers ({cfg.num_experts_per_tok} of {cfg.num_experts} experts), "
          f"plus the LM head, one embedding row and {len(cfg.ple_layer_ids) * cfg.ngram_heads} n-gram rows")
    print(f"weights: {_gb(2 * s['total'])} in bf16 (memory-mapped; the n-gram tables are never upcast)")
    print(f"a decode step reads {_gb(s['read_bf16'])} with --weights bf16, {_gb(s['read_float32'])} with "
          f"--weights float32 (which needs {_gb(4 * (s['total'] - s['ngram_tables']))} of memory), plus the caches")
    kv = 2 * qsa * cfg.num_key_value_heads * cfg.head_dim + qsa * cfg.indexer_head_dim
    print(f"cache per token of context: {4 * kv / 1024:.1f} KiB in float32 (keys, values and the indexer's key "
          f"of the {qsa} QSA layers); each query reads at most {cfg.indexer_budget} tokens of complete blocks "
          f"(blocks of {cfg.indexer_compress_ratio}) and the newest partial block")
    return 0


if __name__ == "__main__":
    sys.exit(main())
