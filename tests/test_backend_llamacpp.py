"""The in-process llama.cpp backend against the real bundled SmolLM2-135M."""

import pytest

from x1.models.base import BackendError, ContextFull, GenerationRequest

pytestmark = pytest.mark.model


def chat(backend, text="What is 2+3? Answer in one short sentence."):
    return backend.format_chat([{"role": "user", "content": text}])


def test_greedy_is_deterministic_and_respects_limits(smollm2_llama):
    p = chat(smollm2_llama)
    a = smollm2_llama.generate([GenerationRequest(p, n=1, max_tokens=12, temperature=0)])[0][0]
    b = smollm2_llama.generate([GenerationRequest(p, n=1, max_tokens=12, temperature=0)])[0][0]
    assert a.text == b.text and a.token_ids == b.token_ids
    assert a.generated_tokens <= 12 and len(a.logprobs) == len(a.token_ids)
    assert all(lp <= 0 for lp in a.logprobs)


def test_stop_string_cuts_the_text(smollm2_llama):
    p = chat(smollm2_llama, "List three fruits, one per line.")
    (c,) = smollm2_llama.generate([GenerationRequest(p, n=1, max_tokens=40, temperature=0, stop=["\n"])])[0]
    assert c.finish_reason in ("stop", "eos", "length")
    if c.finish_reason == "stop":
        assert c.stop == "\n" and "\n" not in c.text


def test_seeded_sampling_reproduces_and_children_differ(smollm2_llama):
    p = chat(smollm2_llama, "Write a random word.")
    req = GenerationRequest(p, n=4, max_tokens=8, temperature=1.0, seed=123)
    first = [c.text for c in smollm2_llama.generate([req])[0]]
    again = [c.text for c in smollm2_llama.generate([req])[0]]
    assert first == again
    assert len(set(first)) > 1


def test_batching_keeps_sequences_apart(smollm2_llama):
    """Batched = one at a time up to llama.cpp's batch-size-dependent float rounding.

    Quantised matmuls accumulate in a different order for different batch sizes, so greedy
    texts may drift after a near-tie; the first token and its logprob must agree, and
    batching with and without prefix reuse must agree exactly.
    """
    from x1.models.llama_cpp import LlamaCppBackend
    from x1.models.registry import smollm2_path

    prompts = [chat(smollm2_llama, "Name a colour."), chat(smollm2_llama, "Name an animal.")]
    smollm2_llama.clear_cache()
    alone = [smollm2_llama.generate([GenerationRequest(p, max_tokens=6, temperature=0)])[0][0] for p in prompts]
    smollm2_llama.clear_cache()
    together = [g[0] for g in smollm2_llama.generate([GenerationRequest(p, max_tokens=6, temperature=0) for p in prompts])]
    for a, t in zip(alone, together, strict=True):
        assert a.token_ids[0] == t.token_ids[0]
        assert a.logprobs[0] == pytest.approx(t.logprobs[0], abs=0.1)
    assert alone[0].token_ids != alone[1].token_ids or alone[0].text != alone[1].text
    no_reuse = LlamaCppBackend(smollm2_path(), n_ctx=4096, n_seq_max=8, prefix_reuse=False)
    try:
        plain = [g[0] for g in no_reuse.generate([GenerationRequest(p, max_tokens=6, temperature=0) for p in prompts])]
    finally:
        no_reuse.close()
    assert [c.token_ids for c in plain] == [c.token_ids for c in together]


