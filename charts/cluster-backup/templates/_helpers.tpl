{{- define "cluster-backup.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "cluster-backup.fullname" -}}
{{- if contains .Chart.Name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "cluster-backup.selectorLabels" -}}
app.kubernetes.io/name: {{ include "cluster-backup.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "cluster-backup.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "cluster-backup.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "cluster-backup.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "cluster-backup.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "cluster-backup.secretName" -}}
{{- default (include "cluster-backup.fullname" .) .Values.minio.existingSecret }}
{{- end }}

{{- define "cluster-backup.integritySecretName" -}}
{{- .Values.integrity.existingSecret | default (printf "%s-integrity" (include "cluster-backup.fullname" .)) }}
{{- end }}

{{- define "cluster-backup.hmacSecretName" -}}
{{- .Values.secretEncryption.existingHMACSecret | default (printf "%s-hmac" (include "cluster-backup.fullname" .)) }}
{{- end }}

{{- define "cluster-backup.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "cluster-backup.clusterName" -}}
{{- required "clusterName is required: the path segment under which this cluster's objects are stored" .Values.clusterName }}
{{- end }}

{{/* A YAML list as the ConfigMap's one-per-line text. */}}
{{- define "cluster-backup.lines" -}}
{{- range . }}{{ . }}
{{ end }}
{{- end }}

{{/* The store's and the integrity key's environment: the service's and git-sync's. */}}
{{- define "cluster-backup.storeEnv" -}}
{{- if .Values.minio.endpoint }}
- name: MINIO_ENDPOINT
  value: {{ .Values.minio.endpoint | quote }}
- name: MINIO_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "cluster-backup.secretName" . }}
      key: access-key
- name: MINIO_SECRET_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "cluster-backup.secretName" . }}
      key: secret-key
{{- end }}
- name: MINIO_BUCKET
  value: {{ .Values.minio.bucket | quote }}
- name: MINIO_USE_SSL
  value: {{ .Values.minio.useSSL | quote }}
- name: MINIO_REGION
  value: {{ .Values.minio.region | quote }}
{{- if .Values.minio.caSecret }}
- name: MINIO_CA_FILE
  value: /etc/cluster-backup/ca/ca.crt
{{- end }}
{{- if .Values.minio.clientCertSecret }}
- name: MINIO_CLIENT_CERT
  value: /etc/cluster-backup/client/tls.crt
- name: MINIO_CLIENT_KEY
  value: /etc/cluster-backup/client/tls.key
{{- end }}
{{- with .Values.minio.sse }}
- name: MINIO_SSE
  value: {{ . | quote }}
{{- end }}
{{- if .Values.integrity.enabled }}
- name: INTEGRITY_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "cluster-backup.integritySecretName" . }}
      key: integrity-key
{{- if .Values.integrity.oldKeysSecret }}
- name: INTEGRITY_KEYS_OLD
  valueFrom:
    secretKeyRef:
      name: {{ .Values.integrity.oldKeysSecret }}
      key: integrity-keys-old
{{- end }}
{{- end }}
{{- end }}

{{/* Mounts of the store's CA and client certificate. */}}
{{- define "cluster-backup.storeMounts" -}}
{{- if .Values.minio.caSecret }}
- name: ca
  mountPath: /etc/cluster-backup/ca
  readOnly: true
{{- end }}
{{- if .Values.minio.clientCertSecret }}
- name: client-cert
  mountPath: /etc/cluster-backup/client
  readOnly: true
{{- end }}
{{- end }}

{{/* Volumes of the store's CA and client certificate. */}}
{{- define "cluster-backup.storeVolumes" -}}
{{- if .Values.minio.caSecret }}
- name: ca
  secret:
    secretName: {{ .Values.minio.caSecret }}
{{- end }}
{{- if .Values.minio.clientCertSecret }}
- name: client-cert
  secret:
    secretName: {{ .Values.minio.clientCertSecret }}
    defaultMode: 0400
{{- end }}
{{- end }}

{{/* The pod spec shared by the Deployment and the CronJob. */}}
{{- define "cluster-backup.podSpec" -}}
serviceAccountName: {{ include "cluster-backup.serviceAccountName" . }}
automountServiceAccountToken: true
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
securityContext:
  {{- $psc := deepCopy .Values.podSecurityContext }}
  {{- if .Values.openshift.enabled }}
  {{- $_ := unset $psc "runAsUser" }}
  {{- $_ := unset $psc "runAsGroup" }}
  {{- $_ := unset $psc "fsGroup" }}
  {{- end }}
  {{- toYaml $psc | nindent 2 }}
