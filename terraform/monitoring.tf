# The bridge seen from Google's side: Pub/Sub's push metrics (what Pub/Sub got back, how old the
# oldest waiting message is, how many dead letters wait) and Cloud Run's (requests, latency,
# instances, CPU, memory). docs/operations.md describes every tile and what to do on every alert.
#
# Metric types, their labels and units: Google Cloud metrics, "pubsub" and "run"
# (https://cloud.google.com/monitoring/api/metrics_gcp_p_z#gcp-pubsub and #gcp-run). The values of
# push_request_count's response_class (ack, deadline_exceeded, invalid, remote_server_4xx,
# remote_server_5xx, unreachable): https://cloud.google.com/pubsub/docs/push-troubleshooting.
# Filter syntax (=, !=, AND): https://cloud.google.com/monitoring/api/v3/filters. A ratio without
# MQL or PromQL: MetricThreshold.denominatorFilter, whose aggregations must produce series with the
# same labels and period as the numerator's
# (https://cloud.google.com/monitoring/api/ref_v3/rest/v3/projects.alertPolicies#MetricThreshold).
# tests/terraform/test_wiring.py keeps every metric type and label used here on an allow-list.

locals {
  push_subscription = "resource.type = \"pubsub_subscription\" AND resource.label.subscription_id = \"${google_pubsub_subscription.push.name}\""
  dead_letter       = "resource.type = \"pubsub_subscription\" AND resource.label.subscription_id = \"${google_pubsub_subscription.dead_letter.name}\""
  cloud_run_service = "resource.type = \"cloud_run_revision\" AND resource.label.service_name = \"${google_cloud_run_v2_service.bridge.name}\" AND resource.label.location = \"${var.region}\""

  # Every filter the dashboard and the alert policies use.
  monitoring_filters = {
    # DELTA INT64: push attempts, labelled by response_class and response_code.
    push_requests = "metric.type = \"pubsub.googleapis.com/subscription/push_request_count\" AND ${local.push_subscription}"
    # The attempts Pub/Sub did not count as acknowledged (any response_class but ack).
    push_errors = "metric.type = \"pubsub.googleapis.com/subscription/push_request_count\" AND metric.label.response_class != \"ack\" AND ${local.push_subscription}"
    # DELTA DISTRIBUTION in microseconds: how long the bridge took to answer a push.
    push_latencies = "metric.type = \"pubsub.googleapis.com/subscription/push_request_latencies\" AND ${local.push_subscription}"
    # GAUGE INT64 in seconds, sampled every 60 s.
    oldest_unacked_age = "metric.type = \"pubsub.googleapis.com/subscription/oldest_unacked_message_age\" AND ${local.push_subscription}"
    # GAUGE INT64, sampled every 60 s: the backlog waiting for the bridge.
    backlog = "metric.type = \"pubsub.googleapis.com/subscription/num_undelivered_messages\" AND ${local.push_subscription}"
    # The same for the dead-letter subscription: dead letters kept for inspection and replay.
    dead_letters = "metric.type = \"pubsub.googleapis.com/subscription/num_undelivered_messages\" AND ${local.dead_letter}"
    # DELTA INT64, labelled by response_code_class (2xx, 4xx, 5xx).
    run_requests = "metric.type = \"run.googleapis.com/request_count\" AND ${local.cloud_run_service}"
    # DELTA DISTRIBUTION in milliseconds.
    run_latencies = "metric.type = \"run.googleapis.com/request_latencies\" AND ${local.cloud_run_service}"
    # GAUGE INT64, labelled by state (active, idle).
    run_instances = "metric.type = \"run.googleapis.com/container/instance_count\" AND ${local.cloud_run_service}"
    # DELTA DISTRIBUTION of fractions (0-1) over the instances.
    run_cpu    = "metric.type = \"run.googleapis.com/container/cpu/utilizations\" AND ${local.cloud_run_service}"
    run_memory = "metric.type = \"run.googleapis.com/container/memory/utilizations\" AND ${local.cloud_run_service}"
  }

  # Pub/Sub samples its gauges every 60 s: a shorter period only draws gaps.
  dashboard_period = "60s"
}

