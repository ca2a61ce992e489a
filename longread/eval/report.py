"""`longread eval report RESULTS.jsonl... --out DIR`: DIR/report.md with tables, and PNG plots beside it.

- scores: setting x dataset, the mean score with its bootstrap 95% interval and n (scores.png: the same as bars);
- cost: calls, prompt and completion tokens, dollars and seconds per case, and failures, per setting and dataset;
- accuracy against document length, one panel per dataset, a line per setting (accuracy_by_length.png);
- needles: a depth x length heat map per setting and needle kind (needles_heatmap.png), and a table by length;
- score against seconds per case (cost.png): what each setting's score costs.

A setting is a strategy, with the model, window and kv added to its name when the files hold more than one.
Results of the same case and setting appear once (the last line wins, as after a resumed run with retries).
Failed cases are not scored: they are counted in the `failed` column and listed at the end.
"""

from __future__ import annotations

import math
import textwrap
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from statistics import mean
from typing import Any, Iterable, Sequence

from .metrics import MAIN_METRIC, bootstrap_interval
from .record import EvalRecord
from .runner import read_results

NEEDLE_PREFIX = "needle-"


def load_results(paths: Iterable[str | Path]) -> list[EvalRecord]:
    """The records of `paths`, the last of each key (case and setting) only."""
    latest: dict[tuple, EvalRecord] = {}
    for path in paths:
        for record in read_results(path):
            latest[record.key] = record
    return list(latest.values())


@dataclass(frozen=True)
class Labeller:
    """Names a record's setting by what varies across the files: the strategy, then model, window and kv if needed."""

    models: bool
    windows: bool
    kvs: bool

    @classmethod
    def of(cls, lines: Sequence[EvalRecord]) -> "Labeller":
        return cls(len({l.model for l in lines}) > 1, len({l.window for l in lines}) > 1,
                   len({l.kv for l in lines}) > 1)

    def __call__(self, line: EvalRecord) -> str:
        parts = [str(line.strategy)]
        if self.models:
            parts.append(_short_model(str(line.model)))
        if self.windows:
            parts.append(f"w{line.window}")
        if self.kvs:
            parts.append(f"kv {line.kv or 'default'}")
        return " · ".join(parts)


def _short_model(model: str) -> str:
    return model.rstrip("/").rsplit("/", 1)[-1] if model.startswith("hf:") else model


def _scored(lines: Iterable[EvalRecord]) -> list[float]:
    return [float(l.score) for l in lines if l.scored]  # type: ignore[arg-type]


def _interval(values: Sequence[float]) -> str:
    if not values:
        return "—"
    m, low, high = bootstrap_interval(values)
    if math.isnan(low):
        return f"{m:.3f} (n {len(values)})"
    return f"{m:.3f} [{low:.3f}, {high:.3f}] (n {len(values)})"


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    out = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(out)


def _grouped(lines: Sequence[EvalRecord], label: Labeller) -> dict[tuple[str, str], list[EvalRecord]]:
    groups: dict[tuple[str, str], list[EvalRecord]] = defaultdict(list)
    for line in lines:
        groups[(label(line), str(line.dataset))].append(line)
    return groups


def _per_case(lines: Sequence[EvalRecord], field: str) -> float:
    ok = [l for l in lines if not l.failed]
    values = [float(l.usage.get(field) or 0) for l in ok]
    return mean(values) if values else 0.0


def _seconds(lines: Sequence[EvalRecord]) -> float:
    ok = [float(l.seconds or 0) for l in lines if not l.failed]
    return mean(ok) if ok else 0.0


def length_of(line: EvalRecord) -> int | None:
    """The length a record is plotted at: a needle case's asked length, else the document's tokens as read."""
    if line.metadata.get("length"):
        return int(line.metadata["length"])
    tokens = line.document_tokens
    return int(tokens) if tokens else None


def _length_bins(values: Sequence[int]) -> list[tuple[int, int]]:
    """Ranges of lengths for a dataset: each distinct value when there are few (needles), else powers of two."""
    distinct = sorted(set(values))
    if len(distinct) <= 8:
        return [(v, v) for v in distinct]
    low = 2 ** math.floor(math.log2(max(1, distinct[0])))
    bins = []
    while low <= distinct[-1]:
        bins.append((low, low * 2 - 1))
        low *= 2
    return [b for b in bins if any(b[0] <= v <= b[1] for v in distinct)]


