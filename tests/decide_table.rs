//! Table tests of `decide`: every branch of DESIGN.md section 3, one row each, plus whole flows.

use std::time::Duration;

use ConditionStatus::{False, True, Unknown};
use blob_backup_operator::api::{
    AzureOperation, BlobBackupInstance, BlobBackupInstanceSpec, BlobBackupInstanceStatus,
    Condition, ConditionStatus, DeletionPolicy, FINALIZER, OperationAction, OperationPhase,
    Ownership, PolicyRef, StorageAccountRef, VaultRef, VaultedBackup, condition_type::*,
};
use blob_backup_operator::controller::Error;
use blob_backup_operator::controller::decide::{
    Access, Action, AzureApi, AzureCall, AzureErrorDetail, Decision, ErrorClass, EventSpec,
    LastRecoveryPoint, Observation, ObservedError, ObservedId, ObservedInstance, PollHandle,
    PolledStatus, Reason, Requeue, Settings, Timing, current_operation, decide, owner_tags,
};
use blob_backup_operator::controller::pacing::BudgetKey;
use blob_backup_operator::controller::steps::{Effects, Next, run_steps};
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

const SUB: &str = "00000000-0000-0000-0000-000000000000";
const VAULT: &str = "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/TestBkpVaultRG/providers/Microsoft.DataProtection/backupVaults/testBkpVault";
const ACCOUNT: &str = "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/RG-BlobBackup/providers/Microsoft.Storage/storageAccounts/msblobbackup";
const UID: &str = "f2df34eb-0000-4000-8000-000000000001";
const POLL: &str = "https://management.azure.com/subscriptions/00000000-0000-0000-0000-000000000000/providers/Microsoft.DataProtection/locations/westus/operationStatus/op1?api-version=2026-06-01";

fn t0() -> Timestamp {
    "2026-11-23T17:00:00Z".parse().unwrap()
}
fn now() -> Timestamp {
    t0() + jiff::SignedDuration::from_secs(60)
}
fn secs(s: u64) -> Requeue {
    Requeue::After(Duration::from_secs(s))
}
fn instance_id() -> String {
    format!("{VAULT}/backupInstances/msblobbackup-{UID}")
}
fn policy_id(name: &str) -> String {
    format!("{VAULT}/backupPolicies/{name}")
}

// ---- resources ----

fn spec() -> BlobBackupInstanceSpec {
    BlobBackupInstanceSpec {
        vault: VaultRef { id: VAULT.into() },
        policy: PolicyRef {
            name: Some("BlobBackup-Policy".into()),
            id: None,
        },
        storage_account: StorageAccountRef {
            id: ACCOUNT.into(),
            location: "westus".into(),
        },
        backup_instance_name: None,
        vaulted_backup: None,
        deletion_policy: DeletionPolicy::Delete,
    }
}

/// A resource at generation 1 with our finalizer and no status yet.
fn bbi() -> BlobBackupInstance {
    let mut obj = BlobBackupInstance::new("msblobbackup", spec());
    obj.metadata.namespace = Some("team-a".into());
    obj.metadata.uid = Some(UID.into());
    obj.metadata.generation = Some(1);
    obj.metadata.finalizers = Some(vec![FINALIZER.into()]);
    obj
}

fn cond(type_: &str, status: ConditionStatus, reason: Reason, since: Timestamp) -> Condition {
    Condition {
        type_: type_.into(),
        status,
        reason: reason.as_str().into(),
        message: String::new(),
        observed_generation: Some(1),
        last_transition_time: Time(since),
    }
}

/// Ready/Reconciling/Stalled as decide writes them for each health.
fn health(ready: ConditionStatus, reason: Reason, since: Timestamp) -> Vec<Condition> {
    let (reconciling, stalled) = match ready {
        True => (False, False),
        Unknown => (True, False),
        False if stalled_reason(reason) => (False, True),
        False => (True, False),
    };
    vec![
        cond(READY, ready, reason, since),
        cond(RECONCILING, reconciling, reason, since),
        cond(STALLED, stalled, reason, since),
    ]
}

fn stalled_reason(reason: Reason) -> bool {
    !matches!(
        reason,
        Reason::Validating
            | Reason::Creating
            | Reason::Updating
            | Reason::ConfiguringProtection
            | Reason::Deleting
            | Reason::StoppingProtection
            | Reason::Syncing
            | Reason::AzureThrottled
            | Reason::AzureUnavailable
            | Reason::OperationCanceled
            | Reason::PollUrlRefused
            | Reason::Initializing
    )
}

fn op(action: OperationAction, status: OperationPhase) -> AzureOperation {
    AzureOperation {
        action,
        status,
        poll_url: Some(POLL.into()),
        start_time: Some(Time(t0())),
        end_time: None,
        error: None,
    }
}

/// `bbi()` with a status: conditions for `ready`/`reason` since `t0`, and `operation`.
fn with_status(
    ready: ConditionStatus,
    reason: Reason,
    operation: Option<AzureOperation>,
) -> BlobBackupInstance {
    let mut obj = bbi();
    let mut status = BlobBackupInstanceStatus {
        observed_generation: Some(1),
        vault_name: Some("testBkpVault".into()),
        storage_account_name: Some("msblobbackup".into()),
        policy_name: Some("BlobBackup-Policy".into()),
        operation,
        conditions: health(ready, reason, t0()),
        ..Default::default()
    };
    // What decide derives from the operation and Ready, as it would have recorded it.
    status.current_operation = current_operation(&status);
    obj.status = Some(status);
    obj
}

/// `obj` after decide has seen `observations`, its statuses applied: realistic fixtures.
fn after(mut obj: BlobBackupInstance, observations: &[Observation]) -> BlobBackupInstance {
    for observation in observations {
        if let Some(status) = decide(
            &obj,
            observation,
            now(),
            &Settings::default(),
            &Access::OPEN,
        )
        .status
        {
            obj.status = Some(status);
        }
    }
    obj
}

/// Validation in flight, as decide recorded it.
fn validating() -> BlobBackupInstance {
    after(
        bbi(),
        &[
            Observation::Instance(None),
            started(OperationAction::Validate, Some(10)),
        ],
    )
}

/// Creation in flight, as decide recorded it.
fn creating() -> BlobBackupInstance {
    after(
        validating(),
        &[
            polled(PolledStatus::Succeeded),
            started(OperationAction::Create, Some(60)),
        ],
    )
}

/// Ready=False for `reason`, with `action` in `phase` as the last operation.
fn at(reason: Reason, action: OperationAction, phase: OperationPhase) -> BlobBackupInstance {
    with_status(False, reason, Some(op(action, phase)))
}

/// A resource whose instance we created and saw Ready.
fn ready() -> BlobBackupInstance {
    after(
        creating(),
        &[
            polled(PolledStatus::Succeeded),
            found(instance("ProtectionConfigured")),
        ],
    )
}

fn deleting(mut obj: BlobBackupInstance, policy: DeletionPolicy) -> BlobBackupInstance {
    obj.spec.deletion_policy = policy;
    if policy == DeletionPolicy::Retain {
        obj.spec.vaulted_backup = Some(VaultedBackup {
            containers: vec!["images".into()],
        });
    }
    obj.metadata.deletion_timestamp = Some(Time(t0()));
    obj
}

// ---- observations ----

fn instance(protection: &str) -> ObservedInstance {
    ObservedInstance {
        id: ObservedId::parse(&instance_id()),
        datasource_id: ObservedId::parse(ACCOUNT),
        policy_id: ObservedId::parse(&policy_id("BlobBackup-Policy")),
        containers: None,
        protection_status: Some(protection.into()),
        protection_state: Some(protection.into()),
        provisioning_state: Some("Succeeded".into()),
        protection_error: None,
        last_recovery_point: LastRecoveryPoint::NotRead,
        // Ours: the tags the operator writes for bbi().
        tags: owner_tags(&bbi(), &Settings::default().cluster_id),
    }
}

/// `instance` without tags: created outside the operator.
fn untagged(mut instance: ObservedInstance) -> ObservedInstance {
    instance.tags.clear();
    instance
}

fn found(instance: ObservedInstance) -> Observation {
    Observation::Instance(Some(instance))
}

fn azure(code: &str, message: &str, recommended: &[&str]) -> AzureErrorDetail {
    AzureErrorDetail {
        code: code.into(),
        message: message.into(),
        recommended_actions: recommended.iter().map(|s| s.to_string()).collect(),
        detail: None,
    }
}

fn failed(
    call: AzureCall,
    class: ErrorClass,
    http: u16,
    code: &str,
    retry_after: Option<u64>,
) -> Observation {
    Observation::Failed {
        call,
        error: ObservedError {
            class,
            http_status: Some(http),
            retry_after: retry_after.map(Duration::from_secs),
            azure: azure(code, &format!("{code} happened"), &[]),
        },
    }
}

fn started(action: OperationAction, retry_after: Option<u64>) -> Observation {
    Observation::Started {
        action,
        poll: Some(PollHandle {
            url: POLL.into(),
            retry_after: retry_after.map(Duration::from_secs),
        }),
    }
}

fn polled(status: PolledStatus) -> Observation {
    Observation::Polled {
        status,
        retry_after: Some(Duration::from_secs(10)),
    }
}

fn missing_permission() -> AzureErrorDetail {
    AzureErrorDetail {
        detail: Some(format!(
            "Validate for Protection failed. Exception Message: The client 'x' with object id 'y' does not have authorization to perform action 'Microsoft.Authorization/roleAssignments/read' over scope '{ACCOUNT}/providers/Microsoft.Authorization' or the scope is invalid."
        )),
        ..azure(
            "UserErrorMissingRequiredPermissions",
            "Appropriate permissions to perform the operation is missing.",
            &[
                "Grant appropriate permissions to perform this operation as mentioned at https://aka.ms/UserErrorMissingRequiredPermissions and retry the operation.",
            ],
        )
    }
}

// ---- checking ----

/// Runs one row and checks it fluently.
struct Row {
    name: &'static str,
    old: BlobBackupInstance,
    d: Decision,
}

fn row(name: &'static str, obj: BlobBackupInstance, obs: Observation) -> Row {
    row_with(name, obj, obs, &Settings::default())
}

fn row_with(
    name: &'static str,
    obj: BlobBackupInstance,
    obs: Observation,
    settings: &Settings,
) -> Row {
    row_access(name, obj, obs, settings, &Access::OPEN)
}

fn row_access(
    name: &'static str,
    obj: BlobBackupInstance,
    obs: Observation,
    settings: &Settings,
    access: &Access,
) -> Row {
    let d = decide(&obj, &obs, now(), settings, access);
    Row { name, old: obj, d }
}

fn action_name(action: &Action) -> String {
    match action {
        Action::None => "None".into(),
        Action::AddFinalizer => "AddFinalizer".into(),
        Action::RemoveFinalizer => "RemoveFinalizer".into(),
        Action::GetInstance(id) => format!("GetInstance {id}"),
        Action::Validate(t) => format!("Validate {}", t.instance),
        Action::Put {
            target, operation, ..
        } => format!(
            "Put {operation:?} {} policy {}",
            target.instance, target.spec.policy
        ),
        Action::Poll { url, instance } => format!("Poll {url} for {instance}"),
        Action::Delete(id) => format!("Delete {id}"),
        Action::StopProtection(id) => format!("StopProtection {id}"),
        Action::Sync(id) => format!("Sync {id}"),
    }
}

