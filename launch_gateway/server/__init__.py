"""The gateway server (the `server` extra): each RPC admitted, translated, sent to Launch and back.

At this level: `app` (wiring and lifecycle), `service` (the servicer), `statuses` (where errors
become RPC statuses), `admission` (identify, authorize, limit), `errors`, `settings`, `headers`,
`clock`, `workers`. The layers below, one subpackage each: `access` (who may call what),
`limits` (how often and how many), `upstream` (talking to Launch), `observability` (metrics,
logs, probes). `docs/architecture.md` follows one call through them.
"""
