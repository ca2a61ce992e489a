"""`--trace`: what each agent wrote and what the checks made of it, as lines on stderr after a document's result.

For the grounded chain: every call's reply (first lines), every claim kept (with its part and source sentence),
every claim dropped with the reason, the claims set aside in a conflict, the collapse rounds and the summary
check. The same facts are in `--json` (`calls`, `claims`, `dropped`, `trace`) for programs.
"""

from __future__ import annotations

from typing import Any

REPLY_CHARS = 300


def _one_line(text: str, limit: int = REPLY_CHARS) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _parts(claim: dict[str, Any]) -> str:
    parts = claim.get("parts") or [claim.get("part", 0)]
    return ", ".join(str(int(p) + 1) for p in parts)


def trace_lines(data: dict[str, Any]) -> list[str]:
    lines = [f"trace: {data.get('source', '')} ({data.get('strategy', '')})"]
    if data.get("route_reason"):
        lines.append(f"  route: {data.get('route')} ({data['route_reason']})")
    for call in data.get("calls", []):
        where = f" part {int(call['segment']) + 1}" if call.get("segment") is not None else ""
        path = f" path {call['path']}" if call.get("path") is not None else ""
        lines.append(f"  {call.get('agent')}{where}{path}: {_one_line(call.get('reply', '')) or '(empty)'}")
    for claim in data.get("claims", []):
        located = " [sentence found by code]" if claim.get("located") else ""
        lines.append(f"  kept (part {_parts(claim)}): {_one_line(claim.get('text', ''))}{located}")
        if claim.get("source"):
            lines.append(f"      source: \"{_one_line(claim['source'])}\"")
    for dropped in data.get("dropped", []):
        claim = dropped.get("claim", {})
        lines.append(f"  dropped (part {_parts(claim)}): {_one_line(claim.get('text', ''))} -- {dropped.get('reason')}")
    trace = data.get("trace") or {}
    for aside in trace.get("set_aside", []):
        lines.append(f"  set aside (part {', '.join(map(str, aside.get('parts', [])))}): {_one_line(aside['claim'])} "
                     f"-- {aside.get('reason')}")
    for pair in trace.get("conflicts", []):
        lines.append(f"  left to the manager: \"{_one_line(pair[0], 120)}\" against \"{_one_line(pair[1], 120)}\"")
    for sentence in trace.get("bridged", []):
        lines.append(f"  followed a name to: \"{_one_line(sentence, 200)}\"")
    if trace.get("collapse_rounds"):
        lines.append(f"  collapse: {trace['collapse_rounds']} round(s) merged the claims to fit the manager's window")
    if trace.get("cut_to_fit"):
        lines.append(f"  cut to fit: the {trace['cut_to_fit']} least relevant claim(s) left out")
    check = trace.get("summary_check")
    if check:
        if check.get("repeated_removed"):
            lines.append(f"  summary: {len(check['repeated_removed'])} repeated sentence(s) removed")
        if check.get("unsupported"):
            lines.append(f"  summary: names or numbers the document lacks: {', '.join(check['unsupported'])}"
                         + (" (one retry)" if check.get("retried") else ""))
        after = check.get("after_retry") or {}
        for sentence in after.get("dropped_sentences", []):
            lines.append(f"  summary: dropped \"{_one_line(sentence, 160)}\"")
    return lines
