# A complete deployment: a Pub/Sub topic, its messages pushed into a Kafka topic of a
# Confluent Cloud (or any SASL_SSL) cluster. The Kafka password lives in Secret Manager;
# add its value once, out of band:
#   printf '%s' "$KAFKA_API_SECRET" | gcloud secrets versions add kafka-password --data-file=-

terraform {
  required_version = ">= 1.5"
  required_providers {
    google = {
      source  = "hashicorp/google"
      version = ">= 6.0, < 8.0"
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

resource "google_pubsub_topic" "events" {
  # checkov:skip=CKV_GCP_83: example topic with Google-managed encryption; set kms_key_name for CMEK.
  name = "events"
}

resource "google_secret_manager_secret" "kafka_password" {
  secret_id = "kafka-password"
  replication {
    auto {}
  }
}

module "bridge" {
  source = "../.."

  project_id   = var.project_id
  region       = var.region
  name         = "events-to-kafka"
  image        = var.image
  pubsub_topic = google_pubsub_topic.events.id

  kafka_bootstrap_servers    = var.kafka_bootstrap_servers
  kafka_topic                = "pubsub.events"
  kafka_security_protocol    = "SASL_SSL"
  kafka_sasl_mechanism       = "PLAIN"
  kafka_sasl_username        = var.kafka_username
  kafka_sasl_password_secret = google_secret_manager_secret.kafka_password.id

  min_instances    = 0
  max_instances    = 5
  message_ordering = true
}

output "service_url" {
  description = "The push endpoint."
  value       = module.bridge.service_url
}

output "subscription" {
  description = "The push subscription."
  value       = module.bridge.subscription_name
}

output "push_service_account" {
  description = "Service account in push tokens."
  value       = module.bridge.push_service_account
}
