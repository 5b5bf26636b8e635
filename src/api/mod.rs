//! The custom resources of the operator: what they share (the API group, conditions, Azure
//! operations and errors, the schema patterns of ARM ids and names, spec errors) here, and one
//! module per kind.
//!
//! Doc comments on the types become the CRDs' descriptions (`kubectl explain`), so they are
//! written for the people who apply these resources.

mod backup_vault_grant;
mod blob_backup_instance;
mod blob_restore;

pub use backup_vault_grant::*;
pub use blob_backup_instance::*;
pub use blob_restore::*;

use std::sync::LazyLock;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::core::{Message, Rule};
use kube::{CustomResource, CustomResourceExt, KubeSchema};
use regex::Regex;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

use dataprotection::ids::{BackupInstanceId, PolicyId, StorageAccountId, VaultId};

/// The API group of the custom resource.
pub const GROUP: &str = "dataprotection.blobbackup.io";
/// The finalizer the controller puts on a resource before its first Azure write.
pub const FINALIZER: &str = "dataprotection.blobbackup.io/finalizer";

/// The ARM tags that say which resource owns a backup instance (DESIGN.md section 9), written
/// in the body of every PUT of a backup instance on api-versions that have tags.
pub mod owner_tag {
    /// The cluster: the uid of its `kube-system` namespace, or `run --cluster-id`.
    pub const CLUSTER: &str = "blobbackup.io/cluster";
    /// The BlobBackupInstance's namespace.
    pub const NAMESPACE: &str = "blobbackup.io/namespace";
    /// The BlobBackupInstance's name.
    pub const NAME: &str = "blobbackup.io/name";
    /// The BlobBackupInstance's uid.
    pub const UID: &str = "blobbackup.io/uid";
    /// Every owner tag.
    pub const ALL: [&str; 4] = [CLUSTER, NAMESPACE, NAME, UID];
}

/// Condition types written to `status.conditions`.
pub mod condition_type {
    /// True when Azure reports `ProtectionConfigured` for the current spec.
    pub const READY: &str = "Ready";
    /// The last `validateForBackup` result.
    pub const VALIDATED: &str = "Validated";
    /// True while work is in flight (kstatus, abnormal-true).
    pub const RECONCILING: &str = "Reconciling";
    /// True only when a person must act (kstatus, abnormal-true).
    pub const STALLED: &str = "Stalled";
}

// Limits the schema enforces; `validate` enforces the same ones.
const MAX_ID_LEN: usize = 400;
const MAX_NAME_LEN: usize = 100;
const MAX_LOCATION_LEN: usize = 64;
const MAX_CONTAINERS: usize = 100;
const CONTAINER_MIN_LEN: usize = 3;
const CONTAINER_MAX_LEN: usize = 63;

// Longest status strings the schema accepts; the controller truncates what it records to them
// ([`BlobBackupInstanceStatus::fit_to_schema`]), so a long answer from Azure can never make
// every status write fail.
const MAX_STATUS_NAME_LEN: usize = 2 * MAX_NAME_LEN;
const MAX_STATUS_ID_LEN: usize = 2 * MAX_ID_LEN;
/// Longest Azure state (`protectionStatus`, `protectionState`, `provisioningState`) and error
/// code recorded in status.
const MAX_STATUS_STATE_LEN: usize = 256;
/// Longest poll URL recorded in status (ARM's are a few hundred characters).
const MAX_POLL_URL_LEN: usize = 2048;
/// Longest message recorded in status (conditions, Azure's error message).
pub const MAX_STATUS_MESSAGE_LEN: usize = 4096;
/// Longest recommended action, and how many of them, recorded in status.
const MAX_RECOMMENDED_ACTION_LEN: usize = 1024;
const MAX_RECOMMENDED_ACTIONS: usize = 16;
// metav1.Condition's own limits for type and reason.
const MAX_CONDITION_TYPE_LEN: usize = 316;
const MAX_CONDITION_REASON_LEN: usize = 1024;
/// Longest RFC 3339 time (with nanoseconds and an offset it is 35 characters).
const MAX_TIME_LEN: usize = 64;

/// Spells every ASCII letter of `literal` as `[Xx]` and escapes the rest, so a pattern matches
/// ARM's case-insensitive segments. Character classes mean the same in ECMA 262, in RE2 (which
/// the apiserver uses) and in Rust's `regex`, unlike a `(?i)` flag.
fn case_insensitive(literal: &str) -> String {
    literal
        .chars()
        .map(|c| {
            if c.is_ascii_alphabetic() {
                format!("[{}{}]", c.to_ascii_uppercase(), c.to_ascii_lowercase())
            } else {
                regex::escape(&c.to_string())
            }
        })
        .collect()
}

