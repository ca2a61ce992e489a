from longread.agents import DEFAULT_PROMPTS
ns = {}; exec(open(__file__.replace("v4.py", "v3.py")).read(), ns)
PROMPTS = ns["PROMPTS"].with_overrides(segment_heading="Question: {question}\n\nSource text (part {number}):\n")
