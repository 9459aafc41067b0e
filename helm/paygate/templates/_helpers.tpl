{{- define "paygate.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "paygate.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "paygate.labels" -}}
app.kubernetes.io/name: {{ include "paygate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "paygate.selectorLabels" -}}
app.kubernetes.io/name: {{ include "paygate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "paygate.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "paygate.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "paygate.secretName" -}}
{{- default (printf "%s-secrets" (include "paygate.fullname" .)) .Values.secrets.existingSecret -}}
{{- end -}}

{{/* Several replicas share keys only through PostgreSQL. */}}
{{- define "paygate.validate" -}}
{{- $replicas := int .Values.replicaCount -}}
{{- if and (or (gt $replicas 1) .Values.autoscaling.enabled) (ne .Values.store.type "postgres") -}}
{{- fail "paygate: more than one replica (replicaCount > 1 or autoscaling.enabled) needs store.type=postgres; SQLite cannot be shared between pods" -}}
{{- end -}}
{{- if and (eq .Values.store.type "postgres") (not .Values.store.existingSecret) (not .Values.store.url) -}}
{{- fail "paygate: store.type=postgres needs store.existingSecret or store.url" -}}
{{- end -}}
{{- end -}}
