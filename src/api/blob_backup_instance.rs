//! The `BlobBackupInstance` custom resource: spec, status, and the controller's own checks of
//! the spec.

use super::*;

/// The desired protection of one storage account's blobs.
// Each printcolumn(...) has its own `type_`: not the duplicate clippy takes it for.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "dataprotection.blobbackup.io",
    version = "v1alpha1",
    kind = "BlobBackupInstance",
    plural = "blobbackupinstances",
    shortname = "bbi",
    category = "azure",
    category = "backup",
    namespaced,
    status = "BlobBackupInstanceStatus",
    derive = "PartialEq",
    doc = "Protects the blobs of an Azure storage account in an Azure Backup vault with a backup policy (Microsoft.DataProtection backup instance).",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status",
        description = "Whether Azure reports the account protected as specified"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason",
        description = "Why the resource is or is not Ready"
    ),
    printcolumn(
        name = "Vault",
        type_ = "string",
        json_path = ".status.vaultName",
        description = "The Backup vault's name"
    ),
    printcolumn(
        name = "Account",
        type_ = "string",
        json_path = ".status.storageAccountName",
        description = "The protected storage account's name"
    ),
    printcolumn(
        name = "Policy",
        type_ = "string",
        json_path = ".status.policyName",
        description = "The backup policy's name"
    ),
    printcolumn(
        name = "Deletion",
        type_ = "string",
        json_path = ".spec.deletionPolicy",
        description = "What deleting the resource does in Azure"
    ),
    printcolumn(
        name = "Operation",
        type_ = "string",
        json_path = ".status.currentOperation",
        description = "The Azure operation in flight, or the last one when it failed and the resource is not Ready"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    printcolumn(
        name = "Protection",
        type_ = "string",
        json_path = ".status.protectionStatus",
        priority = 1,
        description = "Azure's protection status of the backup instance"
    ),
    printcolumn(
        name = "LastBackup",
        type_ = "date",
        json_path = ".status.lastRecoveryPointTime",
        priority = 1,
        description = "When the latest recovery point was taken (vaulted backup)"
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
    validation = Rule::new("!has(self.policy.id) || self.policy.id.lowerAscii().startsWith(self.vault.id.lowerAscii() + '/backuppolicies/')")
        .message("spec.policy.id must be a backup policy of spec.vault.id (<vault id>/backupPolicies/<name>); or name the vault's policy with spec.policy.name"),
    validation = Rule::new("!has(self.deletionPolicy) || self.deletionPolicy != 'Retain' || has(self.vaultedBackup)")
        .message("deletionPolicy Retain keeps recovery points, which only vaulted backup has: add spec.vaultedBackup, or use Delete (stop protection and delete the backup data) or Orphan (leave the backup instance in Azure untouched)"),
    // Removal only: the field's own rule below forbids a change. Rules here see the spec alone,
    // so a status write (which keeps the stored spec) never fails them.
    validation = Rule::new("!has(oldSelf.backupInstanceName) || has(self.backupInstanceName)")
        .message("spec.backupInstanceName is immutable once set")
        .reason(Reason::FieldValueForbidden),
)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = optional_not_nullable)]
pub struct BlobBackupInstanceSpec {
    /// The Backup vault that holds the backup instance. Immutable.
    pub vault: VaultRef,

    /// The backup policy to protect the account with: a policy of the vault, by `name` or by
    /// full ARM `id` (exactly one of them). Changing it updates the backup instance in place.
    pub policy: PolicyRef,

    /// The storage account whose blobs are protected.
    pub storage_account: StorageAccountRef,

