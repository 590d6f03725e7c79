"""Specification of revoking from results (Celery's ``AsyncResult.revoke`` and ``GroupResult.revoke``): each
stores its task ids as revocations through ``app.control.revoke``, a group every part of itself."""

from __future__ import annotations

from taskfleet import App, chain, chord, group
from taskfleet.canvas.group_result import GroupResult, part_ids
from taskfleet.result import AsyncResult
from tests import tasks


def stored(app: App) -> dict[str, bool]:
    store = app.control.store()
    try:
        return {r.task_id: r.terminate for r in store.revocations()}
    finally:
        store.close()


def test_async_result_revoke_stores_its_id_for_workers_started_later(memory_app: App) -> None:
    result = tasks.add.delay(1, 2)
    assert result.revoke(terminate=True) == []
    assert stored(memory_app)[result.id] is True


def test_group_result_revoke_revokes_every_part_chains_and_chords_whole(memory_app: App) -> None:
    # Given a group of a task, a chain and a chord
    flow = group(tasks.add.s(1, 1), chain(tasks.add.s(2, 2), tasks.add.s(3)),
                 chord([tasks.add.s(4, 4), tasks.add.s(5, 5)], tasks.pid.si()))
    result = flow.apply_async()
    assert isinstance(result, GroupResult)
    single, chained, chorded = result.results
    assert isinstance(chained, AsyncResult)
    assert isinstance(chorded, AsyncResult)
    assert isinstance(chained.parent, AsyncResult)
    assert isinstance(chorded.parent, GroupResult)
    # When it is revoked
    result.revoke()
    # Then every task id in it is: the chain's steps, the chord's header and body
    expected = [single.id, chained.parent.id, chained.id, *(r.id for r in chorded.parent.results), chorded.id]
    assert part_ids(result) == expected
    assert set(expected) <= set(stored(memory_app))  # (the in-memory store outlives one test)
