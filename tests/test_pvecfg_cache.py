"""read_tree with a GuestConfigCache: same result as without one, unchanged files not re-read,
changed, added and deleted files seen on the next read."""

from __future__ import annotations

import os
import shutil
from dataclasses import astuple, fields
from pathlib import Path

import pytest

from collector.pvecfg import GuestConfigCache, PveTree, read_tree

FIXTURES = Path(__file__).parent / "fixtures" / "etc_pve"
OLD_NS = 1_700_000_000 * 10**9  # a long-past mtime: such files are trusted by the cache


def comparable(tree: PveTree) -> dict[str, object]:
    """Every field of the tree, guests with their ``values`` (which equality ignores)."""
    result: dict[str, object] = {f.name: getattr(tree, f.name) for f in fields(tree)}
    result["guests"] = {vmid: (astuple(g), g.values) for vmid, g in tree.guests.items()}
    return result


def age(root: Path, mtime_ns: int = OLD_NS) -> None:
    for path in root.rglob("*"):
        if path.is_file():
            os.utime(path, ns=(mtime_ns, mtime_ns))


@pytest.fixture(params=["pve9-cluster", "pve8-messy"])
def root(request, tmp_path) -> Path:
    root = tmp_path / "pve"
    shutil.copytree(FIXTURES / request.param, root)
    age(root)
    return root


def assert_same_as_uncached(root: Path, cache: GuestConfigCache) -> PveTree:
    cached = read_tree(root, cache=cache)
    assert comparable(cached) == comparable(read_tree(root))
    return cached


def test_cold_and_warm_reads_equal_uncached_read(root):
    cache = GuestConfigCache()
    tree = assert_same_as_uncached(root, cache)
    configs = len(list(root.glob("nodes/*/*/*.conf")))
    assert (cache.hits, cache.misses, len(cache)) == (0, configs, configs)
    warm = assert_same_as_uncached(root, cache)
    assert (cache.hits, cache.misses) == (configs, configs)
    assert all(warm.guests[vmid] is tree.guests[vmid] for vmid in tree.guests)


def test_changed_config_is_parsed_again(tmp_path):
    root = tmp_path / "pve"
    shutil.copytree(FIXTURES / "pve9-cluster", root)
    age(root)
    cache = GuestConfigCache()
    assert read_tree(root, cache=cache).guests[103].maxmem == 2048 * 2**20
    path = root / "nodes/pve3/qemu-server/103.conf"
    path.write_text(path.read_text().replace("memory: 2048", "memory: 4096"))  # same size
    os.utime(path, ns=(OLD_NS + 10**9, OLD_NS + 10**9))
    hits = cache.hits
    tree = assert_same_as_uncached(root, cache)
    assert tree.guests[103].maxmem == 4096 * 2**20
    assert cache.hits - hits == 5  # the five other configs


def test_deleted_config_disappears_and_added_config_appears(tmp_path):
    root = tmp_path / "pve"
    shutil.copytree(FIXTURES / "pve9-cluster", root)
    age(root)
    cache = GuestConfigCache()
    read_tree(root, cache=cache)
    (root / "nodes/pve2/lxc/201.conf").unlink()
    tree = assert_same_as_uncached(root, cache)
    assert 201 not in tree.guests
    assert [(f.kind, f.where) for f in tree.findings] == [("vmlist-without-config", "ct:201")]
    assert len(cache) == 5
    (root / "nodes/pve2/qemu-server/104.conf").write_text("cores: 3\n")
    tree = assert_same_as_uncached(root, cache)
    assert tree.guests[104].maxcpu == 3
    assert len(cache) == 6


def test_same_size_change_within_the_mtime_tick_is_not_missed(tmp_path):
    root = tmp_path / "pve"
    shutil.copytree(FIXTURES / "pve9-cluster", root)
    path = root / "nodes/pve3/qemu-server/103.conf"
    os.utime(path)  # copytree kept the fixture's old mtime; "just written" is the case here
    stamp = path.stat().st_mtime_ns  # inside the racy window
    cache = GuestConfigCache(racy_window_s=3600)
    assert read_tree(root, cache=cache).guests[103].maxcpu == 2
    path.write_text(path.read_text().replace("cores: 2", "cores: 6"))
    os.utime(path, ns=(stamp, stamp))  # same mtime and size as what was cached
    assert read_tree(root, cache=cache).guests[103].maxcpu == 6


def test_pool_and_vmlist_changes_reach_unchanged_configs(tmp_path):
    root = tmp_path / "pve"
    shutil.copytree(FIXTURES / "pve8-messy", root)
    age(root)
    cache = GuestConfigCache()
    read_tree(root, cache=cache)
    user = root / "user.cfg"
    user.write_text(user.read_text() + "pool:extra::305::\n")
    vmlist = root / ".vmlist"
    vmlist.write_text(vmlist.read_text().replace('"lxc"', '"qemu"'))  # 301 becomes a VM
    for path in (user, vmlist):
        os.utime(path, ns=(OLD_NS + 10**9, OLD_NS + 10**9))
    hits = cache.hits
    tree = assert_same_as_uncached(root, cache)
    assert cache.hits - hits == 6  # no guest config re-parsed by the cached read
    assert tree.guests[305].pool == "extra"
    assert "vm:301" in tree.rules[0].resources  # rules.cfg re-resolved against the new .vmlist


def test_one_cache_serves_several_roots(tmp_path):
    roots = []
    for name in ("pve9-cluster", "pve8-messy"):
        roots.append(tmp_path / name)
        shutil.copytree(FIXTURES / name, roots[-1])
        age(roots[-1])
    cache = GuestConfigCache()
    for _ in range(2):
        for root in roots:
            assert_same_as_uncached(root, cache)
    assert len(cache) == 6 + 6
    cache.clear()
    assert len(cache) == 0
