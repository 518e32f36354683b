"""RedisCluster's imperative shell towards Redis: connections to the nodes (redis.asyncio,
never redis-cli), one observation of the cluster, and the execution of the plan's
actions. The decisions are made in `swarmops.core.rediscluster`."""
