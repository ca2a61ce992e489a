"""Answer quality measured on cases (docs/evaluation.md); the `longread eval` command is cli/commands/eval.py.

    cases.py     the JSONL case format (load_cases, write_cases, Case)
    datasets.py  loaders of published sets (QuALITY, sci-fi, SQuALITY, LongBench v2) -> cases
    needles.py   needle-in-a-haystack cases at chosen lengths and depths
    metrics.py   exact/contains match, letters, true/false, ROUGE-L, token F1, bootstrap intervals
    record.py    EvalRecord: one line of a results file (a case under a setting, scored), to and from JSON
    runner.py    strategies x models x windows x kv over the cases, resumable, one JSON line per case
    report.py    Markdown tables and PNG plots from results files
"""
