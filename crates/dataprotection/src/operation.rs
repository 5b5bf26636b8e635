//! Long-running operations as data: where to poll, how long to wait, and what a status means.

use std::time::{Duration, SystemTime};

use http::HeaderMap;

use super::error::AzureErrorDetail;
use super::ids::{BackupInstanceId, ProviderPath, ResourceSegment};
use super::models::OperationResource;

/// What a long-running operation does: the one operation-kind type of the client, the
/// emulator and the operator (whose CRD shows it as `status.currentOperation.action`, so the
/// variant names are part of that API and must not change).
#[derive(serde::Serialize, serde::Deserialize, Clone, Copy, Debug, Hash, PartialEq, Eq)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
pub enum OperationAction {
    // POST validateForBackup.
    Validate,
    // PUT of a new backup instance.
    Create,
    // PUT of an existing backup instance.
    Update,
    // DELETE of the backup instance.
    Delete,
    // POST stopProtection.
    StopProtection,
    // POST sync.
    Sync,
    // POST validateRestore (a BlobRestore).
    ValidateRestore,
    // POST restore (a BlobRestore).
    Restore,
}

impl OperationAction {
    /// Every action, in declaration order.
    pub const ALL: [OperationAction; 8] = [
        OperationAction::Validate,
        OperationAction::Create,
        OperationAction::Update,
        OperationAction::Delete,
        OperationAction::StopProtection,
        OperationAction::Sync,
        OperationAction::ValidateRestore,
        OperationAction::Restore,
    ];

    /// The variant's name, as serde writes it (`Validate`, `StopProtection`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Validate => "Validate",
            Self::Create => "Create",
            Self::Update => "Update",
            Self::Delete => "Delete",
            Self::StopProtection => "StopProtection",
            Self::Sync => "Sync",
            Self::ValidateRestore => "ValidateRestore",
            Self::Restore => "Restore",
        }
    }
}

/// The state of a long-running operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OperationStatus {
    /// Still running; `raw` is Azure's status string verbatim (`InProgress`, `Inprogress`,
    /// `Running`, or `Accepted` for a bare 202).
    InProgress {
        /// Azure's status, verbatim.
        raw: String,
    },
    /// Done.
    Succeeded,
    /// Failed, with Azure's error.
    Failed(AzureErrorDetail),
    /// Canceled (Azure spells it `Canceled` or `Cancelled`).
    Canceled,
}

impl OperationStatus {
    /// Maps Azure's status string (compared case-insensitively) and error: `Succeeded`,
    /// `Failed`, `Canceled`/`Cancelled` are terminal; anything else is still in progress.
    pub fn from_azure(raw: &str, error: Option<AzureErrorDetail>) -> Self {
        let status = raw.trim();
        if status.eq_ignore_ascii_case("Succeeded") {
            Self::Succeeded
        } else if status.eq_ignore_ascii_case("Failed") {
            Self::Failed(error.unwrap_or_else(|| AzureErrorDetail {
                code: "OperationFailed".to_string(),
                message: "Azure reported the operation as Failed without an error".to_string(),
                ..AzureErrorDetail::default()
            }))
        } else if status.eq_ignore_ascii_case("Canceled")
            || status.eq_ignore_ascii_case("Cancelled")
        {
            Self::Canceled
        } else {
            Self::InProgress {
                raw: status.to_string(),
            }
        }
    }

    /// From an operation status document; `None` when it has no `status`.
    pub fn from_operation_resource(resource: &OperationResource) -> Option<Self> {
        let raw = resource.status.as_deref()?;
        let error = resource
            .error
            .as_ref()
            .map(AzureErrorDetail::from_error_body);
        Some(Self::from_azure(raw, error))
    }

    /// Whether the operation is over.
    pub fn is_terminal(&self) -> bool {
        !matches!(self, Self::InProgress { .. })
    }

    /// The normalized name: `InProgress`, `Succeeded`, `Failed` or `Canceled`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::InProgress { .. } => "InProgress",
            Self::Succeeded => "Succeeded",
            Self::Failed(_) => "Failed",
            Self::Canceled => "Canceled",
        }
    }
}

