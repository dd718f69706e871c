"""Value, outcome and process reward models on a tiny random Llama with SmolLM2's real tokenizer."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from helpers import number_task  # noqa: E402

from x1.evaluators.aggregate import aggregate_steps  # noqa: E402
from x1.evaluators.base import EvalItem  # noqa: E402
from x1.evaluators.reward_model import (  # noqa: E402
    OutcomeRewardModel,
    PRMEvaluator,
    ProcessRewardModel,
    load_evaluator,
)
from x1.evaluators.value_model import ValueModel, ValueModelEvaluator  # noqa: E402
from x1.graph import ReasoningGraph  # noqa: E402
from x1.models.base import BackendError  # noqa: E402

TEXTS = [
    "<|im_start|>user\nWhat is 1+1?<|im_end|>\n<|im_start|>assistant\n1 + 1 = 2\n\nThe answer is: 2",
    "short",
    "The answer is: 3<|im_end|>",  # ends in the pad token (pad == eos): the mask, not the id, finds the end
    "Step one.\n\nStep two, which is a good deal longer than the first one.\n\n",
]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny matrices on a shared 2-core machine: one torch thread beats two spinning ones."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def smollm2_tokenizer():
    """SmolLM2's tokenizer. Converting it from the GGUF takes 8-18 s on 2 cores, so the converted
    folder is kept in x1's cache (keyed by the GGUF's size) and later sessions load it in 0.5 s."""
    import os
    import shutil

    from x1.models.registry import cache_dir, smollm2_path

    try:
        gguf = smollm2_path()
    except BackendError as err:
        pytest.skip(str(err))
    cached = cache_dir().parent / "test-assets" / f"smollm2-tokenizer-{gguf.stat().st_size}"
    if (cached / "tokenizer.json").exists():
        return transformers.AutoTokenizer.from_pretrained(str(cached))
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    partial = cached.with_name(f"{cached.name}.{os.getpid()}.partial")
    tokenizer.save_pretrained(str(partial))
    try:
        partial.rename(cached)
    except OSError:  # another session got there first
        shutil.rmtree(partial, ignore_errors=True)
    return tokenizer


@pytest.fixture(scope="session")
def tiny_lm(tmp_path_factory):
    """A 2-layer Llama folder (random weights) with SmolLM2's real tokenizer."""
    tokenizer = smollm2_tokenizer()
    config = transformers.LlamaConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, vocab_size=len(tokenizer)
    )
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(config)
    folder = tmp_path_factory.mktemp("tiny-lm")
    model.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="session")
def value_model(tiny_lm):
    return ValueModel.from_pretrained_lm(tiny_lm, device="cpu", seed=1, head_std=1.0)


def test_outputs_are_q_values_that_differ_per_text(value_model):
    ids, mask = value_model.pad([value_model.encode(t) for t in TEXTS])
    with torch.no_grad():
        q = value_model(ids, mask)
    assert q.shape == (len(TEXTS),) and bool((q.abs() <= 1).all())
    assert len({round(v, 6) for v in q.tolist()}) == len(TEXTS)  # a constant head would make the padding test vacuous


@pytest.mark.parametrize("side", ["right", "left"])
def test_padding_does_not_change_a_prediction(value_model, side):
    value_model.padding_side = side
    try:
        batched = value_model.predict(TEXTS, batch_size=len(TEXTS))
        single = [value_model.predict([t])[0] for t in TEXTS]
    finally:
        value_model.padding_side = "right"
    assert batched == pytest.approx(single, abs=1e-5)


def test_save_and_load_give_identical_outputs(value_model, tmp_path):
    value_model.save(tmp_path / "vm")
    loaded = ValueModel.load(tmp_path / "vm", device="cpu")
    ids, mask = value_model.pad([value_model.encode(t) for t in TEXTS])
    with torch.no_grad():
        assert torch.equal(value_model(ids, mask), loaded(ids, mask))
    assert loaded.tokenizer("1 + 1 = 2")["input_ids"] == value_model.tokenizer("1 + 1 = 2")["input_ids"]
    with pytest.raises(BackendError, match="'value' model"):
        ProcessRewardModel.load(tmp_path / "vm")
    assert isinstance(load_evaluator(tmp_path / "vm", device="cpu"), ValueModelEvaluator)


