//! The metrics exposition and the `/metrics`, `/healthz`, `/readyz` endpoints over real HTTP.

use std::time::Duration;

use blob_backup_operator::api::{BlobBackupInstance, OperationAction as Action};
use blob_backup_operator::telemetry::{
    ExpositionFormat, HealthState, Metrics, Role, WatchedInstances,
};
use dataprotection::RequestObserver;
use kube::runtime::reflector::{self, store::Writer};
use kube::runtime::watcher::Event;
use serde_json::json;
use testkit::scenario::{ACCOUNT, spec};

/// The resources a controller's watch lists, counted by the metrics while it lives.
struct Watch {
    writer: Writer<BlobBackupInstance>,
    _gauges: WatchedInstances,
}

impl Watch {
    fn of(metrics: &Metrics) -> Self {
        let (reader, writer) = reflector::store();
        Self {
            _gauges: metrics.watch_instances(reader),
            writer,
        }
    }

    /// The watch sees "namespace/name" with this Azure protection status, Ready condition
    /// (`reason` `None`: no Ready condition) and operation in flight.
    fn set(
        &mut self,
        key: &str,
        protection_status: Option<&str>,
        ready: bool,
        reason: Option<&str>,
        in_flight: Option<Action>,
    ) {
        let event = Event::Apply(instance(key, protection_status, ready, reason, in_flight));
        self.writer.apply_watcher_event(&event);
    }

    /// The watch sees "namespace/name" deleted.
    fn delete(&mut self, key: &str) {
        let event = Event::Delete(instance(key, None, false, None, None));
        self.writer.apply_watcher_event(&event);
    }
}

fn instance(
    key: &str,
    protection_status: Option<&str>,
    ready: bool,
    reason: Option<&str>,
    in_flight: Option<Action>,
) -> BlobBackupInstance {
    let (namespace, name) = key.split_once('/').unwrap();
    let conditions = match (ready, reason) {
        (false, None) => json!([]),
        (ready, reason) => json!([{
            "type": "Ready",
            "status": if ready { "True" } else { "False" },
            "reason": reason.unwrap_or("ProtectionConfigured"),
            "message": "",
            "lastTransitionTime": "2026-01-01T00:00:00Z",
        }]),
    };
    let operation = in_flight.map(|action| {
        json!({
            "action": action,
            "status": "InProgress",
            "pollUrl": "https://management.azure.com/operations/1",
        })
    });
    serde_json::from_value(json!({
        "apiVersion": "dataprotection.azure.com/v1alpha1",
        "kind": "BlobBackupInstance",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec(ACCOUNT, "BlobBackup-Policy"),
        "status": {
            "protectionStatus": protection_status,
            "conditions": conditions,
            "operation": operation,
        },
    }))
    .expect("a BlobBackupInstance")
}

fn openmetrics(metrics: &Metrics) -> String {
    metrics.encode(ExpositionFormat::OpenMetrics).unwrap()
}

/// The value of the sample line that starts with `series` (name and labels, exactly).
fn sample(exposition: &str, series: &str) -> Option<f64> {
    exposition.lines().find_map(|line| {
        let value = line.strip_prefix(series)?.strip_prefix(' ')?;
        value.split(' ').next()?.parse().ok()
    })
}

