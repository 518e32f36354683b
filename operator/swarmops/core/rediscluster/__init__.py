"""RedisCluster's functional core: names, Kubernetes objects, the cluster as observed, and
the plan that heals, scales and reshards it. Nothing here does I/O."""
