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

{{- define "facegrid.selector" -}}
app.kubernetes.io/name: facegrid
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "facegrid.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "facegrid.env" -}}
{{- range $name, $value := . }}
- name: {{ $name }}
  value: {{ $value | toString | quote }}
{{- end }}
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
