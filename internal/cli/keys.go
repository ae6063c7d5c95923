package cli

// The sub-prefixes of the limiter's, the cache's and the budgets' keys
// under REDIS_KEY_PREFIX: each one's keys in Redis start with the two.
// The whole-program tests (internal/systemtest) find keys by them.
const (
	RedisLimitPrefix  = redisLimitPrefix
	RedisCachePrefix  = redisCachePrefix
	RedisBudgetPrefix = redisBudgetPrefix
)
