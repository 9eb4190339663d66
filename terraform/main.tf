# pubsub-kafka-bridge on Cloud Run, fed by a Pub/Sub push subscription with OIDC tokens.
#
#   Pub/Sub topic ──push (OIDC token: push SA, audience)──> Cloud Run service (runtime SA) ──> Kafka
#        │                                                        ▲
#        └─ dead-letter topic after max_delivery_attempts          └─ run.invoker: push SA only
#              └─ dead-letter subscription (kept, replayable)
#
# Cloud Run verifies the push token itself (run.invoker) and forwards it with its signature
# replaced by SIGNATURE_REMOVED_BY_GOOGLE; the bridge then checks its claims
# (OIDC_TRUST_CLOUD_RUN_IAM, with the push account as the only allowed email).
#
# Every count and for_each here depends only on variables: callers must pass names known at
# plan time (a secret's name, not a resource's id), or a first `terraform apply` stops with
# "Invalid count argument".

data "google_project" "this" {
  project_id = var.project_id
}

locals {
  audience     = var.audience != "" ? var.audience : "https://${var.name}.pubsub-kafka-bridge.invalid"
  pubsub_agent = "serviceAccount:service-${data.google_project.this.number}@gcp-sa-pubsub.iam.gserviceaccount.com"
  use_vpc      = var.vpc_network != "" || var.vpc_subnetwork != ""
  # Google documents connection delays "of a minute or more" at instance startup with Direct
  # VPC egress (Cloud Run, "Direct VPC egress", Limitations), and fresh IAM grants take
  # minutes to propagate; Cloud Run caps a startup probe's period x failure threshold at 240 s.
  startup_probe_budget = coalesce(var.startup_probe_budget_seconds, 240)
  startup_probe_period = 2
  # /healthz reports a stall after 6 x KAFKA_REQUEST_TIMEOUT_MS (30 s at the default 5 s);
  # Cloud Run restarts after this many failed probes more (see the liveness probe).
  liveness_probe_period   = 10
  liveness_probe_failures = 3
  password_secret = var.kafka_sasl_password_secret == "" ? null : (
    startswith(var.kafka_sasl_password_secret, "projects/")
    ? var.kafka_sasl_password_secret
    : "projects/${var.project_id}/secrets/${var.kafka_sasl_password_secret}"
  )

  # The in-flight memory budget the bridge would derive from its cgroup limit, computed from the
  # instance's memory here so it holds whatever the sandbox exposes: (MiB - 48) / 4, at least
  # 16 MiB (one largest body). "256Mi" -> 52 MiB.
  memory_mib = (
    endswith(var.memory, "Gi") ? tonumber(trimsuffix(var.memory, "Gi")) * 1024 : tonumber(trimsuffix(var.memory, "Mi"))
  )
  inflight_bytes = max(floor((local.memory_mib - 48) / 4), 16) * 1048576

  # The settings the wiring depends on; tests/terraform reads them from here.
  core_env = {
    KAFKA_BOOTSTRAP_SERVERS  = var.kafka_bootstrap_servers
    KAFKA_KEY                = var.kafka_key
    KAFKA_VALUE_FORMAT       = var.kafka_value_format
    KAFKA_COMPRESSION        = var.kafka_compression
    KAFKA_PRODUCE_TIMEOUT_MS = tostring(var.kafka_produce_timeout_ms)
    KAFKA_SECURITY_PROTOCOL  = var.kafka_security_protocol
    OIDC_AUDIENCE            = local.audience
    OIDC_ALLOWED_EMAILS      = google_service_account.push.email
    OIDC_TRUST_CLOUD_RUN_IAM = "true"
    GOOGLE_CLOUD_PROJECT     = var.project_id
    LOG_FORMAT               = "json"
    MAX_INFLIGHT_BYTES       = tostring(local.inflight_bytes)
  }

  # ROUTES is the rules' JSON (docs/routing.md): attributes left null are left out, so a rule carries
  # only what was given; a null header value stays (it removes that header).
  routes = [for rule in var.routes : { for field, value in rule : field => value if value != null }]
  # Each names where records go; the bridge refuses to start with ROUTES beside either of the others.
  routing_env_vars = ["ROUTES", "ROUTES_FILE", "KAFKA_TOPIC_BY_SUBSCRIPTION"]

  env = merge(
    local.core_env,
    var.kafka_topic == "" ? {} : { KAFKA_TOPIC = var.kafka_topic },
    length(var.routes) == 0 ? {} : { ROUTES = jsonencode(local.routes) },
    var.kafka_dlq_topic == "" ? {} : { KAFKA_DLQ_TOPIC = var.kafka_dlq_topic },
    var.kafka_sasl_mechanism == "" ? {} : { KAFKA_SASL_MECHANISM = var.kafka_sasl_mechanism },
    var.kafka_sasl_username == "" ? {} : { KAFKA_SASL_USERNAME = var.kafka_sasl_username },
    # The bridge reads the password from Secret Manager when it connects, not Cloud Run at
    # deploy time: a revision never fails to deploy while the accessor grant propagates or
    # before the secret has a version.
    var.kafka_sasl_password_secret == "" ? {} : {
      KAFKA_SASL_PASSWORD_SECRET = "${local.password_secret}/versions/${var.kafka_sasl_password_secret_version}"
    },
    var.extra_env,
  )
}

