{{/* Chart name, truncated to the 63 characters Kubernetes allows. */}}
{{- define "histoprompt.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Release-scoped name; components append "-triton", "-ingest" (hence 50). */}}
{{- define "histoprompt.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "histoprompt.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "histoprompt.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: histoprompt
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Selector labels of one component: (dict "ctx" $ "component" "triton") */}}
{{- define "histoprompt.selectorLabels" -}}
app.kubernetes.io/name: {{ include "histoprompt.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "histoprompt.componentLabels" -}}
{{ include "histoprompt.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* repository:tag or repository:tag@digest: (dict "image" .Values.triton.image "default" "x") */}}
{{- define "histoprompt.image" -}}
{{- $tag := .image.tag | default .default -}}
{{- if .image.digest -}}
{{- printf "%s:%s@%s" .image.repository $tag .image.digest -}}
{{- else -}}
{{- printf "%s:%s" .image.repository $tag -}}
{{- end -}}
{{- end -}}

{{- define "histoprompt.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "histoprompt.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "histoprompt.tritonName" -}}{{ include "histoprompt.fullname" . }}-triton{{- end -}}
{{- define "histoprompt.ingestName" -}}{{ include "histoprompt.fullname" . }}-ingest{{- end -}}

{{/* S3 endpoint URL for the MinIO client (mc): https://host:port, or AWS for the region. */}}
{{- define "histoprompt.s3Url" -}}
{{- $scheme := ternary "https" "http" .Values.s3.secure -}}
{{- if .Values.s3.endpoint -}}
{{- printf "%s://%s" $scheme .Values.s3.endpoint -}}
{{- else -}}
{{- printf "https://s3.%s.amazonaws.com" .Values.s3.region -}}
{{- end -}}
{{- end -}}

{{/* AWS_* env for Triton and the model-build Job, read from the credentials Secret. */}}
{{- define "histoprompt.awsEnv" -}}
- name: AWS_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ .Values.s3.credentialsSecret.name }}
      key: {{ .Values.s3.credentialsSecret.accessKeyKey }}
- name: AWS_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ .Values.s3.credentialsSecret.name }}
      key: {{ .Values.s3.credentialsSecret.secretKeyKey }}
- name: AWS_DEFAULT_REGION
  value: {{ .Values.s3.region | quote }}
{{- end -}}

{{/* Pod placement on the GPU node pool, shared by Triton and the model-build Job. */}}
{{- define "histoprompt.gpuPlacement" -}}
{{- with .Values.triton.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.triton.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.triton.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{- define "histoprompt.imagePullSecrets" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}
