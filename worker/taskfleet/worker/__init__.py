"""The Taskfleet worker: prefork supervisor, children, executor, health and metrics."""
