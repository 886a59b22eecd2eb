{{- define "agentworld.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}{{ .Release.Name | trunc 63 | trimSuffix "-" }}{{- else -}}{{ printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" }}{{- end -}}
{{- end -}}

{{- define "agentworld.labels" -}}
app.kubernetes.io/part-of: agentworld
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "agentworld.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "agentworld.controllerName" -}}{{ include "agentworld.fullname" . }}-controller{{- end -}}
{{- define "agentworld.gatewayName" -}}{{ include "agentworld.fullname" . }}-gateway{{- end -}}
{{- define "agentworld.authSecretName" -}}{{ .Values.auth.existingSecret | default (printf "%s-auth" (include "agentworld.fullname" .)) }}{{- end -}}
