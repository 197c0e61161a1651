"""Judging plans: the one evaluator, twin verification, repair, and solver comparison."""
