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
# Create the worker Deployment of each TaskQueue and roll it when the worker spec changes. list + watch: the
# operator keeps its worker Deployments (label app.kubernetes.io/managed-by=taskfleet-operator) in a watch-fed cache
# instead of one GET per TaskQueue per poll; get only after a write conflict.
- apiGroups: [apps]
  resources: [deployments]
  verbs: [get, list, watch, create, update]
# Scale worker Deployments on queue depth (the scale subresource only: nothing else of the Deployment changes).
- apiGroups: [apps]
  resources: [deployments/scale]
  verbs: [patch]
# Worker pods, listed by a worker Deployment's selector: tell why they are not ready (ImagePullBackOff,
# CrashLoopBackOff, Unschedulable) in the WorkersReady condition, only while fewer are ready than asked for; and
# (operator.podDeletionCost.enabled) before a scale-in, patch one annotation on them,
# controller.kubernetes.io/pod-deletion-cost, ranking them by the tasks they run so the ReplicaSet deletes idle
# pods first.
- apiGroups: [""]
  resources: [pods]
  verbs: [list{{ if .Values.operator.podDeletionCost.enabled }}, patch{{ end }}]
# Read the broker URL a TaskQueue references (broker.urlFrom / managementUrlFrom) to measure queue depth: one GET,
# then a watch with a metadata.name field selector per referenced Secret, so a changed or deleted Secret is seen
# without polling and no other Secret reaches the operator. RBAC cannot limit watch to names unknown at install
# time, so `watch` could read any Secret in scope, as `get` can any Secret whose name is known; `list` (enumerating
# them) is not granted, and the operator never watches without a name selector (docs/operator.md, "Caches").
- apiGroups: [""]
  resources: [secrets]
  verbs: [get, watch]
# Tell users what it did (core/v1 Events, as kopf posts them): `kubectl describe tq` shows scaling and broker Events.
- apiGroups: [""]
  resources: [events]
  verbs: [create]
{{- end }}