def test_gradients_reach_head_and_backbone(value_model):
    ids, mask = value_model.pad([value_model.encode(t) for t in TEXTS[:2]])
    value_model.zero_grad()
    loss = ((value_model(ids, mask) - torch.tensor([1.0, -1.0])) ** 2).mean()
    loss.backward()
    assert value_model.head.weight.grad is not None and value_model.head.weight.grad.abs().sum() > 0
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in value_model.backbone.parameters())
    value_model.zero_grad()


def test_a_lora_evaluator_saves_only_its_adapter_and_loads_merged_with_the_same_outputs(tiny_lm, tmp_path):
    import json

    pytest.importorskip("peft")
    model = ValueModel.from_pretrained_lm(tiny_lm, device="cpu", seed=1, head_std=1.0)
    model.add_lora(r=4, alpha=8)
    assert model.is_lora
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in name or name.startswith("head.") for name in trainable)
    with torch.no_grad():  # LoRA's B starts at zero; a nonzero one makes the adapter change the outputs
        for name, param in model.backbone.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)
    model.save(tmp_path / "vm")
    assert (tmp_path / "vm" / "adapter_model.safetensors").exists()
    assert not (tmp_path / "vm" / "model.safetensors").exists()  # the base is not copied
    assert json.loads((tmp_path / "vm" / "x1_head.json").read_text())["lora_base"]["model"] == str(tiny_lm.resolve())

    merged = ValueModel.load(tmp_path / "vm", device="cpu")
    assert not merged.is_lora  # merged on load: inference pays nothing for the adapter
    ids, mask = model.pad([model.encode(t) for t in TEXTS])
    with torch.no_grad():
        expected = model(ids, mask)
        assert torch.allclose(merged(ids, mask), expected, atol=1e-5)
        base_only = ValueModel.from_pretrained_lm(tiny_lm, device="cpu", seed=1, head_std=1.0)
        assert not torch.allclose(base_only(ids, mask), expected, atol=1e-3)  # the adapter did change them
    again = ValueModel.load(tmp_path / "vm", device="cpu", trainable=True)
    assert again.is_lora and any(p.requires_grad for n, p in again.backbone.named_parameters() if "lora_" in n)
    with pytest.raises(BackendError, match="trainable=True"):  # a second adapter on merged weights could not be loaded back
        merged.add_lora(r=4, alpha=8)


def test_a_lora_evaluator_whose_base_is_gone_says_which_base_it_needs(tiny_lm, tmp_path):
    import json

    pytest.importorskip("peft")
    model = ValueModel.from_pretrained_lm(tiny_lm, device="cpu", seed=1)
    model.add_lora(r=2, alpha=4)
    model.save(tmp_path / "vm")
    config_path = tmp_path / "vm" / "x1_head.json"
    config = json.loads(config_path.read_text())
    config["lora_base"]["model"] = str(tmp_path / "moved-away")
    config_path.write_text(json.dumps(config))
    with pytest.raises(BackendError, match="moved-away.*cannot be loaded here"):
        ValueModel.load(tmp_path / "vm", device="cpu")


def test_a_lora_evaluator_refuses_a_new_step_token():
    from pydantic import ValidationError

    from x1.training.config import ValueTrainConfig

    with pytest.raises(ValidationError, match="embeddings frozen"):
        ValueTrainConfig(lora={"enabled": True}, eois_token=True)


def items_for(paths: list[list[str]], prefix: str = "<|im_start|>user\nq<|im_end|>\n<|im_start|>assistant\n") -> list[EvalItem]:
    task = number_task()
    out = []
    for steps in paths:
        graph = ReasoningGraph(problem="q")
        tip = 0
        for text in steps:
            tip = graph.add(tip, text).id
        out.append(EvalItem(task, graph, tip, prefix))
    return out