resource "google_monitoring_dashboard" "bridge" {
  count   = var.monitoring ? 1 : 0
  project = var.project_id
  dashboard_json = jsonencode({
    displayName = "${var.name}: Pub/Sub to Kafka"
    gridLayout = {
      columns = "2"
      widgets = [
        {
          title = "How to read this dashboard"
          text = {
            format  = "MARKDOWN"
            content = "Pub/Sub's view of the push subscription `${google_pubsub_subscription.push.name}` (top), then Cloud Run's view of the service `${google_cloud_run_v2_service.bridge.name}`. Every tile and every alert is explained in the bridge's docs/operations.md."
          }
        },
        {
          title = "Push requests by response class (Pub/Sub), per second"
          xyChart = {
            dataSets = [{
              plotType   = "STACKED_BAR"
              targetAxis = "Y1"
              timeSeriesQuery = {
                timeSeriesFilter = {
                  filter = local.monitoring_filters.push_requests
                  aggregation = {
                    alignmentPeriod    = local.dashboard_period
                    perSeriesAligner   = "ALIGN_RATE"
                    crossSeriesReducer = "REDUCE_SUM"
                    groupByFields      = ["metric.label.response_class"]
                  }
                }
              }
            }]
            yAxis = { label = "requests/s", scale = "LINEAR" }
          }
        },
        {
          title = "Push latency (Pub/Sub): p50, p95, p99"
          xyChart = {
            dataSets = [for percentile in ["50", "95", "99"] : {
              plotType       = "LINE"
              targetAxis     = "Y1"
              legendTemplate = "p${percentile}"
              timeSeriesQuery = {
                timeSeriesFilter = {
                  filter = local.monitoring_filters.push_latencies
                  aggregation = {
                    alignmentPeriod    = local.dashboard_period
                    perSeriesAligner   = "ALIGN_DELTA"
                    crossSeriesReducer = "REDUCE_PERCENTILE_${percentile}"
                  }
                }
              }
            }]
            yAxis = { label = "latency", scale = "LINEAR" }
          }
        },
        {
          title = "Oldest unacknowledged message age (push subscription)"
          xyChart = {
            dataSets = [{
              plotType   = "LINE"
              targetAxis = "Y1"
              timeSeriesQuery = {
                timeSeriesFilter = {
                  filter = local.monitoring_filters.oldest_unacked_age
                  aggregation = {
                    alignmentPeriod    = local.dashboard_period
                    perSeriesAligner   = "ALIGN_MAX"
                    crossSeriesReducer = "REDUCE_MAX"
                  }
                }
              }
            }]
            # The alert's threshold, drawn on the chart.
            thresholds = [{ value = var.alert_oldest_unacked_age_seconds, targetAxis = "Y1" }]
            yAxis      = { label = "seconds", scale = "LINEAR" }
          }
        },
        {
          title = "Undelivered messages (push subscription backlog)"
          xyChart = {
            dataSets = [{
              plotType   = "LINE"
              targetAxis = "Y1"
              timeSeriesQuery = {
                timeSeriesFilter = {
                  filter = local.monitoring_filters.backlog
                  aggregation = {
                    alignmentPeriod    = local.dashboard_period
                    perSeriesAligner   = "ALIGN_MAX"
                    crossSeriesReducer = "REDUCE_MAX"
                  }
                }
              }
            }]
            yAxis = { label = "messages", scale = "LINEAR" }
          }
        },
        {
          title = "Dead letters waiting (dead-letter subscription)"
          xyChart = {
            dataSets = [{
              plotType   = "LINE"
              targetAxis = "Y1"
              timeSeriesQuery = {
                timeSeriesFilter = {
                  filter = local.monitoring_filters.dead_letters
                  aggregation = {
                    alignmentPeriod    = local.dashboard_period
                    perSeriesAligner   = "ALIGN_MAX"
                    crossSeriesReducer = "REDUCE_MAX"
                  }
                }
              }
            }]
            thresholds = [{ value = 0, targetAxis = "Y1" }]
            yAxis      = { label = "messages", scale = "LINEAR" }
          }
        },
        {
          title = "Cloud Run requests by response code class, per second"
          xyChart = {
            dataSets = [{
              plotType   = "STACKED_BAR"
              targetAxis = "Y1"
              timeSeriesQuery = {
                timeSeriesFilter = {
                  filter = local.monitoring_filters.run_requests
                  aggregation = {
                    alignmentPeriod    = local.dashboard_period
                    perSeriesAligner   = "ALIGN_RATE"
                    crossSeriesReducer = "REDUCE_SUM"
                    groupByFields      = ["metric.label.response_code_class"]
                  }
                }
              }
            }]
            yAxis = { label = "requests/s", scale = "LINEAR" }
          }
        },
        {
          title = "Cloud Run request latency: p50, p95, p99"
          xyChart = {
            dataSets = [for percentile in ["50", "95", "99"] : {
              plotType       = "LINE"
              targetAxis     = "Y1"
              legendTemplate = "p${percentile}"
              timeSeriesQuery = {
                timeSeriesFilter = {
                  filter = local.monitoring_filters.run_latencies
                  aggregation = {
                    alignmentPeriod    = local.dashboard_period
                    perSeriesAligner   = "ALIGN_DELTA"
                    crossSeriesReducer = "REDUCE_PERCENTILE_${percentile}"
                  }
                }
              }
            }]
            yAxis = { label = "latency", scale = "LINEAR" }
          }
        },
        {
          title = "Cloud Run instances by state"
          xyChart = {
            dataSets = [{
              plotType   = "STACKED_AREA"
              targetAxis = "Y1"
              timeSeriesQuery = {
                timeSeriesFilter = {
                  filter = local.monitoring_filters.run_instances
                  aggregation = {
                    alignmentPeriod    = local.dashboard_period
                    perSeriesAligner   = "ALIGN_MAX"
                    crossSeriesReducer = "REDUCE_SUM"
                    groupByFields      = ["metric.label.state"]
                  }
                }
              }
            }]
            yAxis = { label = "instances", scale = "LINEAR" }
          }
        },
        {
          title = "Cloud Run CPU utilisation: p50, p99 over instances"
          xyChart = {
            dataSets = [for percentile in ["50", "99"] : {
              plotType       = "LINE"
              targetAxis     = "Y1"
              legendTemplate = "p${percentile}"
              timeSeriesQuery = {
                timeSeriesFilter = {
                  filter = local.monitoring_filters.run_cpu
                  aggregation = {
                    alignmentPeriod    = local.dashboard_period
                    perSeriesAligner   = "ALIGN_DELTA"
                    crossSeriesReducer = "REDUCE_PERCENTILE_${percentile}"
                  }
                }
              }
            }]
            yAxis = { label = "fraction of the CPU limit", scale = "LINEAR" }
          }
        },
        {
          title = "Cloud Run memory utilisation: p50, p99 over instances"
          xyChart = {
            dataSets = [for percentile in ["50", "99"] : {
              plotType       = "LINE"
              targetAxis     = "Y1"
              legendTemplate = "p${percentile}"
              timeSeriesQuery = {
                timeSeriesFilter = {
                  filter = local.monitoring_filters.run_memory
                  aggregation = {
                    alignmentPeriod    = local.dashboard_period
                    perSeriesAligner   = "ALIGN_DELTA"
                    crossSeriesReducer = "REDUCE_PERCENTILE_${percentile}"
                  }
                }
              }
            }]
            yAxis = { label = "fraction of the memory limit", scale = "LINEAR" }
          }
        },
      ]
    }
  })
}

