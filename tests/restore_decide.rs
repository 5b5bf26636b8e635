//! The BlobRestore decision, table by table: the flow of DESIGN.md section 10 step by step,
//! every Stalled case with no restore sent, and the rule that a recorded restore intent is
//! never sent again.

use std::time::Duration;

use blob_backup_operator::api::{
    BlobBackupInstance, BlobRestore, BlobRestoreStatus, OperationAction, OperationPhase,
    RestorePhase,
};
use blob_backup_operator::controller::decide::{
    Access, AzureCall, AzureErrorDetail, ErrorClass, EventType, ObservedError, PollHandle,
    PolledStatus, Reason, Requeue, Timing,
};
use blob_backup_operator::controller::restore::decide::{
    Action, Decision, Observation, Source, SourceInstance, authorise, decide,
};
use dataprotection::{BackupInstanceId, JobState, RestorableTimeRange, StorageAccountId};
use jiff::Timestamp;
use serde_json::{Value, json};

const INSTANCE: &str = "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/TestBkpVaultRG/providers/Microsoft.DataProtection/backupVaults/testBkpVault/backupInstances/msblobbackup-uid";
const ACCOUNT: &str = "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/RG-BlobBackup/providers/Microsoft.Storage/storageAccounts/msblobbackup";
const POLL: &str = "https://management.azure.com/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/TestBkpVaultRG/providers/Microsoft.DataProtection/backupVaults/testBkpVault/operationStatus/op1";
const POINT: &str = "2026-12-01T10:00:00Z";

fn now() -> Timestamp {
    "2026-12-03T00:00:00Z".parse().unwrap()
}

fn restore_with(spec: Value) -> BlobRestore {
    serde_json::from_value(json!({
        "apiVersion": "dataprotection.blobbackup.io/v1alpha1",
        "kind": "BlobRestore",
        "metadata": {"name": "images-before-incident", "namespace": "team-a", "generation": 1, "uid": "u1"},
        "spec": spec,
    }))
    .unwrap()
}

fn operational() -> BlobRestore {
    restore_with(json!({"backupInstanceRef": {"name": "msblobbackup"}, "pointInTime": POINT}))
}

fn vaulted(point: &str) -> BlobRestore {
    restore_with(
        json!({"backupInstanceRef": {"name": "msblobbackup"}, "recoveryPoint": point, "containers": ["images"]}),
    )
}

fn source(vaulted: Option<&[&str]>) -> Source {
    Source::Authorised(SourceInstance {
        instance: BackupInstanceId::parse(INSTANCE).unwrap(),
        account: StorageAccountId::parse(ACCOUNT).unwrap(),
        location: "westus".into(),
        vaulted_containers: vaulted.map(|c| c.iter().map(|s| s.to_string()).collect()),
    })
}

fn settings() -> Timing {
    Timing::default()
}

/// One decision step; `restore` takes the decided status, as the controller records it.
fn step(restore: &mut BlobRestore, source: &Source, observation: &Observation) -> Decision {
    let decision = decide(restore, source, observation, now(), &settings());
    if let Some(status) = &decision.status {
        restore.status = Some(status.clone());
    }
    decision
}

fn status(restore: &BlobRestore) -> &BlobRestoreStatus {
    restore.status.as_ref().expect("a status")
}

/// `(type, status, reason)` of Ready, Reconciling, Stalled.
fn health(restore: &BlobRestore) -> Vec<(String, String, String)> {
    status(restore)
        .conditions
        .iter()
        .map(|c| (c.type_.clone(), format!("{:?}", c.status), c.reason.clone()))
        .collect()
}

fn stalled_with(restore: &BlobRestore, reason: Reason) {
    let expected = ["Ready", "Reconciling", "Stalled"]
        .iter()
        .zip(["False", "False", "True"])
        .map(|(t, s)| (t.to_string(), s.to_string(), reason.as_str().to_string()))
        .collect::<Vec<_>>();
    assert_eq!(health(restore), expected);
}

fn progressing_with(restore: &BlobRestore, reason: Reason) {
    let expected = ["Ready", "Reconciling", "Stalled"]
        .iter()
        .zip(["False", "True", "False"])
        .map(|(t, s)| (t.to_string(), s.to_string(), reason.as_str().to_string()))
        .collect::<Vec<_>>();
    assert_eq!(health(restore), expected);
}

