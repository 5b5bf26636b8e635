//! Bodies of the restore calls: `findRestorableTimeRanges`, `validateRestore`, `restore` and
//! the backup jobs they create, as the official API description builds them
//! (`AzureBackupRecoveryTimeBasedRestoreRequest` for operational backup,
//! `AzureBackupRecoveryPointBasedRestoreRequest` for vaulted backup).

use serde::{Deserialize, Serialize};

use super::{Datasource, UserFacingError, parse_azure_time};
use crate::ids::StorageAccountId;

/// `sourceDataStoreType` of operational (point-in-time) backup.
pub const OPERATIONAL_STORE: &str = "OperationalStore";
/// `sourceDataStoreType` of vaulted backup.
pub const VAULT_STORE: &str = "VaultStore";
/// The one `recoveryOption` Azure offers for blobs: existing blobs are not overwritten.
pub const FAIL_IF_EXISTS: &str = "FailIfExists";

/// The body of `.../findRestorableTimeRanges` (`AzureBackupFindRestorableTimeRangesRequest`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FindRestorableTimeRangesRequest {
    /// `OperationalStore` for blobs.
    pub source_data_store_type: String,
    /// The start of the window to look in (ISO 8601).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<String>,
    /// The end of the window to look in (ISO 8601).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_time: Option<String>,
}

/// The answer of `findRestorableTimeRanges`
/// (`AzureBackupFindRestorableTimeRangesResponseResource`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FindRestorableTimeRangesResponseResource {
    /// The ranges.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub properties: Option<FindRestorableTimeRangesResponse>,
}

/// The ranges a backup instance can be restored to (`AzureBackupFindRestorableTimeRangesResponse`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FindRestorableTimeRangesResponse {
    /// The ranges, oldest first as Azure lists them (not relied on).
    #[serde(default)]
    pub restorable_time_ranges: Vec<RestorableTimeRange>,
    /// `AzureBackupFindRestorableTimeRangesResponse`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_type: Option<String>,
}

/// One restorable range (`RestorableTimeRange`), times verbatim.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RestorableTimeRange {
    /// The earliest time of the range.
    pub start_time: String,
    /// The latest time of the range.
    pub end_time: String,
    /// `RestorableTimeRange`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_type: Option<String>,
}

impl RestorableTimeRange {
    /// Whether `at` lies in the range (both ends included); a range whose times do not read
    /// as times contains nothing.
    pub fn contains(&self, at: jiff::Timestamp) -> bool {
        match (
            parse_azure_time(&self.start_time),
            parse_azure_time(&self.end_time),
        ) {
            (Some(start), Some(end)) => start <= at && at <= end,
            _ => false,
        }
    }
}

/// A restore request (`AzureBackupRestoreRequest`, discriminated by `objectType`): the body of
/// `restore`, and inside `validateRestore`'s.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RestoreRequest {
    /// `AzureBackupRecoveryTimeBasedRestoreRequest` or `AzureBackupRecoveryPointBasedRestoreRequest`.
    pub object_type: String,
    /// Operational backup: the time to restore to (`2020-08-14T17:30:00.0000000Z`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery_point_time: Option<String>,
    /// Vaulted backup: the recovery point's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery_point_id: Option<String>,
    /// Where to restore to.
    pub restore_target_info: RestoreTargetInfo,
    /// `OperationalStore` or `VaultStore`.
    pub source_data_store_type: String,
    /// The protected storage account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_resource_id: Option<String>,
}

/// The target of a restore (`RestoreTargetInfo` for the whole account,
/// `ItemLevelRestoreTargetInfo` with `restoreCriteria` for containers or prefixes).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RestoreTargetInfo {
    /// `RestoreTargetInfo` or `ItemLevelRestoreTargetInfo`.
    pub object_type: String,
    /// `FailIfExists`.
    pub recovery_option: String,
    /// The target's region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_location: Option<String>,
    /// The target account's blob service (spelled `datasourceInfo` here, unlike a backup
    /// instance's `dataSourceInfo`: read back, the names are rewritten to the one spelling
    /// [`super::SPEC_PROPERTY_NAMES`] holds, so that one is accepted too).
    #[serde(alias = "dataSourceInfo")]
    pub datasource_info: Datasource,
    /// The target account (read back also as `dataSourceSetInfo`, as above).
    #[serde(alias = "dataSourceSetInfo")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datasource_set_info: Option<Datasource>,
    /// Which items to restore (`ItemLevelRestoreTargetInfo` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_criteria: Option<Vec<RestoreCriteria>>,
}

