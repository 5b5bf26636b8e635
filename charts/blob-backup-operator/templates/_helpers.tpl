{{/* Chart name, truncated to the 63 characters of a DNS label. */}}
{{- define "bbo.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Full name of the release's resources. */}}
{{- define "bbo.fullname" -}}
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

{{- define "bbo.selectorLabels" -}}
app.kubernetes.io/name: {{ include "bbo.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "bbo.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "bbo.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: blob-backup-operator
{{- end -}}

{{/* A fixed name (not derived from the release), so the federated credential subject is known in advance. */}}
{{- define "bbo.serviceAccountName" -}}
{{- required "serviceAccount.name is required: the workload identity's federated credential names it" .Values.serviceAccount.name -}}
{{- end -}}

{{/* The subject a workload identity's federated credential must name. */}}
{{- define "bbo.federatedSubject" -}}
system:serviceaccount:{{ .Release.Namespace }}:{{ include "bbo.serviceAccountName" . }}
{{- end -}}

{{/* Pods the Deployment runs: one with the embedded emulator, whose state lives in the pod. */}}
{{- define "bbo.replicas" -}}
{{- if .Values.embeddedVault -}}1{{- else -}}{{ int .Values.replicaCount }}{{- end -}}
{{- end -}}

{{- define "bbo.subjects" -}}
- kind: ServiceAccount
  name: {{ include "bbo.serviceAccountName" . }}
  namespace: {{ .Release.Namespace }}
{{- end -}}

{{- define "bbo.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* Whether the pods use AKS workload identity (the webhook mutates pods with the label). */}}
{{- define "bbo.workloadIdentity" -}}
{{- if and (not .Values.embeddedVault) (eq .Values.azure.auth "workload-identity") -}}true{{- end -}}
{{- end -}}

{{/*
The Secret mounted as a credential file for the auth modes that read one, as JSON
({secret, key, file, flag}), or "{}". One volume serves both modes: only one is active.
*/}}
{{- define "bbo.credentialFile" -}}
{{- $azure := .Values.azure -}}
{{- if .Values.embeddedVault -}}
{}
{{- else if eq $azure.auth "client-secret" -}}
{{- $secret := required "azure.clientSecret.existingSecret is required when azure.auth is client-secret: create a Secret holding the client secret and name it here" $azure.clientSecret.existingSecret -}}
{{- dict "secret" $secret "key" $azure.clientSecret.key "file" "client-secret" "flag" "--client-secret-file" | toJson -}}
{{- else if eq $azure.auth "static-token" -}}
{{- $secret := required "azure.staticToken.existingSecret is required when azure.auth is static-token: create a Secret holding the token and name it here" $azure.staticToken.existingSecret -}}
{{- dict "secret" $secret "key" $azure.staticToken.key "file" "token" "flag" "--token-file" | toJson -}}
{{- else -}}
{}
{{- end -}}
{{- end -}}

{{- define "bbo.credentialDir" -}}/var/run/secrets/blob-backup-operator/azure{{- end -}}

{{/* Refuse values that would give a broken or unsafe install, with a message that says why. */}}
{{- define "bbo.validate" -}}
{{- if and (gt (int (include "bbo.replicas" .)) 1) (not .Values.leaderElection.enabled) -}}
{{- fail (printf "replicaCount is %d but leaderElection.enabled is false: replicas without leader election would reconcile the same BlobBackupInstances at once. Set leaderElection.enabled=true or replicaCount=1." (int .Values.replicaCount)) -}}
{{- end -}}
{{- if and (not .Values.embeddedVault) (eq .Values.azure.auth "client-secret") -}}
{{- if or (not .Values.azure.clientId) (not .Values.azure.tenantId) -}}
{{- fail "azure.clientId and azure.tenantId are required when azure.auth is client-secret" -}}
{{- end -}}
{{- end -}}
{{- if and .Values.metrics.serviceMonitor.enabled (not .Values.metrics.service.enabled) -}}
{{- fail "metrics.serviceMonitor.enabled needs metrics.service.enabled: the ServiceMonitor selects the metrics Service" -}}
{{- end -}}
{{- if and .Values.metrics.prometheusRule.enabled (not .Values.metrics.service.enabled) -}}
{{- fail "metrics.prometheusRule.enabled needs metrics.service.enabled: its alerts select the series scraped from the metrics Service" -}}
{{- end -}}
{{- end -}}

{{/* The rules on the operator's own resources and on events, cluster-wide or in watchNamespace. */}}
{{- define "bbo.rules" -}}
# Exactly the calls the operator makes, and no more:
# - list, watch: the controller's watch of the resources; get: a fresh read when the watch
#   lags behind the operator's own last write; patch: adding and removing the finalizer
#   (a JSON patch of metadata.finalizers on the resource itself, so no finalizers subresource).
- apiGroups: ["dataprotection.blobbackup.io"]
  resources: ["blobbackupinstances"]
  verbs: ["get", "list", "watch", "patch"]
# - patch: the status is written by server-side apply (a PATCH) on the status subresource.
- apiGroups: ["dataprotection.blobbackup.io"]
  resources: ["blobbackupinstances/status"]
  verbs: ["patch"]
# - list, watch: the restore controller's watch; get: the fresh read every restore reconcile
#   starts with (a restore is sent at most once: never decided on a stale copy). No patch: a
#   BlobRestore has no finalizer.
- apiGroups: ["dataprotection.blobbackup.io"]
  resources: ["blobrestores"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["dataprotection.blobbackup.io"]
  resources: ["blobrestores/status"]
  verbs: ["patch"]
# - create, patch: the events recorder (events.k8s.io/v1 only) creates Events and patches
#   repeats into a series.
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end -}}
