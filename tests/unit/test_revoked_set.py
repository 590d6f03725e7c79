"""Specification of a worker's revoked task ids (taskfleet.worker.revoked): honoured until their expiry."""

from __future__ import annotations

import time

from taskfleet.worker.revoked import RevokedSet


def test_a_revoked_id_is_in_the_set_until_its_expiry() -> None:
    revoked = RevokedSet()
    now = time.time()
    assert revoked.add([("a", now + 60), ("b", now + 0.05)]) == ["a", "b"]
    assert [t in revoked for t in ("a", "b", "c")] == [True, True, False]
    time.sleep(0.1)
    assert "b" not in revoked
    assert "a" in revoked


def test_only_ids_not_revoked_before_are_reported_new_and_a_later_expiry_extends_one() -> None:
    revoked = RevokedSet()
    now = time.time()
    revoked.add([("a", now + 60)])
    assert revoked.add([("a", now + 120), ("b", now + 60)]) == ["b"]
    assert dict(revoked.items())["a"] == now + 120


def test_already_expired_revocations_are_ignored() -> None:
    revoked = RevokedSet()
    assert revoked.add([("a", time.time() - 1)]) == []
    assert len(revoked) == 0


def test_expired_ids_are_pruned_so_the_set_is_bounded_by_expiry() -> None:
    revoked = RevokedSet()
    revoked.add([(f"old-{i}", 1010.0) for i in range(100)], now=1000.0)
    revoked.add([("new", 5000.0)], now=1020.0)  # past the old ones' expiry, and a prune is due
    assert len(revoked) == 1
