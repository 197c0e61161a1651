"""The problem: instance files (strict schema, read/write), generators, summaries and the memory rule of one
GPU."""
