"""datacenter.cfg and the crs property string, including the 9.1.2-9.1.4 fraction form."""

from __future__ import annotations

from pathlib import Path

import pytest

from collector.pvecfg.datacenter import parse_crs, parse_datacenter_cfg, parse_percent
from model import Crs

FIXTURES = Path(__file__).parent / "fixtures" / "etc_pve"


def test_full_crs_line():
    text = (FIXTURES / "pve9-cluster" / "datacenter.cfg").read_text()
    config, findings = parse_datacenter_cfg(text)
    assert findings == []
    assert config.crs == Crs(
        ha="dynamic", rebalance_on_start=True, auto_rebalance=True, threshold=40.0
    )
    assert config.values["migration"] == "secure,network=10.10.10.0/24"
    assert config.values["ha"] == "shutdown_policy=migrate"


def test_every_key():
    crs, findings = parse_crs(
        "ha=static,ha-auto-rebalance-method=topsis,ha-auto-rebalance-hold-duration=0,"
        "ha-auto-rebalance-margin=25,ha-auto-rebalance-threshold=1"
    )
    assert findings == []
    assert crs == Crs(ha="static", method="topsis", hold_duration=0, margin=25.0, threshold=1.0)


def test_missing_crs_gives_defaults():
    config, findings = parse_datacenter_cfg("keyboard: en-us\n")
    assert findings == []
    assert config.crs == Crs()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30", 30.0),
        ("0.3", 30.0),
        ("0.05", 5.0),
        (".5", 50.0),
        ("1", 1.0),
        ("1.0", 100.0),
        ("2.5", 2.5),
        ("100", 100.0),
        ("0", 0.0),
        ("101", None),
        ("-5", None),
        ("x", None),
    ],
)
def test_percent_rule(text, expected):
    assert parse_percent(text) == expected


def test_messy_file_findings_and_kept_defaults():
    text = (FIXTURES / "pve8-messy" / "datacenter.cfg").read_text()
    config, findings = parse_datacenter_cfg(text)
    assert config.crs == Crs(ha="static", auto_rebalance=True, threshold=45.0, margin=5.0)
    assert config.values["keyboard"] == "de"
    assert config.description == " managed by hand"
    assert [(f.kind, f.where) for f in findings] == [
        ("config-syntax", "datacenter.cfg:4"),
        ("config-syntax", "datacenter.cfg:5"),
        ("config-bad-value", "datacenter.cfg:3"),
        ("config-unknown-key", "datacenter.cfg:3"),
        ("config-bad-value", "datacenter.cfg:3"),
        ("config-syntax", "datacenter.cfg:3"),
    ]
    messages = [f.message for f in findings]
    assert "ha-auto-rebalance-hold-duration" in messages[2]
    assert "'ha-foo'" in messages[3]
    assert "ha-rebalance-on-start" in messages[4]
    assert "'topsis'" in messages[5]


def test_bad_mode_and_duplicate_key():
    crs, findings = parse_crs("ha=fancy,ha=static", where="datacenter.cfg:7")
    assert crs.ha == "basic"
    assert [(f.kind, f.where) for f in findings] == [
        ("config-bad-value", "datacenter.cfg:7"),
        ("config-syntax", "datacenter.cfg:7"),
    ]
