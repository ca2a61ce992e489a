"""The GPU path of the local engine, tested on the CPU (issue 14, item 6): static caches against the dynamic ones,
budgets and positions after eviction, the device-side rules against the host's, continuous batching, and the
batched prefix prefill. Tiny random Llama / Qwen2 models at float32; GPU-only tests skip without CUDA.

Tolerance: a static layer attends over its whole buffer with the unfilled slots masked, and quant/mixed put the
codes before the exact part, so the reductions run over other lengths and orders than the dynamic layers'. At
float32 on these models that moves the logits by about 1e-6; the tests allow ATOL = 1e-4.
"""

from __future__ import annotations

import copy
import threading
from dataclasses import dataclass

import pytest
import torch

from longread.backends import kv
from longread.backends.kv.snap import StaticSnap
from longread.backends.kv.static import StaticPolicyCache, make_static_cache, static_supported
from longread.backends.local import attention
from longread.backends.local.batching import batcher_for
from longread.backends.local.device_rules import DeviceRules
from longread.backends.local.generation import Decoding, RepetitionGuard, generate, prefill
from longread.backends.local.ragged import batched_forward
from longread.backends.local.static_engine import StaticEngine

ATOL = 1e-4
# Small budgets so that every policy evicts, flushes or demotes within a few dozen steps.
POLICIES = ["full", "sink:24", "snap:24", "quant:4", "quant:8", "mixed:32:4", "fp8"]


def small(policy: str):
    """The policy with groups small enough for the tiny tests (quant: 16-token blocks, 8 residual)."""
    parsed = kv.parse_policy(policy)
    if isinstance(parsed, kv.QuantPolicy):
        return kv.QuantPolicy(bits=parsed.bits, group=16, residual=8)
    if isinstance(parsed, kv.MixedPolicy):
        return kv.MixedPolicy(budget=parsed.budget, bits=parsed.bits, group=8)
    return parsed


def tiny(kind: str):
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    shape = dict(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, max_position_embeddings=512)
    if kind == "llama":
        return LlamaForCausalLM(LlamaConfig(head_dim=16, **shape)).eval()
    return Qwen2ForCausalLM(Qwen2Config(**shape)).eval()


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def prepared(kind: str):
    m = tiny(kind)
    attention.install(m)
    kv.install_query_hooks(m)
    return m


@pytest.fixture(scope="module", params=["llama", "qwen2"])
def model(request):
    """Both families (Qwen2 has q/k/v biases): for the logits test; the rest run on Llama only (suite time)."""
    return prepared(request.param)


@pytest.fixture(scope="module")
def llama():
    return prepared("llama")


