//! Request and response bodies of the `Microsoft.DataProtection` calls the operator makes.
//!
//! Requests are written in the spec's exact property casing. Responses are read leniently:
//! unknown properties are ignored, status strings stay `String` (Azure's enums are open sets),
//! and property names are matched in any casing (the article itself sends `datasourceinfo`):
//! [`read_json`] and [`PROPERTY_NAMES`], through [`crate::json_casing`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::ids::{PolicyId, StorageAccountId};
use super::json_casing::PropertyNames;

/// Every property name of these models, in the spec's casing (a test holds the list to what
/// the models write); the emulator's model adds its few own.
pub const SPEC_PROPERTY_NAMES: &[&str] = &[
    "id",
    "name",
    "type",
    "properties",
    "tags",
    "value",
    "nextLink",
    "objectType",
    "recoveryPointTime",
    "friendlyName",
    "dataSourceInfo",
    "dataSourceSetInfo",
    "policyInfo",
    "protectionStatus",
    "currentProtectionState",
    "protectionErrorDetails",
    "provisioningState",
    "validationType",
    "identityDetails",
    "datasourceAuthCredentials",
    "resourceGuardOperationRequests",
    "datasourceType",
    "resourceID",
    "resourceLocation",
    "resourceName",
    "resourceType",
    "resourceUri",
    "resourceProperties",
    "policyId",
    "policyVersion",
    "policyParameters",
    "dataStoreParametersList",
    "backupDatasourceParametersList",
    "containersList",
    "status",
    "errorDetails",
    "code",
    "message",
    "recommendedAction",
    "recommendedActions",
    "target",
    "details",
    "innerError",
    "isRetryable",
    "isUserError",
    "additionalInfo",
    "embeddedInnerError",
    "error",
    "info",
    "startTime",
    "endTime",
    "jobId",
    "backupInstance",
    "syncType",
    "restorableTimeRanges",
    "sourceDataStoreType",
    "recoveryPointId",
    "restoreTargetInfo",
    "sourceResourceId",
    "recoveryOption",
    "restoreLocation",
    "restoreCriteria",
    "minMatchingValue",
    "maxMatchingValue",
    "itemPath",
    "isPathRelativeToBackupItem",
    "subItemPathPrefix",
    "restoreRequestObject",
    "operation",
];

/// The names of these models, for reading Azure's answers in any casing; `tags` keys are user
/// data.
pub static PROPERTY_NAMES: std::sync::LazyLock<PropertyNames> =
    std::sync::LazyLock::new(|| PropertyNames::new(SPEC_PROPERTY_NAMES, &["tags"]));

/// Parses an answer of Azure into a model, property names in any casing.
pub fn read_json<T: serde::de::DeserializeOwned>(text: &[u8]) -> serde_json::Result<T> {
    PROPERTY_NAMES.from_slice(text)
}

mod restore;
pub use restore::*;

/// `datasourceType` of blobs in a storage account.
pub const BLOB_DATASOURCE_TYPE: &str = "Microsoft.Storage/storageAccounts/blobServices";
/// `resourceType` of a storage account.
pub const STORAGE_ACCOUNT_RESOURCE_TYPE: &str = "Microsoft.Storage/storageAccounts";
/// `objectType` of a backup instance.
pub const BACKUP_INSTANCE_OBJECT_TYPE: &str = "BackupInstance";

fn backup_instance_object_type() -> String {
    BACKUP_INSTANCE_OBJECT_TYPE.to_string()
}

/// A backup instance as ARM returns it (`BackupInstanceResource`), and the PUT body
/// (`{"properties": ...}`; `id`, `name` and `type` are read-only and left out when unset).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct BackupInstanceResource {
    /// The instance's ARM ID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The instance's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The resource type, `Microsoft.DataProtection/backupVaults/backupInstances`.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub resource_type: Option<String>,
    /// The backup instance itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub properties: Option<BackupInstance>,
    /// Resource tags.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<BTreeMap<String, String>>,
}

