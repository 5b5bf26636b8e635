//! Azure Resource Manager IDs of the resources the operator touches: Backup vaults, their
//! backup policies and backup instances, and storage accounts; and `ProviderPath`, any URL path
//! under a resource provider (what a poll URL names), read with the same grammar.
//!
//! ARM compares the fixed segments of an ID (`resourceGroups`, `providers`, `backupVaults`, ...)
//! and the names in it case-insensitively, so parsing accepts any casing and equality ignores
//! case. `Display` writes the canonical casing of the fixed segments and the names as given.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::str::FromStr;

/// The shape of a Backup vault ID.
pub const VAULT_ID_SHAPE: &str = "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.DataProtection/backupVaults/{vaultName}";
/// The shape of a backup policy ID.
pub const POLICY_ID_SHAPE: &str = "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.DataProtection/backupVaults/{vaultName}/backupPolicies/{policyName}";
/// The shape of a backup instance ID.
pub const BACKUP_INSTANCE_ID_SHAPE: &str = "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.DataProtection/backupVaults/{vaultName}/backupInstances/{backupInstanceName}";
/// The shape of a storage account ID.
pub const STORAGE_ACCOUNT_ID_SHAPE: &str = "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.Storage/storageAccounts/{accountName}";

/// An ARM ID that could not be parsed: which kind of ID, what was given, which segment is
/// wrong and the shape that was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} ID {input:?}: {problem}; expected {expected}")]
pub struct IdError {
    /// The kind of ID being parsed, e.g. "Backup vault".
    pub kind: &'static str,
    /// The text that was parsed.
    pub input: String,
    /// What is wrong, naming the bad segment.
    pub problem: String,
    /// The expected shape of the ID.
    pub expected: &'static str,
}

/// One segment of an ID template: a fixed word, or a name (with what it names).
#[derive(Clone, Copy)]
enum Seg {
    Fixed(&'static str),
    Name(&'static str),
}

use Seg::{Fixed, Name};

const SCOPE: [Seg; 5] = [
    Fixed("subscriptions"),
    Name("subscription ID"),
    Fixed("resourceGroups"),
    Name("resource group name"),
    Fixed("providers"),
];

struct Template {
    kind: &'static str,
    shape: &'static str,
    rest: &'static [Seg],
}

const VAULT: Template = Template {
    kind: "Backup vault",
    shape: VAULT_ID_SHAPE,
    rest: &[
        Fixed("Microsoft.DataProtection"),
        Fixed("backupVaults"),
        Name("vault name"),
    ],
};
const POLICY: Template = Template {
    kind: "backup policy",
    shape: POLICY_ID_SHAPE,
    rest: &[
        Fixed("Microsoft.DataProtection"),
        Fixed("backupVaults"),
        Name("vault name"),
        Fixed("backupPolicies"),
        Name("policy name"),
    ],
};
const INSTANCE: Template = Template {
    kind: "backup instance",
    shape: BACKUP_INSTANCE_ID_SHAPE,
    rest: &[
        Fixed("Microsoft.DataProtection"),
        Fixed("backupVaults"),
        Name("vault name"),
        Fixed("backupInstances"),
        Name("backup instance name"),
    ],
};
const ACCOUNT: Template = Template {
    kind: "storage account",
    shape: STORAGE_ACCOUNT_ID_SHAPE,
    rest: &[
        Fixed("Microsoft.Storage"),
        Fixed("storageAccounts"),
        Name("storage account name"),
    ],
};

/// Why a name cannot stand in an ARM ID (it would change the URL built from it), if it cannot.
fn name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("is empty")
    } else if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        Some("contains whitespace or control characters")
    } else if name.contains(['?', '#', '%', '\\']) {
        Some("contains one of ? # % \\")
    } else {
        None
    }
}

/// The segments of an ARM path, read front to back: the one reader of ARM path grammar (fixed
/// words in any casing, names checked by `name_problem`, errors naming the segment by its
/// position), for the ID types and for `ProviderPath` alike.
struct Cursor {
    segments: Vec<String>,
    next: usize,
}

