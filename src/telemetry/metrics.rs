use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Metric, Registry, Unit};

use super::TelemetryError;
use super::process::ProcessCollector;
use kube::runtime::reflector::Store;

use crate::api::OperationAction as Action;
use crate::api::{
    BlobBackupInstance, BlobBackupInstanceStatus, ConditionStatus, OperationPhase, condition_type,
};
use crate::controller::Error as ReconcileError;
use crate::controller::decide::Reason;
use dataprotection::{RequestObserver, operation_ids};

/// Label value used for anything outside a bounded set.
const OTHER: &str = "Other";
/// Protection status label of a resource the operator has reconciled but Azure has not
/// reported a status for (yet).
const UNKNOWN: &str = "Unknown";
/// Label of a resource the operator has not reconciled yet (its status has no Ready condition),
/// in `bbo_instances` and `bbo_instances_by_reason`: every resource is one right after a start,
/// which an alert on `Unknown` must not take for trouble.
const NOT_RECONCILED: &str = "NotReconciled";
/// Azure's `protectionStatus.status` values (the spec's `Status` enum plus the two values real
/// services return, `NotProtected` and `ProtectionError`); anything else is counted as `Other`.
const PROTECTION_STATUSES: [&str; 8] = [
    "ConfiguringProtection",
    "ConfiguringProtectionFailed",
    "ProtectionConfigured",
    "ProtectionStopped",
    "ProtectionError",
    "NotProtected",
    "SoftDeleting",
    "SoftDeleted",
];
/// Distinct reasons kept per series before new ones are folded into `Other`.
const MAX_REASONS: usize = 64;
/// Longest reason accepted as a label value.
const MAX_REASON_LEN: usize = 64;

/// Text format of the `/metrics` response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExpositionFormat {
    /// OpenMetrics 1.0.0 (what Prometheus asks for first).
    OpenMetrics,
    /// Prometheus text 0.0.4 (for clients that do not ask for OpenMetrics, such as `curl`).
    PrometheusText,
}

impl ExpositionFormat {
    /// The format to answer a scrape with, from its `Accept` header.
    pub fn negotiate(accept: Option<&str>) -> Self {
        // Prometheus lists OpenMetrics first and text/plain as a fallback; a media-range match
        // is enough since we only offer these two.
        let wants_openmetrics = accept.is_some_and(|a| {
            a.split(',').any(|range| {
                let mut parts = range.split(';').map(str::trim);
                let media = parts.next().unwrap_or_default();
                let refused = parts.any(|p| {
                    p.strip_prefix("q=")
                        .and_then(|q| q.trim().parse::<f32>().ok())
                        .is_some_and(|q| q <= 0.0)
                });
                media.eq_ignore_ascii_case("application/openmetrics-text") && !refused
            })
        });
        if wants_openmetrics {
            Self::OpenMetrics
        } else {
            Self::PrometheusText
        }
    }

