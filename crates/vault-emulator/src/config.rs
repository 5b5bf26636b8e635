//! The emulator's configuration: the Azure world it pretends to be (vaults, policies, storage
//! accounts, role assignments), the tokens it accepts, and its behaviour knobs.

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::EmulatorError;
use super::keys::{KeyedId, parse_storage_account_id, parse_vault_id};

/// The article's subscription, vault and storage account: the emulator's default world.
pub const DEFAULT_SUBSCRIPTION: &str = "00000000-0000-0000-0000-000000000000";
/// The default vault (article: `testBkpVault` in `TestBkpVaultRG`, West US).
pub const DEFAULT_VAULT_ID: &str = "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/TestBkpVaultRG/providers/Microsoft.DataProtection/backupVaults/testBkpVault";
/// The default storage account (article: `msblobbackup` in `RG-BlobBackup`, West US).
pub const DEFAULT_STORAGE_ACCOUNT_ID: &str = "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/RG-BlobBackup/providers/Microsoft.Storage/storageAccounts/msblobbackup";
/// The bearer token the emulator accepts unless configured otherwise.
pub const DEFAULT_TOKEN: &str = "emulator-token";
/// The vault identity's object id, as in the article's permission error.
pub const DEFAULT_PRINCIPAL_ID: &str = "a8b24f84-f43c-45b3-aa54-e3f6d54d31a6";

/// Everything the emulator starts from. `Default` is the article's world; a YAML file
/// (`EmulatorConfig::from_yaml_file`) may replace any part of it (camelCase keys).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct EmulatorConfig {
    /// Bearer tokens that authenticate (`Authorization: Bearer <token>`).
    pub tokens: Vec<String>,
    /// Tokens answered with 401 `ExpiredAuthenticationToken`.
    pub expired_tokens: Vec<String>,
    /// Base URL put into `Azure-AsyncOperation`/`Location`/`nextLink` (e.g. when reached through
    /// a port-forward). Unset: `http://<Host header>` of each request.
    pub public_url: Option<String>,
    /// Behaviour knobs (also changeable at run time through the admin API). The file and the
    /// admin API keep their key `settings`; the Rust name says what it holds (the operator has
    /// its own `Settings`).
    #[serde(rename = "settings")]
    pub behavior: ServiceBehavior,
    /// Backup vaults with their policies.
    pub vaults: Vec<VaultConfig>,
    /// Storage accounts that can be protected.
    pub storage_accounts: Vec<StorageAccountConfig>,
}

/// A Backup vault.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VaultConfig {
    /// ARM id: `/subscriptions/{s}/resourceGroups/{rg}/providers/Microsoft.DataProtection/backupVaults/{name}`.
    pub id: String,
    /// Azure region, e.g. `westus`.
    pub location: String,
    /// Object id of the vault's system-assigned identity (named in permission errors).
    #[serde(default)]
    pub principal_id: Option<String>,
    /// Backup policies of this vault.
    #[serde(default)]
    pub policies: Vec<PolicyConfig>,
}

/// A backup policy of a vault.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicyConfig {
    /// Policy name (the last segment of its id).
    pub name: String,
    /// Whether it is an operational (no containers) or vaulted (containers required) policy.
    pub tier: PolicyTier,
}

/// Blob backup tier of a policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum PolicyTier {
    /// Continuous, local backup of the whole account: instances carry no container list.
    Operational,
    /// Scheduled copies to the vault: instances must list containers.
    Vaulted,
}

/// A storage account that can be protected.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StorageAccountConfig {
    /// ARM id: `/subscriptions/{s}/resourceGroups/{rg}/providers/Microsoft.Storage/storageAccounts/{name}`.
    pub id: String,
    /// Azure region; must match the vault's for protection to work.
    pub location: String,
    /// Vault ids whose identity holds "Storage Account Backup Contributor" on this account.
    /// Absent: every configured vault. `[]`: none (validation fails with missing permissions).
    #[serde(default)]
    pub role_assignments: Option<Vec<String>>,
}

