"""Run ``python -m search`` with a kill switch, from outside the product code.

    python tests/apply_crash_harness.py PHASE N -- duplicates --apply trash --yes --data-dir DATA ...

At the N-th time the command reaches PHASE this process SIGKILLs itself, as abruptly as the OOM killer or
a power cut would:

    begin          right after the N-th ``begin`` record is fsync'ed, before its file is touched
    changed        after the N-th apply action changed its file, before the catalog follows
    undo-changed   after the N-th undo put its file back, before the catalog follows
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

PHASES = ("begin", "changed", "undo-changed")


def main(argv: list[str]) -> int:
    phase, at, separator, *args = argv
    if phase not in PHASES or separator != "--":
        raise SystemExit(__doc__)
    count = 0

    def reached() -> None:
        nonlocal count
        count += 1
        if count == int(at):
            os.kill(os.getpid(), signal.SIGKILL)

    import search.apply
    import search.journal
    import search.undo

    if phase == "begin":
        begin = search.journal.JournalWriter.begin

        def counted_begin(self: Any, action: Any) -> None:
            begin(self, action)
            reached()

        search.journal.JournalWriter.begin = counted_begin  # type: ignore[method-assign]
    elif phase == "changed":
        forward = search.apply.catalog_forward

        def counted_forward(catalog: Any, action: Any) -> None:
            reached()
            forward(catalog, action)

        search.apply.catalog_forward = counted_forward
    else:
        backward = search.undo.catalog_backward

        def counted_backward(catalog: Any, action: Any) -> None:
            reached()
            backward(catalog, action)

        search.undo.catalog_backward = counted_backward

    from search.cli import main as search_main

    return search_main(args)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
