"""The FAISS index files: derived from the catalog, shaped by the collection size, written atomically.

Where things are:

- :mod:`core.index.policy`: which index a collection gets (the one place the choice is made), factory
  strings, ``nprobe``;
- :mod:`core.index.source`: what an index holds, read from the catalog (one vector per photo, or one per
  patch cell, and the cell id encoding);
- :mod:`core.index.files`: pointer files (``global.json``, ``patches.json``), atomic writes, reading the
  current index;
- :mod:`core.index.build`: training and building an index in RAM;
- :mod:`core.index.ondisk`: on-disk shards and merging them into one memory-mapped lists file;
- :mod:`core.index.sync`: bringing the files up to the catalog (:func:`~core.index.sync.sync_index`);
- :mod:`core.index.tuning`: recall against exact search, and the ``nprobe`` that reaches the target;
- :mod:`core.index.verify`: every way the files disagree with the catalog.
"""
