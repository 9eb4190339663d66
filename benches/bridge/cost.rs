//! The cost column of the scaling table: what a million deliveries cost on Cloud Run at example
//! prices, when CPU-bound and when billed by busy time.

/// Example prices for the cost column: Cloud Run, Tier 1 region, request-based billing, as
/// cloud.google.com/run/pricing listed them (stored copy read 2026-12-02). Prices change;
/// pass your own with `--price-vcpu-second`, `--price-gib-second`, `--price-million-requests`.
pub(crate) struct Prices {
    pub(crate) vcpu_second: f64,
    pub(crate) gib_second: f64,
    pub(crate) million_requests: f64,
}

/// Instance shape the cost column assumes: 1 vCPU, 512 MiB.
pub(crate) const COST_VCPUS: f64 = 1.0;
pub(crate) const COST_GIB: f64 = 0.5;

/// Compute cost of a million deliveries when CPU is what the instance is busy with: an instance
/// kept at full CPU spends `cpu / COST_VCPUS` seconds per delivery (the request fee aside).
pub(crate) fn compute_cost_cpu_bound(cpu: f64, prices: &Prices) -> f64 {
    let busy_seconds = 1e6 * cpu / COST_VCPUS;
    busy_seconds * (COST_VCPUS * prices.vcpu_second + COST_GIB * prices.gib_second)
}

/// Compute cost of a million deliveries billed by busy time at the measured rate: request-based
/// billing charges an instance for as long as any request is in flight, which in a closed loop
/// of `per_second` deliveries is all the time.
pub(crate) fn compute_cost_busy(per_second: f64, prices: &Prices) -> f64 {
    1e6 / per_second.max(f64::MIN_POSITIVE)
        * (COST_VCPUS * prices.vcpu_second + COST_GIB * prices.gib_second)
}
