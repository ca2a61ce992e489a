"""The local engine's GPU path against today's eager loop and transformers' StaticCache + CUDA graph (issue 14).

Sections (all side by side in one run, on one machine):
- decode: tokens/s of one sequence at 4k/16k/64k contexts for full, quant:4, quant:8, fp8, sink, snap: the eager
  engine (generation.generate: host rules every token), the static engine (static caches, device rules, one CUDA
  graph per step, a host read every 16 steps), and for `full` transformers' StaticCache with one captured decode
  step. The fraction of the bandwidth limit is (weight bytes + KV bytes the policy stores) / bandwidth / step time,
  the bandwidth being the card's (benchmarks/_cards.py: its datasheet figure by name, and a measured copy beside
  it); every row records the peak GPU memory allocated while it ran.
  The caches are filled with random keys and values (each policy's own update rule applied to them), which
  costs the same per decode step as a real prompt's and spares a 64k-token prefill per policy.
- batch: aggregate tokens/s at batch 1, 4, 16 (full, 4k): static engine, StaticCache + graph, and the eager
  engine (one call after the other: it has no batching).
- chain: a whole Chain-of-Agents question (worker calls over every segment, then the manager: Worker.read and
  Manager.write with their sampling, penalty and guard) over a 100k-token document at --window 8192: the eager
  engine, the static engine with each worker prefilling its own segment prefix, and the static engine with the
  prefixes prefilled in batches ahead of the chain; then a second question (every prefix reused).

Random weights decode garbage, so EOS is off and the guard cannot fire (min span over the cap), but it runs.

    python3 benchmarks/engine.py --device cuda                     # the H200 run (docs/benchmarks.md)
    python3 benchmarks/engine.py --cpu                             # a dry run at tiny sizes
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import sys
import time
import traceback
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _cards import card  # noqa: E402
from _common import REPO, SHARED_DATA, machine, write_record  # noqa: E402

import torch  # noqa: E402

from longread.backends import kv  # noqa: E402
from longread.backends.local.generation import Decoding, RepetitionGuard, generate  # noqa: E402
from longread.backends.local.static_engine import StaticEngine  # noqa: E402

BANDWIDTH = 4.8e12  # bytes/s: replaced in main() by the card's (an H200's datasheet figure until then)
MEASURED_BANDWIDTH: float | None = None
NO_LOOP = RepetitionGuard(min_span=400)  # runs every step, never fires within the 32-256 tokens measured
SHAPES = {
    "8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
               num_key_value_heads=8, head_dim=128, vocab_size=128256),
    "smollm2": dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                    num_key_value_heads=3, head_dim=64, vocab_size=49152, tie_word_embeddings=True),
    "tiny": dict(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, head_dim=16, vocab_size=512),
}
LOG: list[dict] = []


def say(row: dict) -> None:
    LOG.append(row)
    print(json.dumps(row), flush=True)


def random_model(shape: str, device: str, dtype: torch.dtype, vocab: int | None = None) -> Any:
    from transformers import LlamaConfig, LlamaForCausalLM

    options = dict(SHAPES[shape])
    if vocab:
        options["vocab_size"] = vocab
    config = LlamaConfig(max_position_embeddings=131072, rope_parameters={"rope_type": "default",
                         "rope_theta": 500000.0}, **options)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(previous)
    with torch.no_grad():
        for p in model.parameters():  # small weights: keep the activations finite through 32 random layers
            p.normal_(0, 0.02)
    model.generation_config.eos_token_id = None
    return model.eval()


def weight_bytes(model: Any) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())


def sync(device: Any) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def policy_of(name: str) -> Any:
    return kv.parse_policy(name)


@torch.inference_mode()
def filled_cache(model: Any, policy: Any, context: int, seed: int = 0) -> Any:
    """A dynamic cache of `policy` after `context` tokens of random keys and values (its own update rule)."""
    text = model.config
    cache = kv.PolicyCache(policy, text)
    g = torch.Generator(device=model.device).manual_seed(seed)
    shape = (1, text.num_key_value_heads, context, text.head_dim)
    for index, layer in enumerate(cache.layers):
        keys = torch.randn(shape, generator=g, device=model.device, dtype=model.dtype)
        values = torch.randn(shape, generator=g, device=model.device, dtype=model.dtype)
        layer.update(keys, values)
    return cache


def limit_ms(model: Any, kv_bytes: int, batch: int = 1, bandwidth: float | None = None) -> float:
    return (weight_bytes(model) + batch * kv_bytes) / (bandwidth or BANDWIDTH) * 1e3


def peak_reset() -> None:
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()


def peak_bytes() -> int | None:
    return int(torch.cuda.max_memory_allocated()) if torch.cuda.is_available() else None


def eager_decode(model: Any, cache: Any, context: int, steps: int) -> float:
    """Seconds per token of today's loop (host penalty, guard and stops each token)."""
    result = generate(model, [1], cache, max_new_tokens=steps + 1, eos_ids=set(), start_position=context,
                      guard=NO_LOOP)
    sync(model.device)
    return result.seconds_decode / max(1, len(result.ids) - 1)


