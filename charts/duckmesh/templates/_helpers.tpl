{{/* Names, labels and the pieces every DuckMesh pod shares. */}}

{{- define "duckmesh.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "duckmesh.fullname" -}}
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

{{/* Labels of every object. */}}
{{- define "duckmesh.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "duckmesh.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: duckmesh
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Selector labels of one component: (dict "root" $ "component" "api"). */}}
{{- define "duckmesh.selectorLabels" -}}
app.kubernetes.io/name: {{ include "duckmesh.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* Labels of one component's objects. */}}
{{- define "duckmesh.componentLabels" -}}
{{ include "duckmesh.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "duckmesh.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{- define "duckmesh.operatorServiceAccount" -}}
{{- default (printf "%s-operator" (include "duckmesh.fullname" .)) .Values.operator.serviceAccount.name -}}
{{- end -}}

{{- define "duckmesh.workerServiceAccount" -}}
{{- default (printf "%s-worker" (include "duckmesh.fullname" .)) .Values.operator.worker.serviceAccount.name -}}
{{- end -}}

{{/* The namespaces worker pods run in that the chart provisions (Secrets, worker account). */}}
{{- define "duckmesh.taskNamespaces" -}}
{{- $namespaces := list .Release.Namespace -}}
{{- with .Values.operator.watchNamespace -}}
{{- $namespaces = append $namespaces . -}}
{{- end -}}
{{- $namespaces | uniq | join "," -}}
{{- end -}}

{{/* The catalog URL's Secret: the one made from catalog.url, else catalog.existingSecret. */}}
{{- define "duckmesh.catalogSecret" -}}
{{- if .Values.catalog.url -}}
{{- printf "%s-catalog" (include "duckmesh.fullname" .) -}}
{{- else -}}
{{- required "set catalog.existingSecret (a Secret with the catalog URL) or catalog.url (quick start)" .Values.catalog.existingSecret -}}
{{- end -}}
{{- end -}}

{{- define "duckmesh.catalogSecretKey" -}}
{{- if .Values.catalog.url -}}url{{- else -}}{{ .Values.catalog.existingSecretKey }}{{- end -}}
{{- end -}}

{{/* The Secret of the object store credentials (made from values, else existing), or nothing (AWS default chain). */}}
{{- define "duckmesh.storeSecret" -}}
{{- if .Values.objectStore.accessKeyId -}}
{{- printf "%s-store" (include "duckmesh.fullname" .) -}}
{{- else -}}
{{- .Values.objectStore.existingSecret -}}
{{- end -}}
{{- end -}}

{{/* The API keys' Secret: the one made from api.auth.keys, else api.auth.existingSecret. */}}
{{- define "duckmesh.apiKeysSecret" -}}
{{- if .Values.api.auth.keys -}}
{{- printf "%s-api-keys" (include "duckmesh.fullname" .) -}}
{{- else -}}
{{- required "api.auth.mode is keys: set api.auth.existingSecret or api.auth.keys (or api.auth.mode: none for local use)" .Values.api.auth.existingSecret -}}
{{- end -}}
{{- end -}}

{{- define "duckmesh.apiKeysSecretKey" -}}
{{- if .Values.api.auth.keys -}}keys.yaml{{- else -}}{{ .Values.api.auth.existingSecretKey }}{{- end -}}
{{- end -}}

{{/* A listen address on the configured host. */}}
{{- define "duckmesh.listen" -}}
{{- $host := .root.Values.listenHost -}}
{{- if and (contains ":" $host) (not (hasPrefix "[" $host)) -}}
{{- printf "[%s]:%v" $host .port -}}
{{- else -}}
{{- printf "%s:%v" $host .port -}}
{{- end -}}
{{- end -}}

{{/* One env entry per key of a map (sorted, values as strings). */}}
{{- define "duckmesh.envMap" -}}
{{- range $name, $value := . }}
- name: {{ $name }}
  value: {{ toString $value | quote }}
{{- end }}
{{- end -}}

{{/*
The environment every DuckMesh container shares: the pod's identity, the catalog URL (from its
Secret), the object store, logs, traces and the shared DUCKMESH_* settings.
*/}}
{{- define "duckmesh.commonEnv" -}}
- name: POD_IP
  valueFrom:
    fieldRef:
      fieldPath: status.podIP
- name: POD_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
- name: DUCKMESH_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "duckmesh.catalogSecret" . }}
      key: {{ include "duckmesh.catalogSecretKey" . }}
- name: DUCKMESH_LOG
  value: {{ .Values.logLevel | quote }}
- name: DUCKMESH_LOG_FORMAT
  value: {{ .Values.logFormat | quote }}
- name: DUCKMESH_STORAGE_BACKEND
  value: s3
- name: DUCKMESH_S3_BUCKET
  value: {{ required "objectStore.bucket is required" .Values.objectStore.bucket | quote }}
- name: DUCKMESH_S3_REGION
  value: {{ .Values.objectStore.region | quote }}
{{- with .Values.objectStore.prefix }}
- name: DUCKMESH_S3_PREFIX
  value: {{ . | quote }}
{{- end }}
{{- with .Values.objectStore.endpoint }}
- name: DUCKMESH_S3_ENDPOINT
  value: {{ . | quote }}
{{- end }}
{{- if ne (toString .Values.objectStore.forcePathStyle) "" }}
- name: DUCKMESH_S3_FORCE_PATH_STYLE
  value: {{ toString .Values.objectStore.forcePathStyle | quote }}
{{- end }}
{{- with .Values.otel.endpoint }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ . | quote }}
{{- end }}
{{- include "duckmesh.envMap" .Values.otel.env }}
{{- include "duckmesh.envMap" .Values.config }}
{{- end -}}

{{/* envFrom of the object store credentials, if any. */}}
{{- define "duckmesh.storeEnvFrom" -}}
{{- with (include "duckmesh.storeSecret" .) }}
envFrom:
  - secretRef:
      name: {{ . }}
{{- end }}
{{- end -}}

{{/* The pod-level settings every DuckMesh pod shares. */}}
{{- define "duckmesh.podCommon" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
{{- range . }}
  - name: {{ . }}
{{- end }}
{{- end }}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- end -}}

{{/* The /tmp emptyDir of every pod (the root filesystem is read-only). */}}
{{- define "duckmesh.tmpVolume" -}}
- name: tmp
  emptyDir:
    {{- with .Values.tmpSizeLimit }}
    sizeLimit: {{ . }}
    {{- else }} {}
    {{- end }}
{{- end -}}

{{/* Checksum of the values that the pods' environment is made of, so an upgrade rolls them. */}}
{{- define "duckmesh.configChecksum" -}}
{{- pick .Values "catalog" "objectStore" "config" "otel" "logLevel" "logFormat" "listenHost" | toJson | sha256sum -}}
{{- end -}}
