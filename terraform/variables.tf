variable "project_id" {
  description = "Project of the Cloud Run service and the push subscription."
  type        = string
}

variable "region" {
  description = "Cloud Run region."
  type        = string
}

variable "name" {
  description = "Name of the service; also prefixes the service accounts, subscription and dead-letter topic."
  type        = string
  default     = "pubsub-kafka-bridge"
  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{0,48}[a-z0-9]$", var.name))
    error_message = "name: lower-case letters, digits and hyphens, at most 50 characters."
  }
}

variable "image" {
  description = "Container image of the bridge (built from infra/Dockerfile), e.g. REGION-docker.pkg.dev/PROJECT/REPO/pubsub-kafka-bridge:TAG."
  type        = string
}

variable "pubsub_topic" {
  description = "Full id of the Pub/Sub topic to subscribe to (projects/P/topics/T)."
  type        = string
}

variable "audience" {
  description = "Audience of the push OIDC token; the same value is given to the service as OIDC_AUDIENCE and to Cloud Run as a custom audience. Defaults to https://NAME.pubsub-kafka-bridge.invalid."
  type        = string
  default     = ""
}

# --- scaling and runtime ---

variable "min_instances" {
  description = "Minimum instances; 0 scales to zero when no messages arrive."
  type        = number
  default     = 0
}

variable "max_instances" {
  description = "Maximum instances."
  type        = number
  default     = 10
}

variable "concurrency" {
  description = "Concurrent requests per instance (deliveries batched into one produce request per partition)."
  type        = number
  default     = 250
}

variable "cpu" {
  description = "CPU limit per instance."
  type        = string
  default     = "1"
}

variable "memory" {
  description = "Memory limit per instance (\"NMi\" or \"NGi\"); the bridge's in-flight budget is derived from it."
  type        = string
  default     = "256Mi"

  validation {
    condition     = can(regex("^[0-9]+(Mi|Gi)$", var.memory))
    error_message = "memory must be whole mebibytes or gibibytes, e.g. \"256Mi\" or \"1Gi\"."
  }
}

variable "request_timeout_seconds" {
  description = "Cloud Run request timeout; above the produce timeout."
  type        = number
  default     = 30
}

# --- Kafka ---

variable "kafka_bootstrap_servers" {
  description = "KAFKA_BOOTSTRAP_SERVERS, e.g. bootstrap.CLUSTER.REGION.managedkafka.PROJECT.cloud.goog:9092."
  type        = string
}

variable "kafka_topic" {
  description = "KAFKA_TOPIC: where messages go (with routes: those no rule matches). \"\" only with routes, to refuse unmatched messages (404 no_route)."
  type        = string
}

variable "kafka_key" {
  description = "KAFKA_KEY: ordering_key, message_id, attribute:NAME or none."
  type        = string
  default     = "ordering_key"
}

variable "kafka_value_format" {
  description = "KAFKA_VALUE_FORMAT: raw, json, avro, protobuf or pubsub-schema."
  type        = string
  default     = "raw"
  validation {
    condition     = contains(["raw", "json", "avro", "protobuf", "pubsub-schema"], var.kafka_value_format)
    error_message = "kafka_value_format: raw, json, avro, protobuf or pubsub-schema."
  }
}

variable "kafka_compression" {
  description = "KAFKA_COMPRESSION: none, gzip, snappy, lz4 or zstd."
  type        = string
  default     = "none"
}

variable "kafka_produce_timeout_ms" {
  description = "KAFKA_PRODUCE_TIMEOUT_MS; must stay below the subscription's ack deadline."
  type        = number
  default     = 10000
}

variable "kafka_dlq_topic" {
  description = "KAFKA_DLQ_TOPIC; empty for none."
  type        = string
  default     = ""
}

variable "kafka_security_protocol" {
  description = "KAFKA_SECURITY_PROTOCOL: PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL."
  type        = string
  default     = "SASL_SSL"
}

variable "kafka_sasl_mechanism" {
  description = "KAFKA_SASL_MECHANISM: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 or OAUTHBEARER; empty for none."
  type        = string
  default     = "PLAIN"
}

variable "kafka_sasl_username" {
  description = "KAFKA_SASL_USERNAME (not a secret: an API key id or user name)."
  type        = string
  default     = ""
}

