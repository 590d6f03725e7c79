"""The Redis broker's Lua scripts, kept in ``lua/`` beside this module (package data of ``taskfleet.brokers.redis``):
``lua/<name>.lua`` is sent with ``lua/common.lua`` in front, so every script is one self-contained EVALSHA."""

from __future__ import annotations

from importlib import resources

import redis
from redis.commands.core import Script

_LUA = "lua"


def script_source(name: str) -> str:
    """The text of script ``lua/<name>.lua`` with ``lua/common.lua`` in front, as it is sent to the server."""
    folder = resources.files("taskfleet.brokers.redis").joinpath(_LUA)
    common = folder.joinpath("common.lua").read_text(encoding="utf-8")
    body = folder.joinpath(f"{name}.lua").read_text(encoding="utf-8")
    return common + "\n" + body


def load_script(client: redis.Redis, name: str) -> Script:
    """Script ``name`` registered on ``client`` (redis-py calls it by sha and loads it on NOSCRIPT)."""
    return client.register_script(script_source(name))
