//! The emulator's own wire model: what it reads from requests and what it answers, in the
//! spec's property casing. Requests bind case-insensitively (Azure's Json.NET does; the
//! article itself sends `datasourceinfo`) through `dataprotection::json_casing`.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use dataprotection::SPEC_PROPERTY_NAMES;
use dataprotection::json_casing::PropertyNames;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The property names of this model that the client's models lack, in spec casing.
const OWN_PROPERTY_NAMES: &[&str] = &[
    "dataStoreType",
    "resourceGroupId",
    "autoProtectionSettings",
    "enabled",
    "rules",
    "mode",
    "pattern",
    "useSystemAssignedIdentity",
    "userAssignedIdentityArmUrl",
];

/// The model's names, for reading requests in any casing (`dataprotection::json_casing` says
/// why this way); `tags` keys are user data.
static PROPERTY_NAMES: LazyLock<PropertyNames> = LazyLock::new(|| {
    let names: Vec<&'static str> = SPEC_PROPERTY_NAMES
        .iter()
        .chain(OWN_PROPERTY_NAMES)
        .copied()
        .collect();
    PropertyNames::new(&names, &["tags"])
});

/// Parses a JSON request body with case-insensitive property names.
pub(crate) fn parse_body<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, String> {
    let text = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}".as_slice()
    } else {
        body
    };
    PROPERTY_NAMES.from_slice(text).map_err(|e| e.to_string())
}

/// `BackupInstanceResource`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BackupInstanceResource {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub resource_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tags: Option<BTreeMap<String, String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub properties: Option<BackupInstance>,
}

/// `BackupInstance` (the resource's `properties`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct BackupInstance {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub friendly_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_source_info: Option<Datasource>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_source_set_info: Option<Datasource>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy_info: Option<PolicyInfo>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protection_status: Option<ProtectionStatusDetails>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current_protection_state: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protection_error_details: Option<UserFacingError>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provisioning_state: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub validation_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identity_details: Option<IdentityDetails>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource_guard_operation_requests: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object_type: Option<String>,
}

impl BackupInstance {
    /// Drops what a client may echo back but cannot set (ARM ignores read-only properties).
    pub fn without_read_only(mut self) -> Self {
        self.protection_status = None;
        self.current_protection_state = None;
        self.protection_error_details = None;
        self.provisioning_state = None;
        if let Some(policy) = &mut self.policy_info {
            policy.policy_version = None;
        }
        self
    }
}

/// `Datasource` / `DatasourceSet`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Datasource {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub datasource_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object_type: Option<String>,
    #[serde(rename = "resourceID", skip_serializing_if = "Option::is_none")]
    pub resource_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource_location: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource_uri: Option<String>,
}

/// `PolicyInfo`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PolicyInfo {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy_version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy_parameters: Option<PolicyParameters>,
}

/// `PolicyParameters`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PolicyParameters {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_store_parameters_list: Option<Vec<DataStoreParameters>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backup_datasource_parameters_list: Option<Vec<BackupDatasourceParameters>>,
}

/// `AzureOperationalStoreParameters` (the only `DataStoreParameters` subtype).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct DataStoreParameters {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_store_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource_group_id: Option<String>,
}

/// The blob subtypes of `BackupDatasourceParameters` in one shape: a fixed container list
/// (`BlobBackupDatasourceParameters`, `AdlsBlobBackupDatasourceParameters`) or
/// auto-protection rules (`…ForAutoProtection`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct BackupDatasourceParameters {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub containers_list: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auto_protection_settings: Option<AutoProtectionSettings>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object_type: Option<String>,
}

/// `BlobBackupRuleBasedAutoProtectionSettings`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct AutoProtectionSettings {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rules: Option<Vec<AutoProtectionRule>>,
}

/// `BlobBackupAutoProtectionRule`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct AutoProtectionRule {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub rule_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,
}

/// `IdentityDetails`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct IdentityDetails {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub use_system_assigned_identity: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_assigned_identity_arm_url: Option<String>,
}

/// `ProtectionStatusDetails`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ProtectionStatusDetails {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_details: Option<UserFacingError>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
}

/// `ValidateForBackupRequest`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ValidateForBackupRequest {
    pub backup_instance: Option<BackupInstance>,
}

