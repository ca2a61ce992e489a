"""KV cache policies side by side with `full` and with transformers' own QuantizedCache, in one run.

Sections (each row carries `full`'s figure from the same run as its baseline):
- bytes: KV bytes per token stored by each policy and the ratio to a bf16 `full` cache of the same model (the
  real cache code fed bf16 tensors of the model's shapes, so a float32 CPU run reports what a bf16 run stores).
- ppl: perplexity over the first --ppl-tokens tokens of sense_and_sensibility.txt, fed through the cache in
  chunks of 128 (eviction policies at a 2048-token budget), and its delta vs full.
- needle: a passphrase planted at --depths in haystacks of --needle-lengths tokens cut from moby_dick.txt;
  accuracy = the passphrase appears in a 16-token greedy answer.
- speed: prefill and decode tokens/s at --context tokens (batch 1, the engine's own loop, eager), decode as a
  fraction of the memory-bandwidth limit ((weight bytes + stored KV bytes) / bandwidth per step), peak memory.
- chain: a Chain-of-Agents pass (longread.Reader) over a book excerpt, then a second question over the same
  excerpt: prompt tokens prefilled, prefill seconds (the sum of every call's time to first token) and wall time.
- random8b (GPU): speed and memory of a randomly initialised Llama-3.1-8B-shaped model (speed does not depend
  on the weights).

    .venv/bin/python benchmarks/kv.py --cpu-defaults            # the CPU run of docs/benchmarks.md
    python3 benchmarks/kv.py --model hf:/root/smol/model --device cuda --sections bytes,ppl,needle,speed,chain
    python3 benchmarks/kv.py --device cuda --sections random8b --name kv-gpu-8b
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, SHARED_DATA, machine, write_record  # noqa: E402

import torch  # noqa: E402


def _register_package_without_init() -> None:
    """longread/__init__ loads the whole application (LangGraph, litellm, document loaders); the GPU machine has
    only torch and transformers. The subpackages used here need neither, so where LangGraph is missing the
    package is registered without running its __init__."""
    import importlib.util
    import types

    if "longread" in sys.modules or importlib.util.find_spec("langgraph") is not None:
        return
    package = types.ModuleType("longread")
    package.__path__ = [str(REPO / "longread")]
    sys.modules["longread"] = package


_register_package_without_init()

from longread.backends import kv  # noqa: E402
from longread.backends.local import LocalModel  # noqa: E402
from longread.backends.local.generation import RepetitionGuard, generate, prefill  # noqa: E402

OURS = ["full", "quant:8", "quant:4", "quant:2", "sink:2048", "snap:2048", "mixed:2048:4", "mixed:2048:2"]
THEIRS = ["hf-quanto:4", "hf-quanto:2", "hf-hqq:4", "hf-hqq:2"]
BANDWIDTH = {"H100": 3.35e12, "H200": 4.8e12}  # bytes/s, datasheet
NEEDLE = "The secret passphrase for the lighthouse is {code}."
QUESTION = "What is the secret passphrase for the lighthouse? Answer with the passphrase only."
CODES = ["7319", "4682", "5907", "2841", "8156", "3270", "6493", "1758", "9024", "5361"]
CHAIN_QUESTIONS = ("What does Elinor think of Edward Ferrars?", "Why do the Dashwoods leave Norland?")


# -- caches -------------------------------------------------------------------------------------------------------
def new_cache(policy: str, config: Any) -> Any:
    if policy.startswith("hf-"):
        from transformers import QuantizedCache

        backend, bits = policy[3:].split(":")
        return QuantizedCache(backend=backend, config=config, nbits=int(bits))
    return kv.make_cache(policy, config)


def available(policy: str) -> tuple[bool, str]:
    if not policy.startswith("hf-"):
        return True, ""
    backend = policy[3:].split(":")[0]
    try:
        if backend == "quanto":
            import optimum.quanto  # noqa: F401
        else:
            import hqq  # noqa: F401
        return True, ""
    except Exception as exc:  # noqa: BLE001
        return False, f"{backend} not importable: {exc}"


def stored_bytes(cache: Any) -> int:
    """Our caches count themselves; for transformers' QuantizedCache, every plain tensor reachable from a layer."""
    if isinstance(cache, kv.PolicyCache):
        return cache.stored_bytes()
    seen: set[int] = set()

    def walk(obj: Any, depth: int = 0) -> int:
        if id(obj) in seen or depth > 6:
            return 0
        seen.add(id(obj))
        if type(obj) is torch.Tensor or type(obj) is torch.nn.Parameter:
            return obj.numel() * obj.element_size()
        if isinstance(obj, (list, tuple)):
            return sum(walk(o, depth + 1) for o in obj)
        if isinstance(obj, dict):
            return sum(walk(o, depth + 1) for o in obj.values())
        if hasattr(obj, "__dict__") and not isinstance(obj, type):  # quanto's tensor subclasses keep _data, _scale
            return sum(walk(o, depth + 1) for o in vars(obj).values())
        return 0

    return sum(walk(layer) for layer in cache.layers)