# Messages wait: Kafka unreachable, the bridge answering 5xx, or one message failing again and
# again. Fires before Pub/Sub's dead-letter policy gives up on it.
resource "google_monitoring_alert_policy" "oldest_unacked_message_age" {
  count                 = var.monitoring ? 1 : 0
  project               = var.project_id
  display_name          = "${var.name}: messages wait in the push subscription"
  combiner              = "OR"
  severity              = "ERROR"
  notification_channels = var.notification_channels

  conditions {
    display_name = "oldest unacknowledged message older than ${var.alert_oldest_unacked_age_seconds} s"
    condition_threshold {
      filter          = local.monitoring_filters.oldest_unacked_age
      comparison      = "COMPARISON_GT"
      threshold_value = var.alert_oldest_unacked_age_seconds
      duration        = "${var.alert_oldest_unacked_duration_seconds}s"
      aggregations {
        alignment_period   = "60s"
        per_series_aligner = "ALIGN_MAX"
      }
      trigger {
        count = 1
      }
    }
  }

  documentation {
    mime_type = "text/markdown"
    subject   = "${var.name}: Pub/Sub messages are not being acknowledged"
    content   = "The subscription `${google_pubsub_subscription.push.name}` holds a message older than ${var.alert_oldest_unacked_age_seconds} s: the bridge does not acknowledge it. Look at the dashboard's push requests by response class, then the bridge's `delivery failed` log lines. Runbook: docs/operations.md, \"Oldest unacknowledged message age\"."
  }

  alert_strategy {
    auto_close = "1800s"
  }
}

