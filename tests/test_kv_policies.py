"""KV policies on tiny random Llama and Qwen2 models: parsing, exactness before eviction, positions, budgets."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from longread.backends import kv
from longread.backends.kv import MixedPolicy, PolicyCache, SinkPolicy, SnapPolicy
from longread.backends.local.generation import generate, prefill


def tiny(kind: str):
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    shape = dict(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, max_position_embeddings=512)
    if kind == "llama":
        config = LlamaConfig(head_dim=16, **shape)
        return LlamaForCausalLM(config).eval()
    config = Qwen2Config(**shape)  # attention biases on q/k/v, as real Qwen2 has
    return Qwen2ForCausalLM(config).eval()


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module", params=["llama", "qwen2"])
def model(request):
    return tiny(request.param)


def ids(n: int, seed: int = 0) -> list[int]:
    return torch.randint(0, 128, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


@torch.inference_mode()
def chunked_logits(model, tokens: list[int], policy: str, chunk: int = 32) -> tuple[torch.Tensor, object]:
    cache = kv.make_cache(policy, model.config)
    kv.install_query_hooks(model)
    out = []
    for lo in range(0, len(tokens), chunk):
        piece = torch.tensor([tokens[lo : lo + chunk]])
        positions = torch.arange(lo, lo + piece.shape[1])[None]
        out.append(model(input_ids=piece, position_ids=positions, past_key_values=cache).logits)
    return torch.cat(out, dim=1)[0], cache


# -- parsing ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text, canonical",
    [("full", "full"), (" Quant:4 ", "quant:4"), ("quant:2", "quant:2"), ("quant:8", "quant:8"),
     ("sink:256", "sink:256"), ("snap:1024", "snap:1024"), ("mixed:512:2", "mixed:512:2"), (" FP8", "fp8")],
)
def test_valid_policies_are_canonicalised(text, canonical):
    assert kv.validate_policy(text) == canonical


@pytest.mark.parametrize("text", ["", "fp16", "quant:3", "quant", "sink:4", "snap:x", "mixed:512", "mixed:512:5", "h2o:64",
                                  "fp8:4"])
def test_bad_policies_name_the_valid_forms(text):
    with pytest.raises(ValueError) as info:
        kv.validate_policy(text)
    message = str(info.value)
    assert repr(text) in message
    for form in ("full", "quant:BITS", "sink:N", "snap:N", "mixed:N:BITS", "fp8"):
        assert form in message


def test_make_cache_gives_one_policy_layer_per_model_layer(model):
    cache = kv.make_cache("snap:64", model.config)
    assert isinstance(cache, PolicyCache) and len(cache.layers) == model.config.num_hidden_layers


def test_sliding_window_models_are_refused_for_compressed_policies():
    from transformers import MistralConfig

    config = MistralConfig(num_hidden_layers=2, sliding_window=64, hidden_size=64, num_attention_heads=4,
                           num_key_value_heads=2, intermediate_size=96, vocab_size=128)
    assert type(kv.make_cache("full", config)).__name__ == "DynamicCache"
    with pytest.raises(ValueError, match="full attention"):
        kv.make_cache("sink:64", config)


# -- exactness --------------------------------------------------------------------------------------------------
def test_full_matches_a_single_uncached_forward(model):
    tokens = ids(150)
    logits, cache = chunked_logits(model, tokens, "full")
    with torch.inference_mode():
        reference = model(input_ids=torch.tensor([tokens])).logits[0]
    torch.testing.assert_close(logits, reference, atol=1e-5, rtol=1e-5)
    assert cache.get_seq_length() == 150


@pytest.mark.parametrize("policy", ["sink:200", "snap:200", "mixed:200:2", "mixed:200:4"])
def test_eviction_policies_equal_full_while_nothing_is_evicted(model, policy):
    tokens = ids(200, seed=1)
    full, _ = chunked_logits(model, tokens, "full")
    logits, cache = chunked_logits(model, tokens, policy)
    assert torch.equal(logits, full)
    assert cache.get_seq_length() == 200


@pytest.mark.parametrize("policy", ["sink:64", "snap:64", "mixed:64:2"])
def test_the_first_eviction_changes_only_what_comes_after(model, policy):
    tokens = ids(160, seed=2)
    full, _ = chunked_logits(model, tokens, "full")
    logits, _ = chunked_logits(model, tokens, policy)
    # Eviction happens at the end of a chunk once the cache holds more than 64 tokens: the first three chunks (96
    # tokens) see everything, later ones do not.
    assert torch.equal(logits[:96], full[:96])
    assert not torch.allclose(logits[96:], full[96:])


def test_generation_is_identical_to_full_until_the_budget_is_reached(model):
    prompt = ids(40, seed=3)
    outputs = {}
    for policy in ("full", "sink:100", "snap:100", "mixed:100:2"):
        cache = kv.make_cache(policy, model.config)
        outputs[policy] = generate(model, prompt, cache, max_new_tokens=40, eos_ids=set(), prefill_chunk=16,
                                   repetition_penalty=1.0, guard=_no_guard()).ids
    assert len(set(map(tuple, outputs.values()))) == 1  # 80 tokens < 100: nothing evicted


def _no_guard():
    from longread.backends.local.generation import RepetitionGuard

    return RepetitionGuard(max_period=0)


@pytest.mark.parametrize("bits, tolerance", [(8, 0.02), (4, 0.25)])
def test_quantized_logits_stay_close_to_full(model, bits, tolerance):
    """Max |logit - full logit| over 200 positions, relative to the spread (std) of the full logits."""
    tokens = ids(200, seed=4)
    full, _ = chunked_logits(model, tokens, "full")
    logits, cache = chunked_logits(model, tokens, f"quant:{bits}")
    error = (logits - full).abs().max() / full.std()
    assert error < tolerance
    assert cache.layers[0].store is not None and len(cache.layers[0].store) == 128  # one block quantized


# -- positions after eviction ---------------------------------------------------------------------------------
def test_sink_keeps_the_sinks_and_the_most_recent_tokens(model):
    _, cache = chunked_logits(model, ids(150), "sink:20")
    layer = cache.layers[0]
    assert layer.seen == 150 and layer.get_seq_length() == 20
    assert layer.positions() == [0, 1, 2, 3] + list(range(134, 150))


def test_keys_keep_their_true_rope_positions_after_eviction(model):
    """The first layer's stored keys are exactly the full cache's at the kept positions (RoPE applied there).

    (Only the first layer: deeper layers' keys depend on attention outputs, which eviction changes.)"""
    tokens = ids(150, seed=5)
    _, full = chunked_logits(model, tokens, "full")
    for policy in ("sink:40", "snap:40"):
        _, cache = chunked_logits(model, tokens, policy)
        layer, reference = cache.layers[0], full.layers[0]
        if policy.startswith("sink"):
            kept = torch.tensor(layer.positions()).expand(layer.keys.shape[:3])
        else:
            kept = layer.positions.long()
        index = kept.unsqueeze(-1).expand(-1, -1, -1, layer.keys.shape[-1])
        assert layer.get_seq_length() < 150
        torch.testing.assert_close(layer.keys, reference.keys.gather(-2, index), atol=1e-6, rtol=1e-6)


def test_snap_keeps_the_observation_window_and_the_most_attended_tokens(model):
    _, cache = chunked_logits(model, ids(200, seed=6), "snap:48")
    policy = cache.policy
    for layer in cache.layers:
        positions = layer.positions
        assert torch.all(positions[..., 1:] > positions[..., :-1])  # sorted, no duplicates
        window = torch.arange(200 - policy.window, 200, dtype=positions.dtype)
        assert torch.equal(positions[..., -policy.window :], window.expand_as(positions[..., -policy.window :]))
    # Heads choose for themselves: not every head keeps the same tokens.
    positions = cache.layers[0].positions
    assert not all(torch.equal(positions[0, 0], positions[0, h]) for h in range(positions.shape[1]))


def test_snap_prefers_the_tokens_the_window_attends_to():
    """A key that every window query points at survives heavy eviction; the same token with a neutral key does not."""
    layer = SnapPolicy(16, window=4, pool=1).new_layer()
    d = 8
    keys = torch.zeros(1, 1, 64, d)
    target = torch.zeros(d)
    target[0] = 10.0
    keys[0, 0, 10] = target  # position 10 matches the queries
    queries = target.expand(1, 1, 4, d).clone()
    layer.observe(queries)
    layer.update(keys, torch.randn(1, 1, 64, d))
    assert 10 in layer.positions[0, 0].tolist()
    assert layer.get_seq_length() <= 16


# -- heavy eviction stays coherent ------------------------------------------------------------------------------
@pytest.mark.parametrize("policy", ["sink:24", "snap:24", "mixed:24:2"])
def test_decoding_far_past_the_budget_stays_finite_and_bounded(model, policy):
    cache = kv.make_cache(policy, model.config)
    result = generate(model, ids(60, seed=7), cache, max_new_tokens=80, eos_ids=set(), prefill_chunk=16,
                      repetition_penalty=1.0, guard=_no_guard())
    assert len(result.ids) == 80
    budget = kv.parse_policy(policy).budget_tokens
    for layer in cache.layers:
        assert layer.seen == 60 + 79  # the last token is never fed back
        full_precision = layer.full_precision_tokens if hasattr(layer, "full_precision_tokens") else layer.get_seq_length()
        assert full_precision <= budget
    assert cache.peak_tokens <= (budget if not policy.startswith("mixed") else 200)


# -- budgets: a property test on the layers themselves -----------------------------------------------------------
@given(
    kind=st.sampled_from(["sink", "snap", "mixed"]),
    budget=st.integers(8, 80),
    pieces=st.lists(st.integers(1, 40), min_size=1, max_size=12),
    seed=st.integers(0, 1000),
)
@settings(max_examples=60, deadline=None)
def test_budgets_are_never_exceeded(kind, budget, pieces, seed):
    policy = {"sink": lambda: SinkPolicy(budget), "snap": lambda: SnapPolicy(budget),
              "mixed": lambda: MixedPolicy(budget, 2)}[kind]()
    layer = policy.new_layer()
    g = torch.Generator().manual_seed(seed)
    heads, q_heads, d = 2, 4, 8
    seen = 0
    for n in pieces:
        stored_before = layer.get_seq_length()
        layer.observe(torch.randn(1, q_heads, min(n, getattr(layer, "window", 1)), d, generator=g))
        keys, values = layer.update(torch.randn(1, heads, n, d, generator=g), torch.randn(1, heads, n, d, generator=g))
        seen += n
        assert keys.shape[-2] == values.shape[-2] == stored_before + n  # this forward sees old + new
        assert layer.seen == seen
        if kind == "mixed":
            assert layer.full_precision_tokens <= budget
            assert layer.get_seq_length() == seen  # nothing is dropped, only demoted
        else:
            assert layer.get_seq_length() == min(seen, budget) if kind == "sink" else layer.get_seq_length() <= budget
        if kind != "sink":
            positions = layer.positions
            assert torch.all(positions[..., 1:] > positions[..., :-1])
            assert int(positions.max()) == seen - 1 and int(positions.min()) >= 0
            recent = min(seen, layer.window)
            assert torch.equal(positions[..., -recent:], torch.arange(seen - recent, seen, dtype=positions.dtype).expand(1, heads, recent))


def test_prefill_in_chunks_keeps_peak_memory_independent_of_prompt_length(model):
    peaks = []
    for length in (200, 400):
        cache = kv.make_cache("snap:32", model.config)
        prefill(model, ids(length), cache, chunk=16)
        peaks.append(cache.peak_bytes)
    assert peaks[0] == peaks[1]
    full = kv.make_cache("full", model.config)
    prefill(model, ids(400), full, chunk=16)
    assert full.peak_bytes > 5 * peaks[1]


# -- state round trip (the prefix cache on disk uses it) ----------------------------------------------------------
@pytest.mark.parametrize("policy", ["full", "quant:4", "sink:40", "snap:40", "mixed:40:2"])
def test_exported_state_restores_an_identical_cache(model, policy):
    tokens = ids(120, seed=8)
    _, cache = chunked_logits(model, tokens, policy)
    restored = kv.import_state(kv.make_cache(policy, model.config), kv.export_state(cache))
    assert restored.stored_bytes() == cache.stored_bytes()
    assert restored.get_seq_length() == cache.get_seq_length() and restored.seen_tokens == 120
    # Continuing from either gives the same logits.
    nxt = torch.tensor([[5, 6, 7]])
    positions = torch.arange(120, 123)[None]
    with torch.inference_mode():
        a = model(input_ids=nxt, position_ids=positions, past_key_values=cache).logits
        b = model(input_ids=nxt, position_ids=positions, past_key_values=restored).logits
    assert torch.equal(a, b)
