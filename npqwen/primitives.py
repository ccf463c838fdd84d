"""The building blocks of Qwen2, as pure functions over float32 NumPy arrays.

Each function is one box of the architecture diagram and can be used on its own. Shapes use
b = batch, t = query positions, s = key positions, d = hidden size, H = query heads,
K = key/value heads, G = H // K (query heads per kv head), hd = head dim.
"""

import math

import numpy as np

from . import stored
from .stored import SMALL
from .threads import WORKERS, blas_threads, parallel, scratch, split

NEG = np.finfo(np.float32).min  # what transformers adds for "masked" (not -inf, so no NaN on all-masked rows)


# ---------------------------------------------------------------------------------------------
# linear layers, normalisation and activations


def linear(x, w, b=None):  # [..., in], [out, in], [out] or None -> [..., out]
    """x @ w.T (+ b), the weight as checkpoints store it, [out, in]: a float32 array, or a
    stored.StoredMatrix (bf16 kept as stored, upcast a cache-sized block at a time).
    All positions of all rows in one product: stacked [b, 1, d] @ w.T would be b products, each reading w."""
    x2 = x.reshape(-1, x.shape[-1])
    if isinstance(w, np.ndarray) and 1 < len(x2) <= stored.ROW_BY_ROW and w.size >= WIDE_FROM:
        y = stored.StoredMatrix([w]).matmul_t(x2)   # a few rows: in blocks, row by row (stored.ROW_BY_ROW)
    elif isinstance(w, np.ndarray):  # a weight's product: BLAS on every core (threads.py), if it is worth
        with blas_threads(WORKERS if w.size >= WIDE_FROM else 1):  # waking them (and leaving them spinning)
            y = x2 @ w.T
    else:
        y = w.matmul_t(x2)
    y = y.reshape(*x.shape[:-1], w.shape[0])
    if b is not None:
        y += b
    return y


# A weight with fewer elements (Qwen3.5's [2 Hv, d] beta|alpha projection, a shared expert's gate:
# the ones bf16 mode upcasts at load) is multiplied on one thread. On all cores, BLAS's threads keep
# spinning after it, and slowed the parallel steps after them: a 128-token prefill of the
# Qwen3.5-0.8B shape with bf16 weights took 1.99 s instead of 1.19.
WIDE_FROM = SMALL


def rms_norm(x, weight, eps):  # [..., d], [d] -> [..., d]
    """RMSNorm: x / sqrt(mean(x^2) + eps) * weight. No mean subtraction and no bias, unlike LayerNorm.
    Computed in float32 whatever the input dtype, as transformers does."""
    x = x.astype(np.float32, copy=False)
    variance = np.einsum("...i,...i->...", x, x)[..., None] / np.float32(x.shape[-1])  # mean(x^2), no x*x array
    y = x / np.sqrt(variance + np.float32(eps))
    y *= weight
    return y


