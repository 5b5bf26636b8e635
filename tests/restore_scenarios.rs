//! BlobRestore scenarios: the real controller (`controller::run`, which runs the restore
//! controller next to the BlobBackupInstance one) against the in-memory Kubernetes API and the
//! vault emulator over HTTP. The restore request is sent at most once per BlobRestore, also
//! when the controller dies between sending it and recording Azure's answer, or while the
//! restore runs. Every wait is a condition with a timeout, never a sleep.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use blob_backup_operator::controller::{ControllerConfig, WriteBudget};
use dataprotection::operation_ids as ops;
use serde_json::{Value, json};
use testkit::fake_apiserver::Verb;
use testkit::scenario::{
    Harness, NS, Replica, RunningController, WAIT, account, add_accounts, condition,
    controller_config, emulator_config, reasons, spec, test_timing,
};
use vault_emulator::ThrottleSettings;

const RESTORES: &str = "blobrestores";

/// The world of the scenarios, with a vaulted backup of `vaultedacct` (containers images and
/// logs), Ready, under a running controller; operations take `latency`.
async fn vaulted_backup(latency: Duration) -> Harness {
    let mut config = emulator_config(latency);
    add_accounts(&mut config, &["restoredblobs"]);
    Harness::start(config).await
}

/// [`vaulted_backup`] under a running controller, the backup Ready.
async fn backed_up(latency: Duration) -> (Harness, RunningController) {
    let h = vaulted_backup(latency).await;
    let controller = h.controller(test_timing());
    create_backup(&h);
    h.wait_ready("vaulted").await;
    (h, controller)
}

fn create_backup(h: &Harness) {
    let mut backup = spec(&account("vaultedacct"), "BlobVaulted-Policy");
    backup["vaultedBackup"] = json!({"containers": ["images", "logs"]});
    h.create("vaulted", backup);
}

fn create_restore(h: &Harness, name: &str, spec: Value) {
    h.api
        .create(json!({
            "apiVersion": "dataprotection.blobbackup.io/v1alpha1",
            "kind": "BlobRestore",
            "metadata": {"name": name, "namespace": NS},
            "spec": spec,
        }))
        .expect("created");
}

fn latest_images() -> Value {
    json!({"backupInstanceRef": {"name": "vaulted"}, "recoveryPoint": "latest", "containers": ["images"]})
}

async fn wait_restore(h: &Harness, name: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    match h.api.wait_for_object(RESTORES, NS, name, WAIT, done).await {
        Ok(object) => object,
        Err(_) => panic!(
            "{name}: {what} not reached; now {:#}\nevents: {:?}",
            h.api.get(RESTORES, NS, name).unwrap_or(Value::Null),
            reasons(h.api.events_for(NS, name))
        ),
    }
}

fn has_condition(object: &Value, type_: &str, status: &str, reason: &str) -> bool {
    condition(object, type_).is_some_and(|c| c["status"] == status && c["reason"] == reason)
}

/// Every request the emulator has served.
fn azure_calls(h: &Harness) -> u64 {
    let counts = h.emulator.admin().request_counts();
    counts
        .values()
        .flat_map(|by_status| by_status.values())
        .sum()
}

/// Exactly one validation and one restore request reached Azure.
#[track_caller]
fn assert_one_restore(h: &Harness) {
    assert_eq!(
        h.azure(ops::VALIDATE_FOR_RESTORE),
        1,
        "exactly one validation"
    );
    assert_eq!(
        h.azure(ops::TRIGGER_RESTORE),
        1,
        "exactly one restore request"
    );
}

/// Reconciles of restore `name` so far: each one starts with a fresh read.
fn reads(h: &Harness, name: &str) -> u64 {
    h.api.request_count_for(Verb::Get, RESTORES, None, NS, name)
}