const SUBSCRIPTION: &str =
    "[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}";
// Azure's rule for resource group names: 1 to 90 of these characters, not ending with a
// period (which also keeps `.` and `..`, path segments a URL resolver would act on, out of IDs).
const RESOURCE_GROUP: &str = r"[-A-Za-z0-9_.()]{0,89}[-A-Za-z0-9_()]";
// Azure's own pattern for vault names (2 to 50 characters).
const VAULT_NAME: &str = "[A-Za-z][-A-Za-z0-9]{0,48}[A-Za-z0-9]";
// Policy and instance names have no published pattern: letters, digits, '-', '_' and '.' keep
// them safe as URL path segments.
const RESOURCE_NAME: &str = "[A-Za-z0-9][-A-Za-z0-9_.]*";
const ACCOUNT_NAME: &str = "[a-z0-9]{3,24}";

fn vault_id_body() -> String {
    format!(
        "/{}/{SUBSCRIPTION}/{}/{RESOURCE_GROUP}/{}/{}/{}/{VAULT_NAME}",
        case_insensitive("subscriptions"),
        case_insensitive("resourceGroups"),
        case_insensitive("providers"),
        case_insensitive("Microsoft.DataProtection"),
        case_insensitive("backupVaults"),
    )
}

/// The schema pattern of `spec.vault.id`.
pub fn vault_id_pattern() -> String {
    format!("^{}$", vault_id_body())
}

/// The schema pattern of `spec.policy.id`.
pub fn policy_id_pattern() -> String {
    format!(
        "^{}/{}/{RESOURCE_NAME}$",
        vault_id_body(),
        case_insensitive("backupPolicies")
    )
}

/// The schema pattern of `spec.storageAccount.id`.
pub fn storage_account_id_pattern() -> String {
    format!(
        "^/{}/{SUBSCRIPTION}/{}/{RESOURCE_GROUP}/{}/{}/{}/{ACCOUNT_NAME}$",
        case_insensitive("subscriptions"),
        case_insensitive("resourceGroups"),
        case_insensitive("providers"),
        case_insensitive("Microsoft.Storage"),
        case_insensitive("storageAccounts"),
    )
}

/// The short schema `pattern` of an ARM ID with `segments` path segments: the apiserver
/// quotes a failed pattern in its error, so the full check is a CEL rule with a readable
/// message ([`arm_id_rule`]) and the pattern only keeps the shape on servers without CEL.
fn arm_id_shape_pattern(segments: usize) -> String {
    format!("^(/[^/]+){{{segments}}}$")
}

/// A CEL rule checking an ARM ID against `pattern`, whose message names the expected shape
/// (the same text the controller's `InvalidSpec` message gives).
fn arm_id_rule(field: &str, pattern: &str, shape: &str) -> Rule {
    // A raw CEL string: the pattern's backslashes stay as they are.
    Rule::new(format!("self.matches(r'{pattern}')"))
        .message(Message::Message(must_look_like(field, shape)))
}

/// What the schema and the controller say about a malformed value.
fn must_look_like(field: &str, shape: &str) -> String {
    format!("{field} must look like {shape}")
}

/// The schema pattern of policy and backup instance names.
pub fn resource_name_pattern() -> String {
    format!("^{RESOURCE_NAME}$")
}

/// The schema pattern of `spec.storageAccount.location`.
pub fn location_pattern() -> String {
    "^[a-z][a-z0-9]*$".to_owned()
}

/// The schema pattern of a blob container name (Azure's rules: lowercase letters, digits and
/// single hyphens, starting and ending with a letter or digit).
pub fn container_name_pattern() -> String {
    "^[a-z0-9](-?[a-z0-9])*$".to_owned()
}

/// An Azure long-running operation started by the controller.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AzureOperation {
    /// What the operation does: Validate, Create, Update, Delete, StopProtection or Sync (a
    /// BlobBackupInstance); ValidateRestore or Restore (a BlobRestore).
    pub action: OperationAction,

    /// Pending (recorded before the request is sent: Azure may not have it), InProgress,
    /// Succeeded, Failed or Canceled.
    pub status: OperationPhase,

    /// The URL Azure gave to track the operation (Azure-AsyncOperation, else Location). A
    /// restarted controller resumes polling it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_POLL_URL_LEN))]
    pub poll_url: Option<String>,

    /// When the controller started the operation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "time_schema")]
    pub start_time: Option<Time>,

    /// When the controller saw it finish.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "time_schema")]
    pub end_time: Option<Time>,

    /// Azure's error, when the operation failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<OperationError>,
}

