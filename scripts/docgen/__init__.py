"""The generator behind ``scripts/gen-config-reference.py``: docs/configuration.md and docs/cli.md from the code.

- ``source``: reading a module's source (its syntax tree and the ``#:`` comments beside names).
- ``sections``: which settings dataclasses are documented, and the code that builds each.
- ``setters``: which ``App`` keyword, flag or env var feeds each field, read from that code.
- ``settings_reference`` and ``env_reference``: docs/configuration.md.
- ``cli_reference``: docs/cli.md.
- ``markdown``: table cells, anchors and the "generated" notice.
"""
