//! A fresh operator process (the real binary) serves every series it documents from the first
//! scrape: counters with known labels at 0, so `rate()` and `absent()` alerts work before the
//! first failure; the build info; and the standard `process_*` series.

use std::process::Stdio;
use std::time::{Duration, Instant};

use blob_backup_operator::controller::Error as ReconcileError;
use blob_backup_operator::controller::decide::Reason;
use dataprotection::operation_ids;
use testkit::fake_apiserver::FakeApiServer;

/// The value of the sample line that starts with `series` (name and labels, exactly).
fn value(exposition: &str, series: &str) -> Option<f64> {
    exposition.lines().find_map(|line| {
        let rest = line.strip_prefix(series)?.strip_prefix(' ')?;
        rest.split(' ').next()?.parse().ok()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_process_serves_every_series_with_zeros() {
    let api = FakeApiServer::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    api.write_kubeconfig(&kubeconfig).unwrap();
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .unwrap();
    // kill_on_drop: the process goes with the test, however it ends.
    let _operator = tokio::process::Command::new(env!("CARGO_BIN_EXE_blob-backup-operator"))
        .args(["run", "--embedded-vault", "--watch-namespace", "fresh"])
        .args(["--metrics-addr", &addr.to_string()])
        .env_clear()
        .env("KUBECONFIG", &kubeconfig)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();

    let http = dataprotection::default_http_client().unwrap();
    let started = Instant::now();
    let text = loop {
        if let Ok(response) = http.get(format!("http://{addr}/metrics")).send().await
            && response.status() == 200
        {
            break response.text().await.unwrap();
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no /metrics within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    let mut zeros: Vec<String> = ReconcileError::METRIC_REASONS
        .iter()
        .map(|reason| format!(r#"bbo_reconcile_errors_total{{reason="{reason}"}}"#))
        .collect();
    zeros.extend(
        operation_ids::ALL
            .iter()
            .map(|op| format!(r#"bbo_throttling_waits_total{{operation="{op}"}}"#)),
    );
    zeros.extend(
        Reason::ALL
            .iter()
            .map(|reason| format!(r#"bbo_instances_by_reason{{reason="{reason}"}}"#)),
    );
    zeros.extend(
        [
            r#"bbo_reconcile_total{result="error"}"#,
            r#"bbo_operations_in_flight{action="Create"}"#,
            r#"bbo_instances{protection_status="ProtectionConfigured"}"#,
            r#"bbo_instances{protection_status="NotReconciled"}"#,
            r#"bbo_instances_by_reason{reason="NotReconciled"}"#,
            r#"bbo_instances_ready{ready="true"}"#,
            "bbo_status_writes_total",
            "bbo_metadata_writes_total",
            "bbo_last_successful_check_age_seconds",
        ]
        .map(str::to_owned),
    );
    for series in &zeros {
        assert_eq!(value(&text, series), Some(0.0), "{series} in\n{text}");
    }
    let build = format!(
        r#"bbo_build_info{{version="{}",api_version="2026-06-01",crd_version="v1alpha1"}}"#,
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(value(&text, &build), Some(1.0), "{text}");
    for series in [
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_virtual_memory_bytes",
        "process_open_fds",
        "process_max_fds",
        "process_start_time_seconds",
        "process_threads",
    ] {
        let got = value(&text, series).unwrap_or_else(|| panic!("{series} missing in\n{text}"));
        assert!(got >= 0.0, "{series} = {got}");
    }
    assert!(value(&text, "process_resident_memory_bytes").unwrap() > 0.0);
}