    /// The response's `Content-Type`.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Self::PrometheusText => prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    operation: &'static str,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabels {
    operation: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ActionLabels {
    // The action's name (`Action::as_str`): the client's type cannot implement
    // prometheus-client's label trait here.
    action: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProtectionLabels {
    protection_status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReadyLabels {
    ready: bool,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConditionReasonLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
    /// The Azure Data Protection api-version the operator speaks (`--api-version`).
    api_version: String,
    /// The custom resource's API version.
    crd_version: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn azure_request_histogram() -> Histogram {
    // 10ms .. ~41s: ARM answers in tens to hundreds of milliseconds, slow ones take seconds.
    Histogram::new(exponential_buckets(0.01, 2.0, 13))
}

/// Admits CamelCase reasons as label values, at most [`MAX_REASONS`] distinct ones.
#[derive(Default)]
struct BoundedReasons(Mutex<HashSet<String>>);

impl BoundedReasons {
    fn admit(&self, reason: &str) -> String {
        let well_formed = reason.len() <= MAX_REASON_LEN
            && reason.starts_with(|c: char| c.is_ascii_uppercase())
            && reason.chars().all(|c| c.is_ascii_alphanumeric());
        if !well_formed {
            return OTHER.to_owned();
        }
        let mut seen = lock(&self.0);
        if seen.contains(reason) || seen.len() < MAX_REASONS {
            seen.insert(reason.to_owned());
            reason.to_owned()
        } else {
            OTHER.to_owned()
        }
    }
}

/// Registers `metric` (the registry keeps a handle sharing its values) and returns it.
fn register<M: Metric + Clone>(registry: &mut Registry, name: &str, help: &str, metric: M) -> M {
    registry.register(name, help, metric.clone());
    metric
}

/// [`register`] with the `_seconds` unit suffix.
fn register_seconds<M: Metric + Clone>(
    registry: &mut Registry,
    name: &str,
    help: &str,
    metric: M,
) -> M {
    registry.register_with_unit(name, help, Unit::Seconds, metric.clone());
    metric
}

// A panic elsewhere while holding the lock leaves plain counters behind; keep using them.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What the scrape-time series read: the Azure api-version of `bbo_build_info`, the watch's
/// store of the resources (while a controller runs) and when each resource's backup instance
/// was last read from Azure.
#[derive(Default)]
struct ScrapeState {
    api_version: Mutex<String>,
    instances: Mutex<Option<Store<BlobBackupInstance>>>,
    checks: Mutex<HashMap<u64, Instant>>,
}

impl std::fmt::Debug for ScrapeState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScrapeState").finish_non_exhaustive()
    }
}

/// Encodes `bbo_build_info`, `bbo_last_successful_check_age_seconds` and the resource gauges
/// (`bbo_instances`, `bbo_instances_ready`, `bbo_instances_by_reason`,
/// `bbo_operations_in_flight`) at each scrape, the gauges from the watch's store: nothing to
/// update per resource, nothing to forget when one is gone.
#[derive(Debug)]
struct ScrapeCollector(Arc<ScrapeState>);

/// The resource gauges, counted from the resources' statuses. Known label values start at 0.
struct InstanceCounts {
    instances: BTreeMap<&'static str, i64>,
    ready: BTreeMap<bool, i64>,
    by_reason: BTreeMap<&'static str, i64>,
    // In Action::ALL's order (actions have no order of their own).
    in_flight: Vec<(Action, i64)>,
}

impl InstanceCounts {
    fn of<'a>(statuses: impl Iterator<Item = Option<&'a BlobBackupInstanceStatus>>) -> Self {
        let zero = |keys: &mut dyn Iterator<Item = &'static str>| {
            keys.map(|key| (key, 0)).collect::<BTreeMap<_, _>>()
        };
        let mut counts = Self {
            instances: zero(&mut PROTECTION_STATUSES.into_iter().chain([
                UNKNOWN,
                NOT_RECONCILED,
                OTHER,
            ])),
            ready: [(true, 0), (false, 0)].into(),
            by_reason: zero(
                &mut Reason::ALL
                    .iter()
                    .map(|reason| reason.as_str())
                    .chain([NOT_RECONCILED, OTHER]),
            ),
            in_flight: Action::ALL.into_iter().map(|action| (action, 0)).collect(),
        };
        for status in statuses {
            let ready_condition = status.and_then(|s| {
                s.conditions
                    .iter()
                    .find(|c| c.type_ == condition_type::READY)
            });
            let protection = match status.and_then(|s| s.protection_status.as_deref()) {
                Some(protection) => protection_status_label(protection),
                None if ready_condition.is_some() => UNKNOWN,
                None => NOT_RECONCILED,
            };
            *counts.instances.entry(protection).or_default() += 1;
            *counts
                .ready
                .entry(ready_condition.is_some_and(|c| c.status == ConditionStatus::True))
                .or_default() += 1;
            let reason =
                ready_condition.map_or(NOT_RECONCILED, |c| condition_reason_label(&c.reason));
            *counts.by_reason.entry(reason).or_default() += 1;
            // Recorded as running, or as intended (a PUT of a new instance is recorded only
            // so until its outcome is known: its poll URL stays in the controller's memory).
            if let Some(op) = status
                .and_then(|status| status.operation.as_ref())
                .filter(|op| {
                    matches!(
                        op.status,
                        OperationPhase::Pending | OperationPhase::InProgress
                    )
                })
                && let Some((_, n)) = counts.in_flight.iter_mut().find(|(a, _)| *a == op.action)
            {
                *n += 1;
            }
        }
        counts
    }
}

