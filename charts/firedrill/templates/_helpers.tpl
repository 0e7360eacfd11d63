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
