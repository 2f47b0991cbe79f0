"""The service configuration: defaults, the example file, every error with key and line,
secret handling, and the check-config command."""

from __future__ import annotations

import argparse
from dataclasses import fields
from pathlib import Path

import pytest

from balancer.options import BalancerOptions
from cli import check_config_cmd
from cli.config import (
    Config,
    ConfigError,
    Secret,
    example_keys,
    key_lines,
    load_config,
    parse_config,
)
from model import Crs

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "pve-rebalancer.example.toml"
SECRET = "s3cr3t-0f-the-t0ken"


def problems_of(text: str) -> list[tuple[str, int, str]]:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "c.toml")
    return [(p.key, p.line, p.problem) for p in caught.value.problems]


def test_empty_file_is_the_defaults() -> None:
    assert parse_config("") == Config()


def test_example_equals_the_defaults() -> None:
    assert load_config(EXAMPLE) == Config()


def test_every_config_field_appears_in_the_example() -> None:
    written = key_lines(EXAMPLE.read_text())
    missing = [key for key in example_keys() if key not in written]
    assert missing == []
    # and example_keys really covers every field of every section
    assert {f.name for f in fields(BalancerOptions)} <= {
        k.split(".", 1)[1] for k in example_keys() if k.startswith("balancer.")
    }
    assert {f"{f.name}" for f in fields(Config)} == {k.split(".")[0] for k in example_keys()}


def test_values_are_read_with_durations() -> None:
    config = parse_config(
        '[source]\nwindow = "2h"\nhalf_life = 90\nnow = "latest"\n'
        '[balancer]\nthreshold = 12\nstop_threshold = 5\nexclude_tags = ["pinned"]\n'
        'pair_bandwidth_gib_s = { "pve1:pve2" = 2.5 }\n'
        '[schedule]\ninterval = "30s"\n[actuator]\nwindows = ["22:00-06:00"]\n'
    )
    assert config.source.window == 7200.0
    assert config.source.half_life == 90.0
    assert config.source.now == "latest"
    assert config.balancer.options.threshold == 12.0
    assert config.balancer.options.stop_threshold == 5.0
    assert config.balancer.options.exclude_tags == ["pinned"]
    assert config.balancer.options.pair_bandwidth_gib_s == {"pve1:pve2": 2.5}
    assert config.schedule.interval == 30.0
    assert config.actuator.windows == ["22:00-06:00"]


def test_every_problem_is_listed_with_key_and_line() -> None:
    text = (
        "[source]\n"  # 1
        'type = "ftp"\n'  # 2
        "window = true\n"  # 3
        "[balancer]\n"  # 4
        "treshold = 10\n"  # 5
        'threshold = "high"\n'  # 6
        "mem_headroom = 1.5\n"  # 7
        'method = "random"\n'  # 8
        "[exporter]\n"  # 9
        "port = 70000\n"  # 10
        "[schedule]\n"  # 11
        'interval = "soon"\n'  # 12
        "[logging]\n"  # 13
        "level = 1\n"  # 14
    )
    problems = problems_of(text)
    by_key = {key: (line, problem) for key, line, problem in problems}
    assert by_key["source.type"][0] == 2
    assert "one of files, api" in by_key["source.type"][1]
    assert by_key["source.window"] == (3, by_key["source.window"][1])
    assert "duration" in by_key["source.window"][1]
    assert by_key["balancer.treshold"] == (5, "unknown key")
    assert by_key["balancer.threshold"][0] == 6
    assert "expected a number, got string" in by_key["balancer.threshold"][1]
    assert by_key["balancer.mem_headroom"][0] == 7
    assert "<= 1" in by_key["balancer.mem_headroom"][1]
    assert by_key["balancer.method"][0] == 8
    assert by_key["exporter.port"][0] == 10
    assert by_key["schedule.interval"][0] == 12
    assert by_key["logging"] == (13, "unknown section")
    assert len(problems) == 9
    assert [line for _, line, _ in problems] == sorted(line for _, line, _ in problems)


def test_error_message_has_file_line_key() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config("[balancer]\nhold_duration = -1\n", "conf.toml")
    assert str(caught.value) == "conf.toml:2: balancer.hold_duration: -1 must be >= 0"