/// Encodes one gauge family of `(labels, value)` samples.
fn encode_gauges<L: EncodeLabelSet>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (L, i64)>,
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, value) in samples {
        ConstGauge::new(value).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

impl Collector for ScrapeCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let build = Info::new(BuildLabels {
            version: env!("CARGO_PKG_VERSION"),
            api_version: lock(&self.0.api_version).clone(),
            crd_version: CRD_VERSION,
        });
        build.encode(encoder.encode_descriptor(
            "build",
            "The operator's version, the Azure api-version it speaks and its custom resource's version",
            None,
            MetricType::Info,
        )?)?;
        // The resources the watch lists now (none while no controller runs): a check of one
        // that is gone is forgotten here.
        let objects = lock(&self.0.instances)
            .as_ref()
            .map(Store::state)
            .unwrap_or_default();
        let listed: HashSet<u64> = objects.iter().map(|obj| instance_key(obj)).collect();
        let now = Instant::now();
        let mut checks = lock(&self.0.checks);
        checks.retain(|key, _| listed.contains(key));
        let oldest = checks
            .values()
            .map(|at| now.saturating_duration_since(*at))
            .max()
            .unwrap_or_default();
        ConstGauge::new(oldest.as_secs_f64()).encode(encoder.encode_descriptor(
            "last_successful_check_age",
            "Age of the oldest last successful read of a resource's backup instance from Azure (0 with none)",
            Some(&Unit::Seconds),
            MetricType::Gauge,
        )?)?;
        let counts = InstanceCounts::of(objects.iter().map(|obj| obj.status.as_ref()));
        encode_gauges(
            &mut encoder,
            "operations_in_flight",
            "Long-running Azure operations being tracked, by action",
            counts.in_flight.into_iter().map(|(action, n)| {
                (
                    ActionLabels {
                        action: action.as_str(),
                    },
                    n,
                )
            }),
        )?;
        encode_gauges(
            &mut encoder,
            "instances",
            "BlobBackupInstance resources, by Azure protection status",
            counts
                .instances
                .into_iter()
                .map(|(protection_status, n)| (ProtectionLabels { protection_status }, n)),
        )?;
        encode_gauges(
            &mut encoder,
            "instances_ready",
            "BlobBackupInstance resources, by their Ready condition",
            counts
                .ready
                .into_iter()
                .map(|(ready, n)| (ReadyLabels { ready }, n)),
        )?;
        encode_gauges(
            &mut encoder,
            "instances_by_reason",
            "BlobBackupInstance resources, by the reason of their Ready condition",
            counts
                .by_reason
                .into_iter()
                .map(|(reason, n)| (ConditionReasonLabels { reason }, n)),
        )?;
        Ok(())
    }
}

/// The custom resource's version, as `bbo_build_info` reports it.
const CRD_VERSION: &str = "v1alpha1";

struct Inner {
    registry: Registry,
    reconciles: Family<ResultLabels, Counter>,
    reconcile_errors: Family<ReasonLabels, Counter>,
    reconcile_duration: Histogram,
    azure_requests: Family<RequestLabels, Counter>,
    azure_request_duration: HistogramFamily<OperationLabels>,
    throttling_waits: Family<OperationLabels, Counter>,
    status_writes: Counter,
    metadata_writes: Counter,
    events: Family<ReasonLabels, Counter>,
    leader: Gauge,
    error_reasons: BoundedReasons,
    event_reasons: BoundedReasons,
    scrape: Arc<ScrapeState>,
}