    /// The name of the backup instance in the vault. Optional: defaults to
    /// `<storage account name>-<metadata.uid>`, e.g. `msblobbackup-5c1e0a3e-...`. Letters,
    /// digits, '-', '_' and '.', at most 100 characters. Cannot be changed once set, nor once the
    /// backup instance exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = MAX_NAME_LEN), regex(pattern = resource_name_pattern()))]
    // A transition rule on the field, not on the whole object: a rule that reads the status
    // would also judge every status write, and fail them all once it fails once. Setting the
    // name later, unlike the one the controller recorded in status, is the controller's to
    // refuse (InvalidSpec); it keeps using the recorded name.
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec.backupInstanceName is immutable once set").reason(Reason::FieldValueForbidden))]
    pub backup_instance_name: Option<String>,

    /// Vaulted backup: scheduled copies of the listed containers into the vault (the policy
    /// must have vault-tier rules). Omit it for operational backup, which protects all
    /// containers in place.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vaulted_backup: Option<VaultedBackup>,

    /// What deleting this resource does in Azure. `Delete` (default): stop protection and
    /// delete the backup instance and its backup data. `Retain`: stop protection and keep the
    /// recovery points in the vault (only with `vaultedBackup`). `Orphan`: leave the backup
    /// instance in Azure untouched. It applies however the resource is deleted: `kubectl
    /// delete`, deleting its namespace or the CRD, an Argo CD or Flux prune. Set `Orphan` or
    /// `Retain` to keep the backups.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
}

/// A reference to a Backup vault.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct VaultRef {
    /// The vault's full ARM ID, e.g.
    /// `/subscriptions/<subscription>/resourceGroups/TestBkpVaultRG/providers/Microsoft.DataProtection/backupVaults/testBkpVault`.
    /// Immutable.
    #[schemars(length(max = MAX_ID_LEN), regex(pattern = arm_id_shape_pattern(8)))]
    #[x_kube(validation = arm_id_rule("spec.vault.id", &vault_id_pattern(), VAULT_SHAPE))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec.vault.id is immutable: create a new resource to protect the account in another vault").reason(Reason::FieldValueForbidden))]
    pub id: String,
}

/// A backup policy of the vault: set exactly one of `name` and `id`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("has(self.name) != has(self.id)").message("set exactly one of spec.policy.name and spec.policy.id"))]
#[schemars(transform = optional_not_nullable)]
pub struct PolicyRef {
    /// The policy's name in the vault, e.g. `BlobBackup-Policy`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = MAX_NAME_LEN), regex(pattern = resource_name_pattern()))]
    pub name: Option<String>,

    /// The policy's full ARM ID, which must be in `spec.vault.id`, e.g.
    /// `<vault id>/backupPolicies/BlobBackup-Policy`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_ID_LEN), regex(pattern = arm_id_shape_pattern(10)))]
    #[x_kube(validation = arm_id_rule("spec.policy.id", &policy_id_pattern(), POLICY_SHAPE))]
    pub id: Option<String>,
}

/// A reference to an Azure storage account.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct StorageAccountRef {
    /// The account's full ARM ID, e.g.
    /// `/subscriptions/<subscription>/resourceGroups/RG-BlobBackup/providers/Microsoft.Storage/storageAccounts/msblobbackup`.
    /// Immutable.
    #[schemars(length(max = MAX_ID_LEN), regex(pattern = arm_id_shape_pattern(8)))]
    #[x_kube(validation = arm_id_rule("spec.storageAccount.id", &storage_account_id_pattern(), ACCOUNT_SHAPE))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec.storageAccount.id is immutable: create a new resource to protect another account").reason(Reason::FieldValueForbidden))]
    pub id: String,

    /// The account's Azure region as a lowercase name, e.g. `westus`. The vault must be in the
    /// same region.
    #[schemars(length(min = 1, max = MAX_LOCATION_LEN), regex(pattern = location_pattern()))]
    pub location: String,
}

