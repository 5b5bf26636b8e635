//! The `BackupVaultGrant` custom resource: which namespaces may protect their storage accounts
//! in which Backup vault, set by a cluster administrator.

use std::collections::BTreeMap;

use kube::core::{Expression, Selector};

use super::*;

/// Which namespaces may use the Backup vault, and with what: policies, adoption of existing
/// backup instances, deletion policies. In effect when the operator runs with `--vault-access
/// grants` (the default); a BlobBackupInstance no grant covers is `VaultNotGranted`.
// Each printcolumn(...) has its own `type_`: not the duplicate clippy takes it for.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "dataprotection.blobbackup.io",
    version = "v1alpha1",
    kind = "BackupVaultGrant",
    plural = "backupvaultgrants",
    shortname = "bvg",
    category = "azure",
    category = "backup",
    status = "BackupVaultGrantStatus",
    derive = "PartialEq",
    doc = "Lets the BlobBackupInstance resources of some namespaces use one Azure Backup vault, with the policies, adoption and deletion policies it allows.",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status",
        description = "Whether the grant is valid and in effect"
    ),
    printcolumn(
        name = "Vault",
        type_ = "string",
        json_path = ".status.vaultName",
        description = "The Backup vault's name"
    ),
    printcolumn(
        name = "Namespaces",
        type_ = "integer",
        json_path = ".status.matchedNamespaces",
        description = "How many namespaces the grant matches now"
    ),
    printcolumn(
        name = "Adoption",
        type_ = "boolean",
        json_path = ".spec.allowAdoption",
        description = "Whether existing untagged backup instances may be adopted"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
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
    validation = Rule::new("(has(self.namespaces) && size(self.namespaces) > 0) || has(self.namespaceSelector)")
        .message("set spec.namespaces (namespace names), spec.namespaceSelector (namespace labels), or both: a grant without them matches no namespace"),
)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = optional_not_nullable)]
pub struct BackupVaultGrantSpec {
    /// The Backup vault's full ARM ID, e.g.
    /// `/subscriptions/<subscription>/resourceGroups/rg/providers/Microsoft.DataProtection/backupVaults/prod`.
    /// Compared with `spec.vault.id` of BlobBackupInstance resources case-insensitively, as ARM
    /// compares IDs.
    #[schemars(length(max = MAX_ID_LEN), regex(pattern = arm_id_shape_pattern(8)))]
    #[x_kube(validation = arm_id_rule("spec.vaultId", &vault_id_pattern(), VAULT_SHAPE))]
    pub vault_id: String,

    /// Namespaces granted by name, e.g. `[team-a]`. A namespace matches when it is listed here
    /// or its labels match `namespaceSelector`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_GRANT_NAMESPACES), inner(length(min = 1, max = MAX_NAMESPACE_LEN), regex(pattern = namespace_pattern())))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub namespaces: Vec<String>,

    /// Namespaces granted by their labels, e.g. `{matchLabels: {backup: prod}}`. An empty
    /// selector (`{}`) matches every namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<NamespaceSelector>,

    /// The backup policies of the vault that may be used, by name, e.g. `[BlobBackup-Policy]`.
    /// Empty or absent: any policy of the vault.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_GRANT_POLICIES), inner(length(min = 1, max = MAX_NAME_LEN), regex(pattern = resource_name_pattern())))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub policies: Vec<String>,

    /// Whether a BlobBackupInstance may adopt an existing backup instance of this vault that
    /// carries no owner tags (one that was created outside Kubernetes): the operator then tags
    /// it as its own. Default false: such an instance is left alone (`AdoptionNotAllowed`).
    #[serde(default)]
    pub allow_adoption: bool,

    /// The deletion policies BlobBackupInstance resources may use with this vault, e.g.
    /// `[Retain, Orphan]` to keep every recovery point. Absent: all of `Delete`, `Retain` and
    /// `Orphan`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 3))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub deletion_policies: Option<Vec<DeletionPolicy>>,
}