fn events(decision: &Decision) -> Vec<(EventType, Reason)> {
    decision
        .events
        .iter()
        .map(|e| (e.type_, e.reason))
        .collect()
}

fn range(start: &str, end: &str) -> RestorableTimeRange {
    RestorableTimeRange {
        start_time: start.into(),
        end_time: end.into(),
        object_type: Some("RestorableTimeRange".into()),
    }
}

fn error(class: ErrorClass, status: Option<u16>, code: &str) -> ObservedError {
    ObservedError {
        class,
        http_status: status,
        retry_after: None,
        azure: AzureErrorDetail {
            code: code.into(),
            message: format!("{code} happened"),
            ..AzureErrorDetail::default()
        },
    }
}

fn started(action: OperationAction) -> Observation {
    Observation::Started {
        action,
        poll: Some(PollHandle {
            url: POLL.into(),
            retry_after: Some(Duration::from_secs(10)),
        }),
        job_id: None,
    }
}

fn polled(status: PolledStatus, job: Option<&str>) -> Observation {
    Observation::Polled {
        status,
        retry_after: None,
        job_id: job.map(str::to_string),
    }
}

fn is_restore(action: &Action) -> bool {
    matches!(action, Action::Restore { .. })
}

/// Checks the point, validates, restores (once) and follows the job: the restore ends up
/// with `restore`'s status in Restoring, its intent recorded, and the Restore action decided.
fn up_to_the_restore(restore: &mut BlobRestore, source: &Source, point: Observation) -> Decision {
    let first = step(restore, source, &Observation::None);
    assert!(
        matches!(
            first.action,
            Action::FindRanges { .. } | Action::ListRecoveryPoints(_)
        ),
        "{:?}",
        first.action
    );
    let found = step(restore, source, &point);
    assert_eq!(found.action, Action::None);
    assert_eq!(
        found.requeue,
        Requeue::After(Duration::ZERO),
        "carries on at once"
    );
    let validate = step(restore, source, &Observation::None);
    assert!(
        matches!(validate.action, Action::ValidateRestore { .. }),
        "{:?}",
        validate.action
    );
    step(restore, source, &started(OperationAction::ValidateRestore));
    let restore_decision = step(restore, source, &polled(PolledStatus::Succeeded, None));
    assert!(
        is_restore(&restore_decision.action),
        "{:?}",
        restore_decision.action
    );
    restore_decision
}

