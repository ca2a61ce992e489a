"""Issue 21's GPU checks and figures in one run (about 3 to 5 minutes on an H100 or H200; no weights, no data).

    python3 benchmarks/engine_gpu_checks.py --out OUT_DIR            # everything
    python3 benchmarks/engine_gpu_checks.py --out OUT_DIR --quick    # checks, decode at 4k/16k, no chain

Needs torch with CUDA, Triton and transformers (>= 5.23, as the project: carry the wheel where the machine has an
older one); no other project dependency. Writes OUT_DIR/engine-gpu-checks.json after every section (a run cut short
keeps what it measured) and prints a short table last.

1. checks (correctness of every GPU path against its reference, fresh random inputs each run, never zeros):
   the decode kernels (codes at 2/4/8 bits, fp8, the dense split kernel with NaN past each row's count, the merge)
   against dequantize-then-SDPA in float32; the fp8 write kernel against kv/fp8.quantize_fp8 (exact codes); CUDA
   graph replay against eager static steps for every policy; a graph captured while another row is live, and an
   engine grown while a row is live, against the same schedule without them; a call refused by the memory budget
   before the model runs; an out-of-memory prefill failing its own call while a concurrent call finishes.
2. decode: ms per token of the static engine at batch 1, Llama-3.1-8B shapes with random bf16 weights, for `full`,
   `quant:4` and `fp8` at 4k, 16k and 64k tokens of context (and the reference attention path at 16k), with the
   share of the bandwidth limit ((weights + KV read) / the card's datasheet bandwidth, and / a measured copy's), the
   peak GPU memory, and a kernel profile of one `full` step (kernel count, top kernels by time).
3. batch: aggregate tokens/s of `full` at 4k, batch 16 against batch 1.
4. chain: a synthetic 100,000-token question through the batcher, 15 calls of 6,650-token prompts writing 256
   tokens each, then a manager call: all 15 submitted at once (what independent workers allow) against one after
   the other. Random weights decode to the cap (EOS off, the guard set so that it never fires).
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import os
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

import engine as bench  # noqa: E402  (benchmarks/engine.py: the random model, filled caches, the decode timer)
from _cards import card  # noqa: E402
from longread.backends import kv  # noqa: E402
from longread.backends.kv import fp8_attention, quant_attention  # noqa: E402
from longread.backends.local import memory  # noqa: E402
from longread.backends.local.batching import Batcher, Request  # noqa: E402
from longread.backends.local.generation import Decoding, prefill  # noqa: E402
from longread.backends.local.static_engine import StaticEngine  # noqa: E402

RESULT: dict[str, Any] = {"sections": {}, "errors": []}
OUT: Path = Path(".")
DEVICE = "cuda"  # "cpu" with --cpu: a dry run of the script's logic at tiny sizes (kernels under TRITON_INTERPRET=1)
DTYPE = torch.bfloat16
SHAPE = "8b"
# (kv heads, query heads, head dim, capacity) of the kernel checks: Llama-3.1-8B's heads on the GPU
HEADS = (8, 32, 128, 4096)


def sync() -> None:
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def reset_peak() -> None:
    if DEVICE == "cuda":
        torch.cuda.reset_peak_memory_stats()


def peak() -> int | None:
    return int(torch.cuda.max_memory_allocated()) if DEVICE == "cuda" else None


def save() -> None:
    (OUT / "engine-gpu-checks.json").write_text(json.dumps(RESULT, indent=1, default=str))


def record(section: str, row: dict) -> None:
    RESULT["sections"].setdefault(section, []).append(row)
    print(json.dumps({"section": section, **row}, default=str), flush=True)


def guarded(section: str, label: str, fn: Callable, *args, **kwargs) -> Any:
    started = time.perf_counter()
    try:
        out = fn(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001 - one failure must not lose the other figures
        traceback.print_exc()
        record(section, {"check": label, "error": f"{type(exc).__name__}: {exc}"[:2000], "passed": False})
        RESULT["errors"].append(label)
        out = None
    finally:
        sync()
    if isinstance(out, dict):
        out.setdefault("seconds", round(time.perf_counter() - started, 2))
        record(section, out)
    return out


def fresh_seed() -> int:
    seed = int.from_bytes(os.urandom(4), "little")
    torch.manual_seed(seed)
    return seed


def relative(reference: torch.Tensor, out: torch.Tensor) -> float:
    if not torch.isfinite(out).all():
        return float("inf")
    return float((reference.float() - out.float()).abs().max() / reference.float().abs().max())


# -- 1. checks ------------------------------------------------------------------------------------------------------
def check_codes(bits: int, group: int, value_group: int | None) -> dict:
    seed = fresh_seed()
    kv_heads, q_heads, d, capacity = HEADS
    reference, fused = quant_attention.self_check(2, kv_heads, q_heads, d, bits, DEVICE, dtype=DTYPE,
                                                  tokens=capacity * 3 // 4, group=group, value_group=value_group,
                                                  capacity=capacity)
    error = relative(reference, fused)
    return {"check": f"codes kernel, {bits} bits, key group {group}, value group {value_group or 128}",
            "relative_error": error, "passed": error < 2e-2, "seed": seed}


def check_fp8_attention() -> dict:
    seed = fresh_seed()
    kv_heads, q_heads, d, capacity = HEADS
    reference, kernel = fp8_attention.self_check(2, kv_heads, q_heads, d, DEVICE, dtype=DTYPE, capacity=capacity)
    error = relative(reference, kernel)
    return {"check": "fp8 attention kernel", "relative_error": error, "passed": error < 2e-2, "seed": seed}


def check_dense() -> dict:
    import torch.nn.functional as F

    seed = fresh_seed()
    kv_heads, q_heads, d, capacity = HEADS
    n = 3
    counts = torch.tensor([capacity - 5, 1, capacity * 3 // 4 + 1], device=DEVICE)
    q = torch.randn(n, q_heads, 1, d, device=DEVICE, dtype=DTYPE)
    keys = torch.randn(n, kv_heads, capacity, d, device=DEVICE, dtype=DTYPE)
    values = torch.randn(n, kv_heads, capacity, d, device=DEVICE, dtype=DTYPE)
    for row, c in enumerate(counts.tolist()):
        keys[row, :, c:] = float("nan")
        values[row, :, c:] = float("nan")
    out = quant_attention.dense_attention(q, keys, values, counts, d ** -0.5)
    mask = torch.arange(capacity, device=DEVICE)[None] < counts[:, None]
    reference = F.scaled_dot_product_attention(q.float(), keys.nan_to_num().float(), values.nan_to_num().float(),
                                               attn_mask=mask[:, None, None, :], scale=d ** -0.5,
                                               enable_gqa=True).transpose(1, 2)
    error = relative(reference, out)
    return {"check": "dense split kernel (NaN past each row's count)", "relative_error": error,
            "passed": error < 2e-2, "seed": seed}


def check_merge() -> dict:
    seed = fresh_seed()
    kv_heads, q_heads, d, capacity = HEADS
    q = torch.randn(2, q_heads, 1, d, device=DEVICE, dtype=DTYPE)
    parts = [quant_attention.dense_partials(q, torch.randn(2, kv_heads, capacity, d, device=DEVICE, dtype=DTYPE),
                                            torch.randn(2, kv_heads, capacity, d, device=DEVICE, dtype=DTYPE),
                                            torch.tensor([capacity, 7], device=DEVICE), 0.1, tag=f"merge{i}")
             for i in range(2)]
    error = relative(quant_attention.merge_reference(parts, q_heads, torch.float32),
                     quant_attention.merge(parts, q_heads, torch.float32))
    return {"check": "merge kernel", "relative_error": error, "passed": error < 1e-5, "seed": seed}


def check_fp8_write() -> dict:
    from longread.backends.kv.fp8 import quantize_fp8

    seed = fresh_seed()
    n, heads, slots, d = 4, HEADS[0], 64, HEADS[2]
    keys = torch.randn(n, heads, 1, d, device=DEVICE, dtype=DTYPE) * 5
    values = torch.randn(n, heads, 1, d, device=DEVICE, dtype=DTYPE)
    slot = torch.tensor([0, 13, 40, slots - 1], device=DEVICE)
    poison = lambda shape, dtype, v: torch.full(shape, v, dtype=dtype, device=DEVICE)  # noqa: E731
    k_codes, v_codes = poison((n, heads, slots, d), torch.uint8, 7), poison((n, heads, slots, d), torch.uint8, 7)
    k_scale, v_scale = poison((n, heads, slots), torch.float16, 3.0), poison((n, heads, slots), torch.float16, 3.0)
    fp8_attention.fp8_write(keys, values, slot, k_codes, k_scale, v_codes, v_scale)
    mismatched, untouched = 0, True
    for written, scales, states in ((k_codes, k_scale, keys), (v_codes, v_scale, values)):
        codes, scale = quantize_fp8(states)
        for row in range(n):
            s = int(slot[row])
            mismatched += int((written[row, :, s] != codes[row, :, 0]).sum())
            mismatched += int((scales[row, :, s] != scale[row, :, 0]).sum())
            others = [i for i in range(slots) if i != s]
            untouched &= bool((written[row, :, others] == 7).all() and (scales[row, :, others] == 3.0).all())
    exact = mismatched == 0 or DEVICE == "cpu"  # Triton's interpreter drops the carry of its float8 rounding
    return {"check": "fp8 write kernel: codes and scales equal to quantize_fp8's", "mismatched": mismatched,
            "other_slots_untouched": untouched, "passed": exact and untouched, "seed": seed}


def tiny_model(head_dim: int = 32) -> Any:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=512, hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                                         num_attention_heads=8, num_key_value_heads=2, head_dim=head_dim,
                                         max_position_embeddings=4096)).eval().to(DEVICE, DTYPE)
    model.generation_config.eos_token_id = None
    return model


def small_policy(policy: str) -> Any:
    parsed = kv.parse_policy(policy)
    if isinstance(parsed, kv.QuantPolicy):
        return kv.QuantPolicy(bits=parsed.bits, group=32, residual=8)
    if isinstance(parsed, kv.MixedPolicy):
        return kv.MixedPolicy(budget=parsed.budget, bits=parsed.bits, group=32)
    return parsed


def run_schedule(model: Any, policy: Any, graphs: bool, grow: bool = False, second_after: int = 2) -> list:
    """Row A decodes `second_after` blocks alone, then row B joins (captured at batch 2 with A live; with `grow`, the
    engine starts with one row and grows to two while A is live). Returns both rows' tokens."""
    engine = StaticEngine(model, policy, batch=4, window=768, sync_every=8, graphs=graphs, rows=1 if grow else 4)
    rows = []
    for seed in (1, 2):
        prompt = torch.randint(0, 512, (300 + 37 * seed,), generator=torch.Generator().manual_seed(seed)).tolist()
        cache = kv.PolicyCache(policy, model.config)
        decoding = Decoding(60 if DEVICE == "cuda" else 20, set(), device=DEVICE, guard=bench.NO_LOOP)
        token = decoding.step(prefill(model, prompt, cache, chunk=64))
        rows.append((decoding, cache, token, len(prompt)))
    a, b = rows
    engine.add(a[0], a[1], a[2], a[3])
    for _ in range(second_after):
        engine.run_block()
    if grow:
        engine.grow(2)
    engine.add(b[0], b[1], b[2], b[3])
    while engine.rows:
        engine.run_block()
    return [a[0].out, b[0].out, len(engine.graphs)]


