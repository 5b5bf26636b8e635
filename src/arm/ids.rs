//! Azure Resource Manager IDs for the resources this operator touches.
//!
//! Segment keys (`subscriptions`, `resourceGroups`, provider namespaces, types) are compared
//! case-insensitively, as ARM does; `Display` prints the canonical casing.

use std::fmt;

/// An ARM ID that does not have the expected shape.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{input:?} is not a {kind} ID: {problem}; expected {expected}")]
pub struct IdError {
    /// The text that failed to parse.
    pub input: String,
    /// What was being parsed, e.g. "Backup vault".
    pub kind: &'static str,
    /// The bad segment and what is wrong with it.
    pub problem: String,
    /// The expected shape.
    pub expected: &'static str,
}

const VAULT_SHAPE: &str = "/subscriptions/<subscription>/resourceGroups/<group>/providers/Microsoft.DataProtection/backupVaults/<vault>";
const POLICY_SHAPE: &str = "/subscriptions/<subscription>/resourceGroups/<group>/providers/Microsoft.DataProtection/backupVaults/<vault>/backupPolicies/<policy>";
const INSTANCE_SHAPE: &str = "/subscriptions/<subscription>/resourceGroups/<group>/providers/Microsoft.DataProtection/backupVaults/<vault>/backupInstances/<instance>";
const ACCOUNT_SHAPE: &str = "/subscriptions/<subscription>/resourceGroups/<group>/providers/Microsoft.Storage/storageAccounts/<account>";

/// Splits `input` along `keys` (literal segments, matched case-insensitively, each followed by
/// one value segment unless it is a provider namespace) and returns the value segments.
fn parse_segments<'a>(
    input: &'a str,
    kind: &'static str,
    expected: &'static str,
    keys: &[(&str, bool)],
) -> Result<Vec<&'a str>, IdError> {
    let err = |problem: String| IdError {
        input: input.to_owned(),
        kind,
        problem,
        expected,
    };
    let rest = input
        .strip_prefix('/')
        .ok_or_else(|| err("it does not start with '/'".into()))?;
    let mut parts = rest.split('/');
    let mut values = Vec::new();
    for (key, has_value) in keys {
        match parts.next() {
            Some(p) if p.eq_ignore_ascii_case(key) => {}
            Some(p) => return Err(err(format!("found segment {p:?} where {key:?} belongs"))),
            None => return Err(err(format!("segment {key:?} is missing"))),
        }
        if *has_value {
            match parts.next() {
                Some(v) if !v.is_empty() => values.push(v),
                _ => return Err(err(format!("the value after {key:?} is missing"))),
            }
        }
    }
    match parts.next() {
        None => Ok(values),
        Some(extra) => Err(err(format!("unexpected trailing segment {extra:?}"))),
    }
}

/// The ID of a Backup vault (`Microsoft.DataProtection/backupVaults`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VaultId {
    subscription: String,
    resource_group: String,
    name: String,
}

impl VaultId {
    const KEYS: [(&'static str, bool); 5] = [
        ("subscriptions", true),
        ("resourceGroups", true),
        ("providers", false),
        ("Microsoft.DataProtection", false),
        ("backupVaults", true),
    ];

    /// Parses `/subscriptions/../resourceGroups/../providers/Microsoft.DataProtection/backupVaults/..`.
    pub fn parse(input: &str) -> Result<Self, IdError> {
        let v = parse_segments(input, "Backup vault", VAULT_SHAPE, &Self::KEYS)?;
        Ok(Self {
            subscription: v[0].to_owned(),
            resource_group: v[1].to_owned(),
            name: v[2].to_owned(),
        })
    }
    /// The subscription ID.
    pub fn subscription(&self) -> &str {
        &self.subscription
    }
    /// The resource group name.
    pub fn resource_group(&self) -> &str {
        &self.resource_group
    }
    /// The vault name.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// The ID of the vault's backup policy `name`.
    pub fn policy(&self, name: &str) -> PolicyId {
        PolicyId {
            vault: self.clone(),
            name: name.to_owned(),
        }
    }
    /// The ID of the vault's backup instance `name`.
    pub fn backup_instance(&self, name: &str) -> BackupInstanceId {
        BackupInstanceId {
            vault: self.clone(),
            name: name.to_owned(),
        }
    }
}

impl fmt::Display for VaultId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.DataProtection/backupVaults/{}",
            self.subscription, self.resource_group, self.name
        )
    }
}

