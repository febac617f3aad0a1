"""Run the Python code blocks of one documentation page, in order, as one module (see
docs/contributing-docs.md): `python tests/docs_runner.py docs/page.md WORKDIR`.

The blocks are written to WORKDIR/docs_<page>.py (so that `inspect` finds the source of the
workflows they define) and executed with top-level `await` allowed, as in an asyncio REPL.
Blocks preceded by `<!-- docs: not run ... -->` (another system's code, fragments) are left out.
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import re
import sys
import textwrap
import types
from pathlib import Path

FENCE = re.compile(r"^(?P<indent>\s*)```(?P<lang>[\w-]*)(?P<info>.*)$")
NOT_RUN = re.compile(r"^\s*<!--\s*docs:\s*not run\b.*-->\s*$")


def python_blocks(text: str) -> list[tuple[int, str, bool]]:
    """(line number, code, runnable) of each ```python block of a page."""
    lines = text.splitlines()
    out: list[tuple[int, str, bool]] = []
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if m is None or not m["lang"]:
            i += 1
            continue
        indent, start = m["indent"], i
        body: list[str] = []
        i += 1
        while i < len(lines) and lines[i].strip() != "```":
            body.append(lines[i])
            i += 1
        i += 1
        if m["lang"] != "python":
            continue
        before = next((ln for ln in reversed(lines[:start]) if ln.strip()), "")
        code = textwrap.dedent("\n".join(ln[len(indent) :] if ln.startswith(indent) else ln for ln in body))
        out.append((start + 1, code, NOT_RUN.match(before) is None))
    return out


def main(page: Path, workdir: Path) -> None:
    name = "docs_" + re.sub(r"\W", "_", page.stem)
    parts = []
    for line, code, runnable in python_blocks(page.read_text()):
        if runnable:
            parts.append(f"# --- {page}:{line} ---\n{code}\n")
    source = "\n".join(parts)
    path = workdir / f"{name}.py"
    path.write_text(source)
    module = types.ModuleType(name)
    module.__file__ = str(path)
    sys.modules[name] = module
    sys.path.insert(0, str(workdir))
    code = compile(source, str(path), "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    result = eval(code, module.__dict__)
    if inspect.iscoroutine(result):
        asyncio.run(result)
    print(f"ran {len(parts)} blocks of {page}")


if __name__ == "__main__":
    main(Path(sys.argv[1]).resolve(), Path(sys.argv[2]).resolve())