def check_graphs(model: Any, policy: str) -> dict:
    parsed = small_policy(policy)
    eager, graphed, grown = (run_schedule(model, parsed, False), run_schedule(model, parsed, True),
                             run_schedule(model, parsed, True, grow=True))
    same = eager[:2] == graphed[:2] == grown[:2]
    return {"check": f"graph replay (a graph captured while another row is live, an engine grown under a live row) "
                     f"against eager static steps: {policy}", "graphs_captured": graphed[2], "same_tokens": same,
            "tokens": [len(t) for t in eager[:2]], "passed": same and (graphed[2] > 0 or DEVICE == "cpu")}


def check_refusal(model: Any) -> dict:
    from longread.errors import GPUMemoryExceeded

    meter = (memory.cuda_meter("cuda") if DEVICE == "cuda" else
             memory.Meter(10 * memory.weight_bytes(model), lambda: memory.weight_bytes(model), "a simulated card"))
    budget = memory.MemoryBudget(meter, 0.1 if DEVICE == "cpu" else 0.02)  # less than the weights alone
    batcher = Batcher(model, max_batch=2)
    calls = []
    original = model.forward
    model.forward = lambda *a, **k: calls.append(1) or original(*a, **k)
    try:
        request = Request(lambda: (kv.PolicyCache(kv.parse_policy("full"), model.config), [1] * 4000, 0),
                          Decoding(8, set(), device=DEVICE), kv.parse_policy("full"), engine="static", window=8192,
                          tokens=4008, prefill_bytes=1, budget=budget)
        batcher._static.clear()
        try:
            batcher.submit(request)
            error = None
        except GPUMemoryExceeded as exc:
            error = str(exc)
    finally:
        model.forward = original
    return {"check": "a call the budget cannot hold is refused before the model runs", "error": error,
            "forwards": len(calls), "passed": error is not None and not calls}


