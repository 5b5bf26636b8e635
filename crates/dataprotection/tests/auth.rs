//! Token sources, offline: workload identity and client secret against a fake Entra ID token
//! endpoint (an azure_core transport that answers the token request), static tokens, and the
//! errors for missing files. Nothing here touches environment variables (see auth_from_environment.rs).

use std::sync::{Arc, Mutex};

use azure_core::http::{AsyncRawResponse, HttpClient, Request, StatusCode, Transport};
use dataprotection::auth::credential_with_transport;
use dataprotection::{ArmError, AuthConfig, AuthMode};

const SCOPE: &str = "https://management.azure.com/.default";
const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";

/// A fake Entra ID: answers every token request with `token` and records the requests.
#[derive(Debug)]
struct FakeEntra {
    token: &'static str,
    status: StatusCode,
    seen: Mutex<Vec<(String, String)>>,
}

impl FakeEntra {
    fn new(token: &'static str) -> Arc<Self> {
        Self::answering(token, StatusCode::Ok)
    }

    fn answering(token: &'static str, status: StatusCode) -> Arc<Self> {
        Arc::new(Self {
            token,
            status,
            seen: Mutex::new(Vec::new()),
        })
    }

    fn seen(&self) -> Vec<(String, String)> {
        self.seen.lock().unwrap().clone()
    }
}

#[async_trait::async_trait]
impl HttpClient for FakeEntra {
    async fn execute_request(&self, request: &Request) -> azure_core::Result<AsyncRawResponse> {
        let body = match request.body() {
            azure_core::http::Body::Bytes(bytes) => String::from_utf8_lossy(bytes).into_owned(),
            _ => String::new(),
        };
        self.seen
            .lock()
            .unwrap()
            .push((request.url().to_string(), body));
        let answer = if self.status == StatusCode::Ok {
            format!(
                r#"{{"token_type":"Bearer","expires_in":3600,"ext_expires_in":3600,"access_token":"{}"}}"#,
                self.token
            )
        } else {
            r#"{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret provided.","error_codes":[7000215]}"#.to_string()
        };
        Ok(AsyncRawResponse::from_bytes(
            self.status,
            azure_core::http::headers::Headers::new(),
            answer.into_bytes(),
        ))
    }
}

fn transport(fake: &Arc<FakeEntra>) -> Transport {
    Transport::new(fake.clone())
}

fn form(body: &str) -> Vec<(String, String)> {
    url::form_urlencoded::parse(body.as_bytes())
        .into_owned()
        .collect()
}

fn field<'a>(form: &'a [(String, String)], name: &str) -> &'a str {
    form.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("{name} missing in {form:?}"))
}

#[tokio::test]
async fn workload_identity_exchanges_the_federated_token() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("azure-identity-token");
    std::fs::write(&token_file, "kubernetes-service-account-jwt").unwrap();
    let fake = FakeEntra::new("workload-token");
    let config = AuthConfig {
        mode: AuthMode::WorkloadIdentity,
        client_id: Some("11111111-2222-3333-4444-555555555555".into()),
        tenant_id: Some(TENANT.into()),
        federated_token_file: Some(token_file),
        ..AuthConfig::default()
    };
    let credential = credential_with_transport(&config, transport(&fake)).unwrap();
    let token = credential.get_token(&[SCOPE], None).await.unwrap();
    assert_eq!(token.token.secret(), "workload-token");
    // Cached by azure_identity: a second call makes no request.
    credential.get_token(&[SCOPE], None).await.unwrap();
    let seen = fake.seen();
    assert_eq!(seen.len(), 1);
    let (url, body) = &seen[0];
    assert_eq!(
        url,
        &format!("https://login.microsoftonline.com/{TENANT}/oauth2/v2.0/token")
    );
    let form = form(body);
    assert_eq!(
        field(&form, "client_assertion"),
        "kubernetes-service-account-jwt"
    );
    assert_eq!(
        field(&form, "client_id"),
        "11111111-2222-3333-4444-555555555555"
    );
    assert_eq!(field(&form, "scope"), SCOPE);
    assert_eq!(field(&form, "grant_type"), "client_credentials");
}

