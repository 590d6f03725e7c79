"""The canvas: composing task calls into workflows (Celery's names and meanings).

    from taskfleet import chain, chord, group

    chain(add.s(2, 2), mul.s(8)).delay().get()           # mul(add(2, 2), 8)
    group(add.s(i, i) for i in range(10)).delay().get()  # [0, 2, 4, ...]
    chord((add.s(i, i) for i in range(10)), tsum.s()).delay().get()

Modules: ``primitives`` (chain, group, chord, chunks), ``composition`` (``|``), ``codec`` (signatures as plain data),
``freezing`` (task ids assigned when sent), ``planner`` (the messages a signature sends, with their ``workflow``
data), ``workflow`` (that data), ``launch`` (sending), ``group_result`` (``GroupResult``) and ``builtins``
(``taskfleet.map`` and friends). docs/workflows.md explains how a worker carries a workflow on.
"""

from __future__ import annotations

from taskfleet.canvas.builtins import xmap, xstarmap
from taskfleet.canvas.codec import node_from_dict
from taskfleet.canvas.group_result import GroupResult
from taskfleet.canvas.primitives import Chain, Chord, Chunks, Group, Node, chain, chord, chunks, group

__all__ = ["Chain", "Chord", "Chunks", "Group", "GroupResult", "Node", "chain", "chord", "chunks", "group",
           "node_from_dict", "xmap", "xstarmap"]
