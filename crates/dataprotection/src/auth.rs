//! Token sources for ARM. Chosen explicitly (never a guessing chain): workload identity,
//! managed identity, client secret, Azure CLI (all from `azure_identity`, which caches and
//! refreshes tokens), and a static token for the emulator and debugging.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use azure_core::cloud::{CloudConfiguration, CustomConfiguration};
use azure_core::credentials::{AccessToken, Secret, TokenCredential, TokenRequestOptions};
use azure_core::error::ErrorKind;
use azure_core::http::{ClientOptions, Transport};
use azure_core::time::{Duration as AzDuration, OffsetDateTime};
use azure_identity::{
    AzureCliCredential, AzureCliCredentialOptions, ClientAssertionCredentialOptions,
    ClientSecretCredential, ClientSecretCredentialOptions, ManagedIdentityCredential,
    ManagedIdentityCredentialOptions, UserAssignedId, WorkloadIdentityCredential,
    WorkloadIdentityCredentialOptions,
};
use tokio::sync::Mutex;

use super::error::ArmError;
use super::transport::IdentityHttpClient;

const AZURE_CLIENT_ID: &str = "AZURE_CLIENT_ID";
const AZURE_TENANT_ID: &str = "AZURE_TENANT_ID";
const AZURE_FEDERATED_TOKEN_FILE: &str = "AZURE_FEDERATED_TOKEN_FILE";
const AZURE_AUTHORITY_HOST: &str = "AZURE_AUTHORITY_HOST";
const AZURE_ACCESS_TOKEN: &str = "AZURE_ACCESS_TOKEN";

/// How the operator gets its Azure access tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, clap::ValueEnum)]
#[value(rename_all = "kebab-case")]
pub enum AuthMode {
    /// AKS workload identity: `AZURE_CLIENT_ID`, `AZURE_TENANT_ID`,
    /// `AZURE_FEDERATED_TOKEN_FILE` (set by the workload identity webhook).
    #[default]
    WorkloadIdentity,
    /// The managed identity of the VM or App Service; a client ID picks a user-assigned one.
    ManagedIdentity,
    /// A service principal's client secret, read from a mounted file.
    ClientSecret,
    /// The account logged in to the Azure CLI (local development).
    AzureCli,
    /// A fixed token, from a token file or `AZURE_ACCESS_TOKEN` (emulator, debugging).
    StaticToken,
}

impl fmt::Display for AuthMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::WorkloadIdentity => "workload-identity",
            Self::ManagedIdentity => "managed-identity",
            Self::ClientSecret => "client-secret",
            Self::AzureCli => "azure-cli",
            Self::StaticToken => "static-token",
        })
    }
}

/// Settings of the token source. Unset values fall back to the environment variables Azure
/// SDKs read (`AZURE_CLIENT_ID`, `AZURE_TENANT_ID`, `AZURE_FEDERATED_TOKEN_FILE`,
/// `AZURE_AUTHORITY_HOST`, and `AZURE_ACCESS_TOKEN` for a static token).
#[derive(Clone, Default)]
pub struct AuthConfig {
    /// Which token source.
    pub mode: AuthMode,
    /// Client (application) ID; for managed identity, selects a user-assigned identity.
    pub client_id: Option<String>,
    /// Tenant (directory) ID.
    pub tenant_id: Option<String>,
    /// The Kubernetes service account token file (workload identity).
    pub federated_token_file: Option<PathBuf>,
    /// The file holding the client secret (client-secret).
    pub client_secret_file: Option<PathBuf>,
    /// The token itself (static-token).
    pub static_token: Option<String>,
    /// A file holding the token, re-read on every request (static-token).
    pub token_file: Option<PathBuf>,
    /// The Entra ID authority, e.g. `https://login.microsoftonline.us` (sovereign clouds).
    pub authority_host: Option<String>,
}

impl AuthConfig {
    /// static-token with the token itself: the vault emulator's, or one pasted for debugging.
    pub fn fixed_token(token: impl Into<String>) -> Self {
        Self {
            mode: AuthMode::StaticToken,
            static_token: Some(token.into()),
            ..Self::default()
        }
    }
}

impl fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthConfig")
            .field("mode", &self.mode)
            .field("client_id", &self.client_id)
            .field("tenant_id", &self.tenant_id)
            .field("federated_token_file", &self.federated_token_file)
            .field("client_secret_file", &self.client_secret_file)
            .field(
                "static_token",
                &self.static_token.as_ref().map(|_| "<redacted>"),
            )
            .field("token_file", &self.token_file)
            .field("authority_host", &self.authority_host)
            .finish()
    }
}

