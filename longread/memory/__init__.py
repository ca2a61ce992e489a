"""Self-Controlled Memory (Wang et al., arXiv:2304.13343): a memory stream, embedders, ranking and the controller.

    from longread.memory import MemoryController, MemoryStream, MiniLMEmbedder

    stream = MemoryStream("moby.memory.sqlite", embedder=MiniLMEmbedder())
    stream.add("moby", "note", "Ahab wants to kill the white whale.", spans=[{"segment": 0, "start": 0, "end": 812}])
    controller = MemoryController(model, stream, activation="always")
    memory = controller.activate("moby", "What does Ahab want?")
    messages = controller.fuse("What does Ahab want?", memory.flash, memory.memories, window=4096, max_new_tokens=256)
"""

from .controller import Activation, FusedPrompt, Gate, MemoryController, Recalled, parse_yes_no
from .embedders import Embedder, HashingEmbedder, LiteLLMEmbedder, MiniLMEmbedder, default_embedder, fold, words
from .prompts import DEFAULT_MEMORY_PROMPTS, MemoryPrompts
from .retrieval import RetrievalConfig, Scored, Weights, bm25, rank, recency_scores
from ..results import Span
from .store import KINDS, EmbedderMismatch, Kind, MemoryItem, MemoryStoreError, MemoryStream
from .vectors import SessionVectors

__all__ = [
    "Activation", "DEFAULT_MEMORY_PROMPTS", "Embedder", "EmbedderMismatch", "FusedPrompt", "Gate", "HashingEmbedder",
    "KINDS", "Kind", "LiteLLMEmbedder", "MemoryController", "MemoryItem", "MemoryPrompts", "MemoryStoreError",
    "MemoryStream", "MiniLMEmbedder", "Recalled", "RetrievalConfig", "Scored", "SessionVectors", "Span", "Weights",
    "bm25", "default_embedder", "fold", "parse_yes_no", "rank", "recency_scores", "words",
]
