"""Grafana dashboards for pve-rebalancer, generated from code (see grafana.generate)."""
