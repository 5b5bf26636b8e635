//! The `BlobRestore` custom resource: a restore of a protected storage account's blobs, to a
//! point in time (operational backup) or from a recovery point (vaulted backup).

use super::*;

/// The `recoveryPoint` value that means the newest recovery point Azure lists.
pub const LATEST_RECOVERY_POINT: &str = "latest";
// Azure restores at most 10 prefix ranges per request (point-in-time restore's limit).
const MAX_PREFIXES: usize = 10;
const MAX_PREFIX_LEN: usize = 1024;
// Kubernetes object names (DNS subdomains).
const MAX_OBJECT_NAME_LEN: usize = 253;

/// A one-time restore of the blobs a BlobBackupInstance protects.
// Each printcolumn(...) has its own `type_`: not the duplicate clippy takes it for.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "dataprotection.blobbackup.io",
    version = "v1alpha1",
    kind = "BlobRestore",
    plural = "blobrestores",
    shortname = "bbr",
    category = "azure",
    category = "backup",
    namespaced,
    status = "BlobRestoreStatus",
    derive = "PartialEq",
    doc = "Restores the blobs of a storage account protected by a BlobBackupInstance, once: to a point in time (operational backup) or from a recovery point (vaulted backup). Deleting it never cancels or undoes the restore in Azure.",
    printcolumn(
        name = "Phase",
        type_ = "string",
        json_path = ".status.phase",
        description = "Pending, Validating, Restoring, Succeeded or Failed"
    ),
    printcolumn(
        name = "Source",
        type_ = "string",
        json_path = ".spec.backupInstanceRef.name",
        description = "The BlobBackupInstance whose backups are restored"
    ),
    printcolumn(
        name = "Point",
        type_ = "string",
        json_path = ".status.restorePoint",
        description = "The point in time or recovery point restored"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason",
        priority = 1,
        description = "Why the restore is or is not Ready"
    ),
    printcolumn(
        name = "Job",
        type_ = "string",
        json_path = ".status.jobId",
        priority = 1,
        description = "Azure's restore job"
    ),
    printcolumn(
        name = "Message",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].message",
        priority = 1,
        description = "Details of the Ready condition"
    )
)]
#[x_kube(
    validation = Rule::new("has(self.pointInTime) != has(self.recoveryPoint)")
        .message("set exactly one of spec.pointInTime (operational backup: the account as of that time) and spec.recoveryPoint (vaulted backup: latest or a recovery point's name)"),
    validation = Rule::new("!has(self.targetStorageAccount) || has(self.recoveryPoint)")
        .message("spec.targetStorageAccount needs spec.recoveryPoint: operational backup restores to the protected account only; remove targetStorageAccount or restore from a vaulted recovery point"),
    validation = Rule::new("!has(self.targetStorageAccount) || !has(self.prefixes)")
        .message("spec.prefixes cannot be restored into another account (Azure refuses it): restore whole spec.containers, or remove spec.targetStorageAccount"),
    validation = Rule::new("self == oldSelf")
        .message("the spec of a BlobRestore is immutable: create a new BlobRestore for another restore")
        .reason(Reason::FieldValueForbidden),
)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = optional_not_nullable)]
pub struct BlobRestoreSpec {
    /// The BlobBackupInstance in this namespace whose backups are restored. It must be Ready.
    pub backup_instance_ref: BackupInstanceRef,

    /// Operational backup: restore the account's blobs as they were at this time (RFC 3339,
    /// e.g. `2026-12-01T10:00:00Z`), which must lie in a range Azure can restore to. Set this
    /// or `recoveryPoint`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "time_schema")]
    pub point_in_time: Option<String>,

    /// Vaulted backup: `latest` (the newest recovery point when the restore starts) or a
    /// recovery point's name as Azure lists it. Set this or `pointInTime`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = MAX_NAME_LEN), regex(pattern = resource_name_pattern()))]
    pub recovery_point: Option<String>,

    /// Only these containers (default: all; for vaulted backup, containers the backup
    /// includes), e.g. `[images]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = MAX_CONTAINERS), inner(length(min = CONTAINER_MIN_LEN, max = CONTAINER_MAX_LEN), regex(pattern = container_name_pattern())))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub containers: Option<Vec<String>>,

