//! The calls the operator makes to `Microsoft.DataProtection`: validate, create or update,
//! get, list, delete, stop protection, sync, and polling of long-running operations.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use azure_core::credentials::TokenCredential;
use http::{HeaderMap, Method};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::{debug, warn};
use url::{Host, Url};
use uuid::Uuid;

use super::error::{ArmError, AzureErrorDetail};
use super::ids::{BackupInstanceId, VaultId};
use super::models::{
    BackupInstance, BackupInstanceResource, BackupInstanceResourceList, CloudError,
    OperationResource, PROPERTY_NAMES, RecoveryPointResource, SyncBackupInstanceRequest,
    ValidateForBackupRequest, read_json,
};
use super::operation::{
    OperationHandle, OperationStatus, Poll, header_value, operation_path_problem,
    retry_after_from_headers,
};
use super::transport::{Oversize, redirect_host};

mod restore;
use super::{RequestObserver, operation_ids as ops};

/// The default API version: the newest stable `Microsoft.DataProtection` version.
pub const DEFAULT_API_VERSION: &str = "2026-06-01";
/// The default ARM endpoint (Azure public cloud).
pub const DEFAULT_ENDPOINT: &str = "https://management.azure.com";
/// The `User-Agent` of every request.
pub const USER_AGENT: &str = concat!("blob-backup-operator/", env!("CARGO_PKG_VERSION"));

/// The oldest API version with the backup-instance actions `stopProtection` and `sync`
/// (2021-01-01 and 2021-07-01 have neither; both appear in the 2022-01-01 examples).
const FIRST_VERSION_WITH_INSTANCE_ACTIONS: &str = "2022-01-01";
/// The oldest API version with `tags` on backup instances (2021-01-01 has none; 2022-05-01
/// has them, as every version after it).
const FIRST_VERSION_WITH_TAGS: &str = "2022-05-01";

/// Whether `api_version` has `tags` on backup instances: older ones neither take nor return
/// them.
pub fn api_version_has_tags(api_version: &str) -> bool {
    api_version.get(..10).unwrap_or_default() >= FIRST_VERSION_WITH_TAGS
}

/// A guard against a `nextLink` loop.
const MAX_LIST_PAGES: usize = 1000;

/// Where ARM is and which API version to speak.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArmConfig {
    /// The ARM endpoint, e.g. `https://management.azure.com`. Plain `http` is accepted only
    /// for loopback hosts (127.0.0.0/8, ::1, localhost), i.e. the local emulator.
    pub endpoint: Url,
    /// The `api-version` of every call, e.g. `2026-06-01` or `2021-01-01`.
    pub api_version: String,
}

impl ArmConfig {
    /// A configuration for `endpoint` and `api_version` (checked by [`ArmConfig::validate`]).
    pub fn new(endpoint: Url, api_version: impl Into<String>) -> Self {
        Self {
            endpoint,
            api_version: api_version.into(),
        }
    }

    /// Checks the endpoint (https, or http to a loopback host; no credentials, query or
    /// fragment) and the API version (`YYYY-MM-DD`, optionally with a suffix like `-preview`).
    pub fn validate(&self) -> Result<(), ArmError> {
        let config = |message: String| Err(ArmError::Config { message });
        let endpoint = &self.endpoint;
        let Some(host) = endpoint.host() else {
            return config(format!("the ARM endpoint {endpoint} has no host"));
        };
        match endpoint.scheme() {
            "https" => {}
            "http" if is_loopback(&host) => {}
            "http" => {
                return config(format!(
                    "the ARM endpoint {endpoint} uses plain http, which is allowed only for loopback hosts (127.0.0.0/8, ::1, localhost); use https"
                ));
            }
            other => {
                return config(format!(
                    "the ARM endpoint {endpoint} has scheme {other:?}; use https"
                ));
            }
        }
        if !endpoint.username().is_empty() || endpoint.password().is_some() {
            return config("the ARM endpoint must not contain credentials".to_string());
        }
        if endpoint.query().is_some() || endpoint.fragment().is_some() {
            return config(format!(
                "the ARM endpoint {endpoint} must not have a query or fragment"
            ));
        }
        if !is_api_version(&self.api_version) {
            return config(format!(
                "api-version {:?} is not of the form YYYY-MM-DD (optionally with a suffix such as -preview), e.g. {DEFAULT_API_VERSION}",
                self.api_version
            ));
        }
        Ok(())
    }

