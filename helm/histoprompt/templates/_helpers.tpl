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

{{/* TCP ports of a comma-separated endpoint list ("h1:9093,h2:9094", "https://h:9000/x"):
     each entry's own port, else (dict ... "default" 9092), else https 443 / http 80 by the
     entry's scheme. Returns a JSON list of unique ints:
     (dict "endpoints" .Values.kafka.bootstrap "default" 9092) */}}
{{- define "histoprompt.endpointPorts" -}}
{{- $ports := list -}}
{{- range $entry := splitList "," .endpoints -}}
{{- $e := trim $entry -}}
{{- if $e -}}
{{- $scheme := "" -}}
{{- if regexMatch "^[a-zA-Z][a-zA-Z0-9+.-]*://" $e -}}
{{- $scheme = regexFind "^[a-zA-Z][a-zA-Z0-9+.-]*" $e | lower -}}
{{- $e = regexReplaceAll "^[a-zA-Z][a-zA-Z0-9+.-]*://" $e "" | trimPrefix "/" -}}
{{- end -}}
{{- $e = regexReplaceAll "/.*$" $e "" -}}
{{- if regexMatch "(^[^:]+|\\]):[0-9]+$" $e -}}
{{- $ports = append $ports (regexFind "[0-9]+$" $e | int) -}}
{{- else if eq $scheme "https" -}}
{{- $ports = append $ports 443 -}}
{{- else if eq $scheme "http" -}}
{{- $ports = append $ports 80 -}}
{{- else -}}
{{- $ports = append $ports ($.default | int) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- $ports | uniq | toJson -}}
{{- end -}}

{{/* S3 ports: s3.endpoint's (443/80 by s3.secure without one; AWS is 443). */}}
{{- define "histoprompt.s3Ports" -}}
{{- $default := ternary 443 80 .Values.s3.secure -}}
{{- $ports := list 443 -}}
{{- if .Values.s3.endpoint -}}
{{- $ports = include "histoprompt.endpointPorts" (dict "endpoints" .Values.s3.endpoint "default" $default) | fromJsonArray -}}
{{- end -}}
{{- concat $ports .Values.networkPolicy.s3.extraPorts | uniq | toJson -}}
{{- end -}}

{{/* NetworkPolicy ports entries of a JSON port list: (list 9092 9093) */}}
{{- define "histoprompt.tcpPorts" -}}
{{- $seen := list -}}
{{- range . }}
{{- $port := . | int }}
{{- if not (has $port $seen) }}
{{- $seen = append $seen $port }}
- { port: {{ $port }}, protocol: TCP }
{{- end }}
{{- end }}
{{- end -}}

{{/* Egress rule for DNS: kube-dns pods (plus dns.extraPeers, e.g. NodeLocal DNSCache's
     169.254.20.10/32), or port 53 to any destination with dns.anyPeer. */}}
{{- define "histoprompt.dnsEgress" -}}
{{- $dns := .Values.networkPolicy.dns -}}
- {{- if not $dns.anyPeer }}
  to:
    - namespaceSelector:
        {{- toYaml $dns.namespaceSelector | nindent 8 }}
      podSelector:
        {{- toYaml $dns.podSelector | nindent 8 }}
    {{- with $dns.extraPeers }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- end }}
  ports:
    - { port: 53, protocol: UDP }
    - { port: 53, protocol: TCP }
{{- end -}}

{{/* Whether ingest talks to this release's Triton (not an external one). */}}
{{- define "histoprompt.tritonInRelease" -}}
{{- if and .Values.triton.enabled (not .Values.ingest.tritonGrpcUrl) -}}true{{- end -}}
{{- end -}}

{{/* One GPU type's TensorRT plan: (dict "ctx" $ "gpu" $gpu) -> JSON {cc, file, hash}. The
     file is keyed by compute capability, TensorRT version and a hash of every build input,
     so a changed input is a new file (and a new Job) and the S3 cache never serves a stale
     plan. */}}
{{- define "histoprompt.plan" -}}
{{- $b := .ctx.Values.modelBuild -}}
{{- $image := include "histoprompt.image" (dict "image" $b.image "default" "") -}}
{{- $inputs := dict "onnx" $b.onnxObject "revision" $b.revision "input" $b.inputName "px" $b.inputPx "max" $b.maxBatch "opt" $b.optBatch "fp16" $b.fp16 "image" $image "tensorrt" $b.tensorrtVersion "cc" .gpu.computeCapability -}}
{{- $hash := $inputs | toJson | sha256sum | trunc 12 -}}
{{- $file := printf "model.sm%s.trt%s.%s.plan" (.gpu.computeCapability | replace "." "") $b.tensorrtVersion $hash -}}
{{- dict "cc" .gpu.computeCapability "file" $file "hash" $hash | toJson -}}
{{- end -}}

{{/* Every plan of modelBuild.gpuTypes: JSON list of histoprompt.plan. */}}
{{- define "histoprompt.plans" -}}
{{- $plans := list -}}
{{- if .Values.modelBuild.enabled -}}
{{- range .Values.modelBuild.gpuTypes -}}
{{- $plans = append $plans (include "histoprompt.plan" (dict "ctx" $ "gpu" .) | fromJson) -}}
{{- end -}}
{{- end -}}
{{- $plans | toJson -}}
{{- end -}}

{{/* Env of the plan Job's S3 steps: (dict "ctx" $ "plan" $plan) */}}
{{- define "histoprompt.modelBuildEnv" -}}
{{- $b := .ctx.Values.modelBuild -}}
{{ include "histoprompt.awsEnv" .ctx }}
- name: S3_URL
  value: {{ include "histoprompt.s3Url" .ctx | quote }}
- name: MC_CONFIG_DIR
  value: /tmp/mc
- name: MODEL_DIR
  value: {{ $b.modelDir | quote }}
- name: ONNX
  value: {{ $b.onnxObject | quote }}
- name: CACHE
  value: {{ printf "%s/%s" $b.cachePrefix .plan.hash | quote }}
- name: PLAN
  value: {{ .plan.file | quote }}
{{- end -}}