    /// Only blobs whose `<container>/<name>` starts with one of these prefixes, e.g.
    /// `images/2026/` (at most 10). Not with `targetStorageAccount`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = MAX_PREFIXES), inner(length(min = 4, max = MAX_PREFIX_LEN), regex(pattern = prefix_pattern())))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub prefixes: Option<Vec<String>>,

    /// Vaulted backup only: restore into this storage account instead of the protected one.
    /// The vault's identity needs the Storage Account Backup Contributor role on it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_storage_account: Option<TargetStorageAccount>,
}

/// A BlobBackupInstance in the same namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct BackupInstanceRef {
    /// The BlobBackupInstance's name.
    #[schemars(length(min = 1, max = MAX_OBJECT_NAME_LEN))]
    pub name: String,
}

/// The storage account a vaulted restore writes into.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct TargetStorageAccount {
    /// The account's full ARM ID.
    #[schemars(length(max = MAX_ID_LEN), regex(pattern = arm_id_shape_pattern(8)))]
    #[x_kube(validation = arm_id_rule("spec.targetStorageAccount.id", &storage_account_id_pattern(), ACCOUNT_SHAPE))]
    pub id: String,

    /// The account's Azure region as a lowercase name, e.g. `westus`.
    #[schemars(length(min = 1, max = MAX_LOCATION_LEN), regex(pattern = location_pattern()))]
    pub location: String,
}

/// The schema pattern of `spec.prefixes`: a container name, `/`, then anything.
pub fn prefix_pattern() -> String {
    "^[a-z0-9](-?[a-z0-9])*/.*$".to_owned()
}

/// Where a restore stands.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum RestorePhase {
    // Checking the source and the restore point.
    Pending,
    // validateRestore running.
    Validating,
    // The restore was sent; its job is running.
    Restoring,
    // The job completed.
    Succeeded,
    // The job failed or was cancelled.
    Failed,
}

fn restore_phase_schema(generator: &mut SchemaGenerator) -> Schema {
    generator.subschema_for::<RestorePhase>()
}

/// The observed state of the restore.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BlobRestoreStatus {
    /// The `metadata.generation` this status was written for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Pending, Validating, Restoring, Succeeded or Failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    // Left out when unset, never null: an enum listing null is a schema the apiserver (up to
    // at least v1.19) refuses to install.
    #[schemars(schema_with = "restore_phase_schema")]
    pub phase: Option<RestorePhase>,

    /// The backup instance restored from (the source's, recorded when the restore point is
    /// checked): the restore follows it even if the source changes later.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_STATUS_ID_LEN))]
    pub backup_instance_id: Option<String>,

    /// The point restored: the time (RFC 3339), or the recovery point's name (`latest`
    /// resolved).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_STATUS_NAME_LEN))]
    pub restore_point: Option<String>,

    /// Azure's restore job (in the vault's Backup jobs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_STATUS_ID_LEN))]
    pub job_id: Option<String>,

    /// When the restore request was sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "time_schema")]
    pub start_time: Option<Time>,

    /// When the restore job ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "time_schema")]
    pub end_time: Option<Time>,

    /// The Azure long-running operation in flight (ValidateRestore or Restore), or the last one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<AzureOperation>,

    /// Ready (True when the restore succeeded), Reconciling and Stalled.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

impl BlobRestoreStatus {
    /// Truncates every string to the schema's limit for it.
    pub fn fit_to_schema(&mut self) {
        fn fit(value: &mut Option<String>, max: usize) {
            if let Some(text) = value.as_mut() {
                truncate_in_place(text, max);
            }
        }
        fit(&mut self.backup_instance_id, MAX_STATUS_ID_LEN);
        fit(&mut self.restore_point, MAX_STATUS_NAME_LEN);
        fit(&mut self.job_id, MAX_STATUS_ID_LEN);
        fit_operation(self.operation.as_mut());
        fit_conditions(&mut self.conditions);
    }
}

/// What a BlobRestore asks for, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestorePointSpec {
    /// Operational backup: this time.
    PointInTime(jiff::Timestamp),
    /// Vaulted backup: the newest recovery point.
    Latest,
    /// Vaulted backup: this recovery point.
    RecoveryPoint(String),
}

