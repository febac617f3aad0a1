"""Render the chaos figures (the JSON lines of CAIRN_CHAOS_RESULTS) as the Markdown table that
docs/reliability.md shows: `python -m tests.chaos.report FILE`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tests.chaos.harness import table


def main(path: str) -> None:
    file = Path(path)
    rows = [json.loads(line) for line in file.read_text().splitlines() if line.strip()] if file.exists() else []
    print(table(rows) if rows else "(no figures recorded)")


if __name__ == "__main__":
    main(sys.argv[1])
