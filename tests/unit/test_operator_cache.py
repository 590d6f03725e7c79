"""The informer (operator/cache.py): a list, then a watch from its version; events kept in memory; a watch that
ends is resumed, 410 Gone and failures re-list; reads never call the API."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from taskfleet.errors import ClusterError
from taskfleet.operator.cache import Gone, Informer, newer_or_equal
from tests.support.waiting import wait_for

Json = dict[str, Any]
END = {"type": "END"}


def obj(name: str, version: int, namespace: str = "ns", **extra: Any) -> Json:
    return {"metadata": {"namespace": namespace, "name": name, "resourceVersion": str(version)}, **extra}


class FakeSource:
    """Lists return ``listing``; each watch call takes the next script from ``watches`` (a queue of events, ending
    with END, or an exception to raise)."""

    def __init__(self, listing: list[Json], version: str | None = "10") -> None:
        self.listing = listing
        self.version = version
        self.list_error: Exception | None = None
        self.lists = 0
        self.watched_from: list[str | None] = []
        self.events: queue.Queue[Json | Exception] = queue.Queue()
        self.closed = False

    def list(self) -> tuple[list[Json], str | None]:
        self.lists += 1
        if self.list_error is not None:
            raise self.list_error
        return list(self.listing), self.version

    def watch(self, resource_version: str | None, stopped: threading.Event) -> Iterator[Json]:
        self.watched_from.append(resource_version)
        while not stopped.is_set():
            try:
                item = self.events.get(timeout=0.05)
            except queue.Empty:
                continue
            if isinstance(item, Exception):
                raise item
            if item is END:
                return
            yield item

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def source() -> FakeSource:
    return FakeSource([obj("a", 5, data={"url": "one"})])


@pytest.fixture
def informer(source: FakeSource) -> Iterator[Informer]:
    running = Informer(source, name="test", backoff_s=(0.01,)).start()
    yield running
    running.stop()


def test_a_read_answers_from_the_list_and_makes_no_request(source: FakeSource, informer: Informer) -> None:
    assert informer.get("ns", "a") == obj("a", 5, data={"url": "one"})
    assert informer.get("ns", "missing") is None
    assert source.lists == 1


def test_watch_events_add_change_and_delete_objects(source: FakeSource, informer: Informer) -> None:
    informer.get("ns", "a")
    source.events.put({"type": "ADDED", "object": obj("b", 11)})
    source.events.put({"type": "MODIFIED", "object": obj("a", 12, data={"url": "two"})})
    source.events.put({"type": "DELETED", "object": obj("b", 13)})

    wait_for(lambda: (informer.get("ns", "a") or {}).get("data") == {"url": "two"} and
             informer.get("ns", "b") is None, 2, interval=0.01, message="events not applied")
    assert source.watched_from == ["10"]


def test_a_watch_the_server_ends_is_resumed_from_the_last_version_seen_without_a_new_list(
    source: FakeSource, informer: Informer
) -> None:
    informer.get("ns", "a")
    source.events.put({"type": "MODIFIED", "object": obj("a", 12)})
    source.events.put({"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "20"}}})
    source.events.put(END)

    wait_for(lambda: len(source.watched_from) == 2, 2, interval=0.01, message="the watch was not resumed")
    assert source.watched_from == ["10", "20"]
    assert source.lists == 1


@pytest.mark.parametrize("failure", [
    pytest.param(Gone("too old"), id="410 raised"),
    pytest.param(ClusterError("connection reset"), id="broken connection"),
])
def test_gone_or_a_failed_watch_lists_again_and_replaces_the_store(
    source: FakeSource, informer: Informer, failure: Exception
) -> None:
    informer.get("ns", "a")
    source.listing = [obj("c", 30)]
    source.version = "30"
    source.events.put(failure)

    wait_for(lambda: informer.get("ns", "c") is not None, 2, interval=0.01, message="no re-list")
    assert informer.get("ns", "a") is None, "an object deleted while the watch was down is gone after the re-list"
    assert source.lists == 2
    wait_for(lambda: source.watched_from[-1] == "30", 2, interval=0.01, message="the watch did not restart")


def test_an_error_event_410_lists_again(source: FakeSource, informer: Informer) -> None:
    informer.get("ns", "a")
    source.events.put({"type": "ERROR", "object": {"kind": "Status", "code": 410, "message": "too old"}})

    wait_for(lambda: source.lists == 2, 2, interval=0.01, message="no re-list after a 410 ERROR event")


def test_reads_before_a_first_successful_list_raise_the_reason() -> None:
    failing = FakeSource([])
    failing.list_error = ClusterError("Kubernetes API 403 Forbidden: secrets is forbidden")
    informer = Informer(failing, name="secret ns/broker", backoff_s=(0.01,)).start()
    try:
        with pytest.raises(ClusterError, match="403 Forbidden"):
            informer.get("ns", "broker", wait_s=2)
        failing.list_error = None
        failing.listing = [obj("broker", 3)]
        wait_for(lambda: failing.lists >= 2, 2, interval=0.01, message="the informer gave up")
        wait_for(lambda: _readable(informer), 2, interval=0.01, message="never listed")
    finally:
        informer.stop()


def _readable(informer: Informer) -> bool:
    try:
        return informer.get("ns", "broker") is not None
    except ClusterError:
        return False


def test_a_write_through_is_kept_until_a_newer_version_arrives(source: FakeSource, informer: Informer) -> None:
    informer.get("ns", "a")
    informer.remember(obj("a", 15, data={"url": "written"}))
    informer.remember(obj("a", 14, data={"url": "older"}))

    assert (informer.get("ns", "a") or {})["data"] == {"url": "written"}


def test_transform_trims_what_is_stored() -> None:
    source = FakeSource([obj("a", 1, data={"url": "x"}, spec={"big": "y" * 1000})])
    informer = Informer(source, name="t", transform=lambda o: {"metadata": o["metadata"], "data": o["data"]}).start()
    try:
        assert informer.get("ns", "a") == obj("a", 1, data={"url": "x"})
    finally:
        informer.stop()


def test_stop_ends_the_watch_and_closes_the_source(source: FakeSource, informer: Informer) -> None:
    informer.get("ns", "a")
    informer.stop()

    assert source.closed


@pytest.mark.parametrize(("candidate", "current", "newer"), [
    ("12", "11", True), ("11", "11", True), ("10", "11", False), ("x", "11", True),
])
def test_resource_versions_compare_as_integers_when_they_are(candidate: str, current: str, newer: bool) -> None:
    def versioned(version: str) -> Json:
        return {"metadata": {"resourceVersion": version}}

    assert newer_or_equal(versioned(candidate), versioned(current)) is newer