// The kind of an Azure operation is the client's (one type for the client, the emulator and
// this CRD); also the `action` label of `bbo_operations_in_flight`.
pub use dataprotection::OperationAction;

/// Where an Azure operation stands.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum OperationPhase {
    // Recorded before the request is sent; whether Azure got it is unknown until it answers.
    // A restarted controller looks at the instance before acting again.
    Pending,
    InProgress,
    Succeeded,
    Failed,
    Canceled,
}

/// An error reported by Azure.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OperationError {
    /// Azure's error code, e.g. `UserErrorMissingRequiredPermissions`.
    #[schemars(length(max = MAX_STATUS_STATE_LEN))]
    pub code: String,
    /// Azure's message.
    #[schemars(length(max = MAX_STATUS_MESSAGE_LEN))]
    pub message: String,
    /// Azure's recommended actions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_RECOMMENDED_ACTIONS), inner(length(max = MAX_RECOMMENDED_ACTION_LEN)))]
    pub recommended_actions: Vec<String>,
}

/// A condition in the shape of Kubernetes' `metav1.Condition`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// Ready, Validated, Reconciling or Stalled.
    #[serde(rename = "type")]
    #[schemars(length(max = MAX_CONDITION_TYPE_LEN))]
    pub type_: String,
    /// True, False or Unknown.
    pub status: ConditionStatus,
    /// A CamelCase reason; the operator's README lists them with what to do.
    #[schemars(length(max = MAX_CONDITION_REASON_LEN))]
    pub reason: String,
    /// Details for people, with Azure's own message and recommended action where there is one.
    #[schemars(length(max = MAX_STATUS_MESSAGE_LEN))]
    pub message: String,
    /// The `metadata.generation` the condition was set for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// When the condition's status last changed.
    #[schemars(schema_with = "time_schema")]
    pub last_transition_time: Time,
}

/// The status of a condition.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ConditionStatus {
    True,
    False,
    Unknown,
}

/// Optional spec fields are left out, never null: without `nullable`, the apiserver drops a
/// null before validation, so CEL's `has()` sees an absent field instead of a null value.
fn optional_not_nullable(schema: &mut Schema) {
    let Some(properties) = schema
        .get_mut("properties")
        .and_then(serde_json::Value::as_object_mut)
    else {
        return;
    };
    for property in properties.values_mut() {
        let Some(property) = property.as_object_mut() else {
            continue;
        };
        if let Some(serde_json::Value::Array(types)) = property.get_mut("type") {
            types.retain(|t| t != "null");
            if let [only] = types.as_slice() {
                let only = only.clone();
                property.insert("type".into(), only);
            }
        }
        let any_of = property.remove("anyOf");
        if let Some(serde_json::Value::Array(variants)) = any_of {
            let mut rest: Vec<_> = variants
                .into_iter()
                .filter(|v| v.get("type").and_then(serde_json::Value::as_str) != Some("null"))
                .collect();
            match rest.pop() {
                Some(serde_json::Value::Object(inner)) if rest.is_empty() => property.extend(inner),
                Some(other) => {
                    rest.push(other);
                    property.insert("anyOf".into(), rest.into());
                }
                None => {}
            }
        }
        property.remove("nullable");
    }
}

fn time_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({"type": "string", "format": "date-time", "maxLength": MAX_TIME_LEN})
}
/// `text`, cut to at most `max` bytes (so at most `max` characters) on a character boundary,
/// ending in "..." when cut.
pub fn truncate(text: &str, max: usize) -> String {
    let mut text = text.to_owned();
    truncate_in_place(&mut text, max);
    text
}

fn truncate_in_place(text: &mut String, max: usize) {
    if text.len() <= max {
        return;
    }
    let mut end = max.saturating_sub(3);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text.push_str("...");
}

/// Truncates a recorded operation's strings to the schema's limits.
fn fit_operation(operation: Option<&mut AzureOperation>) {
    let Some(op) = operation else {
        return;
    };
    // A cut URL cannot be polled: the poll fails and the controller falls back to reading
    // Azure. ARM's URLs are far shorter than the limit.
    if let Some(url) = op.poll_url.as_mut() {
        truncate_in_place(url, MAX_POLL_URL_LEN);
    }
    if let Some(error) = op.error.as_mut() {
        truncate_in_place(&mut error.code, MAX_STATUS_STATE_LEN);
        truncate_in_place(&mut error.message, MAX_STATUS_MESSAGE_LEN);
        error.recommended_actions.truncate(MAX_RECOMMENDED_ACTIONS);
        for action in &mut error.recommended_actions {
            truncate_in_place(action, MAX_RECOMMENDED_ACTION_LEN);
        }
    }
}