/// Vaulted backup settings.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct VaultedBackup {
    /// The blob containers to copy into the vault, 1 to 100 names, e.g. `[images, logs]`.
    /// Azure container names: 3 to 63 lowercase letters, digits and single hyphens. Containers
    /// created later are not added by themselves: list them here.
    #[schemars(length(min = 1, max = MAX_CONTAINERS), inner(length(min = CONTAINER_MIN_LEN, max = CONTAINER_MAX_LEN), regex(pattern = container_name_pattern())))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub containers: Vec<String>,
}

/// What deleting the resource does in Azure.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum DeletionPolicy {
    // Stop protection and delete the backup instance with its backup data.
    #[default]
    Delete,
    // Stop protection, keep the recovery points (vaulted backup only).
    Retain,
    // Leave the backup instance in Azure as it is.
    Orphan,
}

/// How a resource came to own its backup instance.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum Ownership {
    // The operator created the instance for this resource.
    Created,
    // The instance existed without owner tags; a grant allowed adopting it.
    Adopted,
}

// Without `null` among the values, which schemars adds for an optional enum and older API
// servers refuse in a CRD.
fn ownership_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({"type": "string", "enum": ["Created", "Adopted"]})
}

/// The observed state of the backup instance and of the controller's work on it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BlobBackupInstanceStatus {
    /// The `metadata.generation` this status was written for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// The name of the backup instance in the vault, recorded when it is created or adopted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_STATUS_NAME_LEN))]
    pub backup_instance_name: Option<String>,

    /// The backup instance's full ARM ID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_STATUS_ID_LEN))]
    pub backup_instance_id: Option<String>,

    /// How this resource came to own its backup instance: `Created` (the operator created it
    /// for this resource) or `Adopted` (it existed without owner tags and a vault grant allowed
    /// adopting it). Absent while it owns none. The resource writes to, and on deletion deletes,
    /// only an instance it owns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "ownership_schema")]
    pub ownership: Option<Ownership>,

    /// The Backup vault's name, from `spec.vault.id` (for `kubectl get`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_NAME_LEN))]
    pub vault_name: Option<String>,

    /// The storage account's name, from `spec.storageAccount.id` (for `kubectl get`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_NAME_LEN))]
    pub storage_account_name: Option<String>,

    /// The backup policy's name, from `spec.policy` (for `kubectl get`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_NAME_LEN))]
    pub policy_name: Option<String>,

    /// Azure's `properties.protectionStatus.status`, verbatim, e.g. `ProtectionConfigured`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_STATUS_STATE_LEN))]
    pub protection_status: Option<String>,

    /// Azure's `properties.currentProtectionState`, verbatim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_STATUS_STATE_LEN))]
    pub protection_state: Option<String>,

    /// Azure's `properties.provisioningState`, verbatim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_STATUS_STATE_LEN))]
    pub provisioning_state: Option<String>,

    /// Vaulted backup: when the latest recovery point in the vault was taken, as Azure lists
    /// them (it changes when a backup happens). Absent for operational backup, which keeps no
    /// discrete recovery points, and until the first backup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "time_schema")]
    pub last_recovery_point_time: Option<Time>,

    /// The Azure long-running operation in flight, or the last one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<AzureOperation>,

    /// `operation` as `<action> <status>`, e.g. `Create InProgress`, while it is in flight, or
    /// when it failed (or was canceled) and the resource is not Ready; absent otherwise, so an
    /// old failure does not show next to `Ready=True`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_NAME_LEN))]
    pub current_operation: Option<String>,

    /// Ready, Validated, Reconciling and Stalled.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

impl BlobBackupInstanceStatus {
    /// Truncates every string to the schema's limit for it (Azure's answers are recorded
    /// verbatim and could be longer), so the apiserver never refuses the status for a length.
    pub fn fit_to_schema(&mut self) {
        fn fit(value: &mut Option<String>, max: usize) {
            if let Some(text) = value.as_mut() {
                truncate_in_place(text, max);
            }
        }
        fit(&mut self.backup_instance_name, MAX_STATUS_NAME_LEN);
        fit(&mut self.backup_instance_id, MAX_STATUS_ID_LEN);
        fit(&mut self.protection_status, MAX_STATUS_STATE_LEN);
        fit(&mut self.protection_state, MAX_STATUS_STATE_LEN);
        fit(&mut self.provisioning_state, MAX_STATUS_STATE_LEN);
        fit_operation(self.operation.as_mut());
        fit_conditions(&mut self.conditions);
    }
}

