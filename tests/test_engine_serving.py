"""The local engine at serving grade, on the CPU (issue 21): the memory sizing rule and budget, rows grown on demand
and shared across windows, refusal of calls that cannot fit, failures that stay one call's, concurrent calls
(threads and asyncio tasks) decoding in shared steps, logits for the sampled position only, and eval cases served
by one model in one process.

Tiny random Llama models with the embedded model's tokenizer, float32. The GPU budget is simulated: a `Meter`
whose `allocated()` is the weights plus the static engines' rows (what the device would report for them), so the
admission rules run as they do on a card."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from longread.backends import kv
from longread.backends.local import memory
from longread.backends.local.batching import batcher_for, model_lock
from longread.backends.local.generation import prefill
from longread.backends.local.static_engine import StaticEngine
from longread.errors import GPUMemoryExceeded, ModelError

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from longread.backends.local.weights import embedded_model_dir

    try:
        return AutoTokenizer.from_pretrained(str(embedded_model_dir()))
    except Exception as exc:  # noqa: BLE001
        pytest.skip(f"needs the embedded llama's tokenizer: {exc}")


def tiny_net(vocab: int, seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    net = LlamaForCausalLM(LlamaConfig(vocab_size=vocab, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                                       num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                                       max_position_embeddings=8192)).eval()
    net.generation_config.eos_token_id = None  # random weights: decode to the cap (or the guard)
    return net


@pytest.fixture
def net(tokenizer):
    return tiny_net(len(tokenizer))  # a fresh model per test: a batcher (and its engines) per model


def local(net, tokenizer, **options):
    from longread.backends.local import LocalModel

    options.setdefault("prefix_cache", False)
    options.setdefault("prefill_chunk", 16)
    model = LocalModel(net, tokenizer, name="tiny", **options)
    model.eos_ids = set()
    return model


def messages(i: int, words: int = 12):
    text = " ".join(f"word{(i * 7 + j) % 50}" for j in range(words))
    return [{"role": "user", "content": f"Question {i}: {text}"}]


def simulated_budget(net, total: int, fraction: float = 1.0) -> memory.MemoryBudget:
    """A card of `total` bytes holding the weights and the static engines' rows."""
    weights = memory.weight_bytes(net)
    batcher = batcher_for(net)
    return memory.MemoryBudget(memory.Meter(total, lambda: weights + sum(e.stored_bytes() for e in batcher.engines),
                                            "a simulated card"), fraction)


def row_bytes(net, policy: str, window: int) -> int:
    return memory.static_row_bytes(kv.parse_policy(policy), net.config, window, torch.float32,
                                   net.config.vocab_size)


def concurrently(calls, hold=None, expect_waiting: int | None = None):
    """Runs the callables in threads; with `hold` (a model), all of them queue while its lock is held, so they are
    admitted in one round."""
    results: list = [None] * len(calls)

    def run(i, call):
        try:
            results[i] = call()
        except Exception as exc:  # noqa: BLE001 - the test looks at it
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(calls)]
    lock = model_lock(hold) if hold is not None else None
    if lock is not None:
        lock.acquire()
    try:
        for t in threads:
            t.start()
        if lock is not None:
            batcher = batcher_for(hold)
            deadline = time.monotonic() + 60
            while batcher.waiting < (expect_waiting or len(calls)) and time.monotonic() < deadline:
                time.sleep(0.01)
    finally:
        if lock is not None:
            lock.release()
    for t in threads:
        t.join(timeout=300)
    return results


# -- the sizing rule --------------------------------------------------------------------------------------------
def test_a_full_row_is_its_keys_values_mask_and_rules(net):
    layers, kv_heads, head_dim, window, vocab = 2, 2, 16, 1024, net.config.vocab_size
    cache = 2 * layers * kv_heads * window * head_dim * 4  # float32 keys and values
    rules = vocab + 8 * 16 + 8 * (96 + 16) + 4 * 2 + 8 * 4 + 1  # seen mask, out, hist, penalties, counters, finish
    assert row_bytes(net, "full", window) == pytest.approx(cache + window + rules, rel=0.01)
    # an engine of k rows holds k rows
    engine = StaticEngine(net, kv.parse_policy("full"), batch=4, window=window, rows=3)
    held = engine.cache.stored_bytes() + engine.cache.mask.numel() + sum(
        t.numel() * t.element_size() for t in engine.rules.row_tensors())
    assert held == 3 * row_bytes(net, "full", window) == engine.stored_bytes()


@pytest.mark.parametrize("policy", ["quant:4", "fp8", "snap:64"])
def test_compressed_rows_cost_less_than_full(net, policy):
    assert row_bytes(net, policy, 4096) < row_bytes(net, "full", 4096)


