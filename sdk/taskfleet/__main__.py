"""``python -m taskfleet``: the taskfleet command line."""

from taskfleet.cli import main

main()
