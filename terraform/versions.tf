terraform {
  required_version = ">= 1.5"
  required_providers {
    google = {
      source = "hashicorp/google"
      # Checked offline against the provider schema of 6.50 (docs/deploying.md).
      version = ">= 6.50, < 7.0"
    }
  }
}
