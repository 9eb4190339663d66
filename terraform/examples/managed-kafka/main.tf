# The Google-native pipeline in one apply: Pub/Sub topic → push subscription → the bridge on
# Cloud Run (Direct VPC egress into the cluster's network) → Google Managed Service for Apache
# Kafka, authenticated with OAUTHBEARER as the bridge's own service account. No password.
#
#   terraform apply -var project_id=PROJECT -var image=REGION-docker.pkg.dev/PROJECT/REPO/pubsub-kafka-bridge:TAG
#
# By default a cluster (3 vCPU, 3 GiB) and a topic are created in the `default` network's
# subnet of the region; set existing_cluster_id to use a cluster you already have (its topic
# must exist, or set create_topic = true). Creating a cluster takes 20-30 minutes.

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
  description = "Google Cloud project (of the cluster, the service and the subscription)."
  type        = string
}

variable "region" {
  description = "Region of the cluster and the Cloud Run service (they must match for Direct VPC egress)."
  type        = string
  default     = "europe-west1"
}

variable "image" {
  description = "Image built from infra/Dockerfile and pushed to Artifact Registry."
  type        = string
}

variable "network" {
  description = "VPC network the cluster and the bridge share."
  type        = string
  default     = "default"
}

variable "subnetwork" {
  description = "Subnetwork (in var.region) where the cluster's addresses and the bridge's Direct VPC egress live."
  type        = string
  default     = "default"
}

variable "existing_cluster_id" {
  description = "Id of an existing GMK cluster in var.region; empty creates one named cluster_id."
  type        = string
  default     = ""
}

variable "cluster_id" {
  description = "Id of the cluster to create."
  type        = string
  default     = "pubsub-bridge"
}

variable "create_topic" {
  description = "Create the Kafka topic (always true for a created cluster)."
  type        = bool
  default     = true
}

variable "kafka_topic" {
  description = "Kafka topic the messages go to."
  type        = string
  default     = "pubsub.events"
}

variable "partitions" {
  description = "Partitions of a created topic."
  type        = number
  default     = 3
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

locals {
  cluster_id = var.existing_cluster_id != "" ? var.existing_cluster_id : var.cluster_id
  # GMK's bootstrap address, "bootstrap.CLUSTER.REGION.managedkafka.PROJECT.cloud.goog:9092":
  # known at plan time, resolvable only inside the cluster's network.
  bootstrap = "bootstrap.${local.cluster_id}.${var.region}.managedkafka.${var.project_id}.cloud.goog:9092"
}

resource "google_project_service" "enabled" {
  for_each = toset([
    "cloudresourcemanager.googleapis.com",
    "compute.googleapis.com",
    "iam.googleapis.com",
    "managedkafka.googleapis.com",
    "monitoring.googleapis.com",
    "pubsub.googleapis.com",
    "run.googleapis.com",
  ])
  project            = var.project_id
  service            = each.value
  disable_on_destroy = false
}

resource "google_managed_kafka_cluster" "cluster" {
  count      = var.existing_cluster_id == "" ? 1 : 0
  project    = var.project_id
  cluster_id = var.cluster_id
  location   = var.region
  capacity_config {
    vcpu_count   = 3
    memory_bytes = 3221225472
  }
  gcp_config {
    access_config {
      network_configs {
        subnet = "projects/${var.project_id}/regions/${var.region}/subnetworks/${var.subnetwork}"
      }
    }
  }
  rebalance_config {
    mode = "AUTO_REBALANCE_ON_SCALE_UP"
  }
  depends_on = [google_project_service.enabled]
}

resource "google_managed_kafka_topic" "events" {
  count              = var.existing_cluster_id == "" || var.create_topic ? 1 : 0
  project            = var.project_id
  location           = var.region
  cluster            = local.cluster_id
  topic_id           = var.kafka_topic
  partition_count    = var.partitions
  replication_factor = 3
  depends_on         = [google_managed_kafka_cluster.cluster]
}

resource "google_pubsub_topic" "events" {
  # checkov:skip=CKV_GCP_83: example topic with Google-managed encryption; set kms_key_name for CMEK.
  project    = var.project_id
  name       = "events"
  depends_on = [google_project_service.enabled]
}

module "bridge" {
  source = "../.."

  project_id   = var.project_id
  region       = var.region
  name         = "events-to-gmk"
  image        = var.image
  pubsub_topic = google_pubsub_topic.events.id

  kafka_bootstrap_servers = local.bootstrap
  kafka_topic             = var.kafka_topic
  kafka_security_protocol = "SASL_SSL"
  # The token is the runtime service account's, in GMK's format (src/kafka/oauth.rs).
  kafka_sasl_mechanism  = "OAUTHBEARER"
  runtime_project_roles = ["roles/managedkafka.client"]

  vpc_network    = var.network
  vpc_subnetwork = var.subnetwork

  monitoring            = var.monitoring
  notification_channels = var.notification_channels

  depends_on = [google_project_service.enabled, google_managed_kafka_topic.events]
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

output "kafka_bootstrap" {
  description = "Bootstrap address of the cluster."
  value       = local.bootstrap
}

output "runtime_service_account" {
  description = "The Kafka principal of the bridge (User:SERVICE_ACCOUNT for ACLs)."
  value       = module.bridge.runtime_service_account
}