variable "kafka_sasl_password_secret" {
  description = "Secret Manager secret (its name, or projects/P/secrets/S) holding KAFKA_SASL_PASSWORD; empty for none. Pass a name known at plan time (a literal or variable, not a resource's id): it decides whether the accessor grant exists. Secrets are never plain variables."
  type        = string
  default     = ""
}

variable "kafka_sasl_password_secret_version" {
  description = "Version of the password secret the bridge reads when it connects: \"latest\" (rotations take effect on reconnect) or a number."
  type        = string
  default     = "latest"
}

variable "pubsub_schemas" {
  description = "With kafka_value_format = \"pubsub-schema\": the Pub/Sub schemas (projects/P/schemas/S) of the subscribed topic, whose revisions the bridge reads from the Schema API; the runtime service account gets roles/pubsub.viewer on each (it holds pubsub.schemas.get)."
  type        = list(string)
  default     = []
  validation {
    condition     = alltrue([for s in var.pubsub_schemas : can(regex("^projects/[^/]+/schemas/[^/]+$", s))])
    error_message = "pubsub_schemas: full schema names, projects/P/schemas/S."
  }
}

variable "runtime_project_roles" {
  description = "Project roles granted to the bridge's runtime service account before the service starts, e.g. [\"roles/managedkafka.client\"] for Google Managed Kafka."
  type        = list(string)
  default     = []
}


variable "routes" {
  description = <<-EOT
    Routing rules (ROUTES, see docs/routing.md), tried in order; the first whose `when` (CEL, default true)
    holds decides: its `topic`, or `drop = true` (answered 204, nothing written). Optional CEL expressions:
    `key`, `headers` (header name to expression, or null to remove the header) and `timestamp`. Empty: no
    rules (KAFKA_TOPIC takes every message). With rules, kafka_topic may be "" (a message no rule matches is
    then refused with 404 no_route). The bridge compiles the expressions at startup and refuses to start on
    an invalid one; `pubsub-kafka-bridge check` with the same ROUTES tries them before an apply.
  EOT
  type = list(object({
    when      = optional(string)
    topic     = optional(string)
    drop      = optional(bool)
    key       = optional(string)
    headers   = optional(map(string))
    timestamp = optional(string)
  }))
  default = []

  validation {
    condition     = alltrue([for r in var.routes : (r.topic != null) != (r.drop == true) && r.drop != false])
    error_message = "routes: every rule names exactly one of topic or drop = true."
  }
  validation {
    condition     = alltrue([for r in var.routes : r.topic == null || can(regex("^[a-zA-Z0-9._-]{1,249}$", r.topic == null ? "-" : r.topic))])
    error_message = "routes: a topic is a Kafka topic name: 1 to 249 of a-z, A-Z, 0-9, '.', '_' and '-'."
  }
  validation {
    condition = alltrue([for r in var.routes : alltrue([
      for expression in [r.when, r.key, r.timestamp] : trimspace(expression == null ? "-" : expression) != ""
    ])])
    error_message = "routes: when, key and timestamp are CEL expressions; leave them out rather than empty."
  }
  validation {
    condition     = alltrue([for r in var.routes : alltrue([for name in keys(r.headers == null ? {} : r.headers) : trimspace(name) != ""])])
    error_message = "routes: a header name is never empty."
  }
}

variable "extra_env" {
  description = "More environment variables of the bridge (see docs/configuration.md), e.g. { KAFKA_LINGER_MS = \"5\" }."
  type        = map(string)
  default     = {}
}

# --- network ---

variable "vpc_network" {
  description = "VPC network for Direct VPC egress (private brokers such as Google Managed Kafka); empty for none."
  type        = string
  default     = ""
}

variable "vpc_subnetwork" {
  description = "Subnetwork for Direct VPC egress."
  type        = string
  default     = ""
}

variable "startup_probe_budget_seconds" {
  description = "How long a new instance may take to become ready (Kafka metadata read) before Cloud Run gives up on it; at most 240, the default: Direct VPC egress can delay connections a minute or more at startup, and fresh IAM grants take minutes to propagate."
  type        = number
  default     = null
  validation {
    condition     = var.startup_probe_budget_seconds == null || (coalesce(var.startup_probe_budget_seconds, 0) >= 2 && coalesce(var.startup_probe_budget_seconds, 0) <= 240)
    error_message = "startup_probe_budget_seconds: 2 to 240 (Cloud Run caps period x failure threshold at 240 s)."
  }
}

