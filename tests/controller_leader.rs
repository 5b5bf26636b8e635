//! Two operator replicas, each the real controller under leader election, against the
//! in-memory Kubernetes API and one vault emulator: only the replica that holds the Lease
//! reconciles, and when it stops, the other takes the Lease and reconciles from then on.
//!
//! Each replica has its own Kubernetes client, whose requests it records, its own metrics
//! (its ARM client reports there) and its own `reportingInstance`, so every write and every
//! Azure call can be traced to the replica that made it.

use crate::support;

use std::time::{Duration, Instant};

use blob_backup_operator::arm::operation_ids as ops;
use blob_backup_operator::controller::REPORTING_CONTROLLER;
use blob_backup_operator::controller::leader::LeaderOutcome;
use blob_backup_operator::telemetry::Role;
use http::Method;
use serde_json::Value;
use support::harness::{
    Harness, LEASE, LEASE_DURATION, NS, RESOURCE, Replica, RequestLog, WAIT, account, is_write,
    spec,
};

/// Slack for scheduling and API round trips on a busy machine.
const SLACK: Duration = Duration::from_millis(1500);
/// Resource names, also the names of the storage accounts they protect.
const FIRST: [&str; 3] = ["first", "second", "third"];
const AFTER_HANDOVER: &str = "fourth";

/// Waits until `done` holds, re-checking on every API change and every 20 ms.
async fn wait_until(h: &Harness, what: &str, within: Duration, done: impl Fn() -> bool) {
    if h.api.wait_for(within, |_| done()).await.is_err() {
        panic!("{what}: not within {within:?}");
    }
}

fn lease_holder(h: &Harness) -> Option<String> {
    h.api.get("leases", NS, LEASE)?["spec"]["holderIdentity"]
        .as_str()
        .map(str::to_owned)
}

/// Asserts that every Event about `name` was reported by replica `by`.
fn assert_events_from(h: &Harness, name: &str, by: &str) -> Vec<String> {
    let events = h.api.events_for(NS, name);
    assert!(!events.is_empty(), "{name}: no events");
    for event in &events {
        assert_eq!(
            (
                event["reportingController"].as_str(),
                event["reportingInstance"].as_str()
            ),
            (Some(REPORTING_CONTROLLER), Some(by)),
            "{name}: {event:#}"
        );
    }
    events
        .iter()
        .filter_map(|e| e["reason"].as_str().map(str::to_owned))
        .collect()
}

fn status_writes(log: &RequestLog, skip: usize, name: &str) -> Vec<(Method, String)> {
    log.touching(skip, &format!("/{RESOURCE}/{name}/status"))
}

