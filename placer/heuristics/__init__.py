"""Placement heuristics: ``ffd-bisect`` (ours), ``greedy-paper`` (the papers'), the baselines, and local
search."""
