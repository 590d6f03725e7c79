"""The Redis result backend's chord joins and saved groups: key names, and the Lua script that records a header
task's part and decides what its worker does next in one atomic round trip (the rules of
``taskfleet.backends.joins.decide``).

- ``tf:chord:{<id>}:parts`` (HASH): header index -> ``S`` or ``F``, then the part's result or failure (the first
  record of an index wins);
- ``tf:chord:{<id>}:state`` (HASH): ``by`` the index that fired (or failed) the chord, ``kind`` ``fire`` or
  ``fail``, ``done`` ``1`` once that is done;
- ``tf:group:<id>`` (STRING): a saved ``GroupResult``.

The braces make both keys of a chord one Redis Cluster slot. Every key expires after ``result_expires_s``.
"""

from __future__ import annotations

from typing import Any

from taskfleet.backends.joins import DONE, WAIT, ChordPart, JoinAction, JoinDecision
from taskfleet.errors import ResultError
from taskfleet.serializers import Serializer

GROUP_PREFIX = "tf:group:"

#: KEYS: parts, state. ARGV: index, size, encoded part, expiry (ms).
#: Returns {'wait'}, {'done'}, {'fail', the failed part} or {'fire', index, part, index, part, ...}.
CHORD_PART_LUA = """
local parts, state = KEYS[1], KEYS[2]
local index, size, ttl = ARGV[1], tonumber(ARGV[2]), ARGV[4]
redis.call('HSETNX', parts, index, ARGV[3])
redis.call('PEXPIRE', parts, ttl)
local mine = redis.call('HGET', parts, index)
local st = redis.call('HMGET', state, 'by', 'kind', 'done')
local by, kind, done = st[1], st[2], st[3]
if not by then
  if string.sub(mine, 1, 1) == 'F' then
    redis.call('HSET', state, 'by', index, 'kind', 'fail')
    redis.call('PEXPIRE', state, ttl)
    return {'fail', mine}
  end
  if redis.call('HLEN', parts) >= size then
    redis.call('HSET', state, 'by', index, 'kind', 'fire')
    redis.call('PEXPIRE', state, ttl)
    local all = redis.call('HGETALL', parts)
    table.insert(all, 1, 'fire')
    return all
  end
  return {'wait'}
end
if by == index and done ~= '1' then
  if kind == 'fire' then
    local all = redis.call('HGETALL', parts)
    table.insert(all, 1, 'fire')
    return all
  end
  return {'fail', mine}
end
if done == '1' then
  return {'done'}
end
return {'wait'}
"""


def chord_keys(chord_id: str) -> tuple[str, str]:
    """The parts and state keys of chord ``chord_id``."""
    return f"tf:chord:{{{chord_id}}}:parts", f"tf:chord:{{{chord_id}}}:state"


def group_key(group_id: str) -> str:
    return GROUP_PREFIX + group_id


def read_decision(reply: Any, serializer: Serializer) -> JoinDecision:
    """The ``JoinDecision`` of ``CHORD_PART_LUA``'s reply."""
    if not isinstance(reply, list) or not reply:
        raise ResultError(f"unexpected chord join reply {reply!r}")
    action = JoinAction(_text(reply[0]))
    if action is JoinAction.FIRE:
        pairs = reply[1:]
        parts = {int(_text(pairs[i])): ChordPart.decode(_bytes(pairs[i + 1]), serializer)
                 for i in range(0, len(pairs), 2)}
        return JoinDecision(action, [parts[i].value for i in sorted(parts)])
    if action is JoinAction.FAIL:
        return JoinDecision(action, failure=ChordPart.decode(_bytes(reply[1]), serializer).value)
    return DONE if action is JoinAction.DONE else WAIT


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _bytes(value: Any) -> bytes:
    return value.encode() if isinstance(value, str) else bytes(value)