# Pub/Sub gave up on a message after max_delivery_attempts: it waits in the dead-letter
# subscription (for dead_letter_retention) until someone looks at it.
resource "google_monitoring_alert_policy" "dead_letters" {
  count                 = var.monitoring ? 1 : 0
  project               = var.project_id
  display_name          = "${var.name}: dead letters in the dead-letter subscription"
  combiner              = "OR"
  severity              = "WARNING"
  notification_channels = var.notification_channels

  conditions {
    display_name = "any message in ${google_pubsub_subscription.dead_letter.name}"
    condition_threshold {
      filter          = local.monitoring_filters.dead_letters
      comparison      = "COMPARISON_GT"
      threshold_value = 0
      duration        = "0s"
      aggregations {
        alignment_period   = "60s"
        per_series_aligner = "ALIGN_MAX"
      }
      trigger {
        count = 1
      }
    }
  }

  documentation {
    mime_type = "text/markdown"
    subject   = "${var.name}: Pub/Sub dead-lettered messages"
    content   = "Pub/Sub moved messages to `${google_pubsub_subscription.dead_letter.name}` after ${var.max_delivery_attempts} failed deliveries. They are kept for ${var.dead_letter_retention}. Runbook: docs/operations.md, \"Dead letters in the dead-letter subscription\"."
  }

  alert_strategy {
    auto_close = "1800s"
  }
}

# Pub/Sub's own count of push attempts not acknowledged (any response class but ack: the bridge's
# non-2xx answers, timeouts, an unreachable endpoint) over all attempts. Only Pub/Sub sees
# deadline_exceeded and unreachable; the bridge's own counters cannot.
resource "google_monitoring_alert_policy" "push_error_ratio" {
  count                 = var.monitoring ? 1 : 0
  project               = var.project_id
  display_name          = "${var.name}: push requests failing"
  combiner              = "OR"
  severity              = "ERROR"
  notification_channels = var.notification_channels

  conditions {
    display_name = "more than ${var.alert_push_error_ratio * 100} % of push requests not acknowledged"
    condition_threshold {
      filter             = local.monitoring_filters.push_errors
      denominator_filter = local.monitoring_filters.push_requests
      comparison         = "COMPARISON_GT"
      threshold_value    = var.alert_push_error_ratio
      duration           = "${var.alert_push_error_window_seconds}s"
      # Numerator and denominator: the same period and the same labels, or there is no ratio.
      aggregations {
        alignment_period     = "${var.alert_push_error_window_seconds}s"
        per_series_aligner   = "ALIGN_SUM"
        cross_series_reducer = "REDUCE_SUM"
        group_by_fields      = ["resource.label.subscription_id"]
      }
      denominator_aggregations {
        alignment_period     = "${var.alert_push_error_window_seconds}s"
        per_series_aligner   = "ALIGN_SUM"
        cross_series_reducer = "REDUCE_SUM"
        group_by_fields      = ["resource.label.subscription_id"]
      }
      trigger {
        count = 1
      }
    }
  }

  documentation {
    mime_type = "text/markdown"
    subject   = "${var.name}: push requests failing"
    content   = "More than ${var.alert_push_error_ratio * 100} % of Pub/Sub's pushes to the bridge were not acknowledged over ${var.alert_push_error_window_seconds} s. The dashboard's push requests by response class shows which class. Runbook: docs/operations.md, \"Push error ratio\"."
  }

  alert_strategy {
    auto_close = "1800s"
  }
}