def test_value_evaluator_maps_q_to_unit_interval(value_model):
    items = items_for([["a\n\n", "b"], ["The answer is: 2"], []])
    evaluator = ValueModelEvaluator(value_model)
    scores = evaluator.evaluate(items)
    q = value_model.predict([i.prefix + i.path_text for i in items])
    assert scores == pytest.approx([(v + 1) / 2 for v in q], abs=1e-7)
    assert all(0.0 <= s <= 1.0 for s in scores) and evaluator.model_calls == 1 and evaluator.name == "value"
    head = value_model.head
    saved = head.weight.detach().clone(), head.bias.detach().clone()
    try:
        with torch.no_grad():
            head.weight.zero_()
            head.bias.fill_(math.atanh(0.6))  # q = 0.6 for every text → score 0.8
        assert evaluator.evaluate(items) == pytest.approx([0.8] * 3, abs=1e-6)
    finally:
        with torch.no_grad():
            head.weight.copy_(saved[0])
            head.bias.copy_(saved[1])


def test_outcome_reward_model_is_a_sigmoid(tiny_lm):
    orm = OutcomeRewardModel.from_pretrained_lm(tiny_lm, device="cpu", head_std=1.0)
    ids, mask = orm.pad([orm.encode(t) for t in TEXTS])
    with torch.no_grad():
        assert torch.equal(orm(ids, mask), torch.sigmoid(orm.last_logits(ids, mask)))
    assert all(0.0 < p < 1.0 for p in orm.predict(TEXTS))


def test_process_reward_model_scores_each_step_end(tiny_lm, tmp_path):
    prm = ProcessRewardModel.from_pretrained_lm(tiny_lm, device="cpu", seed=2, head_std=1.0)
    prompts = ["<|im_start|>user\nq<|im_end|>\n<|im_start|>assistant\n", "Q: 2+2?\n", "x"]
    steps = [["a = 1\n\n", "The answer is: 1"], ["4\n\n", "so 4\n\n", "The answer is: 4"], ["done"]]
    ids, ends = prm.encode_steps(prompts[0], steps[0])
    assert ids[: ends[0] + 1] == prm.encode(prompts[0]) + prm.tokenizer("a = 1\n\n", add_special_tokens=False)["input_ids"]
    assert ends[-1] == len(ids) - 1
    assert prm.encode_steps(prompts[0], ["a = 1", " The answer is: 1 "]) == (ids, ends)  # stripped steps read the same
    for side in ("right", "left"):
        prm.padding_side = side
        batched = prm.predict_steps(prompts, steps, batch_size=3)
        single = [prm.predict_steps([p], [s])[0] for p, s in zip(prompts, steps, strict=True)]
        assert [len(s) for s in batched] == [2, 3, 1]
        for b, s in zip(batched, single, strict=True):
            assert b == pytest.approx(s, abs=1e-5)
    prm.padding_side = "right"
    # the evaluator reads the graph path's thought texts and aggregates
    items = items_for([steps[0]], prefix=prompts[0])
    per_step = prm.predict_steps(prompts[:1], steps[:1])[0]
    for how, expected in [("min", min(per_step)), ("last", per_step[-1]), ("product", math.prod(per_step))]:
        assert PRMEvaluator(prm, aggregate=how).evaluate(items) == pytest.approx([expected], abs=1e-7)
    prm.save(tmp_path / "prm")
    loaded = ProcessRewardModel.load(tmp_path / "prm", device="cpu")
    assert loaded.predict_steps(prompts, steps) == prm.predict_steps(prompts, steps)
    assert load_evaluator(tmp_path / "prm", device="cpu", aggregate="mean").aggregate == "mean"
    # ?dtype=bfloat16 in a spec: the backbone in bf16, the head in fp32, scores near the fp32 ones
    from x1.evaluators.spec import build_evaluator, parse_evaluator

    half = build_evaluator(parse_evaluator(f"prm:{tmp_path / 'prm'}?dtype=bfloat16"), None, device="cpu")
    assert next(half.model.backbone.parameters()).dtype == torch.bfloat16 and half.model.head.weight.dtype == torch.float32
    for a, b in zip(half.model.predict_steps(prompts, steps), loaded.predict_steps(prompts, steps), strict=True):
        assert a == pytest.approx(b, abs=0.05) and a != b


