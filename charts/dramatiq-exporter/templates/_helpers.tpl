{{- define "dramatiq-exporter.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "dramatiq-exporter.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "dramatiq-exporter.selectorLabels" -}}
app.kubernetes.io/name: {{ include "dramatiq-exporter.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "dramatiq-exporter.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "dramatiq-exporter.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/*
The config file: the user's `config` with the keys the chart owns refused,
because the chart sets them itself (the listen address must be the port the
probes and the Service use).
*/}}
{{- define "dramatiq-exporter.config" -}}
{{- $web := default dict .Values.config.web }}
{{- if hasKey $web "listen_addresses" }}
{{- fail "config.web.listen_addresses: set containerPort instead; the chart listens on it" }}
{{- end }}
{{- if and (hasKey $web "config_file") .Values.webConfig.existingSecret }}
{{- fail "config.web.config_file: webConfig.existingSecret sets it" }}
{{- end }}
{{- toYaml .Values.config }}
{{- end }}

{{/* The job selector of the shipped rules, as the chart's copy has it. */}}
{{- define "dramatiq-exporter.shippedJobSelector" -}}
job="dramatiq"
{{- end }}

{{- define "dramatiq-exporter.secretName" -}}
{{- if and .Values.credentials.create .Values.credentials.existingSecret }}
{{- fail "credentials: set either existingSecret or create, not both" }}
{{- end }}
{{- if .Values.credentials.create }}
{{- include "dramatiq-exporter.fullname" . }}
{{- else }}
{{- .Values.credentials.existingSecret }}
{{- end }}
{{- end }}

{{/*
GOMEMLIMIT: goMemLimit as given, or for "auto" 90% of
resources.limits.memory (a Kubernetes quantity such as 128Mi, 0.5Gi,
134217728 or 128M), in MiB; empty when there is nothing to set. The 10%
left is for what the Go runtime does not count: stacks outside the heap,
the binary, the kernel's page cache charged to the pod.
*/}}
{{- define "dramatiq-exporter.goMemLimit" -}}
{{- $v := toString .Values.goMemLimit -}}
{{- if ne $v "auto" -}}
{{- $v -}}
{{- else -}}
{{- $lim := toString (dig "limits" "memory" "" (.Values.resources | default dict)) -}}
{{- if $lim -}}
{{- $re := "^([0-9]+(?:\\.[0-9]+)?)(Ki|Mi|Gi|Ti|k|M|G|T)?$" -}}
{{- if not (regexMatch $re $lim) -}}
{{- fail (printf "goMemLimit auto: cannot read resources.limits.memory %q; set goMemLimit" $lim) -}}
{{- end -}}
{{- $units := dict "" 1.0 "k" 1e3 "M" 1e6 "G" 1e9 "T" 1e12 "Ki" 1024.0 "Mi" 1048576.0 "Gi" 1073741824.0 "Ti" 1099511627776.0 -}}
{{- $num := float64 (regexReplaceAll $re $lim "${1}") -}}
{{- $unit := index $units (regexReplaceAll $re $lim "${2}") -}}
{{- $mib := floor (divf (mulf $num $unit 0.9) 1048576.0) | int64 -}}
{{- if gt $mib 0 -}}{{ $mib }}MiB{{- end -}}
{{- end -}}
{{- end -}}
{{- end }}

{{/*
"true" when the exporter runs as shards > 1 StatefulSet pods, each probing
its own hashmod share of probes.targets; "" otherwise. Several replicas
behind one Service would each keep their own per-target counters, and
Prometheus would read them in turn, so replicaCount cannot be raised with
probe targets (docs/sharding.md).
*/}}
{{- define "dramatiq-exporter.sharded" -}}
{{- $shards := int (default 1 .Values.shards) -}}
{{- if and (gt $shards 1) (ne (int .Values.replicaCount) 1) -}}
{{- fail "shards: the StatefulSet runs one pod per shard; leave replicaCount at 1" -}}
{{- end -}}
{{- if and .Values.probes.enabled (gt (int .Values.replicaCount) 1) -}}
{{- fail "replicaCount: replicas behind one Service would each count the probed targets' dead letters, and Prometheus would read them in turn; set shards instead" -}}
{{- end -}}
{{- if gt $shards 1 }}true{{ end -}}
{{- end }}

{{- define "dramatiq-exporter.headlessName" -}}
{{- printf "%s-headless" (include "dramatiq-exporter.fullname" . | trunc 54 | trimSuffix "-") }}
{{- end }}
