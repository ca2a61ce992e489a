"""Segment cache reuse: the LRU with a byte budget, the disk copy, and the engine's counters with SmolLM2."""

from __future__ import annotations

import pytest
import torch

from longread.backends import kv
from longread.backends.local import LocalModel
from longread.backends.local.prefix_cache import PrefixCache, prefix_key, shared_prefix_cache


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, head_dim=16)
    return LlamaForCausalLM(config).eval()


def filled(model, policy: str, n: int, seed: int = 0):
    cache = kv.make_cache(policy, model.config)
    ids = torch.randint(0, 64, (1, n), generator=torch.Generator().manual_seed(seed))
    with torch.inference_mode():
        model(input_ids=ids, position_ids=torch.arange(n)[None], past_key_values=cache)
    return cache


# -- the LRU ------------------------------------------------------------------------------------------------------
def test_keys_depend_on_model_policy_dtype_and_every_token():
    base = prefix_key("m", "full", torch.float32, [1, 2, 3])
    assert base == prefix_key("m", "full", torch.float32, [1, 2, 3])
    others = [prefix_key("n", "full", torch.float32, [1, 2, 3]), prefix_key("m", "quant:4", torch.float32, [1, 2, 3]),
              prefix_key("m", "full", torch.bfloat16, [1, 2, 3]), prefix_key("m", "full", torch.float32, [1, 2, 4]),
              prefix_key("m", "full", torch.float32, [1, 2, 3, 0])]
    assert base not in others and len(set(others)) == len(others)


def test_lru_keeps_within_its_byte_budget_and_drops_the_least_recent(tiny):
    caches = [filled(tiny, "full", 20, seed) for seed in range(3)]
    size = kv.cache_bytes(caches[0])
    store = PrefixCache(max_bytes=2 * size)
    store.put("a", caches[0])
    store.put("b", caches[1])
    assert store.get("a", lambda: None) is not None  # "a" is now the most recent
    store.put("c", caches[2])
    assert "b" not in store and "a" in store and "c" in store
    assert store.stats.bytes == 2 * size <= store.max_bytes and store.stats.evictions == 1


def test_an_entry_larger_than_the_budget_is_not_kept(tiny):
    store = PrefixCache(max_bytes=100)
    store.put("big", filled(tiny, "full", 20))
    assert "big" not in store and store.stats.bytes == 0


def test_get_returns_a_private_copy(tiny):
    store = PrefixCache()
    store.put("k", filled(tiny, "quant:4", 40))
    first = store.get("k", lambda: None)
    with torch.inference_mode():
        tiny(input_ids=torch.tensor([[1, 2]]), position_ids=torch.tensor([[40, 41]]), past_key_values=first)
    second = store.get("k", lambda: None)
    assert first.get_seq_length() == 42 and second.get_seq_length() == 40


@pytest.mark.parametrize("policy", ["full", "quant:2", "snap:16", "mixed:16:4"])
def test_entries_survive_on_disk(tiny, tmp_path, policy):
    cache = filled(tiny, policy, 40)
    PrefixCache(directory=tmp_path).put("k", cache)
    reopened = PrefixCache(directory=tmp_path)  # a new process, say
    restored = reopened.get("k", lambda: kv.make_cache(policy, tiny.config))
    assert reopened.stats.disk_hits == 1
    assert restored.stored_bytes() == cache.stored_bytes() and restored.seen_tokens == 40
    for a, b in zip(cache.layers, restored.layers):
        for name, tensor in a.tensors().items():
            assert torch.equal(tensor, b.tensors()[name]), name


def test_a_damaged_file_is_a_miss(tiny, tmp_path):
    PrefixCache(directory=tmp_path).put("k", filled(tiny, "full", 10))
    (tmp_path / "k.pt").write_bytes(b"not a torch file")
    assert PrefixCache(directory=tmp_path).get("k", lambda: kv.make_cache("full", tiny.config)) is None


def test_a_file_of_another_policy_is_a_miss(tiny, tmp_path):
    PrefixCache(directory=tmp_path).put("k", filled(tiny, "full", 10))
    assert PrefixCache(directory=tmp_path).get("k", lambda: kv.make_cache("quant:4", tiny.config)) is None


def test_the_disk_copy_is_trimmed_to_its_budget(tiny, tmp_path):
    store = PrefixCache(directory=tmp_path, max_disk_bytes=1)
    store.put("a", filled(tiny, "full", 10))
    store.put("b", filled(tiny, "full", 10))
    assert list(tmp_path.glob("*.pt")) == []  # each write is over the budget, so nothing stays