impl Row {
    /// The status after the decision: the new one, or the old one when nothing changed.
    fn status(&self) -> BlobBackupInstanceStatus {
        self.d
            .status
            .clone()
            .or_else(|| self.old.status.clone())
            .unwrap_or_default()
    }

    fn action(self, expected: &str) -> Self {
        let got = action_name(&self.d.action);
        assert!(
            got.starts_with(expected),
            "{}: action {got:?}, expected {expected:?}",
            self.name
        );
        self
    }

    fn cond(self, type_: &str, status: ConditionStatus, reason: Reason) -> Self {
        let s = self.status();
        let c = s.conditions.iter().find(|c| c.type_ == type_);
        let c = c.unwrap_or_else(|| panic!("{}: no {type_} condition in {s:#?}", self.name));
        assert_eq!(
            (c.status, c.reason.as_str()),
            (status, reason.as_str()),
            "{}: {type_} {c:#?}",
            self.name
        );
        self
    }

    /// Ready, Reconciling and Stalled as one health.
    fn health(self, ready: ConditionStatus, reason: Reason) -> Self {
        let (reconciling, stalled) = match ready {
            True => (False, False),
            Unknown => (True, False),
            False if stalled_reason(reason) => (False, True),
            False => (True, False),
        };
        self.cond(READY, ready, reason)
            .cond(RECONCILING, reconciling, reason)
            .cond(STALLED, stalled, reason)
    }

    fn message_has(self, type_: &str, text: &str) -> Self {
        let s = self.status();
        let c = s.conditions.iter().find(|c| c.type_ == type_).unwrap();
        assert!(
            c.message.contains(text),
            "{}: {type_} message {:?} lacks {text:?}",
            self.name,
            c.message
        );
        self
    }

    fn events(self, expected: &[Reason]) -> Self {
        let got: Vec<Reason> = self.d.events.iter().map(|e| e.reason).collect();
        assert_eq!(got, expected, "{}: events {:#?}", self.name, self.d.events);
        self
    }

    fn requeue(self, expected: Requeue) -> Self {
        assert_eq!(self.d.requeue, expected, "{}", self.name);
        self
    }

    fn writes(self, expected: bool) -> Self {
        assert_eq!(
            self.d.status.is_some(),
            expected,
            "{}: status write {:#?}",
            self.name,
            self.d.status
        );
        self
    }

    fn operation(self, action: OperationAction, status: OperationPhase) -> Self {
        let s = self.status();
        let o = s
            .operation
            .as_ref()
            .unwrap_or_else(|| panic!("{}: no operation", self.name));
        assert_eq!((o.action, o.status), (action, status), "{}", self.name);
        self
    }
}

// ---- rows ----

#[test]
fn first_sight() {
    let mut fresh = bbi();
    fresh.metadata.finalizers = None;
    row(
        "finalizer first, Ready=Unknown and Reconciling=True on the first write",
        fresh,
        Observation::None,
    )
    .action("AddFinalizer")
    .writes(true)
    .health(Unknown, Reason::Initializing)
    .events(&[])
    .requeue(Requeue::AwaitChange);

    // The default name holds the resource's uid and nothing was started: no instance of
    // that name can exist yet, so the GET is skipped.
    row(
        "with the finalizer and the default name: validate at once",
        bbi(),
        Observation::None,
    )
    .action(&format!("Validate {}", instance_id()))
    .writes(true)
    .health(False, Reason::Validating);

    let mut named = bbi();
    named.spec.backup_instance_name = Some("chosen-name".into());
    let r = row(
        "with the finalizer and a chosen name: look the instance up",
        named,
        Observation::None,
    )
    .action(&format!("GetInstance {VAULT}/backupInstances/chosen-name"))
    .writes(true)
    .health(Unknown, Reason::Initializing);
    let s = r.status();
    assert_eq!(s.observed_generation, Some(1));
    assert!(
        s.conditions
            .iter()
            .all(|c| c.observed_generation == Some(1) && c.last_transition_time == Time(now()))
    );
}

#[test]
fn create_flow_rows() {
    row(
        "not found: validate first",
        bbi(),
        Observation::Instance(None),
    )
    .action(&format!("Validate {}", instance_id()))
    .health(False, Reason::Validating)
    .operation(OperationAction::Validate, OperationPhase::Pending)
    .events(&[]);

    row(
        "validate accepted: track it",
        with_status(False, Reason::Validating, None),
        started(OperationAction::Validate, Some(10)),
    )
    .action("None")
    .operation(OperationAction::Validate, OperationPhase::InProgress)
    .cond(VALIDATED, Unknown, Reason::Validating)
    .health(False, Reason::Validating)
    .events(&[Reason::Validating])
    .requeue(secs(10));

    row(
        "restart with an operation in flight: poll the recorded URL",
        validating(),
        Observation::None,
    )
    .action(&format!("Poll {POLL}"))
    .writes(false);

    row(
        "poll still in progress: nothing to write",
        validating(),
        polled(PolledStatus::InProgress),
    )
    .action("None")
    .writes(false)
    .events(&[])
    .requeue(secs(10));

    let r = row(
        "validate succeeded: PUT create",
        validating(),
        polled(PolledStatus::Succeeded),
    )
    .action(&format!(
        "Put Create {} policy {}",
        instance_id(),
        policy_id("BlobBackup-Policy")
    ))
    .operation(OperationAction::Create, OperationPhase::Pending)
    .cond(VALIDATED, True, Reason::ValidationSucceeded)
    .health(False, Reason::Creating);
    // The intent, written before the PUT is sent: the name, the ID and the operation.
    let s = r.status();
    assert_eq!(
        s.backup_instance_name.as_deref(),
        Some(format!("msblobbackup-{UID}").as_str())
    );
    assert_eq!(s.backup_instance_id, Some(instance_id()));
    let intent = s.operation.unwrap();
    assert_eq!(
        (intent.start_time, intent.poll_url),
        (Some(Time(now())), None)
    );

    // Intents recorded before a crash: Azure may or may not have the request.
    let put_intended = after(validating(), &[polled(PolledStatus::Succeeded)]);
    row(
        "restart with a PUT intended: look at the instance first",
        put_intended.clone(),
        Observation::None,
    )
    .action(&format!("GetInstance {}", instance_id()));
    row(
        "the intended PUT landed: its outcome, not AlreadyProtected, not adopted",
        put_intended.clone(),
        found(instance("ConfiguringProtection")),
    )
    .action("None")
    .health(False, Reason::ConfiguringProtection)
    .events(&[]);
    row(
        "the intended PUT never landed: PUT without validating again",
        put_intended.clone(),
        Observation::Instance(None),
    )
    .action("Put Create")
    .operation(OperationAction::Create, OperationPhase::Pending);
    // Intents this controller recorded and did not send (they waited for their slot in the
    // budget), which its memory says.
    let r = row(
        "a PUT intended and not sent: sent without looking first, its intent as recorded",
        put_intended.clone(),
        Observation::Unsent,
    )
    .action("Put Create")
    .operation(OperationAction::Create, OperationPhase::Pending);
    assert_eq!(r.d.status, None, "the intent is not written again");
    let mut long_ago = put_intended;
    if let Some(op) = long_ago.status.as_mut().and_then(|s| s.operation.as_mut()) {
        let max = jiff::SignedDuration::try_from(Settings::default().timing.retry_after_max);
        op.start_time = Some(Time(
            now() - max.unwrap() - jiff::SignedDuration::from_secs(1),
        ));
    }
    row(
        "a PUT intended longer than retry_after_max ago and not sent: look at the instance first",
        long_ago,
        Observation::Unsent,
    )
    .action("GetInstance");
    let validate_intended = after(bbi(), &[Observation::Instance(None)]);
    row(
        "a validation intended and not sent: looked at as after a restart",
        validate_intended.clone(),
        Observation::Unsent,
    )
    .action("GetInstance");
    row(
        "restart with a validation intended: look at the instance first",
        validate_intended.clone(),
        Observation::None,
    )
    .action("GetInstance");
    row(
        "found untagged after only a validation was intended: someone else's, adopted with a PUT of our tags",
        validate_intended,
        found(untagged(instance("ProtectionConfigured"))),
    )
    .action("Put Update")
    .events(&[Reason::Adopted]);
    let adopting = after(bbi(), &[found(untagged(instance("ProtectionConfigured")))]);
    row(
        "resync of an adopted instance, now tagged: adopted once only",
        after(
            adopting,
            &[
                started(OperationAction::Update, None),
                found(instance("ProtectionConfigured")),
            ],
        ),
        found(instance("ProtectionConfigured")),
    )
    .action("None")
    .events(&[]);

    row(
        "restart after validation: PUT without validating again",
        at(
            Reason::Creating,
            OperationAction::Validate,
            OperationPhase::Succeeded,
        ),
        Observation::None,
    )
    .action("Put Create");

    row(
        "create accepted: track it",
        at(
            Reason::Creating,
            OperationAction::Validate,
            OperationPhase::Succeeded,
        ),
        started(OperationAction::Create, Some(60)),
    )
    .action("None")
    .operation(OperationAction::Create, OperationPhase::InProgress)
    .events(&[Reason::Creating])
    .requeue(secs(60));

    row(
        "create succeeded: GET to see protection",
        creating(),
        polled(PolledStatus::Succeeded),
    )
    .action("GetInstance")
    .operation(OperationAction::Create, OperationPhase::Succeeded);

    row(
        "create done synchronously (200/201 without a status URL)",
        creating(),
        Observation::Started {
            action: OperationAction::Create,
            poll: None,
        },
    )
    .action("GetInstance")
    .operation(OperationAction::Create, OperationPhase::Succeeded)
    .events(&[Reason::Creating]);

    let mut created = at(
        Reason::Creating,
        OperationAction::Create,
        OperationPhase::Succeeded,
    );
    created.status.as_mut().unwrap().backup_instance_id = Some(instance_id());
    row(
        "protection settling",
        created.clone(),
        found(instance("ConfiguringProtection")),
    )
    .action("None")
    .health(False, Reason::ConfiguringProtection)
    .events(&[])
    .requeue(secs(10));

    row(
        "NotProtected right after create is still settling",
        created.clone(),
        found(instance("NotProtected")),
    )
    .health(False, Reason::ConfiguringProtection);

    let mut configured_but_updating = instance("ProtectionConfigured");
    configured_but_updating.protection_state = Some("UpdatingProtection".into());
    row(
        "configured status with an updating state is not Ready yet",
        created.clone(),
        found(configured_but_updating),
    )
    .health(False, Reason::ConfiguringProtection);

    let r = row(
        "protection configured: Ready",
        created,
        found(instance("ProtectionConfigured")),
    )
    .action("None")
    .health(True, Reason::ProtectionConfigured)
    .events(&[Reason::Protected])
    .requeue(secs(600));
    let s = r.status();
    assert_eq!(s.protection_status.as_deref(), Some("ProtectionConfigured"));
    assert_eq!(s.provisioning_state.as_deref(), Some("Succeeded"));

    row(
        "resync after Ready: no write, no event",
        ready(),
        Observation::None,
    )
    .action("GetInstance")
    .writes(false);
    row(
        "resync finds the same: no write, no event",
        ready(),
        found(instance("ProtectionConfigured")),
    )
    .action("None")
    .writes(false)
    .events(&[])
    .requeue(secs(600));
    row(
        "resync GET unanswered (503): Ready kept, no write, look again soon",
        ready(),
        failed(
            AzureCall::Get,
            ErrorClass::Transient,
            503,
            "ServiceUnavailable",
            Some(7),
        ),
    )
    .action("None")
    .writes(false)
    .events(&[])
    .requeue(secs(7));
    row(
        "GET unanswered before Ready: Reconciling with the reason",
        bbi(),
        failed(
            AzureCall::Get,
            ErrorClass::Transient,
            503,
            "ServiceUnavailable",
            Some(7),
        ),
    )
    .health(False, Reason::AzureUnavailable)
    .requeue(secs(7));
}

