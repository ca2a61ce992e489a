"""The local engine against itself before a change and against plain transformers `generate`, in one run.

For each model (Qwen2.5-Coder-0.5B-Instruct through `hf:`, and the embedded SmolLM2-135M), each variant runs in a
fresh process, on the same messages:

- `before`: longread's LocalModel from an older revision (`--before REV`, extracted with `git archive` into a
  temporary folder that goes first on sys.path);
- `after`: LocalModel from this working tree;
- `generate`: plain transformers (AutoModelForCausalLM + `generate`, greedy, the engine's output-only repetition
  penalty as a LogitsProcessor), in a process that never imports longread, i.e. with the environment a plain
  transformers user has;
- `generate-passive`: the same with OMP_WAIT_POLICY=PASSIVE, which longread now sets: it tells how much of the
  difference is the OpenMP wait policy and how much is the engine.

Each process measures: seconds from its start until the model is ready (cold: imports, tokenizer, weights), a
second load in the same process (warm), then a short prompt and a Chain-of-Agents worker prompt of about 3,500
tokens (a segment of sense_and_sensibility.txt, earlier notes, a question; window 4096, notes cap 256): prompt
tokens/s, decode tokens/s and the call's end-to-end seconds. The answers are recorded too, so the run also checks
that `after` writes exactly what `before` wrote. Separately, `longread ask` (before and after) is timed from the
process start to its first model call.

The machine is shared, so repeats are interleaved (every variant once, then again) and each figure is the best of
--repeats; the load average at each run is recorded beside it.

    .venv/bin/python benchmarks/local_engine.py                      # the run of docs/benchmarks.md
    .venv/bin/python benchmarks/local_engine.py --models local --repeats 1 --variants after,generate
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, machine, shared_path, write_record  # noqa: E402

QWEN = "hf:/root/.cache/longread-eval/qwen05"
DEFAULT_BEFORE = "fcbc151"  # main before the engine fixes of docs/benchmarks.md ("Local engine")
VARIANTS = ("before", "after", "generate", "generate-passive")
WINDOW, NOTES_CAP, SHORT_CAP = 4096, 256, 48
QUESTION = "Why do the Dashwoods leave Norland, and where do they go?"
EARLIER_NOTES = (
    "- Norland Park in Sussex has long been the home of the Dashwood family.\n"
    "- Mr. Henry Dashwood lives there with his wife and three daughters, Elinor, Marianne and Margaret.\n"
    "- His son John, from a first marriage, is already well provided for."
)
SHORT = [{"role": "user", "content": "What is the capital of France? Answer in one sentence."}]


# -- the prompts (built once, here, so every variant gets the very same messages) ----------------------------------
def worker_prompt(model: str, target_tokens: int) -> tuple[list[dict], int, int]:
    """(messages, cache_prefix, prompt tokens): a worker prompt of about target_tokens for this model."""
    from longread.agents import worker_messages
    from longread.agents.messages import worker_prefix_chars
    from longread.agents.prompts import DEFAULT_PROMPTS as prompts
    from longread.backends.local.weights import embedded_model_dir
    from transformers import AutoTokenizer

    path = embedded_model_dir() if model == "local" else Path(model.split(":", 1)[1])
    tokenizer = AutoTokenizer.from_pretrained(path)
    book = shared_path("books/sense_and_sensibility.txt").read_text(encoding="utf-8")
    start = book.index("Chapter 1")
    ids = tokenizer.encode(book[start : start + 60_000], add_special_tokens=False)

    def build(n: int) -> tuple[list[dict], int, int]:
        segment = tokenizer.decode(ids[:n])
        messages = worker_messages(prompts, "query", QUESTION, segment, EARLIER_NOTES, 2)
        prefix = worker_prefix_chars(prompts, segment, 2, QUESTION)
        rendered = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return messages, prefix, len(tokenizer.encode(rendered, add_special_tokens=False))

    n = target_tokens
    messages, prefix, total = build(n)
    n -= total - target_tokens
    messages, prefix, total = build(n)
    assert total + NOTES_CAP <= WINDOW, (total, NOTES_CAP, WINDOW)
    return messages, prefix, total


# -- one measured process ------------------------------------------------------------------------------------------
def run_ours(job: dict[str, Any]) -> dict[str, Any]:
    """LocalModel (before or after: whichever `longread` is first on sys.path)."""
    import longread
    from longread import backends

    imported = time.time()
    model = backends.get_model(job["model"], kv="full")
    ready = time.time()
    started = time.perf_counter()
    again = backends.get_model(job["model"], kv="full")
    warm = time.perf_counter() - started
    assert getattr(again, "model", None) is model.model, "a second get_model reloaded the weights"
    row: dict[str, Any] = {"longread": str(Path(longread.__file__).parent), "import_s": imported - job["t0"],
                           "load_cold_s": ready - job["t0"], "load_warm_s": warm}
    for name, messages, cap, prefix in (("short", SHORT, SHORT_CAP, None),
                                        ("worker", job["messages"], job["decode_cap"], job["prefix"])):
        model.stats.__init__()
        started = time.perf_counter()
        completion = model.complete(messages, cap, window=WINDOW, cache_prefix=prefix)
        seconds = time.perf_counter() - started
        stats = model.stats
        row[name] = {
            "prompt_tokens": completion.prompt_tokens, "completion_tokens": completion.completion_tokens,
            "prefill_s": stats.seconds_prefill, "decode_s": stats.seconds_decode, "call_s": seconds,
            "prompt_tok_s": stats.prefill_tokens / stats.seconds_prefill,
            "decode_tok_s": completion.completion_tokens / stats.seconds_decode if stats.seconds_decode else None,
            "text": completion.text, "finish": completion.finish_reason,
        }
    return row


def run_generate(job: dict[str, Any]) -> dict[str, Any]:
    """Plain transformers: from_pretrained and generate, nothing of longread imported."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LogitsProcessor, LogitsProcessorList

    imported = time.time()
    path = job["path"]

    def load() -> tuple[Any, Any]:
        tokenizer = AutoTokenizer.from_pretrained(path)
        return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval(), tokenizer

    model, tokenizer = load()
    ready = time.time()
    started = time.perf_counter()
    load()
    warm = time.perf_counter() - started
    row: dict[str, Any] = {"import_s": imported - job["t0"], "load_cold_s": ready - job["t0"], "load_warm_s": warm}

    class OutputOnlyPenalty(LogitsProcessor):
        """The engine's penalty (1.1 on tokens this answer already wrote, not the prompt's); records when the first
        token is chosen, i.e. when the prefill ended."""

        def __init__(self, prompt_length: int) -> None:
            self.prompt_length, self.first = prompt_length, None

        def __call__(self, input_ids, scores):
            if self.first is None:
                self.first = time.perf_counter()
            seen = input_ids[0, self.prompt_length:]
            if len(seen):
                seen = torch.unique(seen)
                picked = scores[0, seen]
                scores[0, seen] = torch.where(picked > 0, picked / 1.1, picked * 1.1)
            return scores

    eos = [model.generation_config.eos_token_id, tokenizer.eos_token_id]
    eos = sorted({e for x in eos for e in (x if isinstance(x, list) else [x]) if e is not None})
    for name, messages, cap in (("short", SHORT, SHORT_CAP), ("worker", job["messages"], job["decode_cap"])):
        rendered = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        ids = torch.tensor([tokenizer.encode(rendered, add_special_tokens=False)])
        penalty = OutputOnlyPenalty(ids.shape[1])
        started = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=cap, do_sample=False,
                                 logits_processor=LogitsProcessorList([penalty]), eos_token_id=eos,
                                 pad_token_id=eos[0], temperature=None, top_p=None, top_k=None)
        ended = time.perf_counter()
        new = [t for t in out[0, ids.shape[1]:].tolist() if t not in eos]
        prefill, decode = penalty.first - started, ended - penalty.first
        row[name] = {
            "prompt_tokens": ids.shape[1], "completion_tokens": len(new), "prefill_s": prefill, "decode_s": decode,
            "call_s": ended - started, "prompt_tok_s": ids.shape[1] / prefill,
            # the first token comes with the prefill; every later one is a decode step
            "decode_tok_s": (len(new) - 1) / decode if len(new) > 1 and decode > 0 else None,
            "text": tokenizer.decode(new, skip_special_tokens=True).strip(),
        }
    return row


