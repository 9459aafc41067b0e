{{- define "paygate.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "paygate.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
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

{{/* The image: repository:tag, or repository@digest (with the tag kept for readers) when a digest is set. */}}
{{- define "paygate.image" -}}
{{- $tag := .Values.image.tag | default .Chart.AppVersion -}}
{{- if .Values.image.digest -}}
{{- printf "%s:%s@%s" .Values.image.repository $tag .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository $tag -}}
{{- end -}}
{{- end -}}

{{/* Where the Secret's files are mounted; config paths under it must name a key of the Secret. */}}
{{- define "paygate.secretsDir" -}}/etc/paygate/secrets/{{- end -}}

{{/* Does the pod mount the secrets volume? */}}
{{- define "paygate.hasSecrets" -}}
{{- if or .Values.secrets.existingSecret .Values.secrets.files -}}true{{- end -}}
{{- end -}}

{{/*
paygate.toml from a map. Helm reads every number in values as a float, and toToml would render
`burst = 10.0`, which an integer setting refuses: this renders whole numbers as integers (a float
setting such as `rps` takes an integer too). Nested maps become dotted keys, so the file needs no
table headers and stays one flat list of settings. Null values are left out.
*/}}
{{- define "paygate.toml" -}}
{{- $prefix := .prefix -}}
{{- range $k, $v := .map -}}
{{- $name := toString $k -}}
{{- $key := printf "%s%s" $prefix (ternary $name (toJson $name) (regexMatch "^[A-Za-z0-9_-]+$" $name)) -}}
{{- if and (kindIs "map" $v) $v -}}
{{- include "paygate.toml" (dict "map" $v "prefix" (printf "%s." $key)) -}}
{{- else if not (kindIs "invalid" $v) -}}
{{- printf "%s = %s\n" $key (include "paygate.tomlValue" $v) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "paygate.tomlValue" -}}
{{- if kindIs "string" . -}}
{{- toJson . -}}
{{- else if kindIs "bool" . -}}
{{- ternary "true" "false" . -}}
{{- else if or (kindIs "float64" .) (kindIs "float32" .) -}}
{{- if eq (float64 .) (floor .) -}}{{- int64 . -}}{{- else -}}{{- . -}}{{- end -}}
{{- else if or (kindIs "int" .) (kindIs "int64" .) (kindIs "int32" .) (kindIs "uint64" .) -}}
{{- . -}}
{{- else if kindIs "slice" . -}}
[{{- range $i, $e := . -}}{{- if $i -}}, {{ end -}}{{- include "paygate.tomlValue" $e -}}{{- end -}}]
{{- else if kindIs "map" . -}}
{ {{- range $i, $k := keys . | sortAlpha -}}{{- if $i -}}, {{- end -}}{{- printf " %s = %s" (toJson $k) (include "paygate.tomlValue" (get $ $k)) -}}{{- end -}} }
{{- else -}}
{{- fail (printf "paygate: config: cannot render %v (%s) as TOML" . (kindOf .)) -}}
{{- end -}}
{{- end -}}

{{/*
Render-time checks: what would make every pod crash-loop, or silently share one SQLite file,
fails here with the value to set.
*/}}
{{- define "paygate.validate" -}}
{{- $replicas := int .Values.replicaCount -}}
{{- if and (or (gt $replicas 1) .Values.autoscaling.enabled) (ne .Values.store.type "postgres") -}}
{{- fail "paygate: more than one replica (replicaCount > 1 or autoscaling.enabled) needs store.type=postgres; SQLite cannot be shared between pods" -}}
{{- end -}}
{{- if and (eq .Values.store.type "postgres") (not .Values.store.existingSecret) (not .Values.store.url) -}}
{{- fail "paygate: store.type=postgres needs store.existingSecret or store.url" -}}
{{- end -}}
{{- if not .Values.config.accounts -}}
{{- fail "paygate: config.accounts is empty: configure at least one provider account (values.yaml shows an Antom and a PayXpert example)" -}}
{{- end -}}
{{- $dir := include "paygate.secretsDir" . -}}
{{- $files := .Values.secrets.files | default dict -}}
{{- $needed := list -}}
{{- range $name, $acct := .Values.config.accounts -}}
{{- range $k, $v := $acct -}}
{{- if and (hasSuffix "_file" $k) (kindIs "string" $v) (hasPrefix $dir $v) -}}
{{- $needed = append $needed (list (printf "config.accounts.%s.%s" $name $k) (trimPrefix $dir $v)) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- range $k, $v := (.Values.config.tls | default dict) -}}
{{- if and (kindIs "string" $v) (hasPrefix $dir $v) -}}
{{- $needed = append $needed (list (printf "config.tls.%s" $k) (trimPrefix $dir $v)) -}}
{{- end -}}
{{- end -}}
{{- if .Values.auth.tokensFile -}}
{{- $needed = append $needed (list "auth.tokensFile" .Values.auth.tokensFile) -}}
{{- end -}}
{{- if not .Values.secrets.existingSecret -}}
{{- range $needed -}}
{{- if not (hasKey $files (index . 1)) -}}
{{- fail (printf "paygate: %s reads the secret file %q, which the chart's Secret lacks: set secrets.files.%s (the file's contents), or name an existing Secret holding it in secrets.existingSecret" (index . 0) (index . 1) (index . 1)) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- $drain := int64 .Values.shutdownDrainDelayMs -}}
{{- $grace := int64 .Values.shutdownGraceMs -}}
{{- if le (mul (int64 .Values.terminationGracePeriodSeconds) 1000) (add $drain $grace) -}}
{{- fail (printf "paygate: terminationGracePeriodSeconds (%d s) must exceed shutdownDrainDelayMs + shutdownGraceMs (%d ms), or the kubelet kills pods with calls still in flight" (int64 .Values.terminationGracePeriodSeconds) (add $drain $grace)) -}}
{{- end -}}
{{- end -}}