def silu(x, out=None):  # [...] -> [...]
    """SiLU (swish): x * sigmoid(x), computed as x / (1 + exp(-x)). out=x overwrites x in place.
    A large array is cut along its second-to-last axis into one part per core (threads.py)."""
    out = np.empty(x.shape, np.float32) if out is None else out

    def part(i):
        e = np.negative(x[i])
        np.exp(e, out=e)
        e += np.float32(1)
        np.divide(x[i], e, out=out[i])

    def rows(r):  # a core's share of the rows, in blocks that stay in its cache during the four passes
        step = max(1, (256 << 10) // (4 * x.shape[-1]))
        for a in range(r.start, r.stop, step):
            part((..., slice(a, min(a + step, r.stop)), slice(None)))

    if x.ndim >= 2 and x.size >= 1 << 16:
        parallel(rows, split(x.shape[-2]))
    else:
        part(...)
    return out


def sigmoid(x):  # [...] -> [...]
    return np.float32(1) / (np.float32(1) + np.exp(-x))


def layer_norm(x, weight, bias, eps=1e-6):  # [..., d], [d], [d] -> [..., d]
    """LayerNorm (the vision towers'): (x - mean) / sqrt(var + eps) * weight + bias, var the biased
    variance, in float32. Unlike RMSNorm it centres x first and adds a bias."""
    x = x.astype(np.float32, copy=False)
    mean = x.mean(axis=-1, keepdims=True)
    y = x - mean
    var = np.einsum("...i,...i->...", y, y)[..., None] / np.float32(x.shape[-1])
    y /= np.sqrt(var + np.float32(eps))
    y *= weight
    y += bias
    return y


def erf(x):  # [...] -> [...] float32, |error| < 2e-7 (Abramowitz & Stegun 7.1.26)
    """The error function, which NumPy lacks: 1 - (a1 t + ... + a5 t^5) exp(-x^2), t = 1 / (1 + p |x|),
    odd in x. Its error (1.5e-7, and float32's rounding) is below float32's resolution near 1, where
    erf's values lie."""
    a = np.abs(x).astype(np.float32)
    t = np.float32(1) / (np.float32(1) + np.float32(0.3275911) * a)
    poly = t * (np.float32(0.254829592) + t * (np.float32(-0.284496736) + t * (np.float32(1.421413741) + t * (
        np.float32(-1.453152027) + t * np.float32(1.061405429)))))
    a *= a
    np.negative(a, out=a)
    np.exp(a, out=a)
    a *= poly
    np.subtract(np.float32(1), a, out=a)
    return np.copysign(a, x, out=a)


def by_rows(part, x):
    """part(index) on all of x: a large array a share of its rows (second-to-last axis) per core."""
    if x.ndim >= 2 and x.size >= 1 << 16:
        parallel(lambda r: part((..., r, slice(None))), split(x.shape[-2]))
    else:
        part(...)


def gelu(x):  # [...] -> [...]
    """GELU, exact: x * Phi(x) = x / 2 * (1 + erf(x / sqrt 2)) (torch's nn.GELU(): the patch mergers).
    A large array goes a share of its rows per core."""
    out = np.empty(x.shape, np.float32)

    def part(i):
        e = erf(x[i] * np.float32(0.5 ** 0.5))
        e += np.float32(1)
        e *= x[i]
        np.multiply(e, np.float32(0.5), out=out[i])

    by_rows(part, x)
    return out


def gelu_tanh(x, out=None):  # [...] -> [...]
    """GELU's tanh approximation, x / 2 * (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) (gelu_pytorch_tanh):
    the vision towers' MLP. out=x overwrites x. A large array goes a share of its rows per core."""
    out = np.empty(x.shape, np.float32) if out is None else out

    def part(i):
        xi = x[i]
        t = xi * xi
        t *= np.float32(0.044715)
        t += np.float32(1)
        t *= xi
        t *= np.float32((2 / math.pi) ** 0.5)
        np.tanh(t, out=t)
        t += np.float32(1)
        t *= xi
        np.multiply(t, np.float32(0.5), out=out[i])

    by_rows(part, x)
    return out


def swiglu_mlp(x, w_gate_up, w_down, rows=2048):  # [..., d], [2i, d], [d, i] -> [..., d]
    """Qwen2's MLP: down(silu(gate(x)) * up(x)). The gate and up projections are stacked, gate rows
    then up rows, into one [2i, d] matrix so that a single product computes both. A long prompt
    goes `rows` positions at a time, so that its [n, 2i] activations never exist whole."""
    if x.size > rows * x.shape[-1]:
        x2 = x.reshape(-1, x.shape[-1])
        return np.concatenate([swiglu_mlp(x2[r:r + rows], w_gate_up, w_down, rows)
                               for r in range(0, len(x2), rows)]).reshape(x.shape)
    i = w_down.shape[1]
    h = linear(x.reshape(-1, x.shape[-1]), w_gate_up)  # [n, 2i]: every position of every row in one product
    gate, up = h[..., :i], h[..., i:]                   # views: no copies
    gate = silu(gate, out=gate)
    gate *= up
    return linear(gate, w_down).reshape(x.shape)


def softmax(x, axis=-1, out=None):  # [...] -> [...] float32, rows summing to one
    """Numerically stable softmax in float32: subtracting the row maximum keeps exp() from
    overflowing however large the scores are, and changes nothing mathematically.
    out=x overwrites x (attention's scores are not needed afterwards), saving a large allocation."""
    x = x.astype(np.float32, copy=False)
    e = np.subtract(x, np.max(x, axis=axis, keepdims=True), out=out)
    np.exp(e, out=e)
    e /= np.sum(e, axis=axis, keepdims=True)
    return e


# ---------------------------------------------------------------------------------------------
# rotary position embeddings (RoPE)


def rope_inv_freq(head_dim, rope, max_position_embeddings, seq_len=None):  # -> [hd/2] float32, scale
    """Inverse frequencies theta_i = base^(-2i/hd) for each pair of dimensions, and the factor
    ("attention scaling") that cos and sin are multiplied by. `rope` is the config's normalised
    rope_parameters; the scaling variants follow transformers' modeling_rope_utils:
      default  plain RoPE
      linear   positions divided by `factor` (equivalently, frequencies divided by it)
      dynamic  NTK-aware: the base grows once `seq_len` exceeds max_position_embeddings
      yarn     per-dimension blend of interpolated and original frequencies, plus an attention factor
    """
    base, kind = rope["rope_theta"], rope["rope_type"]
    exponents = np.arange(0, head_dim, 2, dtype=np.int64).astype(np.float32) / np.float32(head_dim)

    def inv_freq_for(b):
        return (np.float32(1.0) / (np.float32(b) ** exponents)).astype(np.float32)

    if kind == "default":
        return inv_freq_for(base), 1.0
    factor = rope["factor"]
    if kind == "linear":
        return (inv_freq_for(base) / np.float32(factor)).astype(np.float32), 1.0
    if kind == "dynamic":
        seq_len = max(seq_len or 0, max_position_embeddings)
        base = base * ((factor * seq_len / max_position_embeddings) - (factor - 1)) ** (head_dim / (head_dim - 2))
        return inv_freq_for(base), 1.0
    if kind == "yarn":
        return _yarn_inv_freq(head_dim, rope, base, factor, exponents)
    raise ValueError(f"unknown rope type {kind!r}")


def _yarn_inv_freq(head_dim, rope, base, factor, exponents):
    original_max = rope["original_max_position_embeddings"]

    def mscale(scale, m=1.0):
        return 1.0 if scale <= 1 else 0.1 * m * math.log(scale) + 1.0

    attention_factor = rope.get("attention_factor")
    if attention_factor is None:
        m, m_all = rope.get("mscale"), rope.get("mscale_all_dim")
        attention_factor = mscale(factor, m) / mscale(factor, m_all) if m and m_all else mscale(factor)
    beta_fast, beta_slow = rope.get("beta_fast") or 32, rope.get("beta_slow") or 1

    # Dimensions that rotate fewer than beta_slow times over the original context are interpolated
    # (divided by factor); those rotating more than beta_fast times keep their frequency; a linear
    # ramp blends the ones in between.
    def correction_dim(rotations):
        return head_dim * math.log(original_max / (rotations * 2 * math.pi)) / (2 * math.log(base))

    low, high = correction_dim(beta_fast), correction_dim(beta_slow)
    if rope.get("truncate", True):
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, head_dim - 1)
    if low == high:
        high += 0.001  # avoid dividing by zero
    ramp = np.clip((np.arange(head_dim // 2, dtype=np.float32) - np.float32(low)) / np.float32(high - low), 0, 1)
    keep = (np.float32(1) - ramp).astype(np.float32)  # 1 = keep the original frequency

    pos_freqs = np.float32(base) ** exponents
    extrapolation = np.float32(1) / pos_freqs
    interpolation = np.float32(1) / (np.float32(factor) * pos_freqs)
    inv_freq = interpolation * (np.float32(1) - keep) + extrapolation * keep
    return inv_freq.astype(np.float32), float(attention_factor)


def rope_cos_sin(inv_freq, position_ids, scale=1.0):  # [hd/2], [b, t] -> cos, sin [b, t, hd]
    """cos and sin of position * theta_i, for arbitrary (e.g. left-padded) position ids. Each
    frequency appears twice, for dimension i and i + hd/2: the rotate_half pairing below."""
    freqs = position_ids.astype(np.float32)[..., None] * inv_freq  # [b, t, hd/2]
    emb = np.concatenate([freqs, freqs], axis=-1)
    return (np.cos(emb) * np.float32(scale)).astype(np.float32), (np.sin(emb) * np.float32(scale)).astype(np.float32)


def mrope_cos_sin(inv_freq, positions, section, layout, scale=1.0):  # [r/2], [3, b, t] -> cos, sin [b, t, r]
    """Multimodal RoPE (Qwen2-VL onwards): a token has three positions, time, height and width (a text
    token the same one thrice; an image token its row and column in the image), and each rotary
    frequency i is turned by one of them. Which one, section = (n_t, n_h, n_w) frequencies each:
      contiguous   (Qwen2.5-VL)        the first n_t frequencies by t, the next n_h by h, the last n_w by w;
      interleaved  (Qwen3-VL, Qwen3.5)  t h w t h w ...: frequency i by h if i % 3 == 1 and i < 3 n_h, by w
                                        if i % 3 == 2 and i < 3 n_w, else by t.
    With the three positions equal it is exactly rope_cos_sin."""
    half = len(inv_freq)
    axis = np.zeros(half, np.int64)
    if layout == "contiguous":
        axis[:] = np.repeat([0, 1, 2], section)[:half]
    else:
        i = np.arange(half)
        axis[(i % 3 == 1) & (i < 3 * section[1])] = 1
        axis[(i % 3 == 2) & (i < 3 * section[2])] = 2
    freqs = positions.astype(np.float32)[..., None] * inv_freq               # [3, b, t, r/2]
    freqs = freqs[axis, ..., np.arange(half)].transpose(1, 2, 0)              # [b, t, r/2]: frequency i by axis[i]
    emb = np.concatenate([freqs, freqs], axis=-1)
    return (np.cos(emb) * np.float32(scale)).astype(np.float32), (np.sin(emb) * np.float32(scale)).astype(np.float32)


def rotate_half(x):  # [..., hd] -> [..., hd]
    """(x1, x2) -> (-x2, x1) over the two halves of the last axis. Qwen2's checkpoints pair
    dimension i with i + hd/2 (not the paper's interleaved 2i, 2i+1): the q/k projection weights
    were permuted to match, so this convention is part of the weights and must be kept."""
    half = x.shape[-1] // 2
    return np.concatenate([-x[..., half:], x[..., :half]], axis=-1)


def apply_rope(x, cos, sin):  # [b, heads, t, hd], [b, t, r], [b, t, r] -> [b, heads, t, hd]
    """Rotate each (i, i + r/2) pair of x's first r dimensions by its position's angle. r = hd but
    for partial rotary (Qwen3.5, Qwen3-Next: r = hd / 4), whose other dimensions pass unrotated."""
    r = cos.shape[-1]
    if r < x.shape[-1]:
        return np.concatenate([apply_rope(x[..., :r], cos, sin), x[..., r:]], axis=-1)
    cos, sin = cos[:, None], sin[:, None]  # broadcast over heads
    # x * cos + rotate_half(x) * sin, the same numbers computed a half at a time: no full-size
    # temporaries but the result (rope was 6% of a 1024-token Qwen3 prefill)
    h = r // 2
    out = x * cos
    out[..., :h] -= x[..., h:] * sin[..., :h]
    out[..., h:] += x[..., :h] * sin[..., h:]
    return out


# ---------------------------------------------------------------------------------------------
# attention


def repeat_kv(x, n_rep):  # [b, K, s, hd] -> [b, K * n_rep, s, hd]
    """Grouped-query attention's key/value sharing made explicit: kv head j serves query heads
    j*n_rep ... j*n_rep + n_rep - 1. The teaching version; `attention` gets the same result
    without materialising the copies."""
    return x if n_rep == 1 else np.repeat(x, n_rep, axis=1)


def causal_mask(q_len, kv_len, padding_mask=None, window=None, q_start=None):  # -> [b or 1, 1, t, s] float32
    """Additive attention bias: 0 where query i may attend to key j, NEG elsewhere. Positions are
    indices into the sequence, padding included; the queries are positions q_start ... q_start +
    q_len - 1 (by default the last q_len of the kv_len). Allowed: causal (j <= i), inside the sliding
    window if any (j > i - window), and not padding (padding_mask[b, j] == 1, shape [b, >= kv_len])."""
    if q_start is None:
        q_start = kv_len - q_len
    i = np.arange(q_start, q_start + q_len)[:, None]
    j = np.arange(kv_len)[None, :]
    allowed = j <= i
    if window is not None:
        allowed = allowed & (j > i - window)
    allowed = allowed[None, None]  # [1, 1, t, s]
    if padding_mask is not None:
        allowed = allowed & (padding_mask[:, None, None, :kv_len] != 0)
    return np.where(allowed, np.float32(0), NEG).astype(np.float32)


def attention(q, k, v, bias):  # [b, H, t, hd], [b, K, s, hd], [b, K, s, hd], [b, 1, t, <= s] -> [b, H, t, hd]
    """Scaled dot-product attention with grouped-query heads, in one batched matmul per step.
    The H query heads are viewed as K groups of G = H // K heads; each group is stacked along the
    query axis so it meets its shared kv head in a single matrix product. This equals attention
    over repeat_kv(k), repeat_kv(v) (query head h uses kv head h // G) without copying k and v.
    `bias` covers the last bias.shape[-1] keys (the keys before them are all visible: a causal
    block of queries needs a mask only where the diagonal cuts its own keys).
    On long contexts the passes over the [G*t, s] scores are what costs, not the matmuls, so:
    the 1/sqrt(hd) scale is applied to q (t*hd numbers) rather than to the scores, the scores are
    masked and exponentiated in place, and each row is divided by its sum after the product with
    v ([t, hd] numbers) rather than before it ([t, s])."""
    b, H, t, hd = q.shape
    K, s = k.shape[1], k.shape[2]
    G = H // K
    qg = (q * np.float32(hd ** -0.5)).reshape(b, K, G * t, hd)
    few = G * t <= DECODE_ROWS
    if few:  # decode: K @ q^T (q^T made contiguous) streams the cache twice as fast as q @ K^T
        n = G * t if G * t <= 4 else -(-G * t // 8) * 8                 # (and faster for 8 columns than 7)
        qT = np.zeros((b, K, hd, n), np.float32)
        qT[..., :G * t] = qg.transpose(0, 1, 3, 2)                     # [b, K, hd, n]: zero-padded
        kq = np.matmul(k, qT, out=scratch("k @ q^T", (b, K, s, n)))
        scores = scratch("scores", (b, K, G * t, s))                  # [b, K, G*t, s]
        np.copyto(scores, kq[..., :G * t].transpose(0, 1, 3, 2))
    else:
        scores = qg @ k.transpose(0, 1, 3, 2)                         # [b, K, G*t, s]
    grouped = scores.reshape(b, K, G, t, s)                           # a view of the same memory
    grouped[..., s - bias.shape[-1]:] += bias[:, :, None]             # one mask for all G heads
    scores -= scores.max(axis=-1, keepdims=True)                      # softmax, its division deferred
    np.exp(scores, out=scores)
    if few and s > DECODE_KEYS:  # ... and multiplies v faster in blocks of keys than whole
        out = sum(scores[..., a:a + DECODE_KEYS] @ v[:, :, a:a + DECODE_KEYS] for a in range(0, s, DECODE_KEYS))
    else:
        out = scores @ v                                              # [b, K, G*t, hd]
    out /= scores.sum(axis=-1, keepdims=True)
    return out.reshape(b, H, t, hd)


# Decode's thin products, measured on 24 layers x 2 kv heads x 8192 keys (OpenBLAS 0.3.31, one thread):
# K @ q^T with q^T contiguous 10.8 ms for 7 columns, 8.5 for 8 (zero-padded), 1 to 4 columns 5 to 6;
# with q^T a transposed view 9.7 and q @ K^T 17 on two threads. scores @ v for 7 rows in blocks of
# 2048 keys 5.7 ms, whole 10.2 (and 14.2 in blocks for 8 rows: so not padded).
DECODE_ROWS = 16     # query rows per kv head (G * t) up to which the decode forms are used
DECODE_KEYS = 2048


def attention_repeat_kv(q, k, v, bias):  # same shapes as `attention`
    """Reference attention as transformers' eager path writes it: repeat k and v to H heads, then
    softmax(q k^T / sqrt(hd) + bias) v. Slower; kept to teach and to test `attention` against."""
    n_rep = q.shape[1] // k.shape[1]
    k, v = repeat_kv(k, n_rep), repeat_kv(v, n_rep)
    scores = (q @ k.transpose(0, 1, 3, 2)) * np.float32(q.shape[-1] ** -0.5) + bias
    return softmax(scores) @ v
