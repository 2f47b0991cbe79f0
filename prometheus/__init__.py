"""Prometheus rules for pve-rebalancer, generated from prometheus/thresholds.yml."""