def test_step_aggregation():
    assert aggregate_steps([0.9, 0.5, 0.8], "min") == 0.5
    assert aggregate_steps([0.9, 0.5, 0.8], "last") == 0.8
    assert aggregate_steps([0.5, 0.5], "product") == 0.25
    assert aggregate_steps([0.5, 1.0], "mean") == 0.75
    assert aggregate_steps([], "min") == 0.5
    with pytest.raises(ValueError, match="min, last, product, mean"):
        aggregate_steps([0.5], "max")


# -- scoring siblings: their shared prefix runs once (shared_prefix) ---------------------------------
def test_plan_groups_siblings_on_their_parents_path_not_on_a_common_header():
    from x1.evaluators.shared_prefix import plan

    header = list(range(100, 120))  # 20 tokens every problem starts with (a system prompt)
    parent_a, parent_b = header + list(range(200, 260)), header + list(range(300, 360))
    seqs = [parent_a + [1, 2], parent_b + [7], parent_a + [3], parent_a + [4, 5, 6], parent_b + [8, 9], header + [5]]
    groups, singles = plan(seqs, max_group=16)
    assert sorted((shared, sorted(members)) for shared, members in groups) == [(80, [0, 2, 3]), (80, [1, 4])]
    assert singles == [5]
    assert plan([parent_a, parent_a], max_group=16)[0] == [(79, [0, 1])]  # each member keeps a token of its own
    assert plan(seqs, max_group=2)[0] and all(len(m) <= 2 for _, m in plan(seqs, max_group=2)[0])
    assert plan([header[:10] + [1], header[:10] + [2]], max_group=16) == ([], [0, 1])  # too short to pay


def sibling_paths() -> tuple[list[str], list[list[str]]]:
    """What a beam step scores: three children of one thought, three of another problem's, and a lone first step."""
    long_prompt = "<|im_start|>system\nSolve the problem step by step, one short step per paragraph.<|im_end|>\n"
    first, second = long_prompt + "<|im_start|>user\nWhat is 12 * 7 - 5?<|im_end|>\n", long_prompt + "<|im_start|>user\n3+4?<|im_end|>\n"
    parent = ["12 * 7 = 84\n\n", "84 - 5 = 79\n\n"]
    other = ["3 + 4 = 7\n\n", "7 * 2 = 14\n\n"]
    prompts = [first] * 3 + [second] * 4
    steps = [parent + ["The answer is: 79"], parent + ["So 79\n\n"], parent + ["The answer is: 80"],
             other + ["The answer is: 14"], other + ["14 - 1 = 13\n\n"], other + ["The answer is: 15"], ["7"]]
    return prompts, steps


def test_sibling_paths_score_as_if_each_ran_alone(tiny_lm, monkeypatch):
    from x1.evaluators import shared_prefix

    prm = ProcessRewardModel.from_pretrained_lm(tiny_lm, device="cpu", seed=2, head_std=1.0)
    prompts, steps = sibling_paths()
    calls = []
    run = shared_prefix.forward_rows

    def counted(backbone, rows, device, keep):
        calls.append([len(tokens) for _, tokens in rows])
        return run(backbone, rows, device, keep)

    monkeypatch.setattr(shared_prefix, "forward_rows", counted)
    shared = prm.predict_steps(prompts, steps, batch_size=8)
    # the two families' shared prefixes and the lone path whole, then the six siblings' own tokens on their prefixes
    assert [len(rows) for rows in calls] == [3, 6]
    assert sum(calls[1]) < sum(len(prm.encode(p + "".join(s))) for p, s in zip(prompts[:6], steps[:6], strict=True)) / 3
    prm.share_prefixes = False
    alone = [prm.predict_steps([p], [s])[0] for p, s in zip(prompts, steps, strict=True)]
    for a, b in zip(shared, alone, strict=True):
        assert a == pytest.approx(b, abs=1e-5)
    value = ValueModel.from_pretrained_lm(tiny_lm, device="cpu", seed=1, head_std=1.0)
    texts = [p + "".join(s) for p, s in zip(prompts, steps, strict=True)]
    value.share_prefixes = False
    one_by_one = [value.predict([t])[0] for t in texts]
    value.share_prefixes = True
    assert value.predict(texts) == pytest.approx(one_by_one, abs=1e-5)
    assert len(calls) == 4


