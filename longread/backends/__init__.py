"""Model access: one chat interface (base.ChatModel) over litellm, the local transformers engine and a mock."""

from .base import ChatModel, Completion, Message, check_window
from .registry import get_model, is_local_model, register_backend

__all__ = ["ChatModel", "Completion", "Message", "check_window", "get_model", "is_local_model", "register_backend"]
