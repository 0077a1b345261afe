"""How often and how many: token buckets (in memory or in Redis) and per-tenant concurrency caps."""
