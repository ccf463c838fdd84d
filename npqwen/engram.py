"""Per-layer n-gram embeddings (PLE, "Engram"): Qwen3.8-Flash-Next's memory of short token sequences.

An embedding table gives each token a vector; these tables give each of its recent n-grams one:
the bigram ending at a token and the trigram ending at it, each looked up by several hash heads in
tables of about 20 M rows each (51 B parameters in the release, which stay on disk: a token reads
only the rows its n-grams hash to). At the layers `ple_layer_ids` names (one-indexed), the vectors
are mixed into every residual stream (hyper.py) before the layer reads them.

The hash, for a token at position p of a sequence (n = ngram_size, H = heads_per_ngram):

    context    the n - 1 ids before the sequence are eos; an eos inside it cuts the context:
               s(p, j) = the id j places back, or eos where that lies before the sequence start or
               at or before an eos between it and p (so a token after eos sees eos, an eos itself
               still sees what came before it); padding counts as eos
    m_0..m_n-1 odd 64-bit multipliers from splitmix64(seed + 10007 * the layer's place in
               ple_layer_ids) (or as the checkpoint stores them)
    order g    mixed_g = (s(p,0) m_0) XOR (s(p,1) m_1) XOR ... XOR (s(p,g-1) m_g-1),  g = 2..n
    head h     of order g: row = mixed_g mod prime_h + offset_h, where prime_h is the h-th prime at or
               above ngram_vocab_size_base (each head of each PLE layer its own) and offset_h the
               rows of the heads before it: one table [sum of primes, padded, ple_embed_dim / heads]

The layer, for streams S [b, t, hc * d] and e [b, t, P] (the heads' rows side by side):

    k    = RMSNorm_per_stream(e @ W_key.T)                      [b, t, hc, d]
    v    = e @ W_value.T                                        [b, t, d]
    g    = <k, RMSNorm_per_stream(S)> / sqrt(d)                 [b, t, hc]   how much each stream wants it
    g    = sign(g) sqrt(max(|g|, 1e-6))
    u    = sigmoid(g) v                                         [b, t, hc * d]
    out  = u + silu(conv(RMSNorm_per_stream(u)))                a depthwise causal convolution of
                                                                ple_conv_kernel_size taps, dilated by n
    S    = S + out                                              (flash_next.py)

Decoding, a PLE layer remembers the last n - 1 ids and the convolution's last (taps - 1) * n inputs.
"""

import math
from dataclasses import dataclass

import numpy as np

from .errors import CheckpointError
from .hyper import stream_norm
from .primitives import linear, sigmoid, silu
from .weights import norm_weight, to_float32

MASK64 = (1 << 64) - 1
GAMMA, M1, M2 = 0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB
LAYER_SEED_STEP = 10007


# ---------------------------------------------------------------------------------------------
# the hash's constants: multipliers and each head's prime


def splitmix64(v: int) -> int:
    v = (v + GAMMA) & MASK64
    v = ((v ^ (v >> 30)) * M1) & MASK64
    v = ((v ^ (v >> 27)) * M2) & MASK64
    return (v ^ (v >> 31)) & MASK64