def worker_main(job_file: str) -> None:
    job = json.loads(Path(job_file).read_text())
    row = run_generate(job) if job["variant"].startswith("generate") else run_ours(job)
    row["load_avg"] = os.getloadavg()[0]
    print("RESULT " + json.dumps(row), flush=True)


# -- `longread ask` until its first model call -------------------------------------------------------------------------
FIRST_CALL = """
import os, sys, time
from longread.backends.local import engine
def first_call(self, *args, **kwargs):
    print("FIRST_CALL %.3f" % (time.time() - float(os.environ["BENCH_T0"])), flush=True)
    os._exit(0)
engine.LocalModel._complete = first_call
from longread.cli import app
app(sys.argv[1:])
"""


def time_first_call(model: str, env: dict[str, str], scratch: Path) -> float:
    script = scratch / "first_call.py"
    script.write_text(FIRST_CALL)
    env = dict(env, BENCH_T0=repr(time.time()))
    out = subprocess.run(
        [sys.executable, str(script), "ask", str(REPO / "examples" / "lighthouse_keeper.md"),
         "Why did Ada stop lighting the lamp?", "--model", model, "--window", str(WINDOW), "--force", "--quiet",
         "--workspace", str(scratch / "ws")],
        env=env, capture_output=True, text=True, timeout=600,
    )
    for line in out.stdout.splitlines():
        if line.startswith("FIRST_CALL "):
            return float(line.split()[1])
    raise RuntimeError(f"longread ask never reached a model call: {out.stderr[-2000:]}")


