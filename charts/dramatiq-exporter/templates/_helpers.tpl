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