/// A BlobRestore spec the controller has checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidatedRestore {
    /// The point to restore.
    pub point: RestorePointSpec,
    /// Only these containers (empty: all).
    pub containers: Vec<String>,
    /// Only these prefixes (empty: all).
    pub prefixes: Vec<String>,
    /// Another account to restore into, and its region.
    pub target: Option<(StorageAccountId, String)>,
}

static PREFIX: LazyLock<Regex> = LazyLock::new(|| compile(&prefix_pattern()));

impl BlobRestoreSpec {
    /// Checks the spec as the schema does (for resources that bypassed it) plus what it
    /// cannot: the time must parse and not lie after `now`.
    pub fn validate(&self, now: jiff::Timestamp) -> Result<ValidatedRestore, SpecError> {
        let point = match (&self.point_in_time, &self.recovery_point) {
            (Some(text), None) => {
                let at: jiff::Timestamp = text.trim().parse().map_err(|e| {
                    SpecError::new(
                        "spec.pointInTime",
                        format!("{text:?} is not an RFC 3339 time ({e})"),
                        "write it like 2026-12-01T10:00:00Z",
                    )
                })?;
                if at > now {
                    return Err(SpecError::new(
                        "spec.pointInTime",
                        format!("{text} is in the future (now is {now})"),
                        "restore to a time that has passed: create a new BlobRestore",
                    ));
                }
                RestorePointSpec::PointInTime(at)
            }
            (None, Some(point)) if point == LATEST_RECOVERY_POINT => RestorePointSpec::Latest,
            (None, Some(point)) => {
                check(
                    "spec.recoveryPoint",
                    point,
                    MAX_NAME_LEN,
                    &RESOURCE_NAME_RE,
                    "latest, or a recovery point's name as Azure lists it",
                )?;
                RestorePointSpec::RecoveryPoint(point.clone())
            }
            _ => {
                return Err(SpecError::new(
                    "spec.pointInTime",
                    "exactly one of spec.pointInTime and spec.recoveryPoint must be set",
                    "set pointInTime (operational backup) or recoveryPoint (vaulted backup)",
                ));
            }
        };
        let containers = match &self.containers {
            Some(list) => validate_container_list("spec.containers", list)?,
            None => Vec::new(),
        };
        let prefixes = self.prefixes.clone().unwrap_or_default();
        for prefix in &prefixes {
            check(
                "spec.prefixes",
                prefix,
                MAX_PREFIX_LEN,
                &PREFIX,
                "<container>/<blob name prefix>, e.g. images/2026/",
            )?;
        }
        let target = match &self.target_storage_account {
            None => None,
            Some(_)
                if !matches!(
                    point,
                    RestorePointSpec::Latest | RestorePointSpec::RecoveryPoint(_)
                ) =>
            {
                return Err(SpecError::new(
                    "spec.targetStorageAccount",
                    "operational backup restores to the protected account only",
                    "remove targetStorageAccount, or restore from spec.recoveryPoint",
                ));
            }
            Some(_) if !prefixes.is_empty() => {
                return Err(SpecError::new(
                    "spec.prefixes",
                    "prefixes cannot be restored into another account (Azure refuses it)",
                    "restore whole spec.containers, or remove spec.targetStorageAccount",
                ));
            }
            Some(account) => {
                check(
                    "spec.targetStorageAccount.id",
                    &account.id,
                    MAX_ID_LEN,
                    &ACCOUNT_ID,
                    ACCOUNT_SHAPE,
                )?;
                let id = StorageAccountId::parse(&account.id).map_err(|e| {
                    SpecError::new(
                        "spec.targetStorageAccount.id",
                        e.to_string(),
                        must_look_like("spec.targetStorageAccount.id", ACCOUNT_SHAPE),
                    )
                })?;
                check(
                    "spec.targetStorageAccount.location",
                    &account.location,
                    MAX_LOCATION_LEN,
                    &LOCATION,
                    "a region's lowercase name, e.g. westus",
                )?;
                Some((id, account.location.clone()))
            }
        };
        Ok(ValidatedRestore {
            point,
            containers,
            prefixes,
            target,
        })
    }
}
