"""`longread eval` settings over cases in N processes with one local model each, resumable and time-boxed.

Superseded for new runs by `longread eval --jobs N` (issue 21): one process serves the cases at once, their calls
decoding together in the local model's batcher within one GPU memory budget (`--gpu-memory`). This script stays
to reproduce docs/quality.md's runs (prompt variants, time boxes).

How docs/quality.md was measured on the GPU machine: the local engine decodes one sequence at a time and is
host-bound there, so 14 processes on its 16 cores read 14 cases at once. Each case goes through the harness's own
`run_case` (so the lines are those of `longread eval`, and `longread eval report` reads them).

A setting's strategy is "PROMPTS/SPEC": a prompt variant (benchmarks/prompt_variants/PROMPTS.py; `base` = the
shipped prompts) and a strategy spec; "auto>FALLBACK" is AutoStrategy(fallback=FALLBACK). The plan is a JSON list
of blocks {cases, strategies, window, kv, priority}. Results: OUT/results-<rank>.jsonl.

    python benchmarks/eval_sharded.py --model DIR --procs 14 --out RESULTS_DIR --plan plan.json --budget-s 450
"""
import argparse, glob, json, os, sys, time
from pathlib import Path
import multiprocessing as mp

EMB = None
PROMPTS_DIR = Path(__file__).resolve().parent / "prompt_variants"

def load_prompts(name):
    from longread.agents import DEFAULT_PROMPTS
    if name in ("", "base"):
        return DEFAULT_PROMPTS
    path = PROMPTS_DIR / f"{name}.py"
    ns = {"__file__": str(path)}; exec(path.read_text(), ns); return ns["PROMPTS"]

def strategy_of(spec):
    from longread.workflows import get_strategy
    from longread.workflows.auto import AutoStrategy
    return AutoStrategy(fallback=spec[5:]) if spec.startswith("auto>") else get_strategy(spec)

def read(case, document, model, *, strategy, window, kv=None, checkpointer=None):
    from longread import Reader
    from longread.eval.runner import question_for
    prompts, _, spec = strategy.rpartition("/")
    reader = Reader(document, model=model, window=window, strategy=strategy_of(spec), prompts=load_prompts(prompts),
                    embedder=EMB)
    q = question_for(case)
    return reader.summarize() if q is None else reader.ask(q)

def worker(rank, queue, model_path, out_dir, deadline, device):
    global EMB
    import torch
    torch.set_num_threads(1)
    from longread.backends import get_model
    from longread.eval.runner import ResultsFile, run_case
    from longread.memory import MiniLMEmbedder
    EMB = MiniLMEmbedder(device=device)
    base = get_model(f"hf:{model_path}")
    models = {None: base}
    results = ResultsFile(Path(out_dir) / f"results-{rank}.jsonl")
    documents = {}
    while time.time() < deadline:
        try:
            case, setting = queue.get_nowait()
        except Exception:
            break
        # A job that cannot finish before the deadline goes back (a killed job would be lost; the next call
        # resumes from the results files).
        estimate = 20 + (case.metadata.get("tokens") or 8000) / 1000 * 1.5 * (3.3 if "multipath" in setting.strategy else 1)
        if time.time() + estimate > deadline + 30:
            queue.put((case, setting))
            break
        model = models.setdefault(setting.kv, base.with_kv(setting.kv) if setting.kv else base)
        key = case.document_key
        if key not in documents:
            documents[key] = case.load_document()
        record = run_case(case, documents[key], model, setting, read)
        record.model = setting.model
        results.append(record)

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True); ap.add_argument("--procs", type=int, default=14)
    ap.add_argument("--out", required=True); ap.add_argument("--plan", required=True)
    ap.add_argument("--budget-s", type=float, default=540); ap.add_argument("--device", default="cuda")
    ap.add_argument("--model-name", default="hf:qwen2.5-coder-0.5b-instruct", help="the model's name in the lines")
    a = ap.parse_args()
    start = time.time()
    from longread.eval.cases import load_cases
    from longread.eval.runner import Setting, read_results
    done = set()
    for f in glob.glob(os.path.join(a.out, "results-*.jsonl")):
        done |= {record.key for record in read_results(f) if not record.failed}
    jobs = []
    for block in json.loads(Path(a.plan).read_text()):
        cases = load_cases(block["cases"])[: block.get("limit")]
        for strategy in block["strategies"]:
            for kv in block.get("kv", [None]):
                s = Setting(strategy, a.model_name, block.get("window", 4096), kv)
                for c in cases:
                    if s.key(c) not in done:
                        weight = (c.metadata.get("tokens") or 8000) * (3.3 if "multipath" in strategy else 1.0)
                        jobs.append((weight * block.get("weight", 1.0), block.get("priority", 0), c, s))
    # priority first, then heaviest first (the long ones must start early to finish inside the call)
    jobs.sort(key=lambda j: (-j[1], -j[0]))
    queue = mp.get_context("spawn").Queue()
    for _, _, c, s in jobs:
        queue.put((c, s))
    Path(a.out).mkdir(parents=True, exist_ok=True)
    deadline = start + a.budget_s
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=worker, args=(i, queue, a.model, a.out, deadline, a.device)) for i in range(a.procs)]
    for p in procs: p.start()
    hard = start + a.budget_s + 45
    for p in procs:
        p.join(max(1, hard - time.time()))
    for p in procs:
        if p.is_alive(): p.terminate()
    queue.cancel_join_thread()  # jobs left in the queue must not hold the exit (the next call resumes them)
    rows = []
    for f in glob.glob(os.path.join(a.out, "results-*.jsonl")):
        rows += read_results(f)
    print(f"{len(jobs)} pending at start; {len(rows)} lines now; {time.time() - start:.0f} s")
    table = {}
    for r in rows:
        k = (r.dataset, r.strategy, r.kv)
        t = table.setdefault(k, [0.0, 0, 0.0, 0, 0]); t[0] += r.score or 0; t[1] += 1
        t[2] += r.seconds; t[3] += len(r.calls); t[4] += r.failed
    for k in sorted(table, key=str):
        s, n, sec, calls, err = table[k]
        print(f"{k[0]:<18} {k[1]:<34} {str(k[2]):<7} {s / n:5.2f} n={n:<3} {sec / n:6.1f}s {calls / n:5.1f}calls err={err}")

if __name__ == "__main__":
    main()
    sys.stdout.flush()
    os._exit(0)