/// A spec the controller has checked: parsed IDs, one policy, sane names.
#[derive(Debug, Clone)]
pub struct ValidatedSpec {
    /// The Backup vault.
    pub vault: VaultId,
    /// The backup policy (in `vault`).
    pub policy: PolicyId,
    /// The protected storage account.
    pub storage_account: StorageAccountId,
    /// The storage account's region.
    pub location: String,
    /// `spec.backupInstanceName`, if set.
    pub backup_instance_name: Option<String>,
    /// The vaulted containers; `None` for operational backup.
    pub containers: Option<Vec<String>>,
    /// What deletion does.
    pub deletion_policy: DeletionPolicy,
}

impl ValidatedSpec {
    /// The backup instance name: `spec.backupInstanceName`, else `<account name>-<uid>`.
    pub fn backup_instance_name(&self, uid: &str) -> String {
        match &self.backup_instance_name {
            Some(name) => name.clone(),
            None => default_backup_instance_name(&self.storage_account, uid),
        }
    }

    /// The backup instance's ID in the vault.
    pub fn backup_instance_id(&self, uid: &str) -> BackupInstanceId {
        self.vault.backup_instance(&self.backup_instance_name(uid))
    }

    /// Refuses a spec that names another backup instance than the one the controller recorded
    /// (`status.backupInstanceName`, set before its first Azure write): the instance exists
    /// under the recorded name, and following the spec would orphan it.
    pub fn check_recorded_name(&self, uid: &str, recorded: Option<&str>) -> Result<(), SpecError> {
        let name = self.backup_instance_name(uid);
        match recorded {
            // ARM names are case-insensitive.
            Some(recorded) if !recorded.eq_ignore_ascii_case(&name) => Err(SpecError::new(
                "spec.backupInstanceName",
                format!(
                    "cannot differ from status.backupInstanceName ({recorded}; the spec names {name}): the backup instance already exists under that name"
                ),
                format!("set it to {recorded}, or recreate the resource to use another name"),
            )),
            _ => Ok(()),
        }
    }
}

fn default_backup_instance_name(account: &StorageAccountId, uid: &str) -> String {
    format!("{}-{uid}", account.name())
}

impl BlobBackupInstanceSpec {
    /// Checks the spec as the CRD schema does (for resources that bypassed it, e.g. an older
    /// CRD) plus what the schema cannot express, and parses the IDs.
    pub fn validate(&self) -> Result<ValidatedSpec, SpecError> {
        let (vault, storage_account) = self.parse_ids()?;

        let policy = match (&self.policy.name, &self.policy.id) {
            (Some(name), None) => {
                check(
                    "spec.policy.name",
                    name,
                    MAX_NAME_LEN,
                    &RESOURCE_NAME_RE,
                    NAME_SHAPE,
                )?;
                vault.policy(name)
            }
            (None, Some(id)) => {
                check("spec.policy.id", id, MAX_ID_LEN, &POLICY_ID, POLICY_SHAPE)?;
                let policy = PolicyId::parse(id).map_err(|e| {
                    SpecError::new(
                        "spec.policy.id",
                        e.to_string(),
                        must_look_like("spec.policy.id", POLICY_SHAPE),
                    )
                })?;
                if policy.vault() != &vault {
                    return Err(SpecError::new(
                        "spec.policy.id",
                        format!(
                            "the policy belongs to vault {}, not to spec.vault.id",
                            policy.vault()
                        ),
                        "use a policy of spec.vault.id, or name it with spec.policy.name",
                    ));
                }
                policy
            }
            (Some(_), Some(_)) | (None, None) => {
                return Err(SpecError::new(
                    "spec.policy",
                    "exactly one of name and id must be set",
                    "set spec.policy.name (a policy of the vault) or spec.policy.id",
                ));
            }
        };

        check(
            "spec.storageAccount.location",
            &self.storage_account.location,
            MAX_LOCATION_LEN,
            &LOCATION,
            "a region's lowercase name, e.g. westus",
        )?;
        self.checked_backup_instance_name()?;

        let containers = match &self.vaulted_backup {
            Some(vaulted) => Some(validate_containers(&vaulted.containers)?),
            None => None,
        };
        if self.deletion_policy == DeletionPolicy::Retain && containers.is_none() {
            return Err(SpecError::new(
                "spec.deletionPolicy",
                "Retain keeps recovery points, which only vaulted backup has",
                "add spec.vaultedBackup, or use Delete or Orphan",
            ));
        }

        Ok(ValidatedSpec {
            vault,
            policy,
            storage_account,
            location: self.storage_account.location.clone(),
            backup_instance_name: self.backup_instance_name.clone(),
            containers,
            deletion_policy: self.deletion_policy,
        })
    }

