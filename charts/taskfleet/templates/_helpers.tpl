{{/*
Names, labels and small helpers shared by every template. All are namespaced "taskfleet." so a parent chart's
helpers of the same name cannot collide.
*/}}

{{/* The chart name, or nameOverride. */}}
{{- define "taskfleet.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The prefix of every resource name: fullnameOverride, else "<release>-<name>", else the release name when it already
contains the name. Truncated to 50 characters so suffixes such as "-dev-brokers" keep names within 63.
*/}}
{{- define "taskfleet.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* "name-version" for the helm.sh/chart label. */}}
{{- define "taskfleet.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels every resource carries. */}}
{{- define "taskfleet.labels" -}}
helm.sh/chart: {{ include "taskfleet.chart" . }}
{{ include "taskfleet.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: taskfleet
{{- end }}

{{/* Labels that select the operator's pods (never change them: Deployment selectors are immutable). */}}
{{- define "taskfleet.selectorLabels" -}}
app.kubernetes.io/name: {{ include "taskfleet.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The operator's ServiceAccount: the created one, or serviceAccount.name (required when create is false). */}}
{{- define "taskfleet.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "taskfleet.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name must name an existing ServiceAccount when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The Taskfleet image: repository@digest, else repository:tag (tag defaults to appVersion). */}}
{{- define "taskfleet.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* The Secret holding the dev brokers' URLs. */}}
{{- define "taskfleet.devBrokersSecret" -}}
{{- printf "%s-dev-brokers" (include "taskfleet.fullname" .) }}
{{- end }}

{{/*
The dev RabbitMQ password: the value given, else the one already in the release's Secret (so upgrades keep it), else
a new random one.
*/}}
{{- define "taskfleet.devRabbitmqPassword" -}}
{{- if .Values.devBrokers.rabbitmq.password }}
{{- .Values.devBrokers.rabbitmq.password }}
{{- else }}
{{- $existing := lookup "v1" "Secret" .Release.Namespace (include "taskfleet.devBrokersSecret" .) }}
{{- if and $existing (index ($existing.data | default dict) "rabbitmq-password") }}
{{- index $existing.data "rabbitmq-password" | b64dec }}
{{- else }}
{{- randAlphaNum 24 }}
{{- end }}
{{- end }}
{{- end }}

{{/* Labels of one dev broker's pods: name "taskfleet-<broker>" so they never match the operator's selector. */}}
{{- define "taskfleet.devBrokerSelectorLabels" -}}
app.kubernetes.io/name: {{ printf "%s-%s" (include "taskfleet.name" .root) .broker }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- end }}

{{/* The restricted container security context every container in this chart runs with. */}}
{{- define "taskfleet.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: [ALL]
{{- end }}