/// Where to follow a long-running operation and how long to wait before the first poll.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperationHandle {
    /// The URL to poll: `Azure-AsyncOperation` if Azure sent one, else `Location`. Opaque:
    /// used exactly as given.
    pub poll_url: String,
    /// Azure's `Retry-After`.
    pub retry_after: Option<Duration>,
}

impl OperationHandle {
    /// The handle an initial 201/202 response describes; `None` when it names no poll URL.
    pub fn from_headers(headers: &HeaderMap, now: SystemTime) -> Option<Self> {
        let poll_url = header_value(headers, "azure-asyncoperation")
            .or_else(|| header_value(headers, "location"))?;
        Some(Self {
            poll_url: poll_url.to_string(),
            retry_after: retry_after_from_headers(headers, now),
        })
    }
}

/// The collections operations live in, as Azure spells them in poll URLs.
const OPERATION_KINDS: [&str; 4] = [
    "operationStatus",
    "operationStatuses",
    "operationResults",
    "operations",
];

/// Why `path` is not the path of an operation of `instance` (its vault's subscription,
/// resource group, vault and name); `None` when it is. A status the operator does not own
/// could otherwise make it GET any ARM path with its token.
///
/// Accepted, as Azure and its API description produce them (segment names and names compared
/// case-insensitively, as ARM does; `{kind}` is `operationStatus`, `operationStatuses`,
/// `operationResults` or `operations`):
/// - `/subscriptions/{sub}/providers/Microsoft.DataProtection/locations/{location}/{kind}/{id}`
/// - `/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.DataProtection/{kind}/{id}`
/// - `.../resourceGroups/{rg}/providers/Microsoft.DataProtection/backupVaults/{vault}/{kind}/{id}`
/// - `.../backupVaults/{vault}/backupInstances/{instance}/{kind}/{id}`
/// - `.../resourceGroups/{rg}/providers/Microsoft.DataProtection/backupInstances/{instance}/{kind}/{id}`
///   (Azure's examples of DELETE and stopProtection)
/// - `.../resourceGroups/{rg}/providers/Microsoft.Resources/deployments/{name}/operationStatuses/{id}`
///   (Azure's examples of a blob PUT: the configure-protection deployment in the vault's group)
pub fn operation_path_problem(path: &str, instance: &BackupInstanceId) -> Option<String> {
    let vault = instance.vault();
    let checked = ProviderPath::parse_url_path(path)
        .map_err(|error| error.problem)
        .and_then(|path| operation_of(&path, instance));
    checked.err().map(|problem| {
        format!(
            "{problem}; only operations of vault {} in subscription {} are polled (Microsoft.DataProtection operationStatus, operationResults or operations URLs)",
            vault.name(),
            vault.subscription()
        )
    })
}

const DATA_PROTECTION: &str = "Microsoft.DataProtection";

/// Whether `path` (parsed by `ids`, which knows ARM's grammar) is one of the shapes of
/// [`operation_path_problem`] for `instance`.
fn operation_of(path: &ProviderPath, instance: &BackupInstanceId) -> Result<(), String> {
    let vault = instance.vault();
    named("subscriptions", path.subscription(), vault.subscription())?;
    let mut rest = Resources {
        resources: path.resources(),
        action: path.action(),
    };
    match path.resource_group() {
        None => {
            named("providers", path.namespace(), DATA_PROTECTION)?;
            rest.take("locations", None)?;
        }
        Some(group) => {
            named("resourceGroups", group, vault.resource_group())?;
            if same(path.namespace(), "Microsoft.Resources") {
                rest.take("deployments", None)?;
                return rest.operation(&["operationStatuses"]);
            }
            named("providers", path.namespace(), DATA_PROTECTION)?;
            if rest.next_is("backupVaults") {
                rest.take("backupVaults", Some(vault.name()))?;
            }
            if rest.next_is("backupInstances") {
                rest.take("backupInstances", Some(instance.name()))?;
            }
        }
    }
    rest.operation(&OPERATION_KINDS)
}

