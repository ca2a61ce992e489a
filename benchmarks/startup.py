"""Start-up time of the command line, side by side with `python -c "import typer"` in the same run.

    python benchmarks/startup.py [--repeats 15]

Each command runs in a fresh process, interleaved with the others (so load on a shared machine hits them alike);
the table gives the median and the fastest of the repeats, and each command's ratio to `import typer`. Targets:
`longread --help` under 0.5 s and at most 2.5x `import typer`; a missing API key reported within 2 s.
Writes docs/benchmarks/startup.json.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _common import REPO, write_record

LONGREAD = str(Path(sys.executable).parent / "longread")
STORY = str(REPO / "examples" / "lighthouse_keeper.md")
COMMANDS = {
    "python -c 'import typer'": [sys.executable, "-c", "import typer"],
    "longread --help": [LONGREAD, "--help"],
    "longread ask --help": [LONGREAD, "ask", "--help"],
    "longread models": [LONGREAD, "models"],
    "longread ask (OPENAI_API_KEY missing)": [LONGREAD, "ask", STORY, "Who is Ada?", "--model", "openai/gpt-4o-mini"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    seconds: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(args.repeats):
        for name, command in COMMANDS.items():
            started = time.perf_counter()
            subprocess.run(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
            seconds[name].append(time.perf_counter() - started)
    base = statistics.median(seconds["python -c 'import typer'"])
    rows = []
    print(f"{'command':40} {'median s':>9} {'fastest s':>10} {'x typer':>8}")
    for name, values in seconds.items():
        median = statistics.median(values)
        row = {"command": name, "median_s": round(median, 3), "fastest_s": round(min(values), 3),
               "ratio_to_import_typer": round(median / base, 2), "repeats": args.repeats}
        rows.append(row)
        print(f"{name:40} {median:9.3f} {min(values):10.3f} {median / base:8.2f}")
    load = os.getloadavg()[0]
    for row in rows:
        row["load_average_1min"] = round(load, 2)
    path = write_record("startup", f"python benchmarks/startup.py --repeats {args.repeats}", rows)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
