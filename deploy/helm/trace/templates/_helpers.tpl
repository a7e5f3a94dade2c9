{{/* Names and labels shared by every object of the chart. */}}
{{- define "trace.fullname" -}}
{{- if contains "trace" .Release.Name -}}{{ .Release.Name | trunc 50 | trimSuffix "-" }}{{- else -}}{{ printf "%s-trace" .Release.Name | trunc 50 | trimSuffix "-" }}{{- end -}}
{{- end -}}

{{- define "trace.labels" -}}
app.kubernetes.io/name: trace
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* Selector labels of one role's pods: the NetworkPolicies select pods by these. */}}
{{- define "trace.selector" -}}
app.kubernetes.io/name: trace
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .role }}
{{- end -}}

{{- define "trace.roleName" -}}
{{ include "trace.fullname" .root }}-{{ .role }}
{{- end -}}

{{/* host:port of a role's Service, for the settings of the roles that call it. */}}
{{- define "trace.addr" -}}
{{ include "trace.fullname" .root }}-{{ .role }}.{{ .root.Release.Namespace }}.svc:{{ .root.Values.grpcPort }}
{{- end -}}
