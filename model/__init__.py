"""Data shared by every layer: the cluster snapshot and its JSON form."""

from model.snapshot import Crs, Finding, Guest, HaConfig, Node, Rule, Snapshot, Storage

__all__ = ["Crs", "Finding", "Guest", "HaConfig", "Node", "Rule", "Snapshot", "Storage"]
