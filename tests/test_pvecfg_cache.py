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


def cluster(tmp_path: Path) -> Path:
    root = tmp_path / "pve"
    shutil.copytree(FIXTURES / "pve9-cluster", root)
    age(root)
    return root


def warm(root: Path) -> GuestConfigCache:
    """A cache after two reads: the second takes every directory whole."""
    cache = GuestConfigCache()
    for _ in range(2):
        assert_same_as_uncached(root, cache)
    return cache


def test_unchanged_tree_is_taken_whole_from_the_cache(tmp_path):
    root = cluster(tmp_path)
    cache = warm(root)
    before = read_tree(root, cache=cache)
    hits = cache.hits
    after = assert_same_as_uncached(root, cache)
    assert cache.hits - hits == 6
    assert len(cache._directories[str(root)]) == 5  # each guest directory whole
    assert str(root) in cache._merged  # and their cross-check against .vmlist
    assert after.guests == before.guests
    assert after.guests is not before.guests  # each tree gets its own dict


def test_changes_within_a_directory_are_seen(tmp_path):
    root = cluster(tmp_path)
    cache = warm(root)
    directory = root / "nodes/pve1/qemu-server"
    (directory / "notes.txt").write_text("not a config\n")  # an odd entry
    tree = assert_same_as_uncached(root, cache)
    assert ("config-syntax", "nodes/pve1/qemu-server/notes.txt") in [
        (f.kind, f.where) for f in tree.findings
    ]
    assert_same_as_uncached(root, cache)
    (directory / "notes.txt").unlink()
    assert_same_as_uncached(root, cache)
    config = directory / "101.conf"
    config.chmod(0o600)  # a new mode alone: nothing else changed, the result neither
    assert_same_as_uncached(root, cache)
    config.unlink()
    config.mkdir()  # a directory named like a config
    assert 101 not in assert_same_as_uncached(root, cache).guests
    config.rmdir()
    (directory / "0101.conf").write_text("cores: 3\n")  # vmid 101 under another name
    os.utime(directory / "0101.conf", ns=(OLD_NS, OLD_NS))
    assert assert_same_as_uncached(root, cache).guests[101].maxcpu == 3
    assert_same_as_uncached(root, cache)


def test_added_and_removed_directories_are_seen(tmp_path):
    root = cluster(tmp_path)
    cache = warm(root)
    shutil.rmtree(root / "nodes/pve3")
    tree = assert_same_as_uncached(root, cache)
    assert 103 not in tree.guests
    assert_same_as_uncached(root, cache)
    (root / "nodes/pve4/qemu-server").mkdir(parents=True)
    assert_same_as_uncached(root, cache)
    (root / "nodes/pve4/qemu-server/103.conf").write_text("cores: 5\n")
    os.utime(root / "nodes/pve4/qemu-server/103.conf", ns=(OLD_NS, OLD_NS))
    assert assert_same_as_uncached(root, cache).guests[103].node == "pve4"
    assert_same_as_uncached(root, cache)


def test_a_config_copied_to_another_node_is_a_duplicate_on_every_read(tmp_path):
    root = cluster(tmp_path)
    cache = warm(root)
    shutil.copy2(root / "nodes/pve1/qemu-server/100.conf", root / "nodes/pve3/qemu-server")
    for _ in range(3):
        tree = assert_same_as_uncached(root, cache)
        assert ("config-duplicate", "nodes/pve3/qemu-server/100.conf") in [
            (f.kind, f.where) for f in tree.findings
        ]
    (root / "nodes/pve3/qemu-server/100.conf").unlink()
    for _ in range(2):
        assert not assert_same_as_uncached(root, cache).findings


def test_vmlist_change_is_cross_checked_again(tmp_path):
    root = cluster(tmp_path)
    cache = warm(root)
    vmlist = root / ".vmlist"
    vmlist.write_text(
        vmlist.read_text().replace('"103": { "node": "pve3"', '"103": { "node": "pve2"')
    )
    os.utime(vmlist, ns=(OLD_NS + 10**9, OLD_NS + 10**9))
    tree = assert_same_as_uncached(root, cache)
    assert [(f.kind, f.where) for f in tree.findings] == [
        ("vmlist-misplaced-config", "nodes/pve3/qemu-server/103.conf")
    ]
    assert_same_as_uncached(root, cache)


def test_racy_config_keeps_its_directory_out_of_the_cache(tmp_path):
    root = tmp_path / "pve"
    shutil.copytree(FIXTURES / "pve9-cluster", root)
    age(root)
    path = root / "nodes/pve3/qemu-server/103.conf"
    os.utime(path)  # "just written": inside the racy window
    stamp = path.stat().st_mtime_ns
    cache = GuestConfigCache(racy_window_s=3600)
    previous = 2
    for cores in (2, 6, 7, 8):
        path.write_text(path.read_text().replace(f"cores: {previous}", f"cores: {cores}"))
        os.utime(path, ns=(stamp, stamp))  # same mtime and size as what was cached
        assert assert_same_as_uncached(root, cache).guests[103].maxcpu == cores
        previous = cores