containers:
  - name: cluster-backup
    image: {{ include "cluster-backup.image" . }}
    imagePullPolicy: {{ .Values.image.pullPolicy }}
    args: [{{ if eq .Values.mode "cronjob" }}"snapshot"{{ else }}"run"{{ end }}]
    securityContext:
      {{- $sc := deepCopy .Values.securityContext }}
      {{- if .Values.openshift.enabled }}
      {{- $_ := unset $sc "runAsUser" }}
      {{- $_ := unset $sc "runAsGroup" }}
      {{- end }}
      {{- toYaml $sc | nindent 6 }}
    env:
      - name: CLUSTER_NAME
        value: {{ include "cluster-backup.clusterName" . | quote }}
      - name: CLUSTER_DOMAIN
        value: {{ .Values.clusterDomain | quote }}
      {{- include "cluster-backup.storeEnv" . | trim | nindent 6 }}
      {{- if .Values.secretEncryption.recipients }}
      - name: SECRET_ENCRYPTION
        value: {{ join "," .Values.secretEncryption.recipients | quote }}
      - name: SECRET_HMAC_KEY
        valueFrom:
          secretKeyRef:
            name: {{ include "cluster-backup.hmacSecretName" . }}
            key: hmac-key
      {{- end }}
      - name: VERIFY_INTERVAL
        value: {{ .Values.verifyInterval | quote }}
      - name: BACKUP_PREFIX
        value: {{ .Values.backupPrefix | quote }}
      - name: BACKUP_DIR
        value: {{ .Values.backupDir | quote }}
      - name: BACKUP_CONFIG_DIR
        value: /etc/cluster-backup/config
      - name: LOG_LEVEL
        value: {{ .Values.logLevel | quote }}
      - name: METRICS_ADDR
        value: {{ printf ":%v" .Values.metrics.port | quote }}
      - name: BATCH_SIZE
        value: {{ .Values.batchSize | quote }}
      - name: RETRY_ATTEMPTS
        value: {{ .Values.retryAttempts | quote }}
      - name: RETRY_DELAY
        value: {{ .Values.retryDelay | quote }}
      - name: DEBOUNCE
        value: {{ .Values.debounce | quote }}
      - name: SNAPSHOT_INTERVAL
        value: {{ .Values.snapshotInterval | quote }}
      - name: API_QPS
        value: {{ .Values.apiQPS | quote }}
      - name: API_BURST
        value: {{ .Values.apiBurst | quote }}
      - name: STORE_QPS
        value: {{ .Values.storeQPS | quote }}
      - name: SYNC_TIMEOUT
        value: {{ .Values.syncTimeout | quote }}
      - name: REQUIRE_VERSIONING
        value: {{ .Values.requireVersioning | quote }}
      {{- with .Values.noncurrentRetention }}
      - name: NONCURRENT_RETENTION
        value: {{ . | quote }}
      {{- end }}
      {{- with .Values.objectLock.mode }}
      - name: OBJECT_LOCK
        value: {{ . | quote }}
      - name: OBJECT_LOCK_RETENTION
        value: {{ $.Values.objectLock.retention | quote }}
      {{- end }}
      {{- if and (ne .Values.mode "cronjob") (gt (int .Values.replicas) 1) }}
      - name: LEADER_ELECT
        value: "true"
      - name: LEASE_DURATION
        value: {{ .Values.leaseDuration | quote }}
      - name: LEADER_ELECTION_NAMESPACE
        valueFrom:
          fieldRef:
            fieldPath: metadata.namespace
      - name: POD_NAME
        valueFrom:
          fieldRef:
            fieldPath: metadata.name
      {{- end }}
    ports:
      - name: metrics
        containerPort: {{ .Values.metrics.port }}
        protocol: TCP
    {{- if ne .Values.mode "cronjob" }}
    livenessProbe:
      httpGet:
        path: /healthz
        port: metrics
      periodSeconds: 20
      failureThreshold: 3
    readinessProbe:
      httpGet:
        path: /readyz
        port: metrics
      periodSeconds: 10
      failureThreshold: 3
    {{- end }}
    resources:
      {{- toYaml .Values.resources | nindent 6 }}
    volumeMounts:
      - name: config
        mountPath: /etc/cluster-backup/config
        readOnly: true
      {{- with include "cluster-backup.storeMounts" . | trim }}{{ . | nindent 6 }}{{ end }}
      {{- if not .Values.minio.endpoint }}
      - name: backup
        mountPath: {{ .Values.backupDir }}
      {{- end }}
volumes:
  - name: config
    configMap:
      name: {{ include "cluster-backup.fullname" . }}
  {{- with include "cluster-backup.storeVolumes" . | trim }}{{ . | nindent 2 }}{{ end }}
  {{- if not .Values.minio.endpoint }}
  - name: backup
    {{- if .Values.persistence.existingClaim }}
    persistentVolumeClaim:
      claimName: {{ .Values.persistence.existingClaim }}
    {{- else }}
    emptyDir: {}
    {{- end }}
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
{{- end }}
