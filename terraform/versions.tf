terraform {
  required_version = ">= 1.5"
  required_providers {
    google = {
      source = "hashicorp/google"
      # Checked against the provider schema of 6.50 (../shared/tools/tf_schema_check.py).
      version = ">= 6.50, < 7.0"
    }
  }
}
