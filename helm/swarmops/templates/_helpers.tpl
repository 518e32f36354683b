{{- define "swarmops.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "swarmops.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "swarmops.labels" -}}
{{ include "swarmops.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "swarmops.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "swarmops.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The rules the operator needs on namespaced objects, wherever it serves. */}}
{{- define "swarmops.namespacedRules" -}}
- apiGroups: ["swarmops.dev"]
  resources: [agentpools, agentclaims, redisclusters, swarms]
  verbs: [get, list, watch, patch, update]
# A Swarm's own AgentPools and RedisCluster, written by server-side apply. The swarm
# deletes its RedisCluster last on shutdown; its pools go by garbage collection.
- apiGroups: ["swarmops.dev"]
  resources: [agentpools]
  verbs: [create]
- apiGroups: ["swarmops.dev"]
  resources: [redisclusters]
  verbs: [create, delete]
- apiGroups: ["swarmops.dev"]
  resources: [agentpools/status, agentclaims/status, redisclusters/status, swarms/status]
  verbs: [get, patch, update]
# Owner references with blockOwnerDeletion need this where the
# OwnerReferencesPermissionEnforcement admission plugin is on (OpenShift, hardened clusters).
- apiGroups: ["swarmops.dev"]
  resources: [agentpools/finalizers, agentclaims/finalizers, redisclusters/finalizers, swarms/finalizers]
  verbs: [update]
- apiGroups: [""]
  resources: [pods]
  verbs: [get, list, watch, create, patch, delete]
# One PodDisruptionBudget per AgentPool, owned by the pool: the garbage collector
# deletes it with the pool, so no delete here. (A RedisCluster shard's budget is owned
# by the shard's StatefulSet and goes with it the same way.)
- apiGroups: ["policy"]
  resources: [poddisruptionbudgets]
  verbs: [get, list, watch, create, patch]
# RedisClusters: a StatefulSet per shard (watched; deleted when a drained shard goes),
# and Services, a ConfigMap and a NetworkPolicy, all written by server-side apply and
# removed by the garbage collector with their cluster.
- apiGroups: ["apps"]
  resources: [statefulsets]
  verbs: [get, list, watch, create, patch, delete]
# An AgentPool keeps each pod template revision in a ControllerRevision it owns, so the
# stable template outlives the spec during a rollout (read by name, never listed; deleted
# when no longer stable nor rolled out, the rest with the pool by garbage collection).
- apiGroups: ["apps"]
  resources: [controllerrevisions]
  verbs: [get, create, delete]
- apiGroups: [""]
  resources: [services, configmaps]
  verbs: [get, create, patch]
- apiGroups: ["networking.k8s.io"]
  resources: [networkpolicies]
  verbs: [get, create, patch]
# The Redis password: read from the Secret the user names, or created once when the
# operator generates it. Never listed or watched, never changed.
- apiGroups: [""]
  resources: [secrets]
  verbs: [get, create]
- apiGroups: [""]
  resources: [events]
  verbs: [create, patch]
- apiGroups: ["events.k8s.io"]
  resources: [events]
  verbs: [create, patch]
{{- end -}}
