"""Gated DeltaNet: the linear-attention token mixer of Qwen3.5 / Qwen3.6 and Qwen3-Next.

Attention keeps every past key and value and compares each new query with all of them: memory and
work grow with the context. A DeltaNet layer keeps instead, per value head, one matrix S
[head_k_dim, head_v_dim], a fixed-size memory of associations key -> value, and updates it token
by token with the delta rule (learn the part of v that S does not already predict from k):

    S   = exp(g_t) * S                      decay: forget a little of everything (g_t <= 0)
    err = v_t - S^T k_t                     what S gets wrong about this token's value
    S   = S + beta_t * k_t err^T            write the correction, at rate beta_t in (0, 1)
    o_t = S^T q_t                           read: the values associated with the query

Around that recurrence, per layer:
    x -> projections q, k, v (conv'd), z (output gate), b (-> beta), a (-> decay g)
      -> causal depthwise convolution over [q | k | v] (kernel 4, each channel alone), then SiLU
      -> q, k L2-normalised (so S's updates stay bounded), q scaled by head_k_dim^-0.5
      -> each key head serves num_v_heads / num_k_heads consecutive value heads
      -> beta = sigmoid(b),  g = -exp(A_log) * softplus(a + dt_bias)
      -> the recurrence above -> RMSNorm(o) * silu(z) (a plain weight, not zero-centred; Qwen3.8-Flash-
         Next: sigmoid(z), its output_gate_type) -> out_proj
The layer's cache is the last kernel - 1 inputs of the convolution and S: constant in the length
of the context, where attention's grows with it.
"""

from dataclasses import dataclass

import numpy as np

from .primitives import linear, rms_norm, sigmoid, silu
from .threads import parallel, split
from .weights import to_float32

CHUNK = 64  # tokens per chunk of the chunked prefill, as transformers' torch fallback uses
# A forward over at least this many tokens uses the chunked form, shorter ones (decode) the token
# loop. Measured on the Qwen3.5-0.8B shape (16 value heads of 128 x 128, 2 cores), one layer: the loop
# takes 7.1 ms for 32 tokens and 14.5 ms for 64, the chunked form 6.1 and 5.6 ms.
CHUNKED_FROM = 32


@dataclass
class GatedDeltaNet:
    """One layer's weights, projections [out, in] as stored (float32, or bf16 kept as stored)."""
    w_qkvz: np.ndarray      # [2 Hk dk + 2 Hv dv, d]: q | k | v | z, each head after head
    w_ba: np.ndarray        # [2 Hv, d]: b | a
    conv: np.ndarray        # [kernel, 2 Hk dk + Hv dv]: depthwise, one filter per channel of q | k | v
    A_log: np.ndarray       # [Hv]
    dt_bias: np.ndarray     # [Hv]
    norm: np.ndarray        # [dv]
    w_out: np.ndarray       # [d, Hv dv]

    def __call__(self, x, cfg, ctx, cache, layer):
        return gated_deltanet(x, self, cfg, ctx, cache, layer)


@dataclass
class DeltaState:
    """What a DeltaNet layer remembers between forward calls (the cache of one layer)."""
    conv: np.ndarray        # [b, kernel - 1, channels]: the last inputs of the convolution
    S: np.ndarray           # [b, Hv, dk, dv]: the recurrent state


