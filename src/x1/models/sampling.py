"""Next-token sampling for a whole decode step at once, exact, with token signals from the same pass.

Why not numpy per sequence: a softmax and a float64 cumulative sum over 151,936 logits per row
cost about as much as a third of a 64-sequence decode step on a CPU, and exact token signals per
row (``metrics.token_signals``) cost as much again. Here the step's logits matrix is shifted by its
row maxima, exponentiated and summed once, in place, split over threads; log-sum-exp (each chosen
token's logprob), entropy, varentropy and top-1 probability all come from those sums:

    lp = x − log Z,  H = log Z − Σe·x / Z,  V = Σe·x² / Z − (Σe·x / Z)²,  top1 = 1 / Z

with x = logits − max and e = exp(x). A sampled token is drawn from the few candidates within
``c`` of the maximum, where ``c`` is chosen so that all other tokens together carry at most
``TAIL`` of the unnormalised mass at that temperature; a draw that lands in that bound is
resolved against the exact tail (rejection sampling), so the result is exact, not truncated.
"""

from __future__ import annotations

import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from x1.signals import token_signals

TAIL = 1e-6  # bound on the tail's unnormalised mass (the top token has mass 1)


@dataclass
class StepSample:
    """One decode step's draws, one entry per row."""

    tokens: list[int]
    logprobs: np.ndarray  # of each chosen token, at temperature 1
    signals: list[dict[str, float]]  # entropy, varentropy, top1 (and gini, margin where asked)


class StepSampler:
    """Samples every row of a step's logits; keeps its time split for the engine benchmark's profile.

    ``threads`` > 1 splits the full-vocabulary passes by rows: numpy releases the GIL in them, and
    llama.cpp's threads are idle while the step samples.
    """

    def __init__(self, threads: int = 1) -> None:
        self.threads = max(1, threads)
        self._pool = ThreadPoolExecutor(self.threads) if self.threads > 1 else None
        self.sample_s = 0.0  # shift, exp, sums and draws
        self.signals_s = 0.0  # the extra passes for entropy and varentropy
        self._scratch = np.empty((0, 0), dtype=np.float32)  # exp(x), reused: no 40 MB allocation per step

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False)
            self._pool = None

    def _sums(self, x: np.ndarray, e: np.ndarray, signals: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, float]:
        """Shift ``x`` in place to x − max; return max, Z, Σe·x, Σe·x² (zeros without signals), signal seconds.

        ``e`` is scratch of x's shape. Row dot products go through matmul (BLAS): float32 with
        a relative error near 1e-5, three times faster than einsum in float64.
        """
        m = x.max(axis=1)
        np.subtract(x, m[:, None], out=x)
        np.exp(x, out=e)
        z = e.sum(axis=1).astype(np.float64)
        t0 = time.perf_counter()
        if signals:
            s1 = np.matmul(e[:, None, :], x[:, :, None])[:, 0, 0].astype(np.float64)
            np.multiply(e, x, out=e)
            s2 = np.matmul(e[:, None, :], x[:, :, None])[:, 0, 0].astype(np.float64)
        else:
            s1 = s2 = np.zeros(len(x))
        return m, z, s1, s2, time.perf_counter() - t0

    def sample(
        self,
        logits: np.ndarray,
        temperatures: list[float],
        top_ps: list[float],
        rngs: list[np.random.Generator],
        full_signals: list[bool] | None = None,
        signals: bool = True,
    ) -> StepSample:
        """Draw one token per row. ``logits`` is overwritten (shifted in place): pass a buffer the
        caller no longer needs, such as llama.cpp's output view. ``full_signals`` rows also get
        Gini and the top-1/top-2 margin (a sort of the row: only for strategies that read them)."""
        start = time.perf_counter()
        n = len(logits)
        if n == 0:
            return StepSample([], np.empty(0), [])
        x = logits if logits.flags.writeable and logits.dtype == np.float32 else np.array(logits, dtype=np.float32)
        if self._scratch.shape[0] < n or self._scratch.shape[1] != x.shape[1]:
            self._scratch = np.empty((max(n, 2 * self._scratch.shape[0]), x.shape[1]), dtype=np.float32)
        e = self._scratch[:n]
        if self._pool is not None and n >= 2 * self.threads:
            bounds = np.linspace(0, n, self.threads + 1, dtype=int)
            parts = list(self._pool.map(lambda k: self._sums(x[bounds[k] : bounds[k + 1]], e[bounds[k] : bounds[k + 1]], signals),
                                        range(self.threads)))
            m, z, s1, s2 = (np.concatenate([p[j] for p in parts]) for j in range(4))
            sig_s = max(p[4] for p in parts)
        else:
            m, z, s1, s2, sig_s = self._sums(x, e, signals)
        log_z = np.log(z)
        tokens: list[int] = []
        chosen = np.empty(n)
        for r in range(n):
            t = temperatures[r]
            tok = int(x[r].argmax()) if t <= 0 else _draw(x[r], t, top_ps[r], rngs[r])
            tokens.append(tok)
            chosen[r] = float(x[r, tok]) - log_z[r]
        t0 = time.perf_counter()
        rows: list[dict[str, float]] = []
        if signals:
            mean = s1 / z
            entropy = np.maximum(log_z - mean, 0.0)
            varentropy = np.maximum(s2 / z - mean * mean, 0.0)
            top1 = 1.0 / z
            for r in range(n):
                if full_signals and full_signals[r]:
                    rows.append(token_signals(x[r] - log_z[r]))
                else:
                    rows.append({"entropy": float(entropy[r]), "varentropy": float(varentropy[r]), "top1": float(top1[r])})
        sig_s += time.perf_counter() - t0
        self.signals_s += sig_s
        self.sample_s += time.perf_counter() - start - sig_s
        return StepSample(tokens, chosen, rows)


