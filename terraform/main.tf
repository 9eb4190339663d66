# pubsub-kafka-bridge on Cloud Run, fed by a Pub/Sub push subscription with OIDC tokens.
#
#   Pub/Sub topic ──push (OIDC token: push SA, audience)──> Cloud Run service (runtime SA) ──> Kafka
#        │                                                        ▲
#        └─ dead-letter topic after max_delivery_attempts          └─ run.invoker: push SA only

data "google_project" "this" {
  project_id = var.project_id
}

locals {
  audience     = var.audience != "" ? var.audience : "https://${var.name}.pubsub-kafka-bridge.invalid"
  pubsub_agent = "serviceAccount:service-${data.google_project.this.number}@gcp-sa-pubsub.iam.gserviceaccount.com"
  use_vpc      = var.vpc_network != "" || var.vpc_subnetwork != ""
  password_secret = var.kafka_sasl_password_secret == "" ? null : (
    startswith(var.kafka_sasl_password_secret, "projects/")
    ? var.kafka_sasl_password_secret
    : "projects/${var.project_id}/secrets/${var.kafka_sasl_password_secret}"
  )

  # The settings the wiring depends on; tests/terraform reads them from here.
  core_env = {
    KAFKA_BOOTSTRAP_SERVERS  = var.kafka_bootstrap_servers
    KAFKA_TOPIC              = var.kafka_topic
    KAFKA_KEY                = var.kafka_key
    KAFKA_VALUE_FORMAT       = var.kafka_value_format
    KAFKA_COMPRESSION        = var.kafka_compression
    KAFKA_PRODUCE_TIMEOUT_MS = tostring(var.kafka_produce_timeout_ms)
    KAFKA_SECURITY_PROTOCOL  = var.kafka_security_protocol
    OIDC_AUDIENCE            = local.audience
    OIDC_ALLOWED_EMAILS      = google_service_account.push.email
    GOOGLE_CLOUD_PROJECT     = var.project_id
    LOG_FORMAT               = "json"
  }

  env = merge(
    local.core_env,
    var.kafka_dlq_topic == "" ? {} : { KAFKA_DLQ_TOPIC = var.kafka_dlq_topic },
    var.kafka_sasl_mechanism == "" ? {} : { KAFKA_SASL_MECHANISM = var.kafka_sasl_mechanism },
    var.kafka_sasl_username == "" ? {} : { KAFKA_SASL_USERNAME = var.kafka_sasl_username },
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
  count     = local.password_secret == null ? 0 : 1
  secret_id = local.password_secret
  role      = "roles/secretmanager.secretAccessor"
  member    = "serviceAccount:${google_service_account.runtime.email}"
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

      dynamic "env" {
        for_each = local.password_secret == null ? [] : [local.password_secret]
        content {
          name = "KAFKA_SASL_PASSWORD"
          value_source {
            secret_key_ref {
              secret  = env.value
              version = var.kafka_sasl_password_secret_version
            }
          }
        }
      }

      # Ready once Kafka metadata was read: no traffic reaches an instance that cannot produce.
      startup_probe {
        initial_delay_seconds = 0
        period_seconds        = 1
        timeout_seconds       = 1
        failure_threshold     = 30
        http_get {
          path = "/readyz"
        }
      }

      liveness_probe {
        period_seconds    = 10
        timeout_seconds   = 1
        failure_threshold = 3
        http_get {
          path = "/healthz"
        }
      }
    }
  }

  depends_on = [google_secret_manager_secret_iam_member.runtime_reads_password]
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

resource "google_pubsub_topic" "dead_letter" {
  # checkov:skip=CKV_GCP_83: Pub/Sub encrypts at rest with Google-managed keys; kms_key_name opts into CMEK.
  project      = var.project_id
  name         = "${var.name}-dead-letter"
  kms_key_name = var.kms_key_name != "" ? var.kms_key_name : null
}

resource "google_pubsub_subscription" "push" {
  project                 = var.project_id
  name                    = "${var.name}-push"
  topic                   = var.pubsub_topic
  ack_deadline_seconds    = var.ack_deadline_seconds
  enable_message_ordering = var.message_ordering

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

  depends_on = [google_cloud_run_v2_service_iam_member.push_invokes]
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
