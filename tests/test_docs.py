"""Every Python code block in docs/ runs (page by page, in order, each page in its own process on a
temporary SQLite database), but those marked `<!-- docs: not run ... -->`; and the site builds
strictly (scripts/check runs `mkdocs build --strict` too)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.docs_runner import python_blocks

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted((ROOT / "docs").rglob("*.md"))


@pytest.mark.process
@pytest.mark.timeout(120)
@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT / "docs")) for p in PAGES])
def test_the_python_blocks_of_the_page_run(page: Path, tmp_path: Path) -> None:
    blocks = python_blocks(page.read_text())
    if not any(runnable for _, _, runnable in blocks):
        return
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "CAIRN_DATABASE_URL": f"sqlite:///{tmp_path}/cairn.db", "PYTHONPATH": path}
    done = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "docs_runner.py"), str(page), str(tmp_path)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=110,
    )
    assert done.returncode == 0, f"{page}:\n{done.stdout}\n{done.stderr}"


def test_the_runner_finds_blocks_and_honours_the_marker() -> None:
    text = "\n".join(
        [
            "```python",
            "x = 1",
            "```",
            "<!-- docs: not run (Temporal's code) -->",
            "```python",
            "from temporalio import workflow",
            "```",
            '=== "Cairn"',
            "",
            "    ```python",
            "    y = 2",
            "    ```",
            "```bash",
            "cairn runs",
            "```",
        ]
    )
    assert python_blocks(text) == [
        (1, "x = 1", True),
        (5, "from temporalio import workflow", False),
        (10, "y = 2", True),
    ]


def test_the_site_builds_strictly(tmp_path: Path) -> None:
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(tmp_path / "site")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