def _bin_label(b: tuple[int, int]) -> str:
    def k(n: int) -> str:
        return f"{n / 1000:.0f}k" if n >= 1000 else str(n)

    return k(b[0]) if b[0] == b[1] else f"{k(b[0])}–{k(b[1] + 1)}"


# -- markdown -------------------------------------------------------------------------------------------------------
def write_report(paths: Sequence[str | Path], out_dir: str | Path) -> Path:
    """Writes OUT/report.md and the plots; returns the report's path. ValueError when there is nothing to report."""
    lines = load_results(paths)
    if not lines:
        raise ValueError("no result lines in " + ", ".join(str(p) for p in paths))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    label = Labeller.of(lines)
    groups = _grouped(lines, label)
    settings = sorted({s for s, _ in groups})
    datasets = sorted({d for _, d in groups})
    tasks = {str(l.dataset): str(l.task) for l in lines}

    plots = _plots(lines, label, settings, datasets, out)
    md: list[str] = ["# Evaluation report", ""]
    names = [f"`{Path(p).name}`" for p in paths]
    sources = ", ".join(names) if len(names) <= 3 else f"{len(names)} files"
    md.append(f"{len(lines)} results from {sources}; "
              f"models: {', '.join(sorted({str(l.model) for l in lines}))}; windows: "
              f"{', '.join(str(w) for w in sorted({l.window for l in lines if l.window is not None}))}; "
              f"kv: {', '.join(sorted({str(l.kv or 'default') for l in lines}))}.")
    md.append("")
    md.append("Scores are means with bootstrap 95% intervals (percentile, 2000 resamples, seed 0) and the number of "
              "scored cases; the metric of each dataset: " +
              ", ".join(f"{d} {MAIN_METRIC.get(tasks.get(d, ''), 'score')}" for d in datasets) + ".")
    md += ["", "## Scores", ""]
    md.append(_table(["setting", *datasets],
                     [[s, *(_interval(_scored(groups.get((s, d), []))) for d in datasets)] for s in settings]))
    if "scores.png" in plots:
        md += ["", "![scores by setting and dataset](scores.png)"]
    md += ["", "## Cost per case", "",
           "Means over the cases that finished: model calls, prompt and completion tokens, dollars (API prices known "
           "to litellm; local models are free) and wall-clock seconds.", ""]
    rows = []
    for s in settings:
        for d in datasets:
            group = groups.get((s, d))
            if not group:
                continue
            failed = sum(1 for l in group if l.failed)
            rows.append([s, d, len(group) - failed, failed, f"{_per_case(group, 'calls'):.1f}",
                         f"{_per_case(group, 'prompt_tokens'):,.0f}", f"{_per_case(group, 'completion_tokens'):,.0f}",
                         f"${_per_case(group, 'cost_usd'):.4f}", f"{_seconds(group):.1f}"])
    md.append(_table(["setting", "dataset", "n", "failed", "calls", "prompt tokens", "completion tokens", "cost",
                      "seconds"], rows))
    if "cost.png" in plots:
        md += ["", "![score against seconds per case](cost.png)"]
    if "accuracy_by_length.png" in plots:
        md += ["", "## Accuracy against document length", "", "![accuracy by document length](accuracy_by_length.png)"]
    md += _needle_section(lines, label, settings, plots)
    md += _summary_section(lines, label, settings)
    md += _failures(lines, label)
    target = out / "report.md"
    target.write_text("\n".join(md) + "\n", encoding="utf-8")
    return target


def summary_rows(lines: Sequence[EvalRecord]) -> list[dict[str, Any]]:
    """One row per setting, dataset and length (needle lengths; other datasets pooled): the score with its interval
    and the mean cost of a case, as `docs/benchmarks/*.json` rows hold them."""
    groups: dict[tuple, list[EvalRecord]] = defaultdict(list)
    for line in lines:
        dataset = str(line.dataset)
        length = length_of(line) if dataset.startswith(NEEDLE_PREFIX) else None
        groups[(str(line.strategy), str(line.model), line.window, line.kv or "default",
                dataset, length)].append(line)
    rows = []
    for (strategy, model, window, kv, dataset, length), group in sorted(groups.items(), key=lambda g: str(g[0])):
        values = _scored(group)
        score, low, high = bootstrap_interval(values) if values else (math.nan,) * 3
        rows.append({
            "strategy": strategy, "model": model, "window": window, "kv": kv, "dataset": dataset, "length": length,
            "n": len(values), "errors": sum(1 for l in group if l.failed),
            "score": None if math.isnan(score) else round(score, 3),
            "ci95": None if math.isnan(low) else [round(low, 3), round(high, 3)],
            "calls": round(_per_case(group, "calls"), 1), "prompt_tokens": round(_per_case(group, "prompt_tokens")),
            "completion_tokens": round(_per_case(group, "completion_tokens")), "seconds": round(_seconds(group), 1),
            **_summary_means(group),
        })
    return rows


