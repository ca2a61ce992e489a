"""Throughput of a folder run, and the cost of `longread serve` per call.

1. Documents per minute: `longread summarize` over a folder of 32 documents (4 calls each: three workers, the
   manager) against the fake provider (longread/serve/fake.py, in its own process), which answers every call after
   a fixed latency (0.5 s) and serves at most 16 calls at once. `--jobs 1, 4, 16`, then `--ray` on a local Ray
   instance of 2 CPUs (2 workers; its start and the workers' first imports are timed apart, on a warm-up run).
   Each run is timed in this process, from the command's start to its exit, with its own workspace and --out.
   Target: at least 0.9 x N times the sequential rate, for N up to the server's 16.
2. Overhead per call: the same engine called in-process and through `longread serve` (a subprocess, over HTTP on
   127.0.0.1): the embedded SmolLM2 engine with one new token on a short prompt, and an engine that answers
   instantly (the fake provider at latency 0: what the server, HTTP and the client cost alone). The calls
   alternate, in-process and served, so load on the shared machine falls on both; the overhead is the median of
   the differences within each round. The served calls go
   as bare HTTP requests (httpx, one connection: the server and the loopback alone), through the official openai
   client, and through longread's own client (litellm), each on top of the one before.
   Target: the server adds under 5 ms a call.

    .venv/bin/python benchmarks/throughput.py            # about 4 minutes on the 2-core machine
    .venv/bin/python benchmarks/throughput.py --quick    # 8 documents, fewer calls: a smoke run
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, machine, write_record  # noqa: E402

os.environ.pop("OPENAI_API_KEY", None)  # the servers here take none; longread sends a placeholder
os.environ.setdefault("OMP_NUM_THREADS", "1")

LATENCY = 0.5
CAPACITY = 16
PARAGRAPH = ("The keeper wrote the weather in the log each night, the ships that passed and the oil the lamp "
             "burned; in winter the entries grew short and the storms long. ")


def make_folder(root: Path, count: int) -> Path:
    """`count` documents of three segments each at --window 1024."""
    folder = root / "books"
    folder.mkdir()
    for i in range(count):
        body = "\n\n".join(f"Night {n} of log {i}. " + PARAGRAPH * 3 for n in range(12))
        (folder / f"log{i:02d}.md").write_text(f"# Log {i}\n\n{body}", encoding="utf-8")
    return folder


def start_process(args: list[str], port: int, env: dict[str, str] | None = None) -> subprocess.Popen:
    import httpx

    process = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return process
        except httpx.TransportError:
            pass
        if process.poll() is not None:
            sys.exit(f"{args[:3]} exited: {process.stderr.read() if process.stderr else ''}")
        time.sleep(0.2)
    process.kill()
    sys.exit(f"{args[:3]} did not start")


def summarize(folder: Path, work: Path, name: str, base_url: str, *extra: str) -> tuple[float, int, int]:
    """(seconds, documents written, calls per document) of one run in this process."""
    import json

    from typer.testing import CliRunner

    from longread.cli import app

    out = work / f"out-{name}"
    started = time.perf_counter()
    result = CliRunner().invoke(app, ["summarize", str(folder), "--out", str(out), "--model", "openai/fake",
                                      "--api-base", base_url, "--window", "1024", "--strategy", "chain", "--quiet",
                                      "--workspace", str(work / f"ws-{name}"), *extra])
    seconds = time.perf_counter() - started
    if result.exit_code != 0:
        sys.exit(f"run {name} failed ({result.exit_code}): {result.output[-2000:]}")
    written = sorted(out.glob("*.summary.json"))
    return seconds, len(written), len(json.loads(written[0].read_text())["calls"])


def throughput(documents: int, work: Path) -> list[dict]:
    from longread.serve.fake import free_port

    folder = make_folder(work, documents)
    (work / "warm").mkdir()
    warm = make_folder(work / "warm", 2)
    port = free_port()
    server = start_process([sys.executable, "-m", "longread.serve.fake", "--latency", str(LATENCY), "--capacity",
                            str(CAPACITY), "--port", str(port)], port)
    base_url = f"http://127.0.0.1:{port}/v1"
    rows: list[dict] = []
    try:
        summarize(warm, work, "warm-up", base_url, "--jobs", "1")  # imports litellm and the workflows once
        sequential = None
        for jobs in (1, 4, 16):
            seconds, written, calls = summarize(folder, work, f"jobs{jobs}", base_url, "--jobs", str(jobs))
            rate = written / seconds * 60
            sequential = sequential or rate
            rows.append(_rate_row(f"--jobs {jobs}", jobs, written, calls, seconds, rate, sequential))
            print(rows[-1], flush=True)
        import ray

        started = time.perf_counter()
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
        summarize(warm, work, "ray-warm-up", base_url, "--ray")
        start_seconds = time.perf_counter() - started
        try:
            seconds, written, calls = summarize(folder, work, "ray", base_url, "--ray")
        finally:
            ray.shutdown()
        rate = written / seconds * 60
        row = _rate_row("--ray (local instance, 2 CPUs)", 2, written, calls, seconds, rate, sequential)
        row["ray_start_and_warm_up_s"] = round(start_seconds, 1)
        rows.append(row)
        print(row, flush=True)
    finally:
        server.terminate()
        server.wait(timeout=30)
    return rows


def _rate_row(config: str, parallel: int, documents: int, calls: int, seconds: float, rate: float,
              sequential: float) -> dict:
    expected = min(parallel, CAPACITY)
    speedup = rate / sequential
    return {
        "measure": "documents per minute", "config": config, "documents": documents, "calls_per_document": calls,
        "latency_s": LATENCY, "server_capacity": CAPACITY, "seconds": round(seconds, 2),
        "documents_per_minute": round(rate, 1), "speedup": round(speedup, 2),
        "target_speedup": round(0.9 * expected, 2), "meets_target": speedup >= 0.9 * expected,
    }


def overhead(calls: int) -> list[dict]:
    """Per-call cost of the server over the in-process engine (see the module docstring)."""
    import httpx
    import openai

    from longread.backends import get_model
    from longread.backends.litellm.model import LiteLLMModel
    from longread.serve.fake import SlowMock, free_port

    messages = [{"role": "user", "content": "Say yes."}]
    rows = []
    for engine_name in ("instant engine (fake, latency 0)", "embedded SmolLM2-135M, 1 new token"):
        port = free_port()
        if engine_name.startswith("instant"):
            engine = SlowMock(latency=0.0)
            args = [sys.executable, "-m", "longread.serve.fake", "--latency", "0", "--port", str(port)]
            served, max_tokens = "fake", 4
        else:
            import torch

            torch.set_num_threads(1)
            engine = get_model("local")
            args = [str(Path(sys.executable).with_name("longread")), "serve", "--model", "local", "--port", str(port)]
            served, max_tokens = "local", 1
        server = start_process(args, port)
        try:
            raw = httpx.Client(base_url=f"http://127.0.0.1:{port}/v1")
            sdk = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="no-key", max_retries=0)
            ours = LiteLLMModel(f"openai/{served}", api_base=f"http://127.0.0.1:{port}/v1", api_key="no-key",
                                context_window=2048)
            samples: dict[str, list[float]] = {"in-process": [], "HTTP (httpx)": [], "openai client": [],
                                               "longread client": []}
            body = {"model": served, "messages": messages, "max_tokens": max_tokens}
            for i in range(calls + 3):  # 3 warm-up rounds, not counted
                for kind in samples:
                    started = time.perf_counter()
                    if kind == "in-process":
                        engine.complete(messages, max_tokens)
                    elif kind == "HTTP (httpx)":
                        raw.post("/chat/completions", json=body).raise_for_status()
                    elif kind == "openai client":
                        sdk.chat.completions.create(model=served, messages=messages, max_tokens=max_tokens)
                    else:
                        ours.complete(messages, max_tokens)
                    if i >= 3:
                        samples[kind].append((time.perf_counter() - started) * 1000)
        finally:
            server.terminate()
            server.wait(timeout=30)
        base = samples["in-process"]
        for kind, values in samples.items():
            # The overhead is the median of the differences within each round (the calls of a round run back to
            # back, so a load spike of the shared machine falls on both sides of a difference).
            paired = statistics.median(v - b for v, b in zip(values, base))
            rows.append({
                "measure": "ms per call", "engine": engine_name, "path": kind, "calls": len(values),
                "median_ms": round(statistics.median(values), 2),
                "p90_ms": round(sorted(values)[int(0.9 * len(values))], 2),
                "overhead_ms": round(paired, 2) if kind != "in-process" else 0.0,
            })
            print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="8 documents and 20 calls: a smoke run, not recorded")
    args = parser.parse_args()
    documents, calls = (8, 20) if args.quick else (32, 60)
    with tempfile.TemporaryDirectory() as tmp:
        rows = throughput(documents, Path(tmp))
    rows += overhead(calls)
    if not args.quick:
        path = write_record("throughput", "python benchmarks/throughput.py", rows)
        print(f"wrote {path.relative_to(REPO)}")


if __name__ == "__main__":
    main()