/// One item-level criterion (`ItemLevelRestoreCriteria`, discriminated by `objectType`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "objectType")]
pub enum RestoreCriteria {
    /// Operational backup: blobs whose `container/name` lies from `minMatchingValue` to
    /// `maxMatchingValue`.
    #[serde(rename_all = "camelCase")]
    RangeBasedItemLevelRestoreCriteria {
        /// The range's start.
        min_matching_value: String,
        /// The range's end.
        max_matching_value: String,
    },
    /// Vaulted backup: a container, optionally only blobs under some prefixes in it.
    #[serde(rename_all = "camelCase")]
    ItemPathBasedRestoreCriteria {
        /// The container.
        item_path: String,
        /// True: `itemPath` is relative to the storage account.
        is_path_relative_to_backup_item: bool,
        /// Blob-name prefixes inside the container.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sub_item_path_prefix: Option<Vec<String>>,
    },
}

/// The body of `validateRestore` (`ValidateRestoreRequestObject`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ValidateRestoreRequest {
    /// The restore to check.
    pub restore_request_object: RestoreRequest,
}

/// What to restore from, and where to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestoreSource {
    /// Operational backup: the account as of this time.
    PointInTime(jiff::Timestamp),
    /// Vaulted backup: this recovery point's name.
    RecoveryPoint(String),
}

/// A restore of a protected storage account's blobs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobRestoreTarget {
    /// The protected account.
    pub source: StorageAccountId,
    /// The account to restore into (the source itself for an original-location restore).
    pub target: StorageAccountId,
    /// The target account's region.
    pub location: String,
    /// Only these containers (empty: all).
    pub containers: Vec<String>,
    /// Only blobs under these `container/prefix` prefixes (empty: all).
    pub prefixes: Vec<String>,
}

impl RestoreRequest {
    /// The request Azure's tools build for a blob restore:
    /// - point in time: `AzureBackupRecoveryTimeBasedRestoreRequest` from `OperationalStore`;
    ///   containers and prefixes become `RangeBasedItemLevelRestoreCriteria` (a container `c`
    ///   is the range `c` to `c-0`, as Azure's documentation writes it; a prefix `p` the range
    ///   from `p` to `p` with its last character raised by one, i.e. every name starting with `p`);
    /// - recovery point: `AzureBackupRecoveryPointBasedRestoreRequest` from `VaultStore`;
    ///   containers become `ItemPathBasedRestoreCriteria`, each with the prefixes in it.
    ///
    /// Without containers or prefixes the target is a `RestoreTargetInfo` (the whole account),
    /// otherwise an `ItemLevelRestoreTargetInfo`. The recovery option is `FailIfExists`.
    pub fn for_blobs(point: &RestoreSource, restore: &BlobRestoreTarget) -> Self {
        let datasource_info = Datasource::for_blob_account(&restore.target, &restore.location);
        let datasource_set_info = Datasource {
            object_type: Some("DatasourceSet".to_string()),
            ..datasource_info.clone()
        };
        let (object_type, time, id, store) = match point {
            RestoreSource::PointInTime(at) => (
                "AzureBackupRecoveryTimeBasedRestoreRequest",
                Some(at.strftime("%Y-%m-%dT%H:%M:%S%.7fZ").to_string()),
                None,
                OPERATIONAL_STORE,
            ),
            RestoreSource::RecoveryPoint(id) => (
                "AzureBackupRecoveryPointBasedRestoreRequest",
                None,
                Some(id.clone()),
                VAULT_STORE,
            ),
        };
        let criteria = match point {
            RestoreSource::PointInTime(_) => range_criteria(restore),
            RestoreSource::RecoveryPoint(_) => path_criteria(restore),
        };
        let target_type = if criteria.is_empty() {
            "RestoreTargetInfo"
        } else {
            "ItemLevelRestoreTargetInfo"
        };
        Self {
            object_type: object_type.to_string(),
            recovery_point_time: time,
            recovery_point_id: id,
            restore_target_info: RestoreTargetInfo {
                object_type: target_type.to_string(),
                recovery_option: FAIL_IF_EXISTS.to_string(),
                restore_location: Some(restore.location.clone()),
                datasource_info,
                datasource_set_info: Some(datasource_set_info),
                restore_criteria: (!criteria.is_empty()).then_some(criteria),
            },
            source_data_store_type: store.to_string(),
            source_resource_id: Some(restore.source.to_string()),
        }
    }
}