def bytes_per_token(policy: str, config: Any, tokens: int, device: str) -> float:
    """Stored bytes per token after `tokens` tokens of bf16 K/V of this model's shapes, fed in chunks of 128."""
    text = config.get_text_config()
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    kv_heads, q_heads = text.num_key_value_heads, text.num_attention_heads
    layers = text.num_hidden_layers
    cache = new_cache(policy, config)
    g = torch.Generator(device=device).manual_seed(0)
    for lo in range(0, tokens, 128):
        n = min(128, tokens - lo)
        for layer in range(layers):
            k = torch.randn(1, kv_heads, n, head_dim, generator=g, device=device, dtype=torch.bfloat16)
            v = torch.randn(1, kv_heads, n, head_dim, generator=g, device=device, dtype=torch.bfloat16)
            if isinstance(cache, kv.PolicyCache) and cache.wants_queries:
                w = getattr(cache.layers[layer], "window", 32)
                cache.observe(layer, torch.randn(1, q_heads, min(n, w), head_dim, generator=g, device=device,
                                                 dtype=torch.bfloat16))
            cache.update(k, v, layer)
    return stored_bytes(cache) / tokens


# -- helpers ------------------------------------------------------------------------------------------------------
def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def book(data: Path, name: str) -> str:
    path = data / "books" / name
    if not path.is_file():
        sys.exit(f"benchmark needs {path}: not found (pass --data)")
    return path.read_text(encoding="utf-8")


def weight_bytes(model: Any) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())


def bandwidth(device: str) -> float | None:
    if not device.startswith("cuda"):
        return None
    name = torch.cuda.get_device_name()
    return next((bw for key, bw in BANDWIDTH.items() if key in name), None)


def no_guard() -> RepetitionGuard:
    return RepetitionGuard(max_period=0)


# -- sections -----------------------------------------------------------------------------------------------------
def section_bytes(model: Any, policies: list[str], tokens: list[int], device: str) -> list[dict]:
    config = model.config
    base = kv.bf16_bytes_per_token(config)
    rows = []
    for n in tokens:
        for policy in policies:
            per_token = bytes_per_token(policy, config, n, device)
            rows.append({"section": "bytes", "policy": policy, "tokens": n, "bytes_per_token": round(per_token, 1),
                         "baseline_full_bf16_bytes_per_token": base, "ratio_vs_full_bf16": round(base / per_token, 3)})
            print(f"bytes  {policy:14s} {n:6d} tokens {per_token:10.1f} B/token  {base / per_token:5.2f}x", flush=True)
    return rows


