"""Loupe indexer: scan a photo collection, decode, embed and catalog it."""