/// The ID of a backup policy of a Backup vault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyId {
    vault: VaultId,
    name: String,
}

impl PolicyId {
    /// Parses a vault ID followed by `/backupPolicies/<name>`.
    pub fn parse(input: &str) -> Result<Self, IdError> {
        let mut keys = VaultId::KEYS.to_vec();
        keys.push(("backupPolicies", true));
        let v = parse_segments(input, "backup policy", POLICY_SHAPE, &keys)?;
        Ok(VaultId {
            subscription: v[0].to_owned(),
            resource_group: v[1].to_owned(),
            name: v[2].to_owned(),
        }
        .policy(v[3]))
    }
    /// The vault the policy belongs to.
    pub fn vault(&self) -> &VaultId {
        &self.vault
    }
    /// The policy name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl fmt::Display for PolicyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/backupPolicies/{}", self.vault, self.name)
    }
}

/// The ID of a backup instance in a Backup vault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupInstanceId {
    vault: VaultId,
    name: String,
}

impl BackupInstanceId {
    /// Parses a vault ID followed by `/backupInstances/<name>`.
    pub fn parse(input: &str) -> Result<Self, IdError> {
        let mut keys = VaultId::KEYS.to_vec();
        keys.push(("backupInstances", true));
        let v = parse_segments(input, "backup instance", INSTANCE_SHAPE, &keys)?;
        Ok(VaultId {
            subscription: v[0].to_owned(),
            resource_group: v[1].to_owned(),
            name: v[2].to_owned(),
        }
        .backup_instance(v[3]))
    }
    /// The vault that holds the instance.
    pub fn vault(&self) -> &VaultId {
        &self.vault
    }
    /// The instance name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl fmt::Display for BackupInstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/backupInstances/{}", self.vault, self.name)
    }
}

/// The ID of a storage account (`Microsoft.Storage/storageAccounts`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageAccountId {
    subscription: String,
    resource_group: String,
    name: String,
}

impl StorageAccountId {
    /// Parses `/subscriptions/../resourceGroups/../providers/Microsoft.Storage/storageAccounts/..`.
    pub fn parse(input: &str) -> Result<Self, IdError> {
        let keys = [
            ("subscriptions", true),
            ("resourceGroups", true),
            ("providers", false),
            ("Microsoft.Storage", false),
            ("storageAccounts", true),
        ];
        let v = parse_segments(input, "storage account", ACCOUNT_SHAPE, &keys)?;
        Ok(Self {
            subscription: v[0].to_owned(),
            resource_group: v[1].to_owned(),
            name: v[2].to_owned(),
        })
    }
    /// The subscription ID.
    pub fn subscription(&self) -> &str {
        &self.subscription
    }
    /// The resource group name.
    pub fn resource_group(&self) -> &str {
        &self.resource_group
    }
    /// The account name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl fmt::Display for StorageAccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Storage/storageAccounts/{}",
            self.subscription, self.resource_group, self.name
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_case_insensitively_and_prints_canonically() {
        let v = VaultId::parse(
            "/SUBSCRIPTIONS/s/resourcegroups/rg/providers/microsoft.dataprotection/Backupvaults/v",
        )
        .unwrap();
        assert_eq!(v.name(), "v");
        assert_eq!(
            v.policy("p").to_string(),
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.DataProtection/backupVaults/v/backupPolicies/p"
        );
        let p = PolicyId::parse(&v.policy("p").to_string()).unwrap();
        assert_eq!(p.vault(), &v);
        let a = StorageAccountId::parse(
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/acc",
        )
        .unwrap();
        assert_eq!(a.name(), "acc");
    }

    #[test]
    fn rejects_bad_shapes_naming_the_segment() {
        let e = VaultId::parse(
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/a",
        )
        .unwrap_err();
        assert!(e.problem.contains("Microsoft.Storage"), "{e}");
        assert!(VaultId::parse("subscriptions/s").is_err());
        assert!(VaultId::parse("/subscriptions//resourceGroups/rg/providers/Microsoft.DataProtection/backupVaults/v").is_err());
        assert!(BackupInstanceId::parse("/subscriptions/s/resourceGroups/rg/providers/Microsoft.DataProtection/backupVaults/v/backupInstances/i/x").is_err());
    }
}
