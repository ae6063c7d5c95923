package cli

// RedisCachePrefix is the response cache's sub-prefix under
// REDIS_KEY_PREFIX: the cache's keys in Redis start with the two. The
// whole-program tests (internal/systemtest) count cache entries by it.
const RedisCachePrefix = redisCachePrefix