fn range_criteria(restore: &BlobRestoreTarget) -> Vec<RestoreCriteria> {
    let container = restore
        .containers
        .iter()
        .map(|c| (c.clone(), format!("{c}-0")));
    let prefix = restore
        .prefixes
        .iter()
        .map(|p| (p.clone(), after_prefix(p)));
    container
        .chain(prefix)
        .map(
            |(min, max)| RestoreCriteria::RangeBasedItemLevelRestoreCriteria {
                min_matching_value: min,
                max_matching_value: max,
            },
        )
        .collect()
}

/// The first string after every string that starts with `prefix`: its last character
/// raised by one (a `char::MAX` last character is dropped instead).
fn after_prefix(prefix: &str) -> String {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        if let Some(next) = char::from_u32(u32::from(last) + 1) {
            chars.push(next);
            break;
        }
    }
    chars.into_iter().collect()
}

fn path_criteria(restore: &BlobRestoreTarget) -> Vec<RestoreCriteria> {
    let mut containers: Vec<&str> = restore.containers.iter().map(String::as_str).collect();
    for prefix in &restore.prefixes {
        let container = prefix.split('/').next().unwrap_or(prefix);
        if !containers.contains(&container) {
            containers.push(container);
        }
    }
    containers
        .into_iter()
        .map(|container| {
            let inside: Vec<String> = restore
                .prefixes
                .iter()
                .filter_map(|p| p.strip_prefix(container)?.strip_prefix('/'))
                .filter(|rest| !rest.is_empty())
                .map(str::to_string)
                .collect();
            RestoreCriteria::ItemPathBasedRestoreCriteria {
                item_path: container.to_string(),
                is_path_relative_to_backup_item: true,
                sub_item_path_prefix: (!inside.is_empty()).then_some(inside),
            }
        })
        .collect()
}

/// A backup job (`AzureBackupJobResource`), reduced to what a restore follows.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobResource {
    /// The job's ARM ID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The job's name (its id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub properties: Option<Job>,
}

/// What a job says of itself (`AzureBackupJob`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Job {
    /// Open set: `InProgress`, `Started`, `Completed`, `CompletedWithWarnings`, `Failed`,
    /// `Cancelled`, `Cancelling`, `Paused`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// e.g. `Restore`, `Backup`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<String>,
    /// When the job started, verbatim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<String>,
    /// When the job ended, verbatim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_time: Option<String>,
    /// The errors of a failed job.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub error_details: Vec<UserFacingError>,
}

/// Where a job stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobState {
    /// Not over (`InProgress`, `Started`, `Cancelling`, `Paused`, or a status not known);
    /// `raw` is Azure's status verbatim.
    Running {
        /// Azure's status.
        raw: String,
    },
    /// `Completed` or `CompletedWithWarnings`.
    Completed,
    /// `Failed`, with Azure's first error.
    Failed(crate::AzureErrorDetail),
    /// `Cancelled` (or `Canceled`).
    Cancelled,
}

impl Job {
    /// The job's state (statuses compared case-insensitively).
    pub fn state(&self) -> JobState {
        let raw = self.status.as_deref().unwrap_or_default().trim();
        let is = |s: &str| raw.eq_ignore_ascii_case(s);
        if is("Completed") || is("CompletedWithWarnings") {
            JobState::Completed
        } else if is("Failed") {
            JobState::Failed(self.error_details.first().map_or_else(
                || crate::AzureErrorDetail {
                    code: "JobFailed".to_string(),
                    message: "Azure reported the job as Failed without an error".to_string(),
                    ..crate::AzureErrorDetail::default()
                },
                crate::AzureErrorDetail::from_user_facing,
            ))
        } else if is("Cancelled") || is("Canceled") {
            JobState::Cancelled
        } else {
            JobState::Running {
                raw: raw.to_string(),
            }
        }
    }
}