@torch.inference_mode()
def perplexity(model: Any, ids: list[int], policy: str, device: str, chunk: int = 128) -> dict:
    cache = new_cache(policy, model.config)
    kv.install_query_hooks(model)
    x = torch.tensor([ids], device=device)
    total, count = 0.0, 0
    started = time.perf_counter()
    for lo in range(0, len(ids), chunk):
        piece = x[:, lo : lo + chunk]
        positions = torch.arange(lo, lo + piece.shape[1], device=device)[None]
        logits = model(input_ids=piece, position_ids=positions, past_key_values=cache).logits[0].float()
        targets = x[0, lo + 1 : lo + 1 + piece.shape[1]]
        total += torch.nn.functional.cross_entropy(logits[: len(targets)], targets, reduction="sum").item()
        count += len(targets)
    sync(device)
    return {"ppl": math.exp(total / count), "nll": total / count, "seconds": time.perf_counter() - started,
            "stored_bytes_per_token": stored_bytes(cache) / len(ids)}


def section_ppl(model: Any, tokenizer: Any, data: Path, policies: list[str], tokens: int, device: str) -> list[dict]:
    ids = tokenizer.encode(book(data, "sense_and_sensibility.txt"), add_special_tokens=False)[:tokens]
    results = {p: perplexity(model, ids, p, device) for p in policies}
    base = results["full"]
    rows = []
    for policy, r in results.items():
        rows.append({"section": "ppl", "policy": policy, "tokens": len(ids), "chunk": 128, "ppl": round(r["ppl"], 4),
                     "baseline_full_ppl": round(base["ppl"], 4), "ppl_delta": round(r["ppl"] - base["ppl"], 4),
                     "nll_delta": round(r["nll"] - base["nll"], 5), "seconds": round(r["seconds"], 2),
                     "measured_stored_bytes_per_token": round(r["stored_bytes_per_token"], 1)})
        print(f"ppl    {policy:14s} {r['ppl']:8.3f}  delta {r['ppl'] - base['ppl']:+8.4f}  {r['seconds']:6.1f}s",
              flush=True)
    return rows


def needle_prompts(local: LocalModel, data: Path, lengths: list[int], depths: list[float]) -> list[tuple]:
    hay = local.tokenizer.encode(book(data, "moby_dick.txt")[20000:])
    prompts = []
    for length in lengths:
        body = length - 120  # chat template, question and answer fit inside `length`
        for i, depth in enumerate(depths):
            code = CODES[i % len(CODES)]
            text = local.tokenizer.decode(hay[:body])
            cut = text.rfind(". ", 0, int(len(text) * depth)) + 2 if depth > 0 else 0
            text = text[:cut] + NEEDLE.format(code=code) + " " + text[cut:]
            messages = [{"role": "system", "content": "You are a careful reader."},
                        {"role": "user", "content": text + "\n\n" + QUESTION}]
            prompts.append((length, depth, code, local.prompt_ids(messages)[1]))
    return prompts


