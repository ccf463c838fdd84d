"""Qwen3.8-Flash-Next (qwen4_exp): the forward pass, read top to bottom like its diagram.

    input_ids -> embed_tokens -> hc_count copies: the streams S          [b, t, hc * d]   (hyper.py)
              -> N x decoder layer:
                   [PLE layers: S = S + n-gram embeddings(ids, S)]                       (engram.py)
                   x, inj = read(S);  S = write(S, mixer(x), inj)     mixer: Gated DeltaNet (deltanet.py)
                                                                             or QSA attention (qsa.py)
                   x, inj = read(S);  S = write(S, moe(x), inj)       sparse MoE + shared expert (mlp.py)
              -> final mixer: x = read(S)                              [b, t, d]   (where the norm was)
              -> lm_head -> logits

No layernorm anywhere around the layers: the stream readers normalise what they read.

hidden_states: L + 1 arrays, each the streams [b, t, hc * d]: [0] the embedding copied into every
stream, [k] the output of layer k - 1, [L] the last layer's output before the final mixer (what
transformers reports with tie_last_hidden_states=False; its default list instead ends with the
mixer's output, [b, t, d]). The logits include the mixer.
"""

import numpy as np

from .attention import Context
from .model import Model, ModelOutput, _check_finite
from .deltanet import load_gated_deltanet
from .engram import load_ple, open_table, ple
from .hyper import load_hyper_connection, read, streams_from_embeddings, write
from .mlp import load_sparse_moe
from .primitives import linear
from .progress import Progress
from .qsa import load_qsa_attention
from .weights import to_float32


class HyperContext(Context):
    """What every layer of one forward call shares: RoPE at each position (and its frequencies, for
    QSA's block keys), padding, and the token ids (for the n-gram hash)."""

    def __init__(self, cos, sin, padding, inv_freq, rope_scale, ids):
        super().__init__(cos, sin, padding)
        self.inv_freq, self.rope_scale, self.ids = inv_freq, rope_scale, ids
        self.positions = None   # after images: every key's M-RoPE position [3, b, keys] (qsa.block_keys)


class HyperLayer:
    def __init__(self, ple, attn_hc, mixer, mlp_hc, mlp):
        self.ple = ple              # engram.PLE, or None
        self.attn_hc = attn_hc      # hyper.HyperConnection around the token mixer
        self.mixer = mixer          # GatedDeltaNet or QSAAttention
        self.mlp_hc = mlp_hc        # hyper.HyperConnection around the MLP
        self.mlp = mlp              # SparseMoE


def decoder_layer(S, w: HyperLayer, cfg, ctx: HyperContext, cache=None, layer=0):  # [b, t, hc*d] -> [b, t, hc*d]
    hc, eps = cfg.hc_count, cfg.rms_norm_eps
    if w.ple is not None:
        state = cache.ple.get(layer) if cache is not None else None
        padding = ctx.padding[:, -S.shape[1]:] if ctx.padding is not None else None
        out, state = ple(S, ctx.ids, w.ple, cfg, padding, state)
        if cache is not None:
            cache.ple[layer] = state
        S = S + out
    x, inj = read(S, w.attn_hc, hc, eps)
    S = write(S, w.mixer(x, cfg, ctx, cache, layer), inj)
    x, inj = read(S, w.mlp_hc, hc, eps)
    return write(S, w.mlp(x), inj)


class FlashNextModel(Model):
    """Model (model.py) with Qwen3.8-Flash-Next's forward: the same interface, the diagram above."""

    def __init__(self, config, embed, lm_head, layers, final_mixer):
        super().__init__(config, embed, layers, None, lm_head)
        self.final_mixer = final_mixer          # hyper.HyperConnection without W_inject

    pieces = False   # (a prompt in one forward: its peak was already 0.72 of transformers' at 8192 tokens)

    def _forward(self, ids, mask, output_hidden_states, cache, logits_to_keep, lm_head=True, images=None):
        cfg = self.config
        b, t = ids.shape
        padding, inv_freq, scale, cos, sin, positions = self._positions(ids, mask, cache, images)   # (model.py)
        ctx = HyperContext(cos, sin, None if padding.all() else padding, inv_freq, scale, ids)
        if images is not None or (cache is not None and cache.positions is not None):
            # QSA's block keys are rotated at their first token's position: every key's, kept in the cache
            new = positions if positions.ndim == 3 else np.broadcast_to(positions, (3,) + positions.shape)
            ctx.positions = new if cache is None else cache.store_positions(new)

        x = to_float32(self.embed[ids])                                        # [b, t, d]
        if images is not None:
            x = images.embed(x)                                                # (vision/multimodal.py)
        _check_finite(x, "the embedding")
        S = streams_from_embeddings(x, cfg.hc_count)                            # [b, t, hc * d]
        hidden = [S] if output_hidden_states else []   # (every layer's only when asked for: model.py)
        progress = Progress("prefill: layer", len(self.layers), enabled=b * t >= 512)
        for i, layer in enumerate(self.layers):
            S = decoder_layer(S, layer, cfg, ctx, cache, i)
            _check_finite(S, f"decoder layer {i}")
            if output_hidden_states:
                hidden.append(S)
            progress.update(i + 1)
        progress.close()
        if cache is not None:
            cache.advance(t)
        if not lm_head:   # the caller applies lm_head_logits (final mixer and LM head) a block at a time
            return ModelOutput(logits=None, hidden_states=tuple(hidden) if output_hidden_states else (S,))
        logits = self.lm_head_logits(S[:, -logits_to_keep:] if logits_to_keep else S)
        _check_finite(logits, "the final mixer and LM head")
        return ModelOutput(logits=logits, hidden_states=tuple(hidden) if output_hidden_states else None)

    def lm_head_logits(self, S):  # [b, t, hc * d] -> [b, t, vocab]: the final mixer, then the LM head
        x, _ = read(S, self.final_mixer, self.config.hc_count, self.config.rms_norm_eps)
        return linear(x, self.lm_head)


# ---------------------------------------------------------------------------------------------
# the checkpoint tensors that make each layer


def load_layers(up, cfg, where):
    """-> (the decoder layers, the final mixer). where: the folder, for errors."""
    m = cfg.weight_prefix
    layers = []
    progress = Progress("loading: layer", cfg.num_hidden_layers, enabled=up.mode == "float32")
    for i in range(cfg.num_hidden_layers):
        progress.update(i)
        p = f"{m}layers.{i}."
        if cfg.layer_types[i] == "linear_attention":
            mixer = load_gated_deltanet(up, cfg, p + "linear_attn.")
        else:
            mixer = load_qsa_attention(up, cfg, p + "self_attn.")
        w_ple = None
        if i + 1 in cfg.ple_layer_ids:
            index = cfg.ple_layer_ids.index(i + 1)
            table, constants = open_table(up.tensors, cfg, p + "ple.ple_embedding.", index, where)
            w_ple = load_ple(up, cfg, p + "ple.", index, table, constants)
        layers.append(HyperLayer(w_ple, load_hyper_connection(up, cfg, p + "attn_hyper_connection."), mixer,
                                 load_hyper_connection(up, cfg, p + "mlp_hyper_connection."),
                                 load_sparse_moe(up, cfg, p + "mlp.")))
    progress.close()
    return layers, load_hyper_connection(up, cfg, m + "hyper_connection_mixer.", inject=False)