def test_children_reuse_their_parents_prefix(smollm2_llama):
    """A 3-level tree: each level prefills only what is new, never the shared prefix."""
    b = smollm2_llama
    b.clear_cache()
    root = chat(b, "Think step by step: what is 12 times 3?")
    before = b.stats.prompt_tokens
    level1 = b.generate([GenerationRequest(root, n=3, max_tokens=10, temperature=0.8, seed=1, stop=["\n"])])[0]
    root_tokens = len(b.tokenize(root))
    assert b.stats.prompt_tokens - before == root_tokens  # prefilled once for three children
    assert [c.prompt_tokens for c in level1] == [root_tokens, 0, 0]
    for _level in range(2):
        parents = [root + c.text + (c.stop or "") for c in level1]
        before, reused_before = b.stats.prompt_tokens, b.stats.reused_prompt_tokens
        requests = [GenerationRequest(p, n=2, max_tokens=10, temperature=0.8, seed=2, stop=["\n"]) for p in parents]
        level1 = [g[0] for g in b.generate(requests)]
        prefilled = b.stats.prompt_tokens - before
        reused = b.stats.reused_prompt_tokens - reused_before
        assert reused >= 3 * root_tokens  # every child reused at least the root prompt
        # only the parents' own new text (plus a boundary token) is evaluated
        assert prefilled <= sum(len(b.tokenize(p)) - root_tokens for p in parents) + 3 * 2


def test_kv_streams_reuse_a_prefix_by_copying_the_stream():
    """One KV stream per slot: a child's prefix is its parent's whole stream copied, its tail dropped.

    With reuse, a level prefills only the new text, and greedy continuations equal those of the
    same backend without reuse (the copied cells hold the very values prefilling would write).
    A prompt longer than one stream is refused before it runs, naming the per-stream size.
    """
    from x1.models.llama_cpp import LlamaCppBackend
    from x1.models.registry import smollm2_path

    def tree(b):  # type: ignore[no-untyped-def]
        root = chat(b, "Think step by step: what is 12 times 3?")
        level = b.generate([GenerationRequest(root, n=3, max_tokens=10, temperature=0.8, seed=1, stop=["\n"])])[0]
        parents = [root + c.text + (c.stop or "") for c in level]
        before = b.stats.prompt_tokens
        leaves = [g[0] for g in b.generate([GenerationRequest(p, max_tokens=8, temperature=0) for p in parents])]
        return leaves, b.stats.prompt_tokens - before, len(b.tokenize(root))

    streams = LlamaCppBackend(smollm2_path(), n_ctx=8 * 512, n_seq_max=8, kv_streams=True)
    plain = LlamaCppBackend(smollm2_path(), n_ctx=8 * 512, n_seq_max=8, kv_streams=True, prefix_reuse=False)
    unified = LlamaCppBackend(smollm2_path(), n_ctx=4096, n_seq_max=8)
    try:
        assert streams.n_ctx_seq == 512
        reused, prefilled, root_tokens = tree(streams)
        fresh, prefilled_fresh, _ = tree(plain)
        assert [c.token_ids for c in reused] == [c.token_ids for c in fresh]
        assert prefilled < prefilled_fresh - 2 * root_tokens  # the shared prompt was copied, not prefilled again
        # each leaf's row came back to its own request: its first token is what the unified cache gives it
        one_cache, _, _ = tree(unified)
        assert len({c.text for c in one_cache}) > 1
        for a, b in zip(reused, one_cache, strict=True):
            assert a.token_ids[:1] == b.token_ids[:1]  # a leaf may end at once (eos)
            assert a.logprobs[:1] == pytest.approx(b.logprobs[:1], abs=0.1)
        with pytest.raises(ContextFull, match="leaves no room in the 512 KV cells one sequence may fill"):
            streams.generate([GenerationRequest(chat(streams, "word " * 600), max_tokens=8)])
        # a prompt that fits, with more max_tokens than its stream has cells left: cut to the cells, not refused
        long_prompt = chat(streams, "Count on from 1, one number per line, forever. " + "go " * 440)
        room = 512 - len(streams.tokenize(long_prompt))
        assert 0 < room < 40
        [cut] = streams.generate([GenerationRequest(long_prompt, max_tokens=room + 50, temperature=0)])[0:1]
        assert len(cut[0].token_ids) <= room
        assert cut[0].finish_reason in ("length", "eos", "stop")
    finally:
        streams.close()
        plain.close()
        unified.close()