def section_needle(local: LocalModel, data: Path, policies: list[str], lengths: list[int], depths: list[float],
                   device: str, chunk: int = 512) -> list[dict]:
    prompts = needle_prompts(local, data, lengths, depths)
    rows, accuracy = [], {}
    for policy in policies:
        for length in lengths:
            hits = 0
            cases = [p for p in prompts if p[0] == length]
            for _, depth, code, ids in cases:
                result = generate(local.model, ids, new_cache(policy, local.model.config), max_new_tokens=16,
                                  eos_ids=local.eos_ids, prefill_chunk=chunk, repetition_penalty=1.0, guard=no_guard())
                answer = local.hf_tokenizer.decode(result.ids)
                hits += code in answer
                if policy == "full" and depth == depths[len(depths) // 2]:
                    print(f"       answer at depth {depth}: {answer!r}", flush=True)
            accuracy[(policy, length)] = hits / len(cases)
            print(f"needle {policy:14s} {length:6d} tokens  {hits}/{len(cases)}", flush=True)
    for (policy, length), acc in accuracy.items():
        rows.append({"section": "needle", "policy": policy, "haystack_tokens": length, "depths": depths,
                     "prefill_chunk": chunk,
                     "accuracy": acc, "baseline_full_accuracy": accuracy[("full", length)]})
    return rows


def speed(model: Any, policy: str, context: int, decode: int, device: str, chunk: int = 512) -> dict:
    ids = torch.randint(100, 10000, (context,), generator=torch.Generator().manual_seed(0)).tolist()
    weights = weight_bytes(model)
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    cache = new_cache(policy, model.config)
    result = generate(model, ids, cache, max_new_tokens=decode + 1, eos_ids=set(), prefill_chunk=chunk,
                      repetition_penalty=1.0, guard=no_guard())
    sync(device)
    steps = len(result.ids) - 1  # the first token comes from the prefill's logits
    kv_bytes = stored_bytes(cache)
    ms_step = 1000 * result.seconds_decode / steps
    row = {"context": context, "decode_steps": steps, "prefill_tok_s": round(context / result.seconds_prefill, 1),
           "decode_tok_s": round(steps / result.seconds_decode, 2), "ms_per_step": round(ms_step, 2),
           "kv_bytes_end": kv_bytes, "weight_bytes": weights}
    bw = bandwidth(device)
    if bw:
        limit_ms = 1000 * (weights + kv_bytes) / bw
        row.update(bandwidth_limit_ms=round(limit_ms, 3), fraction_of_bandwidth_limit=round(limit_ms / ms_step, 3),
                   peak_gpu_bytes=torch.cuda.max_memory_allocated(),
                   peak_gpu_bytes_above_weights=torch.cuda.max_memory_allocated() - weights)
    if isinstance(cache, kv.PolicyCache):
        row["peak_kv_bytes"] = cache.peak_bytes
    return row


def section_speed(model: Any, policies: list[str], contexts: list[int], decode: int, device: str,
                  label: str = "speed", repeats: int = 3) -> list[dict]:
    """Each policy `repeats` times, interleaved with the others, keeping its fastest decode: eager decoding at
    batch 1 is bound by the host issuing kernels, and one run of a case can be 30% off the next."""
    speed(model, "full", min(contexts), 4, device)  # warm-up: kernels, allocator
    rows = []
    for context in contexts:
        measured: dict[str, dict] = {}
        for _ in range(repeats):
            for p in policies:
                r = speed(model, p, context, decode, device)
                if p not in measured or r["decode_tok_s"] > measured[p]["decode_tok_s"]:
                    measured[p] = r
                measured[p]["repeats"] = repeats
        base = measured["full"]
        for policy, r in measured.items():
            r.update(section=label, policy=policy, baseline_full_decode_tok_s=base["decode_tok_s"],
                     decode_vs_full=round(r["decode_tok_s"] / base["decode_tok_s"], 3),
                     baseline_full_prefill_tok_s=base["prefill_tok_s"])
            if "peak_gpu_bytes_above_weights" in base:
                r["baseline_full_peak_gpu_bytes_above_weights"] = base["peak_gpu_bytes_above_weights"]
            rows.append(r)
            extra = f" {r.get('fraction_of_bandwidth_limit', 0):.2f} of BW limit" if "bandwidth_limit_ms" in r else ""
            print(f"{label:6s} {policy:14s} ctx {context:6d} prefill {r['prefill_tok_s']:9.1f} tok/s  decode "
                  f"{r['decode_tok_s']:7.2f} tok/s ({r['decode_vs_full']:.2f}x full){extra}", flush=True)
    return rows


def chain_pass(model: LocalModel, text: str, question: str, window: int) -> dict:
    """One Chain-of-Agents pass: the worker calls over every segment, then the manager (Reader's calls, minus
    LangGraph, which the GPU machine lacks; benchmarks/orchestration.py measures the graph's own overhead)."""
    from longread.agents import DEFAULT_PROMPTS, CommunicationUnit, Manager, Worker, plan_budget
    from longread.segmenting import segment_text

    budget = plan_budget(model, DEFAULT_PROMPTS, "query", question, window)
    segments = segment_text(text, model.tokenizer, budget.segment_tokens)
    before = dict(vars(model.stats))
    started = time.perf_counter()
    notes = CommunicationUnit()
    worker = Worker(model, DEFAULT_PROMPTS, "query", question, budget)
    for segment in segments:
        notes = worker.read(segment, notes).notes
    Manager(model, DEFAULT_PROMPTS, "query", question, budget).write(notes)
    wall = time.perf_counter() - started
    after = vars(model.stats)
    keys = ("calls", "prefix_hits", "prefill_tokens", "reused_tokens", "seconds_prefill", "seconds_decode")
    return {k: after[k] - before[k] for k in keys} | {"wall": wall, "segments": len(segments)}


def section_chain(local: LocalModel, data: Path, policies: list[str], tokens: int, window: int) -> list[dict]:
    from longread.backends.local.prefix_cache import PrefixCache

    ids = local.tokenizer.encode(book(data, "sense_and_sensibility.txt"))[:tokens]
    text = local.tokenizer.decode(ids)
    rows = []
    for policy in policies:
        model = local.with_kv(policy)
        model.context_window = max(model.context_window, window)
        model.prefix_cache = PrefixCache(max_bytes=8 * 2**30)
        first, second = (chain_pass(model, text, q, window) for q in CHAIN_QUESTIONS)
        rows.append({"section": "chain", "policy": policy, "document_tokens": len(ids), "window": window,
                     "segments": first["segments"], "first_pass": first, "second_pass": second,
                     "prefill_tokens_ratio": round(first["prefill_tokens"] / max(1, second["prefill_tokens"]), 2),
                     "prefill_seconds_ratio": round(first["seconds_prefill"] / max(1e-9, second["seconds_prefill"]), 2),
                     "wall_ratio": round(first["wall"] / second["wall"], 2)})
        print(f"chain  {policy:14s} prefill tokens {first['prefill_tokens']} -> {second['prefill_tokens']}, prefill s "
              f"{first['seconds_prefill']:.2f} -> {second['seconds_prefill']:.2f}, wall {first['wall']:.1f} -> "
              f"{second['wall']:.1f} s", flush=True)
    return rows


def random_8b(device: str) -> Any:
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                         num_key_value_heads=8, head_dim=128, vocab_size=128256, max_position_embeddings=131072,
                         rope_parameters={"rope_type": "default", "rope_theta": 500000.0})
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device(device):
            model = LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(previous)
    return model.eval()


