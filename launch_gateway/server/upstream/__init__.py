"""Talking to Launch: the HTTP client with retries and a breaker, translation, SSE, endpoint lookups, waits."""