/// Run-time behaviour knobs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ServiceBehavior {
    /// How long each long-running operation stays in progress (e.g. `1s`, `50ms`, `0s`).
    #[serde(with = "duration_text")]
    pub latency: Duration,
    /// `Retry-After` seconds advertised on 201/202 answers; unset: the latency rounded up.
    pub retry_after: Option<u64>,
    /// Spelling of the running operation status.
    pub in_progress_status: InProgressSpelling,
    /// Backup instances per page of a list answer (further pages through `nextLink`).
    pub page_size: usize,
    /// Write throttling (PUT/POST/DELETE); `null`: unlimited (answers then report 1199
    /// remaining writes, as the article's transcripts do).
    pub throttle: Option<ThrottleSettings>,
    /// Injected faults.
    pub faults: FaultSettings,
}

/// The `status` value of a running operation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum InProgressSpelling {
    /// `Inprogress`, as the article's transcript shows Data Protection answering.
    #[default]
    Inprogress,
    /// `InProgress`, as other ARM providers spell it.
    InProgress,
}

impl InProgressSpelling {
    /// The wire value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Inprogress => "Inprogress",
            Self::InProgress => "InProgress",
        }
    }
}

/// A token bucket of writes, as ARM throttles them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ThrottleSettings {
    /// Bucket size: writes allowed in a burst.
    pub budget: u32,
    /// Writes added back per second.
    pub refill_per_second: f64,
}

/// Faults injected into a share of the Data Protection requests (never the admin API).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct FaultSettings {
    /// Seed of the random generator that picks the faulty requests (same seed, same picks).
    pub seed: u64,
    /// Share (0..=1) of requests answered 500 `InternalServerError`.
    pub internal_error: f64,
    /// Share of requests answered 503 `ServiceUnavailable`.
    pub unavailable: f64,
    /// Share of requests whose connection is closed without an answer.
    pub drop_connection: f64,
    /// Share of requests answered 200 with a truncated JSON document instead of being served.
    pub malformed_body: f64,
    /// Share of requests answered 200 with `Content-Type: application/json` and no body
    /// instead of being served.
    pub empty_body: f64,
    /// Share of requests answered only after `slowDelay`.
    pub slow: f64,
    /// Extra delay of a slow answer.
    #[serde(with = "duration_text")]
    pub slow_delay: Duration,
    /// `Retry-After` seconds on injected 500/503 answers.
    pub retry_after: u64,
    /// Operation ids (e.g. `BackupInstances_CreateOrUpdate`) the faults apply to; empty: all.
    pub operations: Vec<String>,
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        Self {
            tokens: vec![DEFAULT_TOKEN.to_owned()],
            expired_tokens: Vec::new(),
            public_url: None,
            behavior: ServiceBehavior::default(),
            vaults: vec![VaultConfig {
                id: DEFAULT_VAULT_ID.to_owned(),
                location: "westus".to_owned(),
                principal_id: Some(DEFAULT_PRINCIPAL_ID.to_owned()),
                policies: vec![
                    PolicyConfig {
                        name: "BlobBackup-Policy".to_owned(),
                        tier: PolicyTier::Operational,
                    },
                    PolicyConfig {
                        name: "BlobVaulted-Policy".to_owned(),
                        tier: PolicyTier::Vaulted,
                    },
                ],
            }],
            storage_accounts: vec![StorageAccountConfig {
                id: DEFAULT_STORAGE_ACCOUNT_ID.to_owned(),
                location: "westus".to_owned(),
                role_assignments: None,
            }],
        }
    }
}

impl Default for ServiceBehavior {
    fn default() -> Self {
        Self {
            latency: Duration::from_secs(1),
            retry_after: None,
            in_progress_status: InProgressSpelling::default(),
            page_size: 100,
            // ARM's write bucket since 2024: 200 tokens, 10 per second.
            throttle: Some(ThrottleSettings {
                budget: 200,
                refill_per_second: 10.0,
            }),
            faults: FaultSettings::default(),
        }
    }
}

impl Default for FaultSettings {
    fn default() -> Self {
        Self {
            seed: 0,
            internal_error: 0.0,
            unavailable: 0.0,
            drop_connection: 0.0,
            malformed_body: 0.0,
            empty_body: 0.0,
            slow: 0.0,
            slow_delay: Duration::from_secs(2),
            retry_after: 1,
            operations: Vec::new(),
        }
    }
}

impl EmulatorConfig {
    /// Reads and checks a YAML config file. Errors name the file and the line/field at fault.
    pub fn from_yaml_file(path: impl AsRef<Path>) -> Result<Self, EmulatorError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| EmulatorError::ConfigRead {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse_yaml(&text, &path.display().to_string())
    }