#[test]
fn retry_after_is_clamped() {
    let validating = || with_status(False, Reason::Validating, None);
    row(
        "an hour is too long",
        validating(),
        started(OperationAction::Validate, Some(3600)),
    )
    .requeue(secs(300));
    row(
        "zero is too short",
        validating(),
        started(OperationAction::Validate, Some(0)),
    )
    .requeue(secs(1));
    row(
        "absent: the default",
        validating(),
        started(OperationAction::Validate, None),
    )
    .requeue(secs(15));
    let waits = |min: u64, max: u64| Settings {
        timing: Timing {
            retry_after_min: Duration::from_secs(min),
            retry_after_max: Duration::from_secs(max),
            ..Timing::default()
        },
        ..Settings::default()
    };
    let settings = waits(5, 20);
    row_with(
        "the clamp is a setting",
        validating(),
        started(OperationAction::Validate, Some(60)),
        &settings,
    )
    .requeue(secs(20));
    // Any value a header can carry, on every answer that brings one: 202, poll, 429.
    let creating = || {
        at(
            Reason::Creating,
            OperationAction::Create,
            OperationPhase::InProgress,
        )
    };
    let huge = Duration::from_secs(u64::MAX);
    for (name, obj, observation) in [
        (
            "u64::MAX on a 202",
            validating(),
            started(OperationAction::Validate, Some(u64::MAX)),
        ),
        (
            "u64::MAX on a poll",
            creating(),
            Observation::Polled {
                status: PolledStatus::InProgress,
                retry_after: Some(huge),
            },
        ),
        (
            "u64::MAX on a 429",
            creating(),
            failed(
                AzureCall::Poll,
                ErrorClass::Transient,
                429,
                "TooManyRequests",
                Some(u64::MAX),
            ),
        ),
    ] {
        row_with(name, obj, observation, &settings).requeue(secs(20));
    }
    row_with(
        "bounds that cross do not panic: the shortest wait wins",
        validating(),
        started(OperationAction::Validate, Some(u64::MAX)),
        &waits(30, 20),
    )
    .requeue(secs(30));
}

#[test]
fn adoption_and_conflicts() {
    row(
        "untagged instance exists for the same account: adopt it, writing our tags",
        bbi(),
        found(untagged(instance("ProtectionConfigured"))),
    )
    .action("Put Update")
    .events(&[Reason::Adopted]);

    let mut shouting = instance("ProtectionConfigured");
    shouting.datasource_id = ObservedId::parse(&ACCOUNT.to_uppercase());
    row("ARM ids compare case-insensitively", bbi(), found(shouting))
        .action("None")
        .events(&[Reason::Protected]);

    let mut other = instance("ProtectionConfigured");
    other.datasource_id = ObservedId::parse(&ACCOUNT.replace("msblobbackup", "someoneelse"));
    row(
        "instance of that name protects another account",
        bbi(),
        found(other),
    )
    .action("None")
    .health(False, Reason::InstanceConflict)
    .message_has(READY, "someoneelse")
    .message_has(READY, "spec.backupInstanceName")
    .events(&[Reason::InstanceConflict])
    .requeue(secs(10));

    let mut garbled = instance("ProtectionConfigured");
    garbled.datasource_id = ObservedId::parse("msblobbackup");
    row(
        "an account id Azure sends that is no ARM id is no match",
        bbi(),
        found(garbled),
    )
    .action("None")
    .health(False, Reason::InstanceConflict)
    .message_has(READY, "protects msblobbackup, not");
}

#[test]
fn validation_failures() {
    row(
        "missing permission: Stalled with action and scope",
        validating(),
        polled(PolledStatus::Failed(missing_permission())),
    )
    .action("None")
    .health(False, Reason::MissingPermissions)
    .cond(VALIDATED, False, Reason::MissingPermissions)
    .operation(OperationAction::Validate, OperationPhase::Failed)
    .message_has(READY, "Microsoft.Authorization/roleAssignments/read")
    .message_has(
        READY,
        &format!("{ACCOUNT}/providers/Microsoft.Authorization"),
    )
    .message_has(READY, "Storage Account Backup Contributor")
    .message_has(READY, "aka.ms/UserErrorMissingRequiredPermissions")
    .events(&[Reason::ValidationFailed])
    .requeue(secs(10));

    let holder = format!(
        "/subscriptions/{SUB}/resourceGroups/rg2/providers/Microsoft.DataProtection/backupVaults/otherVault"
    );
    let already = Observation::Failed {
        call: AzureCall::Start(OperationAction::Validate),
        error: ObservedError {
            class: ErrorClass::NeedsPerson,
            http_status: Some(400),
            retry_after: None,
            azure: azure(
                "UserErrorDppDatasourceAlreadyProtected",
                &format!("Datasource is already protected under the Backup vault {holder}."),
                &[
                    "Delete the backup instance msblobbackuptemp from the Backup vault to re-protect the datasource in any other vault.",
                ],
            ),
        },
    };
    row(
        "already protected: Stalled with the holding vault",
        with_status(False, Reason::Validating, None),
        already.clone(),
    )
    .health(False, Reason::AlreadyProtected)
    .cond(VALIDATED, False, Reason::AlreadyProtected)
    .message_has(
        READY,
        &format!("already protected by Backup vault {holder}. "),
    )
    .message_has(
        READY,
        "Recommended action: Delete the backup instance msblobbackuptemp",
    )
    .events(&[Reason::ValidationFailed]);

    // A validation creates nothing, so it does not take the name: after AlreadyProtected the
    // person may name the instance that protects the account, to adopt it.
    let mut adopt_by_name = after(validating(), std::slice::from_ref(&already));
    adopt_by_name.spec.backup_instance_name = Some("msblobbackuptemp".into());
    adopt_by_name.metadata.generation = Some(2);
    row(
        "already protected, then the spec names the holding instance: looked up, not InvalidSpec",
        adopt_by_name,
        Observation::None,
    )
    .action(&format!(
        "GetInstance {VAULT}/backupInstances/msblobbackuptemp"
    ));

    row(
        "other validation failure",
        validating(),
        polled(PolledStatus::Failed(azure(
            "UserErrorDatasourceAndBackupVaultLocationMismatch",
            "regions differ",
            &[],
        ))),
    )
    .health(False, Reason::ValidationFailed)
    .message_has(
        READY,
        "UserErrorDatasourceAndBackupVaultLocationMismatch: regions differ",
    );

    row(
        "vault not found (404 on validate)",
        with_status(False, Reason::Validating, None),
        failed(
            AzureCall::Start(OperationAction::Validate),
            ErrorClass::NeedsPerson,
            404,
            "ResourceNotFound",
            None,
        ),
    )
    .health(False, Reason::AzureResourceNotFound)
    .cond(VALIDATED, False, Reason::AzureResourceNotFound);

    let mut still = at(
        Reason::MissingPermissions,
        OperationAction::Validate,
        OperationPhase::Failed,
    );
    row(
        "still stalled on retry: GET again, no new event",
        still.clone(),
        Observation::None,
    )
    .action("GetInstance")
    .events(&[]);
    still.status.as_mut().unwrap().operation =
        Some(op(OperationAction::Validate, OperationPhase::InProgress));
    row(
        "still missing after 60s stalled: back off 60s, no new event",
        still.clone(),
        polled(PolledStatus::Failed(missing_permission())),
    )
    .requeue(secs(60))
    .events(&[]);
    let long_ago = t0() - jiff::SignedDuration::from_hours(1);
    for c in &mut still.status.as_mut().unwrap().conditions {
        c.last_transition_time = Time(long_ago);
    }
    row(
        "long stalled: backoff capped",
        still.clone(),
        polled(PolledStatus::Failed(missing_permission())),
    )
    .requeue(secs(120));
    let settings = Settings {
        timing: Timing {
            stalled_retry_max: Duration::from_secs(45),
            ..Timing::default()
        },
        ..Settings::default()
    };
    row_with(
        "cap is --stalled-retry-max",
        still,
        polled(PolledStatus::Failed(missing_permission())),
        &settings,
    )
    .requeue(secs(45));

    let granted = at(
        Reason::MissingPermissions,
        OperationAction::Validate,
        OperationPhase::InProgress,
    );
    row(
        "permission granted: validation succeeds by itself",
        granted,
        polled(PolledStatus::Succeeded),
    )
    .action("Put Create")
    .cond(VALIDATED, True, Reason::ValidationSucceeded)
    // Stalled until Azure accepts the PUT: the backoff clock keeps running should it fail.
    .health(False, Reason::MissingPermissions);
}

#[test]
fn operation_outcomes_and_transient_trouble() {
    let r = row(
        "create failed",
        creating(),
        polled(PolledStatus::Failed(azure(
            "UserErrorInvalidParameterInRequest",
            "bad",
            &["Fix it."],
        ))),
    )
    .health(False, Reason::OperationFailed)
    .operation(OperationAction::Create, OperationPhase::Failed)
    .events(&[Reason::OperationFailed]);
    let error = r.status().operation.unwrap().error.unwrap();
    assert_eq!(
        (error.code.as_str(), error.recommended_actions.len()),
        ("UserErrorInvalidParameterInRequest", 1)
    );

    row(
        "create canceled: start over, not stalled",
        creating(),
        polled(PolledStatus::Canceled),
    )
    .health(False, Reason::OperationCanceled)
    .operation(OperationAction::Create, OperationPhase::Canceled)
    .requeue(secs(10));

    row(
        "429 while polling: throttled, keep the operation",
        creating(),
        failed(
            AzureCall::Poll,
            ErrorClass::Transient,
            429,
            "TooManyRequests",
            Some(30),
        ),
    )
    .action("None")
    .health(False, Reason::AzureThrottled)
    .operation(OperationAction::Create, OperationPhase::InProgress)
    .events(&[])
    .requeue(secs(30));

    row(
        "503 without Retry-After",
        creating(),
        failed(
            AzureCall::Poll,
            ErrorClass::Transient,
            503,
            "ServiceUnavailable",
            None,
        ),
    )
    .health(False, Reason::AzureUnavailable)
    .message_has(READY, "HTTP 503")
    .requeue(secs(15));

    let mut no_answer = failed(AzureCall::Poll, ErrorClass::Transient, 0, "", None);
    if let Observation::Failed { error, .. } = &mut no_answer {
        error.http_status = None;
    }
    row("no answer at all: retried soon", creating(), no_answer)
        .health(False, Reason::AzureUnavailable)
        .requeue(secs(2));

    row(
        "429 on PUT",
        at(
            Reason::Creating,
            OperationAction::Validate,
            OperationPhase::Succeeded,
        ),
        failed(
            AzureCall::Start(OperationAction::Create),
            ErrorClass::Transient,
            429,
            "TooManyRequests",
            Some(5),
        ),
    )
    .health(False, Reason::AzureThrottled)
    .operation(OperationAction::Validate, OperationPhase::Succeeded)
    .requeue(secs(5));

    row(
        "403 on GET: Stalled",
        bbi(),
        failed(
            AzureCall::Get,
            ErrorClass::NeedsPerson,
            403,
            "AuthorizationFailed",
            None,
        ),
    )
    .health(False, Reason::AccessDenied)
    .message_has(READY, "AuthorizationFailed")
    .events(&[Reason::AccessDenied]);
    row(
        "401 on poll: Stalled",
        creating(),
        failed(
            AzureCall::Poll,
            ErrorClass::NeedsPerson,
            401,
            "InvalidAuthenticationToken",
            None,
        ),
    )
    .health(False, Reason::AccessDenied);

    row(
        "operation unknown to Azure (404 on poll): failed, start over later",
        creating(),
        failed(
            AzureCall::Poll,
            ErrorClass::NeedsPerson,
            404,
            "NotFound",
            None,
        ),
    )
    .operation(OperationAction::Create, OperationPhase::Failed)
    .health(False, Reason::AzureResourceNotFound);

    row(
        "unreadable answer",
        bbi(),
        failed(AzureCall::Get, ErrorClass::Bug, 200, "", None),
    )
    .health(False, Reason::UnexpectedAzureResponse);

    let refused = || {
        Observation::PollRefused {
        message: "refused to poll /subscriptions/other/providers/Microsoft.KeyVault/x: it names subscriptions \"other\" instead of s, so no token was sent to it".into(),
    }
    };
    row(
        "refused poll URL: the operation fails, the instance is read instead",
        creating(),
        refused(),
    )
    .action(&format!("GetInstance {}", instance_id()))
    .health(False, Reason::PollUrlRefused)
    .message_has(READY, "/subscriptions/other/providers/Microsoft.KeyVault/x")
    .message_has(READY, "marked Failed")
    .operation(OperationAction::Create, OperationPhase::Failed)
    .events(&[Reason::PollUrlRefused]);
    let r = row(
        "refused poll URL while deleting: the same, never a stall",
        deleting(creating(), DeletionPolicy::Delete),
        refused(),
    )
    .action(&format!("GetInstance {}", instance_id()));
    let error = r.status().operation.unwrap().error.unwrap();
    assert_eq!(error.code, "PollUrlRefused");
    assert!(error.message.contains("no token was sent"), "{error:?}");
}