impl BackupInstanceResource {
    /// Azure's `properties.protectionStatus.status`, verbatim.
    pub fn protection_status(&self) -> Option<&str> {
        self.properties
            .as_ref()?
            .protection_status
            .as_ref()?
            .status
            .as_deref()
    }
}

/// A page of backup instances (`BackupInstanceResourceList`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BackupInstanceResourceList {
    /// The instances on this page.
    #[serde(default)]
    pub value: Vec<BackupInstanceResource>,
    /// The URL of the next page, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_link: Option<String>,
}

/// A page of recovery points (`AzureBackupRecoveryPointResourceList`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RecoveryPointResourceList {
    /// The recovery points on this page.
    #[serde(default)]
    pub value: Vec<RecoveryPointResource>,
    /// The URL of the next page, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_link: Option<String>,
}

/// A recovery point (`AzureBackupRecoveryPointResource`), reduced to what status shows.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RecoveryPointResource {
    /// The recovery point's ARM ID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The recovery point's name, what a restore names it by.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Its properties (`AzureBackupDiscreteRecoveryPoint` for vaulted blob backup).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub properties: Option<RecoveryPointProperties>,
}

/// What a recovery point says of itself.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RecoveryPointProperties {
    /// The discriminator, e.g. `AzureBackupDiscreteRecoveryPoint`.
    #[serde(default)]
    pub object_type: String,
    /// When the backup was taken (required for discrete recovery points).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery_point_time: Option<String>,
}

impl RecoveryPointResource {
    /// The time of the backup, when Azure gave one that reads as a date-time (Azure's own
    /// examples use `Z`; .NET may leave the zone out, which means UTC).
    pub fn time(&self) -> Option<jiff::Timestamp> {
        parse_azure_time(self.properties.as_ref()?.recovery_point_time.as_deref()?)
    }

    /// The recovery point's name (what a restore names it by): `name`, else the last segment
    /// of `id`.
    pub fn point_name(&self) -> Option<&str> {
        self.name
            .as_deref()
            .or_else(|| self.id.as_deref()?.rsplit('/').next())
            .filter(|name| !name.is_empty())
    }
}

/// A time as Azure prints it: RFC 3339 (its examples use `Z`), or without a zone, which .NET
/// does and which means UTC.
pub fn parse_azure_time(text: &str) -> Option<jiff::Timestamp> {
    let text = text.trim();
    text.parse::<jiff::Timestamp>().ok().or_else(|| {
        let civil: jiff::civil::DateTime = text.parse().ok()?;
        civil
            .to_zoned(jiff::tz::TimeZone::UTC)
            .ok()
            .map(|z| z.timestamp())
    })
}

/// A backup instance (`BackupInstance`): what to protect, with which policy, and (read-only)
/// how the protection is doing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BackupInstance {
    /// Display name; Azure derives one when it is not sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub friendly_name: Option<String>,
    /// The data source: for blobs, the storage account's blob service.
    #[serde()]
    pub data_source_info: Datasource,
    /// The data source set: for blobs, the storage account again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_source_set_info: Option<DatasourceSet>,
    /// The backup policy and its parameters.
    pub policy_info: PolicyInfo,
    /// Read-only: Azure's protection status (open set: `ProtectionConfigured`, `ProtectionError`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protection_status: Option<ProtectionStatusDetails>,
    /// Read-only: the current protection state (open set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_protection_state: Option<String>,
    /// Read-only: the protection error, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protection_error_details: Option<UserFacingError>,
    /// Read-only: provisioning state (free text: `Provisioning`, `Succeeded`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provisioning_state: Option<String>,
    /// `ShallowValidation` or `DeepValidation`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation_type: Option<String>,
    /// Which identity of the vault to use (unused for blobs; kept as sent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_details: Option<Value>,
    /// Credentials of the data source (unused for blobs; kept as sent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datasource_auth_credentials: Option<Value>,
    /// Resource guard operation requests (multi-user authorization).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_guard_operation_requests: Option<Vec<String>>,
    /// Always `BackupInstance`.
    #[serde(default = "backup_instance_object_type")]
    pub object_type: String,
}