    /// Parses and checks YAML text (`origin` names it in errors).
    pub fn from_yaml_str(text: &str) -> Result<Self, EmulatorError> {
        Self::parse_yaml(text, "<config>")
    }

    fn parse_yaml(text: &str, origin: &str) -> Result<Self, EmulatorError> {
        // An empty file means "all defaults", which serde would reject as a missing map.
        if text.trim().is_empty() {
            return Ok(Self::default());
        }
        let config: Self =
            serde_saphyr::from_str(text).map_err(|e| EmulatorError::ConfigParse {
                origin: origin.to_owned(),
                message: e.to_string(),
            })?;
        config.validate().map_err(|e| match e {
            EmulatorError::ConfigInvalid { field, message, .. } => EmulatorError::ConfigInvalid {
                origin: origin.to_owned(),
                field,
                message,
            },
            other => other,
        })?;
        Ok(config)
    }

    /// Checks ids, names, locations and knob ranges.
    pub fn validate(&self) -> Result<(), EmulatorError> {
        let invalid = |field: String, message: String| EmulatorError::ConfigInvalid {
            origin: "<config>".to_owned(),
            field,
            message,
        };
        if self.tokens.iter().all(|t| t.trim().is_empty()) {
            return Err(invalid(
                "tokens".into(),
                "at least one non-empty token is needed".into(),
            ));
        }
        if let Some(url) = &self.public_url {
            let ok = url::Url::parse(url)
                .map(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
                .unwrap_or(false);
            if !ok {
                return Err(invalid(
                    "publicUrl".into(),
                    format!("'{url}' is not an absolute http(s) URL"),
                ));
            }
        }
        self.behavior
            .validate()
            .map_err(|message| invalid("settings".into(), message))?;
        let mut vault_keys = Vec::new();
        for (i, vault) in self.vaults.iter().enumerate() {
            let id =
                parse_vault_id(&vault.id).map_err(|m| invalid(format!("vaults[{i}].id"), m))?;
            if vault_keys.contains(&id.key) {
                return Err(invalid(
                    format!("vaults[{i}].id"),
                    format!("vault '{}' is listed twice", vault.id),
                ));
            }
            vault_keys.push(id.key);
            check_location(&vault.location)
                .map_err(|m| invalid(format!("vaults[{i}].location"), m))?;
            let mut names: Vec<String> = Vec::new();
            for (j, policy) in vault.policies.iter().enumerate() {
                let lower = policy.name.to_ascii_lowercase();
                if policy.name.is_empty() || policy.name.contains('/') {
                    return Err(invalid(
                        format!("vaults[{i}].policies[{j}].name"),
                        format!("'{}' is not a policy name", policy.name),
                    ));
                }
                if names.contains(&lower) {
                    return Err(invalid(
                        format!("vaults[{i}].policies[{j}].name"),
                        format!("policy '{}' is listed twice", policy.name),
                    ));
                }
                names.push(lower);
            }
        }
        for (i, account) in self.storage_accounts.iter().enumerate() {
            check_storage_account(account, &vault_keys)
                .map_err(|(field, m)| invalid(format!("storageAccounts[{i}].{field}"), m))?;
        }
        Ok(())
    }
}

/// Checks one storage account entry; the error names the field within the entry.
pub(crate) fn check_storage_account(
    account: &StorageAccountConfig,
    vault_keys: &[String],
) -> Result<KeyedId, (&'static str, String)> {
    let id = parse_storage_account_id(&account.id).map_err(|m| ("id", m))?;
    check_location(&account.location).map_err(|m| ("location", m))?;
    for vault in account.role_assignments.iter().flatten() {
        let key = parse_vault_id(vault)
            .map_err(|m| ("roleAssignments", m))?
            .key;
        if !vault_keys.contains(&key) {
            return Err((
                "roleAssignments",
                format!("vault '{vault}' is not one of the configured vaults"),
            ));
        }
    }
    Ok(id)
}

fn check_location(location: &str) -> Result<(), String> {
    if location.trim().is_empty() {
        Err("a location (e.g. westus) is required".into())
    } else {
        Ok(())
    }
}

impl ServiceBehavior {
    /// Checks knob ranges; the error says which knob.
    pub fn validate(&self) -> Result<(), String> {
        if self.page_size == 0 {
            return Err("pageSize must be at least 1".into());
        }
        if let Some(t) = &self.throttle {
            if t.budget == 0 {
                return Err("throttle.budget must be at least 1".into());
            }
            if !(t.refill_per_second.is_finite() && t.refill_per_second >= 0.0) {
                return Err("throttle.refillPerSecond must be a number >= 0".into());
            }
        }
        self.faults.validate()
    }