def ids(n: int, seed: int = 0) -> list[int]:
    return torch.randint(0, 128, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


def dynamic_cache(model, policy, tokens: list[int], chunk: int = 16):
    cache = kv.PolicyCache(policy, model.config)
    logits = prefill(model, tokens, cache, chunk=chunk)
    return cache, logits


@torch.inference_mode()
def static_step(model, cache, token: int, position: int) -> torch.Tensor:
    cache.active = 1
    cache.begin_step()
    out = model(input_ids=torch.tensor([[token]]), position_ids=torch.tensor([[position]]), past_key_values=cache,
                attention_mask=torch.ones(1, 1, 1, 1, dtype=torch.bool), use_cache=True, logits_to_keep=1)
    cache.end_step()
    cache.after_step()
    return out.logits[:, -1, :]


@torch.inference_mode()
def dynamic_step(model, cache, token: int, position: int) -> torch.Tensor:
    out = model(input_ids=torch.tensor([[token]]), position_ids=torch.tensor([[position]]), past_key_values=cache,
                use_cache=True, logits_to_keep=1)
    return out.logits[:, -1, :]


def side_by_side(model, policy, prompt: int, steps: int, seed: int = 0, window: int = 128):
    """Teacher-forced decode of the same tokens through a dynamic cache and its static form."""
    tokens = ids(prompt + steps, seed)
    dynamic, _ = dynamic_cache(model, policy, tokens[:prompt])
    static = make_static_cache(policy, model.config, batch=2, window=window, device="cpu", dtype=torch.float32)
    static.load_row(0, dynamic)
    pairs = []
    for i, token in enumerate(tokens[prompt:]):
        position = prompt + i
        pairs.append((dynamic_step(model, dynamic, token, position), static_step(model, static, token, position)))
    return dynamic, static, pairs


def test_routing_attention_through_the_hook_leaves_ordinary_calls_bit_identical():
    plain, routed = tiny("llama"), prepared("llama")  # same seed, same weights
    assert routed.config._attn_implementation == attention.NAME
    tokens = torch.tensor([ids(50)])
    with torch.inference_mode():
        a = plain(input_ids=tokens, past_key_values=kv.PolicyCache(kv.parse_policy("full"), plain.config)).logits
        b = routed(input_ids=tokens, past_key_values=kv.PolicyCache(kv.parse_policy("full"), routed.config)).logits
    assert torch.equal(a, b)


# -- static against dynamic -------------------------------------------------------------------------------------
@pytest.mark.parametrize("policy", POLICIES)
def test_static_caches_give_the_dynamic_logits_through_evictions_and_flushes(model, policy):
    parsed = small(policy)
    assert static_supported(parsed)
    dynamic, static, pairs = side_by_side(model, parsed, prompt=40, steps=40)
    worst = max((a - b).abs().max().item() for a, b in pairs)
    assert worst < ATOL, f"{policy}: logits differ by {worst}"


@pytest.mark.parametrize("policy", ["full", "sink:24", "snap:24", "quant:4", "mixed:32:4", "fp8"])
def test_static_caches_hold_the_dynamic_positions_after_eviction(llama, policy):
    parsed = small(policy)
    dynamic, static, _ = side_by_side(llama, parsed, prompt=40, steps=30)
    layer = dynamic.layers[0]
    if isinstance(parsed, kv.SinkPolicy):
        expected = torch.tensor(layer.positions())
    elif isinstance(parsed, (kv.SnapPolicy, kv.MixedPolicy)):
        expected = layer.positions[0].cpu()
    elif isinstance(parsed, kv.QuantPolicy):
        exact = layer.keys.shape[-2]
        expected = torch.tensor(list(range(parsed.sinks)) + list(range(layer.seen - exact + parsed.sinks, layer.seen)))
    else:
        expected = torch.arange(layer.seen)
    # (sink's ring keeps them in slot order, which attention does not see: compare the sets, sorted)
    assert torch.equal(static.row_positions(0).long().sort().values, expected.long().sort().values)
    assert static.host_seen[0] == layer.seen == 70


def test_wrong_slot_positions_would_be_caught(llama):
    """The same check as test_kv_local's: a static sink cache whose ring is shifted gives other logits."""
    parsed = small("sink:24")
    tokens = ids(60)
    dynamic, _ = dynamic_cache(llama, parsed, tokens[:50])
    static = make_static_cache(parsed, llama.config, batch=1, window=128, device="cpu", dtype=torch.float32)
    static.load_row(0, dynamic)
    good = static_step(llama, copy.deepcopy(static), tokens[50], 50)
    for index in range(static.n_layers):  # the ring rotated by one slot: keys at the wrong positions' slots
        ring = slice(parsed.sinks, static.slots)
        static.keys[index][0, :, ring] = static.keys[index][0, :, ring].roll(1, dims=1)
        static.values[index][0, :, ring] = static.values[index][0, :, ring].roll(1, dims=1)
    shuffled = static_step(llama, static, tokens[50], 50)
    expected = dynamic_step(llama, dynamic, tokens[50], 50)
    assert (good - expected).abs().max() < ATOL
    assert (shuffled - expected).abs().max() > 100 * ATOL


@pytest.mark.parametrize("policy", ["sink:24", "snap:24", "quant:4", "mixed:32:4"])
def test_static_caches_keep_their_budgets_at_every_step(llama, policy):
    parsed = small(policy)
    tokens = ids(100, 3)
    dynamic, _ = dynamic_cache(llama, parsed, tokens[:30])
    static = make_static_cache(parsed, llama.config, batch=1, window=128, device="cpu", dtype=torch.float32)
    static.load_row(0, dynamic)
    allocated = static.stored_bytes()
    budget = getattr(parsed, "budget", None)
    for i, token in enumerate(tokens[30:]):
        static_step(llama, static, token, 30 + i)
        filled = static.host_length[0]
        if isinstance(parsed, kv.SinkPolicy):
            filled = min(static.host_seen[0], parsed.budget)
            assert filled <= budget
        elif isinstance(parsed, kv.QuantPolicy):
            assert filled < parsed.sinks + parsed.residual + parsed.group
            assert static.host_low[0] + filled == static.host_seen[0]  # nothing dropped, only quantized
        else:
            assert filled <= budget
        assert static.stored_bytes() == allocated  # the buffers never grow
    assert int(static.length[0]) == static.host_length[0] and int(static.seen[0]) == static.host_seen[0]


# -- a new policy is one module: its static form is found on the policy, by inheritance --------------------------
class KeyNormPolicy(kv.SnapPolicy):
    """K-norm (Devoto et al. 2024, "A Simple and Effective L2 Norm-Based Strategy for KV Cache Compression"): the
    keys of smallest L2 norm draw the most attention, so the largest go first. Only the score is new: the eviction,
    dynamic and static, is snap's."""

    @property
    def name(self) -> str:
        return f"knorm:{self.budget}"

    def score(self, queries, query_positions, keys, positions):
        return -keys.float().norm(dim=-1)


class EagerOnlySnap(kv.SnapPolicy):
    """A subclass whose layers would keep other tokens than its parent's opts out of the parent's form."""

    def static_form(self):
        return None


class StaticWholeWindow(StaticPolicyCache):
    """The static form of KeepAllPolicy: every token of the window, in order (what the policy's layers keep)."""

    def main_slots(self) -> int:
        return self.window

    def row_positions(self, row: int, index: int = 0) -> torch.Tensor:
        return torch.arange(self.host_length[row])


@dataclass(frozen=True)
class KeepAllPolicy(kv.KVPolicy):
    """A policy written outside the package, with its static form beside it: no table to edit."""

    name = "keep-all"

    def new_layer(self):
        return kv.FullLayer(self)

    def static_form(self):
        return StaticWholeWindow


def test_a_new_score_runs_on_its_parents_static_form_and_keeps_the_same_tokens_as_its_dynamic_layers(llama):
    policy = KeyNormPolicy(budget=24)
    assert static_supported(policy)
    dynamic, static, pairs = side_by_side(llama, policy, prompt=40, steps=30)
    assert type(static) is StaticSnap
    assert max((a - b).abs().max().item() for a, b in pairs) < ATOL
    kept = static.row_positions(0).long().sort().values
    assert torch.equal(kept, dynamic.layers[0].positions[0].cpu().long().sort().values)
    # Both forms asked the new score: they keep other tokens than snap's own.
    _, snap, _ = side_by_side(llama, kv.SnapPolicy(budget=24), prompt=40, steps=30)
    assert not torch.equal(kept, snap.row_positions(0).long().sort().values)


def test_a_policy_defined_outside_the_package_brings_its_own_static_form(llama):
    policy = KeepAllPolicy()
    assert static_supported(policy)
    dynamic, static, pairs = side_by_side(llama, policy, prompt=40, steps=20)
    assert type(static) is StaticWholeWindow
    assert max((a - b).abs().max().item() for a, b in pairs) < ATOL
    assert torch.equal(static.row_positions(0), torch.arange(60))


def test_a_policy_without_a_static_form_runs_eagerly(tiny_local):
    from longread.backends.local import LocalModel

    net, tokenizer = tiny_local
    engine = lambda policy: LocalModel(net, tokenizer, name="tiny", kv=policy, engine="static",  # noqa: E731
                                       prefix_cache=False).resolved_engine()
    assert engine(KeyNormPolicy(budget=24)) == "static"  # inherited
    assert not static_supported(EagerOnlySnap(budget=24))
    assert engine(EagerOnlySnap(budget=24)) == "eager"
    with pytest.raises(ValueError, match="no static form"):
        make_static_cache(EagerOnlySnap(budget=24), net.config, batch=1, window=64, device="cpu",
                          dtype=torch.float32)


# -- the device rules against the host's ------------------------------------------------------------------------
def recorded_logits(steps: int, vocab: int = 128, seed: int = 0) -> torch.Tensor:
    """Logits that make a greedy decoder loop after a while (a period-3 cycle), with an EOS late."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(steps, vocab, generator=g)
    logits[:, 9] -= 100.0  # the EOS token, unless a test raises it
    for i in range(steps):
        if i >= 10:
            logits[i, [5, 6, 7][i % 3]] += 50.0
    return logits


@pytest.mark.parametrize("case", ["repetition", "eos", "length"])
def test_device_rules_stop_where_the_host_rules_stop(case):
    guard = RepetitionGuard()
    logits = recorded_logits(80)
    eos = {9}
    if case == "eos":
        logits[14, 9] += 1000.0
    penalty = 1.0 if case == "repetition" else 1.1
    cap = 80 if case != "length" else 13
    host = Decoding(cap, eos, repetition_penalty=penalty, guard=guard)
    for row in logits:
        if host.step(row[None]) is None:
            break
    rules = DeviceRules(2, 128, "cpu", guard, sync_every=80)
    mirror = Decoding(cap, eos, repetition_penalty=penalty, guard=guard)
    first = mirror.step(logits[0:1])
    rules.set_eos(eos)
    rules.load(0, mirror, first, 0)
    rules.done[1] = True
    rules.step_index.zero_()
    for row in logits[1:]:
        rules.accept(rules.choose(row[None].expand(1, -1).contiguous(), sampling=False))
    tokens = rules.out[0].tolist()
    for token in tokens:
        if not mirror.accept(token):
            break
    assert mirror.out == host.out and mirror.finish == host.finish and mirror.decoded == host.decoded
    if case == "repetition":  # the trimmed repeats were decoded all the same (EngineStats.decoded_tokens)
        assert host.decoded > len(host.out)
    assert {"repetition": "repetition", "eos": "stop", "length": "length"}[case] == host.finish
    device = {1: "stop", 2: "repetition", 3: "length"}[int(rules.finish[0])]
    assert device == host.finish


# -- the static engine against the eager loop ---------------------------------------------------------------------
@pytest.mark.parametrize("policy", ["full", "sink:24", "snap:24", "quant:4", "fp8"])
def test_the_static_engine_writes_the_eager_loops_tokens(llama, policy):
    parsed = small(policy)
    prompt = ids(30, 5)
    eos: set[int] = set()
    eager = generate(llama, prompt, kv.PolicyCache(parsed, llama.config), max_new_tokens=40, eos_ids=eos,
                     prefill_chunk=16)
    engine = StaticEngine(llama, parsed, batch=2, window=128, sync_every=16, graphs=False)
    cache = kv.PolicyCache(parsed, llama.config)
    decoding = Decoding(40, eos)
    token = decoding.step(prefill(llama, prompt, cache, chunk=16))
    engine.add(decoding, cache, token, len(prompt))
    while engine.rows:
        engine.run_block()
    assert decoding.out == eager.ids and decoding.finish == eager.finish_reason
    assert decoding.decoded == eager.decoded_tokens


# -- batching -----------------------------------------------------------------------------------------------------
def test_a_batched_forward_gives_each_sequence_its_own_logits(llama):
    caches, alone, tokens, positions = [], [], [], []
    for seed, (policy, n) in enumerate([("full", 20), ("sink:24", 37), ("snap:24", 45)]):
        prompt = ids(n, seed)
        cache, _ = dynamic_cache(llama, kv.parse_policy(policy), prompt)
        twin = copy.deepcopy(cache)
        alone.append(dynamic_step(llama, twin, 7, n))
        caches.append(cache)
        tokens.append([7])
        positions.append(n)
    together = batched_forward(llama, caches, tokens, positions)
    for i, logits in enumerate(alone):
        assert (together[i : i + 1] - logits).abs().max() < ATOL


@pytest.mark.parametrize("engine", ["eager", "static"])
def test_each_sequence_of_a_batch_writes_its_unbatched_output(llama, engine):
    """Continuous batching: 3 concurrent calls (different lengths, policies, caps) each get the greedy output
    they get alone; the batcher ran steps with more than one of them."""
    jobs = [("full", 20, 30), ("sink:24", 41, 12), ("snap:24", 33, 25)]
    if engine == "static":
        jobs = [("full", 20, 30), ("full", 41, 12), ("full", 33, 25)]  # one static engine per policy
    expected = []
    for seed, (policy, n, cap) in enumerate(jobs):
        out = generate(llama, ids(n, seed), kv.PolicyCache(small(policy), llama.config), max_new_tokens=cap,
                       eos_ids=set(), prefill_chunk=16)
        expected.append(out.ids)
    from longread.backends.local.batching import Batcher, Request

    batcher = Batcher(llama, max_batch=4)
    results: list = [None] * len(jobs)
    barrier = threading.Barrier(len(jobs))

    def call(i: int, policy: str, n: int, cap: int) -> None:
        parsed = small(policy)
        request = Request(lambda: (kv.PolicyCache(parsed, llama.config), ids(n, i), 0), Decoding(cap, set()),
                          parsed, prefill_chunk=16, engine=engine, window=128)
        barrier.wait()
        results[i] = batcher.submit(request).ids

    threads = [threading.Thread(target=call, args=(i, *job)) for i, job in enumerate(jobs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert results == expected
    if engine == "eager":
        assert batcher.peak_batch >= 2


def test_one_batcher_per_loaded_model(llama):
    assert batcher_for(llama) is batcher_for(llama)
    assert batcher_for(llama) is not batcher_for(tiny("llama"))


# -- GPU only -----------------------------------------------------------------------------------------------------
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@cuda
@pytest.mark.parametrize("bits", [4, 8])
def test_the_fused_kernel_matches_the_reference_attention(bits):
    from longread.backends.kv import quant_attention

    torch.manual_seed(0)
    device = "cuda"
    b, kv_heads, q_heads, d = 2, 2, 8, 64
    reference, fused = quant_attention.self_check(b, kv_heads, q_heads, d, bits, device)
    assert (reference - fused).abs().max().item() < 2e-2


@cuda
def test_graph_replay_gives_the_eager_static_steps_tokens():
    m = tiny("llama").to("cuda")
    parsed = small("full")
    prompt = ids(30, 5)
    outs = []
    for graphs in (False, True):
        engine = StaticEngine(m, parsed, batch=2, window=128, sync_every=8, graphs=graphs)
        cache = kv.PolicyCache(parsed, m.config)
        decoding = Decoding(24, set(), device="cuda")
        token = decoding.step(prefill(m, prompt, cache, chunk=16))
        engine.add(decoding, cache, token, len(prompt))
        while engine.rows:
            engine.run_block()
        outs.append(decoding.out)
        assert graphs is False or engine.graphs
    assert outs[0] == outs[1]


# -- prefix prefill ahead of the chain ----------------------------------------------------------------------------
SEGMENTS = [
    "Part one. The mill at Dunmore burned in the winter of 1841; the miller, Tobias Kell, rebuilt it in stone.",
    "Part two. Kell's daughter Agnes kept the ledgers and lent money to half the parish at no interest at all.",
    "Part three. When the river flooded in 1852 the stone mill was the only building left standing there.",
]
HEADING = "Text of part:\n"


def worker_messages(segment: str, question: str):
    content = HEADING + segment + "\n\nNotes so far: none.\n\nQuestion: " + question + "\nAnswer briefly."
    return [{"role": "system", "content": "You read one part of a long text and take notes."},
            {"role": "user", "content": content}], len(HEADING) + len(segment)


@pytest.fixture(scope="module")
def tiny_local():
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from longread.backends.local.weights import embedded_model_dir

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(embedded_model_dir()))
    except Exception as exc:  # noqa: BLE001
        pytest.skip(f"needs the embedded llama's tokenizer: {exc}")
    torch.manual_seed(0)
    net = LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=96,
                                       num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                       head_dim=16, max_position_embeddings=2048)).eval()
    return net, tokenizer


@pytest.mark.parametrize("policy", ["full", "snap:24"])
def test_prefix_prefill_ahead_is_counted_and_gives_the_same_answers(tiny_local, policy):
    from longread.backends.local import LocalModel
    from longread.backends.local.prefix_cache import PrefixCache

    net, tokenizer = tiny_local
    make = lambda: LocalModel(net, tokenizer, name="tiny", kv=policy, prefill_chunk=8,  # noqa: E731
                              prefix_cache=PrefixCache())
    ahead, plain = make(), make()
    prompts = [worker_messages(s, "Who rebuilt the mill?") for s in SEGMENTS]
    prefixes = [len(ahead.prompt_ids(m, p)[0]) for m, p in prompts]
    assert ahead.prefill_prefixes(prompts, batch=2) == sum(prefixes)
    assert (ahead.stats.prefix_misses, ahead.stats.prefix_hits, ahead.stats.prefill_tokens) == (3, 0, sum(prefixes))
    assert ahead.prefill_prefixes(prompts) == 0  # all cached: nothing prefilled twice
    replies = [ahead.complete(m, 8, cache_prefix=p) for m, p in prompts]
    assert ahead.stats.prefix_hits == 3 and ahead.stats.prefix_misses == 3
    assert [c.cached_prompt_tokens for c in replies] == prefixes
    # The batched prefill leaves the state each call's own prefill leaves: the same greedy replies.
    assert [c.text for c in replies] == [plain.complete(m, 8, cache_prefix=p).text for m, p in prompts]


def test_the_chain_prefills_every_workers_prefix_ahead_where_the_model_does():
    """workflows/chain.py hands the model every segment's worker prompt and prefix before the first worker; the
    prefixes are those the workers then mark (a MockModel recording both, routed by role)."""
    from dataclasses import dataclass, field

    from longread import Reader
    from longread.testing import MockModel

    @dataclass
    class Warming(MockModel):
        ahead: list = field(default_factory=list)

        def prefill_ahead(self, prompts):
            self.ahead.extend((m[-1]["content"][:p], len(self.calls)) for m, p in prompts)
            return 0

        def _complete(self, messages, max_new_tokens, temperature, prompt_tokens, cache_prefix, tag=None, **kw):
            self.prefixes.append(messages[-1]["content"][:cache_prefix] if tag and tag.agent == "worker" else None)
            return super()._complete(messages, max_new_tokens, temperature, prompt_tokens, cache_prefix, tag)

        prefixes: list = field(default_factory=list)

    text = "\n\n".join(f"Paragraph {i}. The harbour master painted boat {i} at dawn and wrote it down. " * 3
                       for i in range(30))
    model = Warming()
    result = Reader(text, strategy="chain", model=model, window=1024).ask("Which boat was painted?")
    assert len(model.ahead) == result.segments > 1
    assert all(before == 0 for _, before in model.ahead)  # all of it before the first call
    assert [p for p, _ in model.ahead] == [p for p in model.prefixes if p is not None]


def test_serve_lets_as_many_requests_run_as_the_model_batches():
    pytest.importorskip("fastapi")
    from longread.serve.app import create_app
    from longread.testing import MockModel

    batching = MockModel()
    batching.max_batch = 4
    assert create_app(batching, name="m").state.engine._slots._value == 4
    assert create_app(MockModel(), name="m").state.engine._slots._value == 1
    assert create_app(batching, name="m", concurrency=2).state.engine._slots._value == 2