    /// The storage account and backup instance this resource addresses: what deletion needs,
    /// even when another part of the spec is invalid. `recorded` is `status.backupInstanceName`:
    /// once the controller recorded a name, the instance has that name whatever the spec says.
    pub fn instance_ref(
        &self,
        uid: &str,
        recorded: Option<&str>,
    ) -> Result<(StorageAccountId, BackupInstanceId), SpecError> {
        let (vault, account) = self.parse_ids()?;
        let name = match (recorded, self.checked_backup_instance_name()) {
            (Some(recorded), _) => {
                check(
                    "status.backupInstanceName",
                    recorded,
                    MAX_NAME_LEN,
                    &RESOURCE_NAME_RE,
                    NAME_SHAPE,
                )?;
                recorded.to_owned()
            }
            (None, Ok(Some(name))) => name.to_owned(),
            (None, Ok(None)) => default_backup_instance_name(&account, uid),
            (None, Err(e)) => return Err(e),
        };
        Ok((account, vault.backup_instance(&name)))
    }

    /// `spec.backupInstanceName`, if set, once it has the shape of an ARM resource name.
    fn checked_backup_instance_name(&self) -> Result<Option<&str>, SpecError> {
        let Some(name) = self.backup_instance_name.as_deref() else {
            return Ok(None);
        };
        check(
            "spec.backupInstanceName",
            name,
            MAX_NAME_LEN,
            &RESOURCE_NAME_RE,
            NAME_SHAPE,
        )?;
        Ok(Some(name))
    }

    fn parse_ids(&self) -> Result<(VaultId, StorageAccountId), SpecError> {
        check(
            "spec.vault.id",
            &self.vault.id,
            MAX_ID_LEN,
            &VAULT_ID,
            VAULT_SHAPE,
        )?;
        let vault = VaultId::parse(&self.vault.id).map_err(|e| {
            SpecError::new(
                "spec.vault.id",
                e.to_string(),
                must_look_like("spec.vault.id", VAULT_SHAPE),
            )
        })?;
        check(
            "spec.storageAccount.id",
            &self.storage_account.id,
            MAX_ID_LEN,
            &ACCOUNT_ID,
            ACCOUNT_SHAPE,
        )?;
        let account = StorageAccountId::parse(&self.storage_account.id).map_err(|e| {
            SpecError::new(
                "spec.storageAccount.id",
                e.to_string(),
                must_look_like("spec.storageAccount.id", ACCOUNT_SHAPE),
            )
        })?;
        Ok((vault, account))
    }
}

fn validate_containers(containers: &[String]) -> Result<Vec<String>, SpecError> {
    validate_container_list("spec.vaultedBackup.containers", containers)
}

