"""The batched sampler: exact draws (also through its tail fallback) and signals equal to signals.token_signals."""

from __future__ import annotations

import numpy as np
import pytest

from x1.models import sampling
from x1.models.sampling import StepSampler
from x1.signals import token_signals


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """The textbook reference, in float64."""
    x = np.asarray(logits, dtype=np.float64)
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def _logits(rows: int, vocab: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((rows, vocab)).astype(np.float32) * 4
    x[:, 0] += 6  # one likely token, like a language model's
    return x


def _frequencies(logits_row: np.ndarray, temperature: float, top_p: float, draws: int) -> np.ndarray:
    sampler, rng = StepSampler(), np.random.default_rng(7)
    counts = np.zeros(logits_row.shape[0])
    for _ in range(draws // 200):
        out = sampler.sample(np.tile(logits_row, (200, 1)), [temperature] * 200, [top_p] * 200, [rng] * 200, signals=False)
        np.add.at(counts, out.tokens, 1)
    return counts / draws


@pytest.mark.parametrize("tail", [sampling.TAIL, 0.5, 50.0])  # 0.5 and 50: most draws go through the tail or a rejection
def test_draws_follow_the_softmax_at_temperature(monkeypatch, tail):
    monkeypatch.setattr(sampling, "TAIL", tail)
    row = _logits(1, 40)[0]
    want = np.exp(log_softmax(row / 0.7))
    got = _frequencies(row, 0.7, 1.0, 20_000)
    assert np.abs(got - want).max() < 5 * np.sqrt(want.max() / 20_000)


def test_top_p_keeps_only_the_nucleus():
    row = _logits(1, 40, seed=3)[0]
    p = np.exp(log_softmax(row))
    order = np.argsort(-p)
    nucleus = set(order[: int(np.searchsorted(np.cumsum(p[order]), 0.6)) + 1].tolist())
    got = _frequencies(row, 1.0, 0.6, 4_000)
    assert set(np.flatnonzero(got).tolist()) <= nucleus
    assert got[order[0]] > 0


def test_signals_and_logprobs_match_the_exact_per_row_computation():
    x = _logits(6, 3000, seed=1)
    rows = x.copy()
    out = StepSampler().sample(rows, [0.0, 0.8, 1.0, 0.0, 1.3, 0.5], [1.0] * 6, [np.random.default_rng(i) for i in range(6)],
                               full_signals=[True, False, False, False, False, False])
    assert out.tokens[0] == int(x[0].argmax()) and out.tokens[3] == int(x[3].argmax())
    for r in range(6):
        lp = log_softmax(x[r])
        exact = token_signals(lp)
        assert out.logprobs[r] == pytest.approx(lp[out.tokens[r]], abs=1e-4)
        for key in ("entropy", "varentropy", "top1"):
            assert out.signals[r][key] == pytest.approx(exact[key], rel=1e-3, abs=1e-4)
    assert "gini" in out.signals[0] and "gini" not in out.signals[1]


def test_threads_split_rows_without_changing_a_draw():
    x = _logits(8, 2000, seed=2)
    temps, tops = [0.8] * 8, [1.0] * 8
    one = StepSampler().sample(x.copy(), temps, tops, [np.random.default_rng(i) for i in range(8)])
    split = StepSampler(threads=2)
    two = split.sample(x.copy(), temps, tops, [np.random.default_rng(i) for i in range(8)])
    split.close()
    assert one.tokens == two.tokens
    assert np.allclose(one.logprobs, two.logprobs)