/// Counts the resources of a store in the gauges until dropped ([`Metrics::watch_instances`]).
#[must_use = "the resources count only while this lives"]
pub struct WatchedInstances(Arc<ScrapeState>);

impl std::fmt::Debug for WatchedInstances {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatchedInstances").finish_non_exhaustive()
    }
}

impl Drop for WatchedInstances {
    fn drop(&mut self) {
        *lock(&self.0.instances) = None;
        lock(&self.0.checks).clear();
    }
}

/// The key of a resource among the checks: a hash of its namespace and name, 8 bytes instead
/// of a string of both (about 1 MB at 10,000 resources; BENCHMARKS.md, "Memory"). Two
/// resources sharing one (about 1 in 10^11 at 10,000) would share a last check, which could
/// hide the older one's age from the gauge; nothing but that gauge reads it.
fn instance_key(obj: &BlobBackupInstance) -> u64 {
    use std::hash::{DefaultHasher, Hash, Hasher};
    let mut hasher = DefaultHasher::new();
    obj.metadata.namespace.hash(&mut hasher);
    obj.metadata.name.hash(&mut hasher);
    hasher.finish()
}

/// The operator's Prometheus metrics (cheap to clone; clones share the series).
///
/// Label values are bounded: operation names, HTTP status codes, actions, CamelCase reasons
/// (at most 64 distinct per series, then `Other`) and Azure protection statuses (a known list,
/// then `Other`). They never carry resource names or error text.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// Creates the registry with every series registered. Gauges whose label values are known
    /// up front start at 0, so dashboards see them before the first resource arrives.
    pub fn new() -> Self {
        // The operator's series are `bbo_*`; the standard `process_*` ones have no prefix.
        let mut root = Registry::default();
        root.register_collector(Box::new(ProcessCollector));
        let scrape = Arc::new(ScrapeState::default());
        let r = root.sub_registry_with_prefix("bbo");
        r.register_collector(Box::new(ScrapeCollector(scrape.clone())));
        let inner = Inner {
            reconciles: register(
                r,
                "reconcile",
                "Reconciles of BlobBackupInstance resources, by result",
                Family::default(),
            ),
            reconcile_errors: register(
                r,
                "reconcile_errors",
                "Reconciles that failed on the Kubernetes API, by reason (Azure trouble is in the resource's status and bbo_instances_by_reason)",
                Family::default(),
            ),
            // 5ms .. ~41s: a reconcile is a few ARM calls, never a wait for an operation.
            reconcile_duration: register_seconds(
                r,
                "reconcile_duration",
                "Time spent in one reconcile",
                Histogram::new(exponential_buckets(0.005, 2.0, 14)),
            ),
            azure_requests: register(
                r,
                "azure_requests",
                "HTTP requests to Azure Resource Manager, by operationId and status code (or network)",
                Family::default(),
            ),
            azure_request_duration: register_seconds(
                r,
                "azure_request_duration",
                "Duration of HTTP requests to Azure Resource Manager, by operationId",
                Family::new_with_constructor(azure_request_histogram as fn() -> Histogram),
            ),
            throttling_waits: register(
                r,
                "throttling_waits",
                "Reconciles deferred because Azure throttled a request (429 Retry-After)",
                Family::default(),
            ),
            status_writes: register(
                r,
                "status_writes",
                "Status updates written to the Kubernetes API",
                Counter::default(),
            ),
            metadata_writes: register(
                r,
                "metadata_writes",
                "Writes of resources' metadata (the finalizer added or removed) to the Kubernetes API",
                Counter::default(),
            ),
            events: register(
                r,
                "events",
                "Kubernetes Events published, by reason",
                Family::default(),
            ),
            leader: register(
                r,
                "leader",
                "1 while this replica holds the leader lease (or leader election is off)",
                Gauge::default(),
            ),
            error_reasons: BoundedReasons::default(),
            event_reasons: BoundedReasons::default(),
            scrape,
            // Last: every field above registered itself in it.
            registry: root,
        };

        for result in ["success", "error"] {
            inner
                .reconciles
                .get_or_create(&ResultLabels { result })
                .inc_by(0);
        }
        // Counters with known labels start at 0, so `rate()` and `absent()` work before the
        // first failure.
        for reason in ReconcileError::METRIC_REASONS {
            let reason = inner.error_reasons.admit(reason);
            inner
                .reconcile_errors
                .get_or_create(&ReasonLabels { reason })
                .inc_by(0);
        }
        for operation in operation_ids::ALL {
            inner
                .throttling_waits
                .get_or_create(&OperationLabels { operation })
                .inc_by(0);
        }
        Self {
            inner: Arc::new(inner),
        }
    }

    /// Records one finished reconcile: `bbo_reconcile_total{result="success"|"error"}`, its
    /// duration, and for a failure `bbo_reconcile_errors_total{reason}` where `reason` is a
    /// CamelCase reason such as a condition reason (anything else is counted as `Other`).
    pub fn record_reconcile(&self, elapsed: Duration, error_reason: Option<&str>) {
        let result = if error_reason.is_some() {
            "error"
        } else {
            "success"
        };
        self.inner
            .reconciles
            .get_or_create(&ResultLabels { result })
            .inc();
        self.inner.reconcile_duration.observe(elapsed.as_secs_f64());
        if let Some(reason) = error_reason {
            let reason = self.inner.error_reasons.admit(reason);
            self.inner
                .reconcile_errors
                .get_or_create(&ReasonLabels { reason })
                .inc();
        }
    }

    /// Counts a reconcile deferred by a 429 `Retry-After` on `operation` (an Azure operationId).
    pub fn record_throttling_wait(&self, operation: &'static str) {
        self.inner
            .throttling_waits
            .get_or_create(&OperationLabels { operation })
            .inc();
    }

    /// Sets the Azure api-version `bbo_build_info` reports.
    pub fn set_azure_api_version(&self, api_version: &str) {
        *lock(&self.inner.scrape.api_version) = api_version.to_owned();
    }

    /// Counts the resources in `store` (the controller's watch) in the resource gauges while
    /// the returned guard lives. A controller that stops drops it, so a replica that does not
    /// lead reports no resources and summing the replicas' gauges counts each resource once.
    pub fn watch_instances(&self, store: Store<BlobBackupInstance>) -> WatchedInstances {
        *lock(&self.inner.scrape.instances) = Some(store);
        WatchedInstances(self.inner.scrape.clone())
    }

    /// Records that `obj`'s backup instance was just read from Azure (found or not):
    /// `bbo_last_successful_check_age_seconds` is the age of the oldest such read among the
    /// resources the watch lists.
    pub fn record_check(&self, obj: &BlobBackupInstance) {
        self.record_check_at(obj, Instant::now());
    }

    /// [`Metrics::record_check`] at a given time (tests age a check this way).
    pub fn record_check_at(&self, obj: &BlobBackupInstance, at: Instant) {
        lock(&self.inner.scrape.checks).insert(instance_key(obj), at);
    }

    /// Counts a status update written to the Kubernetes API.
    pub fn record_status_write(&self) {
        self.inner.status_writes.inc();
    }

    /// Counts a write of a resource's metadata (its finalizer) to the Kubernetes API.
    pub fn record_metadata_write(&self) {
        self.inner.metadata_writes.inc();
    }

    /// Counts a Kubernetes Event published with `reason` (CamelCase; else counted as `Other`).
    pub fn record_event(&self, reason: &str) {
        let reason = self.inner.event_reasons.admit(reason);
        self.inner
            .events
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    /// Sets `bbo_leader` to 1 while this replica leads, 0 otherwise.
    pub fn set_leader(&self, leading: bool) {
        self.inner.leader.set(i64::from(leading));
    }

    /// Encodes every series in the given text format.
    pub fn encode(&self, format: ExpositionFormat) -> Result<String, TelemetryError> {
        let mut out = String::new();
        match format {
            ExpositionFormat::OpenMetrics => {
                prometheus_client::encoding::text::encode(&mut out, &self.inner.registry)?;
            }
            ExpositionFormat::PrometheusText => {
                prometheus_client::encoding::prometheus_text::encode(
                    &mut out,
                    &self.inner.registry,
                )?;
            }
        }
        Ok(out)
    }
}