# -- main ---------------------------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="local", help="local, or hf:PATH")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--name", default=None, help="record name (default kv-cpu / kv-gpu)")
    parser.add_argument("--sections", default="bytes,ppl,needle,speed,chain")
    parser.add_argument("--policies", default=",".join(OURS + THEIRS))
    parser.add_argument("--data", type=Path, default=SHARED_DATA)
    parser.add_argument("--ppl-tokens", type=int, default=8192)
    parser.add_argument("--bytes-tokens", default="2048,8192")
    parser.add_argument("--needle-lengths", default="2048,4096,8192")
    parser.add_argument("--depths", default="0,0.11,0.22,0.33,0.44,0.56,0.67,0.78,0.89,1.0")
    parser.add_argument("--needle-chunk", type=int, default=512)
    parser.add_argument("--dtype", default=None, help="cast the model (e.g. float32) before measuring")
    parser.add_argument("--context", default="4096")
    parser.add_argument("--decode", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3, help="speed: runs per policy, interleaved; fastest kept")
    parser.add_argument("--chain-tokens", type=int, default=12000)
    parser.add_argument("--chain-window", type=int, default=4096)
    parser.add_argument("--chain-policies", default="full,quant:4")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--cpu-defaults", action="store_true",
                        help="the CPU grid: needles in 2k haystacks, 2048-token context, 32 decode steps, "
                             "chain over 16k tokens at W=4096")
    parser.add_argument("--append", action="store_true", help="add rows to an existing record instead of replacing")
    args = parser.parse_args()
    if args.cpu_defaults:  # what 2 cores measure in about half an hour: needles in 2k haystacks only, 2k context
        args.needle_lengths, args.context, args.decode = "2048", "2048", 32
        args.chain_tokens, args.chain_window, args.chain_policies = 16000, 4096, "full,quant:4"
    if args.threads:
        torch.set_num_threads(args.threads)
    device = args.device
    if device.startswith("cuda"):
        torch.backends.cuda.enable_cudnn_sdp(False)  # cuDNN attention: ~2 ms of CPU a call (docs/architecture.md)
    sections = args.sections.split(",")
    policies, skipped = [], []
    for p in args.policies.split(","):
        ok, why = available(p)
        (policies if ok else skipped).append(p if ok else {"policy": p, "skipped": why})
    for s in skipped:
        print(f"skipped {s['policy']}: {s['skipped']}", flush=True)
    name = args.name or ("kv-gpu" if device.startswith("cuda") else "kv-cpu")
    rows: list[dict] = [{"section": "skipped", **s} for s in skipped]
    started = time.perf_counter()

    local = None
    if set(sections) - {"random8b"}:
        if args.model == "local":
            local = LocalModel.embedded(device=device, prefix_cache=False)
        else:
            local = LocalModel.from_path(args.model.split(":", 1)[1], device=device, prefix_cache=False)
        model = local.model
        if args.dtype:
            model.to(getattr(torch, args.dtype))
        print(f"model {local.name} {model.dtype} on {device}, {weight_bytes(model) / 1e6:.0f} MB of weights", flush=True)
        if "bytes" in sections:
            rows += section_bytes(model, policies, [int(t) for t in args.bytes_tokens.split(",")], device)
        if "ppl" in sections:
            rows += section_ppl(model, local.hf_tokenizer, args.data, policies, args.ppl_tokens, device)
        if "needle" in sections:
            rows += section_needle(local, args.data, policies, [int(n) for n in args.needle_lengths.split(",")],
                                   [float(d) for d in args.depths.split(",")], device, args.needle_chunk)
        if "speed" in sections:
            rows += section_speed(model, policies, [int(c) for c in args.context.split(",")], args.decode, device,
                                  repeats=args.repeats)
        if "chain" in sections:
            rows += section_chain(local, args.data, args.chain_policies.split(","), args.chain_tokens,
                                  args.chain_window)
    if "random8b" in sections:
        model = random_8b(device)
        ours = [p for p in policies if not p.startswith("hf-quanto")]  # quanto JIT-builds kernels: minutes
        rows += section_speed(model, ours, [int(c) for c in args.context.split(",")], args.decode, device,
                              label="8b", repeats=args.repeats)
        del model

    where = machine()
    if device.startswith("cuda"):
        where = f"{torch.cuda.get_device_name()} (torch {torch.__version__}), host {where}"
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    for row in rows:
        row.setdefault("model", "random Llama-3.1-8B shape" if row.get("section") == "8b" else (local.name if local else ""))
    command = "python " + " ".join([f"benchmarks/kv.py"] + sys.argv[1:])
    import transformers

    meta = {"section": "run", "seconds": round(time.perf_counter() - started, 1), "torch_threads": torch.get_num_threads(),
            "load_average": load, "transformers": transformers.__version__, "torch": torch.__version__,
            "python": platform.python_version()}
    path = REPO / "docs" / "benchmarks" / f"{name}.json"
    if args.append and path.is_file():
        earlier = json.loads(path.read_text())
        rows = earlier["results"] + rows
        command = f"{earlier['command']} ; {command}"
    write_record(name, command, rows + [meta], machine_name=where)
    print(f"wrote {path} in {meta['seconds']} s", flush=True)


if __name__ == "__main__":
    main()
