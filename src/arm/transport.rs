//! What every answer to the operator's HTTP requests (ARM and token endpoints) must respect:
//! no redirects (a 307 would re-send a PUT body, a client secret or an assertion to wherever
//! it points).

use std::sync::Arc;

use azure_core::error::ErrorKind;
use azure_core::http::headers::HeaderName;
use azure_core::http::{AsyncRawResponse, HttpClient, Request, Transport};
use url::Url;

/// The host (and port, when not the scheme's default) a redirect's `Location` points to,
/// resolved against the request's URL; never its path or query (which may carry secrets).
pub(crate) fn redirect_host(location: Option<&str>, request: &Url) -> String {
    let Some(location) = location else {
        return "(no Location header)".to_owned();
    };
    match request.join(location.trim()) {
        Ok(url) => match (url.host_str(), url.port()) {
            (Some(host), Some(port)) => format!("{host}:{port}"),
            (Some(host), None) => host.to_owned(),
            (None, _) => "(a Location without a host)".to_owned(),
        },
        Err(_) => "(an unreadable Location)".to_owned(),
    }
}

/// The transport of the token requests (`azure_identity`): the operator's HTTP client (which
/// must not follow redirects, see [`super::default_http_client`]) with redirects turned into
/// errors naming the host.
#[derive(Debug, Clone)]
pub struct IdentityHttpClient {
    http: reqwest::Client,
}

impl IdentityHttpClient {
    /// Token requests through `http`.
    pub fn new(http: reqwest::Client) -> Self {
        Self { http }
    }

    /// As an `azure_core` transport.
    pub fn transport(self) -> Transport {
        Transport::new(Arc::new(self))
    }
}

fn identity_error(request: &Request, problem: String) -> azure_core::Error {
    let host = request.url().host_str().unwrap_or_default().to_owned();
    // `Other`: azure_core's retry policy retries only connection and I/O errors.
    azure_core::Error::with_message(
        ErrorKind::Other,
        format!("token endpoint {host}: {problem}"),
    )
}

#[async_trait::async_trait]
impl HttpClient for IdentityHttpClient {
    async fn execute_request(&self, request: &Request) -> azure_core::Result<AsyncRawResponse> {
        let response = self.http.execute_request(request).await?;
        let status = u16::from(response.status());
        let headers = response.headers();
        if (300..400).contains(&status) {
            let location = headers.get_optional_str(&HeaderName::from_static("location"));
            let problem = format!(
                "answered HTTP {status}, a redirect to host {}; redirects are not followed, so the credential was not sent again",
                redirect_host(location, request.url())
            );
            return Err(identity_error(request, problem));
        }
        Ok(response)
    }
}