def _draw(x: np.ndarray, temperature: float, top_p: float, rng: np.random.Generator) -> int:
    """One exact draw from softmax(x / temperature), x shifted so that its maximum is 0.

    Candidates are the tokens with x > −c; the others have mass below ``TAIL`` in all. A uniform
    draw over candidates plus that bound either lands on a candidate, or is resolved against the
    exact tail: a tail token, or a rejection that redraws from the whole row.
    """
    n_vocab = x.shape[0]
    c = max(temperature * math.log(n_vocab / TAIL), 0.0)
    bound = n_vocab * math.exp(-c / temperature)  # ≥ the tail's mass: each tail token is below exp(−c/T)
    idx = np.flatnonzero(x >= -c)  # never empty: the maximum is 0
    q = np.exp(x[idx].astype(np.float64) / temperature)
    if top_p < 1.0:
        return _nucleus(x, temperature, top_p, rng, idx, q)
    cdf = np.cumsum(q)
    mass = float(cdf[-1])
    u = rng.random() * (mass + bound)
    if u < mass:
        return int(idx[min(int(np.searchsorted(cdf, u, side="right")), len(idx) - 1)])
    full = np.exp(x.astype(np.float64) / temperature)
    tail = full.copy()
    tail[idx] = 0.0
    tail_cdf = np.cumsum(tail)
    if u - mass < tail_cdf[-1]:
        return min(int(np.searchsorted(tail_cdf, u - mass, side="right")), n_vocab - 1)
    cdf = np.cumsum(full)  # rejected: an exact draw from the whole row
    return min(int(np.searchsorted(cdf, rng.random() * cdf[-1], side="right")), n_vocab - 1)


def _nucleus(x: np.ndarray, temperature: float, top_p: float, rng: np.random.Generator, idx: np.ndarray, q: np.ndarray) -> int:
    """Top-p: the smallest set of most likely tokens holding ``top_p`` of the exact total mass."""
    total = float(np.exp(x.astype(np.float64) / temperature).sum())
    if top_p * total > float(q.sum()):  # the nucleus reaches into the tail: use the whole row
        idx = np.arange(x.shape[0])
        q = np.exp(x.astype(np.float64) / temperature)
    order = np.argsort(-q, kind="stable")
    cum = np.cumsum(q[order])
    keep = order[: int(np.searchsorted(cum, top_p * total)) + 1]
    kept = np.zeros_like(q)
    kept[keep] = q[keep]
    cdf = np.cumsum(kept)
    return int(idx[min(int(np.searchsorted(cdf, rng.random() * cdf[-1], side="right")), len(idx) - 1)])
