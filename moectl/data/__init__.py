"""Corpus building: sources (hf, files, builtin), tokenizers, splitting, packing, storage."""
