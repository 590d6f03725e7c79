"""The fault-injection suite (issue 15): real workers on every broker, under kill -9, SIGSTOP, broker restarts,
drains and poison messages, checked against a ledger kept outside the broker. See docs/reliability.md."""