/// The credential for `config`, sending its token requests through `http` (which should not
/// follow redirects: [`super::default_http_client`]); a redirect is an error naming its host.
///
/// Errors name the mode and the missing environment variable or unreadable file.
pub fn credential(
    config: &AuthConfig,
    http: reqwest::Client,
) -> Result<Arc<dyn TokenCredential>, ArmError> {
    credential_with_transport(config, IdentityHttpClient::new(http).transport())
}

/// Like [`credential`], with any `azure_core` transport (tests answer token requests with one).
pub fn credential_with_transport(
    config: &AuthConfig,
    transport: Transport,
) -> Result<Arc<dyn TokenCredential>, ArmError> {
    let mode = config.mode;
    let client_options = ClientOptions {
        transport: Some(transport),
        cloud: setting(&config.authority_host, AZURE_AUTHORITY_HOST).map(|host| {
            let mut custom = CustomConfiguration::default();
            custom.authority_host = host;
            Arc::new(CloudConfiguration::from(custom))
        }),
        ..ClientOptions::default()
    };
    let azure = |e: azure_core::Error| ArmError::Auth {
        message: format!("{mode}: {}", error_chain(&e)),
    };
    let credential: Arc<dyn TokenCredential> = match mode {
        AuthMode::WorkloadIdentity => {
            let tenant_id = required(mode, &config.tenant_id, AZURE_TENANT_ID, "a tenant ID")?;
            let client_id = required(mode, &config.client_id, AZURE_CLIENT_ID, "a client ID")?;
            let token_file = config
                .federated_token_file
                .clone()
                .or_else(|| setting(&None, AZURE_FEDERATED_TOKEN_FILE).map(PathBuf::from))
                .ok_or_else(|| {
                    missing(mode, AZURE_FEDERATED_TOKEN_FILE, "a federated token file")
                })?;
            read_file(mode, &token_file, "federated token")?;
            WorkloadIdentityCredential::new(Some(WorkloadIdentityCredentialOptions {
                credential_options: ClientAssertionCredentialOptions { client_options },
                client_id: Some(client_id),
                tenant_id: Some(tenant_id),
                token_file_path: Some(token_file),
            }))
            .map_err(azure)?
        }
        AuthMode::ManagedIdentity => {
            let user_assigned_id =
                setting(&config.client_id, AZURE_CLIENT_ID).map(UserAssignedId::ClientId);
            ManagedIdentityCredential::new(Some(ManagedIdentityCredentialOptions {
                user_assigned_id,
                client_options,
            }))
            .map_err(azure)?
        }
        AuthMode::ClientSecret => {
            let tenant_id = required(mode, &config.tenant_id, AZURE_TENANT_ID, "a tenant ID")?;
            let client_id = required(mode, &config.client_id, AZURE_CLIENT_ID, "a client ID")?;
            let secret_file = config.client_secret_file.as_deref().ok_or_else(|| {
                config_error(
                    mode,
                    "needs a client secret file (--client-secret-file / BBO_CLIENT_SECRET_FILE)",
                )
            })?;
            let secret = read_file(mode, secret_file, "client secret")?;
            ClientSecretCredential::new(
                &tenant_id,
                client_id,
                Secret::new(secret),
                Some(ClientSecretCredentialOptions { client_options }),
            )
            .map_err(azure)?
        }
        AuthMode::AzureCli => {
            let cli = AzureCliCredential::new(Some(AzureCliCredentialOptions {
                tenant_id: config.tenant_id.clone(),
                ..AzureCliCredentialOptions::default()
            }))
            .map_err(azure)?;
            Arc::new(CachedCredential::new(cli))
        }
        AuthMode::StaticToken => {
            let source = match (
                setting(&config.static_token, AZURE_ACCESS_TOKEN),
                &config.token_file,
            ) {
                (Some(token), _) => StaticSource::Token(Secret::new(token)),
                (None, Some(path)) => {
                    read_file(mode, path, "token")?;
                    StaticSource::File(path.clone())
                }
                (None, None) => {
                    return Err(config_error(
                        mode,
                        "needs a token file (--token-file / BBO_TOKEN_FILE) or the token in AZURE_ACCESS_TOKEN",
                    ));
                }
            };
            Arc::new(StaticTokenCredential { source })
        }
    };
    Ok(credential)
}

