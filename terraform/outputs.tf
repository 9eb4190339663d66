output "service_url" {
  description = "URL of the Cloud Run service (the push endpoint)."
  value       = google_cloud_run_v2_service.bridge.uri
}

output "subscription_name" {
  description = "Full name of the push subscription."
  value       = google_pubsub_subscription.push.id
}

output "runtime_service_account" {
  description = "Email of the service account the bridge runs as."
  value       = google_service_account.runtime.email
}

output "push_service_account" {
  description = "Email of the service account Pub/Sub signs push tokens as (OIDC_ALLOWED_EMAILS)."
  value       = google_service_account.push.email
}

output "audience" {
  description = "Audience of the push tokens (OIDC_AUDIENCE)."
  value       = local.audience
}

output "dead_letter_topic" {
  description = "Pub/Sub topic receiving messages after max_delivery_attempts."
  value       = google_pubsub_topic.dead_letter.id
}

output "dead_letter_subscription" {
  description = "Subscription holding the dead letters (inspect or replay them from here)."
  value       = google_pubsub_subscription.dead_letter.id
}

output "monitoring_dashboard" {
  description = "Id of the Cloud Monitoring dashboard (null with monitoring = false)."
  value       = var.monitoring ? google_monitoring_dashboard.bridge[0].id : null
}

output "alert_policies" {
  description = "Names of the alert policies (empty with monitoring = false)."
  value = concat(
    google_monitoring_alert_policy.oldest_unacked_message_age[*].name,
    google_monitoring_alert_policy.dead_letters[*].name,
    google_monitoring_alert_policy.push_error_ratio[*].name,
  )
}