#[test]
fn operational_restore_runs_step_by_step_to_succeeded() {
    let mut restore = operational();
    let source = source(None);

    // 1. Check the point: restorable ranges around it.
    let first = step(&mut restore, &source, &Observation::None);
    match &first.action {
        Action::FindRanges { from, to, .. } => {
            assert!(*from < POINT.parse::<Timestamp>().unwrap() && *to == now());
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(status(&restore).phase, Some(RestorePhase::Pending));
    progressing_with(&restore, Reason::CheckingRestorePoint);
    assert!(first.events.is_empty());

    // 2. The point is in range: recorded, with the instance, before anything else.
    let ranges = Observation::Ranges(vec![range(
        "2026-11-30T00:00:00.0000000Z",
        "2026-12-02T23:00:00Z",
    )]);
    let found = step(&mut restore, &source, &ranges);
    assert_eq!(
        events(&found),
        vec![(EventType::Normal, Reason::CheckingRestorePoint)]
    );
    assert_eq!(status(&restore).restore_point.as_deref(), Some(POINT));
    assert_eq!(
        status(&restore).backup_instance_id.as_deref(),
        Some(INSTANCE)
    );

    // 3. Validate: the intent is recorded (Pending) with the request.
    let validate = step(&mut restore, &source, &Observation::None);
    match &validate.action {
        Action::ValidateRestore { request, instance } => {
            assert_eq!(instance.to_string(), INSTANCE);
            assert_eq!(
                request.object_type,
                "AzureBackupRecoveryTimeBasedRestoreRequest"
            );
            assert_eq!(
                request.recovery_point_time.as_deref(),
                Some("2026-12-01T10:00:00.0000000Z")
            );
            assert_eq!(request.source_resource_id.as_deref(), Some(ACCOUNT));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        events(&validate),
        vec![(EventType::Normal, Reason::ValidatingRestore)]
    );
    assert_eq!(status(&restore).phase, Some(RestorePhase::Validating));
    let op = status(&restore).operation.clone().unwrap();
    assert_eq!(
        (op.action, op.status),
        (OperationAction::ValidateRestore, OperationPhase::Pending)
    );

    // Azure accepted it: the poll URL is recorded; polling it comes next.
    step(
        &mut restore,
        &source,
        &started(OperationAction::ValidateRestore),
    );
    let op = status(&restore).operation.clone().unwrap();
    assert_eq!(
        (op.status, op.poll_url.as_deref()),
        (OperationPhase::InProgress, Some(POLL))
    );
    let poll = step(&mut restore, &source, &Observation::None);
    assert_eq!(
        poll.action,
        Action::Poll {
            url: POLL.into(),
            instance: BackupInstanceId::parse(INSTANCE).unwrap()
        }
    );

    // 4. Validated: the restore's intent is recorded and the restore sent.
    let send = step(
        &mut restore,
        &source,
        &polled(PolledStatus::Succeeded, None),
    );
    assert!(is_restore(&send.action));
    assert_eq!(events(&send), vec![(EventType::Normal, Reason::Restoring)]);
    let s = status(&restore);
    assert_eq!(s.phase, Some(RestorePhase::Restoring));
    assert!(s.start_time.is_some());
    let op = s.operation.clone().unwrap();
    assert_eq!(
        (op.action, op.status),
        (OperationAction::Restore, OperationPhase::Pending)
    );

    // 5. Accepted; its operation names the job when it succeeds; the job is followed.
    step(&mut restore, &source, &started(OperationAction::Restore));
    assert_eq!(
        status(&restore)
            .operation
            .as_ref()
            .unwrap()
            .poll_url
            .as_deref(),
        Some(POLL)
    );
    step(
        &mut restore,
        &source,
        &polled(PolledStatus::Succeeded, Some("job-1")),
    );
    assert_eq!(status(&restore).job_id.as_deref(), Some("job-1"));
    let follow = step(&mut restore, &source, &Observation::None);
    assert!(matches!(&follow.action, Action::GetJob { job, .. } if job == "job-1"));
    let running = step(
        &mut restore,
        &source,
        &Observation::Job(Some(JobState::Running {
            raw: "InProgress".into(),
        })),
    );
    assert_eq!(running.requeue, Requeue::After(settings().protection_poll));
    progressing_with(&restore, Reason::Restoring);

    // 6. Completed: Succeeded, Ready, an event; nothing more to do, ever.
    let done = step(
        &mut restore,
        &source,
        &Observation::Job(Some(JobState::Completed)),
    );
    assert_eq!(events(&done), vec![(EventType::Normal, Reason::Restored)]);
    assert_eq!(done.requeue, Requeue::AwaitChange);
    let s = status(&restore);
    assert_eq!(s.phase, Some(RestorePhase::Succeeded));
    assert!(s.end_time.is_some());
    assert_eq!(
        health(&restore)[0],
        ("Ready".into(), "True".into(), "Restored".into())
    );
    assert_eq!(s.observed_generation, Some(1));
    let after = step(&mut restore, &source, &Observation::None);
    assert_eq!(
        (after.action, after.status.is_none(), after.requeue),
        (Action::None, true, Requeue::AwaitChange)
    );
}

/// A recorded restore intent without Azure's answer (a crash, a lost leader term, a lost
/// connection) is never sent again: Stalled, RestoreOutcomeUnknown.
#[test]
fn a_recorded_restore_intent_is_never_sent_again() {
    let mut restore = operational();
    let source = source(None);
    let ranges = Observation::Ranges(vec![range("2026-11-30T00:00:00Z", "2026-12-02T00:00:00Z")]);
    up_to_the_restore(&mut restore, &source, ranges);
    // The controller wrote that status, then stopped before the answer was recorded.
    let mut restarted = restore.clone();
    for observation in [Observation::None, Observation::None] {
        let decision = step(&mut restarted, &source, &observation);
        assert_eq!(decision.action, Action::None, "never sent again");
        stalled_with(&restarted, Reason::RestoreOutcomeUnknown);
    }
    assert_eq!(status(&restarted).phase, Some(RestorePhase::Restoring));

    // The request went out and no answer came back (network, 5xx): the same.
    for error in [
        error(ErrorClass::Transient, None, "ConnectionReset"),
        error(ErrorClass::Transient, Some(503), "ServiceUnavailable"),
    ] {
        let mut lost = restore.clone();
        let decision = step(
            &mut lost,
            &source,
            &Observation::Failed {
                call: AzureCall::Start(OperationAction::Restore),
                error,
            },
        );
        assert_eq!(decision.action, Action::None);
        stalled_with(&lost, Reason::RestoreOutcomeUnknown);
        let again = step(&mut lost, &source, &Observation::None);
        assert_eq!(again.action, Action::None);
    }
    // Even a source that went away changes nothing: the restore follows its record.
    let mut gone = restarted.clone();
    let refused = Source::Refused {
        reason: Reason::SourceNotReady,
        message: "gone".into(),
    };
    assert_eq!(
        step(&mut gone, &refused, &Observation::None).action,
        Action::None
    );
    stalled_with(&gone, Reason::RestoreOutcomeUnknown);
}

/// Azure refused the restore before taking it (4xx) or throttled it (429): it is validated
/// again before it is sent again.
#[test]
fn a_refused_or_throttled_restore_is_validated_again_first() {
    let ranges =
        || Observation::Ranges(vec![range("2026-11-30T00:00:00Z", "2026-12-02T00:00:00Z")]);
    for (error, reason) in [
        (
            error(
                ErrorClass::NeedsPerson,
                Some(400),
                "UserErrorInvalidRecoveryPointInTime",
            ),
            Reason::RestoreRefused,
        ),
        (
            error(
                ErrorClass::Transient,
                Some(429),
                "SubscriptionRequestsThrottled",
            ),
            Reason::AzureThrottled,
        ),
    ] {
        let mut restore = operational();
        let source = source(None);
        up_to_the_restore(&mut restore, &source, ranges());
        let decision = step(
            &mut restore,
            &source,
            &Observation::Failed {
                call: AzureCall::Start(OperationAction::Restore),
                error,
            },
        );
        assert_eq!(decision.action, Action::None);
        assert_eq!(status(&restore).phase, Some(RestorePhase::Validating));
        assert_eq!(health(&restore)[0].2, reason.as_str());
        let op = status(&restore).operation.clone().unwrap();
        assert_eq!(
            (op.action, op.status),
            (OperationAction::Restore, OperationPhase::Failed)
        );
        let next = step(&mut restore, &source, &Observation::None);
        assert!(
            matches!(next.action, Action::ValidateRestore { .. }),
            "{:?}",
            next.action
        );
    }
}

#[test]
fn stalled_cases_send_no_restore() {
    let ranges = |start: &str, end: &str| Observation::Ranges(vec![range(start, end)]);
    // (case, restore, source, observation, reason)
    let cases: Vec<(&str, BlobRestore, Source, Observation, Reason)> = vec![
        (
            "point before every range",
            operational(),
            source(None),
            ranges("2026-12-02T00:00:00Z", "2026-12-02T23:00:00Z"),
            Reason::PointNotRestorable,
        ),
        (
            "no ranges at all",
            operational(),
            source(None),
            Observation::Ranges(vec![]),
            Reason::PointNotRestorable,
        ),
        (
            "source not Ready",
            operational(),
            Source::Refused {
                reason: Reason::SourceNotReady,
                message: "not Ready".into(),
            },
            Observation::None,
            Reason::SourceNotReady,
        ),
        (
            "unknown recovery point",
            vaulted("rp-9"),
            source(Some(&["images"])),
            Observation::RecoveryPoints(vec![("rp-0".into(), Some(now()))]),
            Reason::PointNotRestorable,
        ),
        (
            "latest without any recovery point",
            vaulted("latest"),
            source(Some(&["images"])),
            Observation::RecoveryPoints(vec![]),
            Reason::PointNotRestorable,
        ),
        (
            "Azure refuses to list (403)",
            operational(),
            source(None),
            Observation::Failed {
                call: AzureCall::Get,
                error: error(ErrorClass::NeedsPerson, Some(403), "AuthorizationFailed"),
            },
            Reason::AccessDenied,
        ),
    ];
    for (case, mut restore, source, observation, reason) in cases {
        if observation != Observation::None {
            step(&mut restore, &source, &Observation::None);
        }
        let decision = step(&mut restore, &source, &observation);
        assert_eq!(decision.action, Action::None, "{case}");
        stalled_with(&restore, reason);
        assert_eq!(
            events(&decision),
            vec![(EventType::Warning, reason)],
            "{case}"
        );
        assert!(
            matches!(decision.requeue, Requeue::After(_)),
            "{case}: retried with backoff"
        );
        // The next look, with nothing new, sends nothing either, and says it only once.
        let again = step(&mut restore, &source, &Observation::None);
        assert!(
            !is_restore(&again.action) && again.action.operation().is_none(),
            "{case}: {:?}",
            again.action
        );
    }
}

#[test]
fn a_failed_validation_stalls_with_azures_reason_and_sends_no_restore() {
    let mut restore = operational();
    let source = source(None);
    step(&mut restore, &source, &Observation::None);
    step(
        &mut restore,
        &source,
        &Observation::Ranges(vec![range("2026-11-30T00:00:00Z", "2026-12-02T00:00:00Z")]),
    );
    step(&mut restore, &source, &Observation::None);
    step(
        &mut restore,
        &source,
        &started(OperationAction::ValidateRestore),
    );
    let failure = AzureErrorDetail {
        code: "UserErrorMissingRequiredPermissions".into(),
        message: "Appropriate permissions to perform the operation is missing.".into(),
        detail: Some("does not have authorization to perform action 'Microsoft.Authorization/roleAssignments/read' over scope '/x'".into()),
        ..AzureErrorDetail::default()
    };
    let decision = step(
        &mut restore,
        &source,
        &polled(PolledStatus::Failed(failure), None),
    );
    assert_eq!(decision.action, Action::None);
    stalled_with(&restore, Reason::MissingPermissions);
    let message = &status(&restore).conditions[0].message;
    assert!(message.contains("Appropriate permissions"), "{message}");
    assert_eq!(status(&restore).phase, Some(RestorePhase::Validating));
    // After the backoff: validate again (not restore).
    let retry = step(&mut restore, &source, &Observation::None);
    assert!(matches!(retry.action, Action::ValidateRestore { .. }));
}

#[test]
fn bad_specs_stall_naming_the_field_and_wait_for_a_new_resource() {
    let base = json!({"backupInstanceRef": {"name": "msblobbackup"}});
    let with = |extra: Value| {
        let mut spec = base.clone();
        spec.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        restore_with(spec)
    };
    // (case, restore, source, the field the message names)
    let cases = vec![
        (
            "neither point",
            with(json!({})),
            source(None),
            "spec.pointInTime",
        ),
        (
            "both points",
            with(json!({"pointInTime": POINT, "recoveryPoint": "latest"})),
            source(None),
            "spec.pointInTime",
        ),
        (
            "a point in the future",
            with(json!({"pointInTime": "2027-01-01T00:00:00Z"})),
            source(None),
            "spec.pointInTime",
        ),
        (
            "not a time",
            with(json!({"pointInTime": "yesterday"})),
            source(None),
            "spec.pointInTime",
        ),
        (
            "a recovery point of an operational backup",
            with(json!({"recoveryPoint": "latest"})),
            source(None),
            "spec.recoveryPoint",
        ),
        (
            "a container the vaulted backup lacks",
            with(json!({"recoveryPoint": "latest", "containers": ["logs"]})),
            source(Some(&["images"])),
            "spec.containers",
        ),
        (
            "a prefix in a container the vaulted backup lacks",
            with(json!({"recoveryPoint": "latest", "prefixes": ["logs/2026/"]})),
            source(Some(&["images"])),
            "spec.prefixes",
        ),
        (
            "prefixes into another account",
            with(
                json!({"recoveryPoint": "latest", "prefixes": ["images/a"], "targetStorageAccount": {"id": ACCOUNT.replace("msblobbackup", "other"), "location": "westus"}}),
            ),
            source(Some(&["images"])),
            "spec.prefixes",
        ),
        (
            "another account for operational backup",
            with(
                json!({"pointInTime": POINT, "targetStorageAccount": {"id": ACCOUNT.replace("msblobbackup", "other"), "location": "westus"}}),
            ),
            source(None),
            "spec.targetStorageAccount",
        ),
        (
            "a malformed prefix",
            with(json!({"pointInTime": POINT, "prefixes": ["no-slash"]})),
            source(None),
            "spec.prefixes",
        ),
    ];
    for (case, mut restore, source, field) in cases {
        let decision = step(&mut restore, &source, &Observation::None);
        assert_eq!(decision.action, Action::None, "{case}");
        assert_eq!(decision.requeue, Requeue::AwaitChange, "{case}");
        stalled_with(&restore, Reason::InvalidSpec);
        let message = &status(&restore).conditions[0].message;
        assert!(
            message.starts_with(&format!("Invalid spec: {field}:")),
            "{case}: {message}"
        );
    }
}

#[test]
fn vaulted_latest_resolves_to_the_newest_recovery_point() {
    let mut restore = vaulted("latest");
    let source = source(Some(&["images", "logs"]));
    let older: Timestamp = "2026-12-01T00:00:00Z".parse().unwrap();
    let points = Observation::RecoveryPoints(vec![
        ("rp-0".into(), Some(older)),
        ("rp-1".into(), Some(now())),
    ]);
    let send = up_to_the_restore(&mut restore, &source, points);
    assert_eq!(status(&restore).restore_point.as_deref(), Some("rp-1"));
    match send.action {
        Action::Restore { request, .. } => {
            assert_eq!(
                request.object_type,
                "AzureBackupRecoveryPointBasedRestoreRequest"
            );
            assert_eq!(request.recovery_point_id.as_deref(), Some("rp-1"));
            assert_eq!(request.source_data_store_type, "VaultStore");
            let criteria = request.restore_target_info.restore_criteria.unwrap();
            assert_eq!(criteria.len(), 1);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_failed_or_cancelled_job_fails_the_restore_for_good() {
    for job in [
        JobState::Failed(AzureErrorDetail {
            code: "UserErrorTargetContainersExistOnAccount".into(),
            message: "images exists".into(),
            ..AzureErrorDetail::default()
        }),
        JobState::Cancelled,
    ] {
        let mut restore = operational();
        let source = source(None);
        up_to_the_restore(
            &mut restore,
            &source,
            Observation::Ranges(vec![range("2026-11-30T00:00:00Z", "2026-12-02T00:00:00Z")]),
        );
        step(
            &mut restore,
            &source,
            &Observation::Started {
                action: OperationAction::Restore,
                poll: None,
                job_id: Some("job-9".into()),
            },
        );
        assert_eq!(status(&restore).job_id.as_deref(), Some("job-9"));
        let decision = step(&mut restore, &source, &Observation::Job(Some(job.clone())));
        assert_eq!(
            events(&decision),
            vec![(EventType::Warning, Reason::RestoreFailed)]
        );
        assert_eq!(status(&restore).phase, Some(RestorePhase::Failed));
        stalled_with(&restore, Reason::RestoreFailed);
        assert!(status(&restore).conditions[0].message.contains("job-9"));
        assert_eq!(decision.requeue, Requeue::AwaitChange);
        let after = step(&mut restore, &source, &Observation::None);
        assert_eq!(after.action, Action::None);
    }
}

fn bbi(ready: Option<(&str, i64)>, generation: i64) -> BlobBackupInstance {
    let mut conditions = vec![];
    if let Some((status, observed)) = ready {
        conditions.push(json!({"type": "Ready", "status": status, "reason": "ProtectionConfigured", "message": "m", "observedGeneration": observed, "lastTransitionTime": "2026-12-01T00:00:00Z"}));
    }
    serde_json::from_value(json!({
        "apiVersion": "dataprotection.blobbackup.io/v1alpha1",
        "kind": "BlobBackupInstance",
        "metadata": {"name": "msblobbackup", "namespace": "team-a", "generation": generation},
        "spec": {
            "vault": {"id": "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/TestBkpVaultRG/providers/Microsoft.DataProtection/backupVaults/testBkpVault"},
            "policy": {"name": "BlobBackup-Policy"},
            "storageAccount": {"id": ACCOUNT, "location": "westus"},
            "vaultedBackup": {"containers": ["images"]}
        },
        "status": {"backupInstanceId": INSTANCE, "ownership": "Created", "conditions": conditions}
    }))
    .unwrap()
}

#[test]
fn a_restore_is_authorised_only_like_its_source() {
    let open = Access::OPEN;
    let refused = |source: Option<&BlobBackupInstance>, access: Option<&Access>| match authorise(
        "msblobbackup",
        source,
        access,
    ) {
        Source::Refused { reason, message } => (reason, message),
        other => panic!("{other:?}"),
    };
    let not_ready = |source: Option<&BlobBackupInstance>| {
        let (reason, message) = refused(source, Some(&open));
        assert_eq!(reason, Reason::SourceNotReady, "{message}");
        message
    };
    assert!(not_ready(None).contains("does not exist"));
    assert!(not_ready(Some(&bbi(None, 1))).contains("not Ready"));
    assert!(not_ready(Some(&bbi(Some(("False", 1)), 1))).contains("ProtectionConfigured: m"));
    // Ready for an older generation: the new spec is not protected yet.
    not_ready(Some(&bbi(Some(("True", 1)), 2)));
    let ready = bbi(Some(("True", 2)), 2);
    match authorise("msblobbackup", Some(&ready), Some(&open)) {
        Source::Authorised(source) => {
            assert_eq!(source.instance.to_string(), INSTANCE);
            assert_eq!(source.account.to_string(), ACCOUNT);
            assert_eq!(source.vaulted_containers, Some(vec!["images".to_string()]));
        }
        other => panic!("{other:?}"),
    }
    // Its vault not granted (any more): VaultNotGranted, with the grants' message.
    let not_granted = Access::NotGranted {
        message: "no BackupVaultGrant lets namespace team-a use vault testBkpVault".into(),
        deletion_allowed: false,
    };
    let (reason, message) = refused(Some(&ready), Some(&not_granted));
    assert_eq!(reason, Reason::VaultNotGranted);
    assert!(message.contains("no BackupVaultGrant"), "{message}");
    // A source that owns no backup instance, and grants not listed yet: not ready.
    let mut unowned = ready.clone();
    unowned.status.as_mut().unwrap().ownership = None;
    let (reason, message) = refused(Some(&unowned), Some(&open));
    assert_eq!(reason, Reason::SourceNotReady);
    assert!(message.contains("owns no backup instance"), "{message}");
    let (reason, _) = refused(Some(&ready), None);
    assert_eq!(reason, Reason::SourceNotReady);
}

/// A point earlier in the current second has passed: the check of the clock is to the
/// nanosecond, although status times have whole seconds (a point taken a moment ago was refused
/// as "in the future" before, and stalled the restore for good).
#[test]
fn a_point_earlier_in_this_very_second_is_not_in_the_future() {
    let clock: Timestamp = "2026-12-03T00:00:00.900Z".parse().unwrap();
    let mut restore = restore_with(
        json!({"backupInstanceRef": {"name": "msblobbackup"}, "pointInTime": "2026-12-03T00:00:00.500Z"}),
    );
    let decision = decide(
        &restore,
        &source(None),
        &Observation::None,
        clock,
        &settings(),
    );
    // The ranges are asked for up to the clock: up to the whole second, they would end
    // before the point, and the restore would stall as PointNotRestorable for its backoff.
    match &decision.action {
        Action::FindRanges { to, .. } => assert_eq!(*to, clock),
        other => panic!("{other:?}"),
    }
    // A point later in that second is still in the future.
    restore.spec.point_in_time = Some("2026-12-03T00:00:00.950Z".to_owned());
    let decision = decide(
        &restore,
        &source(None),
        &Observation::None,
        clock,
        &settings(),
    );
    assert_eq!(decision.action, Action::None);
}