/// Namespaces by their labels, as in a Kubernetes label selector: every `matchLabels` entry
/// and every `matchExpressions` requirement must hold.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = optional_not_nullable)]
pub struct NamespaceSelector {
    /// Labels the namespace must carry with these values, e.g. `{backup: prod}`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = MAX_SELECTOR_TERMS))]
    pub match_labels: BTreeMap<String, String>,

    /// Requirements on the namespace's labels, e.g. `{key: team, operator: In, values: [a, b]}`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_SELECTOR_TERMS))]
    pub match_expressions: Vec<LabelRequirement>,
}

/// One requirement on a label.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = optional_not_nullable)]
pub struct LabelRequirement {
    /// The label's key.
    #[schemars(length(min = 1, max = MAX_LABEL_KEY_LEN))]
    pub key: String,
    /// `In`, `NotIn`, `Exists` or `DoesNotExist`.
    pub operator: LabelOperator,
    /// The values for `In` and `NotIn` (at least one); empty for `Exists` and `DoesNotExist`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_SELECTOR_TERMS), inner(length(max = MAX_LABEL_VALUE_LEN)))]
    pub values: Vec<String>,
}

/// How a label requirement compares.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum LabelOperator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

/// What the operator says of the grant.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupVaultGrantStatus {
    /// The `metadata.generation` this status was written for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// The Backup vault's name, from `spec.vaultId` (for `kubectl get`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_NAME_LEN))]
    pub vault_name: Option<String>,

    /// How many namespaces the grant matches now, of those the operator watches (a selector
    /// that matches none is valid, and shows 0 here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matched_namespaces: Option<i64>,

    /// `Ready`: True when the grant is valid and in effect; False with reason `InvalidSpec`
    /// and the field at fault otherwise.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

// Limits of the grant's schema.
const MAX_NAMESPACE_LEN: usize = 63;
const MAX_GRANT_NAMESPACES: usize = 1000;
const MAX_GRANT_POLICIES: usize = 100;
const MAX_SELECTOR_TERMS: usize = 64;
// Kubernetes' own limits: a prefix of 253 characters, '/', a name of 63; values of 63.
const MAX_LABEL_KEY_LEN: usize = 317;
const MAX_LABEL_VALUE_LEN: usize = 63;

/// The schema pattern of a namespace name (an RFC 1123 label).
pub fn namespace_pattern() -> String {
    "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$".to_owned()
}

/// A grant the controller has checked: the vault parsed, the selector ready to match.
#[derive(Debug, Clone)]
pub struct ValidatedGrant {
    /// The grant's name.
    pub name: String,
    /// The Backup vault.
    pub vault: VaultId,
    /// Namespaces by name.
    pub namespaces: Vec<String>,
    /// Namespaces by labels; `None` when the spec has no selector.
    pub selector: Option<Selector>,
    /// Allowed policy names; empty: any.
    pub policies: Vec<String>,
    /// Whether untagged instances may be adopted.
    pub allow_adoption: bool,
    /// Allowed deletion policies; `None`: all.
    pub deletion_policies: Option<Vec<DeletionPolicy>>,
}

impl ValidatedGrant {
    /// Whether the grant covers a namespace of this name and these labels.
    pub fn matches_namespace(&self, name: &str, labels: &BTreeMap<String, String>) -> bool {
        use kube::core::SelectorExt;
        self.namespaces.iter().any(|n| n == name)
            || self.selector.as_ref().is_some_and(|s| s.matches(labels))
    }

    /// Whether the grant allows the policy of this name (ARM names are case-insensitive).
    pub fn allows_policy(&self, name: &str) -> bool {
        self.policies.is_empty() || self.policies.iter().any(|p| p.eq_ignore_ascii_case(name))
    }

