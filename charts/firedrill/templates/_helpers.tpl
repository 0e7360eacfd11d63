{{- define "firedrill.name" -}}firedrill{{- end -}}
{{- define "firedrill.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}{{ default "firedrill" .Values.serviceAccount.name }}{{- else -}}{{ default "default" .Values.serviceAccount.name }}{{- end -}}
{{- end -}}
{{- define "firedrill.labels" -}}
app.kubernetes.io/name: firedrill
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "firedrill.image" -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ default .Chart.AppVersion .Values.image.tag }}
{{- end -}}
{{- end -}}
{{- define "firedrill.selector" -}}
app.kubernetes.io/name: firedrill
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}
{{- /* <release>-firedrill, or the release name alone when it says firedrill already. */ -}}
{{- define "firedrill.fullname" -}}
{{- if contains "firedrill" .Release.Name -}}
{{ .Release.Name | trunc 50 | trimSuffix "-" }}
{{- else -}}
{{ printf "%s-firedrill" .Release.Name | trunc 50 | trimSuffix "-" }}
{{- end -}}
{{- end -}}
