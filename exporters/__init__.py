"""Output: publishes a round's results (Prometheus metrics, status page, JSON API)."""
