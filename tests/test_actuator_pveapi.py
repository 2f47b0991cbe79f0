"""The adapter from pveapi.PveApiClient to the actuator's ApiWriter."""

from __future__ import annotations

from typing import Any, cast

import pytest

from exporters.actuator_pveapi import PveApiWriter
from pveapi import PveApiClient

UPID = "UPID:pve2:00001001:00007007:65000000:qmigrate:100:root@pam:"


class StubClient:
    def __init__(self, answer: Any, status: Any = None) -> None:
        self.answer = answer
        self.status = status
        self.calls: list[tuple[str, str, dict[str, Any]]] = []

    def post(self, path: str, **data: Any) -> Any:
        self.calls.append(("POST", path, data))
        return self.answer

    def get(self, path: str, **params: Any) -> Any:
        self.calls.append(("GET", path, params))
        return self.status

    def __repr__(self) -> str:
        return "PveApiClient(hosts=[pve1:8006], token=root@pam!x=***)"


def writer_for(stub: StubClient) -> PveApiWriter:
    return PveApiWriter(cast(PveApiClient, stub))


def test_post_passes_the_form_and_returns_the_upid():
    stub = StubClient(UPID)
    upid = writer_for(stub).post("/nodes/pve1/qemu/100/migrate", {"target": "pve2", "online": 1})
    assert upid == UPID
    assert stub.calls == [("POST", "/nodes/pve1/qemu/100/migrate", {"target": "pve2", "online": 1})]


@pytest.mark.parametrize("answer", [None, {"sid": "vm:100", "requested-node": "pve2"}, ""])
def test_post_without_a_task_returns_none(answer):
    assert writer_for(StubClient(answer)).post("/cluster/ha/resources/vm:100/migrate", {}) is None


def test_task_status_asks_the_named_node():
    stub = StubClient(None, {"status": "stopped", "exitstatus": "OK"})
    assert writer_for(stub).task_status("pve2", UPID) == {"status": "stopped", "exitstatus": "OK"}
    assert stub.calls == [("GET", f"/nodes/pve2/tasks/{UPID}/status", {})]


def test_task_status_that_is_no_object_is_an_error():
    with pytest.raises(TypeError, match="not an object"):
        writer_for(StubClient(None, ["x"])).task_status("pve2", UPID)


def test_repr_is_the_clients_redacted_one():
    assert repr(writer_for(StubClient(None))) == (
        "PveApiWriter(PveApiClient(hosts=[pve1:8006], token=root@pam!x=***))"
    )
