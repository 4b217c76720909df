{{/* A video worker pod template. (dict "root" . "pool" $pool) for a static pool (operator
off); (dict "root" .) for the operator's template, to which the operator adds the pool label
and FACEGRID_VIDEO_DETECTOR_NAME / FACEGRID_VIDEO_DETECTORS_MAX. */}}
{{- define "facegrid.videoPodTemplate" -}}
{{- $root := .root -}}
{{- $pool := .pool -}}
{{- $name := include "facegrid.name" $root -}}
{{- $env := dict
  "FACEGRID_VIDEO_API_URL" (printf "http://%s-gateway:%v" $name $root.Values.gateway.port)
  "FACEGRID_VIDEO_CONTROLPLANE" (include "facegrid.controlplane" $root)
  "FACEGRID_VIDEO_EXTRACTOR" (printf "%s-extractor-pods:%v" $name $root.Values.extractor.port)
  "FACEGRID_VIDEO_LICENSE_NTLS_SERVER" (printf "%s-licensing:%v" $name $root.Values.licensing.port)
  "FACEGRID_VIDEO_METRICS_LISTEN" "0.0.0.0:9100"
-}}
{{- if $pool -}}
{{- $_ := set $env "FACEGRID_VIDEO_DETECTOR_NAME" $pool.name -}}
{{- $_ := set $env "FACEGRID_VIDEO_DETECTORS_MAX" ($pool.detectorsMax | default 5) -}}
{{- end -}}
metadata:
  labels:
    {{- include "facegrid.selector" (dict "root" $root "component" "video") | nindent 4 }}
    {{- with $pool }}
    facegrid.io/pool: {{ .name }}
    {{- end }}
spec:
  automountServiceAccountToken: false
  {{- include "facegrid.podSecurity" $root | nindent 2 }}
  containers:
    - name: video
      image: {{ include "facegrid.image" $root }}
      imagePullPolicy: {{ $root.Values.image.pullPolicy }}
      command: [facegrid-video]
      ports:
        - name: metrics
          containerPort: 9100
      env:
        {{- if not $pool }}
        # The pod's name: the worker the operator assigns cameras to.
        - name: FACEGRID_VIDEO_WORKER_NAME
          valueFrom:
            fieldRef:
              fieldPath: metadata.name
        {{- end }}
        - name: FACEGRID_VIDEO_API_TOKEN
          valueFrom:
            secretKeyRef:
              name: {{ (and $pool $pool.apiTokenSecret) | default (include "facegrid.videoTokenSecret" $root) }}
              key: token
        {{- include "facegrid.env" (merge $env $root.Values.video.extraEnv) | nindent 8 }}
      resources:
        {{- toYaml $root.Values.video.resources | nindent 8 }}
      {{- include "facegrid.securityContext" $root | nindent 6 }}
      volumeMounts:
        {{- include "facegrid.tmpMount" $root | nindent 8 }}
  volumes:
    {{- include "facegrid.tmpVolume" $root | nindent 4 }}
{{- end -}}