def static_decode(model: Any, policy: Any, caches: list[Any], context: int, steps: int) -> tuple[float, Any]:
    """Seconds per step of the static engine over len(caches) rows (the engine is built and captured first)."""
    window = -(-(context + steps + 64) // 128) * 128
    engine = StaticEngine(model, policy, batch=len(caches), window=window, guard=NO_LOOP)
    decodings = []
    for cache in caches:
        d = Decoding(steps + 1, set(), guard=NO_LOOP, device=model.device)
        d.accept(1)
        engine.add(d, cache, 1, context)
        decodings.append(d)
    engine.warm()  # the graph is captured outside the timed steps
    sync(model.device)
    started = time.perf_counter()
    while engine.rows:
        engine.run_block()
    sync(model.device)
    seconds = time.perf_counter() - started
    produced = sum(len(d.out) - 1 for d in decodings)
    del engine
    return seconds / max(1, produced / len(caches)), produced


@torch.inference_mode()
def hf_graph_decode(model: Any, context: int, steps: int, batch: int = 1) -> float:
    """transformers' StaticCache and one CUDA graph of the decode step (greedy on the device, no host rules)."""
    from transformers import StaticCache

    device = model.device
    cache = StaticCache(config=model.config, max_cache_len=context + steps + 8)
    ids = torch.ones(batch, 1, dtype=torch.long, device=device)
    pos = torch.zeros(batch, 1, dtype=torch.long, device=device)
    cpos = torch.zeros(1, dtype=torch.long, device=device)
    model(input_ids=ids, position_ids=pos, cache_position=cpos, past_key_values=cache, use_cache=True)
    for layer in cache.layers:  # the context: random keys and values, as the other engines get
        layer.keys[:, :, :context].normal_()
        layer.values[:, :, :context].normal_()
    pos.fill_(context)
    cpos.fill_(context)

    def step() -> None:
        out = model(input_ids=ids, position_ids=pos, cache_position=cpos, past_key_values=cache, use_cache=True,
                    logits_to_keep=1)
        ids.copy_(out.logits[:, -1].argmax(-1, keepdim=True))
        pos.add_(1)
        cpos.add_(1)

    if device.type != "cuda":
        started = time.perf_counter()
        for _ in range(steps):
            step()
        return (time.perf_counter() - started) / steps
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(2):
            step()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step()
    pos.fill_(context)
    cpos.fill_(context)
    torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(steps):
        graph.replay()
    torch.cuda.synchronize()
    return (time.perf_counter() - started) / steps


def guarded(label: str, fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001 - one failed engine must not lose the run's other figures
        traceback.print_exc()
        say({"error": label, "detail": f"{type(exc).__name__}: {exc}"})
        return None


def row(shape, engine, policy, batch, context, seconds, model, kv_bytes, section="decode") -> dict:
    limit = limit_ms(model, kv_bytes, batch)
    out = {"section": section, "shape": shape, "engine": engine, "policy": policy,
           "batch": batch, "context": context, "ms_per_step": round(seconds * 1e3, 3),
           "decode_tok_s": round(batch / seconds, 1), "bandwidth_bytes_s": BANDWIDTH,
           "bandwidth_limit_ms": round(limit, 3), "fraction_of_bandwidth_limit": round(limit / (seconds * 1e3), 3),
           "kv_bytes_per_sequence": kv_bytes, "peak_gpu_bytes": peak_bytes()}
    if MEASURED_BANDWIDTH:
        measured = limit_ms(model, kv_bytes, batch, MEASURED_BANDWIDTH)
        out["fraction_of_measured_copy_bandwidth"] = round(measured / (seconds * 1e3), 3)
    return out


def section_decode(shape: str, model: Any, contexts: list[int], policies: list[str], steps: int,
                   engines: list[str]) -> list[dict]:
    rows = []
    for context in contexts:
        full: dict[str, float] = {}
        for name in policies:
            policy = policy_of(name)
            base = filled_cache(model, policy, context)
            kv_bytes = base.stored_bytes()
            for engine in engines:
                if engine == "hf-static-graph" and name != "full":
                    continue
                peak_reset()
                if engine == "eager":
                    seconds = guarded(f"eager {name} {context}", eager_decode, model, copy.deepcopy(base), context,
                                      steps)
                elif engine == "static":
                    out = guarded(f"static {name} {context}", static_decode, model, policy, [copy.deepcopy(base)],
                                  context, steps)
                    seconds = out[0] if out else None
                else:
                    seconds = guarded(f"hf {context}", hf_graph_decode, model, context, steps)
                if seconds is None:
                    continue
                r = row(shape, engine, name, 1, context, seconds, model, kv_bytes)
                if name == "full":
                    full[engine] = r["decode_tok_s"]
                if engine in full:
                    r["decode_vs_full"] = round(r["decode_tok_s"] / full[engine], 3)
                say(r)
                rows.append(r)
            del base
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
    return rows


def section_batch(shape: str, model: Any, context: int, batches: list[int], steps: int) -> list[dict]:
    rows = []
    policy = policy_of("full")
    base = filled_cache(model, policy, context)
    kv_bytes = base.stored_bytes()
    single: dict[str, float] = {}
    eager = guarded("eager batch", eager_decode, model, copy.deepcopy(base), context, steps)
    for batch in batches:
        results = {}
        peak_reset()
        if eager:
            results["eager"] = eager * batch  # one call after the other
        out = guarded(f"static batch {batch}", static_decode, model, policy,
                      [copy.deepcopy(base) for _ in range(batch)], context, steps)
        if out:
            results["static"] = out[0]
        hf = guarded(f"hf batch {batch}", hf_graph_decode, model, context, steps, batch)
        if hf:
            results["hf-static-graph"] = hf
        for engine, seconds in results.items():
            r = row(shape, engine, "full", batch, context, seconds, model, kv_bytes, section="batch")
            if engine == "eager":
                r["decode_tok_s"] = round(1 / eager, 1)  # aggregate = one sequence's rate
                r["note"] = "no batching: calls run one after the other"
            single.setdefault(engine, r["decode_tok_s"])
            r["aggregate_vs_batch1"] = round(r["decode_tok_s"] / single[engine], 2)
            r["decode_vs_full"] = 1.0
            say(r)
            rows.append(r)
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return rows


# -- the chain ----------------------------------------------------------------------------------------------------
def chain_pass(model: Any, text: str, question: str, window: int, ahead: bool) -> dict:
    from longread.agents import DEFAULT_PROMPTS, CommunicationUnit, Manager, Worker, plan_budget
    from longread.segmenting import segment_text

    budget = plan_budget(model, DEFAULT_PROMPTS, "query", question, window)
    segments = segment_text(text, model.tokenizer, budget.segment_tokens)
    before = dict(vars(model.stats))
    started = time.perf_counter()
    worker = Worker(model, DEFAULT_PROMPTS, "query", question, budget)
    if ahead:
        model.prefill_prefixes([worker.messages(s, CommunicationUnit()) for s in segments])
    ahead_s = time.perf_counter() - started
    notes = CommunicationUnit()
    written = 0
    for segment in segments:
        step = worker.read(segment, notes)
        notes = step.notes
        written += step.completion.completion_tokens
    Manager(model, DEFAULT_PROMPTS, "query", question, budget).write(notes)
    sync(model.device)
    wall = time.perf_counter() - started
    after = vars(model.stats)
    keys = ("calls", "prefix_hits", "prefix_misses", "prefill_tokens", "reused_tokens", "seconds_prefill",
            "seconds_decode", "decoded_tokens")
    out = {k: round(after[k] - before[k], 3) for k in keys}
    return out | {"wall_s": round(wall, 2), "prefill_ahead_s": round(ahead_s, 2), "segments": len(segments),
                  "worker_tokens": written, "notes_cap": budget.notes_tokens}


def section_chain(shape: str, device: str, dtype: torch.dtype, tokenizer_dir: Path, book: Path, tokens: int,
                  window: int, runs: list[str], eager_limit_s: float) -> list[dict]:
    from transformers import AutoTokenizer

    from longread.backends.local import LocalModel
    from longread.backends.local.prefix_cache import PrefixCache

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    net = random_model(shape, device, dtype, vocab=len(tokenizer))
    rows = []
    questions = ("What does Ahab want?", "Who is Queequeg?")
    for run in runs:
        engine, ahead = {"eager": ("eager", False), "static-sequential": ("static", False),
                         "static-batched": ("static", True)}[run]
        model = LocalModel(net, tokenizer, name=f"random-{shape}", kv="full", context_window=131072,
                           prefix_cache=PrefixCache(max_bytes=64 * 2**30), engine=engine,
                           max_batch=1 if engine == "eager" else 16)  # eager: today's loop, generate()
        model.eos_ids = set()
        ids = model.tokenizer.encode(book.read_text(encoding="utf-8"))[:tokens]
        text = model.tokenizer.decode(ids)
        import longread.backends.local.engine as engine_module

        engine_module.RepetitionGuard = lambda: NO_LOOP  # runs, never fires under 256 tokens
        passes = []
        for q in questions if run == "static-batched" else questions[:1]:  # (device time: one question each)
            passes.append(guarded(f"chain {run}", chain_pass, model, text, q, window, ahead))
            if passes[-1] and passes[-1]["wall_s"] > eager_limit_s:
                break
        r = {"section": "chain", "shape": shape, "engine": run, "policy": "full", "batch": 1, "document_tokens": len(ids),
             "window": window, "first_question": passes[0], "second_question": passes[1] if len(passes) > 1 else None}
        say(r)
        rows.append(r)
        del model
        gc.collect()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--cpu", action="store_true", help="dry run: tiny shapes on the CPU")
    parser.add_argument("--sections", default="decode,batch,chain")
    parser.add_argument("--shapes", default="8b,smollm2")
    parser.add_argument("--contexts", default="4096,16384,65536")
    parser.add_argument("--policies", default="full,quant:4,quant:8,fp8,sink:2048,snap:2048")
    parser.add_argument("--engines", default="eager,static,hf-static-graph")
    parser.add_argument("--batches", default="1,4,16")
    parser.add_argument("--steps", type=int, default=64)
    parser.add_argument("--chain-runs", default="static-batched,static-sequential,eager")
    parser.add_argument("--chain-tokens", type=int, default=100_000)
    parser.add_argument("--chain-window", type=int, default=8192)
    parser.add_argument("--eager-limit", type=float, default=400.0)
    parser.add_argument("--tokenizer", type=Path, default=None)
    parser.add_argument("--book", type=Path, default=SHARED_DATA / "books" / "moby_dick.txt")
    parser.add_argument("--name", default="engine-gpu")
    parser.add_argument("--log", type=Path, default=None, help="also write the rows here as they come")
    parser.add_argument("--bandwidth", type=float, default=None,
                        help="bytes/s of the card's memory (default: its datasheet figure by name, else measured)")
    parser.add_argument("--no-measure-bandwidth", action="store_true", help="skip the 2 GiB copy that measures it")
    args = parser.parse_args()
    import signal

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a `timeout` still writes what was measured
    if args.cpu:
        args.device, args.shapes, args.contexts, args.steps = "cpu", "tiny", "256,1024", 12
        args.policies = "full,quant:4,fp8,sink:64,snap:64"
        args.batches, args.chain_tokens, args.chain_window = "1,4", 3000, 1024
        args.name = args.name if args.name != "engine-gpu" else "engine-cpu-dry-run"
    device = args.device
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    global BANDWIDTH, MEASURED_BANDWIDTH
    gpu = None
    if device.startswith("cuda"):
        torch.backends.cuda.enable_cudnn_sdp(False)  # docs: the cuDNN backend costs 1.5-2 ms of host time a call
        gpu = card(device, measure=not args.no_measure_bandwidth)
        MEASURED_BANDWIDTH = gpu["measured_bytes_s"]
        BANDWIDTH = args.bandwidth or gpu["bandwidth_bytes_s"]
        print(json.dumps({"card": gpu, "bandwidth_used": BANDWIDTH}), flush=True)
    elif args.bandwidth:
        BANDWIDTH = args.bandwidth
    sections = args.sections.split(",")
    tokenizer = args.tokenizer
    if tokenizer is None and "chain" in sections:
        from longread.backends.local.weights import embedded_model_dir

        tokenizer = embedded_model_dir()
    rows: list[dict] = []
    started = time.time()
    try:
        for shape in args.shapes.split(","):
            if "decode" in sections or "batch" in sections:
                model = random_model(shape, device, dtype)
                if "decode" in sections:
                    rows += section_decode(shape, model, [int(c) for c in args.contexts.split(",")],
                                           args.policies.split(","), args.steps, args.engines.split(","))
                if "batch" in sections and shape != "smollm2":
                    rows += section_batch(shape, model, int(args.contexts.split(",")[0]),
                                          [int(b) for b in args.batches.split(",")], args.steps)
                del model
                gc.collect()
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
        if "chain" in sections:
            shape = args.shapes.split(",")[0]
            rows += section_chain(shape, device, dtype, tokenizer, args.book, args.chain_tokens, args.chain_window,
                                  args.chain_runs.split(","), args.eager_limit)
    finally:
        name = torch.cuda.get_device_name() if torch.cuda.is_available() and device.startswith("cuda") else machine()
        command = "python3 benchmarks/engine.py " + " ".join(sys.argv[1:])
        if gpu is not None:
            rows.insert(0, {"section": "card", **gpu, "bandwidth_used": BANDWIDTH})
        path = write_record(args.name, command, rows, f"{name}; {machine()}")
        if args.log:
            args.log.write_text(json.dumps(LOG, indent=1))
        print(f"wrote {path} ({len(rows)} rows, {time.time() - started:.0f} s)")


if __name__ == "__main__":
    main()
