from longread.agents import DEFAULT_PROMPTS
PROMPTS = DEFAULT_PROMPTS.with_overrides(
    segment_heading="Question: {question}\n\nSource text (part {number}):\n",
    worker_query_task=(
        "Question: {question}\n\n"
        "Find what in the source text helps answer the question. Copy each helpful sentence exactly, in quotes, "
        "on its own line starting with \"- \". Then copy the earlier notes that still help. Write only the notes. "
        "If nothing in the source text or the earlier notes helps, reply with exactly: NOTHING RELEVANT"
    ),
)
