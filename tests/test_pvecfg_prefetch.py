"""The guest config prefetch: the C object's contract, and read_tree giving the same tree with
the prefetch as without it (cold reads use it, warm cached reads do not)."""

from __future__ import annotations

import errno
import os
import shutil
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from collector.pvecfg import GuestConfigCache, PveTree, prefetch, read_tree
from collector.pvecfg import tree as tree_module
from collector.pvecfg._prefetch import Prefetch
from collector.pvecfg.prefetch import ConfigPrefetch, PrefetchedFile
from model import Finding
from simulator.etc_writer import write_etc_tree
from simulator.model import build_cluster
from tests.test_pvecfg_cache import OLD_NS, comparable

BIG = 200_000  # > 64 KiB, the Python read size, and many times the C side's first buffer


def test_the_prefetch_extension_is_built_by_the_setup() -> None:
    assert prefetch.available()
    started = prefetch.start_prefetch([])
    assert started is not None
    started.close()


# --- the C object ----------------------------------------------------------------------------


def expected(path: Path) -> PrefetchedFile:
    """What the thread should give for ``path``: os.stat (following links) and its content."""
    st = os.stat(path)
    raw = path.read_bytes()
    try:
        data: str | bytes = raw.decode("utf-8")
    except UnicodeDecodeError:
        data = raw
    return (0, st.st_mode, st.st_mtime_ns, st.st_size, data)


def take_all(paths: Sequence[Path]) -> list[dict[str, PrefetchedFile]]:
    fetch = Prefetch([os.fsencode(path) for path in paths])
    try:
        return [fetch.take(k) for k in range(len(paths))]
    finally:
        fetch.close()


