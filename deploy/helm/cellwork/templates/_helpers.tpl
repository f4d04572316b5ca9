{{/*
Names: "<fullname>-<service>", fullname the release name unless overridden.
*/}}
{{- define "cellwork.fullname" -}}
{{- default .Release.Name .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- end -}}

{{- define "cellwork.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The name of one service's objects. Call with (dict "root" $ "svc" $svc). */}}
{{- define "cellwork.name" -}}
{{- printf "%s-%s" (include "cellwork.fullname" .root) .svc.name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "cellwork.selectorLabels" -}}
app.kubernetes.io/name: {{ .svc.name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- end -}}

{{- define "cellwork.labels" -}}
{{ include "cellwork.selectorLabels" . }}
app.kubernetes.io/component: {{ .svc.kind }}
app.kubernetes.io/part-of: cellwork
app.kubernetes.io/version: {{ include "cellwork.imageTag" .root | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ include "cellwork.chart" .root }}
{{- end -}}

{{- define "cellwork.imageTag" -}}
{{- default .Chart.AppVersion .Values.image.tag -}}
{{- end -}}

{{- define "cellwork.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "cellwork.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The Secret this chart makes (JWT keys, database URL given as values). */}}
{{- define "cellwork.secretName" -}}
{{- printf "%s-secrets" (include "cellwork.fullname" .) -}}
{{- end -}}

{{/* The NATS subchart's fullname, as the official chart computes it. */}}
{{- define "cellwork.natsFullname" -}}
{{- if .Values.nats.fullnameOverride -}}
{{- .Values.nats.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default "nats" .Values.nats.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "cellwork.natsUrl" -}}
{{- if and .Values.natsUrl .Values.nats.enabled -}}
{{- fail "natsUrl points at your own NATS: also set nats.enabled=false (or leave natsUrl empty to use the NATS subchart)" -}}
{{- end -}}
{{- if .Values.natsUrl -}}
{{- .Values.natsUrl -}}
{{- else if .Values.nats.enabled -}}
{{- printf "nats://%s.%s.svc:4222" (include "cellwork.natsFullname" .) .Release.Namespace -}}
{{- else -}}
{{- fail "no NATS: set natsUrl (an external NATS with JetStream) or nats.enabled=true" -}}
{{- end -}}
{{- end -}}

{{/*
Deep-merge .src into .dst in place: maps merge key by key, anything else replaces
(false, 0 and null included, unlike sprig's mergeOverwrite).
*/}}
{{- define "cellwork.merge" -}}
{{- $dst := .dst -}}
{{- range $key, $value := .src -}}
{{- if and (kindIs "map" $value) (kindIs "map" (get $dst $key)) -}}
{{- include "cellwork.merge" (dict "dst" (get $dst $key) "src" $value) -}}
{{- else -}}
{{- $_ := set $dst $key $value -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
The services, each merged over .Values.defaults and checked, as JSON {"items": [...]}:
  {{- range $svc := (include "cellwork.services" . | fromJson).items }}
Adds "scaler": "keda", "hpa" or "" and "floor": the fewest replicas it runs.
*/}}
{{- define "cellwork.services" -}}
{{- $items := list -}}
{{- $seen := dict -}}
{{- range $entry := .Values.services -}}
{{- $svc := deepCopy $.Values.defaults -}}
{{- include "cellwork.merge" (dict "dst" $svc "src" (deepCopy $entry)) -}}
{{- if not $svc.name -}}{{- fail "every entry of services needs a name" -}}{{- end -}}
{{- if hasKey $seen $svc.name -}}{{- fail (printf "services: %q appears twice" $svc.name) -}}{{- end -}}
{{- $_ := set $seen $svc.name true -}}
{{- if not $svc.module -}}{{- fail (printf "services: %q needs a module" $svc.name) -}}{{- end -}}
{{- if and (eq $svc.kind "http") (not $svc.port) -}}
{{- fail (printf "services: %q is kind http and needs a port" $svc.name) -}}
{{- end -}}
{{- $as := $svc.autoscaling | default dict -}}
{{- if not (hasKey $as "minReplicas") -}}{{- $_ := set $as "minReplicas" $svc.replicas -}}{{- end -}}
{{- if and $as.enabled (lt (int $as.maxReplicas) (int $as.minReplicas)) -}}
{{- fail (printf "services: %q autoscaling.maxReplicas is below minReplicas" $svc.name) -}}
{{- end -}}
{{- $_ := set $svc "autoscaling" $as -}}
{{- $keda := $svc.keda | default dict -}}
{{- if $keda.enabled -}}
{{- $_ := set $svc "scaler" "keda" -}}
{{- $_ := set $svc "floor" (int $keda.minReplicaCount) -}}
{{- else if $as.enabled -}}
{{- $_ := set $svc "scaler" "hpa" -}}
{{- $_ := set $svc "floor" (int $as.minReplicas) -}}
{{- else -}}
{{- $_ := set $svc "scaler" "" -}}
{{- $_ := set $svc "floor" (int $svc.replicas) -}}
{{- end -}}
{{- $items = append $items $svc -}}
{{- end -}}
{{- dict "items" $items | toJson -}}
{{- end -}}

{{/* A probe's action: gRPC health on the gRPC port, or GET path on the HTTP port. */}}
{{- define "cellwork.probeAction" -}}
{{- if eq .svc.kind "http" -}}
httpGet:
  path: {{ .path }}
  port: http
{{- else -}}
grpc:
  port: {{ int .root.Values.ports.grpc }}
{{- end -}}
{{- end -}}

{{/*
The container's environment as a map (NAME: "value" or NAME: {EnvVarSource}), then
the global env and the service's env on top.
*/}}
{{- define "cellwork.env" -}}
{{- $root := .root -}}
{{- $svc := .svc -}}
{{- $env := dict
  "CELLWORK_SERVICE" $svc.name
  "CELLWORK_INSTANCE_ID" (dict "fieldRef" (dict "fieldPath" "metadata.name"))
  "CELLWORK_ADVERTISE_HOST" (dict "fieldRef" (dict "fieldPath" "status.podIP"))
  "CELLWORK_HOST" "0.0.0.0"
  "CELLWORK_GRPC_PORT" (toString (int $root.Values.ports.grpc))
  "CELLWORK_METRICS_PORT" (toString (int $root.Values.ports.metrics))
  "CELLWORK_NATS_URL" (include "cellwork.natsUrl" $root)
  "CELLWORK_STATE_DIR" "/var/lib/cellwork"
  "CELLWORK_VERSION" (include "cellwork.imageTag" $root)
  "CELLWORK_DRAIN_TIMEOUT" (toString $root.Values.drainTimeoutSeconds)
  "CELLWORK_LOG_LEVEL" $root.Values.logLevel
  "CELLWORK_STREAM_REPLICAS" (toString (int $root.Values.streamReplicas))
-}}
{{- if $root.Values.zoneLabel -}}
{{- $_ := set $env "CELLWORK_ZONE" (dict "fieldRef" (dict "fieldPath" (printf "metadata.labels['%s']" $root.Values.zoneLabel))) -}}
{{- else -}}
{{- $_ := set $env "CELLWORK_ZONE" (toString $root.Values.zone) -}}
{{- end -}}
{{- if $root.Values.demo -}}
{{- $_ := set $env "CELLWORK_DEMO" "1" -}}
{{- end -}}
{{- if $root.Values.jwt.existingSecret -}}
{{- $_ := set $env "CELLWORK_JWT_KEYS" (dict "secretKeyRef" (dict "name" $root.Values.jwt.existingSecret "key" $root.Values.jwt.existingSecretKey)) -}}
{{- else if $root.Values.jwt.keys -}}
{{- $_ := set $env "CELLWORK_JWT_KEYS" (dict "secretKeyRef" (dict "name" (include "cellwork.secretName" $root) "key" "jwt-keys")) -}}
{{- end -}}
{{- if $root.Values.jwt.activeKid -}}
{{- $_ := set $env "CELLWORK_JWT_ACTIVE_KID" $root.Values.jwt.activeKid -}}
{{- end -}}
{{- if $root.Values.database.existingSecret -}}
{{- $_ := set $env "CELLWORK_DATABASE_URL" (dict "secretKeyRef" (dict "name" $root.Values.database.existingSecret "key" $root.Values.database.existingSecretKey)) -}}
{{- else if $root.Values.database.url -}}
{{- $_ := set $env "CELLWORK_DATABASE_URL" (dict "secretKeyRef" (dict "name" (include "cellwork.secretName" $root) "key" "database-url")) -}}
{{- end -}}
{{- if eq $svc.kind "http" -}}
{{- $_ := set $env $svc.portEnv (toString (int $svc.port)) -}}
{{- end -}}
{{- range $name, $value := $root.Values.env -}}
{{- $_ := set $env $name $value -}}
{{- end -}}
{{- range $name, $value := $svc.env -}}
{{- $_ := set $env $name $value -}}
{{- end -}}
{{- range $name := keys $env | sortAlpha }}
{{- $value := get $env $name }}
- name: {{ $name }}
{{- if kindIs "map" $value }}
  valueFrom:
    {{- toYaml $value | nindent 4 }}
{{- else }}
  value: {{ toString $value | quote }}
{{- end }}
{{- end }}
{{- end -}}

{{/* Refuse what would crash-loop: no JWT keys outside a demo, the public dev key. */}}
{{- define "cellwork.checkJwt" -}}
{{- if not (or .Values.jwt.existingSecret .Values.jwt.keys .Values.demo) -}}
{{- fail "set jwt.existingSecret (a Secret with CELLWORK_JWT_KEYS, \"kid:secret\", 32+ characters) or jwt.keys, or demo=true: the services refuse the public development key outside a demo" -}}
{{- end -}}
{{- if and .Values.jwt.keys (not .Values.demo) (contains "learnfeed-dev-key-change-me-please" .Values.jwt.keys) -}}
{{- fail "jwt.keys holds the public development key: set your own" -}}
{{- end -}}
{{- range $part := splitList "," (.Values.jwt.keys | default "") -}}
{{- $part = trim $part -}}
{{- if $part -}}
{{- $secret := $part -}}
{{- if contains ":" $part -}}{{- $secret = (splitn ":" 2 $part)._1 -}}{{- end -}}
{{- if lt (len $secret) 32 -}}
{{- fail "jwt.keys: every secret needs 32 or more characters (kid:secret,kid:secret...)" -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- if le (float64 .Values.terminationGracePeriodSeconds) (float64 .Values.drainTimeoutSeconds) -}}
{{- fail "terminationGracePeriodSeconds must exceed drainTimeoutSeconds: SIGTERM drains for up to that long" -}}
{{- end -}}
{{- end -}}