#[tokio::test]
async fn only_the_leader_reconciles_and_stopping_it_hands_over() {
    let h = Harness::with_accounts(&[&FIRST[..], &[AFTER_HANDOVER]].concat()).await;

    let a = Replica::start(&h, "replica-a");
    wait_until(&h, "replica-a leads and watches", WAIT, || {
        a.health.role() == Role::Leader && a.health.is_ready()
    })
    .await;
    let b = Replica::start(&h, "replica-b");
    wait_until(&h, "replica-b stands by", WAIT, || {
        b.health.role() == Role::Standby
    })
    .await;
    assert_eq!(lease_holder(&h).as_deref(), Some(a.name));

    for name in FIRST {
        h.create(name, spec(&account(name), "BlobBackup-Policy"));
    }
    for name in FIRST {
        h.wait_ready(name).await;
    }

    // Only the leader acted: its Events, its Azure calls, its writes.
    for name in FIRST {
        let reasons = assert_events_from(&h, name, a.name);
        assert!(reasons.iter().any(|r| r == "Protected"), "{reasons:?}");
    }
    assert_eq!(h.azure(ops::VALIDATE_FOR_BACKUP), FIRST.len() as u64);
    assert_eq!(h.azure(ops::CREATE_OR_UPDATE), FIRST.len() as u64);
    assert!(a.called_azure());
    assert!(!b.called_azure(), "the standby called Azure");
    for name in FIRST {
        assert!(!status_writes(&a.requests, 0, name).is_empty());
    }
    let standby_calls = b.requests.touching(0, "/");
    assert!(
        standby_calls
            .iter()
            .all(|(_, path)| path.starts_with("/apis/coordination.k8s.io/v1/")),
        "the standby touched more than its Lease: {standby_calls:?}"
    );
    assert!(
        standby_calls.iter().any(|(m, _)| m == Method::GET),
        "the standby watches the Lease"
    );
    assert!(a.leads() && !b.leads());
    assert!(a.health.is_ready() && b.health.is_ready());

    // The leader stops (as on SIGTERM): it releases the Lease and the standby takes it.
    let a_name = a.name;
    let a_requests = a.requests.clone();
    let stopping = Instant::now();
    assert_eq!(a.shut_down().await, LeaderOutcome::Shutdown);
    let a_sent = a_requests.len();
    wait_until(&h, "replica-b leads", LEASE_DURATION + SLACK, || {
        b.health.role() == Role::Leader
    })
    .await;
    let took = stopping.elapsed();
    assert!(took <= LEASE_DURATION + SLACK, "handover took {took:?}");
    assert_eq!(lease_holder(&h).as_deref(), Some(b.name));
    assert!(b.leads());
    let b_before = b.requests.len();

    // From now on replica-b reconciles: a new resource, and a deletion.
    h.create(
        AFTER_HANDOVER,
        spec(&account(AFTER_HANDOVER), "BlobBackup-Policy"),
    );
    h.wait_ready(AFTER_HANDOVER).await;
    let reasons = assert_events_from(&h, AFTER_HANDOVER, b.name);
    assert!(reasons.iter().any(|r| r == "Protected"), "{reasons:?}");

    let deleted = FIRST[0];
    let before_delete: Vec<Value> = h.api.events_for(NS, deleted);
    h.api.delete(RESOURCE, NS, deleted).unwrap();
    h.wait_gone(deleted).await;
    let after_delete: Vec<Value> = h
        .api
        .events_for(NS, deleted)
        .into_iter()
        .filter(|e| !before_delete.contains(e))
        .collect();
    let deletion: Vec<(&str, &str)> = after_delete
        .iter()
        .map(|e| {
            (
                e["reason"].as_str().unwrap_or_default(),
                e["reportingInstance"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    for reason in ["Deleting", "Deleted"] {
        assert!(
            deletion.contains(&(reason, b.name)),
            "{reason} by {}: {deletion:?}",
            b.name
        );
    }
    assert!(deletion.iter().all(|(_, by)| *by == b.name), "{deletion:?}");
    assert!(
        b.requests
            .touching(b_before, &format!("/{RESOURCE}/{deleted}"))
            .iter()
            .any(|(method, _)| is_write(method)),
        "replica-b removed the finalizer"
    );

    // Exactly one validation and one PUT per resource over both replicas; one DELETE.
    assert_eq!(h.azure(ops::VALIDATE_FOR_BACKUP), FIRST.len() as u64 + 1);
    assert_eq!(h.azure(ops::CREATE_OR_UPDATE), FIRST.len() as u64 + 1);
    assert_eq!(h.azure(ops::DELETE), 1);
    // The new leader found the others as they were: it rewrote none of them.
    for name in &FIRST[1..] {
        assert_eq!(status_writes(&b.requests, 0, name), Vec::new(), "{name}");
        h.wait_ready(name).await;
    }
    // The old leader sent nothing once stopped.
    assert_eq!(a_requests.len(), a_sent, "{a_name} kept talking to the API");

    assert_eq!(b.shut_down().await, LeaderOutcome::Shutdown);
    assert_ne!(lease_holder(&h).as_deref(), Some("replica-b"), "released");
}