@pytest.mark.parametrize("policy", ["full", "quant:4", "fp8", "snap:64", "sink:64"])
def test_the_prefill_estimate_bounds_what_a_prefill_holds(net, policy):
    parsed = kv.parse_policy(policy)
    cache = kv.make_cache(parsed, net.config)
    ids = torch.randint(0, 500, (700,), generator=torch.Generator().manual_seed(0)).tolist()
    prefill(net, ids, cache, chunk=64)
    estimate = memory.dynamic_kv_bytes(parsed, net.config, 700, torch.float32, chunk=64)
    assert cache.peak_bytes <= estimate
    if policy == "full":  # exact: the buffers as grown, and one layer's old buffer while it grows
        buffers = sum(t.numel() * t.element_size() for layer in cache.layers
                      for t in (layer._key_buffer, layer._value_buffer))
        assert estimate == buffers + buffers // len(cache.layers)


@given(total=st.integers(10**8, 2 * 10**11), weights=st.integers(0, 2 * 10**10), row=st.integers(1, 10**10),
       transient=st.integers(0, 10**10), fraction=st.floats(0.1, 1.0))
@settings(max_examples=200, deadline=None)
def test_agents_that_fit_fit_and_one_more_does_not(total, weights, row, transient, fraction):
    cost = memory.CallCost(row, transient)
    n = memory.agents_that_fit(total, fraction=fraction, weights=weights, cost=cost)
    limit = int(total * fraction)
    assert weights + transient + n * row <= limit or n == 0
    assert weights + transient + (n + 1) * row > limit


def test_rows_are_sized_in_steps_coarser_past_8k(net, tokenizer):
    model = local(net, tokenizer)
    assert [model._static_window(n) for n in (10, 1024, 1025, 3000, 8192, 8193, 33000)] == [
        1024, 1024, 2048, 4096, 8192, 16384, 40960]


def test_gpu_memory_is_a_fraction_of_the_card(monkeypatch):
    assert memory.gpu_memory_fraction() == 0.9
    monkeypatch.setenv("LONGREAD_GPU_MEMORY", "0.5")
    assert memory.gpu_memory_fraction() == 0.5
    assert memory.gpu_memory_fraction(0.25) == 0.25
    for bad in ("0", "1.5", "half"):
        with pytest.raises(ValueError, match="--gpu-memory takes a fraction"):
            memory.gpu_memory_fraction(bad)


# -- the budget -------------------------------------------------------------------------------------------------
def test_rows_grow_on_demand_and_calls_wait_for_room(net, tokenizer):
    """A budget of three rows and a prefill: the engine starts with one row and grows to two (old and new rows are
    both held while it grows), not to three or four; of three concurrent static calls the third waits for a row, and
    all write their lone outputs."""
    alone = [local(net, tokenizer, max_batch=1).complete(messages(i), 6).text for i in range(3)]
    weights = memory.weight_bytes(net)
    model = local(net, tokenizer, engine="static", max_batch=4)
    prefill_bytes = model.memory_cost(len(model.prompt_ids(messages(0))[1]), 6).prefill
    model._memory_budget = simulated_budget(net, weights + 3 * row_bytes(net, "full", 1024) + prefill_bytes)
    batcher = batcher_for(net)
    seen: list[int] = []
    original = StaticEngine.run_block

    def watched(engine):
        seen.append(engine.capacity)
        return original(engine)

    StaticEngine.run_block = watched
    try:
        texts = concurrently([lambda i=i: model.complete(messages(i), 6).text for i in range(3)], hold=net)
    finally:
        StaticEngine.run_block = original
    assert texts == alone
    assert max(seen) == 2 and len(batcher.engines) == 1
    assert batcher.peak_batch == 2


