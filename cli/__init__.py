"""Wiring: the command line and the schedule that join collector, balancer and exporters."""
