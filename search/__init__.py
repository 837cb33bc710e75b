"""Loupe search: nearest neighbours, near-duplicate groups and reverse lookup over an index."""