fn same(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b)
}

/// That the segment after `segment` names `wanted` (in any casing).
fn named(segment: &str, named: &str, wanted: &str) -> Result<(), String> {
    if same(named, wanted) {
        Ok(())
    } else {
        Err(format!("it names {segment} {named:?} instead of {wanted}"))
    }
}

/// The `{type}/{name}` pairs of a path not yet checked, and its action.
struct Resources<'p> {
    resources: &'p [ResourceSegment],
    action: Option<&'p str>,
}

impl Resources<'_> {
    fn next_is(&self, kind: &str) -> bool {
        self.resources.first().is_some_and(|r| same(&r.kind, kind))
    }

    /// Takes `{kind}/{name}`: `kind` in any casing, then `name` (in any casing, or any name
    /// when `None`).
    fn take(&mut self, kind: &str, name: Option<&str>) -> Result<(), String> {
        match self.resources {
            [first, tail @ ..] if same(&first.kind, kind) => {
                if let Some(wanted) = name {
                    named(kind, &first.name, wanted)?;
                }
                self.resources = tail;
                Ok(())
            }
            _ => Err(format!("it has no {kind}/{{name}} where one belongs")),
        }
    }

    /// The rest is `{kind}/{id}`, `kind` one of `kinds`.
    fn operation(&self, kinds: &[&str]) -> Result<(), String> {
        match (self.resources, self.action) {
            ([last], None) if kinds.iter().any(|k| same(&last.kind, k)) => Ok(()),
            (resources, action) => {
                let rest: Vec<&str> = resources
                    .iter()
                    .flat_map(|r| [r.kind.as_str(), r.name.as_str()])
                    .chain(action)
                    .collect();
                Err(format!(
                    "it ends in {:?}, not in {{{}}}/{{id}}",
                    rest.join("/"),
                    kinds.join("|")
                ))
            }
        }
    }
}

/// The answer to one poll.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Poll {
    /// The operation's state.
    pub status: OperationStatus,
    /// Azure's `Retry-After` on this answer.
    pub retry_after: Option<Duration>,
    /// The job the operation created (`properties.jobId` of a status document, `jobId` of an
    /// `operationResults` answer), when the answer names one: a restore's job.
    pub job_id: Option<String>,
}

/// A header's value, trimmed; `None` when absent, empty or not text.
pub(crate) fn header_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

/// Parses `Retry-After`: a number of seconds (digits only), or an HTTP date (a date in the
/// past means now). Any value is read without panicking; how long to really wait is the
/// caller's decision (the controller cuts it to `--retry-after-max`).
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Some(seconds) = digits(value) {
        return Some(Duration::from_secs(seconds));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(when.duration_since(now).unwrap_or(Duration::ZERO))
}

/// A number written with digits only (`u64::from_str` also takes a leading `+`); `None` past
/// `u64::MAX`.
fn digits(value: &str) -> Option<u64> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value.parse().ok()
}

