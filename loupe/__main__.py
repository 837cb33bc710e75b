"""``python -m loupe``, the same as the ``loupe`` command."""

from loupe.cli import main

raise SystemExit(main())