impl BackupInstance {
    /// The backup instance for the blobs of `account`: operational backup when
    /// `vaulted_containers` is `None`, vaulted backup of those containers otherwise.
    ///
    /// The body follows the article and the 2026-06-01 blob examples: `dataSourceInfo` for the
    /// account's blob service (`resourceUri` is the account ID, as the examples send it);
    /// `dataSourceSetInfo` with the same values and objectType `DatasourceSet`, which every
    /// official example sends (the article's operational body leaves it out, and both are
    /// accepted); `policyInfo.policyId`, plus for vaulted backup
    /// `policyParameters.backupDatasourceParametersList` with one `BlobBackupDatasourceParameters`
    /// naming the containers. `friendlyName` is left to Azure.
    pub fn for_blob_account(
        account: &StorageAccountId,
        location: &str,
        policy: &PolicyId,
        vaulted_containers: Option<&[String]>,
    ) -> Self {
        let data_source_info = Datasource::for_blob_account(account, location);
        let data_source_set_info = Datasource {
            object_type: Some("DatasourceSet".to_string()),
            ..data_source_info.clone()
        };
        let policy_parameters = vaulted_containers.map(|containers| PolicyParameters {
            data_store_parameters_list: None,
            backup_datasource_parameters_list: Some(vec![
                BackupDatasourceParameters::BlobBackupDatasourceParameters {
                    containers_list: containers.to_vec(),
                },
            ]),
        });
        Self {
            friendly_name: None,
            data_source_info,
            data_source_set_info: Some(data_source_set_info),
            policy_info: PolicyInfo {
                policy_id: policy.to_string(),
                policy_version: None,
                policy_parameters,
            },
            protection_status: None,
            current_protection_state: None,
            protection_error_details: None,
            provisioning_state: None,
            validation_type: None,
            identity_details: None,
            datasource_auth_credentials: None,
            resource_guard_operation_requests: None,
            object_type: backup_instance_object_type(),
        }
    }

    /// The storage account this instance protects, if its `resourceID` is one.
    pub fn storage_account(&self) -> Option<StorageAccountId> {
        StorageAccountId::parse(&self.data_source_info.resource_id).ok()
    }

    /// The policy this instance uses, if `policyId` parses.
    pub fn policy(&self) -> Option<PolicyId> {
        PolicyId::parse(&self.policy_info.policy_id).ok()
    }

    /// The containers of a vaulted blob backup (`BlobBackupDatasourceParameters` or the ADLS
    /// variant); `None` for operational backup or other parameter kinds.
    pub fn vaulted_containers(&self) -> Option<&[String]> {
        self.policy_info
            .policy_parameters
            .as_ref()?
            .backup_datasource_parameters_list
            .as_ref()?
            .iter()
            .find_map(BackupDatasourceParameters::containers)
    }
}

/// A data source (`Datasource`), also the shape of a data source set.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Datasource {
    /// e.g. `Microsoft.Storage/storageAccounts/blobServices`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datasource_type: Option<String>,
    /// `Datasource` or `DatasourceSet`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_type: Option<String>,
    /// The ARM ID of the resource.
    #[serde(rename = "resourceID")]
    pub resource_id: String,
    /// The resource's region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_location: Option<String>,
    /// The resource's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_name: Option<String>,
    /// The resource's type, e.g. `Microsoft.Storage/storageAccounts`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_type: Option<String>,
    /// The resource's URI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_uri: Option<String>,
    /// Data-source specific properties (unused for blobs; kept as sent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_properties: Option<Value>,
}

impl Datasource {
    /// The blob service of `account` in `location` (`resourceUri` is the account ID, as the
    /// examples send it).
    pub fn for_blob_account(account: &StorageAccountId, location: &str) -> Self {
        Self {
            datasource_type: Some(BLOB_DATASOURCE_TYPE.to_string()),
            object_type: Some("Datasource".to_string()),
            resource_id: account.to_string(),
            resource_location: Some(location.to_string()),
            resource_name: Some(account.name().to_string()),
            resource_type: Some(STORAGE_ACCOUNT_RESOURCE_TYPE.to_string()),
            resource_uri: Some(account.to_string()),
            resource_properties: None,
        }
    }
}

