{{/*
The operator's permissions, least privilege: exactly the calls it makes (docs/operator.md). No wildcards, no
delete: worker Deployments are owned by their TaskQueue and removed by garbage collection, never by the operator.
The operator watches no CRDs or Namespaces (kopf scanning is off), so it needs nothing cluster-scoped.
*/}}
{{- define "taskfleet.rbacRules" -}}
# Watch TaskQueues; patch their annotations (kopf's progress and last-handled spec).
- apiGroups: [taskfleet.io]
  resources: [taskqueues]
  verbs: [get, list, watch, patch]
# Report depth, replicas and conditions (`kubectl get tq` columns).
- apiGroups: [taskfleet.io]
  resources: [taskqueues/status]
  verbs: [patch]
# Set blockOwnerDeletion on the worker Deployments it owns (OwnerReferencesPermissionEnforcement).
- apiGroups: [taskfleet.io]
  resources: [taskqueues/finalizers]
  verbs: [update]
# Create the worker Deployment of each TaskQueue and roll it when the worker spec changes.
- apiGroups: [apps]
  resources: [deployments]
  verbs: [get, create, update]
# Scale worker Deployments on queue depth (the scale subresource only: nothing else of the Deployment changes).
- apiGroups: [apps]
  resources: [deployments/scale]
  verbs: [patch]
# Read the broker URL a TaskQueue references (broker.urlFrom / managementUrlFrom) to measure queue depth. get only:
# it cannot list Secrets, so it reads only the ones TaskQueues name.
- apiGroups: [""]
  resources: [secrets]
  verbs: [get]
# Tell users what it did (core/v1 Events, as kopf posts them): `kubectl describe tq` shows scaling and broker Events.
- apiGroups: [""]
  resources: [events]
  verbs: [create]
{{- if .Values.operator.podDeletionCost.enabled }}
# Before a scale-in, rank worker pods by the tasks they run (controller.kubernetes.io/pod-deletion-cost) so the
# ReplicaSet deletes idle pods first: list a TaskQueue's pods by its selector, patch that one annotation.
- apiGroups: [""]
  resources: [pods]
  verbs: [list, patch]
{{- end }}
{{- end }}