#[tokio::test]
async fn a_vaulted_restore_runs_to_succeeded_with_an_event_per_step() {
    let (h, controller) = backed_up(Duration::from_millis(100)).await;
    create_restore(&h, "images-back", latest_images());
    let done = wait_restore(&h, "images-back", "Ready=True (Restored)", |o| {
        has_condition(o, "Ready", "True", "Restored")
    })
    .await;
    let status = &done["status"];
    assert_eq!(status["phase"], "Succeeded");
    assert_eq!(status["restorePoint"], "rp-0");
    assert!(
        status["jobId"].as_str().is_some_and(|j| !j.is_empty()),
        "{status}"
    );
    assert!(status["startTime"].is_string() && status["endTime"].is_string());
    assert_eq!(status["operation"]["action"], "Restore");
    assert_eq!(status["operation"]["status"], "Succeeded");
    assert_eq!(status["observedGeneration"], 1);
    assert!(has_condition(&done, "Stalled", "False", "Restored"));
    assert_eq!(
        reasons(h.api.events_for(NS, "images-back")),
        [
            "CheckingRestorePoint",
            "ValidatingRestore",
            "Restoring",
            "Restored"
        ]
    );
    assert_eq!(h.azure(ops::VALIDATE_FOR_RESTORE), 1);
    assert_eq!(h.azure(ops::TRIGGER_RESTORE), 1);
    assert!(h.azure(ops::JOBS_GET) >= 1);

    // Deleting it touches nothing in Azure (no finalizer: it is gone at once).
    let calls = azure_calls(&h);
    h.api.delete(RESTORES, NS, "images-back").unwrap();
    assert!(h.api.get(RESTORES, NS, "images-back").is_none());
    let after = azure_calls(&h);
    assert_eq!(after, calls);
    controller.stop().await;
}

