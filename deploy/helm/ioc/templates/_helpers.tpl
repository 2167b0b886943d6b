{{- define "ioc.fullname" -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "ioc.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "ioc.selector" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "ioc.claim" -}}
{{- .Values.storage.existingClaim | default (printf "%s-data" (include "ioc.fullname" .)) -}}
{{- end -}}

{{/* The bucket URL of the store, or "" for the ReadWriteMany claim; fails on a URL
     that is not s3://. */}}
{{- define "ioc.bucket" -}}
{{- $url := .Values.storage.s3.url | default "" -}}
{{- if and $url (not (hasPrefix "s3://" $url)) -}}
{{- fail (printf "storage.s3.url must be s3://BUCKET/PREFIX, not %q" $url) -}}
{{- end -}}
{{- $url -}}
{{- end -}}

{{/* The pod spec shared by both Deployments; .component is ingest or api. */}}
{{- define "ioc.pod" -}}
{{- $root := .root -}}
{{- $v := index $root.Values .component -}}
{{- $bucket := include "ioc.bucket" $root -}}
{{- $s3 := $root.Values.storage.s3 -}}
metadata:
  labels:
    {{- include "ioc.selector" . | nindent 4 }}
  annotations:
    checksum/config: {{ $root.Values.config | sha256sum }}
spec:
  terminationGracePeriodSeconds: {{ $root.Values.terminationGracePeriodSeconds }}
  securityContext:
    {{- toYaml $root.Values.podSecurityContext | nindent 4 }}
  containers:
    - name: ioc
      image: "{{ $root.Values.image.repository }}:{{ $root.Values.image.tag | default $root.Chart.AppVersion }}"
      imagePullPolicy: {{ $root.Values.image.pullPolicy }}
      args: ["serve", "--config", "/etc/ioc/ioc.toml"]
      env:
        {{- if $bucket }}
        # The store in a bucket; what is appended to stays in this pod's state volume.
        - name: IOC_DATA_DIR
          value: {{ $bucket | quote }}
        - name: IOC_STATE_DIR
          value: /var/lib/ioc-state
        {{- with $s3.endpoint }}
        - name: AWS_ENDPOINT_URL
          value: {{ . | quote }}
        {{- end }}
        {{- with $s3.region }}
        - name: AWS_REGION
          value: {{ . | quote }}
        {{- end }}
        {{- if $s3.allowHttp }}
        - name: AWS_ALLOW_HTTP
          value: "true"
        {{- end }}
        {{- with $s3.existingSecret }}
        - name: AWS_ACCESS_KEY_ID
          valueFrom:
            secretKeyRef:
              name: {{ . }}
              key: {{ $s3.accessKeyIdKey }}
        - name: AWS_SECRET_ACCESS_KEY
          valueFrom:
            secretKeyRef:
              name: {{ . }}
              key: {{ $s3.secretAccessKeyKey }}
        {{- end }}
        {{- else }}
        - name: IOC_DATA_DIR
          value: /var/lib/ioc
        {{- end }}
        - name: IOC_HTTP
          value: "0.0.0.0:8080"
        - name: IOC_PG
          value: "0.0.0.0:5433"
        - name: IOC_AUTH_TOKENS
          valueFrom:
            secretKeyRef:
              name: {{ $root.Values.auth.existingSecret }}
              key: {{ $root.Values.auth.key }}
        {{- if eq .component "ingest" }}
        - name: IOC_KAFKA_BROKERS
          value: {{ $root.Values.kafka.brokers | quote }}
        - name: IOC_KAFKA_TOPICS
          value: {{ join "," $root.Values.kafka.topics | quote }}
        - name: IOC_KAFKA_GROUP
          value: {{ $root.Values.kafka.group | quote }}
        - name: IOC_KAFKA_ASSIGNMENT
          value: group
        {{- end }}
      ports:
        - {name: http, containerPort: 8080}
        - {name: pg, containerPort: 5433}
      # /healthz: the process answers. /readyz: storage writable, ingest running and,
      # for ingest pods, Kafka connected.
      livenessProbe:
        httpGet: {path: /healthz, port: http}
        periodSeconds: 10
        failureThreshold: 6
      readinessProbe:
        httpGet: {path: /readyz, port: http}
        periodSeconds: 5
        failureThreshold: 3
      # Start-up loads the KPI state snapshot (about 3 s on a year of 50M events) or,
      # without a usable one, rebuilds it from the store (about 4 min on that year):
      # allow ten minutes before liveness counts.
      startupProbe:
        httpGet: {path: /healthz, port: http}
        periodSeconds: 5
        failureThreshold: 120
      resources:
        {{- toYaml $v.resources | nindent 8 }}
      securityContext:
        {{- toYaml $root.Values.securityContext | nindent 8 }}
      volumeMounts:
        {{- if $bucket }}
        - {name: state, mountPath: /var/lib/ioc-state}
        {{- else }}
        - {name: data, mountPath: /var/lib/ioc}
        {{- end }}
        - {name: config, mountPath: /etc/ioc, readOnly: true}
        - {name: tmp, mountPath: /tmp}
  volumes:
    {{- if $bucket }}
    - name: state
      {{- toYaml $root.Values.storage.stateVolume | nindent 6 }}
    {{- else }}
    - name: data
      persistentVolumeClaim:
        claimName: {{ include "ioc.claim" $root }}
    {{- end }}
    - name: config
      configMap:
        name: {{ include "ioc.fullname" $root }}
    - name: tmp
      emptyDir: {}
  {{- with $root.Values.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $root.Values.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $root.Values.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end -}}