#[test]
fn recorded_values_appear_with_their_labels() {
    let m = Metrics::new();
    m.record_reconcile(Duration::from_millis(30), None);
    m.record_reconcile(Duration::from_millis(40), None);
    m.record_reconcile(Duration::from_millis(50), Some("AlreadyProtected"));
    m.observe(
        "BackupInstances_CreateOrUpdate",
        Some(201),
        Duration::from_millis(120),
    );
    m.observe("BackupInstances_Get", Some(429), Duration::from_millis(5));
    m.observe("BackupInstances_Get", None, Duration::from_secs(3));
    m.observe("BackupInstances_Get", Some(429), Duration::from_millis(7));
    let mut watch = Watch::of(&m);
    for (key, action) in [
        ("ns/a", Action::Create),
        ("ns/b", Action::Create),
        ("ns/c", Action::Create),
        ("ns/d", Action::StopProtection),
    ] {
        watch.set(key, None, false, None, Some(action));
    }
    m.record_throttling_wait("BackupInstances_Get");
    m.record_status_write();
    m.record_status_write();
    m.record_metadata_write();
    m.record_event("Protected");
    m.set_leader(true);

    let text = openmetrics(&m);
    let expect = [
        (r#"bbo_reconcile_total{result="success"}"#, 2.0),
        (r#"bbo_reconcile_total{result="error"}"#, 1.0),
        (
            r#"bbo_reconcile_errors_total{reason="AlreadyProtected"}"#,
            1.0,
        ),
        ("bbo_reconcile_duration_seconds_count", 3.0),
        ("bbo_reconcile_duration_seconds_sum", 0.12),
        (
            r#"bbo_azure_requests_total{operation="BackupInstances_CreateOrUpdate",code="201"}"#,
            1.0,
        ),
        (
            r#"bbo_azure_requests_total{operation="BackupInstances_Get",code="429"}"#,
            2.0,
        ),
        (
            r#"bbo_azure_requests_total{operation="BackupInstances_Get",code="network"}"#,
            1.0,
        ),
        (
            r#"bbo_azure_request_duration_seconds_count{operation="BackupInstances_Get"}"#,
            3.0,
        ),
        (
            r#"bbo_azure_request_duration_seconds_bucket{le="0.01",operation="BackupInstances_Get"}"#,
            2.0,
        ),
        (r#"bbo_operations_in_flight{action="Create"}"#, 3.0),
        (r#"bbo_operations_in_flight{action="StopProtection"}"#, 1.0),
        (r#"bbo_operations_in_flight{action="Delete"}"#, 0.0),
        (
            r#"bbo_throttling_waits_total{operation="BackupInstances_Get"}"#,
            1.0,
        ),
        ("bbo_status_writes_total", 2.0),
        ("bbo_metadata_writes_total", 1.0),
        (r#"bbo_events_total{reason="Protected"}"#, 1.0),
        ("bbo_leader", 1.0),
    ];
    for (series, value) in expect {
        let got = sample(&text, series).unwrap_or_else(|| panic!("{series} missing in\n{text}"));
        assert!((got - value).abs() < 1e-9, "{series} = {got}, want {value}");
    }
    assert!(text.contains("# TYPE bbo_reconcile_duration_seconds histogram"));
    assert!(text.ends_with("# EOF\n"));

    // The same registry in the Prometheus 0.0.4 text format.
    let plain = m.encode(ExpositionFormat::PrometheusText).unwrap();
    assert_eq!(
        sample(&plain, r#"bbo_reconcile_total{result="success"}"#),
        Some(2.0)
    );
    assert!(
        plain.contains("# TYPE bbo_reconcile_total counter"),
        "{plain}"
    );
    assert!(!plain.contains("# EOF"));
}

#[test]
fn operations_in_flight_follow_each_resource_and_a_stopped_controller_reports_none() {
    let m = Metrics::new();
    let in_flight = |action: &str| {
        sample(
            &openmetrics(&m),
            &format!(r#"bbo_operations_in_flight{{action="{action}"}}"#),
        )
        .unwrap()
    };

    let mut watch = Watch::of(&m);
    watch.set("ns/a", None, false, None, Some(Action::Validate));
    watch.set("ns/b", None, false, None, Some(Action::Validate));
    assert_eq!(in_flight("Validate"), 2.0);
    // An operation ends, the next starts; repeats count once.
    watch.set("ns/a", None, false, None, Some(Action::Create));
    watch.set("ns/a", None, false, None, Some(Action::Create));
    assert_eq!((in_flight("Validate"), in_flight("Create")), (1.0, 1.0));
    watch.set("ns/a", Some("ProtectionConfigured"), true, None, None);
    assert_eq!(in_flight("Create"), 0.0);
    // A resource deleted mid-operation no longer counts.
    watch.set("ns/c", None, false, None, Some(Action::Delete));
    watch.delete("ns/c");
    assert_eq!(in_flight("Delete"), 0.0);
    let ready_true = r#"bbo_instances_ready{ready="true"}"#;
    assert_eq!(sample(&openmetrics(&m), ready_true), Some(1.0));

    // A controller that stops (leading) reports none; the next term counts from its own watch.
    drop(watch);
    let text = openmetrics(&m);
    for series in [
        r#"bbo_operations_in_flight{action="Validate"}"#,
        ready_true,
        r#"bbo_instances_ready{ready="false"}"#,
    ] {
        assert_eq!(sample(&text, series), Some(0.0), "{series}");
    }
    let mut watch = Watch::of(&m);
    watch.set("ns/b", None, false, None, Some(Action::Create));
    assert_eq!(in_flight("Create"), 1.0);
}

#[test]
fn instance_gauges_follow_each_resource_and_stay_bounded() {
    let m = Metrics::new();
    let status = |text: &str, s: &str| {
        sample(
            text,
            &format!(r#"bbo_instances{{protection_status="{s}"}}"#),
        )
        .unwrap()
    };
    let ready = |text: &str, r: bool| {
        sample(text, &format!(r#"bbo_instances_ready{{ready="{r}"}}"#)).unwrap()
    };

    let text = openmetrics(&m);
    assert_eq!(
        status(&text, "ProtectionConfigured"),
        0.0,
        "known statuses start at 0"
    );
    assert_eq!(ready(&text, true), 0.0);

    let mut watch = Watch::of(&m);
    watch.set("ns/a", None, false, None, None);
    watch.set("ns/b", Some("configuringprotection"), false, None, None);
    watch.set("ns/c", Some("ProtectionConfigured"), true, None, None);
    let text = openmetrics(&m);
    assert_eq!(status(&text, "NotReconciled"), 1.0);
    assert_eq!(
        status(&text, "ConfiguringProtection"),
        1.0,
        "casing is normalised"
    );
    assert_eq!(status(&text, "ProtectionConfigured"), 1.0);
    assert_eq!((ready(&text, true), ready(&text, false)), (1.0, 2.0));

    // Moves between statuses, repeats are idempotent, deletion forgets.
    watch.set("ns/a", Some("ProtectionConfigured"), true, None, None);
    watch.set("ns/a", Some("ProtectionConfigured"), true, None, None);
    watch.set("ns/b", Some("ProtectionConfigured"), true, None, None);
    watch.delete("ns/c");
    watch.delete("ns/never-seen");
    let text = openmetrics(&m);
    assert_eq!(status(&text, "NotReconciled"), 0.0);
    assert_eq!(status(&text, "ConfiguringProtection"), 0.0);
    assert_eq!(status(&text, "ProtectionConfigured"), 2.0);
    assert_eq!((ready(&text, true), ready(&text, false)), (2.0, 0.0));

    // Statuses Azure may invent, and free-form reasons, never become new label values.
    for i in 0..50 {
        watch.set(
            &format!("ns/x{i}"),
            Some(&format!("Weird State {i}")),
            false,
            None,
            None,
        );
        m.record_reconcile(Duration::ZERO, Some(&format!("error text {i}: failed")));
    }
    let text = openmetrics(&m);
    assert_eq!(status(&text, "Other"), 50.0);
    assert_eq!(
        sample(&text, r#"bbo_reconcile_errors_total{reason="Other"}"#),
        Some(50.0)
    );
    let instance_series = text
        .lines()
        .filter(|l| l.starts_with("bbo_instances{"))
        .count();
    assert_eq!(
        instance_series, 11,
        "8 known statuses + Unknown + NotReconciled + Other"
    );
    assert!(!text.contains("ns/"), "resource keys never become labels");
}

#[test]
fn resources_count_by_their_ready_reason() {
    let m = Metrics::new();
    let by_reason = |reason: &str| {
        sample(
            &openmetrics(&m),
            &format!(r#"bbo_instances_by_reason{{reason="{reason}"}}"#),
        )
        .unwrap_or_else(|| panic!("no series for {reason}"))
    };
    assert_eq!(
        by_reason("MissingPermissions"),
        0.0,
        "known reasons start at 0"
    );
    let mut watch = Watch::of(&m);
    watch.set("ns/a", None, false, Some("MissingPermissions"), None);
    watch.set("ns/b", None, false, Some("MissingPermissions"), None);
    watch.set("ns/c", None, false, Some("no such reason"), None);
    watch.set("ns/d", None, false, None, None);
    assert_eq!(by_reason("MissingPermissions"), 2.0);
    assert_eq!((by_reason("Other"), by_reason("NotReconciled")), (1.0, 1.0));
    watch.set(
        "ns/a",
        Some("ProtectionConfigured"),
        true,
        Some("ProtectionConfigured"),
        None,
    );
    watch.delete("ns/b");
    assert_eq!(by_reason("MissingPermissions"), 0.0);
    assert_eq!(by_reason("ProtectionConfigured"), 1.0);
}

/// A resource the operator has not reconciled yet (no Ready condition: every one, right after a
/// start) is `NotReconciled`, never `Unknown`, which an alert may watch: `Unknown` is a
/// reconciled resource Azure has reported no protection status for.
#[test]
fn resources_not_reconciled_yet_are_not_unknown() {
    let m = Metrics::new();
    let value = |series: String| {
        sample(&openmetrics(&m), &series).unwrap_or_else(|| panic!("no series {series}"))
    };
    let status = |s: &str| value(format!(r#"bbo_instances{{protection_status="{s}"}}"#));
    let by_reason = |r: &str| value(format!(r#"bbo_instances_by_reason{{reason="{r}"}}"#));
    assert_eq!(
        (status("NotReconciled"), by_reason("NotReconciled")),
        (0.0, 0.0),
        "known from the first scrape"
    );
    let mut watch = Watch::of(&m);
    watch.set("ns/new", None, false, None, None);
    watch.set("ns/newer", None, false, None, None);
    assert_eq!((status("NotReconciled"), status("Unknown")), (2.0, 0.0));
    assert_eq!(by_reason("NotReconciled"), 2.0);
    assert!(
        !openmetrics(&m).contains(r#"bbo_instances_by_reason{reason="Unknown"}"#),
        "a Ready condition always has a reason: no Unknown one"
    );
    // Reconciled: Ready=Unknown (Initializing) written, Azure has said nothing yet.
    watch.set("ns/new", None, false, Some("Initializing"), None);
    assert_eq!((status("NotReconciled"), status("Unknown")), (1.0, 1.0));
    assert_eq!(
        (by_reason("NotReconciled"), by_reason("Initializing")),
        (1.0, 1.0)
    );
}

#[test]
fn check_age_is_the_oldest_last_check_and_forgets_deleted_resources() {
    let m = Metrics::new();
    let age = || sample(&openmetrics(&m), "bbo_last_successful_check_age_seconds").unwrap();
    assert_eq!(age(), 0.0, "no resource checked yet");
    let now = std::time::Instant::now();
    let mut watch = Watch::of(&m);
    watch.set("ns/old", None, false, None, None);
    watch.set("ns/new", None, false, None, None);
    m.record_check_at(
        &instance("ns/old", None, false, None, None),
        now - Duration::from_secs(600),
    );
    m.record_check_at(
        &instance("ns/new", None, false, None, None),
        now - Duration::from_secs(5),
    );
    assert!((600.0..660.0).contains(&age()), "{}", age());
    watch.delete("ns/old");
    assert!((5.0..65.0).contains(&age()), "{}", age());
    drop(watch);
    assert_eq!(age(), 0.0);
}

#[test]
fn build_info_names_the_version_and_the_azure_api_version() {
    let m = Metrics::new();
    m.set_azure_api_version("2026-06-01");
    let series = format!(
        r#"bbo_build_info{{version="{}",api_version="2026-06-01",crd_version="v1alpha1"}}"#,
        env!("CARGO_PKG_VERSION")
    );
    for format in [
        ExpositionFormat::OpenMetrics,
        ExpositionFormat::PrometheusText,
    ] {
        let text = m.encode(format).unwrap();
        assert_eq!(sample(&text, &series), Some(1.0), "{text}");
    }
}

async fn get(client: &reqwest::Client, url: String, accept: Option<&str>) -> (u16, String, String) {
    let mut request = client.get(url);
    if let Some(accept) = accept {
        request = request.header("accept", accept);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, content_type, response.text().await.unwrap())
}

#[tokio::test]
async fn endpoints_over_http() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let metrics = Metrics::new();
    let health = HealthState::new(Duration::from_millis(500));
    metrics.record_status_write();

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(blob_backup_operator::telemetry::serve_on(
        listener,
        metrics.clone(),
        health.clone(),
        async {
            let _ = stopped.await;
        },
    ));
    let client = reqwest::Client::new();

    let prometheus_accept =
        "application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.2,*/*;q=0.1";
    let (code, ctype, body) =
        get(&client, format!("{base}/metrics"), Some(prometheus_accept)).await;
    assert_eq!(code, 200);
    assert_eq!(
        ctype,
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    assert_eq!(sample(&body, "bbo_status_writes_total"), Some(1.0));
    assert!(body.ends_with("# EOF\n"));

    let (code, ctype, body) = get(&client, format!("{base}/metrics"), None).await;
    assert_eq!(code, 200);
    assert_eq!(ctype, "text/plain; version=0.0.4; charset=utf-8");
    assert_eq!(sample(&body, "bbo_status_writes_total"), Some(1.0));

    // Liveness: heartbeats keep it up, silence takes it down.
    health.heartbeat();
    assert_eq!(get(&client, format!("{base}/healthz"), None).await.0, 200);
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(get(&client, format!("{base}/healthz"), None).await.0, 503);
    health.heartbeat();
    assert_eq!(get(&client, format!("{base}/healthz"), None).await.0, 200);

    // Readiness: starting no, standby yes, leader once watching.
    let readyz = || get(&client, format!("{base}/readyz"), None);
    let (code, _, body) = readyz().await;
    assert_eq!(code, 503);
    assert!(body.contains("starting"), "{body}");
    health.set_role(Role::Standby);
    assert_eq!(readyz().await.0, 200);
    health.set_role(Role::Leader);
    assert_eq!(readyz().await.0, 503);
    health.set_watching(true);
    assert_eq!(readyz().await.0, 200);

    assert_eq!(get(&client, format!("{base}/nope"), None).await.0, 404);

    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("server stops on shutdown")
        .unwrap()
        .unwrap();
}
