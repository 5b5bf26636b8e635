//! `/metrics`, `/healthz` and `/readyz` of a running operator, over HTTP, after a scenario
//! against the vault emulator and the in-memory Kubernetes API: two resources go Ready, one
//! stalls on a missing permission, one of the Ready ones is deleted. The exposition is parsed
//! and each named series is checked for its labels and its value.

use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use blob_backup_operator::controller::decide::Timing;
use blob_backup_operator::telemetry::{self, ExpositionFormat, HealthState};
use dataprotection::operation_ids as ops;
use testkit::fake_apiserver::Verb;
use testkit::scenario::{
    Harness, NS, RESOURCE, WAIT, account, add_accounts, controller_config, emulator_config,
    spawn_operator, spec, stopped, test_timing,
};
use tokio::sync::watch;

/// Resource names, also the names of the storage accounts they protect.
const READY: [&str; 2] = ["alphabackup", "bravobackup"];
const STALLED: &str = "charlienoperm";
const DELETED: &str = READY[1];

/// One sample of the exposition.
#[derive(Debug, Clone, PartialEq)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// A parsed exposition: `# TYPE` per family and every sample.
#[derive(Debug, Default)]
struct Exposition {
    types: HashMap<String, String>,
    samples: Vec<Sample>,
}

// Hand-written: the one Rust parser of this format (prometheus-parse) has had no release since
// 2023 and brings chrono and itertools; the text format needs only this much.
fn parse_exposition(text: &str) -> Exposition {
    let mut exposition = Exposition::default();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        if let Some(comment) = line.strip_prefix('#') {
            let mut words = comment.split_whitespace();
            if let (Some("TYPE"), Some(family), Some(type_)) =
                (words.next(), words.next(), words.next())
            {
                exposition.types.insert(family.to_owned(), type_.to_owned());
            }
            continue;
        }
        exposition.samples.push(parse_sample(line));
    }
    exposition
}

/// `name{label="value",...} value [timestamp]`, with `\\`, `\"` and `\n` escapes in values.
fn parse_sample(line: &str) -> Sample {
    let name_end = line
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .unwrap_or_else(|| panic!("no value in {line:?}"));
    let name = line[..name_end].to_owned();
    let mut rest = line[name_end..].chars().peekable();
    let mut labels = BTreeMap::new();
    if rest.peek() == Some(&'{') {
        rest.next();
        while rest.next_if_eq(&'}').is_none() {
            let label: String = rest.by_ref().take_while(|c| *c != '=').collect();
            let label = label.trim().to_owned();
            assert_eq!(rest.next(), Some('"'), "label {label} unquoted in {line:?}");
            let mut value = String::new();
            loop {
                match rest.next() {
                    Some('\\') => match rest.next() {
                        Some('n') => value.push('\n'),
                        Some(c) => value.push(c),
                        None => panic!("dangling escape in {line:?}"),
                    },
                    Some('"') => break,
                    Some(c) => value.push(c),
                    None => panic!("unterminated label value in {line:?}"),
                }
            }
            assert!(
                labels.insert(label.clone(), value).is_none(),
                "label {label} twice in {line:?}"
            );
            match rest.peek() {
                Some(',') => {
                    rest.next();
                }
                Some('}') => {}
                other => panic!("{other:?} after a label value in {line:?}"),
            }
        }
    }
    let rest: String = rest.collect();
    let value = rest
        .split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no numeric value in {line:?}"));
    Sample {
        name,
        labels,
        value,
    }
}

impl Exposition {
    /// Samples of `name` whose labels include every pair of `labels`.
    fn matching<'a>(
        &'a self,
        name: &'a str,
        labels: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples.iter().filter(move |s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
    }

    /// The value of the one sample of `name` with exactly `labels`; panics if there is none.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let found: Vec<&Sample> = self
            .matching(name, labels)
            .filter(|s| s.labels.len() == labels.len())
            .collect();
        match found.as_slice() {
            [one] => one.value,
            _ => panic!("{name}{labels:?}: {found:?}"),
        }
    }

    /// The sum of every sample of `name` whose labels include `labels`.
    fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.matching(name, labels).map(|s| s.value).sum()
    }

    fn type_of(&self, family: &str) -> Option<&str> {
        self.types.get(family).map(String::as_str)
    }
}

