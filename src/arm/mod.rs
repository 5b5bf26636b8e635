//! Azure Resource Manager client for `Microsoft.DataProtection` backup instances.

/// Receives one call per HTTP request the ARM client sends (telemetry implements it).
pub trait RequestObserver: Send + Sync {
    fn observe(&self, operation: &'static str, status: Option<u16>, elapsed: std::time::Duration);
}