def test_syntax_error_carries_its_line() -> None:
    problems = problems_of('[source]\nroot = "/etc/pve"\nwindow = = 3\n')
    assert len(problems) == 1
    assert problems[0][1] == 3


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "absent.toml")
    assert caught.value.problems[0].line == 0


def test_bad_actuator_window_and_auth_hash() -> None:
    problems = problems_of(
        '[actuator]\nwindows = ["22:00-6:00"]\n[exporter]\nauth_user = "prom"\n'
        'auth_password_hash = "plain"\n'
    )
    keys = {key: line for key, line, _ in problems}
    assert keys == {"actuator.windows": 2, "exporter.auth_password_hash": 5}


def test_follow_crs_takes_the_cluster_settings() -> None:
    crs = Crs(ha="static", threshold=15.0, method="topsis", hold_duration=2, margin=5.0)
    config = parse_config("[balancer]\nmax_moves = 4\n")
    options = config.balancer.options_for(crs)
    assert (options.mode, options.method, options.threshold) == ("static", "topsis", 15.0)
    assert (options.hold_duration, options.margin, options.max_moves) == (2, 5.0, 4)
    fixed = parse_config("[balancer]\nfollow_crs = false\nthreshold = 40\n")
    assert fixed.balancer.options_for(crs).threshold == 40.0


# ----- secrets ---------------------------------------------------------------------------


def api_config(secret_line: str) -> str:
    return (
        '[source]\ntype = "api"\n[source.api]\nhosts = ["pve1:8006"]\n'
        f'token_id = "monitor@pve!rebalancer"\n{secret_line}\n'
    )


def test_secret_file_readable_by_owner_only_is_accepted(tmp_path: Path) -> None:
    secret = tmp_path / "token"
    secret.write_text(SECRET + "\n")
    secret.chmod(0o600)
    config = parse_config(api_config(f'token_secret_file = "{secret}"'))
    assert config.source.api.token_secret is not None
    assert config.source.api.token_secret.reveal() == SECRET
    assert SECRET not in repr(config)
    assert SECRET not in str(config.source.api.token_secret)


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644])
def test_group_or_world_readable_secret_file_is_refused(tmp_path: Path, mode: int) -> None:
    secret = tmp_path / "token"
    secret.write_text(SECRET)
    secret.chmod(mode)
    with pytest.raises(ConfigError) as caught:
        parse_config(api_config(f'token_secret_file = "{secret}"'), "c.toml")
    (problem,) = caught.value.problems
    assert problem.key == "source.api.token_secret_file"
    assert problem.line == 6
    assert "group or others" in problem.problem
    assert f"chmod 600 {secret}" in problem.problem
    assert SECRET not in str(caught.value)


def test_secret_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PVE_REBALANCER_TEST_TOKEN", SECRET)
    config = parse_config(api_config('token_secret_env = "PVE_REBALANCER_TEST_TOKEN"'))
    assert config.source.api.token_secret == Secret(SECRET)
    monkeypatch.delenv("PVE_REBALANCER_TEST_TOKEN")
    problems = problems_of(api_config('token_secret_env = "PVE_REBALANCER_TEST_TOKEN"'))
    assert problems[0][0] == "source.api.token_secret_env"
    assert "not set" in problems[0][2]


def test_api_source_needs_hosts_token_and_one_secret() -> None:
    problems = problems_of('[source]\ntype = "api"\n')
    assert {key for key, _, _ in problems} == {
        "source.api.hosts",
        "source.api.token_id",
        "source.api.token_secret_env",
    }


def test_secret_never_in_repr() -> None:
    assert SECRET not in repr(Secret(SECRET))
    assert SECRET not in f"{Secret(SECRET)}"


# ----- check-config --------------------------------------------------------------------


def check_config(path: Path) -> int:
    parser = argparse.ArgumentParser()
    commands = parser.add_subparsers(dest="command", required=True)
    check_config_cmd.register(commands)
    args = parser.parse_args(["check-config", str(path)])
    status: int = args.run(args)
    return status


def test_check_config_ok(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert check_config(EXAMPLE) == 0
    assert capsys.readouterr().out == "ok\n"


def test_check_config_lists_each_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[balancer]\nthreshold = 300\n\n[state]\ndirectory = '/x'\n")
    assert check_config(path) == 2
    assert capsys.readouterr().out.splitlines() == [
        f"{path}:2: balancer.threshold: 300 must be <= 100",
        f"{path}:5: state.directory: unknown key",
    ]
