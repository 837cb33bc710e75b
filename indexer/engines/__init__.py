"""The build's engines: where files are read, decoded and embedded (:mod:`indexer.engines.base` says how).

:mod:`indexer.engines.local` runs DataLoader decode workers and the model in the build's process;
:mod:`indexer.engines.ray` runs both on a Ray cluster. Both commit through the same
:class:`indexer.committer.BatchCommitter`.
"""
