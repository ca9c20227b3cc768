{{/*
The name of every object of the run: a DNS-1035 label of at most 40 characters, so that
KubeRay (RayJob names <= 47) and Indexed Job pod host names ("<name>-<index>") stay valid.
Lowercase; runs of other characters become "-"; "run-" is prefixed when it does not start
with a letter. A name that this changed (case, other characters) or that is longer than 40
keeps at most 33 characters plus "-" and 6 hex digits of the SHA-256 of the raw name, so
distinct run names never share objects or a volume ("Demo", "demo" and "DEMO_", or "名前"
and "名字", used to become the same name).
*/}}
{{- define "finetune-job.fullname" -}}
{{- $raw := .Values.runName | default .Release.Name -}}
{{- $name := regexReplaceAll "[^a-z0-9]+" (lower $raw) "-" | trimAll "-" -}}
{{- if not (regexMatch "^[a-z]" $name) -}}
{{- $name = printf "run-%s" $name | trimSuffix "-" -}}
{{- end -}}
{{- if or (gt (len $name) 40) (ne $name $raw) -}}
{{- $name = printf "%s-%s" (trunc 33 $name | trimSuffix "-") (sha256sum $raw | trunc 6) -}}
{{- end -}}
{{- $name -}}
{{- end }}

{{/* Labels that select the run's objects (services, `vlaunch cancel`). */}}
{{- define "finetune-job.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ include "finetune-job.fullname" . }}
{{- end }}

{{/* Standard labels of every object; `component` is set per object. */}}
{{- define "finetune-job.labels" -}}
{{ include "finetune-job.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: vlaunch
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end }}

{{/* The claim mounted for checkpoints and the model cache. */}}
{{- define "finetune-job.claimName" -}}
{{- .Values.volume.existingClaim | default (printf "%s-data" (include "finetune-job.fullname" .)) -}}
{{- end }}

{{/* Pod-level settings shared by every pod of the run (Indexed Job and RayJob groups). */}}
{{- define "finetune-job.podSettings" -}}
{{- with .Values.serviceAccount }}
serviceAccountName: {{ . }}
{{- end }}
{{- with .Values.priorityClass }}
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
terminationGracePeriodSeconds: {{ .Values.terminationGraceSeconds }}
securityContext:
  runAsNonRoot: true
  runAsUser: {{ .Values.runAsUser }}
  runAsGroup: {{ .Values.runAsUser }}
  fsGroup: {{ .Values.fsGroup }}
  seccompProfile:
    type: RuntimeDefault
volumes:
  - name: dshm
    emptyDir:
      medium: Memory
      sizeLimit: {{ .Values.shmSize }}
  - name: data
    {{- if .Values.volume.enabled }}
    persistentVolumeClaim:
      claimName: {{ include "finetune-job.claimName" . }}
    {{- else }}
    emptyDir: {}
    {{- end }}
  - name: job
    configMap:
      name: {{ include "finetune-job.fullname" . }}
{{- end }}

{{/* Container settings shared by every container of the run (image, env, mounts, limits). */}}
{{- define "finetune-job.containerSettings" -}}
image: {{ .Values.image }}
imagePullPolicy: {{ .Values.imagePullPolicy }}
securityContext:
  runAsNonRoot: true
  runAsUser: {{ .Values.runAsUser }}
  allowPrivilegeEscalation: false
  capabilities:
    drop: [ALL]
  seccompProfile:
    type: RuntimeDefault
volumeMounts:
  - name: dshm
    mountPath: /dev/shm
  - name: data
    mountPath: {{ .Values.volume.mountPath }}
  - name: job
    mountPath: /etc/vlaunch
    readOnly: true
{{- $gpus := int .Values.gpusPerNode }}
{{- /* Sized for the GPUs asked for, unless set: cpuPerGpu and memoryPerGpuGib per GPU. */}}
{{- $cpu := .Values.cpu | default "" | toString }}
{{- $memory := .Values.memory | default "" | toString }}
{{- if and (not $cpu) (gt $gpus 0) }}
{{- $cpu = mul $gpus (int .Values.cpuPerGpu) | toString }}
{{- end }}
{{- if and (not $memory) (gt $gpus 0) }}
{{- $memory = printf "%dGi" (mul $gpus (int .Values.memoryPerGpuGib)) }}
{{- end }}
{{- if or $cpu $memory (gt $gpus 0) }}
resources:
  requests:
    {{- with $cpu }}
    cpu: {{ . | quote }}
    {{- end }}
    {{- with $memory }}
    memory: {{ . | quote }}
    {{- end }}
    {{- if gt $gpus 0 }}
    nvidia.com/gpu: {{ $gpus }}
    {{- end }}
  {{- if or $memory (gt $gpus 0) }}
  limits:
    {{- with $memory }}
    memory: {{ . | quote }}
    {{- end }}
    {{- if gt $gpus 0 }}
    nvidia.com/gpu: {{ $gpus }}
    {{- end }}
  {{- end }}
{{- end }}
{{- end }}

{{/*
Overrides that make `vlaunch run` plan for this chart's pods when no launch handed it a plan
(a plain `helm install`): " resources.nodes=N" and, with GPUs, " resources.gpus_per_node=G".
*/}}
{{- define "finetune-job.worldOverrides" -}}
{{- if not .Values.job.plan -}}
{{- printf " resources.nodes=%d" (int .Values.nodes) -}}
{{- if gt (int .Values.gpusPerNode) 0 -}}
{{- printf " resources.gpus_per_node=%d" (int .Values.gpusPerNode) -}}
{{- end -}}
{{- end -}}
{{- end }}

{{/* Environment of every container: the items of an `env:` list. */}}
{{- define "finetune-job.env" -}}
- name: POD_IP
  valueFrom:
    fieldRef:
      fieldPath: status.podIP
- name: HF_HOME
  value: {{ printf "%s/cache/huggingface" .Values.volume.mountPath | quote }}
- name: VLAUNCH_OUTPUT_DIR
  value: {{ .Values.outputDir | quote }}
- name: RAY_USAGE_STATS_ENABLED
  value: "0"
{{- with .Values.hfToken }}
- name: HF_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ .name }}
      key: {{ .key | quote }}
{{- end }}
{{- with .Values.wandbApiKey }}
- name: WANDB_API_KEY
  valueFrom:
    secretKeyRef:
      name: {{ .name }}
      key: {{ .key | quote }}
{{- end }}
{{- end }}

{{/* The Secret that holds the Ray cluster's token (operator-free mode; KubeRay makes its own). */}}
{{- define "finetune-job.rayAuthSecret" -}}
{{- printf "%s-ray-auth" (include "finetune-job.fullname" .) -}}
{{- end }}