impl Cursor {
    /// Splits `input` (`/seg/seg/...`, one trailing `/` allowed) into segments; with `decode`,
    /// each segment is percent-decoded as ARM decodes a URL path, and one that decodes to a slash
    /// or a backslash is refused (ARM could take it for a separator).
    fn new(input: &str, decode: bool) -> Result<Self, String> {
        let Some(path) = input.trim().strip_prefix('/') else {
            return Err("it does not start with \"/subscriptions/\"".into());
        };
        let path = path.strip_suffix('/').unwrap_or(path);
        let mut segments = Vec::new();
        for (index, raw) in path.split('/').enumerate() {
            let position = index + 1;
            if !decode {
                segments.push(raw.to_owned());
                continue;
            }
            let decoded = percent_encoding::percent_decode_str(raw)
                .decode_utf8()
                .map_err(|_| format!("segment {position} ({raw:?}) is not UTF-8 once decoded"))?;
            if decoded.contains(['/', '\\']) {
                return Err(format!(
                    "segment {position} ({raw:?}) has an encoded slash or backslash"
                ));
            }
            segments.push(decoded.into_owned());
        }
        Ok(Self { segments, next: 0 })
    }

    fn is_done(&self) -> bool {
        self.next >= self.segments.len()
    }

    /// Whether the next segment is `word` (in any casing).
    fn next_is(&self, word: &str) -> bool {
        self.segments
            .get(self.next)
            .is_some_and(|s| s.eq_ignore_ascii_case(word))
    }

    /// Takes the next segment; `missing` says what belonged there when there is none.
    fn take(&mut self, missing: impl FnOnce() -> String) -> Result<(usize, &str), String> {
        let index = self.next;
        let Some(actual) = self.segments.get(index) else {
            return Err(format!(
                "it ends after segment {index}; {} is missing",
                missing()
            ));
        };
        self.next += 1;
        Ok((index + 1, actual))
    }

    /// Takes the fixed word `word`, in any casing.
    fn fixed(&mut self, word: &str) -> Result<(), String> {
        match self.take(|| format!("\"{word}\""))? {
            (_, actual) if actual.eq_ignore_ascii_case(word) => Ok(()),
            (position, actual) => Err(format!(
                "segment {position} is {actual:?} where \"{word}\" belongs"
            )),
        }
    }

    /// Takes a name (`what` says of what) that can stand in an ID.
    fn name(&mut self, what: &str) -> Result<String, String> {
        let (position, actual) = self.take(|| format!("the {what}"))?;
        match name_problem(actual) {
            Some(problem) => Err(format!(
                "the {what} (segment {position}, {actual:?}) {problem}"
            )),
            None => Ok(actual.to_owned()),
        }
    }

    /// The segments not taken yet.
    fn rest(&self) -> &[String] {
        self.segments.get(self.next..).unwrap_or_default()
    }
}

impl Template {
    fn segments(&self) -> impl Iterator<Item = &Seg> {
        SCOPE.iter().chain(self.rest.iter())
    }

    /// Parses `input` against the template and returns the names, in order.
    fn parse(&self, input: &str) -> Result<Vec<String>, IdError> {
        let fail = |problem: String| IdError {
            kind: self.kind,
            input: input.to_string(),
            problem,
            expected: self.shape,
        };
        let mut path = Cursor::new(input, false).map_err(fail)?;
        let mut names = Vec::new();
        for seg in self.segments() {
            match seg {
                Fixed(word) => path.fixed(word).map_err(fail)?,
                Name(what) => names.push(path.name(what).map_err(fail)?),
            }
        }
        let rest = path.rest();
        if !rest.is_empty() {
            return Err(fail(format!(
                "unexpected segments after the {}: {:?}",
                self.segments()
                    .filter_map(|s| match s {
                        Name(what) => Some(*what),
                        Fixed(_) => None,
                    })
                    .last()
                    .unwrap_or("ID"),
                rest.join("/")
            )));
        }
        Ok(names)
    }
}

/// The shape of a path under a resource provider ([`ProviderPath`]).
pub const PROVIDER_PATH_SHAPE: &str = "/subscriptions/{subscriptionId}[/resourceGroups/{resourceGroupName}]/providers/{namespace}[/{type}/{name}]...[/{action}]";

/// One `{type}/{name}` pair of a [`ProviderPath`], e.g. `backupVaults/{vaultName}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceSegment {
    /// The resource type, as given (compare it case-insensitively).
    pub kind: String,
    /// The resource's name, percent-decoded.
    pub name: String,
}