def test_contents_and_stat_are_those_of_the_files(tmp_path: Path) -> None:
    (tmp_path / "100.conf").write_text("cores: 2\nmemory: 2048\nname: web-1\n")
    (tmp_path / "101.conf").write_bytes(b"name: caf\xe9\ncores: 1\n")  # Latin-1, not UTF-8
    (tmp_path / "102.conf").write_bytes(b"")
    big = "".join(f"description: line {i:07d} {'x' * 40}\n" for i in range(BIG // 64))
    assert len(big) > BIG - 64
    (tmp_path / "103.conf").write_text(big)
    (tmp_path / "104.conf").write_text("name: \u00e9t\u00e9 \u2603\n")  # UTF-8, not ASCII
    (tmp_path / "105.conf").write_bytes(b"name: \xed\xa0\x80\n")  # a UTF-8-encoded surrogate
    (tmp_path / "106.conf").write_bytes(b"name: \xc0\xaf\n")  # an overlong encoding
    (tmp_path / "107.conf").write_bytes(b"name: a\x00b\n")  # NUL is valid UTF-8
    os.utime(tmp_path / "100.conf", ns=(OLD_NS, OLD_NS + 123_456_789))
    (tmp_path / "100.conf").chmod(0o640)
    [files] = take_all([tmp_path])
    assert sorted(files) == [f"{vmid}.conf" for vmid in range(100, 108)]
    for name, got in files.items():
        assert got == expected(tmp_path / name), name
    assert files["100.conf"][2] == OLD_NS + 123_456_789
    assert stat.S_IMODE(files["100.conf"][1]) == 0o640
    assert files["101.conf"][4] == b"name: caf\xe9\ncores: 1\n"  # undecodable: the raw bytes
    assert files["102.conf"][4] == ""
    assert files["103.conf"][4] == big  # read whole
    assert files["103.conf"][3] == len(big)
    assert files["104.conf"][4] == "name: \u00e9t\u00e9 \u2603\n"
    assert files["105.conf"][4] == b"name: \xed\xa0\x80\n"
    assert files["106.conf"][4] == b"name: \xc0\xaf\n"
    assert files["107.conf"][4] == "name: a\x00b\n"


@pytest.fixture
def long_cmdline() -> Iterator[Path]:
    """/proc/<pid>/cmdline of a live process with > 64 KiB of arguments: a regular file whose
    fstat() size is 0, so the thread grows its buffer (realloc) until it reaches EOF."""
    arguments = [f"argument-{i:05d}-{'y' * 90}" for i in range(1200)]
    script = "import sys; print('ready', flush=True); sys.stdin.read()"
    child = subprocess.Popen(
        [sys.executable, "-c", script, *arguments],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert child.stdin is not None
    assert child.stdout is not None
    try:
        # Running Python: the exec is complete (Popen may return before the kernel has set
        # up the new command line, which then reads as empty).
        assert child.stdout.readline() == b"ready\n"
        yield Path(f"/proc/{child.pid}/cmdline")
    finally:
        child.stdin.close()
        child.wait(timeout=30)
        child.stdout.close()


def test_a_file_longer_than_its_stat_size_is_read_whole(tmp_path: Path, long_cmdline: Path):
    content = long_cmdline.read_bytes()
    assert len(content) > BIG / 2
    assert os.stat(long_cmdline).st_size == 0
    (tmp_path / "100.conf").symlink_to(long_cmdline)
    [files] = take_all([tmp_path])
    error, mode, _, size, data = files["100.conf"]
    assert (error, stat.S_ISREG(mode), size) == (0, True, 0)
    assert data == content.decode("utf-8")


def test_only_regular_digits_conf_files_are_read(tmp_path: Path) -> None:
    directory = tmp_path / "qemu-server"
    directory.mkdir()
    for name in ("100.conf", "0101.conf", "abc.conf", "100.conf.tmp", ".100.conf", "100.CONF"):
        (directory / name).write_text(f"name: {name}\n")
    for name in ("conf", ".conf", "1a.conf", "\u0661\u0662.conf", "102.conf\n", "x100.conf"):
        (directory / name).write_text("cores: 1\n")
    (directory / "105.conf").mkdir()
    os.mkfifo(directory / "106.conf")
    (directory / "107.conf").symlink_to(tmp_path / "nowhere.conf")  # dangling
    (tmp_path / "target").write_text("cores: 8\n")
    (directory / "108.conf").symlink_to(tmp_path / "target")
    (directory / "109.conf").symlink_to(directory / "105.conf")  # to a directory
    result: list[dict[str, PrefetchedFile]] = []
    worker = threading.Thread(target=lambda: result.extend(take_all([directory])))
    worker.start()
    worker.join(timeout=30)
    if worker.is_alive():  # stuck opening the FIFO: give it a writer, then fail
        os.close(os.open(directory / "106.conf", os.O_RDWR))
        worker.join()
        pytest.fail("the prefetch blocked on a FIFO")
    [files] = result
    assert sorted(files) == ["0101.conf", "100.conf", "108.conf"]
    assert files["108.conf"] == expected(tmp_path / "target")  # the link's target
    assert files["108.conf"][4] == "cores: 8\n"
    assert files["0101.conf"] == expected(directory / "0101.conf")


def test_directories_that_cannot_be_listed_give_nothing(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a/100.conf").write_text("cores: 1\n")
    (tmp_path / "file").write_text("not a directory\n")
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    paths = [tmp_path / "missing", tmp_path / "file", tmp_path / "loop", tmp_path / "a"]
    assert take_all(paths) == [{}, {}, {}, {"100.conf": expected(tmp_path / "a/100.conf")}]


def test_directories_taken_out_of_order(tmp_path: Path) -> None:
    paths = []
    for k in range(6):
        paths.append(tmp_path / f"d{k}")
        paths[-1].mkdir()
        for vmid in range(100 * k, 100 * k + k):  # d0 is empty
            (paths[-1] / f"{vmid}.conf").write_text(f"cores: {k}\nname: g{vmid}\n")
    fetch = Prefetch([os.fsencode(path) for path in paths])
    try:
        for k in (4, 0, 5, 2, 1, 3):
            files = fetch.take(k)
            assert files == {name: expected(paths[k] / name) for name in os.listdir(paths[k])}
            assert len(files) == k
    finally:
        fetch.close()


def test_take_and_close_errors(tmp_path: Path) -> None:
    (tmp_path / "100.conf").write_text("cores: 1\n")
    fetch = Prefetch([os.fsencode(tmp_path), os.fsencode(tmp_path)])
    assert list(fetch.take(1)) == ["100.conf"]
    with pytest.raises(ValueError, match="already taken"):
        fetch.take(1)
    for k in (2, -1, 10**30):
        with pytest.raises(IndexError):
            fetch.take(k)
    fetch.close()
    with pytest.raises(ValueError, match="closed"):
        fetch.take(0)  # never taken, but closed
    with pytest.raises(ValueError, match="closed"):
        fetch.take(1)
    fetch.close()  # idempotent
    fetch.close()


def test_zero_directories_and_bad_arguments(tmp_path: Path) -> None:
    empty = Prefetch([])
    with pytest.raises(IndexError):
        empty.take(0)
    empty.close()
    empty.close()
    with pytest.raises(TypeError):
        Prefetch([str(tmp_path)])  # type: ignore[list-item]
    with pytest.raises(TypeError):
        Prefetch([os.fsencode(tmp_path), tmp_path])  # type: ignore[list-item]
    with pytest.raises(TypeError):
        Prefetch(None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="null"):
        Prefetch([b"/tmp\x00/x"])
    with pytest.raises(TypeError):
        Prefetch([os.fsencode(tmp_path)]).take("0")  # type: ignore[arg-type]


def test_an_object_dropped_without_close_stops_its_thread(tmp_path: Path) -> None:
    for vmid in range(100, 150):
        (tmp_path / f"{vmid}.conf").write_text("cores: 1\n" * 100)
    fetch = Prefetch([os.fsencode(tmp_path)] * 20)
    assert len(fetch.take(3)) == 50
    del fetch  # joins the thread, frees the 19 directories not taken
    assert take_all([tmp_path])[0].keys() == {f"{vmid}.conf" for vmid in range(100, 150)}


# --- read_tree with and without the prefetch -------------------------------------------------


def age(root: Path, mtime_ns: int = OLD_NS) -> None:
    """Like test_pvecfg_cache's ``age``, but a symlink's target is left alone."""
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            os.utime(path, ns=(mtime_ns, mtime_ns))


def simulated(root: Path, nodes: int = 3, guests: int = 50) -> Path:
    write_etc_tree(root, build_cluster(nodes, guests, seed=11), 1)
    return root


ODD_READ_BY_PYTHON = {"\u0661\u0662.conf", "917.conf\n"}
"""Config names read_tree accepts but the thread does not read (not ASCII digits + .conf)."""


def add_odd_entries(root: Path, outside: Path) -> None:
    """Entries next to the simulator's configs that each take another path through read_tree."""
    directory = root / "nodes/pve1/qemu-server"
    (directory / "900.conf").write_bytes(b"name: caf\xe9\ncores: 2\nmemory: 1024\n")
    os.mkfifo(directory / "909.conf")
    (directory / "910.conf").mkdir()
    (directory / "abc.conf").write_text("cores: 1\n")
    (directory / "100.conf.tmp").write_text("cores: 1\n")
    (directory / ".101.conf").write_text("cores: 1\n")
    outside.mkdir()
    (outside / "911.conf").write_text("name: linked\ncores: 3\nmemory: 512\n")
    (directory / "911.conf").symlink_to(outside / "911.conf")
    (directory / "912.conf").write_text("")
    (directory / "913.conf").write_text(
        "cores: many\nno colon here\n: empty key\nmemory: -5\nname: bad\n[snap]\ncores: 9\n"
    )
    (directory / "914.conf").symlink_to(outside / "gone.conf")
    (directory / "0915.conf").write_text("cores: 5\n")  # vmid 915 under another name
    (directory / "916.conf").write_text(
        "".join(f"description: {i} {'z' * 60}\n" for i in range(2000))
    )
    for name in ODD_READ_BY_PYTHON:
        (directory / name).write_text("cores: 6\n")
    lxc = root / "nodes/pve2/lxc"
    shutil.copy2(root / "nodes/pve3/qemu-server/100.conf", lxc / "100.conf")  # a duplicate
    (root / "nodes/pve2/qemu-server/920.conf").write_text("cores: 1\nmemory: 256\n")
    (root / "nodes/extra").mkdir()
    (root / "nodes/extra/qemu-server").write_text("a file where a directory belongs\n")
    (root / "nodes/notanode").write_text("x\n")


class Recording:
    """A prefetch whose takes and closes are recorded."""

    def __init__(self, real: ConfigPrefetch, spy: Spy) -> None:
        self.real = real
        self.spy = spy

    def take(self, k: int, /) -> dict[str, PrefetchedFile]:
        files = self.real.take(k)
        self.spy.taken.append((self.spy.starts[-1][k], sorted(files)))
        return files

    def close(self) -> None:
        self.spy.closed += 1
        self.real.close()


class Spy:
    """Counts ``tree.start_prefetch`` calls, takes and closes, and the guest configs read_tree
    read itself (``_read_bytes`` relative to an open directory)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, enabled: bool = True) -> None:
        self.starts: list[list[str]] = []
        self.taken: list[tuple[str, list[str]]] = []
        self.closed = 0
        self.read_itself: list[str] = []
        start, read_bytes = prefetch.start_prefetch, tree_module._read_bytes

        def start_prefetch(directories: Sequence[str | os.PathLike[str]]) -> Recording | None:
            self.starts.append([os.fspath(directory) for directory in directories])
            if not enabled:
                return None
            real = start(directories)
            assert real is not None
            return Recording(real, self)

        def spied_read_bytes(path: str, dir_fd: int | None = None) -> bytes:
            if dir_fd is not None:
                self.read_itself.append(path)
            return read_bytes(path, dir_fd)

        monkeypatch.setattr(tree_module, "start_prefetch", start_prefetch)
        monkeypatch.setattr(tree_module, "_read_bytes", spied_read_bytes)

    def prefetched(self) -> set[str]:
        return {f"{directory}/{name}" for directory, names in self.taken for name in names}


@pytest.fixture
def odd_root(tmp_path: Path) -> Path:
    root = simulated(tmp_path / "pve")
    add_odd_entries(root, tmp_path / "outside")
    return root


def guest_directories(root: Path) -> list[str]:
    return [
        str(root / f"nodes/{node}/{sub}")
        for node in sorted(os.listdir(root / "nodes"))
        if (root / "nodes" / node).is_dir()
        for sub in ("qemu-server", "lxc")
    ]


def test_read_tree_gives_the_same_tree_with_and_without_the_prefetch(
    odd_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with monkeypatch.context() as patch:
        spy = Spy(patch)
        fetched = read_tree(odd_root)
    with monkeypatch.context() as patch:
        plain_spy = Spy(patch, enabled=False)
        plain = read_tree(odd_root)
    assert comparable(fetched) == comparable(plain)
    assert fetched.findings == plain.findings  # same order
    assert (fetched.guests, fetched.vmlist, fetched.rules) == (
        plain.guests,
        plain.vmlist,
        plain.rules,
    )
    # the tree is what the odd entries make of it
    kinds = {(f.kind, f.where.removeprefix("nodes/pve1/qemu-server/")) for f in plain.findings}
    assert {
        ("config-syntax", "900.conf"),
        ("config-syntax", "909.conf"),
        ("config-syntax", "910.conf"),
        ("config-syntax", "abc.conf"),
        ("config-syntax", "914.conf"),
        ("config-duplicate", "nodes/pve2/lxc/100.conf"),
    } <= kinds
    assert plain.guests[900].name == "caf\ufffd"
    assert plain.guests[911].maxcpu == 3
    assert plain.guests[915].maxcpu == 5
    assert plain.guests[12].maxcpu == 6
    assert plain.guests[917].maxcpu == 6
    assert 912 in plain.guests
    assert 913 in plain.guests
    assert 916 in plain.guests
    assert not {909, 910, 914} & set(plain.guests)
    # the prefetch was used, for every config it can read, and read_tree read only the rest
    directories = guest_directories(odd_root)
    assert spy.starts == [directories]
    assert plain_spy.starts == [directories]
    assert spy.closed == 1
    configs = {
        str(path)
        for path in odd_root.glob("nodes/*/*/*.conf")
        if path.is_file() and path.name[:-5].isascii() and path.name[:-5].isdecimal()
    }
    assert len(configs) == 50 + 8
    assert spy.prefetched() == configs
    assert sorted(spy.read_itself) == sorted(ODD_READ_BY_PYTHON)
    assert len(plain_spy.read_itself) == len(configs) + len(ODD_READ_BY_PYTHON)


def test_cached_cold_reads_are_the_same_with_and_without_the_prefetch(
    odd_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    age(odd_root)
    age(odd_root.parent / "outside")  # the symlinked config's target
    trees: list[PveTree] = []
    counts: list[tuple[int, int, int]] = []
    spies: list[Spy] = []
    for enabled in (True, False):
        with monkeypatch.context() as patch:
            spy = Spy(patch, enabled)
            cache = GuestConfigCache()
            cold = read_tree(odd_root, cache=cache)
            warm = read_tree(odd_root, cache=cache)
        assert len(spy.starts) == 1  # the cold read only
        assert comparable(warm) == comparable(cold)
        trees.append(cold)
        counts.append((cache.hits, cache.misses, len(cache)))
        spies.append(spy)
    fetched, plain = trees
    assert comparable(fetched) == comparable(plain) == comparable(read_tree(odd_root))
    assert fetched.findings == plain.findings
    configs = 50 + 8 + len(ODD_READ_BY_PYTHON)
    assert counts == [(configs, configs, configs)] * 2  # second read: every config reused
    assert len(spies[0].prefetched()) == 50 + 8
    assert spies[0].read_itself == sorted(ODD_READ_BY_PYTHON)
    assert spies[1].taken == []


def keys_of(directory: Path) -> list[tuple[int, int, int]]:
    return [
        (st.st_mode, st.st_mtime_ns, st.st_size)
        for st in (os.stat(directory / name) for name in sorted(os.listdir(directory)))
    ]


def test_cold_cached_read_uses_the_prefetch_and_warm_reads_reuse_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = simulated(tmp_path / "pve", nodes=3, guests=30)
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside/990.conf").write_text("cores: 2\n")
    (root / "nodes/pve1/lxc/990.conf").symlink_to(tmp_path / "outside/990.conf")
    age(root)
    age(tmp_path / "outside")
    configs = 31
    spy = Spy(monkeypatch)
    cache = GuestConfigCache()
    cold = read_tree(root, cache=cache)
    assert len(spy.starts) == 1
    assert spy.closed == 1
    assert len(spy.prefetched()) == configs
    assert spy.read_itself == []
    assert (cache.hits, cache.misses, len(cache)) == (0, configs, configs)
    # the directory keys recorded from the thread's fstat() are those os.stat() gives
    directories = cache._directories[str(root)]
    assert sorted(directories) == sorted(os.path.relpath(d, root) for d in guest_directories(root))
    for relative, entry in directories.items():
        assert entry.keys == keys_of(root / relative), relative
    warm = read_tree(root, cache=cache)
    assert len(spy.starts) == 1
    assert spy.read_itself == []
    assert (cache.hits, cache.misses) == (configs, configs)
    assert comparable(warm) == comparable(cold)
    # one config changes (content and size): only it is parsed again, without a prefetch
    vmid, config = next(
        (vmid, root / g.source) for vmid, g in sorted(cold.guests.items()) if g.type == "qemu"
    )
    config.write_text(config.read_text().replace("memory: ", "memory: 1") + "tags: changed\n")
    os.utime(config, ns=(OLD_NS + 10**9, OLD_NS + 10**9))
    changed = read_tree(root, cache=cache)
    assert len(spy.starts) == 1
    assert spy.read_itself == [config.name]
    assert (cache.hits, cache.misses) == (2 * configs - 1, configs + 1)
    assert changed.guests[vmid].tags == ("changed",)
    assert changed.guests[vmid].maxmem != cold.guests[vmid].maxmem
    # a second root in the same cache is cold again: it is prefetched
    other = simulated(tmp_path / "other", nodes=2, guests=10)
    read_tree(other, cache=cache)
    assert len(spy.starts) == 2
    assert spy.closed == 2
    assert spy.starts[1] == guest_directories(other)
    assert comparable(changed) == comparable(read_tree(root))  # uncached: prefetched too
    assert len(spy.starts) == 3


# --- _Reader.prefetched_text -----------------------------------------------------------------


def reader(root: Path) -> tuple[tree_module._Reader, list[Finding]]:
    findings: list[Finding] = []
    return tree_module._Reader(root, findings, None), findings


def test_prefetched_errors_give_the_findings_of_the_normal_read(tmp_path: Path) -> None:
    (tmp_path / "dir.conf").mkdir()  # read() fails with EISDIR
    (tmp_path / "loop.conf").symlink_to(tmp_path / "loop.conf")  # open() fails with ELOOP
    (tmp_path / "file").write_text("x\n")
    cases = {"dir.conf": errno.EISDIR, "loop.conf": errno.ELOOP, "file/x.conf": errno.ENOTDIR}
    for relative, code in cases.items():
        normal, normal_findings = reader(tmp_path)
        assert normal.text(relative) is None
        fetched, fetched_findings = reader(tmp_path)
        assert fetched.prefetched_text(relative, code, None) is None
        assert fetched_findings == normal_findings
        [found] = fetched_findings
        assert (found.kind, found.where, found.severity) == (
            "config-unreadable",
            relative,
            "error",
        )
        assert found.message == f"cannot read: {os.strerror(code)}"
    # EACCES (not producible as root): the text an OSError from the normal path carries
    fetched, fetched_findings = reader(tmp_path)
    assert fetched.prefetched_text("x.conf", errno.EACCES, None) is None
    error = PermissionError(errno.EACCES, os.strerror(errno.EACCES), "x.conf")
    normal, normal_findings = reader(tmp_path)
    normal._cannot_read("x.conf", error.strerror)
    assert fetched_findings == normal_findings
    assert [f.message for f in fetched_findings] == ["cannot read: Permission denied"]
    # ENOENT: missing, silently
    fetched, fetched_findings = reader(tmp_path)
    assert fetched.prefetched_text("gone.conf", errno.ENOENT, None) is None
    normal, normal_findings = reader(tmp_path)
    assert normal.text("gone.conf") is None
    assert fetched_findings == normal_findings == []


def test_prefetched_bytes_decode_as_the_normal_read_does(tmp_path: Path) -> None:
    raw = b"cores: 2\nname: caf\xe9\n\xff\xfememory: 512\n"
    (tmp_path / "100.conf").write_bytes(raw)
    (tmp_path / "101.conf").write_text("name: \u00e9t\u00e9\n")
    [files] = take_all([tmp_path])
    assert files["100.conf"][4] == raw
    assert files["101.conf"][4] == "name: \u00e9t\u00e9\n"
    seen = []
    for name in ("100.conf", "101.conf"):
        normal, normal_findings = reader(tmp_path)
        text = normal.text(name)
        fetched, fetched_findings = reader(tmp_path)
        error, _, _, _, data = files[name]
        assert fetched.prefetched_text(name, error, data) == text
        assert fetched_findings == normal_findings
        seen.append(fetched_findings)
    assert [[(f.kind, f.where, f.message) for f in found] for found in seen] == [
        [("config-syntax", "100.conf", "not valid UTF-8 at byte 18, undecodable bytes replaced")],
        [],
    ]