def check_oom_isolation(model: Any) -> dict:
    """A real out-of-memory prefill (the allocator capped for this process) fails its call; a concurrent short
    call finishes; a later call finishes too."""
    from longread.errors import ModelError

    gc.collect()
    torch.cuda.empty_cache()
    free_bytes = torch.cuda.mem_get_info()[0]
    total = torch.cuda.get_device_properties(0).total_memory
    allowed = (torch.cuda.memory_reserved() + 3 * 2**30) / total  # about 3 GiB beyond what is held now
    torch.cuda.set_per_process_memory_fraction(min(1.0, allowed))
    batcher = Batcher(model, max_batch=4)
    policy = kv.parse_policy("full")

    def request(tokens: int, new: int, engine: str = "static") -> Request:
        ids = torch.randint(0, 1000, (tokens,)).tolist()
        return Request(lambda: (kv.PolicyCache(policy, model.config), ids, 0),
                       Decoding(new, set(), device=DEVICE, guard=bench.NO_LOOP), policy, engine=engine,
                       window=-(-(tokens + new) // 1024) * 1024, tokens=tokens + new)

    outcomes: dict[str, Any] = {}

    def run(name: str, r: Request) -> None:
        try:
            outcomes[name] = len(batcher.submit(r).ids)
        except Exception as exc:  # noqa: BLE001
            outcomes[name] = exc

    try:
        # The huge call on the eager engine (no row to allocate first): its prefill runs out of memory, batched with
        # the short call's first chunk, and both are retried alone.
        threads = [threading.Thread(target=run, args=("huge", request(40_000, 8, "eager"))),
                   threading.Thread(target=run, args=("short", request(1500, 16)))]
        with batcher.lock:  # both join the same round
            for t in threads:
                t.start()
            while batcher.waiting < 2:
                time.sleep(0.01)
        for t in threads:
            t.join()
        run("after", request(700, 16))
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
        gc.collect()
        torch.cuda.empty_cache()
    huge = outcomes.get("huge")
    passed = (isinstance(huge, ModelError) and "out of GPU memory" in str(huge) and outcomes.get("short") == 16
              and outcomes.get("after") == 16)
    return {"check": "an out-of-memory prefill fails its own call only", "free_bytes_before": free_bytes,
            "huge": str(huge)[:300], "short_tokens": str(outcomes.get("short")), "after_tokens":
            str(outcomes.get("after")), "passed": passed}


# -- 2-3. decode and batch --------------------------------------------------------------------------------------
def decode_row(model: Any, policy: str, context: int, steps: int, gpu: dict, kernels: bool = True,
               batch: int = 1) -> dict:
    os.environ["LONGREAD_QUANT_KERNEL"] = "1" if kernels else "0"
    try:
        parsed = kv.parse_policy(policy)
        base = bench.filled_cache(model, parsed, context)
        kv_bytes = base.stored_bytes()
        caches = [base] + [copy.deepcopy(base) for _ in range(batch - 1)]
        reset_peak()
        seconds, _ = bench.static_decode(model, parsed, caches, context, steps)
        held = peak()
    finally:
        os.environ.pop("LONGREAD_QUANT_KERNEL", None)
    weights = bench.weight_bytes(model)
    limit = (weights + batch * kv_bytes) / gpu["bandwidth_bytes_s"]
    row = {"policy": policy, "context": context, "batch": batch, "attention": "kernels" if kernels else "reference",
           "ms_per_step": round(seconds * 1e3, 3), "tok_s": round(batch / seconds, 1),
           "kv_bytes_per_sequence": kv_bytes, "bandwidth_limit_ms": round(limit * 1e3, 3),
           "share_of_datasheet_limit": round(limit / seconds, 3), "peak_gpu_bytes": held}
    if gpu.get("measured_bytes_s"):
        row["share_of_measured_copy_limit"] = round((weights + batch * kv_bytes) / gpu["measured_bytes_s"] / seconds, 3)
    del caches, base
    gc.collect()
    if DEVICE == "cuda":
        torch.cuda.empty_cache()
    return row


def profile_step(model: Any, context: int) -> dict:
    """Kernels of one eager static step of `full` (what a graph replays), by total time."""
    from torch.profiler import ProfilerActivity, profile

    parsed = kv.parse_policy("full")
    base = bench.filled_cache(model, parsed, context)
    engine = StaticEngine(model, parsed, batch=1, window=context + 256, graphs=False, guard=bench.NO_LOOP)
    decoding = Decoding(64, set(), device=DEVICE, guard=bench.NO_LOOP)
    decoding.accept(1)
    engine.add(decoding, base, 1, context)
    engine._step(1, False)  # warm (the kernels compile)
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        engine._step(1, False)
        torch.cuda.synchronize()
    events = [e for e in prof.key_averages() if getattr(e.device_type, "name", "") == "CUDA"]
    kernels = sum(e.count for e in events)
    busy = sum(e.device_time_total for e in events)
    top = sorted(events, key=lambda e: e.device_time_total, reverse=True)[:12]
    return {"check": f"profile of one full step at {context} tokens (eager, as captured)", "kernels": kernels,
            "kernel_time_ms": round(busy / 1e3, 3),
            "top": [{"name": e.key[:80], "count": e.count, "ms": round(e.device_time_total / 1e3, 3)} for e in top]}


# -- 4. the chain -------------------------------------------------------------------------------------------------
def chain(model: Any, concurrent: bool, workers: int = 15, document: int = 100_000, notes: int = 256) -> dict:
    policy = kv.parse_policy("full")
    budget = memory.budget_for(DEVICE)
    batcher = Batcher(model, max_batch=16)
    prompt = document // workers
    g = torch.Generator().manual_seed(7)

    vocab = model.get_output_embeddings().weight.shape[0]

    def request(tokens: int, new: int) -> Request:
        ids = torch.randint(0, vocab, (tokens,), generator=g).tolist()
        cost = memory.call_cost(policy, model.config, prompt=tokens, window=8192, dtype=model.dtype, vocab=vocab,
                                chunk=512, static=True)
        return Request(lambda: (kv.PolicyCache(policy, model.config), ids, 0),
                       Decoding(new, set(), device=DEVICE, guard=bench.NO_LOOP), policy, prefill_chunk=512,
                       engine="static", window=8192, tokens=tokens + new, prefill_bytes=cost.prefill, budget=budget)

    calls = [request(prompt, notes) for _ in range(workers)]
    reset_peak()
    sync()
    started = time.perf_counter()
    if concurrent:
        with batcher.lock:  # every call joins the first round
            for r in calls:
                batcher.enqueue(r)
        for r in calls:
            r.done.wait()
    else:
        for r in calls:
            batcher.submit(r)
    workers_s = time.perf_counter() - started
    manager = request(notes + 300, notes)
    batcher.submit(manager)
    sync()
    wall = time.perf_counter() - started
    errors = [str(r.error) for r in calls + [manager] if r.error is not None]
    return {"chain": "all workers at once" if concurrent else "one worker after the other", "workers": workers,
            "prompt_tokens_each": prompt, "notes_tokens": notes, "wall_s": round(wall, 2),
            "workers_s": round(workers_s, 2), "decode_steps": batcher.steps, "peak_batch": batcher.peak_batch,
            "prefill_forwards_batched": batcher.prefill_forwards, "peak_gpu_bytes": peak(),
            "tokens_written": sum(len(r.decoding.out) for r in calls + [manager]), "errors": errors}


# -- the run ------------------------------------------------------------------------------------------------------
def targets() -> dict:
    decode = {(r["policy"], r["context"], r["attention"]): r for r in RESULT["sections"].get("decode", [])
              if "ms_per_step" in r}
    out: dict[str, Any] = {}

    def ratio(policy: str, context: int) -> float | None:
        a, f = decode.get((policy, context, "kernels")), decode.get(("full", context, "kernels"))
        return round(f["ms_per_step"] / a["ms_per_step"], 3) if a and f else None

    for context in (4096, 16384):
        r = decode.get(("full", context, "kernels"))
        out[f"full at {context}: share of the limit (target 0.70)"] = r and r["share_of_datasheet_limit"]
    out["quant:4 / full speed at 16k (target >= 1.0)"] = ratio("quant:4", 16384)
    out["quant:4 / full speed at 64k (target >= 1.2)"] = ratio("quant:4", 65536)
    out["fp8 / full speed at 16k (target >= 1.0)"] = ratio("fp8", 16384)
    out["fp8 / full speed at 64k (target >= 1.0)"] = ratio("fp8", 65536)
    batch = {r["batch"]: r for r in RESULT["sections"].get("batch", []) if "tok_s" in r}
    if 1 in batch and 16 in batch:
        out["batch 16 / batch 1 aggregate"] = round(batch[16]["tok_s"] / batch[1]["tok_s"], 2)
    for r in RESULT["sections"].get("chain", []):
        if "wall_s" in r:
            out[f"synthetic 100k chain, {r['chain']} (target <= 20 s)"] = r["wall_s"]
    out["checks passed"] = all(r.get("passed", True) for r in RESULT["sections"].get("checks", []))
    return out


def main() -> None:
    global OUT
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for engine-gpu-checks.json")
    parser.add_argument("--quick", action="store_true", help="checks and decode at 4k/16k only")
    parser.add_argument("--steps", type=int, default=64)
    parser.add_argument("--sections", default="checks,decode,batch,chain")
    parser.add_argument("--cpu", action="store_true",
                        help="a dry run of the script on the CPU at tiny sizes (kernel checks need Triton with "
                        "TRITON_INTERPRET=1, else they report errors)")
    args = parser.parse_args()
    OUT = args.out
    OUT.mkdir(parents=True, exist_ok=True)
    global DEVICE, DTYPE, SHAPE, HEADS
    if args.cpu:
        DEVICE, DTYPE, SHAPE, HEADS = "cpu", torch.float32, "tiny", (2, 8, 64, 1024)
        bench.SHAPES["tiny"]["head_dim"] = 32  # wide enough for the kernels' dots
    elif not torch.cuda.is_available():
        sys.exit("engine_gpu_checks.py needs CUDA (or --cpu for a dry run)")
    started = time.time()
    import transformers

    if DEVICE == "cuda":
        import triton

        torch.backends.cuda.enable_cudnn_sdp(False)  # docs/benchmarks.md: its host cost per call; prefill uses SDPA
        gpu = card("cuda")
    else:
        triton = quant_attention.triton
        gpu = {"name": "cpu (dry run)", "datasheet_bytes_s": None, "measured_bytes_s": None,
               "bandwidth_bytes_s": 1e11}
    RESULT.update(card=gpu, torch=torch.__version__, transformers=transformers.__version__,
                  triton=getattr(triton, "__version__", None),
                  command="python3 benchmarks/engine_gpu_checks.py " + " ".join(sys.argv[1:]))
    print(json.dumps({"card": gpu}), flush=True)
    sections = args.sections.split(",")
    timings = RESULT["timings"] = {}
    contexts = (256, 1024) if args.cpu else (4096, 16384) if args.quick else (4096, 16384, 65536)
    try:
        if "checks" in sections:
            t = time.time()
            for bits, group, vgroup in [(4, 128, None), (8, 128, None), (2, 64, 64)]:
                guarded("checks", f"codes {bits}", check_codes, bits, group, vgroup)
            for fn in (check_fp8_attention, check_dense, check_merge, check_fp8_write):
                guarded("checks", fn.__name__, fn)
            tiny = tiny_model()
            for policy in ("full", "quant:4", "fp8", "snap:128", "sink:128", "mixed:128:4"):
                guarded("checks", f"graphs {policy}", check_graphs, tiny, policy)
            del tiny
            timings["checks"] = round(time.time() - t, 1)
            save()
        model = bench.random_model(SHAPE, DEVICE, DTYPE)
        if "checks" in sections:
            guarded("checks", "refusal", check_refusal, model)
            if DEVICE == "cuda":
                guarded("checks", "oom isolation", check_oom_isolation, model)
            save()
        if "decode" in sections:
            t = time.time()
            for context in contexts:
                for policy in ("full", "quant:4", "fp8"):
                    guarded("decode", f"{policy} {context}", decode_row, model, policy, context, args.steps, gpu)
                save()
            for policy in ("full", "quant:4"):
                guarded("decode", f"{policy} {contexts[1]} reference", decode_row, model, policy, contexts[1],
                        args.steps // 2, gpu, kernels=False)
            if DEVICE == "cuda":
                guarded("checks", "profile", profile_step, model, 4096)
            timings["decode"] = round(time.time() - t, 1)
            save()
        if "batch" in sections:
            t = time.time()
            for batch in (1, 16):
                guarded("batch", f"batch {batch}", decode_row, model, "full", contexts[0], args.steps, gpu,
                        batch=batch)
            timings["batch"] = round(time.time() - t, 1)
            save()
        if "chain" in sections and not args.quick:
            t = time.time()
            size = dict(workers=3, document=3000, notes=12) if args.cpu else {}
            guarded("chain", "chain concurrent", chain, model, True, **size)
            guarded("chain", "chain sequential", chain, model, False, **size)
            timings["chain"] = round(time.time() - t, 1)
    finally:
        RESULT["targets"] = targets()
        RESULT["seconds"] = round(time.time() - started, 1)
        save()
        print("\n" + "-" * 100)
        print(f"{gpu['name']}: datasheet {gpu['datasheet_bytes_s']}, measured copy {gpu['measured_bytes_s']} B/s")
        for r in RESULT["sections"].get("checks", []):
            print(f"  {'ok  ' if r.get('passed', True) else 'FAIL'} {r.get('check')}"
                  f"{'  ' + str(r.get('relative_error', '')) if 'relative_error' in r else ''}")
        for r in RESULT["sections"].get("decode", []) + RESULT["sections"].get("batch", []):
            if "ms_per_step" in r:
                held = f"{r['peak_gpu_bytes'] / 1e9:.1f} GB" if r["peak_gpu_bytes"] else "-"
                print(f"  {r['policy']:8} {r['context']:>6} b{r['batch']:<3} {r['attention']:9} "
                      f"{r['ms_per_step']:8.2f} "
                      f"ms  {r['tok_s']:8.1f} tok/s  limit share {r['share_of_datasheet_limit']:.2f}  peak {held}")
        for key, value in RESULT["targets"].items():
            print(f"  {key}: {value}")
        print(f"wrote {OUT / 'engine-gpu-checks.json'} in {RESULT['seconds']} s; errors: {RESULT['errors']}")


if __name__ == "__main__":
    main()
