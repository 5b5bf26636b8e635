//! Token sources configured by environment variables: managed identity through
//! IDENTITY_ENDPOINT/IDENTITY_HEADER (the App Service protocol) against a local HTTP server,
//! workload identity from AZURE_* variables, and the errors naming missing variables.
//!
//! This binary holds exactly one test, which changes the environment only while no other
//! thread runs and no request is in flight: nothing else can race it.

use std::sync::{Arc, Mutex};

use axum::extract::{Request, State};
use azure_core::http::{AsyncRawResponse, HttpClient, StatusCode, Transport};
use dataprotection::auth::credential_with_transport;
use dataprotection::{ArmError, AuthConfig, AuthMode};

const SCOPE: &str = "https://management.azure.com/.default";
const VARS: [&str; 8] = [
    "IDENTITY_ENDPOINT",
    "IDENTITY_HEADER",
    "AZURE_CLIENT_ID",
    "AZURE_TENANT_ID",
    "AZURE_FEDERATED_TOKEN_FILE",
    "AZURE_AUTHORITY_HOST",
    "AZURE_ACCESS_TOKEN",
    "MSI_ENDPOINT",
];

fn set(name: &str, value: &str) {
    // SAFETY: the only test in this process; no other thread reads the environment now.
    unsafe { std::env::set_var(name, value) }
}

fn clear() {
    for name in VARS {
        // SAFETY: as in `set`.
        unsafe { std::env::remove_var(name) }
    }
}

type Seen = Arc<Mutex<Vec<(String, Option<String>)>>>;

/// The managed identity endpoint: records the query and the secret header, answers a token.
async fn identity_endpoint(State(seen): State<Seen>, request: Request) -> String {
    let secret = request
        .headers()
        .get("x-identity-header")
        .map(|v| v.to_str().unwrap().to_string());
    seen.lock().unwrap().push((
        request.uri().query().unwrap_or_default().to_string(),
        secret,
    ));
    let expires_on = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    format!(
        r#"{{"access_token":"managed-token","expires_on":"{expires_on}","resource":"https://management.azure.com","token_type":"Bearer"}}"#
    )
}

/// Answers the Entra ID token request of the workload identity credential.
#[derive(Debug, Default)]
struct FakeEntra(Mutex<Vec<String>>);

#[async_trait::async_trait]
impl HttpClient for FakeEntra {
    async fn execute_request(
        &self,
        request: &azure_core::http::Request,
    ) -> azure_core::Result<AsyncRawResponse> {
        self.0.lock().unwrap().push(request.url().to_string());
        Ok(AsyncRawResponse::from_bytes(
            StatusCode::Ok,
            azure_core::http::headers::Headers::new(),
            br#"{"token_type":"Bearer","expires_in":3600,"access_token":"workload-token"}"#
                .to_vec(),
        ))
    }
}

fn mode(mode: AuthMode) -> AuthConfig {
    AuthConfig {
        mode,
        ..AuthConfig::default()
    }
}

fn config_error(result: Result<impl std::fmt::Debug, ArmError>) -> String {
    let error = result.unwrap_err();
    assert!(matches!(error, ArmError::Config { .. }), "{error:?}");
    error.to_string()
}

#[test]
fn environment_configured_credentials() {
    clear();
    let dir = tempfile::tempdir().unwrap();
    dataprotection::install_crypto_provider();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let http = reqwest::Client::new();

        // Managed identity, App Service protocol, a user-assigned identity by client ID.
        let seen = Seen::default();
        let app = axum::Router::new()
            .fallback(identity_endpoint)
            .with_state(seen.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        set("IDENTITY_ENDPOINT", &format!("http://{address}/msi/token"));
        set("IDENTITY_HEADER", "identity-secret");
        let config = AuthConfig {
            client_id: Some("user-assigned-client".into()),
            ..mode(AuthMode::ManagedIdentity)
        };
        let credential = dataprotection::credential(&config, http.clone()).unwrap();
        let token = credential.get_token(&[SCOPE], None).await.unwrap();
        assert_eq!(token.token.secret(), "managed-token");
        let (query, secret) = seen.lock().unwrap()[0].clone();
        let query: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes())
            .into_owned()
            .collect();
        assert!(query.contains(&("resource".into(), "https://management.azure.com".into())), "{query:?}");
        assert!(query.contains(&("client_id".into(), "user-assigned-client".into())), "{query:?}");
        assert_eq!(secret.as_deref(), Some("identity-secret"));
        clear();

        // Workload identity from the variables the AKS webhook sets.
        let token_file = dir.path().join("token");
        std::fs::write(&token_file, "sa-jwt").unwrap();
        set("AZURE_CLIENT_ID", "app-id");
        set("AZURE_TENANT_ID", "tenant-id");
        set("AZURE_FEDERATED_TOKEN_FILE", token_file.to_str().unwrap());
        let fake = Arc::new(FakeEntra::default());
        let credential = credential_with_transport(
            &mode(AuthMode::WorkloadIdentity),
            Transport::new(fake.clone()),
        )
        .unwrap();
        let token = credential.get_token(&[SCOPE], None).await.unwrap();
        assert_eq!(token.token.secret(), "workload-token");
        assert_eq!(
            fake.0.lock().unwrap()[0],
            "https://login.microsoftonline.com/tenant-id/oauth2/v2.0/token"
        );

        // Each missing variable is named.
        for (missing, what) in [
            ("AZURE_FEDERATED_TOKEN_FILE", "a federated token file"),
            ("AZURE_CLIENT_ID", "a client ID"),
            ("AZURE_TENANT_ID", "a tenant ID"),
        ] {
            // SAFETY: as in `set`; no request is in flight.
            unsafe { std::env::remove_var(missing) };
            let text = config_error(dataprotection::credential(&mode(AuthMode::WorkloadIdentity), http.clone()));
            assert!(
                text.contains(&format!("--azure-auth workload-identity needs {what}: the environment variable {missing} is not set")),
                "{text}"
            );
        }
        // A token file that does not exist, named with its path.
        set("AZURE_TENANT_ID", "tenant-id");
        set("AZURE_CLIENT_ID", "app-id");
        set("AZURE_FEDERATED_TOKEN_FILE", "/var/run/secrets/azure/tokens/missing");
        let text = config_error(dataprotection::credential(&mode(AuthMode::WorkloadIdentity), http.clone()));
        assert!(text.contains("/var/run/secrets/azure/tokens/missing"), "{text}");
        clear();

        // Client secret needs a tenant too.
        let text = config_error(dataprotection::credential(&mode(AuthMode::ClientSecret), http.clone()));
        assert!(text.contains("AZURE_TENANT_ID"), "{text}");

        // Static token: AZURE_ACCESS_TOKEN, or nothing at all.
        let text = config_error(dataprotection::credential(&mode(AuthMode::StaticToken), http.clone()));
        assert!(text.contains("--token-file") && text.contains("AZURE_ACCESS_TOKEN"), "{text}");
        set("AZURE_ACCESS_TOKEN", "env-token");
        let credential = dataprotection::credential(&mode(AuthMode::StaticToken), http.clone()).unwrap();
        assert_eq!(credential.get_token(&[SCOPE], None).await.unwrap().token.secret(), "env-token");
        clear();
    });
}