def test_kv_streams_decode_returns_rows_in_the_callers_order():
    """Entries are sent to llama.cpp in slot order; the logits rows still come back in the caller's."""
    from x1.models.llama_cpp import LlamaCppBackend
    from x1.models.registry import smollm2_path

    b = LlamaCppBackend(smollm2_path(), n_ctx=8 * 256, n_seq_max=8, kv_streams=True)
    try:
        prompts = [b.tokenize(chat(b, "Reply with one word: yes")), b.tokenize(chat(b, "Count: 1, 2, 3,"))]

        def entries(tokens, slot):  # type: ignore[no-untyped-def]
            return [(t, pos, slot, pos == len(tokens) - 1) for pos, t in enumerate(tokens)]

        alone = []
        for tokens in prompts:  # each alone in slot 0
            b.kv.memory.remove(0)
            alone.append(int(b.decode(entries(tokens, 0))[0].argmax()))
        assert alone[0] != alone[1]
        together = b.decode(entries(prompts[0], 5) + entries(prompts[1], 2))  # slot 5's row first, as asked
        assert [int(row.argmax()) for row in together] == alone
    finally:
        b.close()


def test_lock_step_chains_near_the_slot_limit_are_not_re_prefilled():
    """6 chains on 8 slots, 3 steps: each step extends its chain's slot in place, so a later step
    prefills only its boundary token, never the prompt (LRU eviction used to evict the sources)."""
    from x1.models.llama_cpp import LlamaCppBackend
    from x1.models.registry import smollm2_path

    b = LlamaCppBackend(smollm2_path(), n_ctx=4096, n_seq_max=8)
    try:
        prompts = [chat(b, f"Count from {i} to {i + 20}, one number per line.") for i in range(6)]
        for _step in range(3):
            before = b.stats.prompt_tokens
            done = [g[0] for g in b.generate([GenerationRequest(p, max_tokens=8, temperature=0, stop=["\n"]) for p in prompts])]
            prefilled = b.stats.prompt_tokens - before
            if _step > 0:
                assert prefilled <= 6 * 3, prefilled
            prompts = [p + c.text + (c.stop or "") for p, c in zip(prompts, done, strict=True)]
    finally:
        b.close()


def test_score_matches_generation_logprobs(smollm2_llama):
    p = chat(smollm2_llama)
    (c,) = smollm2_llama.generate([GenerationRequest(p, max_tokens=8, temperature=0)])[0]
    (scored,) = smollm2_llama.score([p], [c.text])
    n = min(len(scored), len(c.logprobs))
    assert n >= 4
    assert scored[:n] == pytest.approx(c.logprobs[:n], abs=2e-2)


def test_token_signals_are_sane(smollm2_llama):
    (c,) = smollm2_llama.generate([GenerationRequest(chat(smollm2_llama), max_tokens=5, temperature=0, signals=True)])[0]
    assert len(c.signals) >= 1
    for s in c.signals:
        assert s["entropy"] >= 0 and s["varentropy"] >= 0 and 0 <= s["gini"] <= 1 and 0 < s["top1"] <= 1


def test_every_sampled_step_carries_entropy_and_varentropy(smollm2_llama):
    """Without asking: search strategies (MCTS, beam, best-of-N) get signals on every thought."""
    from x1.signals import summarize

    group = smollm2_llama.generate([GenerationRequest(chat(smollm2_llama), n=2, max_tokens=6, temperature=0.8, seed=1)])[0]
    for c in group:
        assert len(c.signals) >= len(c.token_ids) > 0
        assert all(s["entropy"] >= 0 and s["varentropy"] >= 0 and 0 < s["top1"] <= 1 and "gini" not in s for s in c.signals)
        assert summarize(c.signals)["entropy_mean"] >= 0


def test_overlong_prompt_names_the_fix(smollm2_llama):
    with pytest.raises(BackendError, match="fix: raise n_ctx"):
        smollm2_llama.generate([GenerationRequest("word " * 9000, max_tokens=4)])