/// A data source set (`DatasourceSet`): the same wire shape as [`Datasource`], objectType
/// `DatasourceSet`.
pub type DatasourceSet = Datasource;

/// The policy of a backup instance (`PolicyInfo`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyInfo {
    /// The policy's ARM ID.
    pub policy_id: String,
    /// Read-only: the policy version in use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_version: Option<String>,
    /// Parameters for the policy (vaulted blob backup: the containers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_parameters: Option<PolicyParameters>,
}

/// Parameters of a policy for one backup instance (`PolicyParameters`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyParameters {
    /// Data store parameters (disk backup; kept as sent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_store_parameters_list: Option<Vec<Value>>,
    /// Data source parameters (vaulted blob backup: the containers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_datasource_parameters_list: Option<Vec<BackupDatasourceParameters>>,
}

/// Data source parameters (`BackupDatasourceParameters`, discriminated by `objectType`).
/// Kinds this operator does not use (auto-protection rules, Kubernetes, ...) are kept as JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "objectType")]
pub enum BackupDatasourceParameters {
    /// Vaulted blob backup of the listed containers.
    #[serde(rename_all = "camelCase")]
    BlobBackupDatasourceParameters {
        /// The containers to back up.
        containers_list: Vec<String>,
    },
    /// Vaulted backup of the listed containers of an ADLS Gen2 account.
    #[serde(rename_all = "camelCase")]
    AdlsBlobBackupDatasourceParameters {
        /// The containers to back up.
        containers_list: Vec<String>,
    },
    /// Any other kind, verbatim.
    #[serde(untagged)]
    Other(Value),
}

impl BackupDatasourceParameters {
    /// The containers, for the two container-list kinds.
    pub fn containers(&self) -> Option<&[String]> {
        match self {
            Self::BlobBackupDatasourceParameters { containers_list }
            | Self::AdlsBlobBackupDatasourceParameters { containers_list } => Some(containers_list),
            Self::Other(_) => None,
        }
    }
}

/// The protection status of a backup instance (`ProtectionStatusDetails`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProtectionStatusDetails {
    /// Open set: `ConfiguringProtection`, `ProtectionConfigured`, `ProtectionError`, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// The error behind a failed status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_details: Option<UserFacingError>,
}

/// An error written for people (`UserFacingError`): in `additionalInfo[].info` of a CloudError
/// and in a backup instance's protection status.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserFacingError {
    /// The error code, e.g. `UserErrorMissingRequiredPermissions`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// The message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// What the person should do.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        // A different word, not a casing: some answers use the plural.
        alias = "recommendedActions"
    )]
    pub recommended_action: Option<Vec<String>>,
    /// Target of the error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Related errors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<Vec<UserFacingError>>,
    /// The inner error, with `DetailedNonLocalisedMessage`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inner_error: Option<InnerError>,
    /// Whether retrying may help.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_retryable: Option<bool>,
    /// Whether the user caused it (Azure sets it `false` even for user errors).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_user_error: Option<bool>,
    /// Extra key/value pairs, e.g. `ActivityId`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub properties: Option<BTreeMap<String, Value>>,
}

/// The inner error of a [`UserFacingError`] (`InnerError`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InnerError {
    /// The inner error code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// Key/value details, e.g. `DetailedNonLocalisedMessage`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub additional_info: Option<BTreeMap<String, Value>>,
    /// A nested inner error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedded_inner_error: Option<Box<InnerError>>,
}

impl InnerError {
    /// `additionalInfo.DetailedNonLocalisedMessage`, looked up case-insensitively.
    pub fn detailed_message(&self) -> Option<&str> {
        self.additional_info
            .as_ref()?
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case("DetailedNonLocalisedMessage"))
            .and_then(|(_, value)| value.as_str())
    }
}

/// An ARM error response (`CloudError`, the same wire shape as common-types `ErrorResponse`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct CloudError {
    /// The error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
}

/// The `error` of a CloudError or of a failed operation (`Error`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorBody {
    /// The error code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// The message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Target of the error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Nested errors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<Vec<ErrorBody>>,
    /// Typed extra information; `UserFacingError` entries carry the recommended actions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub additional_info: Option<Vec<ErrorAdditionalInfo>>,
}