    /// Whether the grant allows this deletion policy.
    pub fn allows_deletion_policy(&self, policy: DeletionPolicy) -> bool {
        self.deletion_policies
            .as_ref()
            .is_none_or(|allowed| allowed.contains(&policy))
    }
}

impl BackupVaultGrant {
    /// Checks the spec as the CRD schema does (for grants that bypassed it) plus what the
    /// schema cannot express, and readies it for matching.
    pub fn validate(&self) -> Result<ValidatedGrant, SpecError> {
        let spec = &self.spec;
        check(
            "spec.vaultId",
            &spec.vault_id,
            MAX_ID_LEN,
            &VAULT_ID,
            VAULT_SHAPE,
        )?;
        let vault = VaultId::parse(&spec.vault_id).map_err(|e| {
            SpecError::new(
                "spec.vaultId",
                e.to_string(),
                must_look_like("spec.vaultId", VAULT_SHAPE),
            )
        })?;
        if spec.namespaces.is_empty() && spec.namespace_selector.is_none() {
            return Err(SpecError::new(
                "spec.namespaces",
                "neither spec.namespaces nor spec.namespaceSelector is set, so the grant matches no namespace",
                "list namespaces in spec.namespaces, or select them by label with spec.namespaceSelector",
            ));
        }
        for name in &spec.namespaces {
            check(
                "spec.namespaces",
                name,
                MAX_NAMESPACE_LEN,
                &NAMESPACE,
                "a namespace name: lowercase letters, digits and '-'",
            )?;
        }
        for name in &spec.policies {
            check(
                "spec.policies",
                name,
                MAX_NAME_LEN,
                &RESOURCE_NAME_RE,
                NAME_SHAPE,
            )?;
        }
        if spec.deletion_policies.as_ref().is_some_and(Vec::is_empty) {
            return Err(SpecError::new(
                "spec.deletionPolicies",
                "it is empty, which would allow no deletion policy at all",
                "list some of Delete, Retain and Orphan, or leave it out to allow all",
            ));
        }
        let selector = spec
            .namespace_selector
            .as_ref()
            .map(NamespaceSelector::to_selector)
            .transpose()?;
        Ok(ValidatedGrant {
            name: self.metadata.name.clone().unwrap_or_default(),
            vault,
            namespaces: spec.namespaces.clone(),
            selector,
            policies: spec.policies.clone(),
            allow_adoption: spec.allow_adoption,
            deletion_policies: spec.deletion_policies.clone(),
        })
    }
}

impl NamespaceSelector {
    /// The selector as kube matches it.
    fn to_selector(&self) -> Result<Selector, SpecError> {
        let mut expressions: Vec<Expression> = self
            .match_labels
            .iter()
            .map(|(k, v)| Expression::Equal(k.clone(), v.clone()))
            .collect();
        for (index, requirement) in self.match_expressions.iter().enumerate() {
            let key = requirement.key.clone();
            let values = requirement.values.iter().cloned().collect();
            let with_values = matches!(
                requirement.operator,
                LabelOperator::In | LabelOperator::NotIn
            );
            if with_values == requirement.values.is_empty() {
                return Err(SpecError::new(
                    "spec.namespaceSelector.matchExpressions",
                    format!(
                        "item {index} ({}, {:?}) has {} values",
                        requirement.key,
                        requirement.operator,
                        requirement.values.len()
                    ),
                    "In and NotIn need at least one value; Exists and DoesNotExist take none",
                ));
            }
            expressions.push(match requirement.operator {
                LabelOperator::In => Expression::In(key, values),
                LabelOperator::NotIn => Expression::NotIn(key, values),
                LabelOperator::Exists => Expression::Exists(key),
                LabelOperator::DoesNotExist => Expression::DoesNotExist(key),
            });
        }
        Ok(expressions.into_iter().collect())
    }
}

static NAMESPACE: LazyLock<Regex> = LazyLock::new(|| compile(&namespace_pattern()));