    /// The token scope for this endpoint: `<endpoint>/.default`.
    pub fn token_scope(&self) -> String {
        format!("{}/.default", self.endpoint.as_str().trim_end_matches('/'))
    }
}

fn is_loopback(host: &Host<&str>) -> bool {
    match host {
        Host::Domain(name) => name.eq_ignore_ascii_case("localhost"),
        Host::Ipv4(ip) => IpAddr::V4(*ip).is_loopback(),
        Host::Ipv6(ip) => IpAddr::V6(*ip).is_loopback(),
    }
}

fn is_api_version(version: &str) -> bool {
    let bytes = version.as_bytes();
    let date_ok = bytes.len() >= 10
        && bytes[..10].iter().enumerate().all(|(i, b)| match i {
            4 | 7 => *b == b'-',
            _ => b.is_ascii_digit(),
        });
    date_ok
        && bytes[10..]
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'-')
        && (bytes.len() == 10 || bytes[10] == b'-')
}

/// How a long-running call started.
#[derive(Debug, Clone, PartialEq)]
pub enum LroStart<T> {
    /// Finished at once (200 without `Azure-AsyncOperation`, 204, or 201 without a poll URL),
    /// with the body if there is one.
    Done(Option<T>),
    /// Accepted (201/202, or 200 with `Azure-AsyncOperation`): follow `handle`; `body` is the
    /// 200/201 body, if any.
    Pending {
        /// Where to poll and how long to wait.
        handle: OperationHandle,
        /// The initial response's body (a PUT's 201 carries the resource).
        body: Option<T>,
    },
}

/// One of ARM's per-subscription write budgets: deletes are counted apart from the other
/// writes (PUT, POST, PATCH), each with its own `x-ms-ratelimit-remaining-subscription-…`
/// header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WriteKind {
    /// PUT, POST and PATCH: `x-ms-ratelimit-remaining-subscription-writes`.
    Writes,
    /// DELETE: `x-ms-ratelimit-remaining-subscription-deletes`.
    Deletes,
}

impl WriteKind {
    /// The budget a request of `method` spends; `None` for reads (their budget is not paced).
    pub fn of(method: &Method) -> Option<Self> {
        match *method {
            Method::GET | Method::HEAD | Method::OPTIONS => None,
            Method::DELETE => Some(Self::Deletes),
            _ => Some(Self::Writes),
        }
    }

    /// The header ARM reports this budget's remainder in.
    pub fn header(self) -> &'static str {
        match self {
            Self::Writes => "x-ms-ratelimit-remaining-subscription-writes",
            Self::Deletes => "x-ms-ratelimit-remaining-subscription-deletes",
        }
    }
}

/// The answer to a write, with what ARM said is left of the budget it spent: each answer
/// carries its own figure, so concurrent writes (to other subscriptions too) never see one
/// another's.
#[derive(Debug)]
pub struct WriteAnswer<T> {
    /// How the call went.
    pub result: Result<LroStart<T>, ArmError>,
    /// The budget's remainder this answer reported (its [`WriteKind::header`]), on any status
    /// (a 429 says 0); `None` when it had no such header, or when nothing was answered.
    pub remaining: Option<u64>,
}

impl<T> WriteAnswer<T> {
    /// A write that got no answer (refused before sending, or a network failure).
    fn unanswered(error: ArmError) -> Self {
        Self {
            result: Err(error),
            remaining: None,
        }
    }
}

impl<T> LroStart<T> {
    /// The poll handle of a pending operation.
    pub fn handle(&self) -> Option<&OperationHandle> {
        match self {
            Self::Done(_) => None,
            Self::Pending { handle, .. } => Some(handle),
        }
    }
}