#[test]
fn spec_changes() {
    let mut new_policy = ready();
    new_policy.spec.policy.name = Some("BlobVaulted-Policy".into());
    new_policy.metadata.generation = Some(2);
    row(
        "policy change: PUT update without validating",
        new_policy.clone(),
        Observation::None,
    )
    .action("GetInstance");
    let r = row(
        "policy differs in Azure: PUT update",
        new_policy,
        found(instance("ProtectionConfigured")),
    )
    .action(&format!(
        "Put Update {} policy {}",
        instance_id(),
        policy_id("BlobVaulted-Policy")
    ))
    .health(False, Reason::Updating)
    .events(&[]);
    assert_eq!(r.status().observed_generation, Some(2));
    assert!(
        r.status()
            .conditions
            .iter()
            .filter(|c| c.type_ != VALIDATED)
            .all(|c| c.observed_generation == Some(2))
    );

    let mut by_id = ready();
    by_id.spec.policy = PolicyRef {
        name: None,
        id: Some(policy_id("BlobBackup-Policy").to_lowercase()),
    };
    row(
        "policy by id in other casing is the same policy",
        by_id,
        found(instance("ProtectionConfigured")),
    )
    .action("None")
    .health(True, Reason::ProtectionConfigured)
    .events(&[]);

    let mut vaulted = ready();
    vaulted.spec.vaulted_backup = Some(VaultedBackup {
        containers: vec!["logs".into(), "images".into()],
    });
    let mut in_azure = instance("ProtectionConfigured");
    in_azure.containers = Some(vec!["images".into()]);
    row(
        "containers change: PUT update",
        vaulted.clone(),
        found(in_azure.clone()),
    )
    .action("Put Update");
    in_azure.containers = Some(vec!["images".into(), "logs".into()]);
    row(
        "same containers in another order: nothing to do",
        vaulted,
        found(in_azure),
    )
    .action("None")
    .writes(false);

    let mut configuring = ready();
    configuring.spec.policy.name = Some("BlobVaulted-Policy".into());
    row(
        "change while Azure configures: wait, then update",
        configuring,
        found(instance("ConfiguringProtection")),
    )
    .action("None")
    .health(False, Reason::ConfiguringProtection)
    .message_has(READY, "policy change to BlobVaulted-Policy");

    let mut stalled = at(
        Reason::MissingPermissions,
        OperationAction::Validate,
        OperationPhase::Failed,
    );
    stalled.metadata.generation = Some(2);
    row(
        "new generation while Stalled: retry at once",
        stalled.clone(),
        Observation::None,
    )
    .action("GetInstance")
    .writes(false)
    .requeue(secs(1));
    let r = row(
        "the new generation counts as observed once the conditions speak for it",
        stalled,
        Observation::Instance(None),
    )
    .action("Validate")
    .health(False, Reason::Validating);
    assert_eq!(r.status().observed_generation, Some(2));

    let mut in_flight = at(
        Reason::Creating,
        OperationAction::Create,
        OperationPhase::InProgress,
    );
    in_flight.spec.policy.name = Some("BlobVaulted-Policy".into());
    in_flight.metadata.generation = Some(2);
    row(
        "new generation while an operation is in flight: finish it first",
        in_flight,
        Observation::None,
    )
    .action(&format!("Poll {POLL}"))
    .writes(true);
}

#[test]
fn drift_and_protection_errors() {
    row(
        "instance deleted outside Kubernetes: recreate",
        ready(),
        Observation::Instance(None),
    )
    .action("Validate")
    .health(False, Reason::Validating)
    .events(&[Reason::DriftDetected]);

    let mut broken = instance("ProtectionError");
    broken.protection_error = Some(azure(
        "UserErrorIncorrectContainersSelectedForOperation",
        "container gone",
        &["Edit the backup instance."],
    ));
    row(
        "protection error (user error): Stalled with errorDetails",
        ready(),
        found(broken.clone()),
    )
    .action("None")
    .health(False, Reason::ProtectionError)
    .message_has(
        READY,
        "UserErrorIncorrectContainersSelectedForOperation: container gone",
    )
    .message_has(READY, "Edit the backup instance.")
    .events(&[Reason::ProtectionError])
    .requeue(secs(10));

    row(
        "protection error seen before: ask Azure to re-sync after the backoff, still Stalled",
        with_status(False, Reason::ProtectionError, None),
        found(broken.clone()),
    )
    .action(&format!("Sync {}", instance_id()))
    .health(False, Reason::ProtectionError);
    let sync_intended = after(
        with_status(False, Reason::ProtectionError, None),
        &[found(broken.clone())],
    );
    row(
        "restart with a sync intended just now: no second sync before the backoff",
        sync_intended,
        found(broken.clone()),
    )
    .action("None")
    .health(False, Reason::ProtectionError);
    let old_api = Settings {
        azure: AzureApi {
            instance_actions_supported: false,
            api_version: "2021-01-01".into(),
            // Kept on: these rows are about the missing actions, not ownership.
            ..AzureApi::default()
        },
        ..Settings::default()
    };
    row_with(
        "protection error seen before, api-version without sync: Stalled, no Sync",
        with_status(False, Reason::ProtectionError, None),
        found(broken.clone()),
        &old_api,
    )
    .action("None")
    .health(False, Reason::ProtectionError);

    row(
        "sync accepted",
        with_status(False, Reason::Syncing, None),
        started(OperationAction::Sync, Some(10)),
    )
    .operation(OperationAction::Sync, OperationPhase::InProgress)
    .events(&[Reason::Syncing]);

    row(
        "sync done: GET",
        at(
            Reason::Syncing,
            OperationAction::Sync,
            OperationPhase::InProgress,
        ),
        polled(PolledStatus::Succeeded),
    )
    .action("GetInstance");

    broken.protection_error = Some(azure("InternalError", "service trouble", &[]));
    row(
        "protection error on Azure's side: Ready=False, not Stalled",
        ready(),
        found(broken),
    )
    .cond(READY, False, Reason::ProtectionError)
    .cond(RECONCILING, True, Reason::ProtectionError)
    .cond(STALLED, False, Reason::ProtectionError)
    .requeue(secs(120));

    let mut fixed = instance("ProtectionError");
    fixed.policy_id = ObservedId::parse(&policy_id("Old-Policy"));
    row(
        "protection error and a spec change: PUT update",
        ready(),
        found(fixed),
    )
    .action("Put Update");

    row(
        "protection stopped in Azure: Stalled",
        ready(),
        found(instance("ProtectionStopped")),
    )
    .health(False, Reason::ProtectionStopped)
    .message_has(READY, "resume protection");
}

#[test]
fn invalid_spec() {
    let mut bad = bbi();
    bad.metadata.finalizers = None;
    bad.spec.policy.id = Some(format!(
        "{}/backupPolicies/p",
        VAULT.replace("testBkpVault", "otherVault")
    ));
    bad.spec.policy.name = None;
    row(
        "policy of another vault: Stalled naming the field, no finalizer, no Azure call",
        bad,
        Observation::None,
    )
    .action("None")
    .writes(true)
    .health(False, Reason::InvalidSpec)
    .message_has(READY, "spec.policy.id")
    .events(&[Reason::InvalidSpec])
    .requeue(Requeue::AwaitChange);

    let mut retain = with_status(False, Reason::InvalidSpec, None);
    retain.spec.deletion_policy = DeletionPolicy::Retain;
    row(
        "Retain without vaultedBackup, already reported: no event again",
        retain,
        Observation::None,
    )
    .action("None")
    .message_has(READY, "spec.deletionPolicy")
    .events(&[]);

    let mut no_uid = bbi();
    no_uid.metadata.uid = None;
    row("no uid to default the name from", no_uid, Observation::None)
        .health(False, Reason::InvalidSpec)
        .message_has(READY, "metadata.uid");

    // The schema no longer compares the spec with the status (that rule judged every status
    // write too): the controller refuses a name unlike the one it recorded, and never follows
    // it to Azure.
    let mut renamed = ready();
    renamed.spec.backup_instance_name = Some("another-name".into());
    row(
        "name set unlike the one recorded in status: Stalled, no Azure call",
        renamed.clone(),
        Observation::None,
    )
    .action("None")
    .health(False, Reason::InvalidSpec)
    .message_has(
        READY,
        "spec.backupInstanceName: cannot differ from status.backupInstanceName",
    )
    .message_has(READY, &format!("msblobbackup-{UID}"))
    .events(&[Reason::InvalidSpec])
    .requeue(Requeue::AwaitChange);
    row(
        "deleting it deletes the recorded instance, not the one the spec names",
        deleting(renamed, DeletionPolicy::Delete),
        Observation::None,
    )
    .action(&format!("GetInstance {}", instance_id()));

    let mut same_name = ready();
    same_name.spec.backup_instance_name = Some(format!("MsBlobBackup-{UID}"));
    row(
        "name set to the recorded one (ARM names ignore case): carries on",
        same_name,
        Observation::None,
    )
    .action("GetInstance");
}

