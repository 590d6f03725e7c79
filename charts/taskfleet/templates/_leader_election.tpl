{{/*
"true" when operator replicas elect one acting replica through a Lease: always with more than one replica, else when
operator.leaderElection.enabled. Empty otherwise (templates test it with `if`).
*/}}
{{- define "taskfleet.leaderElection" -}}
{{- if or .Values.operator.leaderElection.enabled (gt (int .Values.operator.replicas) 1) -}}
true
{{- end -}}
{{- end }}