/// The configured value, else the environment variable's; blank counts as unset.
fn setting(value: &Option<String>, env: &str) -> Option<String> {
    value
        .clone()
        .or_else(|| std::env::var(env).ok())
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

fn config_error(mode: AuthMode, what: &str) -> ArmError {
    ArmError::Config {
        message: format!("--azure-auth {mode} {what}"),
    }
}

fn missing(mode: AuthMode, env: &str, what: &str) -> ArmError {
    config_error(
        mode,
        &format!("needs {what}: the environment variable {env} is not set"),
    )
}

fn required(
    mode: AuthMode,
    value: &Option<String>,
    env: &str,
    what: &str,
) -> Result<String, ArmError> {
    setting(value, env).ok_or_else(|| missing(mode, env, what))
}

/// Reads a secret file, trimmed (mounted secrets often end in a newline).
fn read_file(mode: AuthMode, path: &Path, what: &str) -> Result<String, ArmError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        config_error(
            mode,
            &format!("cannot read the {what} file {}: {e}", path.display()),
        )
    })?;
    let text = text.trim();
    if text.is_empty() {
        return Err(config_error(
            mode,
            &format!("the {what} file {} is empty", path.display()),
        ));
    }
    Ok(text.to_string())
}

/// An error and its sources, as one line.
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    message
}

enum StaticSource {
    Token(Secret),
    File(PathBuf),
}

// azure_identity has no credential for a token obtained elsewhere; the emulator and
// debugging need one. A token file is re-read on every call so that rotating it works.
struct StaticTokenCredential {
    source: StaticSource,
}

impl fmt::Debug for StaticTokenCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let source = match &self.source {
            StaticSource::Token(_) => "token".to_string(),
            StaticSource::File(path) => path.display().to_string(),
        };
        f.debug_struct("StaticTokenCredential")
            .field("source", &source)
            .finish()
    }
}

#[async_trait::async_trait]
impl TokenCredential for StaticTokenCredential {
    async fn get_token(
        &self,
        _scopes: &[&str],
        _options: Option<TokenRequestOptions<'_>>,
    ) -> azure_core::Result<AccessToken> {
        let token = match &self.source {
            StaticSource::Token(secret) => secret.clone(),
            StaticSource::File(path) => {
                let text = tokio::fs::read_to_string(path).await.map_err(|e| {
                    azure_core::Error::with_message(
                        ErrorKind::Credential,
                        format!(
                            "static-token: cannot read the token file {}: {e}",
                            path.display()
                        ),
                    )
                })?;
                let text = text.trim();
                if text.is_empty() {
                    return Err(azure_core::Error::with_message(
                        ErrorKind::Credential,
                        format!("static-token: the token file {} is empty", path.display()),
                    ));
                }
                Secret::new(text.to_string())
            }
        };
        // The real expiry is unknown; a short nominal one keeps any cache re-reading it.
        Ok(AccessToken::new(
            token,
            OffsetDateTime::now_utc() + AzDuration::minutes(5),
        ))
    }
}

// AzureCliCredential runs `az` on every call and does not cache; the client asks for a token
// per request, so keep the token until shortly before it expires.
struct CachedCredential {
    inner: Arc<dyn TokenCredential>,
    cached: Mutex<Option<(Vec<String>, AccessToken)>>,
}

impl CachedCredential {
    fn new(inner: Arc<dyn TokenCredential>) -> Self {
        Self {
            inner,
            cached: Mutex::new(None),
        }
    }
}

impl fmt::Debug for CachedCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CachedCredential")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

#[async_trait::async_trait]
impl TokenCredential for CachedCredential {
    async fn get_token(
        &self,
        scopes: &[&str],
        options: Option<TokenRequestOptions<'_>>,
    ) -> azure_core::Result<AccessToken> {
        let key: Vec<String> = scopes.iter().map(|s| s.to_string()).collect();
        let mut cached = self.cached.lock().await;
        if let Some((cached_scopes, token)) = cached.as_ref()
            && *cached_scopes == key
            && token.expires_on > OffsetDateTime::now_utc() + AzDuration::minutes(5)
        {
            return Ok(token.clone());
        }
        let token = self.inner.get_token(scopes, options).await?;
        *cached = Some((key, token.clone()));
        Ok(token)
    }
}
