"""The ``|`` operator on signatures: what ``left | right`` makes (Celery's rules).

| left | right | result |
|---|---|---|
| a task call | anything | ``chain(left, right)`` |
| a chain | a task call or chord, after a group | the group and ``right`` become ``chord(group, right)`` |
| a chain | a task call, after a chord | the chord's body becomes ``body | right`` |
| a chain | anything else | the chain, ``right`` appended (a chain's steps are appended one by one) |
| a group (or chunks) | anything | ``chord(left, right)`` |
| a chord | anything | the chord with ``body | right`` as its body (``right`` as its body when it has none) |
"""

from __future__ import annotations

from typing import Any

from taskfleet.canvas.primitives import Chain, Chord, Chunks, Group, Node, is_node
from taskfleet.signature import Signature


def compose(left: Node, right: Any) -> Node:
    """``left | right`` (see the module docstring); ``TypeError`` when ``right`` is not a signature."""
    if not is_node(right):
        raise TypeError(f"cannot chain {left!r} with {right!r}: both sides of | must be signatures")
    if isinstance(left, Group | Chunks):
        return Chord(left if isinstance(left, Group) else left.group(), right)
    if isinstance(left, Chord):
        body = right if left.body is None else compose(left.body, right)
        return Chord(left.header, body, options=left.options)
    if isinstance(left, Chain):
        return _after_chain(left, right)
    assert isinstance(left, Signature)
    return Chain(left, right)


def _after_chain(left: Chain, right: Node) -> Node:
    if left.options:  # its options stay with its own steps
        return Chain(left, right)
    steps = list(left.tasks)
    last = steps[-1] if steps else None
    group_then_call = isinstance(last, Group | Chunks) and isinstance(right, Signature | Chord)
    if group_then_call or (isinstance(last, Chord) and isinstance(right, Signature)):
        assert last is not None
        steps[-1] = compose(last, right)
    else:
        steps.append(right)
    return Chain(*steps)
