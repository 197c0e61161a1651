"""The compiled step loop of the twin (numba): private to :mod:`twin`."""