def gated_deltanet(x, w: GatedDeltaNet, cfg, ctx, cache=None, layer=0):  # [b, t, d] -> [b, t, d]
    b, t, _ = x.shape
    Hk, Hv, dk, dv = cfg.linear_num_key_heads, cfg.linear_num_value_heads, cfg.linear_key_head_dim, \
        cfg.linear_value_head_dim
    if ctx.padding is not None:  # left padding must leave no trace in the state: zero it, as transformers does
        x = x * ctx.padding[:, -t:, None].astype(np.float32)
    state = cache.states.get(layer) if cache is not None else None

    qkvz = linear(x, w.w_qkvz)                                            # [b, t, 2 Hk dk + 2 Hv dv]
    channels = 2 * Hk * dk + Hv * dv
    qkv, z = qkvz[..., :channels], qkvz[..., channels:]
    beta_in, a = np.split(linear(x, w.w_ba), 2, axis=-1)                  # [b, t, Hv] x2

    history = state.conv if state is not None else np.zeros((b, w.conv.shape[0] - 1, channels), np.float32)
    qkv, conv_state = causal_conv(qkv, w.conv, history)
    qkv = silu(qkv)
    q, k, v = np.split(qkv, [Hk * dk, 2 * Hk * dk], axis=-1)
    q = l2_normalise(q.reshape(b, t, Hk, dk)) * np.float32(dk ** -0.5)
    k = l2_normalise(k.reshape(b, t, Hk, dk))
    v = v.reshape(b, t, Hv, dv)
    q, k = per_value_head(q, Hv), per_value_head(k, Hv)                   # [b, t, Hv, dk]

    beta = sigmoid(beta_in)                                               # [b, t, Hv]
    g = -np.exp(w.A_log) * softplus(a + w.dt_bias)                        # [b, t, Hv], log of the decay

    S = state.S if state is not None else np.zeros((b, Hv, dk, dv), np.float32)
    heads_first = [arr.transpose(0, 2, 1, 3) for arr in (q, k, v)]        # [b, Hv, t, *]
    args = (*heads_first, g.transpose(0, 2, 1), beta.transpose(0, 2, 1), S)
    # a prompt: the chunked form, groups of heads on separate cores; decode: the token loop (a
    # token's work is too small to share out)
    out, S = over_heads(delta_rule_chunked, *args) if t >= CHUNKED_FROM else delta_rule(*args)
    if cache is not None:
        cache.states[layer] = DeltaState(conv_state, S)

    out = out.transpose(0, 2, 1, 3)                                       # [b, t, Hv, dv]
    gate = sigmoid if cfg.deltanet_gate == "sigmoid" else silu          # Qwen3.8: output_gate_type sigmoid
    out = rms_norm(out, w.norm, cfg.rms_norm_eps) * gate(z.reshape(b, t, Hv, dv))
    return linear(out.reshape(b, t, Hv * dv), w.w_out)


# ---------------------------------------------------------------------------------------------
# the pieces


def over_heads(rule, *args):  # each argument [b, Hv, ...] -> (out [b, Hv, t, dv], S [b, Hv, dk, dv])
    """The value heads never interact: groups of them run on separate cores (threads.py)."""
    parts = parallel(lambda heads: rule(*(a[:, heads] for a in args)), split(args[0].shape[1]))
    return tuple(np.concatenate(pieces, axis=1) for pieces in zip(*parts))


def causal_conv(x, weight, history):  # [b, t, c], [kernel, c], [b, kernel - 1, c] -> [b, t, c], new history
    """Depthwise causal convolution: channel c at position t mixes its own last `kernel` inputs,
    out[t] = sum_j weight[j] * x[t - kernel + 1 + j]; `history` holds the inputs before x (zeros
    at the start of a sequence, the cached ones when decoding)."""
    kernel, t = weight.shape[0], x.shape[1]
    full = np.concatenate([history, x], axis=1)                           # [b, kernel - 1 + t, c]
    out = np.empty_like(x)

    def positions(p):  # a slice of positions: blocks of them small enough to stay in the cache
        for r in range(p.start, p.stop, 32):
            rows = slice(r, min(r + 32, p.stop))
            o = np.multiply(full[:, rows], weight[0], out=out[:, rows])
            for j in range(1, kernel):
                o += full[:, rows.start + j:rows.stop + j] * weight[j]

    parallel(positions, split(t))
    return out, full[:, t:].copy()