/// A client for the `Microsoft.DataProtection` backup-instance calls. Cheap to clone: one
/// HTTP client and one token source are shared by all clones.
#[derive(Clone)]
pub struct ArmClient {
    inner: Arc<Inner>,
    /// Checked once the token is in hand, right before a write (any method but GET) goes
    /// out: fetching a token can take long (Entra ID retries), longer than a leader term.
    write_gate: Option<WriteGate>,
}

/// Whether writes may still be sent (see [`ArmClient::with_write_gate`]).
pub type WriteGate = Arc<dyn Fn() -> bool + Send + Sync>;

struct Inner {
    config: ArmConfig,
    scope: String,
    http: reqwest::Client,
    credential: Arc<dyn TokenCredential>,
    observer: Option<Arc<dyn RequestObserver>>,
}

impl std::fmt::Debug for ArmClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArmClient")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

/// One answer from ARM, body read in full.
struct Response {
    operation: &'static str,
    status: u16,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Response {
    fn request_id(&self) -> Option<String> {
        header_value(&self.headers, "x-ms-request-id").map(str::to_string)
    }

    fn body_is_empty(&self) -> bool {
        self.body.iter().all(u8::is_ascii_whitespace)
    }

    fn decode_error(&self, message: String) -> ArmError {
        ArmError::Decode {
            operation: self.operation,
            status: self.status,
            message,
            request_id: self.request_id(),
        }
    }

    /// The body as `T`; an empty or malformed body is a Decode error.
    fn json<T: DeserializeOwned>(&self) -> Result<T, ArmError> {
        if self.body_is_empty() {
            return Err(self.decode_error("the body is empty, a JSON document was expected".into()));
        }
        read_json(&self.body)
            .map_err(|e| self.decode_error(format!("the body is not the expected JSON: {e}")))
    }

    /// The error this answer describes (any status): Azure's CloudError if the body has one,
    /// else the status and the start of the body.
    fn error(&self) -> ArmError {
        let detail = read_json::<CloudError>(&self.body)
            .ok()
            .and_then(|e| AzureErrorDetail::from_cloud_error(&e))
            .unwrap_or_else(|| self.bare_error_detail());
        ArmError::Azure {
            operation: self.operation,
            status: self.status,
            detail: Box::new(detail),
            request_id: self.request_id(),
            correlation_id: header_value(&self.headers, "x-ms-correlation-request-id")
                .map(str::to_string),
            retry_after: retry_after_from_headers(&self.headers, SystemTime::now()),
        }
    }

    fn bare_error_detail(&self) -> AzureErrorDetail {
        let reason = http::StatusCode::from_u16(self.status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("Error");
        let text = String::from_utf8_lossy(&self.body);
        let text: String = text.trim().chars().take(500).collect();
        let message = if !text.is_empty() {
            text
        } else if let Some(challenge) = header_value(&self.headers, "www-authenticate") {
            challenge.to_string()
        } else {
            format!("HTTP {} {reason} without an error body", self.status)
        };
        AzureErrorDetail {
            code: reason.replace([' ', '-'], ""),
            message,
            ..AzureErrorDetail::default()
        }
    }

    fn is_error(&self) -> bool {
        self.status >= 400
    }

    fn unexpected(&self) -> ArmError {
        if self.is_error() {
            self.error()
        } else {
            self.decode_error(format!("unexpected HTTP status {}", self.status))
        }
    }
}

/// How a call treats the body of a successful answer.
enum Body {
    /// Not needed (the call's result is `()`).
    Ignored,
    /// Needed on 200/201 (a PUT's resource).
    Resource,
}

impl ArmClient {
    /// A client for `config` (validated here), sending requests with `http` and tokens from
    /// `credential`, and reporting every request to `observer`.
    ///
    /// `http` should have timeouts set (see [`super::default_http_client`]).
    pub fn new(
        config: ArmConfig,
        http: reqwest::Client,
        credential: Arc<dyn TokenCredential>,
        observer: Option<Arc<dyn RequestObserver>>,
    ) -> Result<Self, ArmError> {
        config.validate()?;
        let scope = config.token_scope();
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                scope,
                http,
                credential,
                observer,
            }),
            write_gate: None,
        })
    }

    /// This client (sharing its HTTP client and token source), sending a write only while
    /// `gate` says so, checked after the token is fetched: a write refused there is
    /// [`ArmError::WriteGateClosed`], and nothing was sent. The controller gates writes on its
    /// leader term (the operator's leader fence).
    pub fn with_write_gate(&self, gate: WriteGate) -> Self {
        Self {
            inner: self.inner.clone(),
            write_gate: Some(gate),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &ArmConfig {
        &self.inner.config
    }

    /// The API version of every call.
    pub fn api_version(&self) -> &str {
        &self.inner.config.api_version
    }

    /// Whether this API version has `stopProtection` and `sync` (2021-01-01 does not).
    pub fn supports_instance_actions(&self) -> bool {
        self.api_version().get(..10).unwrap_or_default() >= FIRST_VERSION_WITH_INSTANCE_ACTIONS
    }

    /// Whether this API version has `tags` on backup instances (2021-01-01 does not).
    pub fn supports_tags(&self) -> bool {
        api_version_has_tags(self.api_version())
    }

    /// Refuses, before any request, an action the configured API version does not have.
    fn require_instance_action(&self, action: &str, instead: &str) -> Result<(), ArmError> {
        if self.supports_instance_actions() {
            return Ok(());
        }
        Err(ArmError::Config {
            message: format!(
                "api-version {} has no {action} (it exists from {FIRST_VERSION_WITH_INSTANCE_ACTIONS}); use a newer --api-version, or {instead}",
                self.api_version()
            ),
        })
    }

    /// POST `.../backupVaults/{vault}/validateForBackup`: 200 done, 202 pending; a 400 (e.g.
    /// `UserErrorDppDatasourceAlreadyProtected`) is an error.
    pub async fn validate_for_backup(
        &self,
        vault: &VaultId,
        instance: &BackupInstance,
    ) -> WriteAnswer<()> {
        let mut segments = vault.path_segments();
        segments.push("validateForBackup");
        let body = ValidateForBackupRequest {
            backup_instance: instance.clone(),
        };
        self.start(
            ops::VALIDATE_FOR_BACKUP,
            Method::POST,
            &segments,
            Some(&body),
            Body::Ignored,
        )
        .await
    }

    /// PUT the backup instance (`{"properties": instance}`): 200 done with the resource (pending
    /// when it names an `Azure-AsyncOperation`: an update still being applied), 201 created
    /// (pending when Azure names a poll URL), 202 pending.
    pub async fn create_or_update(
        &self,
        id: &BackupInstanceId,
        instance: &BackupInstance,
    ) -> WriteAnswer<BackupInstanceResource> {
        self.create_or_update_tagged(id, instance, &BTreeMap::new())
            .await
    }

    /// [`Self::create_or_update`] with the instance's ARM `tags` (the whole set: a PUT
    /// replaces them). Refused before any request when `tags` is not empty and the API version
    /// has no tags ([`Self::supports_tags`]): Azure would drop them silently.
    pub async fn create_or_update_tagged(
        &self,
        id: &BackupInstanceId,
        instance: &BackupInstance,
        tags: &BTreeMap<String, String>,
    ) -> WriteAnswer<BackupInstanceResource> {
        if !tags.is_empty() && !self.supports_tags() {
            return WriteAnswer::unanswered(ArmError::Config {
                message: format!(
                    "api-version {} has no tags on backup instances (they exist from {FIRST_VERSION_WITH_TAGS}); use a newer --api-version",
                    self.api_version()
                ),
            });
        }
        let body = BackupInstanceResource {
            properties: Some(instance.clone()),
            tags: (!tags.is_empty()).then(|| tags.clone()),
            ..BackupInstanceResource::default()
        };
        self.start(
            ops::CREATE_OR_UPDATE,
            Method::PUT,
            &id.path_segments(),
            Some(&body),
            Body::Resource,
        )
        .await
    }

    /// GET the backup instance; `None` when Azure answers 404.
    pub async fn get(
        &self,
        id: &BackupInstanceId,
    ) -> Result<Option<BackupInstanceResource>, ArmError> {
        let response = self
            .send::<()>(ops::GET, Method::GET, self.url(&id.path_segments())?, None)
            .await?;
        match response.status {
            200 => response.json().map(Some),
            404 => Ok(None),
            _ => Err(response.unexpected()),
        }
    }

    /// All backup instances of the vault, following `nextLink` (on the ARM endpoint only).
    pub async fn list(&self, vault: &VaultId) -> Result<Vec<BackupInstanceResource>, ArmError> {
        let mut segments = vault.path_segments();
        segments.push("backupInstances");
        self.all_pages(
            ops::LIST,
            self.url(&segments)?,
            |page: BackupInstanceResourceList| (page.value, page.next_link),
        )
        .await
    }

    /// The time of the backup instance's latest recovery point (vaulted backup), reading
    /// every page; `None` when it has none yet.
    pub async fn latest_recovery_point(
        &self,
        id: &BackupInstanceId,
    ) -> Result<Option<jiff::Timestamp>, ArmError> {
        let points = self.recovery_points(id).await?;
        Ok(points.iter().filter_map(RecoveryPointResource::time).max())
    }

    /// GETs `url` and each `nextLink` after it (on the ARM endpoint only) and returns the items
    /// of every page; `split` takes a page apart into its items and its `nextLink`.
    async fn all_pages<P: DeserializeOwned, T>(
        &self,
        operation: &'static str,
        mut url: Url,
        split: impl Fn(P) -> (Vec<T>, Option<String>),
    ) -> Result<Vec<T>, ArmError> {
        let mut items = Vec::new();
        for _ in 0..MAX_LIST_PAGES {
            let response = self.send::<()>(operation, Method::GET, url, None).await?;
            if response.status != 200 {
                return Err(response.unexpected());
            }
            let (page, next) = split(response.json()?);
            items.extend(page);
            match next.as_deref().map(str::trim) {
                Some(next) if !next.is_empty() => url = self.checked_url(next)?,
                _ => return Ok(items),
            }
        }
        Err(ArmError::Decode {
            operation,
            status: 200,
            message: format!("more than {MAX_LIST_PAGES} pages: nextLink does not end"),
            request_id: None,
        })
    }

    /// DELETE the backup instance (stops protection and deletes its backups): 200, 204 and
    /// 404 are done, 202 pending. It spends the subscription's delete budget.
    pub async fn delete(&self, id: &BackupInstanceId) -> WriteAnswer<()> {
        self.start(
            ops::DELETE,
            Method::DELETE,
            &id.path_segments(),
            None::<&()>,
            Body::Ignored,
        )
        .await
    }

    /// POST `.../stopProtection` (keeps the backups). Refused with a Config error on API
    /// versions without it (2021-01-01), before any request.
    pub async fn stop_protection(&self, id: &BackupInstanceId) -> WriteAnswer<()> {
        if let Err(error) = self
            .require_instance_action("stopProtection", "delete instead of retaining the backups")
        {
            return WriteAnswer::unanswered(error);
        }
        self.post_action(id, "stopProtection", ops::STOP_PROTECTION, None::<&()>)
            .await
    }

    /// POST `.../sync` with `{"syncType": "Default"}`: asks Azure to retry a failed
    /// configuration of the instance.
    pub async fn sync(&self, id: &BackupInstanceId) -> WriteAnswer<()> {
        if let Err(error) =
            self.require_instance_action("sync", "re-sync the backup instance in the Azure portal")
        {
            return WriteAnswer::unanswered(error);
        }
        let body = SyncBackupInstanceRequest {
            sync_type: Some("Default".to_string()),
        };
        self.post_action(id, "sync", ops::SYNC, Some(&body)).await
    }

    async fn post_action<B: Serialize>(
        &self,
        id: &BackupInstanceId,
        action: &str,
        operation: &'static str,
        body: Option<&B>,
    ) -> WriteAnswer<()> {
        let mut segments = id.path_segments();
        segments.push(action);
        self.start(operation, Method::POST, &segments, body, Body::Ignored)
            .await
    }

    /// Sends a write that starts a long-running operation and reads how it started, and
    /// what its answer says is left of the budget it spent. A DELETE's 404 is done: nothing
    /// was there.
    async fn start<B: Serialize, T: DeserializeOwned>(
        &self,
        operation: &'static str,
        method: Method,
        segments: &[&str],
        body: Option<&B>,
        mode: Body,
    ) -> WriteAnswer<T> {
        let budget = WriteKind::of(&method);
        let is_delete = method == Method::DELETE;
        let url = match self.url(segments) {
            Ok(url) => url,
            Err(error) => return WriteAnswer::unanswered(error),
        };
        let response = match self.send(operation, method, url, body).await {
            Ok(response) => response,
            Err(error) => return WriteAnswer::unanswered(error),
        };
        let remaining = budget
            .and_then(|budget| header_value(&response.headers, budget.header()))
            .and_then(|value| value.trim().parse::<u64>().ok());
        let result = if is_delete && response.status == 404 {
            Ok(LroStart::Done(None))
        } else {
            lro_start(&response, mode)
        };
        WriteAnswer { result, remaining }
    }

    /// GET a poll URL (`Azure-AsyncOperation` or `Location`) of an operation on `instance`,
    /// used exactly as given. The URL must be on the configured endpoint (scheme, host, port)
    /// and its path a `Microsoft.DataProtection` operation of the instance's vault
    /// ([`operation_path_problem`]); otherwise no request is made and no token is sent.
    ///
    /// 200 with a `status` field: that status; 202: in progress; a 200/201/204 without a
    /// `status` from an `operationResults` URL: succeeded. 408/429/5xx are transient errors.
    pub async fn poll(
        &self,
        poll_url: &str,
        instance: &BackupInstanceId,
    ) -> Result<Poll, ArmError> {
        let url = self.checked_url(poll_url)?;
        if let Some(problem) = operation_path_problem(url.path(), instance) {
            warn!(path = url.path(), %problem, "refused a poll URL");
            return Err(ArmError::PollPathRefused {
                path: url.path().to_owned(),
                problem,
            });
        }
        let operation = poll_operation(&url);
        let response = self.send::<()>(operation, Method::GET, url, None).await?;
        let retry_after = retry_after_from_headers(&response.headers, SystemTime::now());
        let job_id = job_id_of(&response.body);
        let status = match response.status {
            // 202 means still running; a body's status is kept only if it says so too.
            202 => {
                let raw = read_json::<OperationResource>(&response.body)
                    .ok()
                    .and_then(|doc| doc.status)
                    .filter(|s| !OperationStatus::from_azure(s, None).is_terminal())
                    .unwrap_or_else(|| "Accepted".to_string());
                OperationStatus::InProgress { raw }
            }
            204 => OperationStatus::Succeeded,
            200 | 201 => poll_body_status(&response)?,
            _ => return Err(response.unexpected()),
        };
        Ok(Poll {
            status,
            retry_after,
            job_id,
        })
    }

    /// The URL of an ARM resource path, with `api-version`.
    fn url(&self, segments: &[&str]) -> Result<Url, ArmError> {
        let mut url = self.inner.config.endpoint.clone();
        url.path_segments_mut()
            .map_err(|()| ArmError::Config {
                message: format!(
                    "the ARM endpoint {} cannot have a path",
                    self.inner.config.endpoint
                ),
            })?
            .pop_if_empty()
            .extend(segments);
        url.query_pairs_mut()
            .append_pair("api-version", self.api_version());
        Ok(url)
    }

    /// Parses a URL Azure handed us (poll URL, nextLink) and refuses it unless it is on the
    /// configured endpoint, so the bearer token never leaves for another host.
    fn checked_url(&self, raw: &str) -> Result<Url, ArmError> {
        let endpoint = &self.inner.config.endpoint;
        let foreign = || {
            warn!(url = %raw, endpoint = %endpoint, "refused a URL that is not on the ARM endpoint");
            ArmError::ForeignPollUrl {
                url: raw.to_string(),
                endpoint: endpoint.to_string(),
            }
        };
        let url = Url::parse(raw.trim()).map_err(|_| foreign())?;
        let same_origin = url.scheme() == endpoint.scheme()
            && url.host() == endpoint.host()
            && url.port_or_known_default() == endpoint.port_or_known_default()
            && url.username().is_empty()
            && url.password().is_none();
        if same_origin { Ok(url) } else { Err(foreign()) }
    }

    async fn token(&self) -> Result<String, ArmError> {
        let scopes = [self.inner.scope.as_str()];
        match self.inner.credential.get_token(&scopes, None).await {
            Ok(token) => Ok(token.token.secret().to_string()),
            Err(e) => Err(ArmError::Auth {
                message: super::auth::error_chain(&e),
            }),
        }
    }

    /// Sends one request with a fresh token and `x-ms-client-request-id`, reads the whole
    /// answer, logs the request ids and reports to the observer.
    async fn send<B: Serialize>(
        &self,
        operation: &'static str,
        method: Method,
        url: Url,
        body: Option<&B>,
    ) -> Result<Response, ArmError> {
        let token = self.token().await?;
        if method != Method::GET && self.write_gate.as_ref().is_some_and(|open| !open()) {
            warn!(
                operation,
                "not sent: the write gate closed while the token was fetched"
            );
            return Err(ArmError::WriteGateClosed { operation });
        }
        let client_request_id = Uuid::new_v4().to_string();
        let mut request = self
            .inner
            .http
            .request(method.clone(), url.clone())
            .bearer_auth(token)
            .header("x-ms-client-request-id", &client_request_id)
            .header(http::header::USER_AGENT, USER_AGENT)
            .header(http::header::ACCEPT, "application/json");
        if let Some(body) = body {
            let json = serde_json::to_vec(body).map_err(|e| ArmError::Config {
                message: format!("{operation}: cannot serialize the request body: {e}"),
            })?;
            request = request
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(json);
        } else if method == Method::POST {
            // ARM answers 411 to a POST without Content-Length.
            request = request.header(http::header::CONTENT_LENGTH, "0");
        }
        debug!(operation, %method, path = url.path(), client_request_id, "ARM request");
        let started = Instant::now();
        let result = match request.send().await {
            Ok(answer) => read_answer(answer).await,
            Err(e) => Err(e),
        };
        let elapsed = started.elapsed();
        let observe = |status: Option<u16>| {
            if let Some(observer) = &self.inner.observer {
                observer.observe(operation, status, elapsed);
            }
        };
        let (status, headers, body) = match result {
            Ok((status, headers, body)) => {
                observe(Some(status));
                (status, headers, body)
            }
            Err(e) => {
                observe(None);
                let message = super::auth::error_chain(&e);
                debug!(operation, client_request_id, error = %message, "ARM request failed");
                return Err(ArmError::Network { operation, message });
            }
        };
        let request_id = header_value(&headers, "x-ms-request-id").map(str::to_string);
        debug!(
            operation,
            status,
            client_request_id,
            request_id,
            correlation_id = header_value(&headers, "x-ms-correlation-request-id"),
            elapsed_ms = elapsed.as_millis() as u64,
            "ARM response"
        );
        if (300..400).contains(&status) {
            let location_host = redirect_host(header_value(&headers, "location"), &url);
            warn!(
                operation,
                status, location_host, "ARM answered with a redirect; not followed"
            );
            return Err(ArmError::Redirected {
                operation,
                status,
                location_host,
                request_id,
            });
        }
        let body = body.map_err(|size| {
            warn!(operation, status, %size, "refused an oversized answer from ARM");
            ArmError::ResponseTooLarge {
                operation,
                status,
                size,
                request_id,
            }
        })?;
        Ok(Response {
            operation,
            status,
            headers,
            body,
        })
    }
}

/// An answer's status and headers, and its body: read chunk by chunk up to
/// [`super::transport::MAX_RESPONSE_BYTES`] (refused at once when `Content-Length` says it is
/// larger), not read at all for a redirect (which is refused).
async fn read_answer(
    mut answer: reqwest::Response,
) -> Result<(u16, HeaderMap, Result<Vec<u8>, Oversize>), reqwest::Error> {
    let status = answer.status().as_u16();
    let headers = answer.headers().clone();
    if answer.status().is_redirection() {
        return Ok((status, headers, Ok(Vec::new())));
    }
    let declared = answer.content_length();
    if let Err(oversize) = Oversize::check_declared(declared) {
        return Ok((status, headers, Err(oversize)));
    }
    // Within the limit, checked above.
    let mut body = Vec::with_capacity(declared.unwrap_or(0) as usize);
    while let Some(chunk) = answer.chunk().await? {
        let read = body.len().saturating_add(chunk.len());
        if let Err(oversize) = Oversize::check_read(read) {
            return Ok((status, headers, Err(oversize)));
        }
        body.extend_from_slice(&chunk);
    }
    Ok((status, headers, Ok(body)))
}

/// The operationId of a poll: `OperationResult_Get` for `operationResults` URLs (Location),
/// `OperationStatus_Get` for any other (Azure-AsyncOperation status URLs).
fn poll_operation(url: &Url) -> &'static str {
    if url
        .path()
        .to_ascii_lowercase()
        .contains("/operationresults/")
    {
        ops::OPERATION_RESULT
    } else {
        ops::OPERATION_STATUS
    }
}

