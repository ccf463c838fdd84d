"""The MLP of a layer: dense SwiGLU, or a sparse mixture of experts.

Dense (Qwen2, Qwen3, and the dense layers of the MoE models):
    x -> down(silu(gate(x)) * up(x))

Sparse mixture of experts (Qwen2-MoE, Qwen3-MoE): many small SwiGLU MLPs ("experts"), of which
each token uses only k. A router scores every expert for the token; the k most probable run, and
their outputs are summed, weighted by those probabilities:
    p = softmax(router(x))                       over ALL experts, in float32
    chosen = the k largest p                     (renormalised to sum to 1 iff norm_topk_prob)
    y = sum over chosen e of p_e * expert_e(x)
  + Qwen2-MoE: a shared expert every token uses, scaled by sigmoid(shared_expert_gate(x)).
So a model with E experts has E times the MLP parameters but spends the compute of k per token.
"""

from dataclasses import dataclass

import numpy as np

from .primitives import linear, sigmoid, softmax, swiglu_mlp


@dataclass
class DenseMLP:
    w_gate_up: np.ndarray                               # [2i, d]: gate rows, then up rows
    w_down: np.ndarray                                  # [d, i]

    def __call__(self, x):                              # [..., d] -> [..., d]
        return swiglu_mlp(x, self.w_gate_up, self.w_down)


@dataclass
class Experts:
    """Every expert's weights, float32: experts[e] -> (w_gate_up [2i, d], w_down [d, i])."""
    w_gate_up: np.ndarray                               # [E, 2i, d]
    w_down: np.ndarray                                  # [E, d, i]

    def __len__(self):
        return len(self.w_gate_up)

    def __getitem__(self, e):
        return self.w_gate_up[e], self.w_down[e]


@dataclass
class SparseMoE:
    router: np.ndarray                                  # [E, d]
    experts: Experts                                    # or StoredExperts (bf16 weights: kept as stored)
    top_k: int
    norm_topk_prob: bool
    shared: DenseMLP | None = None                      # Qwen2-MoE's shared expert
    shared_gate: np.ndarray | None = None               # [1, d]

    def __call__(self, x):                              # [..., d] -> [..., d]
        return sparse_moe(x, self)


def route(router_logits, k, norm_topk_prob):  # [n, E] -> chosen experts [n, k] ints, weights [n, k] float32
    """Softmax over all experts, then the k most probable, most probable first."""
    probs = softmax(router_logits)
    chosen = np.argpartition(-probs, k - 1, axis=-1)[:, :k]                    # the k largest, unordered
    weights = np.take_along_axis(probs, chosen, axis=-1)
    order = np.argsort(-weights, axis=-1, kind="stable")
    chosen, weights = np.take_along_axis(chosen, order, -1), np.take_along_axis(weights, order, -1)
    if norm_topk_prob:
        weights /= weights.sum(axis=-1, keepdims=True)
    return chosen, weights


