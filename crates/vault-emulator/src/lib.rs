//! A local emulator of the Azure Data Protection endpoints the operator uses.
//!
//! It answers like the real service does in the article's transcripts and the official API
//! description: 202 + `Azure-AsyncOperation` + `Location` + `Retry-After` on validate and
//! delete, 201 on the first PUT and 200 on later ones, operation status documents (with the
//! article's `Inprogress` spelling), CloudError bodies with `UserFacingError` details,
//! already-protected and missing-permission failures, bearer tokens, 429 throttling and
//! injected faults. Start it with [`RunningEmulator::start`] (tests, `--embedded-vault`) or
//! [`serve`] (the `vault-emulator` command).
//!
//! Error codes it answers with (where the documentation names none, a plausible one was
//! chosen; clients should key on the HTTP status):
//! - 400 `MissingApiVersionParameter` / `InvalidApiVersionParameter` (message lists versions)
//! - 401 `AuthenticationFailed` (no or malformed header), `InvalidAuthenticationToken`,
//!   `ExpiredAuthenticationToken`, each with `WWW-Authenticate`
//! - 404 `InvalidResourceType`: unknown path, or stopProtection/sync at 2021-01-01
//! - 405 `MethodNotAllowed`
//! - 404 `ResourceNotFound`: vault or backup instance missing
//! - 404 `UserErrorResourceNotFound`: the policy or storage account a request names is missing
//! - 404 `OperationNotFound`: unknown (or expired after an hour) operation id
//! - 400 `InvalidRequestContent`: body is not JSON of the expected shape
//! - 400 `UserErrorInvalidParameterInRequest`: missing ids, non-blob datasource, policy of
//!   another vault, containers with an operational policy or none with a vaulted one,
//!   more than 100 containers, a PUT changing an instance's storage account
//! - 400 `UserErrorNoContainersSelectedForOperation`: empty `containersList`
//! - 400 `UserErrorDatasourceAndBackupVaultLocationMismatch`
//! - 400 `UserErrorDppDatasourceAlreadyProtected` (synchronous, on validate and PUT)
//! - 400 `UserErrorStopProtectionNotSupportedForBlobOperationalBackup`
//! - 409 `AnotherOperationInProgress`: a different operation runs on the instance
//! - 413 `RequestEntityTooLarge`; 429 `SubscriptionRequestsThrottled` with `Retry-After`
//! - operation `Failed` with `UserErrorMissingRequiredPermissions` (validate, PUT)
//! - injected: 500 `InternalServerError`, 503 `ServiceUnavailable` (with `Retry-After`);
//!   `malformedBody`: 200 with a truncated JSON document; `emptyBody`: 200 with
//!   `Content-Type: application/json` and no body (the request is not served in either case)
//!
//! Headers: every answer has `x-ms-request-id` and `x-ms-correlation-request-id` (the client's
//! `x-ms-client-request-id` when sent); writes have `x-ms-ratelimit-remaining-subscription-writes`
//! (DELETE also `…-deletes`). PUT answers point at their operation with `Azure-AsyncOperation`
//! and `Retry-After` only, as the article's transcript (the spec's 201 declares `Location`);
//! validate, DELETE, stopProtection and sync answer 202 with both URLs. Operation URLs are
//! `{base}/subscriptions/{sub}/providers/Microsoft.DataProtection/locations/{loc}/operationStatus|operationResults/{id}?api-version=…`
//! with `{base}` the configured `publicUrl` or `http://` + the request's Host.
//!
//! Instance life cycle: PUT (new) => 201, `ConfiguringProtection`/`Provisioning`, then after
//! the latency `ProtectionConfigured`/`Succeeded` (or `ConfiguringProtectionFailed`/`Failed`
//! without the role). PUT with a changed body => 200, `UpdatingProtection`/`Updating`, then
//! configured; PUT with the same body => 200 and no operation (or, while that PUT's operation
//! runs, a pointer to it). DELETE => 202, gone after the latency, 204 once gone.
//! stopProtection (vaulted only) => `ProtectionStopped`. sync clears an injected
//! `ProtectionError`.

mod admin;
mod config;
mod keys;
mod listener;
mod model;
mod reply;
mod routes;
mod shared;
mod state;

use std::net::SocketAddr;
use std::path::PathBuf;

pub use admin::EmulatorAdmin;
pub use config::{
    DEFAULT_PRINCIPAL_ID, DEFAULT_STORAGE_ACCOUNT_ID, DEFAULT_SUBSCRIPTION, DEFAULT_TOKEN,
    DEFAULT_VAULT_ID, EmulatorConfig, FaultSettings, InProgressSpelling, PolicyConfig, PolicyTier,
    ServiceBehavior, StorageAccountConfig, ThrottleSettings, VaultConfig,
};
pub use listener::RunningEmulator;
pub use routes::{SUPPORTED_API_VERSIONS, UNKNOWN_OPERATION};

/// Everything that can go wrong starting or steering the emulator.
#[derive(Debug, thiserror::Error)]
pub enum EmulatorError {
    /// The config file could not be read.
    #[error("cannot read emulator config {path}: {source}")]
    ConfigRead {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The config is not YAML of the expected shape (the message has the line and column).
    #[error("emulator config {origin}: {message}")]
    ConfigParse { origin: String, message: String },
    /// The config parsed but a value is wrong.
    #[error("emulator config {origin}: {field}: {message}")]
    ConfigInvalid {
        origin: String,
        field: String,
        message: String,
    },
    /// The listen address could not be bound.
    #[error("emulator cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// Waiting for a shutdown signal failed.
    #[error("emulator cannot wait for a shutdown signal: {0}")]
    Signal(#[source] std::io::Error),
    /// An admin request named something the emulator does not have.
    #[error("not found: {0}")]
    NotFound(String),
    /// An admin request or setting was malformed.
    #[error("invalid: {0}")]
    Invalid(String),
}

/// Command-line arguments of `blob-backup-operator vault-emulator`.
#[derive(Clone, Debug, clap::Args)]
pub struct EmulatorArgs {
    /// Address to listen on.
    #[arg(long, env = "BBO_EMULATOR_LISTEN", default_value = "127.0.0.1:8090")]
    pub listen: SocketAddr,
    /// YAML config (vaults, policies, storage accounts, tokens, latency, throttling, faults);
    /// without it, the article's world (vault testBkpVault, account msblobbackup).
    #[arg(long, env = "BBO_EMULATOR_CONFIG")]
    pub config: Option<PathBuf>,
}

/// Runs the emulator until Ctrl-C or SIGTERM.
pub async fn serve(args: EmulatorArgs) -> Result<(), EmulatorError> {
    let config = match &args.config {
        Some(path) => EmulatorConfig::from_yaml_file(path)?,
        None => EmulatorConfig::default(),
    };
    let emulator = RunningEmulator::start(config, args.listen).await?;
    tracing::info!(
        url = %emulator.base_url(),
        token = emulator.token(),
        "vault emulator ready; admin API under /_emulator/"
    );
    let result = shutdown_signal().await;
    emulator.shutdown().await;
    result
}

async fn shutdown_signal() -> Result<(), EmulatorError> {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(EmulatorError::Signal)?;
        tokio::select! {
            result = tokio::signal::ctrl_c() => result.map_err(EmulatorError::Signal),
            _ = term.recv() => Ok(()),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await.map_err(EmulatorError::Signal)
    }
}