def test_stream_admits_requests_while_others_run_and_score_runs_between_steps():
    """Continuous batching: a request submitted mid-decode joins at once and finishes before a long
    one; a request that needs more slots than are free waits in the queue, then runs."""
    from x1.models.llama_cpp import LlamaCppBackend
    from x1.models.registry import smollm2_path

    backend = LlamaCppBackend(smollm2_path(), n_ctx=4096, n_seq_max=4)
    try:
        story = chat(backend, "Write a long story about a dragon who learns to bake bread.")
        short = chat(backend, "Name a colour.")
        stream = backend.open_stream()
        long_t = stream.submit(GenerationRequest(story, max_tokens=40, temperature=0))
        short_t = stream.submit(GenerationRequest(short, max_tokens=2, temperature=0))
        done: dict[int, list] = {}
        steps = 0
        while short_t not in done:
            done.update(stream.step())
            steps += 1
        assert steps == 2 and long_t not in done  # a 2-token answer does not wait for the 40-token one
        late_t = stream.submit(GenerationRequest(short, max_tokens=2, temperature=0))
        wide_t = stream.submit(GenerationRequest(short, n=3, max_tokens=2, temperature=1.0, seed=1))  # 3 slots: must wait
        assert backend.score([short], [" Blue"])[0]  # between steps, beside running sequences
        while late_t not in done:
            done.update(stream.step())
        assert long_t not in done and wide_t not in done
        while stream.busy:
            done.update(stream.step())
        assert done[late_t][0].token_ids == done[short_t][0].token_ids
        assert len(done[long_t][0].token_ids) == 40 and len(done[wide_t]) == 3
        assert not any(s.busy for s in backend._slots)  # every slot came back
        stream.close()
    finally:
        backend.close()


def test_a_prompt_that_extends_a_running_sequence_reads_only_its_decoded_cells():
    """The newest token of a running sequence is decoded one step later: a prompt that continues
    it copies the decoded cells only and prefills the rest, so it continues exactly as the
    running sequence does."""
    from x1.models.llama_cpp import LlamaCppBackend
    from x1.models.llama_cpp.slots import common_prefix as _common_prefix
    from x1.models.registry import smollm2_path

    backend = LlamaCppBackend(smollm2_path(), n_ctx=4096, n_seq_max=4)
    try:
        prompt = chat(backend, "Write a long story about a dragon who learns to bake bread.")
        stream = backend.open_stream()
        first = stream.submit(GenerationRequest(prompt, max_tokens=16, temperature=0))
        for _ in range(6):
            assert not stream.step()
        (running,) = stream._running
        so_far = prompt + running.raw.decode()
        assert backend.tokenize(so_far) == backend._slots[running.slot].tokens  # includes the undecoded token
        decoded = len(backend._slots[running.slot].tokens) - 1
        longer = so_far + " Then the oven"
        shared = _common_prefix(backend.tokenize(longer), backend._slots[running.slot].tokens)
        follow = stream.submit(GenerationRequest(so_far, max_tokens=4, temperature=0))
        follow_longer = stream.submit(GenerationRequest(longer, max_tokens=1, temperature=0))
        done: dict[int, list] = {}
        while stream.busy:
            done.update(stream.step())
        assert done[follow][0].prompt_tokens == 1  # everything but the undecoded token came from the running slot
        assert done[follow][0].token_ids == done[first][0].token_ids[6:10]
        assert done[follow_longer][0].prompt_tokens == len(backend.tokenize(longer)) - min(shared, decoded)
    finally:
        backend.close()


def test_stats_count_the_positions_that_decode_steps_attend_over(smollm2_llama):
    """The engine benchmark's matched ceiling reads the mean decode position from these counters."""
    prompt = chat(smollm2_llama)
    n_prompt = len(smollm2_llama.tokenize(prompt))
    stats = smollm2_llama.stats
    stats.decoded_tokens = stats.decoded_positions = 0
    (c,) = smollm2_llama.generate([GenerationRequest(prompt, n=1, max_tokens=5, temperature=0)])[0]
    # the first token comes from the prompt's prefill; each later one is decoded at the next position
    later = c.generated_tokens - (1 if c.finish_reason == "length" else 0)
    assert stats.decoded_tokens == later
    assert stats.decoded_positions == sum(range(n_prompt, n_prompt + later))