def test_a_backbone_without_a_kv_cache_scores_whole_padded_sequences(tiny_lm, monkeypatch):
    from x1.evaluators import shared_prefix

    prm = ProcessRewardModel.from_pretrained_lm(tiny_lm, device="cpu", seed=2, head_std=1.0)
    prompts, steps = sibling_paths()
    shared = prm.predict_steps(prompts, steps, batch_size=8)
    monkeypatch.setattr(shared_prefix, "forward_rows", lambda backbone, rows, device, keep: None)
    for a, b in zip(prm.predict_steps(prompts, steps, batch_size=8), shared, strict=True):
        assert a == pytest.approx(b, abs=1e-5)


# -- scoring a search's next round: the paths scored last call are kept (kv_memo) ------------------------
def test_a_loaded_evaluator_runs_only_the_new_steps_of_paths_it_scored_before(tiny_lm, tmp_path, monkeypatch):
    from x1.evaluators import shared_prefix

    ProcessRewardModel.from_pretrained_lm(tiny_lm, device="cpu", seed=2, head_std=1.0).save(tmp_path / "prm")
    prm = ProcessRewardModel.load(tmp_path / "prm", device="cpu")
    assert prm.kv_memo is not None and len(prm.kv_memo) == 0
    prompts, steps = sibling_paths()
    parents = [(prompts[0], steps[0][:2]), (prompts[3], steps[3][:2])]  # what the search scored one round earlier
    prm.predict_steps([p for p, _ in parents], [s for _, s in parents])
    assert len(prm.kv_memo) == 2
    new_tokens = []
    run = shared_prefix.forward_rows

    def counted(backbone, rows, device, keep):
        new_tokens.append(sum(len(tokens) for _, tokens in rows))
        return run(backbone, rows, device, keep)

    monkeypatch.setattr(shared_prefix, "forward_rows", counted)
    children = prm.predict_steps(prompts[:6], steps[:6], batch_size=8)
    whole = sum(len(prm.encode_steps(p, s)[0]) for p, s in zip(prompts[:6], steps[:6], strict=True))
    parent_tokens = sum(len(prm.encode_steps(p, s)[0]) for p, s in parents)
    assert sum(new_tokens) <= whole - 3 * parent_tokens + 6  # each family's parent ran in the earlier call, not again
    assert prm.kv_memo.reused_tokens >= parent_tokens - 2
    fresh = ProcessRewardModel.load(tmp_path / "prm", device="cpu")
    fresh.share_prefixes = False
    alone = [fresh.predict_steps([p], [s])[0] for p, s in zip(prompts[:6], steps[:6], strict=True)]
    for a, b in zip(children, alone, strict=True):
        assert a == pytest.approx(b, abs=1e-5)
    # the same paths again: all of them are kept whole, so nothing runs
    new_tokens.clear()
    before = prm.positions_run
    for a, b in zip(prm.predict_steps(prompts[:6], steps[:6], batch_size=8), children, strict=True):
        assert a == b
    assert sum(new_tokens) == 0 and prm.positions_run == before  # the compute an evaluator charges is what it ran
    assert fresh.positions_run >= whole  # one path at a time: every position of every path