#[test]
fn deletion() {
    let delete_intended = after(
        deleting(ready(), DeletionPolicy::Delete),
        &[found(instance("ProtectionConfigured"))],
    );
    row(
        "restart with a DELETE intended: look at the instance first",
        delete_intended.clone(),
        Observation::None,
    )
    .action(&format!("GetInstance {}", instance_id()));
    row(
        "the intended DELETE landed: nothing left, the finalizer goes",
        delete_intended,
        Observation::Instance(None),
    )
    .action("RemoveFinalizer");

    row(
        "Delete: look the instance up first",
        deleting(ready(), DeletionPolicy::Delete),
        Observation::None,
    )
    .action(&format!("GetInstance {}", instance_id()));
    row(
        "Delete: DELETE it",
        deleting(ready(), DeletionPolicy::Delete),
        found(instance("ProtectionConfigured")),
    )
    .action(&format!("Delete {}", instance_id()))
    .health(False, Reason::Deleting);
    row(
        "Delete accepted",
        deleting(ready(), DeletionPolicy::Delete),
        started(OperationAction::Delete, Some(30)),
    )
    .action("None")
    .operation(OperationAction::Delete, OperationPhase::InProgress)
    .events(&[Reason::Deleting])
    .requeue(secs(30));
    let deleting_op = || {
        deleting(
            at(
                Reason::Deleting,
                OperationAction::Delete,
                OperationPhase::InProgress,
            ),
            DeletionPolicy::Delete,
        )
    };
    row("Delete in progress: poll", deleting_op(), Observation::None).action("Poll");
    row(
        "Delete confirmed: remove the finalizer",
        deleting_op(),
        polled(PolledStatus::Succeeded),
    )
    .action("RemoveFinalizer")
    .writes(false)
    .events(&[Reason::Deleted])
    .requeue(Requeue::AwaitChange);
    row(
        "Delete done at once (204)",
        deleting(ready(), DeletionPolicy::Delete),
        Observation::Started {
            action: OperationAction::Delete,
            poll: None,
        },
    )
    .action("RemoveFinalizer")
    .events(&[Reason::Deleting, Reason::Deleted]);
    row(
        "404 on DELETE means done",
        deleting(ready(), DeletionPolicy::Delete),
        failed(
            AzureCall::Start(OperationAction::Delete),
            ErrorClass::NeedsPerson,
            404,
            "NotFound",
            None,
        ),
    )
    .action("RemoveFinalizer")
    .events(&[Reason::Deleted]);
    row(
        "instance already gone",
        deleting(ready(), DeletionPolicy::Delete),
        Observation::Instance(None),
    )
    .action("RemoveFinalizer")
    .events(&[Reason::Deleted]);
    row(
        "Delete failed: keep the finalizer, Stalled",
        deleting_op(),
        polled(PolledStatus::Failed(azure(
            "UserErrorStorageAccountInLockedState",
            "locked",
            &[],
        ))),
    )
    .action("None")
    .health(False, Reason::DeletionFailed)
    .message_has(READY, "locked");
    row(
        "Delete rejected (409): keep the finalizer",
        deleting(ready(), DeletionPolicy::Delete),
        failed(
            AzureCall::Start(OperationAction::Delete),
            ErrorClass::NeedsPerson,
            409,
            "Conflict",
            None,
        ),
    )
    .action("None")
    .health(False, Reason::DeletionFailed);
    row(
        "Delete throttled: retry",
        deleting(ready(), DeletionPolicy::Delete),
        failed(
            AzureCall::Start(OperationAction::Delete),
            ErrorClass::Transient,
            429,
            "TooManyRequests",
            Some(20),
        ),
    )
    .action("None")
    .health(False, Reason::AzureThrottled)
    .requeue(secs(20));
    row(
        "restart after Azure confirmed: remove the finalizer",
        deleting(
            at(
                Reason::Deleting,
                OperationAction::Delete,
                OperationPhase::Succeeded,
            ),
            DeletionPolicy::Delete,
        ),
        Observation::None,
    )
    .action("RemoveFinalizer");

    let mut other = instance("ProtectionConfigured");
    other.datasource_id = ObservedId::parse(&ACCOUNT.replace("msblobbackup", "someoneelse"));
    row(
        "the name belongs to another account's instance: leave it",
        deleting(bbi(), DeletionPolicy::Delete),
        found(other),
    )
    .action("RemoveFinalizer")
    .events(&[Reason::InstanceConflict, Reason::Deleted]);

    row(
        "Retain: stop protection",
        deleting(ready(), DeletionPolicy::Retain),
        found(instance("ProtectionConfigured")),
    )
    .action(&format!("StopProtection {}", instance_id()))
    .health(False, Reason::StoppingProtection);
    row(
        "Retain confirmed",
        deleting(
            with_status(
                False,
                Reason::StoppingProtection,
                Some(op(
                    OperationAction::StopProtection,
                    OperationPhase::InProgress,
                )),
            ),
            DeletionPolicy::Retain,
        ),
        polled(PolledStatus::Succeeded),
    )
    .action("RemoveFinalizer")
    .events(&[Reason::ProtectionStopped]);
    row(
        "Retain with protection already stopped",
        deleting(ready(), DeletionPolicy::Retain),
        found(instance("ProtectionStopped")),
    )
    .action("RemoveFinalizer");
    let old_api = Settings {
        azure: AzureApi {
            instance_actions_supported: false,
            api_version: "2021-01-01".into(),
            // Kept on: these rows are about the missing actions, not ownership.
            ..AzureApi::default()
        },
        ..Settings::default()
    };
    row_with(
        "Retain refused when the api-version lacks stopProtection",
        deleting(ready(), DeletionPolicy::Retain),
        found(instance("ProtectionConfigured")),
        &old_api,
    )
    .action("None")
    .health(False, Reason::StopProtectionUnsupported)
    .message_has(READY, "2021-01-01")
    .message_has(READY, "Delete or Orphan");

    row(
        "Orphan: nothing in Azure",
        deleting(ready(), DeletionPolicy::Orphan),
        Observation::None,
    )
    .action("RemoveFinalizer")
    .events(&[Reason::Orphaned]);

    let mut gone = deleting(ready(), DeletionPolicy::Delete);
    gone.metadata.finalizers = None;
    row("no finalizer: nothing to do", gone, Observation::None)
        .action("None")
        .writes(false)
        .requeue(Requeue::AwaitChange);

    let creating = at(
        Reason::Creating,
        OperationAction::Create,
        OperationPhase::InProgress,
    );
    row(
        "deleted while creating: let the PUT finish",
        deleting(creating, DeletionPolicy::Delete),
        Observation::None,
    )
    .action("Poll");
    let validating = at(
        Reason::Validating,
        OperationAction::Validate,
        OperationPhase::InProgress,
    );
    row(
        "deleted while validating: validation writes nothing, abandon it",
        deleting(validating, DeletionPolicy::Delete),
        Observation::None,
    )
    .action("GetInstance");

    let mut invalid = deleting(bbi(), DeletionPolicy::Delete);
    invalid.spec.vault.id = "not an id".into();
    row(
        "invalid spec and nothing written: just remove the finalizer",
        invalid.clone(),
        Observation::None,
    )
    .action("RemoveFinalizer");
    invalid.status = ready().status;
    row(
        "invalid spec after writing to Azure: Stalled",
        invalid,
        Observation::None,
    )
    .action("None")
    .health(False, Reason::InvalidSpec)
    .message_has(READY, "spec.vault.id");
}

#[test]
fn last_transition_time_moves_only_when_status_flips() {
    let r = row(
        "reason changes, status stays False",
        at(
            Reason::Validating,
            OperationAction::Validate,
            OperationPhase::InProgress,
        ),
        polled(PolledStatus::Succeeded),
    );
    let ready_cond = r
        .status()
        .conditions
        .into_iter()
        .find(|c| c.type_ == READY)
        .unwrap();
    assert_eq!(
        (ready_cond.reason.as_str(), ready_cond.last_transition_time),
        ("Creating", Time(t0()))
    );

    let mut created = at(
        Reason::ConfiguringProtection,
        OperationAction::Create,
        OperationPhase::Succeeded,
    );
    created.status.as_mut().unwrap().backup_instance_id = Some(instance_id());
    let s = row(
        "False to True",
        created,
        found(instance("ProtectionConfigured")),
    )
    .status();
    let time_of = |t: &str| {
        s.conditions
            .iter()
            .find(|c| c.type_ == t)
            .unwrap()
            .last_transition_time
            .clone()
    };
    assert_eq!(time_of(READY), Time(now()));
    assert_eq!(time_of(RECONCILING), Time(now()));
    assert_eq!(time_of(STALLED), Time(t0()));
}

/// The world of the controller's own loop ([`run_steps`]) in a test: the resource as the
/// API server holds it, the status writes, finalizer changes and Events the loop makes, and the
/// Azure calls it sends, answered by the test.
struct World {
    obj: BlobBackupInstance,
    now: Timestamp,
    status_writes: usize,
    calls: Vec<String>,
    events: Vec<Reason>,
    /// The status kept in the controller's memory, with the API's status it was kept over:
    /// a crash (a restart) forgets it.
    kept: Option<(Option<BlobBackupInstanceStatus>, BlobBackupInstanceStatus)>,
    /// The API's status whose intent the controller remembers as not sent: a crash (a
    /// restart) forgets it.
    unsent: Option<Option<BlobBackupInstanceStatus>>,
    /// Whether Azure's write budget is spent: a write waits for its slot.
    budget_spent: bool,
    /// Status writes (as `write <Ready's reason> <operation> <phase>`) and Azure calls, in
    /// order.
    trace: Vec<String>,
}

type Answer<'a> = dyn FnMut(&Action) -> Observation + Send + 'a;

/// One reconcile's effects on a [`World`].
struct Recording<'w, 'a> {
    world: &'w mut World,
    answer: &'w mut Answer<'a>,
}

impl Effects for Recording<'_, '_> {
    type Admission = ();

    fn now(&self) -> Timestamp {
        self.world.now
    }

    fn leads(&self) -> bool {
        true
    }

    fn admit_write(&mut self, _: &BudgetKey) -> Result<(), Duration> {
        match self.world.budget_spent {
            true => Err(Duration::from_secs(5)),
            false => Ok(()),
        }
    }

    async fn write_status(
        &mut self,
        obj: &BlobBackupInstance,
        _precious: bool,
    ) -> Result<BlobBackupInstance, Error> {
        self.world.status_writes += 1;
        self.world.obj.status = obj.status.clone();
        let status = obj.status.as_ref().expect("a status to write");
        let ready = status.conditions.iter().find(|c| c.type_ == READY);
        let mut entry = format!("write {}", ready.map_or("", |c| c.reason.as_str()));
        if let Some(op) = &status.operation {
            entry.push_str(&format!(" {:?} {:?}", op.action, op.status));
        }
        self.world.trace.push(entry);
        Ok(self.world.obj.clone())
    }

    fn keep_status(
        &mut self,
        obj: &BlobBackupInstance,
        persisted: Option<&BlobBackupInstanceStatus>,
    ) {
        let status = obj.status.clone().expect("a status to keep");
        self.world.kept = Some((persisted.cloned(), status));
    }

    fn take_kept(&mut self, obj: &BlobBackupInstance) -> Option<BlobBackupInstanceStatus> {
        let (over, status) = self.world.kept.take()?;
        (over == obj.status).then_some(status)
    }

    fn remember_unsent(&mut self, obj: &BlobBackupInstance) {
        self.world.unsent = Some(obj.status.clone());
    }

    fn take_unsent(&mut self, obj: &BlobBackupInstance) -> bool {
        self.world
            .unsent
            .take()
            .is_some_and(|over| over == obj.status)
    }

    async fn add_finalizer(
        &mut self,
        _obj: &BlobBackupInstance,
    ) -> Result<BlobBackupInstance, Error> {
        self.world.obj.metadata.finalizers = Some(vec![FINALIZER.into()]);
        Ok(self.world.obj.clone())
    }

