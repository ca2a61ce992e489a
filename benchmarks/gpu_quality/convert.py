"""GGUF (verified upstream) -> a Hugging Face folder in bf16, as ../shared/models/build_eval_model.py does."""
import shutil, sys, tempfile
from pathlib import Path
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

src, out = Path(sys.argv[1]), Path(sys.argv[2])
tokenizer = AutoTokenizer.from_pretrained(src.parent, gguf_file=src.name)
loaded = AutoModelForCausalLM.from_pretrained(src.parent, gguf_file=src.name, dtype=torch.bfloat16)
config = loaded.config.to_dict(); config.pop("quantization_config", None)
config = type(loaded.config).from_dict(config)
with torch.device("meta"):
    model = type(loaded)(config)
model.load_state_dict(loaded.state_dict(), strict=False, assign=True)
if config.tie_word_embeddings:
    model.tie_weights()
model.generation_config = loaded.generation_config
out.mkdir(parents=True, exist_ok=True)
model.save_pretrained(out)
tokenizer.save_pretrained(out)
print("saved", out)