/// The wait Azure asks for: `retry-after-ms` / `x-ms-retry-after-ms` (milliseconds, which
/// Azure SDKs honour first), else `Retry-After`.
pub fn retry_after_from_headers(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    ["retry-after-ms", "x-ms-retry-after-ms"]
        .into_iter()
        .find_map(|name| digits(header_value(headers, name)?))
        .map(Duration::from_millis)
        .or_else(|| parse_retry_after(header_value(headers, "retry-after")?, now))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn action_names_are_the_serde_names() {
        for action in OperationAction::ALL {
            assert_eq!(
                serde_json::to_value(action).unwrap(),
                serde_json::Value::from(action.as_str())
            );
        }
    }

    #[test]
    fn statuses_are_open_and_case_insensitive() {
        for raw in [
            "Inprogress",
            "InProgress",
            "Running",
            "Accepted",
            "Whatever",
            "",
        ] {
            assert!(matches!(
                OperationStatus::from_azure(raw, None),
                OperationStatus::InProgress { .. }
            ));
        }
        assert_eq!(
            OperationStatus::from_azure("SUCCEEDED", None),
            OperationStatus::Succeeded
        );
        assert_eq!(
            OperationStatus::from_azure("cancelled", None),
            OperationStatus::Canceled
        );
        assert_eq!(
            OperationStatus::from_azure("Inprogress", None),
            OperationStatus::InProgress {
                raw: "Inprogress".into()
            }
        );
        match OperationStatus::from_azure("failed", None) {
            OperationStatus::Failed(detail) => assert_eq!(detail.code, "OperationFailed"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn retry_after_seconds_dates_and_junk() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_625_662_065); // 2021-07-07 12:47:45
        assert_eq!(parse_retry_after("10", now), Some(Duration::from_secs(10)));
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("Wed, 07 Jul 2021 12:48:15 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Wed, 07 Jul 2021 12:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        for junk in ["", "-5", "1.5", "soon", "99999999999999999999999"] {
            assert_eq!(parse_retry_after(junk, now), None, "{junk:?}");
        }
    }

    #[test]
    fn absurd_retry_after_values_are_read_without_panicking() {
        // What the controller does with them (cut to --retry-after-max) is its business; here
        // no value may panic.
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_625_662_065);
        assert_eq!(
            parse_retry_after(&u64::MAX.to_string(), now),
            Some(Duration::from_secs(u64::MAX))
        );
        let far = parse_retry_after("Fri, 31 Dec 9999 23:59:59 GMT", now).unwrap();
        assert!(far > Duration::from_secs(7_000 * 365 * 86_400), "{far:?}");
        for junk in [
            "-1",
            "+5",
            "0x10",
            "Sat, 31 Dec 99999 23:59:59 GMT",
            "\u{1F600}",
        ] {
            assert_eq!(parse_retry_after(junk, now), None, "{junk:?}");
        }
        let mut headers = HeaderMap::new();
        headers.insert("retry-after-ms", u64::MAX.to_string().parse().unwrap());
        assert_eq!(
            retry_after_from_headers(&headers, now),
            Some(Duration::from_millis(u64::MAX))
        );
        headers.insert("retry-after-ms", "-3".parse().unwrap());
        headers.insert("retry-after", "garbage".parse().unwrap());
        assert_eq!(retry_after_from_headers(&headers, now), None);
    }

    #[test]
    fn async_operation_header_wins_over_location() {
        let mut headers = HeaderMap::new();
        headers.insert("location", "https://h/location".parse().unwrap());
        headers.insert("retry-after", "7".parse().unwrap());
        let handle = OperationHandle::from_headers(&headers, SystemTime::now()).unwrap();
        assert_eq!(handle.poll_url, "https://h/location");
        assert_eq!(handle.retry_after, Some(Duration::from_secs(7)));
        headers.insert("azure-asyncoperation", "https://h/status".parse().unwrap());
        headers.insert("retry-after-ms", "1500".parse().unwrap());
        let handle = OperationHandle::from_headers(&headers, SystemTime::now()).unwrap();
        assert_eq!(handle.poll_url, "https://h/status");
        assert_eq!(handle.retry_after, Some(Duration::from_millis(1500)));
        assert!(OperationHandle::from_headers(&HeaderMap::new(), SystemTime::now()).is_none());
    }

    #[test]
    fn poll_paths_must_be_operations_of_the_vault() {
        let instance: BackupInstanceId = "/subscriptions/f0c630e0-2995-4853-b056-0b3c09cb673f/resourceGroups/TestBkpVaultRG/providers/Microsoft.DataProtection/backupVaults/testBkpVault/backupInstances/msblob-1".parse().unwrap();
        let sub = "/subscriptions/F0C630E0-2995-4853-B056-0B3C09CB673F";
        let rg = format!("{sub}/resourcegroups/testbkpvaultrg");
        let dp = format!("{rg}/providers/Microsoft.DataProtection");
        for ok in [
            format!(
                "{sub}/providers/Microsoft.DataProtection/locations/westus/operationStatus/ZmMz=="
            ),
            format!("{sub}/PROVIDERS/microsoft.dataprotection/LOCATIONS/westus/operationresults/x"),
            format!("{dp}/operationResults/op"),
            format!("{dp}/backupvaults/TESTBKPVAULT/operationStatus/ZTA4YjQ0==2026-06-01"),
            format!("{dp}/backupVaults/testBkpVault/backupInstances/MSBLOB-1/operationResults/op"),
            format!("{dp}/backupVaults/testBkpVault/backupInstances/msblob-1/operationStatuses/08"),
            format!("{dp}/backupInstances/msblob-1/operationResults/op"),
            // Read as ARM reads it: percent-decoded.
            format!("{dp}/backupVaults/test%42kpVault/operationStatus/ZmMz%3D%3D"),
            format!("{dp}/backupVaults/testBkpVault/operations/op"),
            format!(
                "{rg}/providers/Microsoft.Resources/deployments/ConfigureProtection-2097/operationStatuses/0858"
            ),
        ] {
            assert_eq!(operation_path_problem(&ok, &instance), None, "{ok}");
        }
        for (refused, says) in [
            (
                "/subscriptions/00000000-0000-0000-0000-000000000000/providers/Microsoft.DataProtection/locations/westus/operationStatus/x".to_owned(),
                "names subscriptions \"00000000-0000-0000-0000-000000000000\" instead of f0c630e0",
            ),
            (format!("{sub}/resourceGroups/other/providers/Microsoft.DataProtection/operationResults/x"), "resourceGroups \"other\""),
            (format!("{dp}/backupVaults/otherVault/operationStatus/x"), "backupVaults \"otherVault\""),
            (format!("{dp}/backupVaults/testBkpVault/backupInstances/other/operationResults/x"), "backupInstances \"other\""),
            (format!("{rg}/providers/Microsoft.KeyVault/vaults/kv/secrets/x"), "providers \"Microsoft.KeyVault\""),
            (format!("{sub}/resourceGroups/rg2/providers/Microsoft.Storage/storageAccounts/sa/listKeys"), "resourceGroups \"rg2\""),
            (format!("{dp}/backupVaults/testBkpVault/backupInstances/msblob-1"), "ends in \"\""),
            (format!("{dp}/backupVaults/testBkpVault/backupInstances/msblob-1/operationResults/x/more"), "ends in \"operationResults/x/more\""),
            (format!("{dp}/backupVaults/testBkpVault/operationStatus/"), "ends in \"operationStatus\""),
            (format!("{dp}/backupVaults/testBkpVault//operationStatus/x"), "the resource type or action (segment 9, \"\") is empty"),
            (format!("{dp}/backupVaults/testBkpVault"), "ends in \"\""),
            (format!("{sub}/providers/Microsoft.DataProtection/operationStatus/x"), "no locations"),
            (format!("{rg}/providers/Microsoft.Resources/deployments/d"), "ends in \"\""),
            (format!("{rg}/providers/Microsoft.Resources/deployments/d/operationStatus/x"), "not in {operationStatuses}"),
            (format!("{dp}/backupVaults/testBkpVault/operationStatus/..%2F..%2Fsecrets"), "encoded slash"),
            ("/providers/Microsoft.DataProtection/operations".to_owned(), "segment 1 is \"providers\" where \"subscriptions\" belongs"),
            (String::new(), "does not start with \"/subscriptions/\""),
            (format!("{rg}/providers"), "the resource provider namespace is missing"),
            (format!("{dp}/backupVaults/testBkpVault/operationStatus/%FF"), "segment 10 (\"%FF\") is not UTF-8"),
            (format!("{dp}/backupVaults/testBkpVault/operationStatus/a%3Fb"), "(segment 10, \"a?b\") contains one of"),
        ] {
            let problem = operation_path_problem(&refused, &instance)
                .unwrap_or_else(|| panic!("{refused} was accepted"));
            assert!(problem.contains(says), "{refused}: {problem}");
            assert!(
                problem.contains("only operations of vault testBkpVault in subscription f0c630e0-2995-4853-b056-0b3c09cb673f"),
                "{problem}"
            );
        }
    }
}
