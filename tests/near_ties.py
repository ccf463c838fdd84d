"""Why a request decoded in a batch may be compared with the same request alone.

A row decoded beside others is multiplied in one product with them, and BLAS may sum a row's dot
products in another order than for the row alone (it depends on the kernel and on the number of
rows: measured on the demo model, logits differ by up to 1e-5 on OpenBLAS's Haswell and SkylakeX
kernels). Which rows share a step depends on when requests arrive, which a test cannot fix. Greedy
choice is still the same whenever the two most likely tokens are further apart than that rounding:
so the tests compare a batch with the request alone only where every greedy step of the request
alone has such a margin, and check that precondition rather than assume it (a prompt with a near
tie fails the precondition every time, not at random). A sampled step could flip only where the
random draw falls within rounding of the boundary between two tokens: about 1e-5 per step."""

from npqwen import generate

MARGIN = 1e-3   # nats between the two most likely tokens: 100 times the rounding between batch and alone


def greedy_margin(model, tok, ids, n, eos_ids=(), never=()):
    """The smallest gap, over the n greedy steps of `ids` alone, between the log-probabilities of the
    two most likely tokens (leaving out `never`: ids a logit bias of -100 keeps from being chosen)."""
    gaps = []
    for t in generate(model, tok, ids, n, eos_ids=list(eos_ids), logprobs=2 + len(never)):
        top = [lp for i, lp in t.top_logprobs if i not in never]
        gaps.append(top[0] - top[1])
    return min(gaps)
