"""The GPU-only checks of tests/test_gpu_engine.py, runnable where pytest is not installed (the GPU machine):
the fused dequantize-attention kernel against the reference path, and CUDA-graph replay against eager steps.

    python3 benchmarks/engine_gpu_checks.py
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

from longread.backends import kv  # noqa: E402
from longread.backends.kv import quant_attention  # noqa: E402
from longread.backends.local.generation import Decoding, prefill  # noqa: E402
from longread.backends.local.static_engine import StaticEngine  # noqa: E402


def kernel(bits: int, dtype=torch.bfloat16) -> dict:
    torch.manual_seed(0)
    reference, fused = quant_attention.self_check(2, 8, 32, 128, bits, "cuda", dtype=dtype)
    return {"check": "fused kernel vs reference", "bits": bits, "dtype": str(dtype),
            "max_abs_diff": (reference - fused).abs().max().item(), "max_abs_reference": reference.abs().max().item()}


def graph_replay(policy: str) -> dict:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    m = LlamaForCausalLM(LlamaConfig(vocab_size=512, hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                                     num_attention_heads=8, num_key_value_heads=2, head_dim=32,
                                     max_position_embeddings=4096)).eval().to("cuda", torch.bfloat16)
    parsed = kv.parse_policy(policy)
    if isinstance(parsed, kv.QuantPolicy):
        parsed = kv.QuantPolicy(bits=parsed.bits, group=32, residual=8)
    prompt = torch.randint(0, 512, (300,), generator=torch.Generator().manual_seed(1)).tolist()
    outs = []
    for graphs in (False, True):
        engine = StaticEngine(m, parsed, batch=2, window=512, sync_every=8, graphs=graphs)
        cache = kv.PolicyCache(parsed, m.config)
        decoding = Decoding(60, set(), device="cuda")
        token = decoding.step(prefill(m, prompt, cache, chunk=64))
        engine.add(decoding, cache, token, len(prompt))
        while engine.rows:
            engine.run_block()
        outs.append(decoding.out)
        captured = len(engine.graphs)
    same = sum(a == b for a, b in zip(*outs))
    return {"check": "graph replay vs eager static steps", "policy": policy, "graphs": captured,
            "same_tokens": same, "of": len(outs[0])}


def main() -> None:
    results = []
    for fn, arg in [(kernel, 4), (kernel, 8), (graph_replay, "full"), (graph_replay, "quant:4"),
                    (graph_replay, "snap:128"), (graph_replay, "sink:128"), (graph_replay, "mixed:128:4")]:
        started = time.perf_counter()
        try:
            r = fn(arg)
        except Exception as exc:  # noqa: BLE001
            import traceback

            traceback.print_exc()
            r = {"check": fn.__name__, "arg": arg, "error": f"{type(exc).__name__}: {exc}"}
        r["seconds"] = round(time.perf_counter() - started, 2)
        print(json.dumps(r), flush=True)
        results.append(r)


if __name__ == "__main__":
    main()