# The identity the bridge runs as: it needs nothing but its own secrets.
resource "google_service_account" "runtime" {
  project      = var.project_id
  account_id   = "${substr(var.name, 0, 22)}-run"
  display_name = "${var.name}: Cloud Run runtime"
}

# The identity Pub/Sub signs push tokens as; the only invoker of the service.
resource "google_service_account" "push" {
  project      = var.project_id
  account_id   = "${substr(var.name, 0, 21)}-push"
  display_name = "${var.name}: Pub/Sub push invoker"
}

resource "google_secret_manager_secret_iam_member" "runtime_reads_password" {
  count     = var.kafka_sasl_password_secret == "" ? 0 : 1
  secret_id = local.password_secret
  role      = "roles/secretmanager.secretAccessor"
  member    = "serviceAccount:${google_service_account.runtime.email}"
}

# KAFKA_VALUE_FORMAT=pubsub-schema reads each message's schema revision
# (projects.schemas.get, permission pubsub.schemas.get, held by roles/pubsub.viewer:
# https://cloud.google.com/pubsub/docs/access-control) with the runtime account's token.
resource "google_pubsub_schema_iam_member" "runtime_reads_schemas" {
  for_each = var.kafka_value_format == "pubsub-schema" ? toset(var.pubsub_schemas) : toset([])
  project  = split("/", each.value)[1]
  schema   = split("/", each.value)[3]
  role     = "roles/pubsub.viewer"
  member   = "serviceAccount:${google_service_account.runtime.email}"
}

# Project roles the bridge needs to reach Kafka at startup (roles/managedkafka.client for
# Google Managed Kafka): granted before the service, whose startup probe needs Kafka.
resource "google_project_iam_member" "runtime_project_roles" {
  for_each = toset(var.runtime_project_roles)
  project  = var.project_id
  role     = each.value
  member   = "serviceAccount:${google_service_account.runtime.email}"
}

resource "google_cloud_run_v2_service" "bridge" {
  project             = var.project_id
  name                = var.name
  location            = var.region
  ingress             = var.ingress
  deletion_protection = false
  # Cloud Run's own IAM check accepts push tokens whose audience is this value.
  custom_audiences = [local.audience]

  template {
    service_account                  = google_service_account.runtime.email
    max_instance_request_concurrency = var.concurrency
    timeout                          = "${var.request_timeout_seconds}s"

    scaling {
      min_instance_count = var.min_instances
      max_instance_count = var.max_instances
    }

    dynamic "vpc_access" {
      for_each = local.use_vpc ? [1] : []
      content {
        egress = "PRIVATE_RANGES_ONLY"
        network_interfaces {
          network    = var.vpc_network != "" ? var.vpc_network : null
          subnetwork = var.vpc_subnetwork != "" ? var.vpc_subnetwork : null
        }
      }
    }

    containers {
      image = var.image

      ports {
        container_port = 8080
      }

      resources {
        limits = {
          cpu    = var.cpu
          memory = var.memory
        }
        cpu_idle          = true
        startup_cpu_boost = true
      }

      dynamic "env" {
        for_each = local.env
        content {
          name  = env.key
          value = env.value
        }
      }

      # Ready once Kafka metadata was read: no traffic reaches an instance that cannot produce.
      startup_probe {
        initial_delay_seconds = 0
        period_seconds        = local.startup_probe_period
        timeout_seconds       = 1
        failure_threshold     = ceil(local.startup_probe_budget / local.startup_probe_period)
        http_get {
          path = "/readyz"
        }
      }

      # Liveness checks start once the startup probe passed, so a cluster unreachable at cold
      # start never restarts an instance here. /healthz fails when the bridge's Kafka client
      # cannot make progress: its connection task is down, or Kafka has not answered for
      # 6 x KAFKA_REQUEST_TIMEOUT_MS (30 s by default) while deliveries failed. Three failures
      # 10 s apart add 30 s, so a client that repairs itself (a silent connection is replaced
      # within about one request timeout) is never restarted.
      liveness_probe {
        period_seconds    = local.liveness_probe_period
        timeout_seconds   = 1
        failure_threshold = local.liveness_probe_failures
        http_get {
          path = "/healthz"
        }
      }
    }
  }

  lifecycle {
    precondition {
      condition     = length(var.routes) == 0 || length(setintersection(keys(var.extra_env), local.routing_env_vars)) == 0
      error_message = "routes replaces ROUTES, ROUTES_FILE and KAFKA_TOPIC_BY_SUBSCRIPTION: remove them from extra_env (`subscription` is a variable the rules can read)."
    }
    precondition {
      condition     = var.kafka_topic != "" || length(var.routes) > 0 || contains(keys(var.extra_env), "KAFKA_TOPIC_BY_SUBSCRIPTION")
      error_message = "kafka_topic may be empty only with routes: records need a topic."
    }
  }

  # The grants exist before the first revision. They may still be propagating when it starts:
  # the bridge retries reading its password and connecting to Kafka (IAM denials included)
  # and turns ready once both work, within the startup probe's budget.
  depends_on = [
    google_secret_manager_secret_iam_member.runtime_reads_password,
    google_project_iam_member.runtime_project_roles,
  ]
}