def write_summary(paths: Sequence[str | Path], target: str | Path, *, machine: str, command: str) -> Path:
    """Writes the scores of `paths` as a benchmark file ({benchmark, machine, command, date, results})."""
    import datetime
    import json

    lines = load_results(paths)
    if not lines:
        raise ValueError("no result lines in " + ", ".join(str(p) for p in paths))
    document = {"benchmark": "quality", "machine": machine, "command": command,
                "date": datetime.date.today().isoformat(), "results": summary_rows(lines)}
    out = Path(target)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")
    return out


def _needle_section(lines: Sequence[EvalRecord], label: Labeller, settings: Sequence[str],
                    plots: Sequence[str]) -> list[str]:
    needles = [l for l in lines if str(l.dataset).startswith(NEEDLE_PREFIX)]
    if not needles:
        return []
    md = ["", "## Needles", "", "Mean score by needle kind and length (over every depth), with n."]
    kinds = sorted({l.metadata.get("kind", l.dataset[len(NEEDLE_PREFIX):]) for l in needles})
    lengths = sorted({length_of(l) for l in needles if length_of(l)})
    header = ["setting", *(f"{k} {_bin_label((n, n))}" for k in kinds for n in lengths)]
    rows = []
    for s in settings:
        row: list[Any] = [s]
        for k in kinds:
            for n in lengths:
                scores = _scored(l for l in needles if label(l) == s and _kind(l) == k and length_of(l) == n)
                row.append(f"{mean(scores):.2f} ({len(scores)})" if scores else "—")
        rows.append(row)
    md += ["", _table(header, rows)]
    if "needles_heatmap.png" in plots:
        md += ["", "Depth x length, one map per setting and kind:", "", "![needles heat map](needles_heatmap.png)"]
    return md


SUMMARY_COLUMNS = (("rouge_l", "ROUGE-L", "{:.3f}"), ("coverage", "coverage", "{:.3f}"),
                   ("repeated_sentences", "repeated sentences", "{:.2f}"),
                   ("repeated_3gram_share", "repeated 3-grams", "{:.3f}"),
                   ("unsupported_per_100_words", "unsupported / 100 words", "{:.2f}"), ("words", "words", "{:.0f}"))


def _summary_means(group: Sequence[EvalRecord]) -> dict[str, float]:
    """The summary metrics' means of a group of summary lines (none for other tasks)."""
    done = [l for l in group if l.task == "summary" and not l.failed]
    out = {}
    for key, _, _ in SUMMARY_COLUMNS[1:]:
        values = [float(l.metrics[key]) for l in done if isinstance(l.metrics.get(key), (int, float))]
        if values:
            out[key] = round(mean(values), 4)
    return out


def _summary_section(lines: Sequence[EvalRecord], label: Labeller, settings: Sequence[str]) -> list[str]:
    """What ROUGE does not see, per setting: repetition, names and numbers the document lacks, coverage."""
    summaries = [l for l in lines if l.task == "summary" and not l.failed]
    if not summaries:
        return []
    md = ["", "## Summaries", "", "Means over the summaries each setting wrote (docs/evaluation.md, Metrics): ROUGE-L "
          "and coverage of the best reference, sentences repeated, the share of repeated word 3-grams, and names "
          "or numbers the document lacks per 100 words."]
    rows = []
    for s in settings:
        group = [l for l in summaries if label(l) == s]
        if not group:
            continue
        row: list[Any] = [s, len(group)]
        for key, _, fmt in SUMMARY_COLUMNS:
            values = [float(l.metrics[key]) for l in group if isinstance(l.metrics.get(key), (int, float))]
            row.append(fmt.format(mean(values)) if values else "—")
        rows.append(row)
    md += ["", _table(["setting", "n", *(title for _, title, _ in SUMMARY_COLUMNS)], rows)]
    return md


def _kind(line: EvalRecord) -> str:
    return line.metadata.get("kind") or line.dataset[len(NEEDLE_PREFIX):]