#[test]
fn the_parser_reads_labels_escapes_and_timestamps() {
    let text = "# HELP x A thing\n# TYPE x counter\nx_total 3\n\
                y{a=\"1\",b=\"q\\\"uote\\\\n\\n\",} 2.5 1700000000\nz{} +Inf\n# EOF\n";
    let parsed = parse_exposition(text);
    assert_eq!(parsed.type_of("x"), Some("counter"));
    assert_eq!(parsed.value("x_total", &[]), 3.0);
    assert_eq!(parsed.value("y", &[("a", "1"), ("b", "q\"uote\\n\n")]), 2.5);
    assert_eq!(parsed.value("z", &[]), f64::INFINITY);
    assert_eq!(parsed.samples.len(), 3);
}

async fn get(http: &reqwest::Client, url: &str, accept: Option<&str>) -> reqwest::Response {
    let mut request = http.get(url);
    if let Some(accept) = accept {
        request = request.header(http::header::ACCEPT, accept);
    }
    request.send().await.expect("the telemetry server answers")
}

async fn status_of(http: &reqwest::Client, url: &str) -> u16 {
    get(http, url, None).await.status().as_u16()
}

/// Waits until `done` holds for a scrape of `/metrics` (Prometheus text); returns that scrape.
async fn scrape_until(
    http: &reqwest::Client,
    base: &str,
    what: &str,
    mut done: impl FnMut(&Exposition) -> bool,
) -> Exposition {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let text = get(http, &format!("{base}/metrics"), None)
            .await
            .text()
            .await
            .expect("a body");
        let exposition = parse_exposition(&text);
        if done(&exposition) {
            return exposition;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} not reached; last scrape:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn metrics_after_a_scenario_name_what_happened() {
    let h = Harness::with_accounts(&[READY[0], READY[1], STALLED]).await;
    h.emulator.admin().revoke_role(&account(STALLED)).unwrap();

    // Wired as `run` wires them: the ARM client reports to the same Metrics the server shows.
    let metrics = h.metrics.clone();
    let health = HealthState::default();
    let listener = tokio::net::TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
        .await
        .unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop_server, server_stopped) = watch::channel(false);
    let server = tokio::spawn(telemetry::serve_on(
        listener,
        metrics.clone(),
        health.clone(),
        stopped(&server_stopped),
    ));

    // The stalled resource retries after a minute: nothing moves once the scenario is over.
    let timing = Timing {
        stalled_retry_base: Duration::from_secs(60),
        stalled_retry_max: Duration::from_secs(60),
        ..test_timing()
    };
    let (stop_controller, controller_stopped) = watch::channel(false);
    let operator = spawn_operator(
        h.api.client_in(NS).unwrap(),
        h.arm(dataprotection::DEFAULT_API_VERSION),
        None,
        controller_config(timing, "metrics-test"),
        &metrics,
        &health,
        &controller_stopped,
    );

    let http = reqwest::Client::builder().build().unwrap();
    h.api
        .wait_for(WAIT, |_| health.is_ready())
        .await
        .expect("the watch lists the resources");
    assert_eq!(status_of(&http, &format!("{base}/readyz")).await, 200);
    assert_eq!(status_of(&http, &format!("{base}/healthz")).await, 200);

    let mut uids = Vec::new();
    for name in READY {
        let created = h.create(name, spec(&account(name), "BlobBackup-Policy"));
        uids.push(created["metadata"]["uid"].as_str().unwrap().to_owned());
    }
    let stalled = h.create(STALLED, spec(&account(STALLED), "BlobBackup-Policy"));
    uids.push(stalled["metadata"]["uid"].as_str().unwrap().to_owned());
    for name in READY {
        h.wait_ready(name).await;
    }
    h.wait_condition(STALLED, "Stalled", "True", "MissingPermissions")
        .await;
    h.api.delete(RESOURCE, NS, DELETED).unwrap();
    h.wait_gone(DELETED).await;

    // The gauges follow the status writes the waits above saw, a moment later.
    let m = scrape_until(&http, &base, "the gauges after the deletion", |m| {
        m.value(
            "bbo_instances",
            &[("protection_status", "ProtectionConfigured")],
        ) == 1.0
            && m.sum("bbo_operations_in_flight", &[]) == 0.0
            && m.value("bbo_instances_ready", &[("ready", "false")]) == 1.0
    })
    .await;

    // Reconciles: all succeeded, each timed.
    let success = m.value("bbo_reconcile_total", &[("result", "success")]);
    assert!(success > 0.0);
    assert_eq!(m.value("bbo_reconcile_total", &[("result", "error")]), 0.0);
    assert_eq!(m.sum("bbo_reconcile_errors_total", &[]), 0.0);
    assert_eq!(
        m.value("bbo_reconcile_duration_seconds_count", &[]),
        success
    );
    assert_eq!(
        m.type_of("bbo_reconcile_duration_seconds"),
        Some("histogram")
    );

    // Azure requests by operation and code, as the emulator counted them.
    let requests = |operation: &str, code: &str| {
        m.value(
            "bbo_azure_requests_total",
            &[("operation", operation), ("code", code)],
        )
    };
    assert_eq!(requests(ops::CREATE_OR_UPDATE, "201"), 2.0);
    assert_eq!(requests(ops::VALIDATE_FOR_BACKUP, "202"), 3.0);
    assert!(requests(ops::OPERATION_STATUS, "200") > 0.0);
    assert_eq!(requests(ops::DELETE, "202"), 1.0);
    for (operation, codes) in h.emulator.admin().request_counts() {
        for (code, count) in codes {
            assert_eq!(
                requests(&operation, &code.to_string()),
                count as f64,
                "{operation} {code}"
            );
        }
    }
    // Their durations: a histogram per operation whose +Inf bucket and count are the requests.
    assert_eq!(
        m.type_of("bbo_azure_request_duration_seconds"),
        Some("histogram")
    );
    for operation in [
        ops::VALIDATE_FOR_BACKUP,
        ops::CREATE_OR_UPDATE,
        ops::OPERATION_STATUS,
        ops::DELETE,
    ] {
        let labels = [("operation", operation)];
        let total = m.sum("bbo_azure_requests_total", &labels);
        let buckets: Vec<&Sample> = m
            .matching("bbo_azure_request_duration_seconds_bucket", &labels)
            .collect();
        assert!(buckets.len() > 2, "{operation}: {buckets:?}");
        assert!(
            buckets.windows(2).all(|w| w[0].value <= w[1].value),
            "{operation}: cumulative buckets {buckets:?}"
        );
        assert_eq!(buckets.last().unwrap().labels["le"], "+Inf");
        assert_eq!(buckets.last().unwrap().value, total, "{operation}");
        assert_eq!(
            m.value("bbo_azure_request_duration_seconds_count", &labels),
            total
        );
        assert!(m.value("bbo_azure_request_duration_seconds_sum", &labels) > 0.0);
    }
    assert_eq!(m.sum("bbo_throttling_waits_total", &[]), 0.0);

    // The resources left: one protected, one stalled before Azure reported any status.
    assert_eq!(
        m.value("bbo_instances", &[("protection_status", "Unknown")]),
        1.0
    );
    assert_eq!(m.sum("bbo_instances", &[]), 2.0);
    assert_eq!(m.value("bbo_instances_ready", &[("ready", "true")]), 1.0);
    for action in ["Validate", "Create", "Delete"] {
        assert_eq!(
            m.value("bbo_operations_in_flight", &[("action", action)]),
            0.0
        );
    }

    // Status writes as the API server counted them; Events by reason.
    assert_eq!(
        m.value("bbo_status_writes_total", &[]),
        h.api.request_count(Verb::Patch, RESOURCE, Some("status")) as f64
    );
    assert!(m.value("bbo_status_writes_total", &[]) > 0.0);
    assert_eq!(m.value("bbo_events_total", &[("reason", "Protected")]), 2.0);
    assert_eq!(m.value("bbo_events_total", &[("reason", "Deleted")]), 1.0);
    assert_eq!(
        m.value("bbo_events_total", &[("reason", "ValidationFailed")]),
        1.0
    );
    assert_eq!(
        m.value("bbo_leader", &[]),
        1.0,
        "leader election off: leads"
    );
    // The Stalled resource counts by its reason, though no reconcile of it failed.
    let by_reason = |reason| m.value("bbo_instances_by_reason", &[("reason", reason)]);
    assert_eq!(by_reason("ProtectionConfigured"), 1.0);
    assert_eq!(by_reason("MissingPermissions"), 1.0);
    assert_eq!(m.sum("bbo_instances_by_reason", &[]), 2.0);
    let age = m.value("bbo_last_successful_check_age_seconds", &[]);
    assert!((0.0..60.0).contains(&age), "{age}");

    // No label names a resource: bounded cardinality, no per-object series.
    let named: Vec<&str> = READY
        .into_iter()
        .chain([STALLED, NS])
        .chain(uids.iter().map(String::as_str))
        .collect();
    for sample in &m.samples {
        for value in sample.labels.values() {
            assert!(
                !named.iter().any(|n| value.contains(n)),
                "{sample:?} names a resource"
            );
        }
    }

    // Prometheus asks for OpenMetrics first: the same samples, in that format.
    let prometheus_accept =
        "application/openmetrics-text;version=1.0.0;q=0.6,text/plain;version=0.0.4;q=0.3,*/*;q=0.2";
    let response = get(&http, &format!("{base}/metrics"), Some(prometheus_accept)).await;
    let content_type = response.headers()[http::header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        content_type.starts_with("application/openmetrics-text; version=1.0.0"),
        "{content_type}"
    );
    let text = response.text().await.unwrap();
    assert!(text.ends_with("# EOF\n"), "{text}");
    let open = parse_exposition(&text);
    // The steady samples, sorted (process_* and the check age are read at each scrape).
    let steady = |exposition: &Exposition| {
        let mut samples: Vec<(String, f64)> = exposition
            .samples
            .iter()
            .filter(|s| {
                !s.name.starts_with("process_") && s.name != "bbo_last_successful_check_age_seconds"
            })
            .map(|s| (format!("{}{:?}", s.name, s.labels), s.value))
            .collect();
        samples.sort_by(|a, b| a.0.cmp(&b.0));
        samples
    };
    let (ours, theirs) = (steady(&m), steady(&open));
    assert_eq!(ours, theirs);

    // Still healthy after the scenario; on shutdown the replica no longer leads.
    assert_eq!(status_of(&http, &format!("{base}/healthz")).await, 200);
    assert_eq!(status_of(&http, &format!("{base}/readyz")).await, 200);
    stop_controller.send_replace(true);
    tokio::time::timeout(WAIT, operator)
        .await
        .expect("the operator stops")
        .unwrap()
        .unwrap();
    let after = scrape_until(&http, &base, "bbo_leader 0", |m| {
        m.value("bbo_leader", &[]) == 0.0
    })
    .await;
    assert_eq!(after.value("bbo_leader", &[]), 0.0);
    assert_eq!(
        status_of(&http, &format!("{base}/readyz")).await,
        503,
        "not ready without a running controller"
    );
    stop_server.send_replace(true);
    server.await.unwrap().unwrap();
}