/// A URL path ARM routes to a resource provider, parsed: a subscription, maybe a resource
/// group, the provider's namespace, then `{type}/{name}` pairs and maybe a last `{action}`.
/// Read with the grammar of the ID types (fixed words in any casing, names that can stand in
/// an ID), after percent-decoding each segment; what a path may name is the caller's check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderPath {
    subscription: String,
    resource_group: Option<String>,
    namespace: String,
    resources: Vec<ResourceSegment>,
    action: Option<String>,
}

impl ProviderPath {
    /// Parses the path of a URL (percent-encoded, as `url::Url::path` gives it).
    pub fn parse_url_path(path: &str) -> Result<Self, IdError> {
        let fail = |problem: String| IdError {
            kind: "ARM provider path",
            input: path.to_string(),
            problem,
            expected: PROVIDER_PATH_SHAPE,
        };
        let mut cursor = Cursor::new(path, true).map_err(fail)?;
        Self::read(&mut cursor).map_err(fail)
    }

    fn read(path: &mut Cursor) -> Result<Self, String> {
        path.fixed("subscriptions")?;
        let subscription = path.name("subscription ID")?;
        let resource_group = if path.next_is("resourceGroups") {
            path.fixed("resourceGroups")?;
            Some(path.name("resource group name")?)
        } else {
            None
        };
        path.fixed("providers")?;
        let namespace = path.name("resource provider namespace")?;
        let mut resources = Vec::new();
        let mut action = None;
        while !path.is_done() {
            let kind = path.name("resource type or action")?;
            if path.is_done() {
                action = Some(kind);
            } else {
                let name = path.name(&format!("name after {kind}"))?;
                resources.push(ResourceSegment { kind, name });
            }
        }
        Ok(Self {
            subscription,
            resource_group,
            namespace,
            resources,
            action,
        })
    }

    /// The subscription ID.
    pub fn subscription(&self) -> &str {
        &self.subscription
    }

    /// The resource group, when the path is in one.
    pub fn resource_group(&self) -> Option<&str> {
        self.resource_group.as_deref()
    }

    /// The resource provider's namespace, as given (e.g. `Microsoft.DataProtection`).
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The `{type}/{name}` pairs after the namespace, in order.
    pub fn resources(&self) -> &[ResourceSegment] {
        &self.resources
    }

    /// The last segment when it has no name after it (e.g. `listKeys`).
    pub fn action(&self) -> Option<&str> {
        self.action.as_deref()
    }
}

/// Implements the traits every ID type shares, through its `template()` and `names()`.
macro_rules! arm_id_traits {
    ($ty:ident, $template:expr) => {
        impl $ty {
            /// The ID's path segments, fixed words in canonical casing, for building URLs.
            pub fn path_segments(&self) -> Vec<&str> {
                let mut names = self.names().into_iter();
                $template
                    .segments()
                    .map(|seg| match seg {
                        Fixed(word) => *word,
                        Name(_) => names.next().unwrap_or_default(),
                    })
                    .collect()
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                for segment in self.path_segments() {
                    write!(f, "/{segment}")?;
                }
                Ok(())
            }
        }

        impl PartialEq for $ty {
            fn eq(&self, other: &Self) -> bool {
                let (a, b) = (self.names(), other.names());
                a.len() == b.len() && a.iter().zip(&b).all(|(x, y)| x.eq_ignore_ascii_case(y))
            }
        }

        impl Eq for $ty {}

        impl Hash for $ty {
            fn hash<H: Hasher>(&self, state: &mut H) {
                for name in self.names() {
                    name.to_ascii_lowercase().hash(state);
                }
            }
        }

        impl FromStr for $ty {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::parse(s)
            }
        }

        impl TryFrom<String> for $ty {
            type Error = IdError;
            fn try_from(s: String) -> Result<Self, IdError> {
                Self::parse(&s)
            }
        }

        impl From<$ty> for String {
            fn from(id: $ty) -> String {
                id.to_string()
            }
        }

        impl serde::Serialize for $ty {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }

        impl<'de> serde::Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = String::deserialize(deserializer)?;
                Self::parse(&text).map_err(serde::de::Error::custom)
            }
        }
    };
}