# -- the run -----------------------------------------------------------------------------------------------------------
def extract(rev: str, into: Path) -> Path:
    """The longread package of revision rev, unpacked under into (so it can go first on sys.path)."""
    archive = subprocess.run(["git", "-C", str(REPO), "archive", rev, "longread"], capture_output=True, check=True)
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(into, filter="data")
    return into


def variant_env(variant: str, before_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "PYTHONPATH")}
    if variant == "before":
        env["PYTHONPATH"] = str(before_dir)
    elif variant == "generate-passive":
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TRANSFORMERS_OFFLINE", "1")
    return env


def measure(variant: str, model: str, job: dict[str, Any], before_dir: Path, scratch: Path) -> dict[str, Any]:
    job = dict(job, variant=variant, model=model, t0=time.time())
    job_file = scratch / "job.json"
    job_file.write_text(json.dumps(job))
    out = subprocess.run([sys.executable, __file__, "--worker", str(job_file)], env=variant_env(variant, before_dir),
                         capture_output=True, text=True, timeout=3600)
    for line in out.stdout.splitlines():
        if line.startswith("RESULT "):
            row = json.loads(line[len("RESULT "):])
            if variant == "before" and not row["longread"].startswith(str(before_dir)):
                raise RuntimeError(f"`before` imported {row['longread']}, not the extracted revision")
            return row
    raise RuntimeError(f"{variant} {model} failed: {out.stderr[-3000:]}")


def best(values: list[float | None], higher: bool) -> float | None:
    values = [v for v in values if v is not None]
    if not values:
        return None
    return round(max(values) if higher else min(values), 3)


