"""Token-level signals of a next-token distribution: where is the model unsure, where does it fork?

All logs are natural logs (nats). Reading (see BLUEPRINT.md): low entropy → decode greedily;
high entropy with flat mass → explore; low entropy but high varentropy, or a small top-1/top-2
margin → a fork worth branching.
"""

from __future__ import annotations

import numpy as np

SIGNAL_NAMES = ("entropy", "varentropy", "gini", "top1", "margin")


def gini(probs: np.ndarray) -> float:
    """Gini coefficient of a probability vector: 0 for uniform, → 1 when one token has all mass."""
    p = np.sort(np.asarray(probs, dtype=np.float64))
    n = p.size
    total = p.sum()
    if n <= 1 or total <= 0:
        return 0.0
    # G = (2·Σ i·p_i)/(n·Σ p) − (n+1)/n with p ascending and i = 1..n (Lorenz-curve form).
    index = np.arange(1, n + 1, dtype=np.float64)
    return float((2.0 * (index * p).sum()) / (n * total) - (n + 1.0) / n)


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Log-probabilities along the last axis, in float32: what a backend's teacher-forced scoring reads.

    Shifted by each row's maximum first, so ``exp`` cannot overflow on large logits.
    """
    x = logits.astype(np.float32, copy=False)
    m = x.max(axis=-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


def token_signals(logprobs_row: np.ndarray) -> dict[str, float]:
    """Entropy, varentropy, Gini, top-1 probability and top-1/top-2 margin of one distribution."""
    lp = np.asarray(logprobs_row, dtype=np.float64)
    p = np.exp(lp)
    finite = np.isfinite(lp) & (p > 0)
    surprisal = -lp[finite]
    pf = p[finite]
    entropy = float((pf * surprisal).sum())
    varentropy = float((pf * (surprisal - entropy) ** 2).sum())
    top2 = np.partition(p, -2)[-2:] if p.size >= 2 else np.array([0.0, p.max()])
    top1 = float(top2.max())
    return {
        "entropy": max(entropy, 0.0),
        "varentropy": max(varentropy, 0.0),
        "gini": gini(p),
        "top1": top1,
        "margin": float(top1 - top2.min()),
    }


def signals_from_top_logprobs(top: dict[str, float]) -> dict[str, float]:
    """Approximate signals from a truncated top-k list (what HTTP servers return).

    The tail mass outside the top k is lumped into one pseudo-token, so entropy is a lower
    bound; ``exact`` = 0 marks the result as approximate.
    """
    if not top:
        return {}
    lp = np.array(sorted(top.values(), reverse=True), dtype=np.float64)
    p = np.exp(lp)
    rest = max(0.0, 1.0 - float(p.sum()))
    if rest > 1e-9:
        p = np.append(p, rest)
    p = p / p.sum()
    out = token_signals(np.log(p))
    out["exact"] = 0.0
    return out


def summarize(rows: list[dict[str, float]]) -> dict[str, float]:
    """Mean and max of each signal over a step's positions (what a thought stores)."""
    if not rows:
        return {}
    out: dict[str, float] = {}
    for key in SIGNAL_NAMES:
        values = [r[key] for r in rows if key in r]
        if values:
            out[f"{key}_mean"] = float(np.mean(values))
            out[f"{key}_max"] = float(np.max(values))
            out[f"{key}_min"] = float(np.min(values))
    return out


TOKEN_SERIES = ("entropy", "varentropy")


def token_series(rows: list[dict[str, float]]) -> dict[str, list[float]]:
    """Entropy and varentropy at every position of a step, rounded: kept per thought so a viewer can show where it wavered."""
    return {key: [round(r[key], 3) for r in rows] for key in TOKEN_SERIES if rows and all(key in r for r in rows)}
