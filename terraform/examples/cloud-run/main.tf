# A complete deployment on a fresh project: a Pub/Sub topic whose messages are pushed into a
# Kafka topic of a Confluent Cloud (or any SASL_SSL) cluster.
#
# The Kafka password lives in Secret Manager. Two ways, pick one:
#  - (default) create the secret and its first version before apply, out of band, so the
#    password never enters Terraform state:
#      gcloud secrets create kafka-password --replication-policy=automatic --data-file=- <<< "$KAFKA_API_SECRET"
#  - or set create_kafka_password_secret = true and pass kafka_password (TF_VAR_kafka_password):
#    Terraform creates the secret and version, and the password is stored in Terraform state
#    (encrypt and restrict your state backend).
# Pin a version with kafka_password_secret_version; "latest" follows rotations on the next
# revision.

terraform {
  required_version = ">= 1.5"
  required_providers {
    google = {
      source  = "hashicorp/google"
      version = ">= 6.50, < 7.0"
    }
  }
}

provider "google" {
  project = var.project_id
  region  = var.region
}

variable "project_id" {
  description = "Google Cloud project."
  type        = string
}

variable "region" {
  description = "Region of the Cloud Run service."
  type        = string
  default     = "europe-west1"
}

variable "image" {
  description = "Image built from infra/Dockerfile and pushed to Artifact Registry."
  type        = string
}

variable "kafka_bootstrap_servers" {
  description = "Bootstrap servers of the Kafka cluster."
  type        = string
}

variable "kafka_username" {
  description = "SASL user name (Confluent Cloud: the API key)."
  type        = string
}

variable "kafka_password_secret" {
  description = "Name of the Secret Manager secret holding the SASL password."
  type        = string
  default     = "kafka-password"
}

variable "kafka_password_secret_version" {
  description = "Version of that secret the service reads (\"latest\" or a number)."
  type        = string
  default     = "latest"
}

variable "create_kafka_password_secret" {
  description = "Create the secret and its version from kafka_password (the password is then in Terraform state)."
  type        = bool
  default     = false
}

variable "kafka_password" {
  description = "SASL password, only with create_kafka_password_secret = true."
  type        = string
  default     = null
  sensitive   = true
}

variable "monitoring" {
  description = "Create the dashboard and the alert policies (docs/operations.md)."
  type        = bool
  default     = true
}

variable "notification_channels" {
  description = "Notification channel ids (projects/P/notificationChannels/N) the alerts notify, e.g. an email channel created with `gcloud beta monitoring channels create`."
  type        = list(string)
  default     = []
}

# Two kinds of event share the Pub/Sub topic: orders and refunds go to their own Kafka topics (keyed
# by the id in their JSON payload), test events are dropped, anything else goes to kafka_topic.
# The attribute checks use has(): reading an absent attribute fails the rule (route_failed). The
# Kafka topics must exist, like kafka_topic; `pubsub-kafka-bridge check` lists those missing.
variable "routes" {
  description = "Routing rules (docs/routing.md); [] sends everything to kafka_topic."
  type = list(object({
    when      = optional(string)
    topic     = optional(string)
    drop      = optional(bool)
    key       = optional(string)
    headers   = optional(map(string))
    timestamp = optional(string)
  }))
  default = [
    { when = "has(attributes.test) && attributes.test == \"true\"", drop = true },
    { when = "has(attributes.type) && attributes.type == \"order\"", topic = "orders", key = "json.order_id" },
    { when = "has(attributes.type) && attributes.type == \"refund\"", topic = "refunds", key = "json.order_id" },
  ]
}

# A fresh project has these APIs off; the apply needs them. Never disabled on destroy: other
# workloads of the project may use them.
resource "google_project_service" "enabled" {
  for_each = toset([
    "cloudresourcemanager.googleapis.com",
    "iam.googleapis.com",
    "monitoring.googleapis.com",
    "run.googleapis.com",
    "pubsub.googleapis.com",
    "secretmanager.googleapis.com",
  ])
  project            = var.project_id
  service            = each.value
  disable_on_destroy = false
}

resource "google_pubsub_topic" "events" {
  # checkov:skip=CKV_GCP_83: example topic with Google-managed encryption; set kms_key_name for CMEK.
  name       = "events"
  depends_on = [google_project_service.enabled]
}

resource "google_secret_manager_secret" "kafka_password" {
  count     = var.create_kafka_password_secret ? 1 : 0
  secret_id = var.kafka_password_secret
  replication {
    auto {}
  }
  depends_on = [google_project_service.enabled]
}

resource "google_secret_manager_secret_version" "kafka_password" {
  count       = var.create_kafka_password_secret ? 1 : 0
  secret      = google_secret_manager_secret.kafka_password[0].id
  secret_data = var.kafka_password
  lifecycle {
    precondition {
      condition     = var.kafka_password != null
      error_message = "create_kafka_password_secret = true needs kafka_password (TF_VAR_kafka_password)."
    }
  }
}

module "bridge" {
  source = "../.."

  project_id   = var.project_id
  region       = var.region
  name         = "events-to-kafka"
  image        = var.image
  pubsub_topic = google_pubsub_topic.events.id

  kafka_bootstrap_servers            = var.kafka_bootstrap_servers
  kafka_topic                        = "pubsub.events"
  kafka_security_protocol            = "SASL_SSL"
  kafka_sasl_mechanism               = "PLAIN"
  kafka_sasl_username                = var.kafka_username
  kafka_sasl_password_secret         = var.kafka_password_secret
  kafka_sasl_password_secret_version = var.kafka_password_secret_version

  min_instances    = 0
  max_instances    = 5
  message_ordering = true

  routes                = var.routes
  monitoring            = var.monitoring
  notification_channels = var.notification_channels

  depends_on = [
    google_project_service.enabled,
    google_secret_manager_secret.kafka_password,
    google_secret_manager_secret_version.kafka_password,
  ]
}

output "service_url" {
  description = "The push endpoint."
  value       = module.bridge.service_url
}

output "subscription" {
  description = "The push subscription."
  value       = module.bridge.subscription_name
}

output "dead_letter_subscription" {
  description = "Where dead letters are kept."
  value       = module.bridge.dead_letter_subscription
}

output "push_service_account" {
  description = "Service account in push tokens."
  value       = module.bridge.push_service_account
}
