"""Losses: one per file; each docstring states its formula."""
