"""Regenerate the access matrix in docs/access.md (`make docs`).

The matrix between `<!-- matrix:start -->` and `<!-- matrix:end -->` is computed by
`egide.access.matrix` (each cell an answer of `access.policy.decide`); the prose around it is
kept. `--check` writes nothing and exits 1 when the document is stale (the unit test
`tests/unit/access/test_access_matrix.py` checks the same).
"""

from __future__ import annotations

import sys
from pathlib import Path

from egide.access.matrix import render_markdown, splice

DOC = Path(__file__).resolve().parent.parent / "docs" / "access.md"


def main(argv: list[str]) -> int:
    text = DOC.read_text(encoding="utf-8")
    new = splice(text, render_markdown())
    if "--check" in argv:
        if new != text:
            sys.stderr.write(f"{DOC} is stale: run `make docs`\n")
            return 1
        return 0
    if new != text:
        DOC.write_text(new, encoding="utf-8")
        sys.stdout.write(f"updated {DOC}\n")
    else:
        sys.stdout.write(f"{DOC} is up to date\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