/// The status a 200/201 poll answer carries. A status document must have `status`; an
/// `operationResults` answer without one (the final resource, or nothing) means done.
fn poll_body_status(response: &Response) -> Result<OperationStatus, ArmError> {
    let is_result = response.operation == ops::OPERATION_RESULT;
    if is_result && response.body_is_empty() {
        return Ok(OperationStatus::Succeeded);
    }
    let document: serde_json::Value = response.json()?;
    let has_status = document
        .as_object()
        .is_some_and(|o| o.keys().any(|k| k.eq_ignore_ascii_case("status")));
    if !has_status {
        return if is_result {
            Ok(OperationStatus::Succeeded)
        } else {
            Err(response.decode_error("the operation status has no \"status\"".into()))
        };
    }
    let resource: OperationResource = PROPERTY_NAMES.from_value(document).map_err(|e| {
        response.decode_error(format!(
            "the operation status is not the expected JSON: {e}"
        ))
    })?;
    OperationStatus::from_operation_resource(&resource)
        .ok_or_else(|| response.decode_error("the operation status has no \"status\"".into()))
}

/// The job a poll answer names: `properties.jobId` (a status document) or `jobId` (an
/// `OperationJobExtendedInfo`), property names in any casing.
fn job_id_of(body: &[u8]) -> Option<String> {
    fn field<'v>(value: &'v serde_json::Value, name: &str) -> Option<&'v serde_json::Value> {
        value
            .as_object()?
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value)
    }
    let document: serde_json::Value = serde_json::from_slice(body).ok()?;
    field(&document, "properties")
        .and_then(|properties| field(properties, "jobId"))
        .or_else(|| field(&document, "jobId"))?
        .as_str()
        .filter(|id| !id.trim().is_empty())
        .map(str::to_string)
}

