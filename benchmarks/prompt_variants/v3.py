from longread.agents import DEFAULT_PROMPTS
PROMPTS = DEFAULT_PROMPTS.with_overrides(
    worker_query_task=(
        "Question: {question}\n\n"
        "Does the source text above help answer the question, even in part? If it does, write notes: the answer "
        "as far as this text gives it, and the sentences it comes from, copied exactly in quotes. Keep the earlier "
        "notes that still help. Write only the notes. If the source text says nothing that helps, and there are no "
        "earlier notes, reply with exactly: NOTHING RELEVANT"
    ),
)