def sparse_moe(x, w: SparseMoE):  # [..., d] -> [..., d]
    """Tokens are grouped by the expert they were routed to (one argsort of the assignments); each
    expert that any token chose runs one matmul over all of its tokens; the weighted outputs go
    back to their tokens with one indexed assignment. Experts no token chose are never touched, so
    one decoded token reads only k experts' weights."""
    shape, d = x.shape, x.shape[-1]
    x = x.reshape(-1, d)                                                       # [n, d]
    chosen, weights = route(linear(x, w.router), w.top_k, w.norm_topk_prob)    # [n, k] x2
    flat = chosen.ravel()                                                      # assignment j = token j // k
    order = np.argsort(flat, kind="stable")                                    # assignments grouped by expert
    starts = np.searchsorted(flat[order], np.arange(len(w.experts) + 1))       # group e: order[starts[e]:starts[e+1]]
    y = np.empty((flat.size, d), np.float32)                                   # one output per assignment
    for e in np.flatnonzero(np.diff(starts)):                                  # the experts that were chosen
        group = order[starts[e]:starts[e + 1]]
        w_gate_up, w_down = w.experts[e]
        y[group] = swiglu_mlp(x[group // w.top_k], w_gate_up, w_down) * weights.ravel()[group, None]
    out = y.reshape(len(x), w.top_k, d).sum(axis=1)                            # each token: its k experts
    if w.shared is not None:
        out += sigmoid(linear(x, w.shared_gate)) * w.shared(x)
    return out.reshape(shape)


# ---------------------------------------------------------------------------------------------
# the checkpoint tensors that make each block (p: model.layers.{i}.mlp.)


def load_dense_mlp(up, p) -> DenseMLP:
    return DenseMLP(w_gate_up=up(p + "gate_proj.weight", p + "up_proj.weight"), w_down=up(p + "down_proj.weight"))


def load_sparse_moe(up, cfg, p) -> SparseMoE:
    experts = StoredExperts(up, p, cfg.num_experts,
                            (cfg.hidden_size, cfg.moe_intermediate_size) if cfg.experts_in_out else None)
    if up.mode == "float32":  # upcast every expert once, straight into [E, ...] arrays (no second copy)
        d, i = cfg.hidden_size, cfg.moe_intermediate_size
        stacked = Experts(np.empty((len(experts), 2 * i, d), np.float32), np.empty((len(experts), d, i), np.float32))
        for e in range(len(experts)):
            experts.fetch(e, into=(stacked.w_gate_up[e], stacked.w_down[e]))
        experts = stacked
    shared = cfg.shared_expert_intermediate_size > 0
    return SparseMoE(router=up(p + "gate.weight"), experts=experts, top_k=cfg.num_experts_per_tok,
                     norm_topk_prob=cfg.norm_topk_prob,
                     shared=load_dense_mlp(up, p + "shared_expert.") if shared else None,
                     shared_gate=up(p + "shared_expert_gate.weight") if shared else None)


class StoredExperts:
    """The experts as the file stores them, fetched one at a time: with bf16 weights, only when a
    token is routed to one (so a step reads only the experts it uses). Files store an expert as its
    own gate_proj, up_proj and down_proj (as transformers saves them), or, as Qwen3.5-MoE's
    released files do, every expert of a layer in two fused tensors, experts.gate_up_proj
    [E, 2i, d] (gate rows, then up) and experts.down_proj [E, d, i]."""

    def __init__(self, up, p, n, in_out=None):
        """in_out (Qwen3-VL-MoE): (d, i). A fused tensor not of the shape [E, 2i, d] / [E, d, i] is read
        transposed, [E, d, 2i] / [E, i, d] (as transformers' loader decides, tensor by tensor)."""
        self.up, self.p, self.n = up, p, n
        self.fused = p + "experts.gate_up_proj" in up.tensors
        self.flip = (False, False)
        if self.fused and in_out:
            d, i = in_out
            self.flip = (up.tensors[p + "experts.gate_up_proj"].shape[1:] != (2 * i, d),
                         up.tensors[p + "experts.down_proj"].shape[1:] != (d, i))

    def __len__(self):
        return self.n

    def __getitem__(self, e):
        return self.fetch(e)

    def fetch(self, e, into=(None, None)):  # -> (w_gate_up [2i, d], w_down [d, i])
        if self.fused:
            gate_up, down = self.up.tensors[self.p + "experts.gate_up_proj"], self.up.tensors[self.p + "experts.down_proj"]
            return (self.up.arrays([gate_up[e].T if self.flip[0] else gate_up[e]], into[0]),
                    self.up.arrays([down[e].T if self.flip[1] else down[e]], into[1]))
        n = f"{self.p}experts.{e}."
        return (self.up(n + "gate_proj.weight", n + "up_proj.weight", into=into[0]),
                self.up(n + "down_proj.weight", into=into[1]))
