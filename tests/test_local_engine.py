"""The local engine's speed fixes keep its results: the growing FullLayer, prompts tokenized once per call, loaded
weights reused, OpenMP threads that sleep. Tiny random models and a tokenizer trained in the test: fast."""

from __future__ import annotations

import copy
import io
import os
import subprocess
import sys

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from longread.backends import get_model, kv
from longread.backends.kv import FullLayer, export_state
from longread.backends.local import LocalModel

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


@pytest.fixture(scope="module")
def tokenizer():
    """A byte-level BPE trained on a few sentences, with a chat template: a real HF fast tokenizer, in milliseconds."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    specials = ["<|end|>", "<|system|>", "<|user|>", "<|assistant|>"]
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator(["The lighthouse stood on the point.", "Ada kept the lamp lit every night."], trainer)
    return PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|end|>", chat_template=CHAT_TEMPLATE)


def tiny_llama(vocab_size: int = 128):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=vocab_size, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=512)
    return LlamaForCausalLM(config).eval()


@pytest.fixture(scope="module")
def llama():
    return tiny_llama()


@torch.inference_mode()
def logits_through(model, cache, chunks: list[int], decode_steps: int) -> list[torch.Tensor]:
    """Feeds random ids in the given chunk sizes, then greedy single-token steps; every step's last logits."""
    ids = torch.randint(0, 128, (1, sum(chunks)), generator=torch.Generator().manual_seed(1))
    out, at = [], 0
    for size in chunks:
        step = model(input_ids=ids[:, at : at + size], position_ids=torch.arange(at, at + size)[None],
                     past_key_values=cache)
        out.append(step.logits[0, -1])
        at += size
    for _ in range(decode_steps):
        token = out[-1].argmax().view(1, 1)
        step = model(input_ids=token, position_ids=torch.tensor([[at]]), past_key_values=cache)
        out.append(step.logits[0, -1])
        at += 1
    return out


# -- FullLayer: a buffer with room to spare instead of torch.cat on every step ------------------------------------
@settings(max_examples=12, deadline=None)
@given(chunks=st.lists(st.integers(1, 300), min_size=1, max_size=4), steps=st.integers(0, 12))
def test_full_layer_logits_are_bit_identical_to_transformers_dynamic_cache(llama, chunks, steps):
    from transformers import DynamicCache

    ours = logits_through(llama, kv.make_cache("full", llama.config), chunks, steps)
    theirs = logits_through(llama, DynamicCache(config=llama.config), chunks, steps)
    assert all(torch.equal(a, b) for a, b in zip(ours, theirs))


def test_decode_steps_write_into_the_buffer_instead_of_copying_it(llama):
    cache = kv.make_cache("full", llama.config)
    logits_through(llama, cache, [100], 0)
    layer = cache.layers[0]
    storage = layer.keys.untyped_storage().data_ptr()
    with torch.inference_mode():
        for position in range(100, 110):
            llama(input_ids=torch.tensor([[3]]), position_ids=torch.tensor([[position]]), past_key_values=cache)
    assert layer.get_seq_length() == 110 == layer.seen
    assert layer.keys.untyped_storage().data_ptr() == storage  # no reallocation: one token written per step
    assert layer.stored_bytes() == 2 * layer.keys[..., :110, :].numel() * layer.keys.element_size()


def test_crop_then_continue_matches_a_cache_that_never_saw_the_cropped_tokens(llama):
    layer, fresh = FullLayer(), FullLayer()
    k = torch.randn(1, 2, 40, 16)
    layer.update(k, k + 1)
    layer.crop(-15)
    more = torch.randn(1, 2, 5, 16)
    keys, values = layer.update(more, more + 1)
    fresh.update(k[..., :25, :], k[..., :25, :] + 1)
    want_keys, want_values = fresh.update(more, more + 1)
    assert torch.equal(keys, want_keys) and torch.equal(values, want_values)


def test_snapshots_and_saved_state_hold_only_the_filled_part(llama):
    cache = kv.make_cache("full", llama.config)
    logits_through(llama, cache, [50], 3)
    layer = cache.layers[0]
    assert layer._key_buffer.shape[-2] > 53  # there is spare room ...
    twin = copy.deepcopy(cache)
    assert twin.layers[0].keys.untyped_storage().nbytes() == layer.keys[..., :53, :].contiguous().nbytes  # not copied
    assert torch.equal(twin.layers[0].keys, layer.keys) and twin.layers[0].seen == 53
    buffer = io.BytesIO()
    torch.save(export_state(cache), buffer)
    filled = sum(t.numel() * t.element_size() for lay in cache.layers for t in lay.tensors().values())
    assert filled <= buffer.tell() < filled + 20_000  # not the whole buffers


# -- prompts -------------------------------------------------------------------------------------------------------
def test_a_call_renders_and_tokenizes_its_prompt_once(tokenizer, monkeypatch):
    model = LocalModel(tiny_llama(len(tokenizer)), tokenizer, name="tiny", prefix_cache=False, context_window=512)
    renders = []
    original = tokenizer.apply_chat_template
    monkeypatch.setattr(tokenizer, "apply_chat_template", lambda *a, **k: renders.append(1) or original(*a, **k))
    messages = [{"role": "user", "content": "The lighthouse stood on the point. Who kept the lamp?"}]
    completion = model.complete(messages, 4, window=512, cache_prefix=len("The lighthouse stood on the point."))
    assert model.stats.prompt_renders == 1  # the window check and the run shared one
    once = len(renders)  # (the prefix and the rest are two renders: HFTokenizer.encode_chat)
    fresh = original(messages, tokenize=False, add_generation_prompt=True)
    assert abs(completion.prompt_tokens - len(tokenizer.encode(fresh, add_special_tokens=False))) <= 2
    model.complete([{"role": "user", "content": "Ada kept the lamp lit."}], 4)
    assert model.stats.prompt_renders == 2 and len(renders) > once  # another prompt is rendered anew
    seen = len(renders)
    twin = model.with_kv("quant:4")
    twin.complete(messages, 4, cache_prefix=len("The lighthouse stood on the point."))
    assert len(renders) == seen  # the twin shares the tokenizer, so the tokenized prompts too


def test_a_changed_message_is_never_served_from_the_memo(tokenizer):
    model = LocalModel(tiny_llama(len(tokenizer)), tokenizer, name="tiny", prefix_cache=False)
    messages = [{"role": "user", "content": "Ada kept the lamp lit."}]
    before = model.count_prompt_tokens(messages)
    messages[0]["content"] += " Every night, for forty years, without fail."
    assert model.count_prompt_tokens(messages) > before


# -- loading -------------------------------------------------------------------------------------------------------
def test_a_second_model_on_the_same_folder_reuses_the_loaded_weights(tokenizer, tmp_path):
    tiny_llama(len(tokenizer)).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    first = get_model(f"hf:{tmp_path}", kv="full")
    second = get_model(f"hf:{tmp_path}", kv="quant:4")
    assert second.model is first.model and second.kv == "quant:4"


@pytest.mark.parametrize("given_value, expected", [(None, "PASSIVE"), ("ACTIVE", "ACTIVE")])
def test_openmp_threads_wait_passively_unless_the_user_chose(given_value, expected):
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if given_value:
        env["OMP_WAIT_POLICY"] = given_value
    out = subprocess.run([sys.executable, "-c", "import os, longread._env; print(os.environ['OMP_WAIT_POLICY'])"],
                         env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == expected
