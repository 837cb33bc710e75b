"""Loupe: self-hosted image similarity search. ``loupe`` is the one command (see :mod:`loupe.cli`)."""
