"""SwarmOps: a Kubernetes operator that runs swarms of AI agents."""

__version__ = "0.1.0"
