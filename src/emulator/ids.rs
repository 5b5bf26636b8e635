//! ARM resource ids as the emulator needs them: matched case-insensitively (as ARM does),
//! kept in canonical casing for display and in lower case as map keys.

/// Marks a captured segment in a pattern.
pub(crate) const ANY: &str = "{}";

pub(crate) const VAULT_PATTERN: [&str; 8] = [
    "subscriptions",
    ANY,
    "resourceGroups",
    ANY,
    "providers",
    "Microsoft.DataProtection",
    "backupVaults",
    ANY,
];

const ACCOUNT_PATTERN: [&str; 8] = [
    "subscriptions",
    ANY,
    "resourceGroups",
    ANY,
    "providers",
    "Microsoft.Storage",
    "storageAccounts",
    ANY,
];

/// A parsed ARM id of a vault or storage account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ArmId {
    /// Canonical casing of the fixed segments, the caller's casing of the names.
    pub display: String,
    /// Lower-cased `display`: the key for lookups.
    pub key: String,
    pub subscription: String,
    pub resource_group: String,
    pub name: String,
}

impl ArmId {
    fn build(pattern: &[&str], captures: &[&str]) -> Self {
        let mut display = String::new();
        let mut names = captures.iter();
        for segment in pattern {
            display.push('/');
            if *segment == ANY {
                display.push_str(names.next().copied().unwrap_or_default());
            } else {
                display.push_str(segment);
            }
        }
        Self {
            key: display.to_ascii_lowercase(),
            display,
            subscription: captures.first().copied().unwrap_or_default().to_owned(),
            resource_group: captures.get(1).copied().unwrap_or_default().to_owned(),
            name: captures.last().copied().unwrap_or_default().to_owned(),
        }
    }

    /// The vault id of `/subscriptions/{sub}/resourceGroups/{rg}/…/backupVaults/{name}`.
    pub fn vault(subscription: &str, resource_group: &str, name: &str) -> Self {
        Self::build(&VAULT_PATTERN, &[subscription, resource_group, name])
    }
}

/// Matches `segments` against `pattern` (literal segments compared case-insensitively,
/// `ANY` captures a non-empty segment); returns the captures.
pub(crate) fn match_segments<'a>(segments: &[&'a str], pattern: &[&str]) -> Option<Vec<&'a str>> {
    if segments.len() != pattern.len() {
        return None;
    }
    let mut captures = Vec::new();
    for (segment, expected) in segments.iter().zip(pattern) {
        if *expected == ANY {
            if segment.is_empty() {
                return None;
            }
            captures.push(*segment);
        } else if !segment.eq_ignore_ascii_case(expected) {
            return None;
        }
    }
    Some(captures)
}

fn split(id: &str) -> Vec<&str> {
    id.trim().trim_matches('/').split('/').collect()
}

fn parse_with(id: &str, pattern: &[&str], what: &str) -> Result<ArmId, String> {
    match_segments(&split(id), pattern)
        .map(|captures| ArmId::build(pattern, &captures))
        .ok_or_else(|| {
            format!(
                "'{id}' is not a {what} id; expected /{}",
                pattern.join("/").replace(ANY, "…")
            )
        })
}

/// Parses a Backup vault id.
pub(crate) fn parse_vault_id(id: &str) -> Result<ArmId, String> {
    parse_with(id, &VAULT_PATTERN, "Backup vault")
}

/// Parses a storage account id.
pub(crate) fn parse_storage_account_id(id: &str) -> Result<ArmId, String> {
    parse_with(id, &ACCOUNT_PATTERN, "storage account")
}

/// Parses a backup policy id into its vault and the policy name.
pub(crate) fn parse_policy_id(id: &str) -> Result<(ArmId, String), String> {
    let segments = split(id);
    let n = VAULT_PATTERN.len();
    let bad = || {
        format!(
            "'{id}' is not a backup policy id; expected /{}/backupPolicies/…",
            VAULT_PATTERN.join("/").replace(ANY, "…")
        )
    };
    if segments.len() != n + 2 || !segments[n].eq_ignore_ascii_case("backupPolicies") {
        return Err(bad());
    }
    let policy = segments[n + 1];
    if policy.is_empty() {
        return Err(bad());
    }
    let vault = parse_vault_id(&segments[..n].join("/")).map_err(|_| bad())?;
    Ok((vault, policy.to_owned()))
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
        assert!(parse_policy_id("/subscriptions/abc").is_err());
    }
}
