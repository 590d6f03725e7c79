{{/*
Names, labels and RBAC rules of the optional dashboard (dashboard.enabled; templates dashboard-*.yaml).
*/}}

{{/* "<fullname>-dashboard": the dashboard's Deployment, Service and (Cluster)Role names. */}}
{{- define "taskfleet.dashboard.fullname" -}}
{{- printf "%s-dashboard" (include "taskfleet.fullname" .) }}
{{- end }}

{{/*
Labels that select the dashboard's pods: name "taskfleet-dashboard", so they never match the operator's selector
(name "taskfleet", same instance). Never change them: Deployment selectors are immutable.
*/}}
{{- define "taskfleet.dashboard.selectorLabels" -}}
app.kubernetes.io/name: {{ printf "%s-dashboard" (include "taskfleet.name" .) }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Every dashboard resource's labels. */}}
{{- define "taskfleet.dashboard.labels" -}}
helm.sh/chart: {{ include "taskfleet.chart" . }}
{{ include "taskfleet.dashboard.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: taskfleet
app.kubernetes.io/component: dashboard
{{- end }}

{{/* The dashboard's ServiceAccount: the created one, or dashboard.serviceAccount.name (required otherwise). */}}
{{- define "taskfleet.dashboard.serviceAccountName" -}}
{{- if .Values.dashboard.serviceAccount.create }}
{{- default (include "taskfleet.dashboard.fullname" .) .Values.dashboard.serviceAccount.name }}
{{- else }}
{{- required "dashboard.serviceAccount.name must name an existing ServiceAccount when dashboard.serviceAccount.create is false" .Values.dashboard.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The dashboard's image: dashboard.image, else the chart's. */}}
{{- define "taskfleet.dashboard.image" -}}
{{- default (include "taskfleet.image" .) .Values.dashboard.image }}
{{- end }}

{{/*
The dashboard's permissions: read-only, exactly what it shows. TaskQueues (spec and status: the Autoscaling page) and
core/v1 Events (the operator's scaling decisions, listed per TaskQueue with a field selector). No Secrets (its broker
URLs come from env vars the kubelet fills), no pods, no writes.
*/}}
{{- define "taskfleet.dashboard.rbacRules" -}}
- apiGroups: [taskfleet.io]
  resources: [taskqueues]
  verbs: [get, list, watch]
- apiGroups: [""]
  resources: [events]
  verbs: [get, list, watch]
{{- end }}

{{/* One env var from a `{secretKeyRef: {name, key}}` value, else from a plain URL, else nothing. */}}
{{- define "taskfleet.dashboard.urlEnv" -}}
{{- if .from.secretKeyRef -}}
- name: {{ .name }}
  valueFrom:
    secretKeyRef:
      name: {{ .from.secretKeyRef.name }}
      key: {{ .from.secretKeyRef.key }}
{{- else if .url -}}
- name: {{ .name }}
  value: {{ .url | quote }}
{{- end }}
{{- end }}
