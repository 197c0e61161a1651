"""Exact placement: the packing model, capacity classes from the oracle, lower bounds, column generation,
arc-flow, CP-SAT and ILP, the oracle-checked exact loop, and classic bin packing."""