/// Truncates conditions' strings to the schema's limits.
fn fit_conditions(conditions: &mut [Condition]) {
    for condition in conditions {
        truncate_in_place(&mut condition.type_, MAX_CONDITION_TYPE_LEN);
        truncate_in_place(&mut condition.reason, MAX_CONDITION_REASON_LEN);
        truncate_in_place(&mut condition.message, MAX_STATUS_MESSAGE_LEN);
    }
}

/// The BlobBackupInstance CRD as YAML, as `blob-backup-operator crd` prints it and
/// `crds/blobbackupinstances.yaml` holds it.
pub fn crd_yaml() -> Result<String, serde_saphyr::SerializeError> {
    crd_yaml_of::<BlobBackupInstance>()
}

/// A kind's CRD as YAML (`blob-backup-operator crd <plural>`, `crds/<plural>.yaml`).
pub fn crd_yaml_of<K: CustomResourceExt>() -> Result<String, serde_saphyr::SerializeError> {
    serde_saphyr::to_string(&K::crd())
}

/// Every CRD of the operator as `(plural, YAML)`: `crds/<plural>.yaml` holds each, and
/// `blob-backup-operator crd [PLURAL]` prints them.
pub fn crd_yamls() -> Result<Vec<(&'static str, String)>, serde_saphyr::SerializeError> {
    Ok(vec![
        ("blobbackupinstances", crd_yaml()?),
        ("backupvaultgrants", crd_yaml_of::<BackupVaultGrant>()?),
        ("blobrestores", crd_yaml_of::<BlobRestore>()?),
    ])
}

/// A spec field the controller cannot act on, and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}; {fix}")]
pub struct SpecError {
    /// The field's path, e.g. `spec.policy.id`.
    pub field: &'static str,
    /// What is wrong.
    pub problem: String,
    /// What to do about it.
    pub fix: String,
}

impl SpecError {
    fn new(field: &'static str, problem: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            field,
            problem: problem.into(),
            fix: fix.into(),
        }
    }
}

static VAULT_ID: LazyLock<Regex> = LazyLock::new(|| compile(&vault_id_pattern()));
static POLICY_ID: LazyLock<Regex> = LazyLock::new(|| compile(&policy_id_pattern()));
static ACCOUNT_ID: LazyLock<Regex> = LazyLock::new(|| compile(&storage_account_id_pattern()));
static RESOURCE_NAME_RE: LazyLock<Regex> = LazyLock::new(|| compile(&resource_name_pattern()));
static LOCATION: LazyLock<Regex> = LazyLock::new(|| compile(&location_pattern()));
static CONTAINER: LazyLock<Regex> = LazyLock::new(|| compile(&container_name_pattern()));

fn compile(pattern: &str) -> Regex {
    // The patterns are constants of this module; a test compiles each of them.
    Regex::new(pattern).expect("the CRD's patterns are valid regular expressions")
}

/// Checks `value` against a schema pattern and length limit, as the apiserver would.
fn check(
    field: &'static str,
    value: &str,
    max_len: usize,
    re: &Regex,
    expected: &str,
) -> Result<(), SpecError> {
    if value.len() > max_len {
        return Err(SpecError::new(
            field,
            format!("it is {} characters long, more than {max_len}", value.len()),
            must_look_like(field, expected),
        ));
    }
    if !re.is_match(value) {
        return Err(SpecError::new(
            field,
            format!("{value:?} is malformed"),
            must_look_like(field, expected),
        ));
    }
    Ok(())
}

const VAULT_SHAPE: &str = "/subscriptions/<uuid>/resourceGroups/<group>/providers/Microsoft.DataProtection/backupVaults/<vault>";
const POLICY_SHAPE: &str = "<spec.vault.id>/backupPolicies/<policy>";
const ACCOUNT_SHAPE: &str = "/subscriptions/<uuid>/resourceGroups/<group>/providers/Microsoft.Storage/storageAccounts/<account>";
const NAME_SHAPE: &str =
    "a name of letters, digits, '-', '_' and '.', starting with a letter or digit";
const CONTAINER_SHAPE: &str =
    "a container name has 3 to 63 lowercase letters, digits and single hyphens";
