"""The Taskfleet Kubernetes operator: TaskQueue resources, their worker Deployments, autoscaling on queue depth.

``taskfleet operator`` runs it (``operator_command.py``); ``runner.py`` configures kopf, ``handlers.py`` holds the
thin kopf handlers, ``autoscaler.py`` the polling loops; ``resources``, ``manifests``, ``scaling`` and ``status``
are pure.
"""