/// A controller dropped mid-operation (a leader losing its Lease: its work is dropped, then
/// restarted when it wins the Lease back in the same process) reports no resources while it
/// does not lead, and its next term counts from its own watch: the operation that ended in
/// between does not stay counted in flight. A graceful stop forgets them as well.
#[tokio::test]
async fn the_gauges_start_over_with_each_leader_term() {
    const NAME: &str = "termbackup";
    let latency = Duration::from_secs(1);
    let mut config = emulator_config(latency);
    add_accounts(&mut config, &[NAME]);
    let h = Harness::start(config).await;
    let create_in_flight = r#"bbo_operations_in_flight{action="Create"} 1"#;

    let first = h.controller(test_timing());
    h.create(NAME, spec(&account(NAME), "BlobBackup-Policy"));
    h.wait_metrics(&[create_in_flight, r#"bbo_instances_ready{ready="false"} 1"#])
        .await;
    first.kill().await;
    let value = |name: &str, labels: &[(&str, &str)]| {
        let text = h.metrics.encode(ExpositionFormat::PrometheusText).unwrap();
        parse_exposition(&text).value(name, labels)
    };
    assert_eq!(
        value("bbo_operations_in_flight", &[("action", "Create")]),
        0.0
    );
    for ready in ["false", "true"] {
        assert_eq!(value("bbo_instances_ready", &[("ready", ready)]), 0.0);
    }

    // The PUT's operation ends while nobody leads; the next term finds it done.
    tokio::time::sleep(latency + Duration::from_millis(200)).await;
    let second = h.controller(test_timing());
    h.wait_ready(NAME).await;
    h.wait_metrics(&[
        r#"bbo_operations_in_flight{action="Create"} 0"#,
        r#"bbo_instances_ready{ready="true"} 1"#,
        r#"bbo_instances_ready{ready="false"} 0"#,
    ])
    .await;
    assert_eq!(h.azure(ops::CREATE_OR_UPDATE), 1, "one PUT over both terms");
    second.stop().await;
    assert_eq!(value("bbo_instances_ready", &[("ready", "true")]), 0.0);
}
