//! Long-running operations as data: where to poll, how long to wait, and what a status means.

use std::time::{Duration, SystemTime};

use http::HeaderMap;

use super::error::AzureErrorDetail;
use super::models::OperationResource;

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

/// The answer to one poll.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Poll {
    /// The operation's state.
    pub status: OperationStatus,
    /// Azure's `Retry-After` on this answer.
    pub retry_after: Option<Duration>,
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
}
