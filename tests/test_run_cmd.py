"""``pve-rebalancer run``: the daemon on a simulated cluster (as a subprocess: /metrics,
SIGHUP reload, SIGTERM, restart resuming the hold count), its pieces, and ``history``."""

from __future__ import annotations

import argparse
import json
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from balancer.stability import BalancerState, InFlight
from cli import history_cmd, run_cmd
from cli.config import ConfigError, parse_config
from cli.errors import CommandError
from cli.state_store import StateStore
from model import Snapshot
from model.plan import Move, RoundResult
from simulator.cluster import SimulatedCluster, simulate_cluster

ROOT = Path(__file__).resolve().parent.parent
WAIT_S = 60.0


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> SimulatedCluster:
    return simulate_cluster(tmp_path_factory.mktemp("sim"), 3, 12, days=0.1, seed=3)


def config_text(sim: SimulatedCluster, state_dir: Path, threshold: float) -> str:
    return (
        f'[source]\nroot = "{sim.etc_root}"\nrrd_dir = "{sim.rrd_root}"\nnow = "latest"\n'
        f"[balancer]\nfollow_crs = false\nthreshold = {threshold}\nhold_duration = 100000\n"
        f'[exporter]\nport = 0\n[state]\ndir = "{state_dir}"\n'
        '[schedule]\ninterval = "1s"\nhistory_interval = 0\n'
    )


class Service:
    """``python -m cli.run_cmd`` as a child process, its log lines collected in a thread."""

    def __init__(self, config: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cli.run_cmd", "--config", str(config)],
            cwd=ROOT,
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
        )
        self.lines: list[str] = []
        self._new: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.url = self.wait_for(r"serving on (http://\S+)").group(1)

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)
            self._new.put(line)

    def wait_for(self, pattern: str) -> re.Match[str]:
        deadline = time.monotonic() + WAIT_S
        for line in self.lines:
            if match := re.search(pattern, line):
                return match
        while time.monotonic() < deadline:
            try:
                line = self._new.get(timeout=0.5)
            except queue.Empty:
                if self.proc.poll() is not None:
                    break
                continue
            if match := re.search(pattern, line):
                return match
        raise AssertionError(f"no log line matching {pattern!r}:\n{''.join(self.lines)}")

    def metric(self, name: str) -> float | None:
        with urllib.request.urlopen(f"{self.url}/metrics", timeout=10) as response:
            body = response.read().decode()
        match = re.search(rf"^{name} (\S+)$", body, re.MULTILINE)
        return None if match is None else float(match.group(1))

    def wait_metric(self, name: str, predicate: object) -> float:
        deadline = time.monotonic() + WAIT_S
        value = None
        while time.monotonic() < deadline:
            value = self.metric(name)
            if value is not None and predicate(value):  # type: ignore[operator]
                return value
            time.sleep(0.1)
        raise AssertionError(f"{name} stayed at {value}:\n{''.join(self.lines)}")

    def signal(self, sig: signal.Signals) -> None:
        self.proc.send_signal(sig)

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=WAIT_S)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def services() -> Iterator[list[Service]]:
    started: list[Service] = []
    yield started
    for service in started:
        service.kill()


def test_run_serves_reloads_stops_and_resumes(
    sim: SimulatedCluster, tmp_path: Path, services: list[Service]
) -> None:
    state_dir = tmp_path / "state"
    config = tmp_path / "config.toml"
    config.write_text(config_text(sim, state_dir, 1.0))

    service = Service(config)
    services.append(service)
    service.wait_metric("pve_rebalancer_rounds_total", lambda v: v >= 2)
    assert service.metric("pve_rebalancer_up") == 1.0
    assert service.metric("pve_rebalancer_imbalance_threshold_ratio") == pytest.approx(0.01)
    assert service.metric("pve_rebalancer_rounds_above_threshold") >= 1  # type: ignore[operator]
    service.wait_for(r"pve_rebalancer\.service: round \d+ ms: imbalance .* holding")

    # SIGHUP with a changed threshold: the next rounds use it
    config.write_text(config_text(sim, state_dir, 2.0))
    service.signal(signal.SIGHUP)
    service.wait_metric("pve_rebalancer_imbalance_threshold_ratio", lambda v: abs(v - 0.02) < 1e-9)

    # SIGHUP with a broken file: logged with its line, the running configuration kept
    config.write_text(config_text(sim, state_dir, 2.0) + "[balancer.extra]\nx = 1\n")
    service.signal(signal.SIGHUP)
    service.wait_for(r"reload refused: .*config\.toml:\d+: balancer\.extra")
    service.wait_for("keeping the running configuration")
    rounds = service.metric("pve_rebalancer_rounds_total") or 0
    service.wait_metric("pve_rebalancer_rounds_total", lambda v: v > rounds)
    assert service.metric("pve_rebalancer_imbalance_threshold_ratio") == pytest.approx(0.02)

    assert service.stop() == 0
    log = "".join(service.lines)
    assert "stopped; state saved" in log
    assert log.count("ha-auto-rebalance=1") == 1  # the simulated datacenter.cfg has it on

    with StateStore.in_dir(state_dir) as store:
        saved = store.load_state().hold_count
        entries = store.history(100_000)
    assert saved >= 3
    assert entries[0].hold_count == saved

    # a restart resumes the hold count where it stopped
    config.write_text(config_text(sim, state_dir, 2.0))
    again = Service(config)
    services.append(again)
    again.wait_for(rf"holding \({saved + 1}/100000 rounds\)")
    assert again.stop() == 0
    with StateStore.in_dir(state_dir) as store:
        later = list(reversed(store.history(100_000)))
    assert later[len(entries)].hold_count == saved + 1