# Only the push service account may call the service; it is not public.
resource "google_cloud_run_v2_service_iam_member" "push_invokes" {
  project  = var.project_id
  location = var.region
  name     = google_cloud_run_v2_service.bridge.name
  role     = "roles/run.invoker"
  member   = "serviceAccount:${google_service_account.push.email}"
}

# Pub/Sub's service agent mints the push SA's OIDC tokens.
resource "google_service_account_iam_member" "pubsub_agent_mints_push_tokens" {
  service_account_id = google_service_account.push.name
  role               = "roles/iam.serviceAccountTokenCreator"
  member             = local.pubsub_agent
}

# With CMEK, Pub/Sub's service agent encrypts and decrypts the topic's messages with the key;
# without this role, creating the topic fails. Set grant_kms_key_role = false when the key's
# IAM is managed elsewhere (the role must then be granted before apply).
resource "google_kms_crypto_key_iam_member" "pubsub_agent_uses_key" {
  count         = var.kms_key_name != "" && var.grant_kms_key_role ? 1 : 0
  crypto_key_id = var.kms_key_name
  role          = "roles/cloudkms.cryptoKeyEncrypterDecrypter"
  member        = local.pubsub_agent
}

resource "google_pubsub_topic" "dead_letter" {
  # checkov:skip=CKV_GCP_83: Pub/Sub encrypts at rest with Google-managed keys; kms_key_name opts into CMEK.
  project      = var.project_id
  name         = "${var.name}-dead-letter"
  kms_key_name = var.kms_key_name != "" ? var.kms_key_name : null
  depends_on   = [google_kms_crypto_key_iam_member.pubsub_agent_uses_key]
}

# Pub/Sub drops messages published to a topic without subscriptions: this one keeps every
# dead letter (for message_retention of the dead letters) so it can be inspected and replayed.
resource "google_pubsub_subscription" "dead_letter" {
  project                    = var.project_id
  name                       = "${var.name}-dead-letter"
  topic                      = google_pubsub_topic.dead_letter.id
  message_retention_duration = var.dead_letter_retention
  ack_deadline_seconds       = 60
  expiration_policy {
    ttl = ""
  }
}

resource "google_pubsub_subscription" "push" {
  project                 = var.project_id
  name                    = "${var.name}-push"
  topic                   = var.pubsub_topic
  ack_deadline_seconds    = var.ack_deadline_seconds
  enable_message_ordering = var.message_ordering

  # Never expire: by default a subscription without activity deletes itself after 31 days,
  # and messages published meanwhile would be lost.
  expiration_policy {
    ttl = ""
  }

  push_config {
    push_endpoint = google_cloud_run_v2_service.bridge.uri
    oidc_token {
      service_account_email = google_service_account.push.email
      audience              = local.audience
    }
    dynamic "no_wrapper" {
      for_each = var.no_wrapper ? [1] : []
      content {
        write_metadata = true
      }
    }
  }

  retry_policy {
    minimum_backoff = var.retry_minimum_backoff
    maximum_backoff = var.retry_maximum_backoff
  }

  dead_letter_policy {
    dead_letter_topic     = google_pubsub_topic.dead_letter.id
    max_delivery_attempts = var.max_delivery_attempts
  }

  lifecycle {
    precondition {
      condition     = var.ack_deadline_seconds * 1000 > var.kafka_produce_timeout_ms
      error_message = "ack_deadline_seconds must exceed kafka_produce_timeout_ms, or Pub/Sub redelivers while the bridge still waits for Kafka."
    }
    precondition {
      condition     = var.request_timeout_seconds * 1000 > var.kafka_produce_timeout_ms
      error_message = "request_timeout_seconds must exceed kafka_produce_timeout_ms."
    }
  }

  depends_on = [
    google_cloud_run_v2_service_iam_member.push_invokes,
    google_service_account_iam_member.pubsub_agent_mints_push_tokens,
    google_pubsub_subscription.dead_letter,
  ]
}

# The dead-letter policy needs the Pub/Sub service agent to publish to the dead-letter topic
# and to subscribe to (acknowledge on) the source subscription.
resource "google_pubsub_topic_iam_member" "pubsub_agent_publishes_dead_letters" {
  project = var.project_id
  topic   = google_pubsub_topic.dead_letter.name
  role    = "roles/pubsub.publisher"
  member  = local.pubsub_agent
}

resource "google_pubsub_subscription_iam_member" "pubsub_agent_acks_dead_letters" {
  project      = var.project_id
  subscription = google_pubsub_subscription.push.name
  role         = "roles/pubsub.subscriber"
  member       = local.pubsub_agent
}
