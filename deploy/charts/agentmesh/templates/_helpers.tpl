{{/* The namespace of every namespaced object. */}}
{{- define "agentmesh.namespace" -}}
{{- default .Release.Namespace .Values.namespace -}}
{{- end -}}

{{/* The image of every container. */}}
{{- define "agentmesh.image" -}}
{{ .Values.image.repository }}:{{ default .Chart.AppVersion .Values.image.tag }}
{{- end -}}

{{/* The controller's address as node components dial it. */}}
{{- define "agentmesh.controllerAddr" -}}
agentmesh-controller.{{ include "agentmesh.namespace" . }}.svc:{{ .Values.controller.grpcPort }}
{{- end -}}

{{/* Labels every object carries. */}}
{{- define "agentmesh.labels" -}}
app.kubernetes.io/part-of: agentmesh
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}
