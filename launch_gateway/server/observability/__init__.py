"""What operators see: Prometheus metrics, per-call records, logs, readiness and the ops HTTP port."""