/// `UserFacingError`, field order as the article's transcripts show it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct UserFacingError {
    pub message: String,
    pub recommended_action: Vec<String>,
    /// `Some(Null)` prints `"details": null` (the already-protected transcript has it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<Value>,
    pub code: String,
    pub target: String,
    pub inner_error: Option<InnerError>,
    pub is_retryable: bool,
    pub is_user_error: bool,
    pub properties: BTreeMap<String, String>,
}

/// `InnerError`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct InnerError {
    pub code: String,
    pub additional_info: BTreeMap<String, String>,
}

/// `CloudError`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CloudError {
    pub error: ErrorBody,
}

/// `Error` of a `CloudError` (also the `error` of a failed operation).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorBody {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub additional_info: Option<Vec<AdditionalInfo>>,
    pub code: String,
    pub message: String,
    /// `Some(Null)` prints `"target": null`, as the synchronous error transcript has it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<Value>,
}

/// `ErrorAdditionalInfo` carrying a `UserFacingError`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AdditionalInfo {
    #[serde(rename = "type")]
    pub info_type: String,
    pub info: UserFacingError,
}

/// `OperationResource` (the Azure-AsyncOperation status document).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OperationResource {
    pub id: String,
    pub name: String,
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
    pub start_time: String,
    pub end_time: String,
    /// `OperationJobExtendedInfo` naming the job the operation created.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub properties: Option<Value>,
}

/// `OperationJobExtendedInfo` (2021-01-01 answers it without `objectType`).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OperationJobExtendedInfo {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object_type: Option<String>,
    pub job_id: String,
}

/// `BackupInstanceResourceList`.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BackupInstanceResourceList {
    pub value: Vec<BackupInstanceResource>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_link: Option<String>,
}

impl ErrorBody {
    /// An error raised by ARM itself (auth, routing, throttling): code and message only.
    pub fn arm(code: &str, message: impl Into<String>) -> Self {
        Self {
            additional_info: None,
            code: code.to_owned(),
            message: message.into(),
            target: None,
        }
    }

    /// An error raised by the Data Protection service: code and message repeated in a
    /// `UserFacingError`, as the article's transcripts show.
    pub fn service(info: UserFacingError, synchronous: bool) -> Self {
        Self {
            code: info.code.clone(),
            message: info.message.clone(),
            // The synchronous 400 prints `"target": null`; the failed operation has none.
            target: synchronous.then_some(Value::Null),
            additional_info: Some(vec![AdditionalInfo {
                info_type: "UserFacingError".to_owned(),
                info,
            }]),
        }
    }
}

impl UserFacingError {
    /// A user error with the service's usual flags (`isUserError` is false even for user
    /// errors in both of the article's transcripts).
    pub fn new(code: &str, message: impl Into<String>, activity_id: &str) -> Self {
        Self {
            message: message.into(),
            recommended_action: Vec::new(),
            details: None,
            code: code.to_owned(),
            target: String::new(),
            inner_error: None,
            is_retryable: false,
            is_user_error: false,
            properties: BTreeMap::from([("ActivityId".to_owned(), activity_id.to_owned())]),
        }
    }

    /// Adds a recommended action.
    pub fn recommend(mut self, action: impl Into<String>) -> Self {
        self.recommended_action.push(action.into());
        self
    }
}

/// The article's `UserErrorDppDatasourceAlreadyProtected` body.
pub(crate) fn already_protected(
    vault_id: &str,
    instance_name: &str,
    activity_id: &str,
) -> ErrorBody {
    let mut info = UserFacingError::new(
        "UserErrorDppDatasourceAlreadyProtected",
        format!("Datasource is already protected under the Backup vault {vault_id}."),
        activity_id,
    )
    .recommend(format!(
        "Delete the backup instance {instance_name} from the Backup vault {vault_id} to re-protect the datasource in any other vault."
    ));
    info.details = Some(Value::Null);
    ErrorBody::service(info, true)
}