def per_value_head(x, Hv):  # [b, t, Hk, dk] -> [b, t, Hv, dk]
    """Key head h serves the Hv / Hk consecutive value heads h*r ... h*r + r - 1 (repeated, not tiled)."""
    return np.repeat(x, Hv // x.shape[2], axis=2)


def l2_normalise(x, eps=1e-6):  # [..., d] -> [..., d]
    """x / sqrt(sum(x^2) + eps), in float32, as transformers' (and the FLA library's) l2norm."""
    return x / np.sqrt(np.einsum("...i,...i->...", x, x)[..., None] + np.float32(eps))


# Decays multiply to numbers below float32's smallest normal (1.2e-38): such subnormal numbers take
# the CPU tens of times longer per operation, in every matmul that reads them, and matter nothing
# at float32's precision. They are set to zero where they arise.
TINY = np.finfo(np.float32).tiny


def flush(x):  # subnormal entries -> 0, in place
    return np.multiply(x, np.abs(x) >= TINY, out=x)   # (4x faster than x[np.abs(x) < TINY] = 0)


def exp_flushed(x):  # e^x in float32, 0 where it would be subnormal
    return flush(np.exp(x))


def softplus(x):  # log(1 + e^x), without overflow for large x
    return np.logaddexp(np.float32(0), x).astype(np.float32)


def delta_rule(q, k, v, g, beta, S):  # [b, H, t, dk] x2, [b, H, t, dv], [b, H, t] x2, [b, H, dk, dv]
    """The recurrence, token by token: the definition (and decode, where t = 1). -> o [b, H, t, dv], S."""
    S = S.copy()
    out = np.empty(v.shape, np.float32)
    for i in range(q.shape[2]):
        S *= np.exp(g[:, :, i])[..., None, None]                                     # decay
        err = v[:, :, i] - np.einsum("bhkv,bhk->bhv", S, k[:, :, i])                  # v - S^T k
        S += k[:, :, i, :, None] * (beta[:, :, i, None] * err)[:, :, None, :]         # S += beta k err^T
        out[:, :, i] = np.einsum("bhkv,bhk->bhv", S, q[:, :, i])                      # o = S^T q
    return out, S


def delta_rule_chunked(q, k, v, g, beta, S, chunk=CHUNK):  # same as delta_rule, in chunks of matmuls
    """The same recurrence over chunks of C tokens, with matrix products instead of a loop per token.

    Within a chunk, write G_i = g_1 + ... + g_i (decay from the chunk's start to token i, in log
    space) and S_0 the state entering the chunk. Unrolling the recurrence, the state after token i is
        S_i = e^{G_i} S_0 + sum_{j <= i} e^{G_i - G_j} k_j u_j^T
    where u_j = beta_j (v_j - S_{j-1}^T k_j) is token j's correction. Substituting S_{j-1} gives, for
    all j of the chunk at once, a unit lower-triangular system
        u_j + beta_j sum_{m < j} e^{G_j - G_m} (k_j . k_m) u_m = beta_j v_j - beta_j e^{G_j} S_0^T k_j
    i.e. (I + L) U = V_beta - W S_0, with L[j, m] = beta_j e^{G_j - G_m} k_j . k_m for m < j and
    W_j = beta_j e^{G_j} k_j. With T = (I + L)^-1 (one small inverse per chunk, `unit_lower_inverse`),
    U = U0 - W' S_0, where U0 = T V_beta and W' = T W do not depend on S_0. Then the outputs and the
    next state are matrix products:
        o_i = e^{G_i} S_0^T q_i + sum_{j <= i} e^{G_i - G_j} (q_i . k_j) u_j
        S_C = e^{G_C} S_0 + sum_j e^{G_C - G_j} k_j u_j^T
    This is transformers' torch_chunk_gated_delta_rule, and agrees with the token loop to ~1e-6."""
    b, H, t, dk = q.shape
    dv = v.shape[-1]
    pad = -t % chunk
    if pad:  # zeros after the end: they change nothing before it
        q, k, v = (np.pad(a, ((0, 0), (0, 0), (0, pad), (0, 0))) for a in (q, k, v))
        g, beta = (np.pad(a, ((0, 0), (0, 0), (0, pad))) for a in (g, beta))
    n = (t + pad) // chunk
    q, k, v = (a.reshape(b, H, n, chunk, -1) for a in (q, k, v))       # [b, H, n, C, d]
    g, beta = g.reshape(b, H, n, chunk), beta.reshape(b, H, n, chunk)
    G = np.cumsum(g, axis=-1)                                           # [b, H, n, C]
    causal = np.tril(np.ones((chunk, chunk), bool))                     # j <= i
    decay = np.where(causal, exp_flushed(np.where(causal, G[..., :, None] - G[..., None, :], 0)), 0)  # e^{G_i - G_j}

    k_beta = k * beta[..., None]
    L = flush(np.where(np.tril(causal, -1), (k_beta @ k.swapaxes(-1, -2)) * decay, 0))   # strictly lower
    T = unit_lower_inverse(L)                                           # (I + L)^-1, [b, H, n, C, C]
    U0 = T @ (v * beta[..., None])                                      # [b, H, n, C, dv]
    W = flush(T @ (k_beta * exp_flushed(G)[..., None]))                 # [b, H, n, C, dk]
    intra = flush((q @ k.swapaxes(-1, -2)) * decay)                     # [b, H, n, C, C]
    q_decayed = flush(q * exp_flushed(G)[..., None])                    # e^{G_i} q_i
    k_decayed = flush(k * exp_flushed(G[..., -1:] - G)[..., None])      # e^{G_C - G_j} k_j
    chunk_decay = exp_flushed(G[..., -1])[..., None, None]              # e^{G_C}

    out = np.empty((b, H, n, chunk, dv), np.float32)
    S = S.copy()
    for c in range(n):  # the one sequential part: the state handed from chunk to chunk
        U = U0[:, :, c] - W[:, :, c] @ S                                # [b, H, C, dv]
        out[:, :, c] = q_decayed[:, :, c] @ S + intra[:, :, c] @ U
        S = flush(S * chunk_decay[:, :, c] + k_decayed[:, :, c].swapaxes(-1, -2) @ U)
    return out.reshape(b, H, n * chunk, dv)[:, :, :t], S.astype(np.float32)


def unit_lower_inverse(L):  # [..., C, C] strictly lower-triangular -> (I + L)^-1
    """Forward substitution, one row at a time (as transformers does): row i of T = (I + L)^-1 is
    T[i, :i] = -L[i, :i] - sum_{i > j > m} L[i, j] T[j, m], which needs only the rows above it.
    A general solver (np.linalg.solve) takes 7 times longer on these small systems (measured: 195 ms
    against 27 ms for this inverse and the products with it, 256 systems of 64 x 64)."""
    T = -L                                                              # below the diagonal: T - I
    for i in range(1, L.shape[-1]):
        T[..., i, :i] += np.einsum("...j,...jm->...m", T[..., i, :i], T[..., :i, :i])
    return T + np.eye(L.shape[-1], dtype=L.dtype)


# ---------------------------------------------------------------------------------------------
# the checkpoint tensors that make this block (p: model.layers.{i}.linear_attn.)


def load_gated_deltanet(up, cfg, p) -> GatedDeltaNet:
    Hk, Hv, dk, dv = cfg.linear_num_key_heads, cfg.linear_num_value_heads, cfg.linear_key_head_dim, \
        cfg.linear_value_head_dim
    if cfg.deltanet_layout == "fused":
        # Qwen3-Next stores in_proj_qkvz grouped per key head, [q_h | k_h | v of its r heads | z of its r
        # heads] for each key head h, and in_proj_ba as [b of its r heads | a of its r heads]: reordered
        # here, once, into the flat q | k | v | z and b | a that Qwen3.5 stores and the forward reads.
        qkvz = up.tensors[p + "in_proj_qkvz.weight"]
        ba = up.tensors[p + "in_proj_ba.weight"]
        w_qkvz = up.arrays([qkvz[rows] for rows in runs(fused_qkvz_order(Hk, Hv, dk, dv))])
        w_ba = up.arrays([ba[rows] for rows in runs(fused_ba_order(Hk, Hv))])
    else:
        w_qkvz = up(p + "in_proj_qkv.weight", p + "in_proj_z.weight")
        w_ba = up(p + "in_proj_b.weight", p + "in_proj_a.weight")
    conv = up.tensors[p + "conv1d.weight"]                              # [channels, 1, kernel]
    return GatedDeltaNet(w_qkvz=w_qkvz, w_ba=w_ba,
                         conv=np.ascontiguousarray(to_float32(conv.reshape(conv.shape[0], conv.shape[2])).T),
                         A_log=up(p + "A_log"), dt_bias=up(p + "dt_bias"), norm=up(p + "norm.weight"),
                         w_out=up(p + "out_proj.weight"))


def fused_qkvz_order(Hk, Hv, dk, dv):
    """Rows of Qwen3-Next's in_proj_qkvz, in the flat q | k | v | z order."""
    r = Hv // Hk
    group = 2 * dk + 2 * r * dv                                          # rows per key head
    rows = np.arange(Hk * group).reshape(Hk, group)
    q, k = rows[:, :dk], rows[:, dk:2 * dk]
    v, z = rows[:, 2 * dk:2 * dk + r * dv], rows[:, 2 * dk + r * dv:]
    return np.concatenate([q.ravel(), k.ravel(), v.ravel(), z.ravel()])


def runs(order):  # row indices -> the slices of consecutive rows they are made of
    breaks = np.flatnonzero(np.diff(order) != 1) + 1
    return [slice(int(r[0]), int(r[-1]) + 1) for r in np.split(order, breaks)]


def fused_ba_order(Hk, Hv):
    r = Hv // Hk
    rows = np.arange(2 * Hv).reshape(Hk, 2 * r)
    return np.concatenate([rows[:, :r].ravel(), rows[:, r:].ravel()])
