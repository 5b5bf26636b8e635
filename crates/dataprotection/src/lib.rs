//! Azure Resource Manager client for `Microsoft.DataProtection` backup instances.
//!
//! - [`ids`]: parsing and building ARM IDs (case-insensitive, as ARM treats them).
//! - [`models`]: request and response bodies.
//! - [`client`]: the calls, with typed results and errors; long-running operations are
//!   returned as data ([`LroStart`], [`OperationHandle`]) and polled one step at a time.
//! - [`auth`]: token sources.

pub mod auth;
pub mod client;
pub mod error;
pub mod ids;
pub mod json_casing;
pub mod models;
pub mod operation;
pub mod transport;

use std::time::Duration;

pub use auth::{AuthConfig, AuthMode, credential};
pub use client::{
    ArmClient, ArmConfig, DEFAULT_API_VERSION, DEFAULT_ENDPOINT, LroStart, USER_AGENT, WriteAnswer,
    WriteGate, WriteKind, api_version_has_tags,
};
pub use error::{ArmError, AzureErrorDetail, ErrorClass};
pub use ids::*;
pub use models::*;
pub use operation::{
    OperationAction, OperationHandle, OperationStatus, Poll, operation_path_problem,
    parse_retry_after,
};

/// Azure's operationIds of the calls, verbatim: the operation names shared by logs, metrics
/// labels and the emulator's request counts.
pub mod operation_ids {
    /// POST `.../validateForBackup`.
    pub const VALIDATE_FOR_BACKUP: &str = "BackupInstances_ValidateForBackup";
    /// PUT a backup instance.
    pub const CREATE_OR_UPDATE: &str = "BackupInstances_CreateOrUpdate";
    /// GET a backup instance.
    pub const GET: &str = "BackupInstances_Get";
    /// GET the backup instances of a vault (each page).
    pub const LIST: &str = "BackupInstances_List";
    /// DELETE a backup instance.
    pub const DELETE: &str = "BackupInstances_Delete";
    /// POST `.../stopProtection`.
    pub const STOP_PROTECTION: &str = "BackupInstances_StopProtection";
    /// POST `.../sync`.
    pub const SYNC: &str = "BackupInstances_SyncBackupInstance";
    /// GET an `Azure-AsyncOperation` status URL.
    pub const OPERATION_STATUS: &str = "OperationStatus_Get";
    /// GET a `Location` / `operationResults` URL.
    pub const OPERATION_RESULT: &str = "OperationResult_Get";

    /// Every operationId above (the metrics' known label values).
    pub const ALL: [&str; 14] = [
        VALIDATE_FOR_BACKUP,
        CREATE_OR_UPDATE,
        GET,
        LIST,
        DELETE,
        STOP_PROTECTION,
        SYNC,
        OPERATION_STATUS,
        OPERATION_RESULT,
        RECOVERY_POINTS_LIST,
        FIND_RESTORABLE_TIME_RANGES,
        VALIDATE_FOR_RESTORE,
        TRIGGER_RESTORE,
        JOBS_GET,
    ];
    /// GET the recovery points of a backup instance (each page).
    pub const RECOVERY_POINTS_LIST: &str = "RecoveryPoints_List";
    /// POST `.../findRestorableTimeRanges`.
    pub const FIND_RESTORABLE_TIME_RANGES: &str = "RestorableTimeRanges_Find";
    /// POST `.../validateRestore`.
    pub const VALIDATE_FOR_RESTORE: &str = "BackupInstances_ValidateForRestore";
    /// POST `.../restore`.
    pub const TRIGGER_RESTORE: &str = "BackupInstances_TriggerRestore";
    /// GET `.../backupVaults/{vault}/backupJobs/{jobId}`.
    pub const JOBS_GET: &str = "Jobs_Get";
}

/// Receives one report per HTTP request to ARM (telemetry implements it).
pub trait RequestObserver: Send + Sync {
    /// `operation` is an operationId from [`operation_ids`]; `status` is `None` when no answer
    /// came (network error); `elapsed` covers sending and reading the whole answer.
    fn observe(&self, operation: &'static str, status: Option<u16>, elapsed: Duration);
}

/// Installs ring as the process's rustls crypto provider (the one provider in the binary).
/// Call before building any HTTP client; calling again does nothing.
pub fn install_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Err means another thread installed one first: the process has a provider either way.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

/// An HTTP client for ARM and token requests: installs the crypto provider, sets the
/// `User-Agent` and timeouts (ARM gives a resource provider 60 s; connects should be quick),
/// and follows no redirects (a 307 re-sends a PUT or POST body: a backup request, a client
/// secret or an assertion); the callers turn a 3xx into an error naming the host.
pub fn default_http_client() -> Result<reqwest::Client, ArmError> {
    install_crypto_provider();
    reqwest::Client::builder()
        .user_agent(USER_AGENT)
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(90))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| ArmError::Config {
            message: format!("cannot build the HTTP client: {}", auth::error_chain(&e)),
        })
}