def test_run_with_a_broken_config_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "c.toml"
    config.write_text("[schedule]\ninterval = 0\n")
    assert run_cmd.main(["--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert f"{config}:2: schedule.interval: 0 must be >= 1" in err


# ----- the pieces --------------------------------------------------------------------


def test_latest_follows_the_simulated_clock(sim: SimulatedCluster) -> None:
    assert run_cmd.newest_rrd_time(sim.rrd_root) == sim.now
    config = parse_config(
        f'[source]\nroot = "{sim.etc_root}"\nrrd_dir = "{sim.rrd_root}"\nnow = "latest"\n'
    )
    snapshot = run_cmd.build_collect(config.source)()
    assert snapshot.timestamp == sim.now
    assert len(snapshot.nodes) == 3


def test_api_source_missing_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PVE_TEST_TOKEN", "x")
    config = parse_config(
        '[source]\ntype = "api"\n[source.api]\nhosts = ["127.0.0.1:8006"]\n'
        'token_id = "a@pve!b"\ntoken_secret_env = "PVE_TEST_TOKEN"\n'
    )
    monkeypatch.setitem(sys.modules, "collector.api_source", None)  # import fails
    with pytest.raises(CommandError, match=r"collector\.api_source"):
        run_cmd.build_collect(config.source)


def test_ha_resources_are_recommend_only_under_crs_auto_rebalance(
    sim: SimulatedCluster,
) -> None:
    config = parse_config(f'[source]\nroot = "{sim.etc_root}"\nrrd_dir = "{sim.rrd_root}"\n')
    snapshot = run_cmd.build_collect(config.source)()
    assert snapshot.crs.auto_rebalance
    assert run_cmd.ha_recommend_only(snapshot, allow_ha=False)
    assert not run_cmd.ha_recommend_only(snapshot, allow_ha=True)


API_SECTION = (
    '[source.api]\nhosts = ["127.0.0.1:8006"]\ntoken_id = "a@pve!b"\n'
    'token_secret_env = "PVE_TEST_TOKEN"\n'
)


def test_actuator_outcome_updates_the_balancer_state(
    sim: SimulatedCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PVE_TEST_TOKEN", "x")
    path = tmp_path / "c.toml"
    path.write_text(
        config_text(sim, tmp_path / "state", 1.0) + API_SECTION + "[actuator]\nenabled = true\n"
    )
    from cli.config import load_config

    moves = [Move(i, f"vm:{i}", "pve1", "pve2", 0.1) for i in (1, 2, 3)]
    seen: list[RoundResult] = []

    def act(snapshot: Snapshot, result: RoundResult) -> run_cmd.Acted:
        seen.append(result)
        return run_cmd.Acted(not_started=[moves[2]], failed=[moves[1]])

    daemon = run_cmd.Daemon(path, load_config(path), act_on=act)
    assert daemon.runner.automation_enabled
    snapshot = daemon._collect()  # sets the recommend-only flag from datacenter.cfg
    assert daemon.ha_recommend_only
    state = daemon.runner.state
    for move in moves:
        state.in_flight[move.sid] = InFlight(move.source, move.target, 1.0)
        state.cooldowns[move.sid] = 99.0
    result = RoundResult(0.2, 0.2, True, "x", 1.0, 10.0, moves=moves)
    daemon._after_round(snapshot, result)
    assert seen == [result]
    stored = daemon.store.load_state()
    assert set(stored.in_flight) == {"vm:1"}  # only the move that happened is in flight
    assert set(stored.cooldowns) == {"vm:1", "vm:2"}  # a failed move still cools down
    daemon.store.close()


def test_actuator_needs_api_credentials() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config("[actuator]\ndry_run = true\n")
    assert {p.key for p in caught.value.problems} == {
        "source.api.hosts",
        "source.api.token_id",
        "source.api.token_secret_env",
    }


def test_migrations_are_logged_in_the_store(tmp_path: Path) -> None:
    with StateStore.in_dir(tmp_path) as store:
        log = run_cmd.MigrationLog(store, clock=lambda: 5.0)
        log("vm:1", "pve1", "pve2", "UPID:pve1:x", "started", None)
        log("ct:2", "pve1", "pve3", None, "started", None)
        log("vm:1", "pve1", "pve2", "UPID:pve1:x", "succeeded", None)
        log("ct:2", "pve1", "pve3", None, "failed", "refused")
        rows = {m.sid: m for m in store.migrations()}
    assert (rows["vm:1"].state, rows["vm:1"].upid, rows["vm:1"].finished_at) == (
        "succeeded",
        "UPID:pve1:x",
        5.0,
    )
    assert (rows["ct:2"].state, rows["ct:2"].error) == ("failed", "refused")


def daemon_for(sim: SimulatedCluster, tmp_path: Path, extra: str = "") -> run_cmd.Daemon:
    path = tmp_path / "c.toml"
    path.write_text(config_text(sim, tmp_path / "state", 1.0) + extra)
    from cli.config import load_config

    return run_cmd.Daemon(path, load_config(path), clock=iter(range(1000, 10**6, 30)).__next__)


def test_reload_keeps_the_old_config_when_the_new_one_is_broken(
    sim: SimulatedCluster, tmp_path: Path
) -> None:
    daemon = daemon_for(sim, tmp_path)
    daemon.config_path.write_text("[balancer]\nthreshold = 500\n")
    assert daemon.reload() is False
    assert daemon.config.balancer.options.threshold == 1.0
    daemon.config_path.write_text(config_text(sim, tmp_path / "state", 7.0))
    assert daemon.reload() is True
    assert daemon.runner.run_once().result.threshold == 7.0  # type: ignore[union-attr]
    daemon.store.close()


def test_follow_crs_uses_datacenter_cfg(sim: SimulatedCluster, tmp_path: Path) -> None:
    daemon = daemon_for(sim, tmp_path)
    daemon.config = parse_config(
        f'[source]\nroot = "{sim.etc_root}"\nrrd_dir = "{sim.rrd_root}"\nnow = "latest"\n'
        f'[state]\ndir = "{tmp_path / "state"}"\n'
    )
    result = daemon.runner.run_once().result
    assert result is not None
    assert result.threshold == 10.0  # ha-auto-rebalance-threshold=10 in the simulator
    daemon.store.close()


def fixed_clock(at: float) -> Callable[[], float]:
    return lambda: at


def test_history_interval_skips_rows_within_the_interval(
    sim: SimulatedCluster, tmp_path: Path
) -> None:
    daemon = daemon_for(sim, tmp_path)
    daemon.config = parse_config(
        config_text(sim, tmp_path / "state", 1.0).replace("history_interval = 0", "")
        + "\n"  # default 60 s
    )
    snapshot = Snapshot(timestamp=0, nodes=[], guests=[])
    same = RoundResult(0.1, 0.1, False, "holding", 1.0, 10.0)
    for at in (0.0, 10.0, 59.0, 61.0):
        daemon.clock = fixed_clock(at)
        daemon._after_round(snapshot, same)
    moved = RoundResult(
        0.1, 0.1, True, "x", 1.0, 10.0, moves=[Move(1, "vm:1", "a", "b", 0.0)]
    )  # a different decision is always recorded
    daemon.clock = fixed_clock(62.0)
    daemon._after_round(snapshot, moved)
    assert [e.finished_at for e in daemon.store.history(10)] == [62.0, 61.0, 0.0]
    daemon.store.close()


# ----- history command -----------------------------------------------------------------


def history(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    commands = parser.add_subparsers(dest="command", required=True)
    history_cmd.register(commands)
    args = parser.parse_args(["history", *argv])
    status: int = args.run(args)
    return status


def test_history_command_table_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state_dir = tmp_path / "state"
    with StateStore.in_dir(state_dir) as store:
        for i in range(3):
            moves = [Move(1, "vm:100", "pve1", "pve2", 0.05)] if i == 2 else []
            result = RoundResult(0.2, 0.3, i == 2, f"reason {i}", 10.0, 5.0, hold_count=i,
                                 moves=moves)  # fmt: skip
            store.save_round(result, BalancerState(i), 1_767_225_600.0 + 60 * i)
    assert history(["--state-dir", str(state_dir), "--limit", "2", "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["reason"] for r in rows] == ["reason 2", "reason 1"]
    assert rows[0]["moves"][0]["sid"] == "vm:100"

    config = tmp_path / "c.toml"
    config.write_text(f'[state]\ndir = "{state_dir}"\n')
    assert history(["--config", str(config)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:2] == ["time", "(UTC)"]
    assert "2026-01-01 00:02:00" in out[2]
    assert "vm:100 pve1->pve2" in out[2]
    assert "reason 0" in out[4]


def test_history_without_a_store_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(CommandError, match="no state database"):
        history(["--state-dir", str(tmp_path / "none")])
    assert not (tmp_path / "none").exists()


# ----- the API source and the actuator against the simulator's PVE API ------------------

API_SECRET = "run-cmd-test-secret-4711"
API_TOKEN = f"root@pam!rebalancer={API_SECRET}"


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
         "-out", str(cert), "-days", "2", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


def api_config_text(address: str, ca: Path, secret_file: Path) -> str:
    return (
        f'[source.api]\nhosts = ["{address}"]\ntoken_id = "root@pam!rebalancer"\n'
        f'token_secret_file = "{secret_file}"\nca_file = "{ca}"\ntimeout = "5s"\n'
    )


def secret_file(tmp_path: Path) -> Path:
    path = tmp_path / "token"
    path.write_text(API_SECRET + "\n")
    path.chmod(0o600)
    return path


def test_api_source_collects_over_verified_tls(
    sim: SimulatedCluster, tmp_path: Path, tls: tuple[Path, Path]
) -> None:
    from simulator.api_server import SimulatedApiServer

    with SimulatedApiServer(sim, API_TOKEN, cert=tls[0], key=tls[1]) as server:
        text = '[source]\ntype = "api"\nnow = ' + str(sim.now) + "\n"
        config = parse_config(text + api_config_text(server.address, tls[0], secret_file(tmp_path)))
        assert API_SECRET not in repr(config)
        snapshot = run_cmd.build_collect(config.source)()
    assert snapshot.timestamp == sim.now
    assert sorted(n.name for n in snapshot.nodes) == sorted(sim.node_names)
    assert len(snapshot.guests) == 12


def test_actuator_migrates_and_records_in_the_store(
    tmp_path: Path, tls: tuple[Path, Path], caplog: pytest.LogCaptureFixture
) -> None:
    from simulator.api_server import SimulatedApiServer

    cluster = simulate_cluster(tmp_path / "sim", 3, 12, days=0.1, seed=3)
    with SimulatedApiServer(cluster, API_TOKEN, cert=tls[0], key=tls[1]) as server:
        path = tmp_path / "c.toml"
        path.write_text(
            config_text(cluster, tmp_path / "state", 1.0).replace(
                "hold_duration = 100000", 'hold_duration = 1\nmargin = 0\nscope = "all"'
            )
            + api_config_text(server.address, tls[0], secret_file(tmp_path))
            + "[actuator]\nenabled = true\nallow_containers = true\n"
            "allow_ha_when_crs_auto_rebalance = true\n"
            'task_timeout = "1s"\npoll_interval = "0.05s"\nconcurrency = 1\n'
        )
        from cli.config import load_config

        daemon = run_cmd.Daemon(path, load_config(path))
        published = daemon.runner.run_once()
        result = published.result
        assert result is not None
        assert result.moves, result.reason
        first = result.moves[0]
        # the simulated migration only finishes when the simulator advances: the task times
        # out, the move is recorded failed with its UPID, and it is no longer in flight
        migrations = daemon.store.migrations()
        assert migrations[-1].sid == first.sid
        assert migrations[-1].state == "failed"
        assert migrations[-1].upid is not None
        assert migrations[-1].upid.startswith("UPID:")
        state = daemon.store.load_state()
        assert first.sid not in state.in_flight
        assert first.sid in state.cooldowns
        assert not set(state.in_flight) & {m.sid for m in result.moves}
        guest_type = "qemu" if first.sid.startswith("vm:") else "lxc"
        counts = daemon.publisher.migrations.view()
        assert (counts[("started", guest_type)], counts[("failed", guest_type)]) == (1, 1)
        daemon.store.close()
    assert API_SECRET not in caplog.text


def test_dry_run_flag_turns_the_actuator_to_dry_run(tmp_path: Path) -> None:
    text = (
        '[source.api]\nhosts = ["127.0.0.1:8006"]\ntoken_id = "root@pam!t"\n'
        'token_secret_env = "PVE_TOKEN"\n'
    )
    config = parse_config(text, tmp_path / "c.toml")
    assert config.actuator.dry_run is False
    dry = run_cmd.with_dry_run(config)
    assert dry.actuator.dry_run is True
    assert dry.actuator.enabled is False
    assert dry.source == config.source
    parser = argparse.ArgumentParser()
    run_cmd.add_arguments(parser)
    args = parser.parse_args(["--config", "x.toml", "--dry-run"])
    assert args.dry_run is True


def test_dry_run_without_api_credentials_is_a_clear_error(tmp_path: Path) -> None:
    config = parse_config("", tmp_path / "c.toml")
    with pytest.raises(CommandError, match=r"--dry-run needs \[source.api\]"):
        run_cmd.with_dry_run(config)