impl ErrorBody {
    /// The first `UserFacingError` in `additionalInfo`, here or in the nested `details`.
    pub fn user_facing_error(&self) -> Option<UserFacingError> {
        let own = self.additional_info.iter().flatten().find_map(|info| {
            let is_user_facing = info
                .info_type
                .as_deref()
                .is_some_and(|t| t.eq_ignore_ascii_case("UserFacingError"));
            let value = info.info.as_ref().filter(|_| is_user_facing)?;
            PROPERTY_NAMES.from_value(value.clone()).ok()
        });
        own.or_else(|| {
            self.details
                .iter()
                .flatten()
                .find_map(ErrorBody::user_facing_error)
        })
    }
}

/// One entry of `additionalInfo` (`ErrorAdditionalInfo`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ErrorAdditionalInfo {
    /// The kind of information, e.g. `UserFacingError`.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub info_type: Option<String>,
    /// The information.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub info: Option<Value>,
}

/// An operation status document (`OperationResource`), from an `Azure-AsyncOperation` URL.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OperationResource {
    /// The status document's ID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The operation's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Open set: `Succeeded`, `Failed`, `Canceled`, `InProgress`, `Inprogress`, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Start time, verbatim (Azure's values are not always RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<String>,
    /// End time, verbatim (`0001-01-01T00:00:00` while running).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_time: Option<String>,
    /// The error of a failed or canceled operation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
    /// Extended info, e.g. `{"objectType": "OperationJobExtendedInfo", "jobId": ...}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub properties: Option<Value>,
}

/// The 200 body of validateForBackup and of `operationResults` (`OperationJobExtendedInfo`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OperationJobExtendedInfo {
    /// `OperationJobExtendedInfo` (absent in 2021-01-01 examples).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_type: Option<String>,
    /// The job created for the operation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
}

/// The body of validateForBackup (`ValidateForBackupRequest`). The spec and the 2026-06-01
/// example have no `objectType` here (some documentation adds one); none is sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ValidateForBackupRequest {
    /// The instance to validate.
    pub backup_instance: BackupInstance,
}

