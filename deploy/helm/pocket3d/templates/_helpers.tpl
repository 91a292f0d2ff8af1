{{- define "pocket3d.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "pocket3d.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains (include "pocket3d.name" .) .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "pocket3d.name" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "pocket3d.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "pocket3d.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* selector labels of one component: include "pocket3d.selector" (list . "gateway") */}}
{{- define "pocket3d.selector" -}}
{{- $root := index . 0 -}}
app.kubernetes.io/name: {{ include "pocket3d.name" $root }}
app.kubernetes.io/instance: {{ $root.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{- define "pocket3d.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "pocket3d.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "pocket3d.databaseSecret" -}}
{{- default (printf "%s-database" (include "pocket3d.fullname" .)) .Values.database.existingSecret -}}
{{- end -}}

{{- define "pocket3d.storageSecret" -}}
{{- if .Values.storage.credentials.existingSecret -}}
{{- .Values.storage.credentials.existingSecret -}}
{{- else if .Values.storage.credentials.accessKeyId -}}
{{- printf "%s-storage" (include "pocket3d.fullname" .) -}}
{{- end -}}
{{- end -}}

{{- define "pocket3d.image" -}}
{{- $root := index . 0 -}}
{{- $image := ternary $root.Values.cudaImage $root.Values.image (eq (index . 1) "cuda") -}}
{{- printf "%s:%s" $image.repository (default $root.Chart.AppVersion $image.tag) -}}
{{- end -}}

{{- define "pocket3d.pullPolicy" -}}
{{- $root := index . 0 -}}
{{- $image := ternary $root.Values.cudaImage $root.Values.image (eq (index . 1) "cuda") -}}
{{- $image.pullPolicy -}}
{{- end -}}

{{/* The environment every pocket3d process gets: the database, the bucket and its credentials, auth. */}}
{{- define "pocket3d.env" -}}
- name: POCKET3D_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "pocket3d.databaseSecret" . }}
      key: database-url
- name: POCKET3D_AUTH__ENABLED
  value: "true"
- name: POCKET3D_STORAGE__BACKEND
  value: s3
- name: POCKET3D_STORAGE__S3__BUCKET
  value: {{ .Values.storage.bucket | quote }}
- name: POCKET3D_STORAGE__S3__PREFIX
  value: {{ .Values.storage.prefix | quote }}
- name: POCKET3D_STORAGE__S3__DOWNLOADS
  value: {{ .Values.storage.downloads | quote }}
{{- with .Values.storage.endpoint }}
- name: POCKET3D_STORAGE__S3__ENDPOINT
  value: {{ . | quote }}
{{- end }}
{{- with .Values.storage.publicEndpoint }}
- name: POCKET3D_STORAGE__S3__PUBLIC_ENDPOINT
  value: {{ . | quote }}
{{- end }}
{{- with .Values.storage.region }}
- name: POCKET3D_STORAGE__S3__REGION
  value: {{ . | quote }}
- name: AWS_REGION
  value: {{ . | quote }}
{{- end }}
{{- with include "pocket3d.storageSecret" . }}
- name: AWS_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: access-key-id
- name: AWS_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: secret-access-key
{{- end }}
{{- if .Values.config }}
- name: POCKET3D_CONFIG
  value: /etc/pocket3d/system.yaml
{{- end }}
{{- end -}}

{{/* Volumes every pocket3d pod mounts: the settings, the local scratch (tmp) and, read-only roots aside, /tmp. */}}
{{- define "pocket3d.configVolume" -}}
- name: config
  configMap:
    name: {{ include "pocket3d.fullname" . }}
{{- end -}}

{{/* What a worker pool added under `workers` gets for the keys it leaves out. */}}
{{- define "pocket3d.poolDefaults" -}}
enabled: false
image: cpu
devices: cpu
gpus: 0
replicas: 1
registry: ""
healthPort: 9100
scratchSize: 20Gi
resources: {}
terminationGracePeriodSeconds: 600
autoscaling:
  enabled: false
  minReplicas: 0
  maxReplicas: 4
  stagesPerReplica: 2
nodeSelector: {}
tolerations: []
affinity: {}
modelCacheClaim: ""
{{- end -}}

{{/* The worker pools, each with the defaults filled in: include "pocket3d.pools" . | fromYaml */}}
{{- define "pocket3d.pools" -}}
{{- $pools := dict -}}
{{- range $name, $raw := .Values.workers -}}
{{- $_ := set $pools $name (mergeOverwrite (include "pocket3d.poolDefaults" $ | fromYaml) (deepCopy $raw)) -}}
{{- end -}}
{{- toYaml $pools -}}
{{- end -}}

{{/* The models of the pools KEDA scales (from zero, maybe), as JSON for cluster.hosted_models: a gateway accepts
their jobs before any worker of the pool has run; "*" for a pool that hosts the whole registry. */}}
{{- define "pocket3d.hostedModels" -}}
{{- $ids := list -}}
{{- range $name, $pool := include "pocket3d.pools" . | fromYaml -}}
{{- if and $pool.enabled $pool.autoscaling.enabled $.Values.keda.enabled -}}
{{- if $pool.registry -}}
{{- range $feature, $models := (fromYaml $pool.registry).models -}}
{{- range $id, $_ := $models -}}
{{- $ids = append $ids $id -}}
{{- end -}}
{{- end -}}
{{- else -}}
{{- $ids = append $ids "*" -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- $ids | uniq | sortAlpha | toJson -}}
{{- end -}}
