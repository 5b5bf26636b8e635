//! What the emulator reads and writes beyond the client's models (`dataprotection::models`,
//! which it uses for every body of the same shape): how a request's backup instance is read as
//! the service reads it, and the error bodies as Azure writes them. Requests bind
//! case-insensitively (Azure's Json.NET does; the article itself sends `datasourceinfo`)
//! through `dataprotection::json_casing`.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use dataprotection::SPEC_PROPERTY_NAMES;
use dataprotection::json_casing::PropertyNames;
use dataprotection::models::{BackupDatasourceParameters, BackupInstance};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The property names of requests that the client's models keep as JSON (data store
/// parameters, auto-protection rules, identity details), in spec casing: read in any casing
/// and echoed in the spec's.
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

/// The required properties of a backup instance, as JSON pointers into its (canonical)
/// `properties` and as the service names them when one is missing.
const REQUIRED_INSTANCE_PROPERTIES: [(&str, &str); 3] = [
    ("/dataSourceInfo", "dataSourceInfo"),
    ("/dataSourceInfo/resourceID", "dataSourceInfo.resourceID"),
    ("/policyInfo/policyId", "policyInfo.policyId"),
];

/// Why the backup instance of a request cannot be read.
#[derive(Debug, PartialEq)]
pub(crate) enum InstanceProblem {
    /// A required property is missing (the service's user error names it).
    Missing(&'static str),
    /// The body does not bind to the model (ARM's `InvalidRequestContent`).
    Invalid(String),
}

/// Reads the `properties` of a backup instance in a request (already in spec casing, as
/// `parse_body` gives it) into the client's model: a missing required property is named first,
/// as the service does, then what a client may echo back but cannot set is dropped (ARM
/// ignores read-only properties).
pub(crate) fn read_backup_instance(properties: Value) -> Result<BackupInstance, InstanceProblem> {
    for (pointer, name) in REQUIRED_INSTANCE_PROPERTIES {
        if properties.pointer(pointer).is_none_or(Value::is_null) {
            return Err(InstanceProblem::Missing(name));
        }
    }
    let mut instance: BackupInstance = PROPERTY_NAMES
        .from_value(properties)
        .map_err(|e| InstanceProblem::Invalid(e.to_string()))?;
    instance.protection_status = None;
    instance.current_protection_state = None;
    instance.protection_error_details = None;
    instance.provisioning_state = None;
    instance.policy_info.policy_version = None;
    Ok(instance)
}

/// Whether a request asks for auto-protection rules (`BlobBackupDatasourceParameters
/// ForAutoProtection`, which the client keeps as JSON).
pub(crate) fn asks_auto_protection(parameters: &BackupDatasourceParameters) -> bool {
    matches!(parameters, BackupDatasourceParameters::Other(value)
        if value.get("autoProtectionSettings").is_some_and(|v| !v.is_null()))
}

/// One of the emulator's errors as the client's model reads it (where the client's model
/// holds one: a backup instance's protection status, an operation's status).
pub(crate) fn as_read<T: DeserializeOwned>(error: &impl Serialize) -> Option<T> {
    PROPERTY_NAMES
        .from_value(serde_json::to_value(error).ok()?)
        .ok()
}

// The error bodies below stay the emulator's own, beside the client's `ErrorBody`,
// `UserFacingError` and `InnerError`: Azure writes explicit nulls in them (`"details": null`,
// `"innerError": null`, `"target": null`, in the article's transcripts the emulator is held
// to), which the client's read model, where absent and null are both `None`, cannot write.

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
    use serde_json::json;