/// Checks a list of container names in `field` (1 to 100 distinct valid names).
pub(super) fn validate_container_list(
    field: &'static str,
    containers: &[String],
) -> Result<Vec<String>, SpecError> {
    if containers.is_empty() || containers.len() > MAX_CONTAINERS {
        return Err(SpecError::new(
            field,
            format!("it lists {} containers", containers.len()),
            format!(
                "list 1 to {MAX_CONTAINERS} containers, or omit {}",
                if field == "spec.vaultedBackup.containers" {
                    "vaultedBackup for operational backup"
                } else {
                    "the field for all containers"
                }
            ),
        ));
    }
    for (index, name) in containers.iter().enumerate() {
        let problem = if !(CONTAINER_MIN_LEN..=CONTAINER_MAX_LEN).contains(&name.len()) {
            format!("item {index} ({name:?}) has {} characters", name.len())
        } else if !CONTAINER.is_match(name) {
            format!("item {index} ({name:?}) is malformed")
        } else if let Some(first) = containers[..index].iter().position(|c| c == name) {
            return Err(SpecError::new(
                field,
                format!("items {first} and {index} are both {name:?}"),
                "list each container once",
            ));
        } else {
            continue;
        };
        return Err(SpecError::new(
            field,
            problem,
            format!("{CONTAINER_SHAPE}; use the containers' names as Azure shows them"),
        ));
    }
    Ok(containers.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec_in_group(group: &str) -> BlobBackupInstanceSpec {
        let sub = "00000000-0000-0000-0000-000000000000";
        BlobBackupInstanceSpec {
            vault: VaultRef {
                id: format!(
                    "/subscriptions/{sub}/resourceGroups/{group}/providers/Microsoft.DataProtection/backupVaults/vault1"
                ),
            },
            policy: PolicyRef {
                name: Some("policy".into()),
                id: None,
            },
            storage_account: StorageAccountRef {
                id: format!(
                    "/subscriptions/{sub}/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/account1"
                ),
                location: "westus".into(),
            },
            backup_instance_name: None,
            vaulted_backup: None,
            deletion_policy: DeletionPolicy::Delete,
        }
    }

    #[test]
    fn dot_segments_are_no_resource_groups() {
        for group in [".", "..", "rg."] {
            let error = spec_in_group(group).validate().unwrap_err();
            assert_eq!(error.field, "spec.vault.id", "{group}: {error}");
        }
        for group in ["rg", "r.g", "(rg)", "a", &"r".repeat(90)] {
            assert!(spec_in_group(group).validate().is_ok(), "{group}");
        }
        assert!(spec_in_group(&"r".repeat(91)).validate().is_err());
    }

    #[test]
    fn truncation_keeps_characters_whole_and_says_so() {
        assert_eq!(truncate("short", 10), "short");
        let cut = truncate(&"é".repeat(10), 9);
        assert_eq!(cut, "ééé...");
        assert!(cut.len() <= 9);
    }

    #[test]
    fn the_recorded_name_wins_over_the_spec() {
        let mut spec = spec_in_group("rg");
        let validated = spec.validate().unwrap();
        assert!(validated.check_recorded_name("uid", None).is_ok());
        assert!(
            validated
                .check_recorded_name("uid", Some("ACCOUNT1-uid"))
                .is_ok()
        );
        let error = validated
            .check_recorded_name("uid", Some("other"))
            .unwrap_err();
        assert_eq!(error.field, "spec.backupInstanceName");

        spec.backup_instance_name = Some("renamed".into());
        let (_, instance) = spec.instance_ref("uid", Some("recorded")).unwrap();
        assert_eq!(instance.name(), "recorded");
        let (_, instance) = spec.instance_ref("uid", None).unwrap();
        assert_eq!(instance.name(), "renamed");
        let error = spec.instance_ref("uid", Some("../x")).unwrap_err();
        assert_eq!(error.field, "status.backupInstanceName");
    }
}