/// The controller dies after sending the restore and before recording Azure's answer (here:
/// every write of that answer fails, then the process is killed). The next controller finds the
/// intent without an answer and never sends the restore again.
#[tokio::test]
async fn a_controller_dying_between_the_restore_and_its_answer_never_sends_it_twice() {
    let h = vaulted_backup(Duration::from_millis(100)).await;
    let admin = h.emulator.admin().clone();
    // Once the restore has reached Azure, every status write of the restore fails until the
    // first controller is gone: it never records Azure's answer.
    let first_alive = Arc::new(AtomicBool::new(true));
    let armed = first_alive.clone();
    h.api.fail_next_where(u64::MAX, 503, move |info| {
        armed.load(Ordering::SeqCst)
            && info.is_resource(RESTORES)
            && info.subresource.as_deref() == Some("status")
            && admin.request_count(ops::TRIGGER_RESTORE) > 0
    });
    let first = h.controller(test_timing());
    create_backup(&h);
    h.wait_ready("vaulted").await;
    create_restore(&h, "images-back", latest_images());
    let recorded = wait_restore(&h, "images-back", "the restore's intent", |o| {
        o["status"]["operation"]["action"] == "Restore"
    })
    .await;
    assert_eq!(recorded["status"]["operation"]["status"], "Pending");
    assert_eq!(recorded["status"]["phase"], "Restoring");
    h.api
        .wait_for(WAIT, |_| h.azure(ops::TRIGGER_RESTORE) == 1)
        .await
        .expect("the restore reached Azure");
    first.kill().await;
    first_alive.store(false, Ordering::SeqCst);

    let second = h.controller(test_timing());
    let stalled = wait_restore(
        &h,
        "images-back",
        "Stalled=True (RestoreOutcomeUnknown)",
        |o| has_condition(o, "Stalled", "True", "RestoreOutcomeUnknown"),
    )
    .await;
    let message = condition(&stalled, "Ready").unwrap()["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(message.contains("never sent twice"), "{message}");
    assert_eq!(stalled["status"]["phase"], "Restoring");
    // Two more reconciles after the backoff: still one restore.
    let seen = reads(&h, "images-back");
    h.api
        .wait_for(WAIT, |_| reads(&h, "images-back") >= seen + 2)
        .await
        .expect("reconciled again");
    assert_eq!(
        h.azure(ops::TRIGGER_RESTORE),
        1,
        "exactly one restore request"
    );
    assert!(
        reasons(h.api.events_for(NS, "images-back")).contains(&"RestoreOutcomeUnknown".to_string())
    );
    second.stop().await;
}

/// The controller dies while the restore runs in Azure (its poll URL recorded): the next one
/// resumes that operation, follows the job to its end, and sends nothing again.
#[tokio::test]
async fn a_controller_killed_while_the_restore_runs_resumes_it() {
    let (h, first) = backed_up(Duration::from_millis(1500)).await;
    create_restore(&h, "images-back", latest_images());
    let running = wait_restore(&h, "images-back", "Restore in progress", |o| {
        o["status"]["operation"]["action"] == "Restore"
            && o["status"]["operation"]["status"] == "InProgress"
    })
    .await;
    first.kill().await;
    assert_eq!(h.azure(ops::TRIGGER_RESTORE), 1);

    let second = h.controller(test_timing());
    let done = wait_restore(&h, "images-back", "Succeeded", |o| {
        o["status"]["phase"] == "Succeeded"
    })
    .await;
    assert_eq!(
        done["status"]["operation"]["pollUrl"],
        running["status"]["operation"]["pollUrl"]
    );
    assert_one_restore(&h);
    second.stop().await;
}

/// A restore waits, Stalled and without a request to Azure, until its source is Ready.
#[tokio::test]
async fn a_restore_waits_for_its_source_then_proceeds() {
    let h = vaulted_backup(Duration::from_millis(100)).await;
    let controller = h.controller(test_timing());
    create_restore(&h, "images-back", latest_images());
    let stalled = wait_restore(&h, "images-back", "Stalled=True (SourceNotReady)", |o| {
        has_condition(o, "Stalled", "True", "SourceNotReady")
    })
    .await;
    assert_eq!(stalled["status"]["phase"], "Pending");
    let calls = azure_calls(&h);
    assert_eq!(
        calls, 0,
        "nothing is asked of Azure for a source that is not Ready"
    );

    create_backup(&h);
    wait_restore(&h, "images-back", "Succeeded", |o| {
        o["status"]["phase"] == "Succeeded"
    })
    .await;
    assert_eq!(h.azure(ops::TRIGGER_RESTORE), 1);
    controller.stop().await;
}

/// Azure's restore job fails: the restore is Failed for good, with Azure's error.
#[tokio::test]
async fn a_failed_job_fails_the_restore_with_azures_error() {
    let (h, controller) = backed_up(Duration::from_millis(100)).await;
    h.emulator.admin().fail_next_restore(
        "UserErrorTargetContainersExistOnAccount",
        "The containers being restored already exist on the target storage account.",
    );
    create_restore(
        &h,
        "images-elsewhere",
        json!({"backupInstanceRef": {"name": "vaulted"}, "recoveryPoint": "latest", "containers": ["images"],
               "targetStorageAccount": {"id": account("restoredblobs"), "location": "westus"}}),
    );
    let failed = wait_restore(&h, "images-elsewhere", "Failed", |o| {
        o["status"]["phase"] == "Failed"
    })
    .await;
    assert!(has_condition(&failed, "Stalled", "True", "RestoreFailed"));
    let message = condition(&failed, "Ready").unwrap()["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        message.contains("UserErrorTargetContainersExistOnAccount"),
        "{message}"
    );
    assert!(
        reasons(h.api.events_for(NS, "images-elsewhere")).contains(&"RestoreFailed".to_string())
    );
    assert_eq!(h.azure(ops::TRIGGER_RESTORE), 1);
    controller.stop().await;
}

/// The leader hands over while the restore runs in Azure: the new leader follows the recorded
/// operation to the end, and the restore is sent once.
#[tokio::test]
async fn a_leader_change_mid_restore_sends_no_second_restore() {
    let h = vaulted_backup(Duration::from_millis(1500)).await;
    let a = Replica::start(&h, "replica-a");
    h.api
        .wait_for(WAIT, |_| a.leads())
        .await
        .expect("replica-a leads");
    let b = Replica::start(&h, "replica-b");
    create_backup(&h);
    h.wait_ready("vaulted").await;
    create_restore(&h, "images-back", latest_images());
    wait_restore(&h, "images-back", "Restore in progress", |o| {
        o["status"]["operation"]["action"] == "Restore"
            && o["status"]["operation"]["status"] == "InProgress"
    })
    .await;
    a.shut_down().await;
    let done = wait_restore(&h, "images-back", "Succeeded", |o| {
        o["status"]["phase"] == "Succeeded"
    })
    .await;
    assert!(b.leads(), "replica-b took over");
    assert_eq!(done["status"]["operation"]["status"], "Succeeded");
    assert_one_restore(&h);
    b.shut_down().await;
}

/// An operational backup restored to a point in time: the point is checked against Azure's
/// restorable time ranges, validated, restored, and the job followed to its end.
#[tokio::test]
async fn an_operational_restore_to_a_point_in_time_succeeds() {
    let h = vaulted_backup(Duration::from_millis(100)).await;
    let controller = h.controller(test_timing());
    h.create(
        "operational",
        spec(&account("msblobbackup"), "BlobBackup-Policy"),
    );
    h.wait_ready("operational").await;
    // A point after protection started (ranges start at a whole second) and in the past.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let point = jiff::Timestamp::now() - jiff::SignedDuration::from_millis(50);
    create_restore(
        &h,
        "as-of-now",
        json!({"backupInstanceRef": {"name": "operational"}, "pointInTime": point.to_string()}),
    );
    let done = wait_restore(&h, "as-of-now", "Ready=True (Restored)", |o| {
        has_condition(o, "Ready", "True", "Restored")
    })
    .await;
    assert_eq!(done["status"]["phase"], "Succeeded");
    assert_one_restore(&h);
    controller.stop().await;
}

/// [`backed_up`] under a controller whose copy of the subscription's write budget holds
/// `burst` writes, one more every `refill` (the one both controllers spend), with the restore
/// "images-back" of the latest point created once the backup is Ready.
async fn paced_restore(burst: u32, refill: Duration) -> (Harness, RunningController) {
    let h = vaulted_backup(Duration::from_millis(100)).await;
    let config = ControllerConfig {
        write_budget: WriteBudget { burst, refill },
        ..controller_config(test_timing(), "test")
    };
    let controller = h.controller_configured(config, dataprotection::DEFAULT_API_VERSION);
    create_backup(&h);
    h.wait_ready("vaulted").await;
    create_restore(&h, "images-back", latest_images());
    (h, controller)
}

/// The backup's validation and PUT spend the whole budget (two writes, the next in an hour):
/// the restore's validation waits for its slot in the same budget. Nothing of it is sent or
/// recorded (an intent recorded for a write never sent would read as "maybe sent"), what was
/// learned before it is (the restore point), and the restore is not reconciled again before
/// its slot. (Before: the restore controller sent its POSTs unpaced, at once.)
#[tokio::test]
async fn a_restore_waits_for_its_slot_in_the_budget_the_backups_spent() {
    let (h, controller) = paced_restore(2, Duration::from_secs(3600)).await;
    let waiting = wait_restore(&h, "images-back", "the restore point recorded", |o| {
        o["status"]["restorePoint"].is_string()
    })
    .await;
    assert_eq!(h.azure(ops::VALIDATE_FOR_RESTORE), 0, "validations sent");
    assert_eq!(h.azure(ops::TRIGGER_RESTORE), 0, "restores sent");
    assert!(
        waiting["status"]["operation"].is_null(),
        "no intent recorded for a write not sent: {}",
        waiting["status"]
    );
    assert_eq!(
        reads(&h, "images-back"),
        1,
        "reconciled again before its slot"
    );
    controller.stop().await;
}

/// The validation takes the budget's last write; the restore waits for its slot (in an hour).
/// The validation's success is recorded meanwhile, without the restore's intent, so the
/// reconcile at the slot restores at once (instead of polling the validation again, or, had
/// Azure answered it at once, validating again with the slot).
#[tokio::test]
async fn a_validation_that_succeeded_is_recorded_while_the_restore_waits() {
    let (h, controller) = paced_restore(3, Duration::from_secs(3600)).await;
    let waiting = wait_restore(
        &h,
        "images-back",
        "the validation recorded Succeeded",
        |o| {
            let op = &o["status"]["operation"];
            op["action"] == "ValidateRestore" && op["status"] == "Succeeded"
        },
    )
    .await;
    assert_eq!(h.azure(ops::VALIDATE_FOR_RESTORE), 1, "validations sent");
    assert_eq!(h.azure(ops::TRIGGER_RESTORE), 0, "restores sent");
    assert_eq!(
        waiting["status"]["phase"], "Validating",
        "{}",
        waiting["status"]
    );
    controller.stop().await;
}

/// A restore whose validation and restore each wait for a slot (one write a second after the
/// backup's two) runs to Succeeded with each POST sent once, reconciled at its slots rather
/// than polling the budget.
#[tokio::test]
async fn a_restore_that_waited_for_its_slots_is_sent_once() {
    let (h, controller) = paced_restore(2, Duration::from_secs(1)).await;
    wait_restore(&h, "images-back", "Ready=True (Restored)", |o| {
        has_condition(o, "Ready", "True", "Restored")
    })
    .await;
    assert_one_restore(&h);
    // Requeued every retry_after_min (50 ms) instead, it would be some 40.
    let reconciles = reads(&h, "images-back");
    assert!(reconciles <= 15, "{reconciles} reconciles");
    controller.stop().await;
}

/// A 429 on a restore's POST counts in `bbo_throttling_waits_total` under its operation, as a
/// backup's does (before, only the backups' were counted).
#[tokio::test]
async fn a_throttled_restore_post_counts_in_the_throttling_metric() {
    let (h, controller) = backed_up(Duration::from_millis(100)).await;
    // Azure's bucket holds one write, the next in 1,000 s; the controller's copy holds the
    // default 200: the validation goes through, the restore is refused with a 429.
    h.emulator
        .admin()
        .set_throttle(Some(ThrottleSettings {
            budget: 1,
            refill_per_second: 0.001,
        }))
        .unwrap();
    create_restore(&h, "images-back", latest_images());
    h.wait_metrics(&[&format!(
        r#"bbo_throttling_waits_total{{operation="{}"}} 1"#,
        ops::TRIGGER_RESTORE
    )])
    .await;
    controller.stop().await;
}