def _failures(lines: Sequence[EvalRecord], label: Labeller) -> list[str]:
    failed = [l for l in lines if l.failed]
    if not failed:
        return []
    counts = Counter((label(l), str(l.error)[:160]) for l in failed)
    md = ["", "## Failures", "", f"{len(failed)} case(s) failed and are not scored above."]
    md += ["", _table(["setting", "error", "cases"],
                      [[s, e.replace("|", "\\|"), n] for (s, e), n in counts.most_common(20)])]
    return md


# -- plots ----------------------------------------------------------------------------------------------------------
def _plots(lines: Sequence[EvalRecord], label: Labeller, settings: Sequence[str], datasets: Sequence[str],
           out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    made = []
    colors = {s: plt.get_cmap("tab10")(i % 10) for i, s in enumerate(settings)}
    groups = _grouped(lines, label)
    for name, draw in (("scores.png", _plot_scores), ("accuracy_by_length.png", _plot_lengths),
                       ("needles_heatmap.png", _plot_heatmaps), ("cost.png", _plot_cost)):
        figure = draw(plt, lines, groups, label, settings, datasets, colors)
        if figure is not None:
            figure.savefig(out / name, dpi=110, bbox_inches="tight")
            plt.close(figure)
            made.append(name)
    return made


def _plot_scores(plt, lines, groups, label, settings, datasets, colors):
    if len(settings) > 6:
        return _plot_scores_by_panel(plt, groups, settings, datasets, colors)
    figure, ax = plt.subplots(figsize=(max(6, 1.2 * len(datasets) * max(1, len(settings)) / 2 + 2), 4))
    width = 0.8 / max(1, len(settings))
    for i, s in enumerate(settings):
        xs, ys, errs = [], [], [[], []]
        for j, d in enumerate(datasets):
            values = _scored(groups.get((s, d), []))
            if not values:
                continue
            m, low, high = bootstrap_interval(values)
            xs.append(j + (i - (len(settings) - 1) / 2) * width)
            ys.append(m)
            errs[0].append(0 if math.isnan(low) else m - low)
            errs[1].append(0 if math.isnan(high) else high - m)
        bars = ax.bar(xs, ys, width, yerr=errs, capsize=3, label=s, color=colors[s])
        ax.bar_label(bars, labels=[f"{y:.2f}" for y in ys], fontsize=7, padding=2, label_type="edge")
    ax.set_xticks(range(len(datasets)), datasets, rotation=20, ha="right")
    ax.set_ylim(0, 1.12)
    ax.set_ylabel("mean score (95% interval)")
    ax.set_title("Score by dataset")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.grid(axis="y", alpha=0.3)
    return figure


def _plot_scores_by_panel(plt, groups, settings, datasets, colors):
    """Many settings: one panel per dataset with a horizontal bar per setting, so the figure grows in height by a
    line per setting instead of in width by a bar per setting and dataset."""
    figure, axes = plt.subplots(1, len(datasets), figsize=(2.6 * len(datasets) + 3, 0.26 * len(settings) + 1.6),
                                sharey=True, squeeze=False)
    rows = list(range(len(settings)))[::-1]  # the first setting on top
    for ax, d in zip(axes.flat, datasets):
        for y, s in zip(rows, settings):
            values = _scored(groups.get((s, d), []))
            if not values:
                continue
            m, low, high = bootstrap_interval(values)
            err = [[0 if math.isnan(low) else m - low], [0 if math.isnan(high) else high - m]]
            ax.barh(y, m, 0.7, xerr=err, capsize=2, color=colors[s], error_kw={"elinewidth": 0.8})
            ax.text(min(m, 0.98), y, f" {m:.2f} ({len(values)})", va="center", fontsize=6.5)
        ax.set_xlim(0, 1.05)
        ax.set_title(d, fontsize=9)
        ax.grid(axis="x", alpha=0.3)
    axes.flat[0].set_yticks(rows, settings, fontsize=7.5)
    figure.suptitle("Mean score by dataset (95% interval; cases in brackets)", fontsize=10)
    figure.tight_layout()
    return figure


def _plot_lengths(plt, lines, groups, label, settings, datasets, colors):
    panels = [d for d in datasets if any(length_of(l) for s in settings for l in groups.get((s, d), []))]
    if not panels:
        return None
    columns = min(3, len(panels))
    rows = math.ceil(len(panels) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4.5 * columns, 3.4 * rows), squeeze=False, sharey=True)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    for ax, d in zip(axes.flat, panels):
        lengths = [length_of(l) for s in settings for l in groups.get((s, d), []) if length_of(l)]
        bins = _length_bins(lengths)
        for s in settings:
            xs, ys = [], []
            for b in bins:
                values = _scored(l for l in groups.get((s, d), []) if (length_of(l) or -1) in range(b[0], b[1] + 1))
                if values:
                    xs.append(math.sqrt(b[0] * (b[1] + 1)) if b[0] != b[1] else b[0])
                    ys.append(mean(values))
            if xs:
                ax.plot(xs, ys, marker="o", label=s, color=colors[s])
        ax.set_xscale("log")
        ticks = [math.sqrt(b[0] * (b[1] + 1)) if b[0] != b[1] else b[0] for b in bins]
        ax.set_xticks(ticks, [_bin_label(b) for b in bins], fontsize=8)
        ax.minorticks_off()
        if len(ticks) == 1:
            ax.set_xlim(ticks[0] / 1.5, ticks[0] * 1.5)
        ax.set_title(d)
        ax.set_xlabel("document tokens")
        ax.set_ylim(-0.05, 1.05)
        ax.grid(alpha=0.3)
    for row in axes:
        row[0].set_ylabel("mean score")
    handles, names = axes.flat[0].get_legend_handles_labels()
    figure.tight_layout()
    figure.legend(handles, names, loc="upper left", bbox_to_anchor=(1.0, 0.95), fontsize=8)
    return figure