    async fn remove_finalizer(&mut self, _obj: &BlobBackupInstance) -> Result<(), Error> {
        self.world.obj.metadata.finalizers = None;
        Ok(())
    }

    async fn publish(&mut self, _obj: &BlobBackupInstance, events: &[EventSpec]) {
        self.world.events.extend(events.iter().map(|e| e.reason));
    }

    async fn call_azure(&mut self, action: &Action) -> Option<Observation> {
        if matches!(
            action,
            Action::None | Action::AddFinalizer | Action::RemoveFinalizer
        ) {
            return None;
        }
        let call = action_name(action).split(' ').next().unwrap().to_owned();
        self.world.trace.push(call.clone());
        self.world.calls.push(call);
        Some((self.answer)(action))
    }

    fn answered(&mut self, _: &BlobBackupInstance, _: &Observation, _: Option<()>) {}
}

impl World {
    fn new(obj: BlobBackupInstance) -> Self {
        World {
            obj,
            now: now(),
            status_writes: 0,
            calls: Vec::new(),
            events: Vec::new(),
            kept: None,
            unsent: None,
            budget_spent: false,
            trace: Vec::new(),
        }
    }

    /// One reconcile by the controller's loop, Azure answering with `answer`.
    fn reconcile(&mut self, answer: &mut Answer<'_>) -> Requeue {
        let obj = self.obj.clone();
        let mut effects = Recording {
            world: self,
            answer,
        };
        let next = futures::executor::block_on(run_steps(
            &mut effects,
            obj,
            &Settings::default(),
            &Access::OPEN,
        ));
        match next.expect("the recording world never fails") {
            Next::Requeue(requeue) => requeue,
            Next::Abandon => panic!("the recording world always leads"),
        }
    }
}

/// A creation's trace up to the PUT: Validating written once the validation runs (it changes
/// nothing in Azure: no intent before it), then Creating with the PUT's intent.
const VALIDATED_THEN_PUT_INTENDED: &[&str] = &[
    "Validate",
    "write Validating Validate InProgress",
    "Poll",
    "write Creating Create Pending",
];
/// Its trace from the PUT on: the PUT's poll URL stays in memory, Ready is one write.
const PUT_TO_READY: &[&str] = &[
    "Put",
    "Poll",
    "GetInstance",
    "write ProtectionConfigured Create Succeeded",
];

#[test]
fn whole_create_and_delete_flow_is_minimal() {
    let mut fresh = bbi();
    fresh.metadata.finalizers = None;
    let mut world = World::new(fresh);
    let mut azure_answers = |action: &Action| match action {
        Action::Validate(_) => started(OperationAction::Validate, Some(10)),
        _ => panic!("unexpected {action:?}"),
    };
    assert_eq!(world.reconcile(&mut azure_answers), secs(10));
    let mut azure_answers = |action: &Action| match action {
        Action::Poll { .. } => polled(PolledStatus::Succeeded),
        Action::Put { .. } => started(OperationAction::Create, Some(15)),
        _ => panic!("unexpected {action:?}"),
    };
    assert_eq!(world.reconcile(&mut azure_answers), secs(15));
    let mut azure_answers = |action: &Action| match action {
        Action::Poll { .. } => polled(PolledStatus::Succeeded),
        Action::GetInstance(_) => found(instance("ProtectionConfigured")),
        _ => panic!("unexpected {action:?}"),
    };
    assert_eq!(world.reconcile(&mut azure_answers), secs(600));
    assert_eq!(
        world.calls,
        ["Validate", "Poll", "Put", "Poll", "GetInstance"]
    );
    let ready_cond = world
        .obj
        .status
        .as_ref()
        .unwrap()
        .conditions
        .iter()
        .find(|c| c.type_ == READY)
        .unwrap()
        .clone();
    assert_eq!(
        (ready_cond.status, ready_cond.reason.as_str()),
        (True, "ProtectionConfigured")
    );
    // 7 of the 10 decisions changed the status; the loop writes three: Validating once the
    // validation runs (it changes nothing in Azure: no intent before it), Creating with the
    // PUT's intent before the PUT is sent (its poll URL stays in memory), Ready. Polls that
    // find the operation still running write nothing.
    assert_eq!(
        world.trace,
        [VALIDATED_THEN_PUT_INTENDED, PUT_TO_READY].concat()
    );
    assert_eq!(world.status_writes, 3, "status writes");

    let writes = world.status_writes;
    let mut azure_answers = |_: &Action| found(instance("ProtectionConfigured"));
    assert_eq!(world.reconcile(&mut azure_answers), secs(600));
    assert_eq!(
        world.status_writes, writes,
        "a resync that finds nothing new writes nothing"
    );

    world.obj.metadata.deletion_timestamp = Some(Time(now()));
    world.calls.clear();
    let mut azure_answers = |action: &Action| match action {
        Action::GetInstance(_) => found(instance("ProtectionConfigured")),
        Action::Delete(_) => started(OperationAction::Delete, Some(30)),
        _ => panic!("unexpected {action:?}"),
    };
    assert_eq!(world.reconcile(&mut azure_answers), secs(30));
    let mut azure_answers = |action: &Action| match action {
        Action::Poll { .. } => polled(PolledStatus::Succeeded),
        _ => panic!("unexpected {action:?}"),
    };
    assert_eq!(world.reconcile(&mut azure_answers), Requeue::AwaitChange);
    assert_eq!(world.calls, ["GetInstance", "Delete", "Poll"]);
    assert!(world.obj.metadata.finalizers.is_none());
}

impl World {
    /// A fresh resource through its first two reconciles: validated, then its PUT of a new
    /// instance sent (Azure still running it) while `budget_spent` says whether that PUT must
    /// first wait for a slot in Azure's write budget (then a third reconcile, at the slot,
    /// sends it). Each reconcile comes 10 s after the last.
    fn until_the_put_runs(budget_spent: bool) -> Self {
        let mut world = World::new(bbi());
        world.reconcile(&mut |action: &Action| match action {
            Action::Validate(_) => started(OperationAction::Validate, Some(10)),
            _ => panic!("unexpected {action:?}"),
        });
        world.budget_spent = budget_spent;
        let mut azure_answers = |action: &Action| match action {
            Action::Poll { .. } => polled(PolledStatus::Succeeded),
            Action::GetInstance(_) => Observation::Instance(None),
            Action::Put { .. } => started(OperationAction::Create, Some(15)),
            _ => panic!("unexpected {action:?}"),
        };
        for _ in 0..1 + usize::from(budget_spent) {
            world.now += jiff::SignedDuration::from_secs(10);
            world.reconcile(&mut azure_answers);
            world.budget_spent = false;
        }
        world.now += jiff::SignedDuration::from_secs(10);
        world
    }
}

/// The PUT of a resource whose write waited for its slot in the budget: the validation's end
/// is written with the PUT's intent when the wait starts (Creating), and the reconcile at the
/// slot sends the PUT without writing that intent again: three status writes, like a PUT that
/// did not wait. (Before: the intent was written again for its new time, and the poll URLs of
/// the validation and the PUT: six.) Nor does it GET the instance first: the controller knows
/// the intent was not sent, so the five Azure calls of a PUT that did not wait. (Before: six,
/// a GET at the slot.)
#[test]
fn a_put_that_waits_for_its_slot_costs_no_extra_status_write_nor_get() {
    let mut world = World::until_the_put_runs(true);
    world.reconcile(&mut |action: &Action| match action {
        Action::Poll { .. } => polled(PolledStatus::Succeeded),
        Action::GetInstance(_) => found(instance("ProtectionConfigured")),
        _ => panic!("unexpected {action:?}"),
    });
    assert_eq!(
        world.trace,
        [VALIDATED_THEN_PUT_INTENDED, PUT_TO_READY].concat()
    );
    assert_eq!(world.status_writes, 3, "status writes");
    assert_eq!(world.calls.len(), 5, "Azure calls: {:?}", world.calls);
}

/// When the controller cannot know the intent was not sent, the GET before the PUT stays: a
/// restart during the wait (the intent may have gone out before a crash), or a wait longer
/// than `retry_after_max` (the view the PUT was decided on is older than any a PUT without a
/// wait acts on).
#[test]
fn a_waited_put_looks_at_the_instance_first_after_a_restart_or_a_long_wait() {
    let settings = Settings::default();
    let long = jiff::SignedDuration::try_from(settings.timing.retry_after_max).unwrap();
    for (case, restart, wait) in [
        ("restarted", true, jiff::SignedDuration::ZERO),
        ("waited long", false, long),
    ] {
        let mut world = World::new(bbi());
        world.reconcile(&mut |action: &Action| match action {
            Action::Validate(_) => started(OperationAction::Validate, Some(10)),
            _ => panic!("unexpected {action:?}"),
        });
        world.budget_spent = true;
        world.now += jiff::SignedDuration::from_secs(10);
        world.reconcile(&mut |action: &Action| match action {
            Action::Poll { .. } => polled(PolledStatus::Succeeded),
            _ => panic!("{case}: unexpected {action:?}"),
        });
        world.budget_spent = false;
        if restart {
            world.unsent = None;
        }
        world.now += wait + jiff::SignedDuration::from_secs(1);
        world.calls.clear();
        world.reconcile(&mut |action: &Action| match action {
            Action::GetInstance(_) => Observation::Instance(None),
            Action::Put { .. } => started(OperationAction::Create, Some(15)),
            _ => panic!("{case}: unexpected {action:?}"),
        });
        assert_eq!(world.calls, ["GetInstance", "Put"], "{case}");
    }
}

/// A fresh resource whose validation waits for its slot in the budget writes no status before
/// it: its first reconcile's Initializing would be decided again at the slot.
#[test]
fn a_validation_that_waits_for_its_slot_writes_nothing_before_it() {
    let mut fresh = bbi();
    fresh.metadata.finalizers = None;
    let mut world = World::new(fresh);
    world.budget_spent = true;
    world.reconcile(&mut |action: &Action| panic!("unexpected {action:?}"));
    assert!(world.obj.metadata.finalizers.is_some());
    assert_eq!(world.status_writes, 0, "status writes while waiting");
    world.budget_spent = false;
    world.reconcile(&mut |action: &Action| match action {
        Action::Validate(_) => started(OperationAction::Validate, Some(10)),
        _ => panic!("unexpected {action:?}"),
    });
    assert_eq!(VALIDATED_THEN_PUT_INTENDED[..2], world.trace);
}

/// A crash while the PUT runs loses its poll URL (kept in memory, never written): the restarted
/// controller finds the PUT's intent Pending, GETs the instance, and takes the instance found
/// as that PUT's outcome (the operation ends: no Create shown in flight on a Ready resource).
/// No second PUT.
#[test]
fn a_crash_while_the_put_runs_sends_no_second_put() {
    let mut world = World::until_the_put_runs(false);
    let intent = world.obj.status.clone().unwrap().operation.unwrap();
    assert_eq!(
        (intent.action, intent.status, intent.poll_url),
        (OperationAction::Create, OperationPhase::Pending, None),
        "the API holds the PUT's intent, not its poll URL"
    );
    world.kept = None;
    world.trace.clear();
    let mut azure_answers = |action: &Action| match action {
        Action::GetInstance(_) => found(instance("ConfiguringProtection")),
        _ => panic!("unexpected {action:?}"),
    };
    world.reconcile(&mut azure_answers);
    let mut azure_answers = |action: &Action| match action {
        Action::GetInstance(_) => found(instance("ProtectionConfigured")),
        _ => panic!("unexpected {action:?}"),
    };
    world.reconcile(&mut azure_answers);
    assert_eq!(
        world.trace,
        [
            "GetInstance",
            "write ConfiguringProtection Create Succeeded",
            "GetInstance",
            "write ProtectionConfigured Create Succeeded",
        ]
    );
}