/// The article's `UserErrorMissingRequiredPermissions` error of a failed operation.
pub(crate) fn missing_permissions(
    stage: &str,
    principal_id: &str,
    storage_account_id: &str,
    activity_id: &str,
) -> ErrorBody {
    let code = "UserErrorMissingRequiredPermissions";
    let mut info = UserFacingError::new(
        code,
        "Appropriate permissions to perform the operation is missing.",
        activity_id,
    )
    .recommend("Grant appropriate permissions to perform this operation as mentioned at https://aka.ms/UserErrorMissingRequiredPermissions and retry the operation.");
    info.inner_error = Some(InnerError {
        code: code.to_owned(),
        additional_info: BTreeMap::from([(
            "DetailedNonLocalisedMessage".to_owned(),
            format!(
                "{stage} failed. Exception Message: The client '{principal_id}' with object id '{principal_id}' does not have authorization to perform action 'Microsoft.Authorization/roleAssignments/read' over scope '{storage_account_id}/providers/Microsoft.Authorization' or the scope is invalid. If access was recently granted, please refresh your credentials."
            ),
        )]),
    });
    ErrorBody::service(info, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_keys_bind_in_any_casing_and_serialize_in_spec_casing() {
        let body = br#"{"PROPERTIES":{"datasourceinfo":{"resourceid":"/x","DATASOURCETYPE":"t"},
            "policyinfo":{"policyid":"/p","policyparameters":{"backupdatasourceparameterslist":
            [{"objecttype":"BlobBackupDatasourceParameters","containerslist":["c1"]}]}},
            "objecttype":"BackupInstance","unknownField":1},"tags":{"MixedCase":"v"}}"#;
        let parsed: BackupInstanceResource = parse_body(body).unwrap();
        let props = parsed.properties.clone().unwrap();
        assert_eq!(
            props.data_source_info.unwrap().resource_id.as_deref(),
            Some("/x")
        );
        let json = serde_json::to_value(&parsed).unwrap();
        assert!(json["properties"]["dataSourceInfo"]["resourceID"].is_string());
        assert_eq!(
            json["properties"]["policyInfo"]["policyParameters"]["backupDatasourceParametersList"]
                [0]["containersList"][0],
            "c1"
        );
        assert_eq!(json["tags"]["MixedCase"], "v");
    }

    #[test]
    fn every_serialized_key_is_known_so_it_binds_back() {
        let info = UserFacingError::new("C", "m", "a");
        let full = BackupInstanceResource {
            id: Some("i".into()),
            properties: Some(BackupInstance {
                friendly_name: Some("f".into()),
                data_source_info: Some(Datasource {
                    datasource_type: Some("t".into()),
                    object_type: Some("Datasource".into()),
                    resource_id: Some("r".into()),
                    resource_location: Some("l".into()),
                    resource_name: Some("n".into()),
                    resource_type: Some("t".into()),
                    resource_uri: Some("u".into()),
                }),
                policy_info: Some(PolicyInfo {
                    policy_id: Some("p".into()),
                    policy_version: Some("1".into()),
                    policy_parameters: Some(PolicyParameters {
                        data_store_parameters_list: Some(vec![DataStoreParameters {
                            object_type: Some("o".into()),
                            data_store_type: Some("d".into()),
                            resource_group_id: Some("g".into()),
                        }]),
                        backup_datasource_parameters_list: Some(vec![BackupDatasourceParameters {
                            containers_list: Some(vec!["c".into()]),
                            auto_protection_settings: Some(AutoProtectionSettings {
                                enabled: Some(true),
                                object_type: Some("o".into()),
                                rules: Some(vec![AutoProtectionRule {
                                    object_type: Some("o".into()),
                                    mode: Some("Exclude".into()),
                                    rule_type: Some("Prefix".into()),
                                    pattern: Some("x".into()),
                                }]),
                            }),
                            object_type: Some("o".into()),
                        }]),
                    }),
                }),
                protection_status: Some(ProtectionStatusDetails {
                    error_details: Some(info.clone()),
                    status: Some("s".into()),
                }),
                protection_error_details: Some(info),
                identity_details: Some(IdentityDetails {
                    use_system_assigned_identity: Some(true),
                    user_assigned_identity_arm_url: Some("u".into()),
                }),
                ..BackupInstance::default()
            }),
            ..BackupInstanceResource::default()
        };
        let unknown = PROPERTY_NAMES.unknown_keys(&serde_json::to_value(&full).unwrap());
        // `ActivityId` is a key of UserFacingError.properties, a map of user data.
        assert_eq!(
            unknown,
            ["ActivityId", "ActivityId"],
            "not in the property names"
        );
    }
}
