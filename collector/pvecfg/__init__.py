"""Parsers for the Proxmox VE cluster file system (``/etc/pve``), one module per file format.

Each ``parse_*`` function takes the file's text and a source name for findings and returns
``(result, findings)``; none raises on bad content. ``read_tree`` reads a whole directory;
a ``GuestConfigCache`` passed to it spares re-parsing unchanged guest configs.
"""

from collector.pvecfg.datacenter import DatacenterConfig, parse_crs, parse_datacenter_cfg
from collector.pvecfg.guestcache import GuestConfigCache
from collector.pvecfg.guestconf import GuestConfig, parse_guest_config
from collector.pvecfg.ha_resources import HaResource, parse_resources_cfg
from collector.pvecfg.ha_rules import HaGroup, groups_to_rules, parse_groups_cfg, parse_rules_cfg
from collector.pvecfg.ha_status import ManagerStatus, ServiceStatus, parse_manager_status
from collector.pvecfg.members import MemberNode, Members, VmListEntry, parse_members, parse_vmlist
from collector.pvecfg.pools import PoolConfig, parse_pools, pool_of_guest
from collector.pvecfg.storage import StorageConfig, parse_storage_cfg
from collector.pvecfg.tree import PveTree, PveTreeNotFoundError, read_tree

__all__ = [
    "DatacenterConfig",
    "GuestConfig",
    "GuestConfigCache",
    "HaGroup",
    "HaResource",
    "ManagerStatus",
    "MemberNode",
    "Members",
    "PoolConfig",
    "PveTree",
    "PveTreeNotFoundError",
    "ServiceStatus",
    "StorageConfig",
    "VmListEntry",
    "groups_to_rules",
    "parse_crs",
    "parse_datacenter_cfg",
    "parse_groups_cfg",
    "parse_guest_config",
    "parse_manager_status",
    "parse_members",
    "parse_pools",
    "parse_resources_cfg",
    "parse_rules_cfg",
    "parse_storage_cfg",
    "parse_vmlist",
    "pool_of_guest",
    "read_tree",
]
