//! Errors of the ARM client, classified by who can fix them, and printed so that a person can
//! paste them into a support ticket (Azure's code, message, recommended action, request ids).

use std::fmt;
use std::time::Duration;

use super::models::{CloudError, ErrorBody, UserFacingError};
use super::transport::Oversize;

/// What Azure said went wrong: from a CloudError (and its `UserFacingError`) or from a
/// backup instance's protection error details.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AzureErrorDetail {
    /// Azure's error code, e.g. `UserErrorDppDatasourceAlreadyProtected`.
    pub code: String,
    /// Azure's message.
    pub message: String,
    /// Azure's recommended actions (`recommendedAction`), in order.
    pub recommended_actions: Vec<String>,
    /// `innerError.additionalInfo.DetailedNonLocalisedMessage`, when Azure sends one.
    pub detail: Option<String>,
}

/// The code used when Azure gives none.
const UNKNOWN_CODE: &str = "Unknown";

fn non_empty(value: Option<&str>) -> Option<&str> {
    value.map(str::trim).filter(|v| !v.is_empty())
}

impl AzureErrorDetail {
    /// From a CloudError's `error`: the top-level code and message, with the recommended
    /// actions and detail of its `UserFacingError` (whose code and message fill in gaps).
    pub fn from_error_body(error: &ErrorBody) -> Self {
        let user_facing = error.user_facing_error();
        let from_ufe = user_facing.as_ref().map(Self::from_user_facing);
        let code = non_empty(error.code.as_deref())
            .map(str::to_string)
            .or_else(|| from_ufe.as_ref().map(|d| d.code.clone()))
            .unwrap_or_else(|| UNKNOWN_CODE.to_string());
        let message = non_empty(error.message.as_deref())
            .map(str::to_string)
            .or_else(|| from_ufe.as_ref().map(|d| d.message.clone()))
            .unwrap_or_default();
        let (recommended_actions, detail) = from_ufe
            .map(|d| (d.recommended_actions, d.detail))
            .unwrap_or_default();
        Self {
            code,
            message,
            recommended_actions,
            detail,
        }
    }

    /// From a CloudError document; `None` when it has no `error`.
    pub fn from_cloud_error(error: &CloudError) -> Option<Self> {
        error.error.as_ref().map(Self::from_error_body)
    }

    /// From a `UserFacingError` (e.g. `protectionStatus.errorDetails`).
    pub fn from_user_facing(error: &UserFacingError) -> Self {
        Self {
            code: non_empty(error.code.as_deref())
                .unwrap_or(UNKNOWN_CODE)
                .to_string(),
            message: error.message.clone().unwrap_or_default(),
            recommended_actions: error
                .recommended_action
                .iter()
                .flatten()
                .filter(|a| !a.trim().is_empty())
                .cloned()
                .collect(),
            detail: error
                .inner_error
                .as_ref()
                .and_then(|inner| inner.detailed_message())
                .map(str::to_string),
        }
    }
}

impl From<&UserFacingError> for AzureErrorDetail {
    fn from(error: &UserFacingError) -> Self {
        Self::from_user_facing(error)
    }
}

impl fmt::Display for AzureErrorDetail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.code)?;
        if !self.message.is_empty() {
            write!(f, ": {}", self.message)?;
        }
        if !self.recommended_actions.is_empty() {
            write!(
                f,
                " Recommended action: {}",
                self.recommended_actions.join(" ")
            )?;
        }
        if let Some(detail) = &self.detail {
            write!(f, " Detail: {detail}")?;
        }
        Ok(())
    }
}

/// Who can fix an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// Retrying later will likely work: throttling (429), Azure-side errors (5xx, 408),
    /// network trouble, token acquisition.
    Transient,
    /// A person must act: 401/403, validation failures, missing resources, other 4xx.
    NeedsPerson,
    /// Our side is wrong: a response we cannot read, a bad configuration, a refused URL.
    Bug,
}

impl fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Transient => "Transient",
            Self::NeedsPerson => "NeedsPerson",
            Self::Bug => "Bug",
        })
    }
}

