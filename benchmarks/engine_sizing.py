"""How many concurrent calls (agents, evaluation cases, serve requests) one process fits on a 24, 80 and 141 GB
card: computed from the engine's sizing rule (longread/backends/local/memory.py), not measured.

For each model shape (weights counted off the model built on the `meta` device, in bf16), KV policy and call size:
agents = (card x --gpu-memory - weights - the prefix cache's budget - one call's prefill) / one static row. The row
is the policy's static form at the call's row size (what the engine allocates per live call); the prefill is the
dynamic cache the call's prompt is prefilled into plus one chunk's activations (the engine admits calls between
steps, so one round's prefills overlap: the table assumes one).

    .venv/bin/python benchmarks/engine_sizing.py          # prints the table, writes docs/benchmarks/engine-sizing.json
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_record  # noqa: E402

import torch  # noqa: E402

from longread.backends import kv  # noqa: E402
from longread.backends.local import memory  # noqa: E402
from longread.backends.local.engine import LocalModel  # noqa: E402
from longread.backends.local.prefix_cache import DEFAULT_MAX_BYTES  # noqa: E402

CARDS = {"24 GB": 24e9, "80 GB": 80e9, "141 GB": 141e9}
FRACTION = 0.9
MODELS = {
    # The published configurations (config.json of each model).
    "Qwen2.5-0.5B": ("qwen2", dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                                   num_attention_heads=14, num_key_value_heads=2, vocab_size=151936,
                                   tie_word_embeddings=True)),
    "Qwen2.5-1.5B": ("qwen2", dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
                                   num_attention_heads=12, num_key_value_heads=2, vocab_size=151936,
                                   tie_word_embeddings=True)),
    "Llama-3.1-8B": ("llama", dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                                   num_attention_heads=32, num_key_value_heads=8, head_dim=128, vocab_size=128256)),
}
CALLS = {  # name: (prompt tokens, new tokens)
    "chain worker, --window 8192": (7936, 256),
    "full over a 32k-token document": (32000, 512),
}
POLICIES = ("full", "fp8", "quant:4")


def meta_model(kind: str, shape: dict):
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    config = (LlamaConfig if kind == "llama" else Qwen2Config)(max_position_embeddings=131072, **shape)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device("meta"):
            return (LlamaForCausalLM if kind == "llama" else Qwen2ForCausalLM)(config)
    finally:
        torch.set_default_dtype(previous)


def rows() -> list[dict]:
    out = []
    row_size = LocalModel._static_window
    for model_name, (kind, shape) in MODELS.items():
        model = meta_model(kind, shape)
        weights = memory.weight_bytes(model)
        for call, (prompt, new) in CALLS.items():
            window = row_size(None, prompt + new)  # type: ignore[arg-type]
            for policy in POLICIES:
                cost = memory.call_cost(kv.parse_policy(policy), model.config, prompt=prompt, window=window,
                                        dtype=torch.bfloat16, vocab=shape["vocab_size"], chunk=512, static=True)
                fit = {card: memory.agents_that_fit(int(total), fraction=FRACTION, weights=weights, cost=cost,
                                                    reserve=DEFAULT_MAX_BYTES) for card, total in CARDS.items()}
                out.append({"model": model_name, "weights_bytes": weights, "call": call, "row_tokens": window,
                            "policy": policy, "row_bytes": cost.row, "prefill_bytes": cost.prefill,
                            "agents": fit, "fraction": FRACTION})
    return out


def main() -> None:
    results = rows()
    print("| model (bf16 weights) | call | row | --kv | row size | " + " | ".join(CARDS) + " |")
    print("| --- | --- | ---: | --- | ---: | " + " | ".join("---:" for _ in CARDS) + " |")
    for r in results:
        print(f"| {r['model']} ({memory.gb(r['weights_bytes'])}) | {r['call']} | {r['row_tokens']:,} | "
              f"`{r['policy']}` | {memory.gb(r['row_bytes'])} | "
              + " | ".join(str(r["agents"][card]) for card in CARDS) + " |")
    path = write_record("engine-sizing", "python benchmarks/engine_sizing.py", results,
                        "computed (no device): longread/backends/local/memory.py's sizing rule")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
