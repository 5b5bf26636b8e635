//! What every answer to the operator's HTTP requests (ARM and token endpoints) must respect:
//! no redirects (a 307 would re-send a PUT body, a client secret or an assertion to wherever
//! it points) and a size limit on bodies, read chunk by chunk, so a broken or hostile endpoint
//! cannot exhaust the operator's memory.

use std::sync::Arc;

use azure_core::error::ErrorKind;
use azure_core::http::headers::{CONTENT_LENGTH, HeaderName, Headers};
use azure_core::http::{AsyncRawResponse, HttpClient, Request, Transport};
use futures::StreamExt;
use url::Url;

/// The largest response body the operator reads (ARM and token endpoints). A backup instance,
/// an operation status or a token is a few KB; a page of a vault's backup instances (ARM
/// pages at a few hundred) well under 1 MiB.
pub const MAX_RESPONSE_BYTES: usize = 4 * 1024 * 1024;

/// How an answer's body went past [`MAX_RESPONSE_BYTES`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Oversize {
    /// Its `Content-Length` says so; nothing of it was read.
    Declared(u64),
    /// It had no (or a false) `Content-Length`; reading stopped once this much had arrived.
    Streamed(usize),
}

impl std::fmt::Display for Oversize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let limit = MAX_RESPONSE_BYTES;
        match self {
            Self::Declared(length) => write!(
                f,
                "the body is {length} bytes (Content-Length), more than the {limit} bytes the operator reads; nothing of it was read"
            ),
            Self::Streamed(read) => write!(
                f,
                "the body went past the {limit} bytes the operator reads; reading stopped after {read} bytes"
            ),
        }
    }
}

impl Oversize {
    /// Refuses a body whose `Content-Length` is over the limit, before reading it.
    pub(crate) fn check_declared(length: Option<u64>) -> Result<(), Self> {
        match length {
            Some(length) if length > MAX_RESPONSE_BYTES as u64 => Err(Self::Declared(length)),
            _ => Ok(()),
        }
    }

    /// Refuses a body once `read` bytes of it arrived, when that is over the limit.
    pub(crate) fn check_read(read: usize) -> Result<(), Self> {
        if read > MAX_RESPONSE_BYTES {
            Err(Self::Streamed(read))
        } else {
            Ok(())
        }
    }
}

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
/// errors naming the host, and bodies capped at [`MAX_RESPONSE_BYTES`].
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

fn identity_error(host: &str, problem: impl std::fmt::Display) -> azure_core::Error {
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
        let host = request.url().host_str().unwrap_or_default().to_owned();
        let status = u16::from(response.status());
        let headers = response.headers();
        if (300..400).contains(&status) {
            let location = headers.get_optional_str(&HeaderName::from_static("location"));
            let problem = format!(
                "answered HTTP {status}, a redirect to host {}; redirects are not followed, so the credential was not sent again",
                redirect_host(location, request.url())
            );
            return Err(identity_error(&host, problem));
        }
        Oversize::check_declared(content_length(headers)).map_err(|e| identity_error(&host, e))?;
        let (status, headers, body) = response.deconstruct();
        let mut read = 0usize;
        // azure_identity collects the body and stops at the first error, so nothing past the
        // limit is kept.
        let capped = body.map(move |chunk| {
            let chunk = chunk?;
            read = read.saturating_add(chunk.len());
            Oversize::check_read(read).map_err(|e| identity_error(&host, e))?;
            Ok(chunk)
        });
        Ok(AsyncRawResponse::new(status, headers, Box::pin(capped)))
    }
}

fn content_length(headers: &Headers) -> Option<u64> {
    headers
        .get_optional_str(&CONTENT_LENGTH)
        .and_then(|v| v.trim().parse().ok())
}