variable "ingress" {
  description = "Cloud Run ingress. INGRESS_TRAFFIC_ALL lets Pub/Sub reach the service from any project (IAM still requires run.invoker); INGRESS_TRAFFIC_INTERNAL_ONLY works when the subscription is in the same project or VPC-SC perimeter."
  type        = string
  default     = "INGRESS_TRAFFIC_ALL"
}

# --- subscription ---

variable "ack_deadline_seconds" {
  description = "Push ack deadline; must exceed kafka_produce_timeout_ms."
  type        = number
  default     = 30
}

variable "retry_minimum_backoff" {
  description = "Minimum redelivery backoff."
  type        = string
  default     = "10s"
}

variable "retry_maximum_backoff" {
  description = "Maximum redelivery backoff."
  type        = string
  default     = "600s"
}

variable "max_delivery_attempts" {
  description = "Delivery attempts before Pub/Sub moves a message to its dead-letter topic (5-100)."
  type        = number
  default     = 10
}

variable "message_ordering" {
  description = "Enable Pub/Sub message ordering (one delivery in flight per ordering key)."
  type        = bool
  default     = false
}

variable "no_wrapper" {
  description = "Use payload unwrapping (raw body, metadata as headers)."
  type        = bool
  default     = false
}

variable "kms_key_name" {
  description = "Cloud KMS key for the dead-letter topic (CMEK); empty for Google-managed encryption. The Pub/Sub service agent gets roles/cloudkms.cryptoKeyEncrypterDecrypter on it (see grant_kms_key_role). Pass a name known at plan time."
  type        = string
  default     = ""
}

variable "grant_kms_key_role" {
  description = "Grant the Pub/Sub service agent roles/cloudkms.cryptoKeyEncrypterDecrypter on kms_key_name. Needs cloudkms.cryptoKeys.setIamPolicy; set false when the key's IAM is managed elsewhere (grant the role before apply)."
  type        = bool
  default     = true
}

variable "dead_letter_retention" {
  description = "How long the dead-letter subscription keeps undelivered dead letters (at most 31 days)."
  type        = string
  default     = "2678400s"
}

# --- monitoring ---

variable "monitoring" {
  description = "Create the Cloud Monitoring dashboard and alert policies of docs/operations.md (needs monitoring.googleapis.com and roles/monitoring.editor for whoever applies)."
  type        = bool
  default     = true
}

variable "notification_channels" {
  description = "Notification channels the alert policies notify, as ids (projects/P/notificationChannels/N, e.g. google_monitoring_notification_channel.x.id). Empty: incidents appear in Cloud Monitoring only."
  type        = list(string)
  default     = []
  validation {
    condition     = alltrue([for channel in var.notification_channels : can(regex("^projects/[^/]+/notificationChannels/[^/]+$", channel))])
    error_message = "notification_channels: ids of the form projects/PROJECT/notificationChannels/ID."
  }
}

variable "alert_oldest_unacked_age_seconds" {
  description = "Alert when the push subscription's oldest unacknowledged message is older than this for alert_oldest_unacked_duration_seconds. A healthy bridge acknowledges within seconds; one message failing since this long means Kafka, the bridge or the message is broken."
  type        = number
  default     = 600
  validation {
    condition     = var.alert_oldest_unacked_age_seconds >= 60
    error_message = "alert_oldest_unacked_age_seconds: at least 60 (Pub/Sub samples the metric every 60 s)."
  }
}

variable "alert_oldest_unacked_duration_seconds" {
  description = "How long the oldest unacknowledged message must stay above its threshold before the alert opens."
  type        = number
  default     = 300
}

variable "alert_push_error_ratio" {
  description = "Alert when more than this fraction of push requests (Pub/Sub's own count) is not acknowledged, over alert_push_error_window_seconds. 0.05 = 5 %."
  type        = number
  default     = 0.05
  validation {
    condition     = var.alert_push_error_ratio > 0 && var.alert_push_error_ratio < 1
    error_message = "alert_push_error_ratio: a fraction between 0 and 1 (exclusive)."
  }
}

variable "alert_push_error_window_seconds" {
  description = "Window of the push error ratio (the alignment period of both counts); the ratio must stay above its threshold for as long."
  type        = number
  default     = 300
  validation {
    condition     = var.alert_push_error_window_seconds >= 60
    error_message = "alert_push_error_window_seconds: at least 60."
  }
}