def _plot_heatmaps(plt, lines, groups, label, settings, datasets, colors):
    needles = [l for l in lines if str(l.dataset).startswith(NEEDLE_PREFIX) and length_of(l) is not None]
    if not needles:
        return None
    kinds = sorted({_kind(l) for l in needles})
    shown = [s for s in settings if any(label(l) == s for l in needles)]
    lengths = sorted({length_of(l) for l in needles})
    depths = sorted({float(l.metadata.get("depth", 0)) for l in needles})
    figure, axes = plt.subplots(len(kinds), len(shown), figsize=(1.1 * len(lengths) * len(shown) + 1.5,
                                                                  0.55 * len(depths) * len(kinds) + 1.6),
                                squeeze=False)
    image = None
    for r, kind in enumerate(kinds):
        for c, s in enumerate(shown):
            ax = axes[r][c]
            grid = [[math.nan] * len(lengths) for _ in depths]
            for i, depth in enumerate(depths):
                for j, n in enumerate(lengths):
                    values = _scored(l for l in needles if label(l) == s and _kind(l) == kind and length_of(l) == n
                                     and float(l.metadata.get("depth", 0)) == depth)
                    if values:
                        grid[i][j] = mean(values)
                        ax.text(j, i, f"{grid[i][j]:.2f}", ha="center", va="center", fontsize=8,
                                color="black" if 0.3 < grid[i][j] < 0.85 else "white")
            image = ax.imshow(grid, cmap="RdYlGn", vmin=0, vmax=1, aspect="auto")
            ax.set_xticks(range(len(lengths)), [_bin_label((n, n)) for n in lengths], fontsize=8)
            ax.set_yticks(range(len(depths)), [f"{d:g}" for d in depths] if c == 0 else [], fontsize=8)
            if r == 0:  # long setting names wrap onto lines of their own instead of running into the next panel
                ax.set_title(textwrap.fill(s.replace(",", ", "), 24), fontsize=8)
            if c == 0:
                ax.set_ylabel(f"{kind}\ndepth", fontsize=9)
            if r == len(kinds) - 1:
                ax.set_xlabel("length (tokens)", fontsize=8)
    if image is not None:
        figure.colorbar(image, ax=axes, shrink=0.8, label="mean score")
    return figure


def _plot_cost(plt, lines, groups, label, settings, datasets, colors):
    markers = "osD^vP*X<>"
    figure, ax = plt.subplots(figsize=(6.5, 4.2))
    drawn = False
    for (s, d), group in groups.items():
        values = _scored(group)
        seconds = _seconds(group)
        if values and seconds > 0:
            ax.scatter(seconds, mean(values), color=colors[s], marker=markers[datasets.index(d) % len(markers)], s=50)
            drawn = True
    if not drawn:
        plt.close(figure)
        return None
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    handles = [Patch(color=colors[s], label=s) for s in settings]
    handles += [Line2D([], [], color="gray", marker=markers[i % len(markers)], linestyle="", label=d)
                for i, d in enumerate(datasets)]
    ax.set_xscale("log")
    ax.set_xlabel("seconds per case")
    ax.set_ylabel("mean score")
    ax.set_ylim(-0.05, 1.05)
    ax.set_title("Score against time per case")
    ax.grid(alpha=0.3)
    ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return figure