def test_a_call_that_cannot_fit_alone_is_refused_before_the_model_runs(net, tokenizer):
    model = local(net, tokenizer, engine="static")
    weights = memory.weight_bytes(net)
    model._memory_budget = simulated_budget(net, weights + row_bytes(net, "full", 1024) // 2)
    forwards = []
    original = net.forward
    net.forward = lambda *a, **k: forwards.append(1) or original(*a, **k)
    with pytest.raises(GPUMemoryExceeded) as raised:
        model.complete(messages(0), 6)
    message = str(raised.value)
    prompt = model.count_prompt_tokens(messages(0))
    cost = model.memory_cost(prompt, 6)
    for size in (cost.row, cost.prefill, weights):  # the sizes, named
        assert memory.gb(size) in message
    assert f"{prompt} prompt tokens + 6 new tokens" in message and "--gpu-memory" in message and "--kv full" in message
    assert forwards == []
    # the same document fits under a compressed policy's smaller row where full's does not
    assert row_bytes(net, "fp8", 1024) < row_bytes(net, "full", 1024) // 2


def test_calls_of_several_windows_share_one_engine_and_idle_engines_make_room(net, tokenizer):
    model = local(net, tokenizer, engine="static", max_batch=4)
    batcher = batcher_for(net)
    weights = memory.weight_bytes(net)
    long_window = row_bytes(net, "full", 2048)
    model._memory_budget = simulated_budget(net, weights + 2 * long_window + model.memory_cost(1200, 6).prefill)
    long_text = [{"role": "user", "content": " ".join(f"w{j % 90}" for j in range(360))}]
    assert 1024 < model.count_prompt_tokens(long_text) < 1300  # a 2048-token row
    results = concurrently([lambda: model.complete(long_text, 6), lambda: model.complete(messages(1), 6)],
                           hold=net)
    assert all(not isinstance(r, Exception) for r in results)
    assert [e.window for e in batcher.engines] == [2048]  # the short call took a row of the long call's engine
    # A call of another policy needs its own engine: the idle full engine is freed to make room for it.
    fp8 = model.with_kv("fp8")
    fp8._memory_budget = simulated_budget(net, weights + row_bytes(net, "fp8", 2048) + fp8.memory_cost(1200, 6).prefill
                                          + 1000)
    fp8.complete(long_text, 6)
    assert [(e.policy.name, e.window) for e in batcher.engines] == [("fp8", 2048)]


# -- failures ---------------------------------------------------------------------------------------------------
def failing_forward(net, when, error):
    original = net.forward

    def forward(*args, **kwargs):
        if when(kwargs):
            raise error
        return original(*args, **kwargs)

    net.forward = forward


@pytest.mark.parametrize("engine", ["eager", "static"])
def test_out_of_memory_in_one_prefill_is_that_calls_error_only(net, tokenizer, engine):
    alone = [local(net, tokenizer, max_batch=1).complete(messages(i), 5).text for i in (1, 2)]
    oom = torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
    long_prompt = [{"role": "user", "content": " ".join(f"w{j % 90}" for j in range(400))}]
    # Only a forward over many tokens fails: the long prompt's chunks (batched or alone), never the short ones'.
    failing_forward(net, _long, oom)
    model = local(net, tokenizer, engine=engine, max_batch=4)
    results = concurrently([lambda: model.complete(long_prompt, 5), lambda: model.complete(messages(1), 5),
                            lambda: model.complete(messages(2), 5)], hold=net)
    assert isinstance(results[0], ModelError) and "out of GPU memory while prefilling" in str(results[0])
    assert [r.text for r in results[1:]] == alone
    assert model.complete(messages(2), 5).text == alone[1]  # the batcher goes on


def _long(kwargs) -> bool:
    """A forward at a position past 100: only the long prompt gets there."""
    return int(kwargs["position_ids"].max()) > 100


@pytest.mark.parametrize("engine", ["eager", "static"])
def test_a_failed_decode_step_fails_its_calls_and_the_batcher_goes_on(net, tokenizer, engine):
    model = local(net, tokenizer, engine=engine, max_batch=4)
    expected = local(net, tokenizer, max_batch=1).complete(messages(3), 5).text
    state = {"armed": True}

    def once(kwargs):
        if state["armed"] and kwargs["input_ids"].shape[1] == 1:  # the first decode step
            state["armed"] = False
            return True
        return False

    failing_forward(net, once, RuntimeError("an illegal instruction in a kernel"))
    results = concurrently([lambda: model.complete(messages(1), 5), lambda: model.complete(messages(2), 5)],
                           hold=net)
    assert all(isinstance(r, ModelError) and "failed in" in str(r) and "illegal instruction" in str(r)
               for r in results)
    assert model.complete(messages(3), 5).text == expected
    if engine == "static":
        assert all(e.idle for e in batcher_for(net).engines)


# -- concurrent calls decode together -----------------------------------------------------------------------------
def test_concurrent_calls_share_decode_steps(net, tokenizer):
    """N calls from N threads: one admission round, one prefill forward per shared chunk, and as many decode steps
    as the longest call needs, not their sum; each call writes what it writes alone."""
    n = 4
    alone = [local(net, tokenizer, max_batch=1).complete(messages(i, 40), 8) for i in range(n)]
    base = local(net, tokenizer, max_batch=n)
    twins = [base.with_kv("full") for _ in range(n)]  # separate counters
    batcher = batcher_for(net)
    results = concurrently([lambda i=i: twins[i].complete(messages(i, 40), 8) for i in range(n)], hold=net)
    assert [r.text for r in results] == [a.text for a in alone]
    decoded = [t.stats.decoded_tokens for t in twins]
    assert batcher.steps == max(decoded) - 1 < sum(d - 1 for d in decoded)
    assert batcher.peak_batch == n
    assert batcher.prefill_forwards >= 2  # the prompts' whole 16-token chunks ran n at a time


def test_concurrent_asyncio_tasks_share_decode_steps(net, tokenizer):
    n = 5
    alone = [local(net, tokenizer, max_batch=1).complete(messages(i), 6).text for i in range(n)]
    model = local(net, tokenizer, max_batch=8)
    batcher = batcher_for(net)

    async def main():
        return await asyncio.gather(*(model.acomplete(messages(i), 6) for i in range(n)))

    lock = model_lock(net)
    lock.acquire()  # every task queues before the first round
    box: list = []
    runner = threading.Thread(target=lambda: box.append(asyncio.run(main())))
    runner.start()
    deadline = time.monotonic() + 60
    while batcher.waiting < n and time.monotonic() < deadline:
        time.sleep(0.01)
    lock.release()
    runner.join(timeout=300)
    assert [c.text for c in box[0]] == alone
    assert batcher.peak_batch == n and batcher.steps <= 5


def test_prefill_keeps_logits_of_the_last_position_only(net, tokenizer):
    shapes = []
    original = net.forward

    def forward(*args, **kwargs):
        out = original(*args, **kwargs)
        shapes.append((kwargs["input_ids"].shape[1], out.logits.shape[1]))
        return out

    net.forward = forward
    model = local(net, tokenizer, max_batch=2)
    concurrently([lambda: model.complete(messages(0, 60), 3), lambda: model.complete(messages(1, 60), 3)], hold=net)
    assert max(fed for fed, _ in shapes) >= 16  # whole chunks went through
    assert all(kept == 1 for _, kept in shapes)


def test_eval_cases_run_at_once_in_one_process_through_the_batcher(net, tokenizer, tmp_path):
    from longread.eval.cases import Case
    from longread.eval.runner import Setting, run_eval

    model = local(net, tokenizer, max_batch=4)
    cases = [Case(id=f"c{i}", dataset="d", question=f"What is word{i}?", answers=(f"word{i}",),
                  text=f"Some text about word{i} and more words. " * 8) for i in range(3)]
    lock = model_lock(net)
    lock.acquire()
    box: list = []
    runner = threading.Thread(target=lambda: box.append(run_eval(
        cases, [Setting("truncate", "hf:tiny", 512)], tmp_path / "r.jsonl", jobs=3,
        model_factory=lambda name, **options: model)))
    runner.start()
    batcher = batcher_for(net)
    deadline = time.monotonic() + 120
    while batcher.waiting < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    lock.release()
    runner.join(timeout=300)
    assert box[0].ran == 3 and box[0].failed == 0
    assert batcher.peak_batch == 3


@pytest.mark.parametrize("policy", ["full", "quant:4", "fp8", "snap:24"])
def test_an_engine_grown_under_a_live_row_decodes_what_a_large_one_does(policy):
    """grow() copies the live rows' buffers, counters, host mirrors and device rules: a row that joins after the
    growth and the row that lived through it write what they write in an engine that never grew."""
    from longread.backends.local import attention

    net = tiny_net(128)
    attention.install(net)
    parsed = kv.parse_policy(policy)
    if isinstance(parsed, kv.QuantPolicy):
        parsed = kv.QuantPolicy(bits=4, group=16, residual=8)

    def schedule(rows: int | None, grow: bool) -> list[list[int]]:
        engine = StaticEngine(net, parsed, batch=4, window=256, sync_every=8, rows=rows)
        decodings = []
        for seed in (1, 2):
            prompt = torch.randint(0, 128, (40 + 9 * seed,), generator=torch.Generator().manual_seed(seed)).tolist()
            cache = kv.PolicyCache(parsed, net.config)
            from longread.backends.local.generation import Decoding

            decoding = Decoding(30, set())
            token = decoding.step(prefill(net, prompt, cache, chunk=16))
            decodings.append((decoding, cache, token, len(prompt)))
        engine.add(*decodings[0])
        engine.run_block()
        if grow:
            assert engine.capacity == 1 and engine.free == 0
            engine.grow(2)
        engine.add(*decodings[1])
        while engine.rows:
            engine.run_block()
        return [d.out for d, *_ in decodings]

    assert schedule(1, grow=True) == schedule(None, grow=False)