/// The start of a long-running call from its first answer.
fn lro_start<T: DeserializeOwned>(
    response: &Response,
    body: Body,
) -> Result<LroStart<T>, ArmError> {
    let parse = || match body {
        Body::Ignored => Ok(None),
        Body::Resource => response.json().map(Some),
    };
    let handle = OperationHandle::from_headers(&response.headers, SystemTime::now());
    match (response.status, handle) {
        // ARM lets a PUT answer 200 with a non-terminal provisioningState and a status URL
        // (an update in progress); Azure SDKs poll it. A 200 Location is not a poll URL.
        (200, Some(handle))
            if header_value(&response.headers, "azure-asyncoperation").is_some() =>
        {
            Ok(LroStart::Pending {
                handle,
                body: parse()?,
            })
        }
        (200, _) => Ok(LroStart::Done(parse()?)),
        (204, _) => Ok(LroStart::Done(None)),
        (201, Some(handle)) => Ok(LroStart::Pending {
            handle,
            body: parse()?,
        }),
        (201, None) => Ok(LroStart::Done(parse()?)),
        (202, Some(handle)) => Ok(LroStart::Pending { handle, body: None }),
        (202, None) => Err(response.decode_error(
            "202 Accepted without an Azure-AsyncOperation or Location header to follow".into(),
        )),
        _ => Err(response.unexpected()),
    }
}
