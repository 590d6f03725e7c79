"""Generate docs/configuration.md and docs/cli.md from the code, so the reference never drifts from it.

- Settings: every field of the settings dataclasses (``dataclasses.fields``), with its type and default, and the
  description written beside it in the source: the ``#:`` lines above the field or the ``#`` comment on its line,
  else the ``#:`` comment of the ``DEFAULT_*`` constant it defaults to. "Set with" is read from the code that
  builds each dataclass (``App.__init__``, the CLI handlers): which ``App`` keyword, flag or env var feeds a field.
  Every field must have a description: a field without one makes this command exit 1.
- Environment variables: the module-level ``ENV_*`` constants, and what reads them.
- CLI: ``taskfleet.cli.build_parser()``, every subcommand and flag, formatted here at a fixed width (no terminal
  dependent wrapping); flag defaults that depend on the machine are shown as their source expression.

The work is done by the ``docgen`` package beside this file; this is its command line. Run
``.venv/bin/python scripts/gen-config-reference.py`` (``--check`` writes nothing and exits 1 when a file is
stale); ``tests/unit/test_config_reference.py`` fails when the committed files differ from what this writes or a
field has no description.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

# Run as a script, this folder (home of ``docgen``) is on sys.path; imported by the tests, it is not.
if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))

from docgen.cli_reference import render_cli
from docgen.markdown import REGENERATE
from docgen.sections import SECTIONS
from docgen.settings_reference import render_configuration
from docgen.source import source

__all__ = ["CLI_DOC", "CONFIG_DOC", "REGENERATE", "REPO", "SECTIONS", "main", "render_all", "source"]

REPO = Path(__file__).resolve().parents[1]
CONFIG_DOC = "docs/configuration.md"
CLI_DOC = "docs/cli.md"


def render_all() -> tuple[dict[str, str], list[str]]:
    """{path relative to the repository: content}, and the settings fields without a description."""
    from taskfleet.cli import build_parser

    parser = build_parser()
    configuration, missing = render_configuration(parser)
    return {CONFIG_DOC: configuration, CLI_DOC: render_cli(parser)}, missing


def main(argv: Sequence[str] | None = None) -> int:
    cli = argparse.ArgumentParser(description="Regenerate docs/configuration.md and docs/cli.md.")
    cli.add_argument("--check", action="store_true", help="write nothing; exit 1 when a file is stale")
    args = cli.parse_args(argv)
    outputs, missing = render_all()
    stale = [path for path, text in outputs.items()
             if not (REPO / path).exists() or (REPO / path).read_text(encoding="utf-8") != text]
    if args.check:
        for path in stale:
            print(f"{path} is stale: run {REGENERATE}", file=sys.stderr)
    else:
        for path in stale:
            (REPO / path).write_text(outputs[path], encoding="utf-8")
            print(f"wrote {path}")
    if missing:
        print("fields without a description (write a `#:` comment above each): " + ", ".join(missing),
              file=sys.stderr)
    return 1 if missing or (args.check and stale) else 0


if __name__ == "__main__":
    sys.exit(main())