/// The ID types made of a subscription, a resource group and a name (vaults, accounts).
macro_rules! scoped_id {
    ($(#[$doc:meta])* $ty:ident, $template:expr, $what:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone)]
        pub struct $ty {
            subscription: String,
            resource_group: String,
            name: String,
        }

        impl $ty {
            #[doc = concat!("Parses a ", $what, " ID; fixed segments in any casing.")]
            pub fn parse(input: &str) -> Result<Self, IdError> {
                let names = $template.parse(input)?;
                Ok(Self::from_names(&names))
            }

            fn from_names(names: &[String]) -> Self {
                let name = |i: usize| names.get(i).cloned().unwrap_or_default();
                Self {
                    subscription: name(0),
                    resource_group: name(1),
                    name: name(2),
                }
            }

            fn names(&self) -> Vec<&str> {
                vec![&self.subscription, &self.resource_group, &self.name]
            }

            /// The subscription ID.
            pub fn subscription(&self) -> &str {
                &self.subscription
            }

            #[doc = concat!("The ", $what, "'s resource group.")]
            pub fn resource_group(&self) -> &str {
                &self.resource_group
            }

            #[doc = concat!("The ", $what, "'s name.")]
            pub fn name(&self) -> &str {
                &self.name
            }
        }

        arm_id_traits!($ty, $template);
    };
}

scoped_id!(
    /// A Backup vault (`Microsoft.DataProtection/backupVaults`).
    VaultId,
    VAULT,
    "vault"
);

scoped_id!(
    /// A storage account (`Microsoft.Storage/storageAccounts`).
    StorageAccountId,
    ACCOUNT,
    "storage account"
);

impl VaultId {
    /// Builds a vault ID from its parts (checked as `parse` checks them).
    pub fn new(subscription: &str, resource_group: &str, name: &str) -> Result<Self, IdError> {
        Self::parse(&format!(
            "/subscriptions/{subscription}/resourceGroups/{resource_group}/providers/Microsoft.DataProtection/backupVaults/{name}"
        ))
    }

    /// The ID of the vault's backup policy `name` (taken verbatim).
    pub fn policy(&self, name: &str) -> PolicyId {
        PolicyId {
            vault: self.clone(),
            name: name.to_string(),
        }
    }

    /// The ID of the vault's backup instance `name` (taken verbatim).
    pub fn backup_instance(&self, name: &str) -> BackupInstanceId {
        BackupInstanceId {
            vault: self.clone(),
            name: name.to_string(),
        }
    }
}

/// A backup policy of a Backup vault (`.../backupVaults/{vault}/backupPolicies/{policy}`).
#[derive(Debug, Clone)]
pub struct PolicyId {
    vault: VaultId,
    name: String,
}

/// A backup instance in a Backup vault (`.../backupVaults/{vault}/backupInstances/{name}`).
#[derive(Debug, Clone)]
pub struct BackupInstanceId {
    vault: VaultId,
    name: String,
}

/// The methods of the two kinds of vault children (policies and backup instances).
macro_rules! vault_child {
    ($ty:ident, $template:expr) => {
        impl $ty {
            /// Parses the ID; fixed segments in any casing.
            pub fn parse(input: &str) -> Result<Self, IdError> {
                let names = $template.parse(input)?;
                Ok(Self {
                    vault: VaultId::from_names(&names),
                    name: names.get(3).cloned().unwrap_or_default(),
                })
            }

            fn names(&self) -> Vec<&str> {
                let mut names = self.vault.names();
                names.push(&self.name);
                names
            }

            /// The vault it belongs to.
            pub fn vault(&self) -> &VaultId {
                &self.vault
            }

            /// Its own name (the last segment).
            pub fn name(&self) -> &str {
                &self.name
            }
        }

        arm_id_traits!($ty, $template);
    };
}

vault_child!(PolicyId, POLICY);
vault_child!(BackupInstanceId, INSTANCE);

#[cfg(test)]
mod tests {
    use super::*;

    const VAULT_ID: &str = "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/TestBkpVaultRG/providers/Microsoft.DataProtection/backupVaults/testBkpVault";

    #[test]
    fn builds_children_in_canonical_casing() {
        let vault = VaultId::parse(VAULT_ID).unwrap();
        assert_eq!(
            vault.policy("BlobBackup-Policy").to_string(),
            format!("{VAULT_ID}/backupPolicies/BlobBackup-Policy")
        );
        let instance = vault.backup_instance("bi-1");
        assert_eq!(
            instance.to_string(),
            format!("{VAULT_ID}/backupInstances/bi-1")
        );
        assert_eq!(instance.path_segments().len(), 10);
        assert_eq!(instance.path_segments()[9], "bi-1");
    }
}