#[test]
fn a_deletion_with_a_forged_poll_url_still_completes() {
    // Someone wrote a poll URL of their choosing into the status of a resource being deleted.
    let mut obj = deleting(ready(), DeletionPolicy::Delete);
    obj.status.as_mut().unwrap().operation = Some(AzureOperation {
        poll_url: Some("https://management.azure.com/subscriptions/s/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv/secrets/x".into()),
        ..op(OperationAction::Delete, OperationPhase::InProgress)
    });
    let world = |obj: &BlobBackupInstance| World::new(obj.clone());
    let refused = || {
        Observation::PollRefused {
        message: "refused to poll /subscriptions/s/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv/secrets/x: it names providers \"Microsoft.KeyVault\"".into(),
    }
    };

    // The instance is already gone: done, without a second DELETE.
    let mut gone = world(&obj);
    let mut answer = |action: &Action| match action {
        Action::Poll { .. } => refused(),
        Action::GetInstance(_) => Observation::Instance(None),
        _ => panic!("unexpected {action:?}"),
    };
    assert_eq!(gone.reconcile(&mut answer), Requeue::AwaitChange);
    assert_eq!(gone.calls, ["Poll", "GetInstance"]);
    assert!(gone.obj.metadata.finalizers.is_none());
    assert_eq!(gone.events, [Reason::PollUrlRefused, Reason::Deleted]);

    // Still there: deleted again, then followed at Azure's (genuine) poll URL.
    let mut there = world(&obj);
    let mut answer = |action: &Action| match action {
        Action::Poll { .. } => refused(),
        Action::GetInstance(_) => found(instance("ProtectionConfigured")),
        Action::Delete(_) => started(OperationAction::Delete, Some(30)),
        _ => panic!("unexpected {action:?}"),
    };
    assert_eq!(there.reconcile(&mut answer), secs(30));
    let mut answer = |action: &Action| match action {
        Action::Poll { url, .. } if url == POLL => polled(PolledStatus::Succeeded),
        _ => panic!("unexpected {action:?}"),
    };
    assert_eq!(there.reconcile(&mut answer), Requeue::AwaitChange);
    assert_eq!(there.calls, ["Poll", "GetInstance", "Delete", "Poll"]);
    assert!(there.obj.metadata.finalizers.is_none());
}

#[test]
fn reasons_are_camel_case_and_unique() {
    let mut seen = std::collections::HashSet::new();
    for reason in Reason::ALL {
        let s = reason.as_str();
        assert!(
            s.chars().next().unwrap().is_ascii_uppercase()
                && s.chars().all(|c| c.is_ascii_alphanumeric()),
            "{s}"
        );
        assert!(seen.insert(s), "{s} twice");
    }
    assert!(Reason::ALL.len() >= 30);
}

#[test]
fn stalled_retries_back_off_and_recover_by_themselves() {
    let mut world = World::new(bbi());
    let validated_at_once = |action: &Action| match action {
        Action::GetInstance(_) => Observation::Instance(None),
        Action::Validate(_) => Observation::Started {
            action: OperationAction::Validate,
            poll: None,
        },
        _ => panic!("unexpected {action:?}"),
    };
    // validateForBackup "succeeds" at once here only to reach PUT, which Azure refuses.
    let mut answer = |action: &Action| match action {
        Action::Put { .. } => failed(
            AzureCall::Start(OperationAction::Create),
            ErrorClass::NeedsPerson,
            403,
            "LinkedAuthorizationFailed",
            None,
        ),
        other => validated_at_once(other),
    };
    let mut waits = Vec::new();
    for _ in 0..7 {
        let requeue = world.reconcile(&mut answer);
        let Requeue::After(wait) = requeue else {
            panic!("{requeue:?}")
        };
        waits.push(wait.as_secs());
        world.now += jiff::SignedDuration::try_from(wait).unwrap();
        let status = world.obj.status.clone().unwrap();
        let stalled = status
            .conditions
            .iter()
            .find(|c| c.type_ == STALLED)
            .unwrap();
        assert_eq!(
            (stalled.status, stalled.reason.as_str()),
            (True, "AccessDenied")
        );
    }
    assert_eq!(waits, [10, 10, 20, 40, 80, 120, 120]);
    assert_eq!(
        world.events,
        [Reason::Validating, Reason::AccessDenied],
        "one Warning, not one per retry"
    );
    let op = world
        .obj
        .status
        .as_ref()
        .unwrap()
        .operation
        .clone()
        .unwrap();
    assert_eq!(
        (op.action, op.status),
        (OperationAction::Create, OperationPhase::Failed)
    );

    // The person grants access: the next retry goes through without any edit.
    let mut granted = |action: &Action| match action {
        Action::GetInstance(_) => Observation::Instance(None),
        Action::Validate(_) => started(OperationAction::Validate, Some(10)),
        _ => panic!("unexpected {action:?}"),
    };
    world.reconcile(&mut granted);
    let mut granted = |action: &Action| match action {
        Action::Poll { .. } => polled(PolledStatus::Succeeded),
        Action::Put { .. } => started(OperationAction::Create, Some(10)),
        _ => panic!("unexpected {action:?}"),
    };
    world.reconcile(&mut granted);
    let status = world.obj.status.clone().unwrap();
    let stalled = status
        .conditions
        .iter()
        .find(|c| c.type_ == STALLED)
        .unwrap();
    assert_eq!(
        (stalled.status, stalled.reason.as_str()),
        (False, "Creating")
    );
}

#[test]
fn retry_while_stalled_keeps_the_stall_until_it_succeeds() {
    let stalled = after(
        validating(),
        &[polled(PolledStatus::Failed(missing_permission()))],
    );
    row(
        "retrying validation: only its intent is written, Stalled stays",
        stalled.clone(),
        Observation::Instance(None),
    )
    .action("Validate")
    .writes(true)
    .operation(OperationAction::Validate, OperationPhase::Pending)
    .health(False, Reason::MissingPermissions);
    row(
        "retry accepted: the operation is recorded, Stalled stays, no event",
        stalled.clone(),
        started(OperationAction::Validate, Some(10)),
    )
    .operation(OperationAction::Validate, OperationPhase::InProgress)
    .health(False, Reason::MissingPermissions)
    .cond(VALIDATED, False, Reason::MissingPermissions)
    .events(&[]);
    let mut edited = stalled;
    edited.metadata.generation = Some(2);
    row(
        "after an edit the retry shows progress",
        edited,
        Observation::Instance(None),
    )
    .action("Validate")
    .health(False, Reason::Validating);

    let mut synced = at(
        Reason::ProtectionError,
        OperationAction::Sync,
        OperationPhase::Succeeded,
    );
    synced.status.as_mut().unwrap().backup_instance_id = Some(instance_id());
    synced
        .status
        .as_mut()
        .unwrap()
        .operation
        .as_mut()
        .unwrap()
        .end_time = Some(Time(now() - jiff::SignedDuration::from_secs(5)));
    let mut broken = instance("ProtectionError");
    broken.protection_error = Some(azure("UserErrorX", "still broken", &[]));
    row(
        "synced 5s ago, stalled for 60s: not yet",
        synced.clone(),
        found(broken.clone()),
    )
    .action("None")
    .health(False, Reason::ProtectionError)
    .events(&[])
    .requeue(secs(60));
    synced
        .status
        .as_mut()
        .unwrap()
        .operation
        .as_mut()
        .unwrap()
        .end_time = Some(Time(now() - jiff::SignedDuration::from_secs(90)));
    row(
        "synced 90s ago: sync again, still Stalled",
        synced,
        found(broken),
    )
    .action("Sync")
    .health(False, Reason::ProtectionError);
}

/// What `kubectl get` shows: short names, and the operation only while it matters.
#[test]
fn columns_show_short_names_and_only_a_live_or_failed_operation() {
    fn shown(obj: &BlobBackupInstance) -> (Option<&str>, Option<&str>, Option<&str>, Option<&str>) {
        let s = obj.status.as_ref().unwrap();
        (
            s.vault_name.as_deref(),
            s.storage_account_name.as_deref(),
            s.policy_name.as_deref(),
            s.current_operation.as_deref(),
        )
    }
    let names = (
        Some("testBkpVault"),
        Some("msblobbackup"),
        Some("BlobBackup-Policy"),
    );
    let with_names = |op: Option<&'static str>| (names.0, names.1, names.2, op);

    // The names come from the spec on the first decision, which records the validation's
    // intent before sending it.
    let first = after(bbi(), &[Observation::None]);
    assert_eq!(shown(&first), with_names(Some("Validate Pending")));
    assert_eq!(
        shown(&validating()),
        with_names(Some("Validate InProgress"))
    );
    assert_eq!(shown(&creating()), with_names(Some("Create InProgress")));
    assert_eq!(
        shown(&ready()),
        with_names(None),
        "a succeeded Create is not shown"
    );

    // A failed validate shows while the resource is not Ready...
    let failed = after(
        validating(),
        &[polled(PolledStatus::Failed(AzureErrorDetail {
            code: "UserErrorMissingRequiredPermissions".into(),
            message: "missing".into(),
            ..AzureErrorDetail::default()
        }))],
    );
    assert_eq!(shown(&failed), with_names(Some("Validate Failed")));
    // ...and no longer once Azure reports the account protected (Ready=True).
    let mut stale = failed;
    stale.status.as_mut().unwrap().backup_instance_id = Some(instance_id());
    let now_ready = after(stale, &[found(instance("ProtectionConfigured"))]);
    let status = now_ready.status.as_ref().unwrap();
    assert_eq!(
        status.operation.as_ref().unwrap().status,
        OperationPhase::Failed
    );
    assert_eq!(shown(&now_ready), with_names(None));
}

/// Vaulted backup records when the latest recovery point was taken: it changes when a backup
/// happens, never because the operator looked.
#[test]
fn the_last_recovery_point_is_recorded_for_vaulted_backup() {
    let mut vaulted = ready();
    vaulted.spec.vaulted_backup = Some(VaultedBackup {
        containers: vec!["images".into()],
    });
    let mut in_azure = instance("ProtectionConfigured");
    in_azure.containers = Some(vec!["images".into()]);
    let backup = t0() + jiff::SignedDuration::from_secs(30);
    let time = |obj: &BlobBackupInstance| {
        obj.status
            .as_ref()
            .and_then(|s| s.last_recovery_point_time.clone())
            .map(|t| t.0)
    };

    in_azure.last_recovery_point = LastRecoveryPoint::At(backup);
    let first = row(
        "a recovery point is recorded",
        vaulted.clone(),
        found(in_azure.clone()),
    )
    .action("None")
    .health(True, Reason::ProtectionConfigured)
    .writes(true);
    let recorded = after(vaulted.clone(), &[found(in_azure.clone())]);
    assert_eq!(time(&recorded), Some(backup), "{}", first.name);

    row(
        "the same recovery point at the next resync: no write",
        recorded.clone(),
        found(in_azure.clone()),
    )
    .action("None")
    .writes(false);

    let mut unread = in_azure.clone();
    unread.last_recovery_point = LastRecoveryPoint::NotRead;
    row(
        "the list failed: the recorded time stays, no write",
        recorded.clone(),
        found(unread),
    )
    .action("None")
    .health(True, Reason::ProtectionConfigured)
    .writes(false);

    let later = backup + jiff::SignedDuration::from_secs(86_400);
    in_azure.last_recovery_point = LastRecoveryPoint::At(later);
    let next = after(recorded.clone(), &[found(in_azure.clone())]);
    assert_eq!(time(&next), Some(later), "a new backup is recorded");

    // Operational backup has no recovery points; a vanished instance has none either.
    let mut operational = recorded.clone();
    operational.spec.vaulted_backup = None;
    let mut operational_in_azure = instance("ProtectionConfigured");
    operational_in_azure.last_recovery_point = LastRecoveryPoint::NotRead;
    assert_eq!(
        time(&after(operational, &[found(operational_in_azure)])),
        None
    );
    assert_eq!(time(&after(recorded, &[Observation::Instance(None)])), None);
}