    #[test]
    fn request_keys_bind_in_any_casing_and_serialize_in_spec_casing() {
        let body = br#"{"PROPERTIES":{"datasourceinfo":{"resourceid":"/x","DATASOURCETYPE":"t"},
            "policyinfo":{"policyid":"/p","policyparameters":{"backupdatasourceparameterslist":
            [{"objecttype":"BlobBackupDatasourceParameters","containerslist":["c1"]},
             {"objectType":"BlobBackupDatasourceParametersForAutoProtection",
              "AUTOPROTECTIONSETTINGS":{"ENABLED":true,"rules":[{"MODE":"Exclude","Pattern":"x"}]}}],
             "datastoreparameterslist":[{"DATASTORETYPE":"OperationalStore","resourcegroupid":"/g"}]}},
            "identitydetails":{"usesystemassignedidentity":true},
            "objecttype":"BackupInstance","unknownField":1},"tags":{"MixedCase":"v"}}"#;
        let mut request: Value = parse_body(body).unwrap();
        assert_eq!(request["tags"]["MixedCase"], "v");
        let props = read_backup_instance(request["properties"].take()).unwrap();
        assert_eq!(props.data_source_info.resource_id, "/x");
        assert_eq!(props.vaulted_containers(), Some(&["c1".to_owned()][..]));
        let params = props.policy_info.policy_parameters.as_ref().unwrap();
        let params = params.backup_datasource_parameters_list.as_deref().unwrap();
        assert_eq!(
            params.iter().map(asks_auto_protection).collect::<Vec<_>>(),
            [false, true]
        );
        // What the client keeps as JSON is echoed in the spec's casing too; what neither knows
        // is dropped.
        let json = serde_json::to_value(&props).unwrap();
        assert_eq!(
            PROPERTY_NAMES.unknown_keys(&json),
            Vec::<String>::new(),
            "{json}"
        );
        assert_eq!(
            json["policyInfo"]["policyParameters"]["backupDatasourceParametersList"][1]["autoProtectionSettings"]
                ["rules"][0]["pattern"],
            "x"
        );
        assert_eq!(json["identityDetails"]["useSystemAssignedIdentity"], true);
    }

    #[test]
    fn a_missing_required_property_is_named_and_read_only_ones_are_dropped() {
        let full = json!({
            "dataSourceInfo": {"resourceID": "/x"},
            "policyInfo": {"policyId": "/p", "policyVersion": "3"},
            "protectionStatus": {"status": "ProtectionConfigured"},
            "currentProtectionState": "ProtectionConfigured",
            "provisioningState": "Succeeded"
        });
        let read = read_backup_instance(full.clone()).unwrap();
        assert_eq!(read.protection_status, None);
        assert_eq!(read.current_protection_state, None);
        assert_eq!(read.provisioning_state, None);
        assert_eq!(read.policy_info.policy_version, None);
        assert_eq!(read.object_type, "BackupInstance");
        for (pointer, missing) in [
            ("/dataSourceInfo", "dataSourceInfo"),
            ("/dataSourceInfo/resourceID", "dataSourceInfo.resourceID"),
            ("/policyInfo", "policyInfo.policyId"),
            ("/policyInfo/policyId", "policyInfo.policyId"),
        ] {
            let mut body = full.clone();
            *body.pointer_mut(pointer).unwrap() = Value::Null;
            assert_eq!(
                read_backup_instance(body),
                Err(InstanceProblem::Missing(missing)),
                "{pointer}"
            );
        }
        let mut body = full;
        body["policyInfo"]["policyParameters"] = json!("not an object");
        assert!(matches!(
            read_backup_instance(body),
            Err(InstanceProblem::Invalid(_))
        ));
    }

    #[test]
    fn the_errors_read_back_into_the_clients_model() {
        let failure = missing_permissions("Configure Protection", "p", "/a", "act");
        let read: dataprotection::models::ErrorBody = as_read(&failure).unwrap();
        let info = read.user_facing_error().unwrap();
        assert_eq!(
            info.code.as_deref(),
            Some("UserErrorMissingRequiredPermissions")
        );
        assert!(
            info.inner_error
                .unwrap()
                .detailed_message()
                .unwrap()
                .contains("Configure Protection failed")
        );
        assert_eq!(
            serde_json::to_value(&read).unwrap(),
            serde_json::to_value(&failure).unwrap(),
            "an operation's error reads back whole"
        );
        let error = UserFacingError::new("C", "m", "act").recommend("r");
        let read: dataprotection::models::UserFacingError = as_read(&error).unwrap();
        assert_eq!(read.recommended_action, Some(vec!["r".to_owned()]));
        let unknown = PROPERTY_NAMES.unknown_keys(&serde_json::to_value(&failure).unwrap());
        // `ActivityId` and `DetailedNonLocalisedMessage` are keys of maps of user data.
        assert_eq!(
            unknown,
            ["DetailedNonLocalisedMessage", "ActivityId"],
            "not in the property names"
        );
    }
}