def test_a_retired_completion_is_evicted_first():
    """``cache_ref`` names what a finished sequence's slot holds; ranking it None (``rank_cached``) makes
    it the first to go when every slot is cached, though plain LRU would take another."""
    from x1.models.llama_cpp import LlamaCppBackend
    from x1.models.registry import smollm2_path

    b = LlamaCppBackend(smollm2_path(), n_ctx=2048, n_seq_max=3)
    try:
        done = [b.generate([GenerationRequest(chat(b, f"Say the number {i}."), max_tokens=3, temperature=0)])[0][0] for i in range(3)]
        refs = [c.cache_ref for c in done]
        assert all(isinstance(r, int) for r in refs) and len(set(refs)) == 3
        b.rank_cached({refs[0]: None})
        # the prompt shares most with number 2's, so that slot is the copy source, and one of the others must go:
        # by LRU number 1's (number 0's was read since, as the copy source of the shared system prompt)
        b.generate([GenerationRequest(chat(b, "Say the number 2 twice."), max_tokens=3, temperature=0)])
        held = {slot.key for slot in b._slots}
        assert refs[1] in held and refs[2] in held and refs[0] not in held
    finally:
        b.close()


def test_a_running_sequence_moved_into_a_finished_ones_slot_decodes_on():
    """KV streams: when the sequence in slot 0 finishes, the one in slot 1 moves down (its stream is
    copied), so the batch stays one run of slots; it decodes on as if nothing happened."""
    from x1.models.llama_cpp import LlamaCppBackend
    from x1.models.registry import smollm2_path

    b = LlamaCppBackend(smollm2_path(), n_ctx=4 * 256, n_seq_max=4, kv_streams=True)
    try:
        counting = GenerationRequest(chat(b, "Count from 1 to 20, separated by commas."), max_tokens=24, temperature=0)
        [alone] = b.generate([counting])[0]
        b.clear_cache()
        short = GenerationRequest(chat(b, "Reply with one word: yes"), max_tokens=1, temperature=0)
        _, [moved] = b.generate([short, counting])
        assert b.stats.packed >= 1
        assert moved.token_ids == alone.token_ids
    finally:
        b.close()


def test_kv_streams_running_sequences_stay_in_slot_order_so_no_logits_are_permuted(monkeypatch):
    """llama.cpp takes a KV-stream batch in slot order; the stream keeps its running sequences in that order, so the
    backend never sorts a batch and copies the logits rows back into the caller's order (a full [rows, vocab] copy)."""
    from x1.models.llama_cpp import LlamaCppBackend
    from x1.models.registry import smollm2_path

    b = LlamaCppBackend(smollm2_path(), n_ctx=8 * 256, n_seq_max=8, kv_streams=True)
    try:
        requests = [GenerationRequest(chat(b, q), max_tokens=m, temperature=0, n=n)
                    for q, m, n in [("Reply with one word: yes", 2, 1), ("Count from 1 to 20, separated by commas.", 20, 2),
                                    ("Name three colours.", 8, 1), ("What is 2 + 2?", 12, 2)]]
        alone = [b.generate([r])[0] for r in requests]
        b.clear_cache()
        batches: list[list[tuple[int, int]]] = []
        decode = b.decode

        def recorded(entries):  # type: ignore[no-untyped-def]
            batches.append([(slot, pos) for _, pos, slot, _ in entries])
            return decode(entries)

        monkeypatch.setattr(b, "decode", recorded)
        together = b.generate(requests)
        assert [[c.token_ids for c in group] for group in together] == [[c.token_ids for c in group] for group in alone]
        assert b.stats.packed >= 1  # sequences finished early and others moved into their slots
        steps = [batch for batch in batches if len(batch) > 1]
        assert steps and all(batch == sorted(batch) for batch in steps)
    finally:
        b.close()