def hash_multipliers(vocab_size, ngram_size, ple_index, seed) -> np.ndarray:  # -> [n] int64, odd
    """Odd multipliers below (2^63 - 1) / vocab_size / 2 * 2, so that id * m never overflows int64."""
    half_bound = max(1, ((1 << 63) - 1) // max(vocab_size, 1) // 2)
    base = seed + LAYER_SEED_STEP * ple_index
    return np.array([2 * (splitmix64((base + GAMMA * (i + 1)) & MASK64) % half_bound) + 1 for i in range(ngram_size)],
                    np.int64)


def is_prime(n: int) -> bool:
    if n < 2 or n % 2 == 0:
        return n == 2
    return all(n % f for f in range(3, math.isqrt(n) + 1, 2))


def head_primes(base, n_heads, ple_index) -> list[int]:
    """Head h of the PLE layer at place ple_index: the (ple_index * n_heads + h + 1)-th prime >= base."""
    primes, p = [], base - 1
    while len(primes) < (ple_index + 1) * n_heads:
        p += 1
        while not is_prime(p):
            p += 1
        primes.append(p)
    return primes[ple_index * n_heads:]


def table_rows(sizes, divisible_by) -> int:
    return -(-sum(sizes) // divisible_by) * divisible_by


# ---------------------------------------------------------------------------------------------
# hashing


def shifted_ids(history, shift, eos):  # [b, T] -> [b, T]: the id `shift` places back, eos across an eos or the start
    if shift == 0:
        return history
    T = history.shape[1]
    p = np.arange(T)
    last_eos = np.maximum.accumulate(np.where(history == eos, p, -1), axis=1)           # at or before p
    before = np.concatenate([np.full((len(history), 1), -1), last_eos[:, :-1]], axis=1)  # strictly before p
    ok = (p - (before + 1) >= shift) & (p >= shift)
    return np.where(ok, history[:, np.maximum(p - shift, 0)], eos)


def ngram_rows(history, eos, multipliers, sizes, offsets, heads_per_ngram):  # [b, T] -> [b, T, heads] int64
    """Each position's table row for every head: bigram heads first, then trigram heads, ..."""
    n = len(multipliers)
    shifted = [shifted_ids(history, s, eos) * multipliers[s] for s in range(n)]   # (< 2^63: no overflow)
    blocks, mixed = [], shifted[0]
    for g in range(2, n + 1):
        mixed = mixed ^ shifted[g - 1]
        h = slice((g - 2) * heads_per_ngram, (g - 1) * heads_per_ngram)
        blocks.append(mixed[..., None] % sizes[h] + offsets[h])
    return np.concatenate(blocks, axis=-1)


@dataclass
class NgramTable:
    """The n-gram table as the files store it: shards of rows, in order, each memory-mapped. Only the
    rows asked for are read (and upcast)."""
    shards: list                                        # [rows_k, width] as stored
    starts: np.ndarray                                  # [k + 1] first row of each shard, then the total

    def rows(self, ids):  # int64 [...] -> float32 [..., width]
        flat = ids.ravel()
        shard = np.searchsorted(self.starts, flat, side="right") - 1
        out = np.empty((flat.size, self.shards[0].shape[1]), np.float32)
        for s in np.unique(shard):
            take = shard == s
            out[take] = to_float32(self.shards[s][flat[take] - self.starts[s]])
        return out.reshape(*ids.shape, -1)


# ---------------------------------------------------------------------------------------------
# the layer


@dataclass
class PLE:
    table: NgramTable
    multipliers: np.ndarray                             # [n] int64
    sizes: np.ndarray                                   # [heads] int64: each head's prime
    offsets: np.ndarray                                 # [heads] int64: its first row
    w_key: np.ndarray                                   # [hc * d, P]
    w_value: np.ndarray                                 # [d, P]
    norm_key: np.ndarray                                # [hc * d] (1 + w)
    norm_query: np.ndarray                              # [hc * d]
    norm_conv: np.ndarray                               # [hc * d]
    conv: np.ndarray                                    # [taps, hc * d]


@dataclass
class PLEState:
    """What a PLE layer remembers between forward calls."""
    ids: np.ndarray                                     # [b, n - 1] int64: the last ids (eos before the start)
    conv: np.ndarray                                    # [b, (taps - 1) * n, hc * d]: the convolution's last inputs


def ple(S, ids, w: PLE, cfg, padding=None, state=None):  # [b, t, hc*d], [b, t] -> [b, t, hc*d], PLEState
    """The n-gram embeddings' contribution to the streams. padding [b, t] (0 = left padding) or None."""
    b, t, _ = S.shape
    hc, n, eos = cfg.hc_count, cfg.ngram_size, eos_id(cfg)
    if padding is not None:
        ids = np.where(padding != 0, ids, eos)                                   # padding hashes as eos
    before = state.ids if state is not None else np.full((b, n - 1), eos, np.int64)
    history = np.concatenate([before, ids.astype(np.int64)], axis=1)            # [b, n - 1 + t]
    rows = ngram_rows(history, eos, w.multipliers, w.sizes, w.offsets, cfg.heads_per_ngram)[:, n - 1:]
    e = w.table.rows(rows).reshape(b, t, -1)                                     # [b, t, P]

    d = S.shape[-1] // hc
    k = stream_norm(linear(e, w.w_key), w.norm_key, hc, cfg.rms_norm_eps).reshape(b, t, hc, d)
    v = linear(e, w.w_value)                                                     # [b, t, d]
    q = stream_norm(S, w.norm_query, hc, cfg.rms_norm_eps).reshape(b, t, hc, d)
    g = np.einsum("btkd,btkd->btk", k, q) / np.float32(math.sqrt(d))             # [b, t, hc]
    g = np.sqrt(np.maximum(np.abs(g), np.float32(1e-6))) * np.sign(g)
    u = (sigmoid(g)[..., None] * v[:, :, None, :]).reshape(b, t, hc * d)
    un = stream_norm(u, w.norm_conv, hc, cfg.rms_norm_eps)
    if padding is not None:
        keep = (padding != 0)[..., None].astype(np.float32)
        u, un = u * keep, un * keep
    taps, dilation = w.conv.shape[0], n
    reach = (taps - 1) * dilation
    past = state.conv if state is not None else np.zeros((b, reach, hc * d), np.float32)
    full = np.concatenate([past, un], axis=1)                                    # [b, reach + t, hc*d]
    conv = sum(w.conv[j] * full[:, j * dilation:j * dilation + t] for j in range(taps))
    return u + silu(conv), PLEState(history[:, -(n - 1):].copy(), full[:, -reach:].copy())


def eos_id(cfg) -> int:
    eos = cfg.eos_token_id
    return int(eos[0] if isinstance(eos, list) else eos)


def load_ple(up, cfg, p, ple_index, table: NgramTable, buffers) -> PLE:
    """The tensors under p (model.layers.{i}.ple.); `buffers`: the hash constants (ngram_constants)."""
    conv = up.tensors[p + "conv1d.weight"]                                        # [hc * d, 1, taps]
    return PLE(table=table, **buffers, w_key=up(p + "key_proj.weight"), w_value=up(p + "value_proj.weight"),
               norm_key=norm_weight(up, cfg, p + "norm_key.weight"), norm_query=norm_weight(up, cfg, p + "norm_query.weight"),
               norm_conv=norm_weight(up, cfg, p + "norm_conv.weight"),
               conv=np.ascontiguousarray(to_float32(conv.reshape(conv.shape[0], conv.shape[2])).T))


# ---------------------------------------------------------------------------------------------
# the table and the hash constants in a checkpoint (p: model.layers.{i}.ple.ple_embedding.)


def open_table(tensors, cfg, p, ple_index, where) -> tuple[NgramTable, dict]:
    """The n-gram table of one PLE layer, as one tensor `ngram_embedding.weight` or as the shards
    `ngram_embedding.shard_{k}.weight` transformers writes (torch.chunk of the table into at most
    split_ngram_parts pieces: every shard but the last has the same rows, the last may be shorter,
    and there may be fewer shards than the number); in numeric order (shard_10 after shard_9),
    never concatenated. And the hash constants: the checkpoint's stored buffers where present
    (they override `seed`), else derived from the config as transformers derives them."""
    heads, width = cfg.ngram_heads, cfg.ple_embed_dim // cfg.ngram_heads
    name = p + "ngram_embedding."
    numbered = {}
    for key in tensors:
        if key.startswith(name + "shard_") and key.endswith(".weight"):
            k = key[len(name + "shard_"):-len(".weight")]
            if not (k.isascii() and k.isdigit()):
                raise CheckpointError(f"{where}: unexpected tensor {key} (n-gram shards are named shard_0, shard_1, ...)")
            numbered[int(k)] = key
    if name + "weight" in tensors:
        if numbered:
            raise CheckpointError(f"{where}: {name}weight and {len(numbered)} shards of it: one table, one layout")
        keys = [name + "weight"]
    elif numbered:
        missing = [k for k in range(max(numbered) + 1) if k not in numbered]
        if missing:
            raise CheckpointError(f"{where}: n-gram shard {name}shard_{missing[0]}.weight is missing "
                                  f"(shards 0 to {max(numbered)} are named)")
        if len(numbered) > cfg.split_ngram_parts:
            raise CheckpointError(f"{where}: {len(numbered)} n-gram shards under {name}, more than split_ngram_parts "
                                  f"({cfg.split_ngram_parts})")
        keys = [numbered[k] for k in sorted(numbered)]
    else:
        raise CheckpointError(f"{where}: missing the n-gram table {name}weight (or its shards {name}shard_0.weight, ...)")
    shards = [tensors[k] for k in keys]
    for key, t in zip(keys, shards):
        if t.ndim != 2 or t.shape[1] != width or t.dtype.kind != "f" and t.dtype.name != "bfloat16":
            raise CheckpointError(f"{where}: {key} must be a float table [rows, {width}] (ple_embed_dim / n-gram "
                                  f"heads), found {t.dtype} {list(t.shape)}")
    for key, t in zip(keys[:-1], shards[:-1]):
        if t.shape[0] != shards[0].shape[0]:
            raise CheckpointError(f"{where}: n-gram shard {key} has {t.shape[0]} rows where the shards before the last "
                                  f"have {shards[0].shape[0]} (a short or truncated shard)")
    if len(shards) > 1 and not 0 < shards[-1].shape[0] <= shards[0].shape[0]:
        raise CheckpointError(f"{where}: the last n-gram shard {keys[-1]} has {shards[-1].shape[0]} rows, more than "
                              f"the {shards[0].shape[0]} of the others")

    constants = _stored_constants(tensors, cfg, p, where)
    sizes = constants.get("sizes")
    if sizes is None:
        sizes = np.array(head_primes(cfg.ngram_vocab_size_base, heads, ple_index), np.int64)
    offsets = constants.get("offsets")
    if offsets is None:
        offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    multipliers = constants.get("multipliers")
    if multipliers is None:
        multipliers = hash_multipliers(cfg.vocab_size, cfg.ngram_size, ple_index, cfg.seed)
    starts = np.cumsum([0] + [t.shape[0] for t in shards]).astype(np.int64)
    want = table_rows([int(x) for x in sizes], cfg.make_ngram_vocab_size_divisible_by)
    if starts[-1] != want:
        raise CheckpointError(f"{where}: the n-gram table under {name} has {int(starts[-1]):,} rows, but its {heads} "
                              f"heads' primes ({int(sizes[0]):,} ...) need {want:,} (their sum, rounded up to a "
                              f"multiple of {cfg.make_ngram_vocab_size_divisible_by}): a table from another "
                              f"configuration, or a missing shard")
    return NgramTable(shards, starts), dict(multipliers=multipliers, sizes=sizes, offsets=offsets)


def _stored_constants(tensors, cfg, p, where) -> dict:
    """The I64 buffers a checkpoint may hold: layer_multipliers [n], ngram_heads_vocab_sizes and
    ngram_heads_offsets [heads]."""
    out = {}
    for key, field, n in (("layer_multipliers", "multipliers", cfg.ngram_size),
                          ("ngram_heads_vocab_sizes", "sizes", cfg.ngram_heads),
                          ("ngram_heads_offsets", "offsets", cfg.ngram_heads)):
        t = tensors.get(p + key)
        if t is None:
            continue
        if t.dtype != np.int64 or t.shape != (n,):
            raise CheckpointError(f"{where}: {p + key} must be int64 of shape [{n}], found {t.dtype} {list(t.shape)}")
        out[field] = np.array(t, np.int64)
    if "multipliers" in out and not ((out["multipliers"] > 0).all()
                                     and (out["multipliers"] <= ((1 << 63) - 1) // cfg.vocab_size).all()):
        raise CheckpointError(f"{where}: {p}layer_multipliers must be positive and below (2^63 - 1) / vocab_size, "
                              f"found {out['multipliers'].tolist()}")
    if "sizes" in out and not (out["sizes"] > 0).all():
        raise CheckpointError(f"{where}: {p}ngram_heads_vocab_sizes must be positive, found {out['sizes'].tolist()}")
    if "sizes" in out and "offsets" in out and \
            not np.array_equal(out["offsets"], np.concatenate([[0], np.cumsum(out["sizes"])[:-1]])):
        raise CheckpointError(f"{where}: {p}ngram_heads_offsets must be the running sum of ngram_heads_vocab_sizes, "
                              f"found {out['offsets'].tolist()}")
    return out
