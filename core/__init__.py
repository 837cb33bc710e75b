"""Loupe's shared core: configuration, errors, the catalog, the vector and patch index files, the model and
photo decoding. The write side (:mod:`indexer`) and the read side (:mod:`search`, :mod:`ui`) both build on it;
it imports neither (import-linter contracts in ``pyproject.toml``)."""
