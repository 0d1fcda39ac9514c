{{/* Names: "<release>-mt5fleet", or the release name when it already holds "mt5fleet". */}}
{{- define "mt5fleet.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "mt5fleet.fullname" -}}
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

{{/* The adjust Deployment the operator scales, and the Lease of its leader election:
     the operator's Role names both (resourceNames). */}}
{{- define "mt5fleet.adjustDeployment" -}}{{ include "mt5fleet.fullname" . }}-adjust{{- end -}}
{{- define "mt5fleet.lease" -}}{{ include "mt5fleet.fullname" . }}-operator{{- end -}}
{{- define "mt5fleet.operatorAccount" -}}{{ include "mt5fleet.fullname" . }}-operator{{- end -}}
{{- define "mt5fleet.workerAccount" -}}{{ include "mt5fleet.fullname" . }}-worker{{- end -}}

{{- define "mt5fleet.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "mt5fleet.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: mt5fleet
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Selector of one component; call with (dict "root" $ "component" "operator"). */}}
{{- define "mt5fleet.selectorLabels" -}}
app.kubernetes.io/name: {{ include "mt5fleet.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "mt5fleet.componentLabels" -}}
{{ include "mt5fleet.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "mt5fleet.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ $tag }}
{{- end -}}
{{- end -}}

{{/* Probes on the endpoints every mt5fleet process serves on its HTTP port. */}}
{{- define "mt5fleet.probes" -}}
{{- $p := .root.Values.probes -}}
livenessProbe:
  httpGet: {path: /healthz, port: http}
  initialDelaySeconds: {{ $p.liveness.initialDelaySeconds }}
  periodSeconds: {{ $p.liveness.periodSeconds }}
  timeoutSeconds: {{ $p.liveness.timeoutSeconds }}
  failureThreshold: {{ $p.liveness.failureThreshold }}
readinessProbe:
  httpGet: {path: /readyz, port: http}
  initialDelaySeconds: {{ $p.readiness.initialDelaySeconds }}
  periodSeconds: {{ $p.readiness.periodSeconds }}
  timeoutSeconds: {{ $p.readiness.timeoutSeconds }}
  failureThreshold: {{ $p.readiness.failureThreshold }}
{{- end -}}

{{/* What every pod of the chart shares: security, placement, /tmp. */}}
{{- define "mt5fleet.podCommon" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* TLS CA volume (NATS server certificate), when one is configured. */}}
{{- define "mt5fleet.caVolume" -}}
{{- with .Values.nats.tls.caSecret.name }}
- name: nats-ca
  secret:
    secretName: {{ . }}
    defaultMode: 0440
    items:
      - {key: {{ $.Values.nats.tls.caSecret.key }}, path: ca.crt}
{{- end }}
{{- end -}}

{{- define "mt5fleet.natsArgs" -}}
{{- range .Values.nats.urls }}
- --server
- {{ . | quote }}
{{- end }}
{{- if .Values.nats.tls.caSecret.name }}
- --tls-ca
- /etc/mt5fleet/nats-ca/ca.crt
{{- end }}
{{- end -}}

{{- define "mt5fleet.jetstreamArgs" -}}
- --replicas
- {{ .Values.nats.jetstream.replicas | quote }}
{{- if .Values.nats.jetstream.config }}
- --jetstream-config
- /etc/mt5fleet/config/jetstream.toml
{{- end }}
{{- end -}}

{{/* The components this release runs, with their HTTP port: a JSON list for fromJsonArray. */}}
{{- define "mt5fleet.components" -}}
{{- $out := list (dict "name" "operator" "port" .Values.operator.httpPort) (dict "name" "adjust" "port" .Values.adjust.httpPort) -}}
{{- range $kind := list "marketdata" "feedback" "catchup" "health" "calendar" -}}
{{- $w := index $.Values $kind -}}
{{- if $w.enabled -}}
{{- $out = append $out (dict "name" $kind "port" $w.httpPort) -}}
{{- end -}}
{{- end -}}
{{- toJson $out -}}
{{- end -}}

{{/* The calendar worker's --calendar-source: the mounted ConfigMap's file (air-gapped), else the URL. */}}
{{- define "mt5fleet.calendarSource" -}}
{{- $s := .Values.calendar.source -}}
{{- if $s.configMap.name -}}
/etc/mt5fleet/calendar/{{ $s.configMap.key }}
{{- else -}}
{{ required "calendar.source.url or calendar.source.configMap.name is required with calendar.enabled" $s.url }}
{{- end -}}
{{- end -}}
