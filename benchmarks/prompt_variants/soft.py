from longread.agents import DEFAULT_PROMPTS
PROMPTS = DEFAULT_PROMPTS.with_overrides(route_query_task=DEFAULT_PROMPTS.reader_query_task)