/// The body of `.../sync` (`SyncBackupInstanceRequest`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SyncBackupInstanceRequest {
    /// `Default` (re-sync only on failure) or `ForceResync`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_type: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A name missing from `SPEC_PROPERTY_NAMES` would be read in the spec's casing only.
    #[test]
    fn every_name_the_models_write_is_known() {
        let account: StorageAccountId =
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/a"
                .parse()
                .unwrap();
        let policy: PolicyId = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.DataProtection/backupVaults/v/backupPolicies/p".parse().unwrap();
        let inner = InnerError {
            code: Some("c".into()),
            additional_info: Some(BTreeMap::new()),
            embedded_inner_error: Some(Box::default()),
        };
        let user_error = UserFacingError {
            code: Some("c".into()),
            message: Some("m".into()),
            recommended_action: Some(vec!["r".into()]),
            target: Some("t".into()),
            details: Some(vec![UserFacingError::default()]),
            inner_error: Some(inner),
            is_retryable: Some(false),
            is_user_error: Some(false),
            properties: Some(BTreeMap::new()),
        };
        let mut instance =
            BackupInstance::for_blob_account(&account, "westus", &policy, Some(&["c".into()]));
        instance.friendly_name = Some("f".into());
        instance.data_source_info.resource_properties = Some(json!({}));
        instance.policy_info.policy_version = Some("1".into());
        instance.protection_status = Some(ProtectionStatusDetails {
            status: Some("s".into()),
            error_details: Some(user_error.clone()),
        });
        instance.current_protection_state = Some("s".into());
        instance.protection_error_details = Some(user_error.clone());
        instance.provisioning_state = Some("s".into());
        instance.validation_type = Some("v".into());
        instance.identity_details = Some(json!({}));
        instance.datasource_auth_credentials = Some(json!({}));
        instance.resource_guard_operation_requests = Some(vec![]);
        let resource = BackupInstanceResource {
            id: Some("i".into()),
            name: Some("n".into()),
            resource_type: Some("t".into()),
            properties: Some(instance.clone()),
            tags: Some(BTreeMap::from([("Any Tag".into(), "v".into())])),
        };
        let error = ErrorBody {
            code: Some("c".into()),
            message: Some("m".into()),
            target: Some("t".into()),
            details: Some(vec![ErrorBody::default()]),
            additional_info: Some(vec![ErrorAdditionalInfo {
                info_type: Some("UserFacingError".into()),
                info: Some(serde_json::to_value(&user_error).unwrap()),
            }]),
        };
        let documents = [
            serde_json::to_value(BackupInstanceResourceList {
                value: vec![resource],
                next_link: Some("l".into()),
            }),
            serde_json::to_value(RecoveryPointResourceList {
                value: vec![RecoveryPointResource {
                    id: Some("i".into()),
                    name: Some("n".into()),
                    properties: Some(RecoveryPointProperties {
                        object_type: "o".into(),
                        recovery_point_time: Some("t".into()),
                    }),
                }],
                next_link: Some("l".into()),
            }),
            serde_json::to_value(CloudError {
                error: Some(error.clone()),
            }),
            serde_json::to_value(OperationResource {
                id: Some("i".into()),
                name: Some("n".into()),
                status: Some("s".into()),
                start_time: Some("t".into()),
                end_time: Some("t".into()),
                error: Some(error),
                properties: Some(json!({})),
            }),
            serde_json::to_value(OperationJobExtendedInfo {
                object_type: Some("o".into()),
                job_id: Some("j".into()),
            }),
            serde_json::to_value(ValidateForBackupRequest {
                backup_instance: instance,
            }),
            serde_json::to_value(SyncBackupInstanceRequest {
                sync_type: Some("s".into()),
            }),
            serde_json::to_value(FindRestorableTimeRangesRequest {
                source_data_store_type: "s".into(),
                start_time: Some("t".into()),
                end_time: Some("t".into()),
            }),
            serde_json::to_value(FindRestorableTimeRangesResponseResource {
                properties: Some(FindRestorableTimeRangesResponse {
                    restorable_time_ranges: vec![RestorableTimeRange {
                        start_time: "t".into(),
                        end_time: "t".into(),
                        object_type: Some("o".into()),
                    }],
                    object_type: Some("o".into()),
                }),
            }),
            serde_json::to_value(JobResource {
                id: Some("i".into()),
                name: Some("n".into()),
                properties: Some(Job {
                    status: Some("s".into()),
                    operation: Some("o".into()),
                    start_time: Some("t".into()),
                    end_time: Some("t".into()),
                    error_details: vec![user_error.clone()],
                }),
            }),
        ];
        for document in documents {
            let document = document.unwrap();
            assert_eq!(
                PROPERTY_NAMES.unknown_keys(&document),
                Vec::<String>::new(),
                "{document}"
            );
        }
        // A restore's target spells datasourceInfo with a small s, where a backup instance
        // has dataSourceInfo: the one name known in another casing (read back in either).
        let account: StorageAccountId =
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/a"
                .parse()
                .unwrap();
        let target = BlobRestoreTarget {
            source: account.clone(),
            target: account,
            location: "l".into(),
            containers: vec!["c".into()],
            prefixes: vec!["c/p".into()],
        };
        for point in [
            RestoreSource::PointInTime(jiff::Timestamp::UNIX_EPOCH),
            RestoreSource::RecoveryPoint("r".into()),
        ] {
            let request = RestoreRequest::for_blobs(&point, &target);
            let document = serde_json::to_value(ValidateRestoreRequest {
                restore_request_object: request.clone(),
            })
            .unwrap();
            assert_eq!(
                PROPERTY_NAMES.unknown_keys(&document),
                ["datasourceInfo", "datasourceSetInfo"],
                "{document}"
            );
            assert_eq!(
                read_json::<ValidateRestoreRequest>(document.to_string().as_bytes())
                    .unwrap()
                    .restore_request_object,
                request
            );
        }
    }
}
