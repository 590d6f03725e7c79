"""The Taskfleet Kubernetes operator (TaskQueue resources); built in a later issue."""
