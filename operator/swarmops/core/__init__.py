"""The functional core: pure decisions over plain data, no I/O (tested without a cluster)."""