def test_the_shared_cache_is_one_per_folder_and_budget(tmp_path):
    assert shared_prefix_cache() is shared_prefix_cache()
    assert shared_prefix_cache(tmp_path) is shared_prefix_cache(tmp_path) is not shared_prefix_cache()


# -- the engine, with SmolLM2 -------------------------------------------------------------------------------------
SEGMENTS = [
    "Part one. The mill at Dunmore burned in the winter of 1841; the miller, Tobias Kell, rebuilt it in stone.",
    "Part two. Kell's daughter Agnes kept the ledgers and lent money to half the parish at no interest.",
    "Part three. When the river flooded in 1852 the stone mill was the only building left standing.",
]


def worker_call(model: LocalModel, segment: str, question: str):
    """A Chain-of-Agents-shaped call: [system][segment][notes][question], the segment marked as the prefix."""
    heading = "Text of part:\n"
    content = heading + segment + "\n\nNotes so far: none.\n\nQuestion: " + question + "\nAnswer briefly."
    messages = [{"role": "system", "content": "You read one part of a long text and take notes."},
                {"role": "user", "content": content}]
    return model.complete(messages, max_new_tokens=6, cache_prefix=len(heading) + len(segment))


@pytest.mark.slow
@pytest.mark.parametrize("policy", ["full", "snap:24", "quant:4"])
def test_a_second_question_prefills_none_of_the_segments(embedded_model, policy):
    model = embedded_model.with_kv(policy)
    model.prefix_cache = PrefixCache()
    first = [worker_call(model, s, "Who rebuilt the mill?") for s in SEGMENTS]
    assert (model.stats.prefix_misses, model.stats.prefix_hits) == (3, 0)
    assert all(c.cached_prompt_tokens == 0 for c in first)
    prefill_first = model.stats.prefill_tokens

    second = [worker_call(model, s, "What happened in 1852?") for s in SEGMENTS]
    assert (model.stats.prefix_misses, model.stats.prefix_hits) == (3, 3)
    prefixes = [len(model.prompt_ids(_messages(s), len("Text of part:\n") + len(s))[0]) for s in SEGMENTS]
    assert [c.cached_prompt_tokens for c in second] == prefixes
    assert model.stats.reused_tokens == sum(prefixes)
    # The second pass ran only what follows each segment through the model.
    prefill_second = model.stats.prefill_tokens - prefill_first
    assert prefill_second == sum(c.prompt_tokens for c in second) - sum(prefixes)


def _messages(segment: str):
    return [{"role": "system", "content": "You read one part of a long text and take notes."},
            {"role": "user", "content": "Text of part:\n" + segment + "\n\nNotes so far: none."}]


@pytest.mark.slow
@pytest.mark.parametrize("policy", ["full", "snap:24", "mixed:24:2"])
def test_reuse_gives_the_same_answer_as_computing_the_prefix(embedded_model, policy):
    without = embedded_model.with_kv(policy)
    without.prefix_cache = None
    reusing = embedded_model.with_kv(policy)
    reusing.prefix_cache = PrefixCache()
    worker_call(reusing, SEGMENTS[0], "Who kept the ledgers?")  # fills the cache
    again = worker_call(reusing, SEGMENTS[0], "When did the mill burn?")
    fresh = worker_call(without, SEGMENTS[0], "When did the mill burn?")
    assert again.cached_prompt_tokens > 0 and fresh.cached_prompt_tokens == 0
    assert again.text == fresh.text


@pytest.mark.slow
def test_another_policy_does_not_reuse_the_entry(embedded_model):
    store = PrefixCache()
    a = embedded_model.with_kv("full")
    b = embedded_model.with_kv("quant:4")
    a.prefix_cache = b.prefix_cache = store
    worker_call(a, SEGMENTS[1], "Who lent money?")
    worker_call(b, SEGMENTS[1], "Who lent money?")
    assert b.stats.prefix_misses == 1 and b.stats.prefix_hits == 0 and len(store) == 2


@pytest.mark.slow
def test_prefix_cache_dir_persists_across_models(embedded_model, tmp_path):
    first = LocalModel(embedded_model.model, embedded_model.hf_tokenizer, name=embedded_model.name, kv="quant:4",
                       prefix_cache=PrefixCache(directory=tmp_path))
    worker_call(first, SEGMENTS[2], "What survived the flood?")
    later = LocalModel(embedded_model.model, embedded_model.hf_tokenizer, name=embedded_model.name, kv="quant:4",
                       prefix_cache=PrefixCache(directory=tmp_path))
    completion = worker_call(later, SEGMENTS[2], "What survived the flood?")
    assert later.stats.prefix_hits == 1 and later.prefix_cache.stats.disk_hits == 1
    assert completion.cached_prompt_tokens > 0
