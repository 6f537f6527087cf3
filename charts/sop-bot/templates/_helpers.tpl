{{/* Chart name. */}}
{{- define "sop-bot.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: release-chart, unless the release name already holds the chart name. */}}
{{- define "sop-bot.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "sop-bot.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "sop-bot.selectorLabels" -}}
app.kubernetes.io/name: {{ include "sop-bot.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "sop-bot.labels" -}}
helm.sh/chart: {{ include "sop-bot.chart" . }}
{{ include "sop-bot.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: sop-bot
{{- end }}

{{- define "sop-bot.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "sop-bot.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The Secret the bot's SOPBOT_* secret variables come from. */}}
{{- define "sop-bot.secretName" -}}
{{- default (include "sop-bot.fullname" .) .Values.existingSecret }}
{{- end }}

{{- define "sop-bot.runbookEnabled" -}}
{{- if or .Values.runbook.content .Values.runbook.existingConfigMap }}true{{ end }}
{{- end }}

{{/* Mount points inside the container. */}}
{{- define "sop-bot.configPath" -}}/etc/sopbot/config/sopbot.yaml{{- end }}
{{- define "sop-bot.runbookPath" -}}/etc/sopbot/runbook/runbook.md{{- end }}
{{- define "sop-bot.mgmtKubeconfigPath" -}}/etc/sopbot/mgmt/kubeconfig{{- end }}
{{- define "sop-bot.storePath" -}}/data/sopbot.db{{- end }}
{{- define "sop-bot.storeCaPath" -}}/etc/sopbot/store-ca/ca.crt{{- end }}

{{/* The store section of sopbot.yaml: PostgreSQL with store.url (password from the Secret as
     SOPBOT_STORE__PASSWORD, never here), else the SQLite file on the data volume. */}}
{{- define "sop-bot.storeConfig" -}}
{{- if .Values.store.url }}
{{- $store := dict "url" .Values.store.url "sslmode" .Values.store.sslmode "pool_size" (int .Values.store.poolSize) }}
{{- if .Values.store.caSecret.name }}
{{- $_ := set $store "sslrootcert" (include "sop-bot.storeCaPath" .) }}
{{- end }}
{{- toJson $store }}
{{- else }}
{{- toJson (dict "path" (include "sop-bot.storePath" .)) }}
{{- end }}
{{- end }}

{{/* sopbot.yaml: the user's config plus what the chart decides (listen address, paths,
     remediation). Secrets are not in it: they come from the Secret as SOPBOT_* variables. */}}
{{- define "sop-bot.config" -}}
{{- $cfg := deepCopy .Values.config }}
{{- $server := default dict (get $cfg "server") }}
{{- $_ := set $server "host" "0.0.0.0" }}
{{- $_ := set $server "port" (int .Values.port) }}
{{- $_ := set $cfg "server" $server }}
{{- $_ := set $cfg "store" (include "sop-bot.storeConfig" . | fromJson) }}
{{- $runbook := default dict (get $cfg "runbook") }}
{{- if include "sop-bot.runbookEnabled" . }}
{{- $_ := set $runbook "path" (include "sop-bot.runbookPath" .) }}
{{- end }}
{{- $_ := set $cfg "runbook" $runbook }}
{{- if .Values.mgmtKubeconfig.existingSecret }}
{{- $kube := default dict (get $cfg "kubernetes") }}
{{- $_ := set $kube "mgmt_kubeconfig" (include "sop-bot.mgmtKubeconfigPath" .) }}
{{- $_ := set $cfg "kubernetes" $kube }}
{{- end }}
{{- $health := default dict (get $cfg "health") }}
{{- $_ := set $health "lease_name" .Values.leaderElection.leaseName }}
{{- $_ := set $cfg "health" $health }}
{{- $checks := default dict (get $cfg "checks") }}
{{- $k8sAuth := default dict (get $checks "vault-k8s-auth") }}
{{- $_ := set $k8sAuth "login_test" .Values.vaultLoginTest.enabled }}
{{- $_ := set $k8sAuth "namespace" .Values.vaultLoginTest.namespace }}
{{- $_ := set $k8sAuth "service_account" .Values.vaultLoginTest.serviceAccount }}
{{- $_ := set $checks "vault-k8s-auth" $k8sAuth }}
{{- $issuer := default dict (get $checks "cert-issuer") }}
{{- $_ := set $issuer "login_test" .Values.vaultLoginTest.enabled }}
{{- $_ := set $checks "cert-issuer" $issuer }}
{{- $_ := set $cfg "checks" $checks }}
{{- $r := .Values.remediation }}
{{- $unseal := dict "enabled" (and $r.enabled $r.unsealFromSecret.enabled) "namespace" $r.unsealFromSecret.namespace "secret_name" $r.unsealFromSecret.secretName "key" $r.unsealFromSecret.key }}
{{- $remediation := deepCopy (default dict $r.settings) }}
{{- $_ := set $remediation "enabled" $r.enabled }}
{{- $_ := set $remediation "approvers" $r.approvers }}
{{- $_ := set $remediation "unseal_from_secret" $unseal }}
{{- $_ := set $cfg "remediation" $remediation }}
{{- toYaml $cfg }}
{{- end }}

{{/* Node verbs the enabled actions need. */}}
{{- define "sop-bot.remediation.nodePatch" -}}
{{- $a := .Values.remediation.actions }}
{{- if or $a.cordon $a.drain $a.labelNodes $a.nodeMaintenance $a.replaceNode }}true{{ end }}
{{- end }}

{{/* Eviction (drain) for the enabled actions and procedures. */}}
{{- define "sop-bot.remediation.evict" -}}
{{- $a := .Values.remediation.actions }}
{{- if or $a.drain $a.nodeMaintenance $a.replaceNode }}true{{ end }}
{{- end }}

{{/* The remediation ClusterRole's rules as YAML (empty when no cluster-wide action is on). */}}
{{- define "sop-bot.remediation.rules" -}}
{{- $a := .Values.remediation.actions }}
{{- if $a.restart }}
- apiGroups: ["apps"]
  resources: ["deployments", "daemonsets", "statefulsets"]
  verbs: ["patch"]
{{- end }}
{{- if $a.scale }}
- apiGroups: ["apps"]
  resources: ["deployments/scale"]
  verbs: ["patch"]
{{- end }}
{{- if $a.deletePods }}
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["delete"]
{{- end }}
{{- if include "sop-bot.remediation.nodePatch" . }}
- apiGroups: [""]
  resources: ["nodes"]
  verbs: ["patch"]
{{- end }}
{{- if include "sop-bot.remediation.evict" . }}
- apiGroups: [""]
  resources: ["pods/eviction"]
  verbs: ["create"]
{{- end }}
{{- if $a.nodeMaintenance }}
- apiGroups: ["postgresql.cnpg.io"]
  resources: ["clusters/status"]
  verbs: ["patch"]
{{- end }}
{{- if $a.replaceNode }}
- apiGroups: [""]
  resources: ["nodes"]
  verbs: ["delete"]
{{- end }}
{{- if $a.applyTlsStore }}
- apiGroups: ["traefik.io"]
  resources: ["tlsstores"]
  verbs: ["create", "patch"]
{{- end }}
{{- if $a.ciliumLB }}
- apiGroups: ["cilium.io"]
  resources: ["ciliuml2announcementpolicies"]
  verbs: ["create"]
- apiGroups: ["cilium.io"]
  resources: ["ciliumloadbalancerippools"]
  verbs: ["create", "patch"]
{{- end }}
{{- if $a.cnpgBackup }}
- apiGroups: ["postgresql.cnpg.io"]
  resources: ["backups"]
  verbs: ["create"]
{{- end }}
{{- if $a.cnpgPooler }}
- apiGroups: ["postgresql.cnpg.io"]
  resources: ["poolers"]
  verbs: ["create"]
{{- end }}
{{- if $a.cnpgRecovery }}
- apiGroups: ["postgresql.cnpg.io"]
  resources: ["clusters"]
  verbs: ["create"]
{{- end }}
{{- end }}
