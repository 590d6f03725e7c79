"""Specification of the ``FleetStore`` contract (``taskfleet.brokers.fleet_store``), run against every broker
(``broker_kind``, the in-process stub included) on a real private server.

Stores are opened the way workers and clients open them (``connect_fleet_store`` on a broker), several per test
where the contract is about what one store sees of another's writes.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from urllib.parse import unquote, urlsplit

import pytest
import redis

from taskfleet._connections.sqlite import sqlite_path
from taskfleet.brokers.fleet_store import ControlListener, FleetStore, ReplyInbox, connect_fleet_store
from taskfleet.brokers.rabbitmq._streams import events_max_bytes
from taskfleet.brokers.redis._keys import FleetKeys
from taskfleet.brokers.stub._fleet import shared_fleet_state
from taskfleet.errors import BrokerConnectionError, ControlError
from taskfleet.fleet.revocations import Revocation
from tests.conftest import MakeBroker
from tests.support.brokers import CONFORMANCE_KIND_NAMES, BrokerKind, Capability, RabbitMQKind, RedisKind, SQLiteKind
from tests.support.rabbitmq_server import ManagementApiError, vhost_path
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.parametrize("broker_kind", CONFORMANCE_KIND_NAMES, indirect=True)]

NAMESPACE = "fleet-spec"
#: Bytes that are no JSON, no UTF-8: the store must move them as they are (decoding is the caller's).
GARBAGE = b"\x00\xff\xfe not json \x80"
#: Short TTLs keep the expiry tests quick; readers may see a record up to this much after its expiry.
EXPIRY_SLACK_S = 2.0

MakeStore = Callable[..., FleetStore]


@pytest.fixture
def make_store(make_broker: MakeBroker) -> Iterator[MakeStore]:
    """Factory of fleet stores on the test's clean broker (one broker client each, as processes have); all are
    closed at the end."""
    stores: list[FleetStore] = []

    def make(*, namespace: str = NAMESPACE, events_max_len: int = 10_000) -> FleetStore:
        store = connect_fleet_store(make_broker(), namespace=namespace, events_max_len=events_max_len)
        stores.append(store)
        return store

    yield make
    for store in stores:
        store.close()


@pytest.fixture
def store(make_store: MakeStore) -> FleetStore:
    return make_store()


def revocation(task_id: str, *, in_s: float = 60.0, terminate: bool = False) -> Revocation:
    return Revocation(task_id, time.time() + in_s, terminate=terminate)


def collect_all(receive: Callable[[float], list[bytes]], count: int, timeout_s: float = 5.0) -> list[bytes]:
    """What ``receive(timeout)`` returns over as many calls as it takes to have ``count`` items."""
    got: list[bytes] = []
    deadline = time.monotonic() + timeout_s
    while len(got) < count and (remaining := deadline - time.monotonic()) > 0:
        got += receive(remaining)
    return got


def read_all(store: FleetStore, cursor: str | None = None, *, page: int = 1000) -> tuple[list[bytes], str]:
    """Every event after ``cursor``, page by page, and the cursor after them."""
    out: list[bytes] = []
    while True:
        events, cursor = store.read_events(cursor, limit=page)
        if not events:
            assert cursor is not None
            return out, cursor
        out += events


def read_all_written(store: FleetStore, newest: bytes, cursor: str | None = None) -> list[bytes]:
    """Every event kept after ``cursor``, once the one starting with ``newest`` is among them and two reads in a row
    agree: RabbitMQ stores a batch after ``emit_events`` returns (no confirms), so a reader may see the end of the
    stream before a large one lands; it drops segments while the last batches land, and a read that overlaps the
    drop may miss events that the next read finds (or briefly find nothing)."""
    kept: list[bytes] = []
    previous: list[bytes] | None = None

    def landed() -> bool:
        nonlocal kept, previous
        kept = read_all(store, cursor)[0]
        settled = kept == previous
        previous = kept
        return bool(kept) and kept[-1].startswith(newest) and settled

    try:
        wait_for(landed, timeout=30.0, interval=0.2)
    except AssertionError:
        raise AssertionError(f"the event {newest!r} was not stored: read {len(kept)} events, the last "
                             f"{[e[:16] for e in kept[-3:]]}") from None
    return kept


# -- registry ----------------------------------------------------------------------------------------------------


def test_a_heartbeat_is_listed_by_another_store_and_the_next_one_replaces_it(make_store: MakeStore) -> None:
    worker, reader = make_store(), make_store()

    worker.heartbeat("host:1", b"first", ttl_s=30)
    worker.heartbeat("host:1", b"second", ttl_s=30)
    worker.heartbeat("host:2", b"other", ttl_s=30)

    assert sorted(reader.workers()) == [b"other", b"second"]


def test_a_record_expires_after_its_ttl_with_no_one_to_clean_up(make_store: MakeStore) -> None:
    worker, reader = make_store(), make_store()
    worker.heartbeat("host:1", b"short", ttl_s=1.0)
    worker.heartbeat("host:2", b"long", ttl_s=60)
    assert sorted(reader.workers()) == [b"long", b"short"]

    wait_for(lambda: reader.workers() == [b"long"], timeout=1.0 + EXPIRY_SLACK_S,
             message="the short-lived record expired and the other stayed")


def test_forget_worker_removes_a_record_at_once_and_ignores_unknown_ids(make_store: MakeStore) -> None:
    worker, reader = make_store(), make_store()
    worker.heartbeat("host:1", b"record", ttl_s=60)
    assert reader.workers() == [b"record"]

    worker.forget_worker("host:1")
    worker.forget_worker("never-seen:9")

    assert reader.workers() == []


def test_namespaces_do_not_see_each_other(make_store: MakeStore) -> None:
    make_store(namespace="app-a").heartbeat("host:1", b"a", ttl_s=60)

    assert make_store(namespace="app-b").workers() == []


# -- revocations -------------------------------------------------------------------------------------------------


def test_revocations_are_stored_for_later_readers_and_a_task_id_stored_again_is_replaced(
        make_store: MakeStore) -> None:
    client = make_store()
    first = revocation("t1")
    client.add_revocations([first, revocation("t2")])
    replaced = revocation("t1", in_s=120, terminate=True)

    client.add_revocations([replaced])

    by_id = {r.task_id: r for r in make_store().revocations()}
    assert sorted(by_id) == ["t1", "t2"]
    assert by_id["t1"].terminate
    assert by_id["t1"].expires_at == pytest.approx(replaced.expires_at, abs=0.001)


def test_a_revocation_is_forgotten_at_its_expiry(store: FleetStore) -> None:
    store.add_revocations([revocation("short", in_s=1.0), revocation("long")])

    wait_for(lambda: [r.task_id for r in store.revocations()] == ["long"], timeout=1.0 + EXPIRY_SLACK_S,
             message="the short revocation expired")


# -- control -----------------------------------------------------------------------------------------------------


def test_a_request_reaches_every_open_listener_and_not_one_opened_after_it(make_store: MakeStore) -> None:
    # Given two workers listening
    first = make_store().control_listener("host:1")
    second = make_store().control_listener("host:2")
    client = make_store()
    try:
        # When a client publishes two requests
        client.publish_control(b"request-1")
        client.publish_control(GARBAGE)
        late = make_store().control_listener("host:3")
        try:
            # Then both listeners get both, in order, and the late one none of them
            assert collect_all(first.receive, 2) == [b"request-1", GARBAGE]
            assert collect_all(second.receive, 2) == [b"request-1", GARBAGE]
            assert late.receive(0.5) == []
            client.publish_control(b"request-2")
            assert collect_all(late.receive, 1) == [b"request-2"]
        finally:
            late.close()
    finally:
        first.close()
        second.close()


def test_receive_waits_for_a_request_and_returns_empty_on_timeout(make_store: MakeStore) -> None:
    listener = make_store().control_listener("host:1")
    client = make_store()
    try:
        started = time.monotonic()
        assert listener.receive(0.4) == []
        assert time.monotonic() - started >= 0.35

        publisher = threading.Timer(0.3, client.publish_control, args=(b"wake",))
        publisher.start()
        started = time.monotonic()
        assert listener.receive(5.0) == [b"wake"]
        assert time.monotonic() - started < 2.0
        publisher.join()  # its reply read before the fixtures close the client's connection
    finally:
        listener.close()


def test_replies_reach_the_inbox_and_collect_returns_once_the_expected_have_arrived(
        make_store: MakeStore) -> None:
    client, worker = make_store(), make_store()
    inbox = client.reply_inbox()
    try:
        worker.reply(inbox.address, b"reply-1")
        worker.reply(inbox.address, GARBAGE)

        started = time.monotonic()
        got = inbox.collect(10.0, expected=2)

        assert sorted(got) == sorted([b"reply-1", GARBAGE])
        assert time.monotonic() - started < 5.0
    finally:
        inbox.close()


def test_collect_waits_out_its_timeout_when_fewer_replies_come(make_store: MakeStore) -> None:
    client, worker = make_store(), make_store()
    inbox = client.reply_inbox()
    try:
        threading.Timer(0.2, worker.reply, args=(inbox.address, b"only")).start()
        started = time.monotonic()

        got = inbox.collect(1.0, expected=3)

        assert got == [b"only"]
        assert 0.9 <= time.monotonic() - started < 3.0
        assert inbox.collect(0.3) == []
    finally:
        inbox.close()


def test_two_inboxes_get_only_their_own_replies_and_a_reply_to_a_closed_one_is_dropped(
        make_store: MakeStore) -> None:
    client, worker = make_store(), make_store()
    one, two = client.reply_inbox(), client.reply_inbox()
    try:
        assert one.address != two.address
        worker.reply(one.address, b"for-one")
        worker.reply(two.address, b"for-two")
        assert one.collect(5.0, expected=1) == [b"for-one"]
        assert two.collect(5.0, expected=1) == [b"for-two"]
    finally:
        one.close()
        two.close()

    worker.reply(one.address, b"too late")  # no error: the broker drops it


def test_a_listener_hears_requests_again_once_its_server_is_back(
        make_store: MakeStore, broker_kind: BrokerKind) -> None:
    # Given a worker listening
    broker_kind.require(Capability.SERVER)
    listener = make_store().control_listener("host:1")
    try:
        # When the server restarts
        broker_kind.restart()
        client = make_store()

        # Then the same listener hears requests again (one published while it reconnects may be missed)
        def heard() -> list[bytes]:
            try:
                client.publish_control(b"after restart")
                return listener.receive(0.5)
            except BrokerConnectionError:
                return []

        wait_for(heard, timeout=30.0, interval=0.2, message="the listener heard a request after the restart")
    finally:
        listener.close()


# -- events ------------------------------------------------------------------------------------------------------


def test_events_are_read_in_pages_in_order_from_the_oldest(make_store: MakeStore) -> None:
    emitter, reader = make_store(), make_store()
    batch = [b"e%d" % i for i in range(25)] + [GARBAGE]

    emitter.emit_events(batch)

    pages: list[list[bytes]] = []
    cursor = None
    for _ in range(3):
        page, cursor = reader.read_events(cursor, limit=10)
        pages.append(page)
    assert [len(page) for page in pages] == [10, 10, 6]
    assert [event for page in pages for event in page] == batch
    assert reader.read_events(cursor, limit=10)[0] == []


def test_a_blocking_read_wakes_when_an_event_is_emitted(make_store: MakeStore) -> None:
    emitter, reader = make_store(), make_store()
    end = reader.events_end()
    threading.Timer(0.3, emitter.emit_events, args=([b"late"],)).start()
    started = time.monotonic()

    events, _ = reader.read_events(end, timeout_s=5.0)

    assert events == [b"late"]
    assert time.monotonic() - started < 3.0


def test_a_read_with_nothing_new_returns_after_its_timeout_with_a_cursor_to_read_on_from(store: FleetStore) -> None:
    store.emit_events([b"old"])
    end = store.events_end()
    started = time.monotonic()

    events, cursor = store.read_events(end, timeout_s=0.5)

    assert events == []
    assert 0.4 <= time.monotonic() - started < 3.0
    store.emit_events([b"new"])
    assert read_all(store, cursor)[0] == [b"new"]


def test_events_end_is_the_cursor_of_only_later_events(make_store: MakeStore) -> None:
    emitter, reader = make_store(), make_store()
    emitter.emit_events([b"before-1", b"before-2"])

    end = reader.events_end()
    emitter.emit_events([b"after"])

    assert read_all(reader, end)[0] == [b"after"]
    assert read_all(reader)[0] == [b"before-1", b"before-2", b"after"]


def test_an_empty_stream_reads_empty_and_its_end_reads_what_comes_next(store: FleetStore) -> None:
    end = store.events_end()
    assert store.read_events(None)[0] == []

    store.emit_events([b"first"])

    assert read_all(store, end)[0] == [b"first"]


def test_a_cursor_that_is_not_one_of_the_store_is_refused(store: FleetStore) -> None:
    for garbage in ["not-a-cursor", "1-0:x", ":3", "12:", "1:2:3"]:
        with pytest.raises(ControlError):
            store.read_events(garbage)


def test_the_stream_keeps_about_the_latest_events_max_len(make_store: MakeStore, broker_kind: BrokerKind) -> None:
    # Given a stream capped at 50 events
    emitter = make_store(events_max_len=50)
    total, size = 5000, 400

    # When 5000 events of 400 bytes are emitted in batches of 100
    for start in range(0, total, 100):
        emitter.emit_events([b"event-%05d:" % i + b"." * (size - 12) for i in range(start, start + 100)])

    # Then far fewer are kept, the newest among them, in order; how many depends on the broker (docs/brokers.md,
    # "Fleet state")
    kept = read_all_written(make_store(events_max_len=50), b"event-%05d:" % (total - 1))
    assert kept == sorted(kept)
    assert least_kept(broker_kind, 50, 100) <= len(kept) <= most_kept(broker_kind, 50, size, 100), len(kept)


def most_kept(kind: BrokerKind, events_max_len: int, event_bytes: int, batch: int) -> int:
    """The most events of ``event_bytes`` a stream capped at ``events_max_len`` may keep, written in batches of
    ``batch``: exactly the cap in SQLite and the stub; on Redis a batch is one entry, and whole entries are trimmed
    once the cap is passed by a tenth; on RabbitMQ the cap is in bytes and whole segments (a quarter of it) are
    dropped."""
    if isinstance(kind, RedisKind):
        return events_max_len + events_max_len // 10 + batch
    if isinstance(kind, RabbitMQKind):
        return events_max_bytes(events_max_len) * 5 // 4 // event_bytes
    return events_max_len


def least_kept(kind: BrokerKind, events_max_len: int, batch: int) -> int:
    """The fewest events a stream capped at ``events_max_len`` keeps once far more were written in batches of
    ``batch``: the cap, except on RabbitMQ, which drops whole segments and keeps at least the newest batch (seen
    keeping 800-2,400 of a 1,000-event cap; before the events writer had a window of unconfirmed bytes, a loaded
    server once took all 50 batches as one chunk and kept none of them: docs/brokers.md)."""
    if isinstance(kind, RabbitMQKind):
        return min(events_max_len, batch)
    return events_max_len


def test_the_cap_counts_events_not_batches(make_store: MakeStore, broker_kind: BrokerKind) -> None:
    # Given a stream capped at 1000 events
    emitter = make_store(events_max_len=1000)

    # When 50 batches of 100 events are emitted (far fewer batches than the cap)
    for start in range(0, 5000, 100):
        emitter.emit_events([b"event-%05d:" % i + b"." * 388 for i in range(start, start + 100)])

    # Then about the cap in events is kept, the newest
    kept = read_all_written(make_store(events_max_len=1000), b"event-04999:")
    assert least_kept(broker_kind, 1000, 100) <= len(kept) <= most_kept(broker_kind, 1000, 400, 100), len(kept)


def test_a_batch_bigger_than_the_limit_is_paged_exactly(make_store: MakeStore) -> None:
    # Given one batch of 2500 events (more than one stream entry holds, on the brokers that pack them)
    emitter, reader = make_store(), make_store()
    batch = [b"e%04d" % i for i in range(2500)]
    emitter.emit_events(batch)

    # When it is read in pages of 7 (a page ends inside a batch almost every time)
    pages: list[list[bytes]] = []
    cursor = None
    while page := reader.read_events(cursor, limit=7):
        if not page[0]:
            break
        pages.append(page[0])
        cursor = page[1]

    # Then every event comes exactly once, in order, and no page is longer than the limit
    assert [event for page in pages for event in page] == batch
    assert max(len(page) for page in pages) == 7


def test_a_cursor_inside_a_batch_is_read_on_from_by_another_store(make_store: MakeStore) -> None:
    # Given a reader that read the first 10 events of a batch of 25
    emitter, first, second = make_store(), make_store(), make_store()
    batch = [b"e%d" % i for i in range(25)]
    emitter.emit_events(batch)
    page, cursor = first.read_events(None, limit=10)
    assert page == batch[:10]

    # When more events come, and another store reads from that cursor
    emitter.emit_events([b"later"])
    rest, _ = read_all(second, cursor)

    # Then it gets the rest of the batch and what came later, nothing twice
    assert rest == [*batch[10:], b"later"]


def test_a_cursor_inside_a_batch_whose_events_were_dropped_reads_on_from_the_oldest_kept(
        make_store: MakeStore, broker_kind: BrokerKind) -> None:
    # Given a cursor inside the first batch of a stream capped at 100 events
    emitter = make_store(events_max_len=100)
    emitter.emit_events([b"first-%d" % i for i in range(50)])
    _, cursor = emitter.read_events(None, limit=10)

    # When so many events follow that the first batch is dropped (RabbitMQ's cap is at least 1 MiB)
    for start in range(0, 3000, 300):
        emitter.emit_events([b"later-%05d:" % i + b"." * 988 for i in range(start, start + 300)])

    # Then reading from the cursor reads on from the oldest event kept: nothing of the dropped batch, the later
    # events in order up to the newest
    if isinstance(broker_kind, RabbitMQKind):
        # Known limit: just after RabbitMQ drops the segments a cursor points into, a read from it (or from the
        # start) can find nothing kept (seen in about one run in four under load). Held here: never an event of
        # the dropped batch, never one out of order.
        from_cursor, _ = read_all(emitter, cursor)
        assert not any(event.startswith(b"first-") for event in from_cursor)
        numbers = [int(event[6:11]) for event in from_cursor]
        assert numbers == sorted(set(numbers))
        return
    from_cursor = read_all_written(emitter, b"later-02999:", cursor)
    assert not any(event.startswith(b"first-") for event in from_cursor)
    numbers = [int(event[6:11]) for event in from_cursor]
    assert numbers == list(range(numbers[0], 3000))
    assert from_cursor == read_all(emitter)[0]


# -- closing -----------------------------------------------------------------------------------------------------


def held_on_broker(kind: BrokerKind, url: str, inbox_address: str) -> dict[str, int]:
    """What the broker still holds for one inbox and for the namespace's listeners, looked up the broker's way."""
    if isinstance(kind, RedisKind):
        keys = FleetKeys.of(NAMESPACE)
        client = redis.Redis.from_url(url)
        try:
            listeners = int(client.pubsub_numsub(keys.control)[0][1])  # type: ignore[no-untyped-call]
            return {"inbox": int(client.exists(keys.inbox(inbox_address), keys.inbox_open(inbox_address))),
                    "listeners": listeners}
        finally:
            client.close()
    if isinstance(kind, RabbitMQKind):
        vhost = vhost_path(unquote(urlsplit(url).path[1:]))
        try:
            kind.server.api("GET", f"/api/queues/{vhost}/{vhost_path(inbox_address)}")
            inbox = 1
        except ManagementApiError as exc:
            if exc.status != 404:
                raise
            inbox = 0
        control = vhost_path(f"taskfleet.fleet.{NAMESPACE}.control")
        return {"inbox": inbox, "listeners": len(kind.server.api("GET", f"/api/exchanges/{vhost}/{control}"
                                                                        "/bindings/source"))}
    if isinstance(kind, SQLiteKind):
        with contextlib.closing(sqlite3.connect(sqlite_path(url))) as conn:
            rows = conn.execute("SELECT COUNT(*) FROM tf_fleet_inboxes WHERE address = ?", (inbox_address,))
            return {"inbox": int(rows.fetchone()[0]), "listeners": 0}  # a listener holds nothing in the file
    state = shared_fleet_state(url, NAMESPACE)
    return {"inbox": int(inbox_address in state.inboxes), "listeners": len(state.listeners)}


def test_closing_a_listener_and_an_inbox_releases_them_on_the_broker(
        make_store: MakeStore, broker_kind: BrokerKind, broker_url: str) -> None:
    # Given an open listener and an open inbox
    worker, client = make_store(), make_store()
    listener: ControlListener = worker.control_listener("host:1")
    inbox: ReplyInbox = client.reply_inbox()
    held = held_on_broker(broker_kind, broker_url, inbox.address)
    assert held["inbox"] >= 1
    assert held["listeners"] == (0 if isinstance(broker_kind, SQLiteKind) else 1)

    # When both are closed
    listener.close()
    inbox.close()

    # Then the broker holds nothing for them, and a late reply is dropped rather than kept
    worker.reply(inbox.address, b"after close")
    wait_for(lambda: held_on_broker(broker_kind, broker_url, inbox.address) == {"inbox": 0, "listeners": 0},
             timeout=5.0, message="the broker released the inbox and the listener")


def test_a_closed_store_can_be_closed_again_and_others_go_on(make_store: MakeStore) -> None:
    store = make_store()
    store.heartbeat("host:1", b"record", ttl_s=60)
    store.close()
    store.close()

    other = make_store()
    other.publish_control(b"still works")
    assert other.workers() == [b"record"]