    /// `Retry-After` seconds for answers that start an operation.
    pub fn operation_retry_after(&self) -> u64 {
        self.retry_after
            .unwrap_or_else(|| self.latency.as_secs() + u64::from(self.latency.subsec_nanos() > 0))
    }
}

impl FaultSettings {
    /// Checks that every share is within 0..=1 and that they add up to at most 1.
    pub fn validate(&self) -> Result<(), String> {
        let shares = self.named_shares();
        for (name, share) in shares {
            if !(0.0..=1.0).contains(&share) {
                return Err(format!(
                    "{name} must be a share between 0 and 1, got {share}"
                ));
            }
        }
        let sum: f64 = shares.iter().map(|(_, s)| s).sum();
        if sum > 1.0 + 1e-9 {
            return Err(format!("fault shares add up to {sum}, more than 1"));
        }
        Ok(())
    }

    /// Whether any fault can fire.
    pub fn any(&self) -> bool {
        self.named_shares().iter().map(|(_, s)| s).sum::<f64>() > 0.0
    }

    /// Every share with its field's name in the config, in the order they are rolled.
    fn named_shares(&self) -> [(&'static str, f64); 6] {
        [
            ("faults.internalError", self.internal_error),
            ("faults.unavailable", self.unavailable),
            ("faults.dropConnection", self.drop_connection),
            ("faults.malformedBody", self.malformed_body),
            ("faults.emptyBody", self.empty_body),
            ("faults.slow", self.slow),
        ]
    }
}

/// Durations as humantime text (`1s`, `250ms`) or as a number of milliseconds.
pub(crate) mod duration_text {
    use std::fmt;
    use std::time::Duration;

    use serde::de::{self, Visitor};
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Duration;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration such as \"1s\" or \"250ms\", or milliseconds")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
                humantime::parse_duration(v.trim())
                    .map_err(|e| E::custom(format!("bad duration '{v}': {e}")))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
                Ok(Duration::from_millis(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
                u64::try_from(v)
                    .map(Duration::from_millis)
                    .map_err(|_| E::custom("a duration cannot be negative"))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_is_valid_and_round_trips_through_yaml() {
        let config = EmulatorConfig::default();
        config.validate().unwrap();
        let text = serde_saphyr::to_string(&config).unwrap();
        assert_eq!(EmulatorConfig::from_yaml_str(&text).unwrap(), config);
    }

    #[test]
    fn partial_yaml_keeps_other_defaults() {
        let config =
            EmulatorConfig::from_yaml_str("settings:\n  latency: 50ms\n  throttle: null\n")
                .unwrap();
        assert_eq!(config.behavior.latency, Duration::from_millis(50));
        assert_eq!(config.behavior.throttle, None);
        assert_eq!(config.vaults, EmulatorConfig::default().vaults);
    }

    #[test]
    fn unknown_field_is_named_with_its_line() {
        let err = EmulatorConfig::from_yaml_str("settings:\n  latency: 1s\n  lateny: 2s\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("lateny"), "{err}");
        assert!(err.contains('3'), "line number missing: {err}");
    }

    #[test]
    fn semantic_errors_name_the_field() {
        let err = EmulatorConfig::from_yaml_str(
            "storageAccounts:\n  - id: /subscriptions/x/resourceGroups/r/providers/Microsoft.Storage/storageAccounts/a\n    location: ''\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("storageAccounts[0].location"), "{err}");
        let err = EmulatorConfig::from_yaml_str("settings:\n  faults:\n    slow: 1.5\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("faults.slow"), "{err}");
    }

    #[test]
    fn retry_after_defaults_to_latency_rounded_up() {
        let mut s = ServiceBehavior {
            latency: Duration::from_millis(1500),
            ..ServiceBehavior::default()
        };
        assert_eq!(s.operation_retry_after(), 2);
        s.latency = Duration::ZERO;
        assert_eq!(s.operation_retry_after(), 0);
        s.retry_after = Some(10);
        assert_eq!(s.operation_retry_after(), 10);
    }
}
