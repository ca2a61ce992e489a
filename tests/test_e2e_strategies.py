"""Every strategy end to end with the real embedded model (and all-MiniLM-L6-v2 for retrieval) on the first
section of examples/lighthouse_keeper.md: structure, not wording (the 135M model's answers are weak)."""

from __future__ import annotations

from pathlib import Path

import pytest

from longread import Reader

pytestmark = pytest.mark.slow

STORY = Path(__file__).resolve().parents[1] / "examples" / "lighthouse_keeper.md"
WINDOW = 512
QUESTION = "What was the name of Ada's cat?"
EXPECTED_AGENTS = {
    "chain": {"worker", "manager"}, "lookback": {"worker", "manager"}, "multipath": {"worker", "manager", "judge"},
    "rag": {"reader"}, "truncate": {"reader"}, "full": {"reader"},
}


@pytest.fixture(scope="module")
def story() -> str:
    text = STORY.read_text()
    return text[: text.index("## II.")]  # the first section, about 430 tokens: 2 segments at this window


@pytest.mark.parametrize("name", [*EXPECTED_AGENTS, "auto"])
def test_each_strategy_with_the_embedded_model(embedded_model, story, name):
    reader = Reader(story, model=embedded_model, window=WINDOW, strategy=name)
    result = reader.ask(QUESTION)
    agents = {c.agent for c in result.calls}
    if name == "auto":
        assert result.extras["route"] in ("rag", "chain")
        assert agents == ({"reader"} if result.extras["route"] == "rag" else {"reader", "worker", "manager"}) \
            or (result.extras.get("not_found") and agents == {"reader", "worker"})
    elif result.extras.get("not_found"):
        assert agents == {"worker"}  # every worker found nothing: no manager call
    else:
        assert agents == EXPECTED_AGENTS[name]
    limit = result.window
    for call in result.calls:
        assert call.prompt_tokens + call.max_new_tokens <= limit
        assert 0 < call.completion_tokens <= call.max_new_tokens and call.reply.strip()
    assert result.answer.strip()
    for c in result.citations:
        assert 0 <= c.start < c.end <= len(story)
    if name in ("chain", "lookback", "multipath"):
        n = result.segments
        paths = 1
        if name == "multipath":  # as many paths as distinct reading orders: 2 for 2 segments, else 3
            paths = result.extras["paths"]
            assert paths == (2 if n == 2 else 3)
        assert n >= 2
        assert sum(c.agent == "worker" for c in result.calls) == paths * n
