{{/* Kept deliberately simple: name, labels, image, and the RBAC rules shared by ClusterRole and Role. */}}

{{- define "modelrollout.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "modelrollout.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "modelrollout.labels" -}}
{{ include "modelrollout.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: modelrollout
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "modelrollout.serviceAccountName" -}}
{{- default (include "modelrollout.fullname" .) .Values.serviceAccount.name -}}
{{- end -}}

{{- define "modelrollout.leaseName" -}}
{{- default (printf "%s-leader" (include "modelrollout.fullname" .)) .Values.leaderElection.leaseName -}}
{{- end -}}

{{- define "modelrollout.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/*
What the operator does in the namespaces it watches. Every verb here is used by the operator or by kopf;
tests/integration/test_rbac.py runs the operator under exactly these rules and fails on a grant it never
uses (apart from a commented allow-list) and on any request the apiserver denied. Nothing on Secrets.
*/}}
{{- define "modelrollout.rules" -}}
# ModelRollouts: kopf lists/watches them and patches its finalizer and progress annotations; the operator
# reads each one and removes control annotations it acted on (JSON patch with a test op).
- apiGroups: [modelrollout.io]
  resources: [modelrollouts]
  verbs: [get, list, watch, patch]
# The operator writes the status subresource only.
- apiGroups: [modelrollout.io]
  resources: [modelrollouts/status]
  verbs: [patch]
# NAME-REVISION Deployments, one per revision: kopf watches them (to wake the rollout), the operator reads them,
# server-side applies or scales them (an apply that creates an object needs create as well as patch) and deletes
# one when no role needs its revision any more (the previous stable after the switch-back window, a superseded
# canary).
- apiGroups: [apps]
  resources: [deployments]
  verbs: [get, list, watch, create, patch, delete]
# rollback.prewarm: the NAME-prewarm image pre-pull DaemonSet (server-side applied, deleted when done), read from a
# watch of the DaemonSets with the operator's rollout label (one LIST per namespace tells which do not exist; a
# GET only for one the watch has not shown yet).
- apiGroups: [apps]
  resources: [daemonsets]
  verbs: [get, list, watch, create, patch, delete]
# NAME-stable / NAME-canary Services: read the root Service's ports and selector (from a watch of every Service),
# create the track Services and patch their selectors (which revision holds each role: promotion is one patch).
- apiGroups: [""]
  resources: [services]
  verbs: [get, list, watch, create, patch]
# The track Services' EndpointSlices (watched by the operator's label, which they copy from their Service): a
# weight moves only once NAME-canary lists the ready canary pods.
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [list, watch]
# Owned ConfigMaps: the model config of each revision (created once, pruned after promotion), the recorded
# revisions for rollback-to (NAME-revisions, replaced at its resourceVersion), read from a watch of the
# ConfigMaps with the operator's rollout label; GET the compatProbe contract and one not on the watch yet.
- apiGroups: [""]
  resources: [configmaps]
  verbs: [get, list, watch, create, update, delete]
# Why pods are not ready (ImagePullBackOff, CrashLoopBackOff, unschedulable), for canary, stable and prewarm:
# from a watch of the pods with the operator's rollout label.
- apiGroups: [""]
  resources: [pods]
  verbs: [list, watch]
# NGINX router: read the user's Ingress; server-side apply the NAME-canary Ingress; delete it after promotion
# or rollback. kopf watches every Ingress, so the router reads your Ingress and its weight without a GET.
- apiGroups: [networking.k8s.io]
  resources: [ingresses]
  verbs: [get, list, watch, create, patch, delete]
# Gateway API router: read-modify-write of the user's HTTPRoute (update at the resourceVersion it read).
- apiGroups: [gateway.networking.k8s.io]
  resources: [httproutes]
  verbs: [get, update]
# Istio router: the same for the user's VirtualService.
- apiGroups: [networking.istio.io]
  resources: [virtualservices]
  verbs: [get, update]
# chaos steps: create the Chaos Mesh experiment of a drill against the canary's pods, find the rollout's own by
# label at a chaos step (one created but not yet recorded), delete it when the drill is over or stopped.
- apiGroups: [chaos-mesh.org]
  resources: [podchaos, networkchaos, stresschaos, httpchaos, iochaos, timechaos]
  verbs: [list, create, delete]
# An Event for every transition (the operator), and for handler errors (kopf).
- apiGroups: [""]
  resources: [events]
  verbs: [create]
{{- end -}}

{{/* kopf's discovery: CRDs (cluster-wide always), Namespaces (only when watching a list of namespaces). */}}
{{- define "modelrollout.discoveryRules" -}}
# kopf's resource discovery: it notices CRDs appearing or changing (read-only).
- apiGroups: [apiextensions.k8s.io]
  resources: [customresourcedefinitions]
  verbs: [list, watch]
{{- if .Values.watchNamespaces }}
# kopf follows the watched namespaces (created or deleted) when it watches a list of them (read-only).
- apiGroups: [""]
  resources: [namespaces]
  verbs: [list, watch]
{{- end }}
{{- end -}}

{{/* Checks across values that values.schema.json cannot phrase clearly. */}}
{{- define "modelrollout.validate" -}}
{{- if and .Values.rbac.namespaced (not .Values.watchNamespaces) -}}
{{- fail "rbac.namespaced=true needs watchNamespaces: the Roles are created in those namespaces" -}}
{{- end -}}
{{- if and (gt (int .Values.replicas) 1) (not .Values.leaderElection.enabled) -}}
{{- fail "replicas > 1 needs leaderElection.enabled=true: without it every replica would reconcile" -}}
{{- end -}}
{{- if and .Values.metrics.serviceMonitor.enabled (not .Values.metrics.service.enabled) -}}
{{- fail "metrics.serviceMonitor.enabled=true needs metrics.service.enabled=true: it scrapes that Service" -}}
{{- end -}}
{{- end -}}
