//! Request and response bodies of the `Microsoft.DataProtection` calls the operator makes.
//!
//! Requests are written in the spec's exact property casing. Responses are read leniently:
//! unknown properties are ignored, status strings stay `String` (Azure's enums are open sets),
//! and the casings Azure is known to vary in (the article itself sends `datasourceinfo`) are
//! accepted through serde aliases.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::ids::{PolicyId, StorageAccountId};

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
    #[serde(default, skip_serializing_if = "Option::is_none", alias = "nextlink")]
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
    #[serde(default, skip_serializing_if = "Option::is_none", alias = "nextlink")]
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
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        alias = "friendlyname"
    )]
    pub friendly_name: Option<String>,
    /// The data source: for blobs, the storage account's blob service.
    #[serde(
        alias = "datasourceinfo",
        alias = "datasourceInfo",
        alias = "DataSourceInfo"
    )]
    pub data_source_info: Datasource,
    /// The data source set: for blobs, the storage account again.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        alias = "datasourcesetinfo",
        alias = "datasourceSetInfo",
        alias = "DataSourceSetInfo"
    )]
    pub data_source_set_info: Option<DatasourceSet>,
    /// The backup policy and its parameters.
    #[serde(alias = "policyinfo", alias = "PolicyInfo")]
    pub policy_info: PolicyInfo,
    /// Read-only: Azure's protection status (open set: `ProtectionConfigured`, `ProtectionError`, ...).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        alias = "protectionstatus"
    )]
    pub protection_status: Option<ProtectionStatusDetails>,
    /// Read-only: the current protection state (open set).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        alias = "currentprotectionstate"
    )]
    pub current_protection_state: Option<String>,
    /// Read-only: the protection error, if any.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        alias = "protectionerrordetails"
    )]
    pub protection_error_details: Option<UserFacingError>,
    /// Read-only: provisioning state (free text: `Provisioning`, `Succeeded`, ...).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        alias = "provisioningstate"
    )]
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
    #[serde(default = "backup_instance_object_type", alias = "objecttype")]
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
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        alias = "datasourcetype",
        alias = "dataSourceType"
    )]
    pub datasource_type: Option<String>,
    /// `Datasource` or `DatasourceSet`.
    #[serde(default, skip_serializing_if = "Option::is_none", alias = "objecttype")]
    pub object_type: Option<String>,
    /// The ARM ID of the resource.
    #[serde(
        rename = "resourceID",
        alias = "resourceId",
        alias = "resourceid",
        alias = "ResourceID"
    )]
    pub resource_id: String,
    /// The resource's region.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        alias = "resourcelocation"
    )]
    pub resource_location: Option<String>,
    /// The resource's name.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        alias = "resourcename"
    )]
    pub resource_name: Option<String>,
    /// The resource's type, e.g. `Microsoft.Storage/storageAccounts`.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        alias = "resourcetype"
    )]
    pub resource_type: Option<String>,
    /// The resource's URI.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        alias = "resourceuri",
        alias = "resourceURI"
    )]
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
    #[serde(alias = "policyid", alias = "PolicyId")]
    pub policy_id: String,
    /// Read-only: the policy version in use.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        alias = "policyversion"
    )]
    pub policy_version: Option<String>,
    /// Parameters for the policy (vaulted blob backup: the containers).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        alias = "policyparameters"
    )]
    pub policy_parameters: Option<PolicyParameters>,
}

/// Parameters of a policy for one backup instance (`PolicyParameters`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyParameters {
    /// Data store parameters (disk backup; kept as sent).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        alias = "datastoreparameterslist"
    )]
    pub data_store_parameters_list: Option<Vec<Value>>,
    /// Data source parameters (vaulted blob backup: the containers).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        alias = "backupdatasourceparameterslist"
    )]
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
        #[serde(alias = "containerslist")]
        containers_list: Vec<String>,
    },
    /// Vaulted backup of the listed containers of an ADLS Gen2 account.
    #[serde(rename_all = "camelCase")]
    AdlsBlobBackupDatasourceParameters {
        /// The containers to back up.
        #[serde(alias = "containerslist")]
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
    #[serde(default, skip_serializing_if = "Option::is_none", alias = "Status")]
    pub status: Option<String>,
    /// The error behind a failed status.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        alias = "errordetails"
    )]
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
        alias = "recommendedactions",
        alias = "recommendedActions",
        alias = "recommendedaction"
    )]
    pub recommended_action: Option<Vec<String>>,
    /// Target of the error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Related errors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<Vec<UserFacingError>>,
    /// The inner error, with `DetailedNonLocalisedMessage`.
    #[serde(default, skip_serializing_if = "Option::is_none", alias = "innererror")]
    pub inner_error: Option<InnerError>,
    /// Whether retrying may help.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        alias = "isretryable"
    )]
    pub is_retryable: Option<bool>,
    /// Whether the user caused it (Azure sets it `false` even for user errors).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        alias = "isusererror"
    )]
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
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        alias = "additionalinfo"
    )]
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
    #[serde(default, skip_serializing_if = "Option::is_none", alias = "Error")]
    pub error: Option<ErrorBody>,
}

/// The `error` of a CloudError or of a failed operation (`Error`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorBody {
    /// The error code.
    #[serde(default, skip_serializing_if = "Option::is_none", alias = "Code")]
    pub code: Option<String>,
    /// The message.
    #[serde(default, skip_serializing_if = "Option::is_none", alias = "Message")]
    pub message: Option<String>,
    /// Target of the error.
    #[serde(default, skip_serializing_if = "Option::is_none", alias = "Target")]
    pub target: Option<String>,
    /// Nested errors.
    #[serde(default, skip_serializing_if = "Option::is_none", alias = "Details")]
    pub details: Option<Vec<ErrorBody>>,
    /// Typed extra information; `UserFacingError` entries carry the recommended actions.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        alias = "AdditionalInfo",
        alias = "additionalinfo"
    )]
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
            serde_json::from_value(value.clone()).ok()
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
    #[serde(
        rename = "type",
        default,
        skip_serializing_if = "Option::is_none",
        alias = "Type"
    )]
    pub info_type: Option<String>,
    /// The information.
    #[serde(default, skip_serializing_if = "Option::is_none", alias = "Info")]
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
    #[serde(default, skip_serializing_if = "Option::is_none", alias = "Status")]
    pub status: Option<String>,
    /// Start time, verbatim (Azure's values are not always RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none", alias = "starttime")]
    pub start_time: Option<String>,
    /// End time, verbatim (`0001-01-01T00:00:00` while running).
    #[serde(default, skip_serializing_if = "Option::is_none", alias = "endtime")]
    pub end_time: Option<String>,
    /// The error of a failed or canceled operation.
    #[serde(default, skip_serializing_if = "Option::is_none", alias = "Error")]
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
    #[serde(default, skip_serializing_if = "Option::is_none", alias = "jobid")]
    pub job_id: Option<String>,
}

/// The body of validateForBackup (`ValidateForBackupRequest`). The spec and the 2026-06-01
/// example have no `objectType` here (some documentation adds one); none is sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ValidateForBackupRequest {
    /// The instance to validate.
    #[serde(alias = "backupinstance")]
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
