{{/* The names, labels and image every FaceGrid component shares. */}}
{{- define "facegrid.name" -}}
{{- printf "%s" .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}

{{- define "facegrid.labels" -}}
app.kubernetes.io/name: facegrid
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* The labels of one component's objects: the shared ones and the component. */}}
{{- define "facegrid.componentLabels" -}}
{{ include "facegrid.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "facegrid.selector" -}}
app.kubernetes.io/name: facegrid
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* Every pod of this release (NetworkPolicies admit each other's traffic by it). */}}
{{- define "facegrid.releaseSelector" -}}
app.kubernetes.io/name: facegrid
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "facegrid.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{/* FACEGRID_* variables from a dict of name: value, sorted by name. */}}
{{- define "facegrid.env" -}}
{{- $lines := list -}}
{{- range $name, $value := . -}}
{{- $lines = append $lines (printf "- name: %s\n  value: %s" $name ($value | toString | quote)) -}}
{{- end -}}
{{ join "\n" $lines }}
{{- end -}}

{{/* The probes of a gRPC service: the standard gRPC health service. */}}
{{- define "facegrid.grpcProbes" -}}
readinessProbe:
  grpc:
    port: {{ . }}
  periodSeconds: 5
livenessProbe:
  grpc:
    port: {{ . }}
  periodSeconds: 10
  failureThreshold: 6
{{- end -}}

{{/* The pod spec lines every FaceGrid pod shares: non-root user, pull secrets. */}}
{{- define "facegrid.podSecurity" -}}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* A container's securityContext: read-only root filesystem, no privileges. */}}
{{- define "facegrid.securityContext" -}}
securityContext:
  {{- toYaml .Values.securityContext | nindent 2 }}
{{- end -}}

{{/* The writable /tmp of a read-only container (uploads spool there), and its volume. */}}
{{- define "facegrid.tmpMount" -}}
- name: tmp
  mountPath: /tmp
{{- end -}}

{{- define "facegrid.tmpVolume" -}}
- name: tmp
  emptyDir: {}
{{- end -}}

{{/* Whether the chart runs MongoDB / Redis itself ("true") or uses an external one (""). */}}
{{- define "facegrid.mongo.builtin" -}}
{{- if not (or .Values.mongo.external.uri .Values.mongo.external.existingSecret) }}true{{ end -}}
{{- end -}}

{{- define "facegrid.redis.builtin" -}}
{{- if not (or .Values.redis.external.url .Values.redis.external.existingSecret) }}true{{ end -}}
{{- end -}}

{{/* MongoDB's URI, database and Redis's URL for a service's settings prefix (e.g.
FACEGRID_GATEWAY): the built-in servers', the external ones, or from a Secret. Usage:
include "facegrid.databaseEnv" (dict "root" . "prefix" "FACEGRID_GATEWAY" "redis" true) */}}
{{- define "facegrid.databaseEnv" -}}
{{- $name := include "facegrid.name" .root -}}
{{- $mongo := .root.Values.mongo -}}
{{- $redis := .root.Values.redis -}}
- name: {{ .prefix }}_MONGO_URI
{{- if $mongo.external.existingSecret }}
  valueFrom:
    secretKeyRef:
      name: {{ $mongo.external.existingSecret }}
      key: {{ $mongo.external.secretKey }}
{{- else }}
  value: {{ $mongo.external.uri | default (printf "mongodb://%s-mongo:27017" $name) | quote }}
{{- end }}
- name: {{ .prefix }}_MONGO_DB
  value: {{ $mongo.database | quote }}
{{- if .redis }}
- name: {{ .prefix }}_REDIS_URL
{{- if $redis.external.existingSecret }}
  valueFrom:
    secretKeyRef:
      name: {{ $redis.external.existingSecret }}
      key: {{ $redis.external.secretKey }}
{{- else }}
  value: {{ $redis.external.url | default (printf "redis://%s-redis:6379/0" $name) | quote }}
{{- end }}
{{- end }}
{{- end -}}

{{/* The ControlPlane address: the operator's Service, or the local control plane's. */}}
{{- define "facegrid.controlplane" -}}
{{- if .Values.operator.enabled -}}
{{ include "facegrid.name" . }}-operator:{{ .Values.operator.port }}
{{- else -}}
{{ include "facegrid.name" . }}-controlplane:{{ .Values.controlplane.port }}
{{- end -}}
{{- end -}}

{{/* The Secret holding the video workers' API token. */}}
{{- define "facegrid.videoTokenSecret" -}}
{{ .Values.video.apiTokenSecret | default (printf "%s-video-token" (include "facegrid.name" .)) }}
{{- end -}}

{{/* A PodDisruptionBudget for one component: (dict "root" . "component" "gateway"). */}}
{{- define "facegrid.pdb" -}}
{{- $values := index .root.Values .component -}}
{{- if $values.podDisruptionBudget.enabled }}
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ include "facegrid.name" .root }}-{{ .component }}
  labels:
    {{- include "facegrid.componentLabels" . | nindent 4 }}
spec:
  maxUnavailable: {{ $values.podDisruptionBudget.maxUnavailable }}
  selector:
    matchLabels:
      {{- include "facegrid.selector" . | nindent 6 }}
{{- end }}
{{- end -}}