def test_a_model_that_trains_keeps_no_caches(tiny_lm, tmp_path):
    ValueModel.from_pretrained_lm(tiny_lm, device="cpu", seed=1, head_std=1.0).save(tmp_path / "vm")
    assert ValueModel.from_pretrained_lm(tiny_lm, device="cpu").kv_memo is None  # a fresh head is built to be fitted
    model = ValueModel.load(tmp_path / "vm", device="cpu")
    model.train()  # its weights would change between calls, so a kept cache would be stale
    model.predict(TEXTS)
    assert len(model.kv_memo) == 0 and model.training
    model.eval()
    model.predict(TEXTS)
    assert len(model.kv_memo) == len(set(TEXTS))
    assert load_evaluator(tmp_path / "vm", device="cpu", cache_mb="0").model.kv_memo is None
    assert load_evaluator(tmp_path / "vm", device="cpu", cache_mb="64").model.kv_memo.budget_bytes == 64 << 20


def test_kv_memo_finds_the_longest_kept_prefix_and_evicts_the_least_recently_used():
    from x1.evaluators.kv_memo import BLOCK, KVMemo

    def kv(n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return [(torch.zeros(1, n, 2), torch.zeros(1, n, 2))]  # 16 bytes per token

    header = list(range(1000, 1000 + 2 * BLOCK))
    a, b, c = header + list(range(40)), header + list(range(100, 140)), header + list(range(200, 240))
    assert 256 << 20 <= KVMemo().budget_bytes <= 4 << 30  # by default an eighth of the machine's memory, at most 4 GiB
    memo = KVMemo(budget_bytes=16 * (len(a) + len(b)))
    memo.put(a, kv(len(a)), torch.zeros(len(a)))
    memo.put(b, kv(len(b)), torch.zeros(len(b)))
    kept, n = memo.find(a[:50] + [7, 7])
    assert kept.tokens == tuple(a) and n == 50
    assert memo.find(list(range(5))) == (None, 0)  # shorter than a block
    assert memo.find(header[:BLOCK - 1] + [9] * 40) == (None, 0)  # nothing shares a whole block
    memo.find(b)  # b is now the most recently used
    memo.put(c, kv(len(c)), torch.zeros(len(c)))  # over budget: a goes
    assert len(memo) == 2 and memo.used_bytes <= memo.budget_bytes
    kept, n = memo.find(a)
    assert kept.tokens in (tuple(b), tuple(c)) and n == len(header)  # the header is still found through the others
    memo.put(list(range(10_000)), kv(10_000), torch.zeros(10_000))  # larger than the whole budget: not kept
    assert len(memo) == 2


def test_memos_without_a_budget_of_their_own_share_one_and_evict_the_oldest_entry_of_any():
    from x1.evaluators.kv_memo import KVMemo, MemoPool, shared_pool

    def kv(n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return [(torch.zeros(1, n, 2), torch.zeros(1, n, 2))]  # 16 bytes per token

    assert KVMemo().pool is KVMemo().pool is shared_pool()  # value, PRM and ORM loaded together keep one budget
    assert KVMemo(budget_bytes=1 << 20).pool is not shared_pool()  # ?cache_mb= is a budget of its own
    pool = MemoPool(16 * 3 * 40)  # room for three 40-token paths
    value, prm = KVMemo(budget_bytes=1), KVMemo(budget_bytes=1)
    for memo in (value, prm):  # both draw from the test's pool, as default memos draw from the shared one
        memo.pool = pool
        pool.join(memo)
    paths = [[i] * 40 for i in range(4)]
    value.put(paths[0], kv(40), torch.zeros(40))
    prm.put(paths[1], kv(40), torch.zeros(40))
    value.put(paths[2], kv(40), torch.zeros(40))
    assert pool.used_bytes == 3 * 640 and value.used_bytes == 2 * 640
    assert value.find(paths[0])[1] == 40  # value's first path is now the most recently used of all
    value.put(paths[3], kv(40), torch.zeros(40))  # over the shared budget: the oldest entry of either memo goes
    assert [len(value), len(prm)] == [3, 0] and pool.used_bytes == pool.budget_bytes
    prm.put(paths[1], kv(40), torch.zeros(40))  # and now value's oldest (paths[2]) makes room for prm's
    assert [len(value), len(prm)] == [2, 1] and value.find(paths[2]) == (None, 0)
    del value  # an evaluator dropped with its memo gives its share back
    import gc

    gc.collect()
    assert pool.used_bytes == 640