def summarize(model: str, variant: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    row: dict[str, Any] = {"model": model, "variant": variant, "repeats": len(runs),
                           "omp_wait_policy": "PASSIVE" if variant in ("after", "generate-passive") else "default",
                           "load_cold_s": best([r["load_cold_s"] for r in runs], False),
                           "load_warm_s": best([r["load_warm_s"] for r in runs], False),
                           "load_avg": [round(r["load_avg"], 1) for r in runs]}
    for call in ("short", "worker"):
        calls = [r[call] for r in runs]
        row[call] = {
            "prompt_tokens": calls[0]["prompt_tokens"],
            "completion_tokens": [c["completion_tokens"] for c in calls],
            "prompt_tok_s": best([c["prompt_tok_s"] for c in calls], True),
            "decode_tok_s": best([c["decode_tok_s"] for c in calls], True),
            "call_s": best([c["call_s"] for c in calls], False),
            "text": calls[0]["text"],
            "same_text_every_repeat": len({c["text"] for c in calls}) == 1,
        }
    return row


def record(args: argparse.Namespace, models: list[str], variants: list[str], runs: dict, first_calls: dict) -> Path:
    """Writes what has been measured so far (after every round: a run cut short still leaves its figures)."""
    results = [summarize(model, variant, rows) for (model, variant), rows in runs.items()]
    for model in models:
        if (model, "before") in runs and (model, "after") in runs:
            both = runs[(model, "before")] + runs[(model, "after")]
            results.append({"model": model, "check": "after writes what before wrote, every repeat, both prompts",
                            "identical": all(len({r[c]["text"] for r in both}) == 1 for c in ("short", "worker"))})
    for (_, variant), seconds in first_calls.items():
        results.append({"command": "longread ask ... --model " + (QWEN if QWEN in models else models[0]),
                        "variant": variant, "first_model_call_s": best(seconds, False),
                        "all_s": [round(s, 1) for s in seconds]})
    command = "python benchmarks/local_engine.py " + " ".join(sys.argv[1:])
    path = write_record(args.name, command.strip(), results, f"{machine()}, shared with other work")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--models", default=f"{QWEN},local")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--before", default=DEFAULT_BEFORE, help="git revision measured as `before`")
    parser.add_argument("--prompt-tokens", type=int, default=3500)
    parser.add_argument("--decode-cap", type=int, default=NOTES_CAP,
                        help="max_new_tokens of the worker call (the window is still sized for the notes cap, 256)")
    parser.add_argument("--no-cli", action="store_true", help="skip timing `longread ask` to its first call")
    parser.add_argument("--name", default="local-engine-cpu")
    args = parser.parse_args()
    if args.worker:
        return worker_main(args.worker)

    models, variants = args.models.split(","), args.variants.split(",")
    scratch = Path(tempfile.mkdtemp(prefix="longread-engine-bench-"))
    before_dir = extract(args.before, scratch / "before")
    jobs = {}
    for model in models:
        messages, prefix, tokens = worker_prompt(model, args.prompt_tokens)
        path = str(Path(model.split(":", 1)[1])) if model.startswith("hf:") else None
        if path is None:
            from longread.backends.local.weights import embedded_model_dir

            path = str(embedded_model_dir())
        jobs[model] = {"messages": messages, "prefix": prefix, "path": path, "decode_cap": args.decode_cap}
        print(f"{model}: worker prompt of {tokens} tokens", file=sys.stderr, flush=True)

    runs: dict[tuple[str, str], list[dict[str, Any]]] = {}
    first_calls: dict[tuple[str, str], list[float]] = {}
    for repeat in range(args.repeats):  # interleaved: every variant once per round
        for model in models:
            for variant in variants:
                row = measure(variant, model, jobs[model], before_dir, scratch)
                runs.setdefault((model, variant), []).append(row)
                w = row["worker"]
                print(f"[{repeat + 1}/{args.repeats}] {model} {variant}: cold {row['load_cold_s']:.1f}s, worker "
                      f"{w['prompt_tok_s']:.1f} prompt tok/s, {w['decode_tok_s'] or 0:.2f} decode tok/s, "
                      f"{w['call_s']:.1f}s (load {row['load_avg']:.1f})", file=sys.stderr, flush=True)
        if not args.no_cli:
            for variant in ("before", "after"):
                seconds = time_first_call(QWEN if QWEN in models else models[0], variant_env(variant, before_dir),
                                          scratch)
                first_calls.setdefault(("ask", variant), []).append(seconds)
                print(f"[{repeat + 1}/{args.repeats}] longread ask {variant}: first model call after {seconds:.1f}s",
                      file=sys.stderr, flush=True)
        print(f"wrote {record(args, models, variants, runs, first_calls)}", file=sys.stderr, flush=True)



if __name__ == "__main__":
    main()