#[tokio::test]
async fn client_secret_from_a_file_and_a_sovereign_authority() {
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("client-secret");
    std::fs::write(&secret_file, "s3cret\n").unwrap();
    let fake = FakeEntra::new("secret-token");
    let config = AuthConfig {
        mode: AuthMode::ClientSecret,
        client_id: Some("app".into()),
        tenant_id: Some(TENANT.into()),
        client_secret_file: Some(secret_file.clone()),
        authority_host: Some("https://login.microsoftonline.us".into()),
        ..AuthConfig::default()
    };
    let credential = credential_with_transport(&config, transport(&fake)).unwrap();
    let token = credential
        .get_token(&["https://management.usgovcloudapi.net/.default"], None)
        .await
        .unwrap();
    assert_eq!(token.token.secret(), "secret-token");
    let (url, body) = &fake.seen()[0];
    assert!(
        url.starts_with(&format!("https://login.microsoftonline.us/{TENANT}/")),
        "{url}"
    );
    assert_eq!(field(&form(body), "client_secret"), "s3cret");

    // Entra ID refusing the secret: an error that says so.
    let refusing = FakeEntra::answering("", StatusCode::Unauthorized);
    let credential = credential_with_transport(&config, transport(&refusing)).unwrap();
    let error = credential.get_token(&[SCOPE], None).await.unwrap_err();
    assert!(
        error.to_string().contains("ClientSecretCredential"),
        "{error}"
    );

    // Missing file: the mode and the path in the error.
    std::fs::remove_file(&secret_file).unwrap();
    let error = credential_with_transport(&config, transport(&fake)).unwrap_err();
    assert!(matches!(error, ArmError::Config { .. }), "{error:?}");
    let text = error.to_string();
    assert!(text.contains("--azure-auth client-secret"), "{text}");
    assert!(text.contains(&secret_file.display().to_string()), "{text}");

    // No file configured at all.
    let error = credential_with_transport(
        &AuthConfig {
            client_secret_file: None,
            ..config
        },
        transport(&fake),
    )
    .unwrap_err();
    assert!(error.to_string().contains("client secret file"), "{error}");
}

#[tokio::test]
async fn workload_identity_with_an_unreadable_token_file() {
    let missing = std::path::PathBuf::from("/nonexistent/azure-identity-token");
    let config = AuthConfig {
        mode: AuthMode::WorkloadIdentity,
        client_id: Some("app".into()),
        tenant_id: Some(TENANT.into()),
        federated_token_file: Some(missing.clone()),
        ..AuthConfig::default()
    };
    let error = credential_with_transport(&config, transport(&FakeEntra::new("x"))).unwrap_err();
    let text = error.to_string();
    assert!(text.contains("--azure-auth workload-identity"), "{text}");
    assert!(
        text.contains("cannot read the federated token file /nonexistent/azure-identity-token"),
        "{text}"
    );
}

#[tokio::test]
async fn static_tokens() {
    dataprotection::install_crypto_provider();
    let http = reqwest::Client::new();
    let config = AuthConfig::fixed_token("emulator-token");
    let credential = dataprotection::credential(&config, http.clone()).unwrap();
    let token = credential.get_token(&[SCOPE], None).await.unwrap();
    assert_eq!(token.token.secret(), "emulator-token");
    // The token is never printed.
    assert!(!format!("{config:?} {credential:?}").contains("emulator-token"));

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    std::fs::write(&file, "  from-file \n").unwrap();
    let config = AuthConfig {
        mode: AuthMode::StaticToken,
        token_file: Some(file.clone()),
        ..AuthConfig::default()
    };
    let credential = dataprotection::credential(&config, http.clone()).unwrap();
    assert_eq!(
        credential
            .get_token(&[SCOPE], None)
            .await
            .unwrap()
            .token
            .secret(),
        "from-file"
    );

    std::fs::write(&file, "").unwrap();
    let error = dataprotection::credential(&config, http).unwrap_err();
    assert!(error.to_string().contains("is empty"), "{error}");
}

#[test]
fn auth_modes_parse_as_kebab_case() {
    use clap::ValueEnum;
    for (text, mode) in [
        ("workload-identity", AuthMode::WorkloadIdentity),
        ("managed-identity", AuthMode::ManagedIdentity),
        ("client-secret", AuthMode::ClientSecret),
        ("azure-cli", AuthMode::AzureCli),
        ("static-token", AuthMode::StaticToken),
    ] {
        assert_eq!(AuthMode::from_str(text, false).unwrap(), mode);
        assert_eq!(mode.to_string(), text);
    }
    assert_eq!(AuthMode::default(), AuthMode::WorkloadIdentity);
}