/// An error from the ARM client.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ArmError {
    /// Azure answered with an error status.
    #[error("{}", display_azure(operation, *status, detail, request_id.as_deref(), correlation_id.as_deref(), *retry_after))]
    Azure {
        /// Azure's operationId, e.g. `BackupInstances_ValidateForBackup`.
        operation: &'static str,
        /// The HTTP status.
        status: u16,
        /// What Azure said.
        // Boxed so `Result<_, ArmError>` stays small on the happy path (clippy::result_large_err).
        detail: Box<AzureErrorDetail>,
        /// `x-ms-request-id`.
        request_id: Option<String>,
        /// `x-ms-correlation-request-id`.
        correlation_id: Option<String>,
        /// `Retry-After`, when Azure sent one.
        retry_after: Option<Duration>,
    },
    /// The request did not get an answer: connect, reset, timeout.
    #[error("{operation}: no answer from Azure Resource Manager: {message}")]
    Network {
        /// Azure's operationId.
        operation: &'static str,
        /// What went wrong.
        message: String,
    },
    /// Azure answered, but not with something this client can read.
    #[error("{operation}: cannot read Azure's answer (HTTP {status}): {message}{}", ids_suffix(request_id.as_deref(), None))]
    Decode {
        /// Azure's operationId.
        operation: &'static str,
        /// The HTTP status.
        status: u16,
        /// What could not be read.
        message: String,
        /// `x-ms-request-id`.
        request_id: Option<String>,
    },
    /// Azure answered with a redirect, which the client does not follow (it would re-send the
    /// request's body and token to wherever it points).
    #[error("{operation}: Azure Resource Manager answered HTTP {status}, a redirect to host {location_host}; redirects are not followed, so nothing was sent there. Check --arm-endpoint{}", ids_suffix(request_id.as_deref(), None))]
    Redirected {
        /// Azure's operationId.
        operation: &'static str,
        /// The HTTP status (3xx).
        status: u16,
        /// The host (and port) of `Location`; never its path or query.
        location_host: String,
        /// `x-ms-request-id`.
        request_id: Option<String>,
    },
    /// Azure's answer is larger than the client reads ([`super::transport::MAX_RESPONSE_BYTES`]).
    #[error("{operation}: refused Azure's answer (HTTP {status}): {size}{}", ids_suffix(request_id.as_deref(), None))]
    ResponseTooLarge {
        /// Azure's operationId.
        operation: &'static str,
        /// The HTTP status.
        status: u16,
        /// How large it is, or how much arrived before reading stopped.
        size: Oversize,
        /// `x-ms-request-id`.
        request_id: Option<String>,
    },
    /// A poll URL points somewhere other than the configured ARM endpoint; no token was sent.
    #[error(
        "refused to poll {}: it is not on the ARM endpoint {endpoint} (scheme, host and port must match), so no token was sent to it",
        shorten(url)
    )]
    ForeignPollUrl {
        /// The refused URL.
        url: String,
        /// The configured endpoint.
        endpoint: String,
    },
    /// A poll URL on the ARM endpoint whose path is not an operation of the instance's vault
    /// (`Microsoft.DataProtection`, the vault's subscription); no token was sent.
    #[error(
        "refused to poll {}: {problem}, so no token was sent to it",
        shorten(path)
    )]
    PollPathRefused {
        /// The URL's path (its query left out).
        path: String,
        /// What is wrong with it.
        problem: String,
    },
    /// No access token could be acquired.
    #[error("cannot get an Azure access token: {message}")]
    Auth {
        /// What went wrong, naming the auth mode and the missing setting.
        message: String,
    },
    /// A write was not sent: its gate closed while the token was fetched (the replica's
    /// leader term ended; see [`super::ArmClient::with_write_gate`]).
    #[error(
        "{operation}: not sent: this replica's leader term ended, so it writes nothing more to Azure"
    )]
    WriteGateClosed {
        /// Azure's operationId.
        operation: &'static str,
    },
    /// The client's configuration is invalid, or a call is not possible with it.
    #[error("invalid Azure client configuration: {message}")]
    Config {
        /// What is wrong.
        message: String,
    },
}

fn ids_suffix(request_id: Option<&str>, correlation_id: Option<&str>) -> String {
    let ids: Vec<String> = [
        ("x-ms-request-id", request_id),
        ("x-ms-correlation-request-id", correlation_id),
    ]
    .into_iter()
    .filter_map(|(name, value)| value.map(|v| format!("{name}: {v}")))
    .collect();
    if ids.is_empty() {
        String::new()
    } else {
        format!(" ({})", ids.join(", "))
    }
}

fn display_azure(
    operation: &str,
    status: u16,
    detail: &AzureErrorDetail,
    request_id: Option<&str>,
    correlation_id: Option<&str>,
    retry_after: Option<Duration>,
) -> String {
    let retry = retry_after
        .map(|d| format!(" Retry after {}s.", d.as_secs()))
        .unwrap_or_default();
    format!(
        "{operation} failed with HTTP {status}: {detail}{retry}{}",
        ids_suffix(request_id, correlation_id)
    )
}

/// URLs can be over 4 KB; a message needs only their start.
fn shorten(url: &str) -> String {
    const MAX: usize = 200;
    match url.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}...", &url[..cut]),
        None => url.to_string(),
    }
}

impl ArmError {
    /// Who can fix it: 408, 429, 5xx, network and token trouble are transient; other HTTP
    /// errors (401, 403, 4xx) need a person; unreadable answers and configuration are bugs.
    pub fn class(&self) -> ErrorClass {
        match self {
            Self::Azure { status, .. } => match status {
                408 | 429 | 500.. => ErrorClass::Transient,
                _ => ErrorClass::NeedsPerson,
            },
            // Nothing was sent: whoever leads now sends it.
            Self::Network { .. } | Self::Auth { .. } | Self::WriteGateClosed { .. } => {
                ErrorClass::Transient
            }
            Self::Decode { .. }
            | Self::Redirected { .. }
            | Self::ResponseTooLarge { .. }
            | Self::ForeignPollUrl { .. }
            | Self::PollPathRefused { .. }
            | Self::Config { .. } => ErrorClass::Bug,
        }
    }

    /// How long Azure asked to wait (`Retry-After`), when it did.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Azure { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// Azure's error code.
    pub fn code(&self) -> Option<&str> {
        match self {
            Self::Azure { detail, .. } => Some(&detail.code),
            _ => None,
        }
    }

    /// The HTTP status of Azure's answer.
    pub fn http_status(&self) -> Option<u16> {
        match self {
            Self::Azure { status, .. }
            | Self::Decode { status, .. }
            | Self::Redirected { status, .. }
            | Self::ResponseTooLarge { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Azure's error detail, for an error answer.
    pub fn azure_detail(&self) -> Option<&AzureErrorDetail> {
        match self {
            Self::Azure { detail, .. } => Some(detail),
            _ => None,
        }
    }
}
