//! The emulator's map keys: ARM resource ids with canonical casing for display and lower case
//! for lookups (the client's `dataprotection::ids` are the typed ids themselves). Parsing is the client's (`dataprotection::ids`): ids are not part of the wire format
//! under test, so sharing the parser hides nothing (the bodies stay the emulator's own).

use dataprotection::ids::{PolicyId, StorageAccountId, VaultId};

/// A parsed ARM id of a vault or storage account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct KeyedId {
    /// Canonical casing of the fixed segments, the caller's casing of the names.
    pub display: String,
    /// Lower-cased `display`: the key for lookups.
    pub key: String,
    pub subscription: String,
    pub resource_group: String,
    pub name: String,
}

impl KeyedId {
    fn new(display: String, subscription: &str, resource_group: &str, name: &str) -> Self {
        Self {
            key: display.to_ascii_lowercase(),
            display,
            subscription: subscription.to_owned(),
            resource_group: resource_group.to_owned(),
            name: name.to_owned(),
        }
    }
}

impl From<&VaultId> for KeyedId {
    fn from(id: &VaultId) -> Self {
        Self::new(
            id.to_string(),
            id.subscription(),
            id.resource_group(),
            id.name(),
        )
    }
}

impl From<&StorageAccountId> for KeyedId {
    fn from(id: &StorageAccountId) -> Self {
        Self::new(
            id.to_string(),
            id.subscription(),
            id.resource_group(),
            id.name(),
        )
    }
}

/// Parses a Backup vault id.
pub(crate) fn parse_vault_id(id: &str) -> Result<KeyedId, String> {
    VaultId::parse(id)
        .map(|id| KeyedId::from(&id))
        .map_err(|e| e.to_string())
}

/// Parses a storage account id.
pub(crate) fn parse_storage_account_id(id: &str) -> Result<KeyedId, String> {
    StorageAccountId::parse(id)
        .map(|id| KeyedId::from(&id))
        .map_err(|e| e.to_string())
}

/// Parses a backup policy id into its vault and the policy name.
pub(crate) fn parse_policy_id(id: &str) -> Result<(KeyedId, String), String> {
    let policy = PolicyId::parse(id).map_err(|e| e.to_string())?;
    Ok((KeyedId::from(policy.vault()), policy.name().to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_match_case_insensitively_and_keep_canonical_casing() {
        let id = parse_vault_id(
            "/Subscriptions/abc/resourcegroups/RG/providers/microsoft.dataprotection/Backupvaults/V1",
        )
        .unwrap();
        assert_eq!(
            id.display,
            "/subscriptions/abc/resourceGroups/RG/providers/Microsoft.DataProtection/backupVaults/V1"
        );
        assert_eq!(id.key, id.display.to_ascii_lowercase());
        assert_eq!((id.subscription.as_str(), id.name.as_str()), ("abc", "V1"));
        assert!(parse_storage_account_id(&id.display).is_err());
        let (vault, policy) = parse_policy_id(&format!("{}/BACKUPPOLICIES/p", id.display)).unwrap();
        assert_eq!((vault, policy.as_str()), (id, "p"));
        let error = parse_policy_id("/subscriptions/abc").unwrap_err();
        assert!(error.contains("backup policy"), "{error}");
    }
}