impl RequestObserver for Metrics {
    fn observe(&self, operation: &'static str, status: Option<u16>, elapsed: Duration) {
        let code = status.map_or_else(|| "network".to_owned(), |s| s.to_string());
        self.inner
            .azure_requests
            .get_or_create(&RequestLabels { operation, code })
            .inc();
        self.inner
            .azure_request_duration
            .get_or_create(&OperationLabels { operation })
            .observe(elapsed.as_secs_f64());
    }
}

/// Azure's status as a bounded label: a known value in its canonical casing, else `Other`.
fn protection_status_label(status: &str) -> &'static str {
    let status = status.trim();
    PROTECTION_STATUSES
        .into_iter()
        .find(|known| known.eq_ignore_ascii_case(status))
        .unwrap_or(OTHER)
}

/// A Ready reason as a bounded label: a known [`Reason`], else `Other`.
fn condition_reason_label(reason: &str) -> &'static str {
    Reason::ALL
        .iter()
        .map(|known| known.as_str())
        .find(|known| *known == reason)
        .unwrap_or(OTHER)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protection_status_is_bounded_and_canonical() {
        assert_eq!(
            protection_status_label("protectionconfigured"),
            "ProtectionConfigured"
        );
        assert_eq!(
            protection_status_label(" ProtectionError "),
            "ProtectionError"
        );
        assert_eq!(protection_status_label("BrandNewState"), "Other");
        assert_eq!(protection_status_label(""), "Other");
    }

    #[test]
    fn reasons_are_bounded() {
        let reasons = BoundedReasons::default();
        assert_eq!(
            reasons.admit("UserErrorMissingRequiredPermissions"),
            "UserErrorMissingRequiredPermissions"
        );
        assert_eq!(reasons.admit("contains spaces and text"), "Other");
        assert_eq!(reasons.admit("lowerCamel"), "Other");
        assert_eq!(reasons.admit(&"A".repeat(MAX_REASON_LEN + 1)), "Other");
        for i in 0..MAX_REASONS * 2 {
            reasons.admit(&format!("Reason{i}"));
        }
        assert_eq!(lock(&reasons.0).len(), MAX_REASONS);
        assert_eq!(reasons.admit("Reason1000"), "Other");
        assert_eq!(
            reasons.admit("UserErrorMissingRequiredPermissions"),
            "UserErrorMissingRequiredPermissions",
            "a reason seen before keeps its label"
        );
    }

    #[test]
    fn negotiation() {
        let prometheus = "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,application/openmetrics-text;version=0.0.1;q=0.5,text/plain;version=1.0.0;escaping=allow-utf-8;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2";
        assert_eq!(
            ExpositionFormat::negotiate(Some(prometheus)),
            ExpositionFormat::OpenMetrics
        );
        assert_eq!(
            ExpositionFormat::negotiate(Some("*/*")),
            ExpositionFormat::PrometheusText
        );
        assert_eq!(
            ExpositionFormat::negotiate(Some("application/openmetrics-text; q=0, text/plain")),
            ExpositionFormat::PrometheusText
        );
        assert_eq!(
            ExpositionFormat::negotiate(None),
            ExpositionFormat::PrometheusText
        );
    }
}