// ---- ownership and vault grants (DESIGN.md section 9) ----

fn tag<'t>(tags: &'t std::collections::BTreeMap<String, String>, key: &str) -> Option<&'t str> {
    tags.get(key).map(String::as_str)
}

/// `instance` tagged for another resource (`uid`) of `cluster`.
fn owned_by(mut instance: ObservedInstance, cluster: &str, uid: &str) -> ObservedInstance {
    let mut other = bbi();
    other.metadata.namespace = Some("team-b".into());
    other.metadata.name = Some("theirs".into());
    other.metadata.uid = Some(uid.into());
    instance.tags = owner_tags(&other, cluster);
    instance
}

const NO_ADOPTION: Access = Access::Granted {
    allow_adoption: false,
};

fn not_granted(deletion_allowed: bool) -> Access {
    Access::NotGranted {
        message: "No BackupVaultGrant lets namespace team-a use Backup vault testBkpVault".into(),
        deletion_allowed,
    }
}

fn without_tags() -> Settings {
    Settings {
        azure: AzureApi {
            tags_supported: false,
            instance_actions_supported: false,
            api_version: "2021-01-01".into(),
        },
        ..Settings::default()
    }
}

impl Row {
    /// The tags of the decided PUT.
    fn put_tags(self, check: impl FnOnce(&std::collections::BTreeMap<String, String>)) -> Self {
        match &self.d.action {
            Action::Put { tags, .. } => check(tags),
            other => panic!("{}: not a PUT: {other:?}", self.name),
        }
        self
    }

    fn ownership(self, expected: Option<Ownership>) -> Self {
        assert_eq!(self.status().ownership, expected, "{}", self.name);
        self
    }
}

#[test]
fn ownership_tags_and_status() {
    let cluster = Settings::default().cluster_id;
    row(
        "creation: the PUT carries our owner tags, and Created is recorded with the intent",
        validating(),
        polled(PolledStatus::Succeeded),
    )
    .action("Put Create")
    .ownership(Some(Ownership::Created))
    .put_tags(|tags| {
        assert_eq!(tag(tags, "blobbackup.io/uid"), Some(UID));
        assert_eq!(tag(tags, "blobbackup.io/namespace"), Some("team-a"));
        assert_eq!(tag(tags, "blobbackup.io/name"), Some("msblobbackup"));
        assert_eq!(tag(tags, "blobbackup.io/cluster"), Some(cluster.as_str()));
    });
    row_with(
        "api-version without tags: the PUT carries none, ownership still recorded",
        validating(),
        polled(PolledStatus::Succeeded),
        &without_tags(),
    )
    .action("Put Create")
    .ownership(Some(Ownership::Created))
    .put_tags(|tags| assert!(tags.is_empty(), "{tags:?}"));
    row(
        "our own instance, tags intact: Ready, no write",
        ready(),
        found(instance("ProtectionConfigured")),
    )
    .action("None")
    .ownership(Some(Ownership::Created));

    let mut shouting = instance("ProtectionConfigured");
    shouting.tags = shouting
        .tags
        .into_iter()
        .map(|(k, v)| (k.to_uppercase(), v.to_uppercase()))
        .collect();
    row(
        "tag names and the uid compare case-insensitively, as ARM's",
        ready(),
        found(shouting),
    )
    .action("None");

    let mut lost = untagged(instance("ProtectionConfigured"));
    lost.tags.insert("costcenter".into(), "42".into());
    row(
        "our instance lost its owner tags: one PUT puts them back, keeping the others",
        ready(),
        found(lost),
    )
    .action("Put Update")
    .events(&[])
    .put_tags(|tags| {
        assert_eq!(tag(tags, "costcenter"), Some("42"));
        assert_eq!(tag(tags, "blobbackup.io/uid"), Some(UID));
    });
    row_with(
        "api-version without tags: ownership lives in status, an untagged instance of ours is fine",
        ready(),
        found(untagged(instance("ProtectionConfigured"))),
        &without_tags(),
    )
    .action("None")
    .health(True, Reason::ProtectionConfigured);

    // A status from before ownership was recorded: our Create in it makes the instance ours.
    let mut legacy = ready();
    legacy.status.as_mut().unwrap().ownership = None;
    row(
        "status written before ownership existed, our Create in it: ours, tagged on the next look",
        legacy,
        found(untagged(instance("ProtectionConfigured"))),
    )
    .action("Put Update")
    .events(&[])
    .ownership(Some(Ownership::Created));
}

#[test]
fn instances_owned_elsewhere_are_never_written() {
    for (name, theirs) in [
        (
            "another resource of this cluster (two resources naming one instance)",
            owned_by(
                instance("ProtectionConfigured"),
                &Settings::default().cluster_id,
                "0000-other",
            ),
        ),
        (
            "the same uid in another cluster",
            owned_by(instance("ProtectionConfigured"), "other-cluster", UID),
        ),
    ] {
        row(name, bbi(), found(theirs.clone()))
            .action("None")
            .health(False, Reason::OwnedElsewhere)
            .message_has(READY, "team-b/theirs")
            .events(&[Reason::OwnedElsewhere])
            .requeue(secs(10))
            .ownership(None);
        // A policy change or a protection error of theirs changes nothing: still no write.
        let mut error = theirs.clone();
        error.protection_status = Some("ProtectionError".into());
        error.policy_id = ObservedId::parse(&policy_id("Other-Policy"));
        row(name, bbi(), found(error)).action("None");
        // Deleting this resource: the finalizer goes, nothing is sent to Azure.
        row(name, deleting(bbi(), DeletionPolicy::Delete), found(theirs))
            .action("RemoveFinalizer")
            .events(&[Reason::OwnedElsewhere, Reason::Deleted]);
    }
    row(
        "the other cluster is named in the message",
        bbi(),
        found(owned_by(
            instance("ProtectionConfigured"),
            "other-cluster",
            "0000-other",
        )),
    )
    .message_has(READY, "cluster other-cluster");
    let mut partial = instance("ProtectionConfigured");
    partial.tags = [("blobbackup.io/uid".to_string(), "0000-other".to_string())].into();
    row(
        "only some owner tags: still someone else's",
        bbi(),
        found(partial),
    )
    .health(False, Reason::OwnedElsewhere);
}

#[test]
fn adoption_needs_a_grant_that_allows_it_and_tags() {
    row_access(
        "untagged instance, grant without allowAdoption: Stalled, no write",
        bbi(),
        found(untagged(instance("ProtectionConfigured"))),
        &Settings::default(),
        &NO_ADOPTION,
    )
    .action("None")
    .health(False, Reason::AdoptionNotAllowed)
    .message_has(READY, "allowAdoption")
    .events(&[Reason::AdoptionNotAllowed])
    .ownership(None);
    row_access(
        "untagged instance, grant allows adoption: Adopted, one PUT with our tags",
        bbi(),
        found(untagged(instance("ProtectionConfigured"))),
        &Settings::default(),
        &Access::Granted {
            allow_adoption: true,
        },
    )
    .action("Put Update")
    .ownership(Some(Ownership::Adopted))
    .events(&[Reason::Adopted])
    .put_tags(|tags| assert_eq!(tag(tags, "blobbackup.io/uid"), Some(UID)));
    row_with(
        "api-version without tags: adoption refused even when allowed",
        bbi(),
        found(untagged(instance("ProtectionConfigured"))),
        &without_tags(),
    )
    .action("None")
    .health(False, Reason::AdoptionNotAllowed)
    .message_has(READY, "api-version 2021-01-01");
    row(
        "deleting a resource that never owned the untagged instance: untouched",
        deleting(bbi(), DeletionPolicy::Delete),
        found(untagged(instance("ProtectionConfigured"))),
    )
    .action("RemoveFinalizer")
    .events(&[Reason::Deleted]);
    let mut adopted = after(
        bbi(),
        &[
            found(untagged(instance("ProtectionConfigured"))),
            started(OperationAction::Update, None),
            found(instance("ProtectionConfigured")),
        ],
    );
    assert_eq!(
        adopted.status.as_ref().unwrap().ownership,
        Some(Ownership::Adopted)
    );
    adopted = deleting(adopted, DeletionPolicy::Delete);
    row(
        "deleting an adopted instance (granted): deleted like our own",
        adopted,
        found(instance("ProtectionConfigured")),
    )
    .action("Delete");
}

#[test]
fn vault_grants() {
    let mut fresh = bbi();
    fresh.metadata.finalizers = None;
    row_access(
        "no grant: Stalled VaultNotGranted, no finalizer, no Azure call",
        fresh,
        Observation::None,
        &Settings::default(),
        &not_granted(false),
    )
    .action("None")
    .health(False, Reason::VaultNotGranted)
    .message_has(READY, "No BackupVaultGrant")
    .events(&[Reason::VaultNotGranted])
    .requeue(secs(10));
    row_access(
        "grant removed from a Ready resource: no more Azure calls, not even a resync GET",
        ready(),
        Observation::None,
        &Settings::default(),
        &not_granted(false),
    )
    .action("None")
    .health(False, Reason::VaultNotGranted);
    row_access(
        "grant removed mid-operation: the operation is not polled",
        creating(),
        Observation::None,
        &Settings::default(),
        &not_granted(false),
    )
    .action("None")
    .operation(OperationAction::Create, OperationPhase::InProgress);
    row(
        "granted again: the recorded operation is polled",
        creating(),
        Observation::None,
    )
    .action("Poll");

    // Deletion when the vault is no longer granted.
    let mut adopted = ready();
    adopted.status.as_mut().unwrap().ownership = Some(Ownership::Adopted);
    row_access(
        "not granted, adopted instance: left untouched as with Orphan, no Azure call",
        deleting(adopted.clone(), DeletionPolicy::Delete),
        Observation::None,
        &Settings::default(),
        &not_granted(false),
    )
    .action("RemoveFinalizer")
    .events(&[Reason::Orphaned]);
    row_access(
        "not granted, but the grant still allows the deletion policy: carried out",
        deleting(adopted, DeletionPolicy::Delete),
        Observation::None,
        &Settings::default(),
        &not_granted(true),
    )
    .action("GetInstance");
    row_access(
        "not granted, instance created by this resource: it may always delete it",
        deleting(ready(), DeletionPolicy::Delete),
        Observation::None,
        &Settings::default(),
        &not_granted(false),
    )
    .action("GetInstance");
    row_access(
        "not granted, created: the DELETE follows the GET",
        deleting(ready(), DeletionPolicy::Delete),
        found(instance("ProtectionConfigured")),
        &Settings::default(),
        &not_granted(false),
    )
    .action("Delete");
}
