"""`python -m cairn ...` is `cairn ...` (for environments where the console script is not on PATH)."""

from __future__ import annotations

from cairn.cli.main import main

if __name__ == "__main__":
    main()
