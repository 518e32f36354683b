"""Metric providers for canary analysis: the I/O side of `swarmops.core.analysis`."""
