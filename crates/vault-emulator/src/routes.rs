//! The Data Protection endpoints: routing (case-insensitive, as ARM), then the checks ARM
//! makes before a provider sees a request (faults, token, api-version, write throttling).

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use http::header::{AUTHORIZATION, HeaderName, WWW_AUTHENTICATE};
use http::request::Parts;
use http::{Method, StatusCode};
use jiff::Timestamp;
use percent_encoding::percent_decode_str;

use super::keys::KeyedId;
use super::model::ErrorBody;
use super::reply::{self, Answer, Reply};
use super::shared::{DropConnection, RequestIds, Shared};
use super::state::{Budget, Ctx, Fault, Refusal, instance_key};
use dataprotection::ids::VaultId;
use dataprotection::operation_ids;

/// API versions the emulator answers (the article's and the recent stable ones).
pub const SUPPORTED_API_VERSIONS: [&str; 5] = [
    "2021-01-01",
    "2025-07-01",
    "2025-09-01",
    "2026-03-01",
    "2026-06-01",
];
/// Operation id under which requests that match no operation are counted.
pub const UNKNOWN_OPERATION: &str = "Unknown";
/// Remaining writes and deletes reported while throttling is off: the figures of the
/// article's transcripts.
const UNTHROTTLED_REMAINING_WRITES: u64 = 1199;
const UNTHROTTLED_REMAINING_DELETES: u64 = 14999;
/// ARM's request size limit.
const MAX_BODY: usize = 4 * 1024 * 1024;
/// The `malformedBody` fault's answer: a backup instance document cut off mid-string.
const TRUNCATED_BODY: &[u8] = br#"{"properties":{"protectionStatus":{"status":"Protection"#;

const REMAINING_WRITES: HeaderName =
    HeaderName::from_static("x-ms-ratelimit-remaining-subscription-writes");
const REMAINING_DELETES: HeaderName =
    HeaderName::from_static("x-ms-ratelimit-remaining-subscription-deletes");

/// Marks a captured segment in a pattern.
const ANY: &str = "{}";

const VAULT_PATTERN: [&str; 8] = [
    "subscriptions",
    ANY,
    "resourceGroups",
    ANY,
    "providers",
    "Microsoft.DataProtection",
    "backupVaults",
    ANY,
];

const OPERATION_PATTERN: [&str; 8] = [
    "subscriptions",
    ANY,
    "providers",
    "Microsoft.DataProtection",
    "locations",
    ANY,
    ANY,
    ANY,
];

// Not `dataprotection::ids::ProviderPath`: that parser refuses names the operator must never
// send (whitespace, `?`, `%`), while the emulator, like ARM, routes them and lets the
// provider's checks answer.
/// Matches `segments` against `pattern` (literal segments compared case-insensitively,
/// `ANY` captures a non-empty segment); returns the captures.
fn match_segments<'a>(segments: &[&'a str], pattern: &[&str]) -> Option<Vec<&'a str>> {
    if segments.len() != pattern.len() {
        return None;
    }
    let mut captures = Vec::new();
    for (segment, expected) in segments.iter().zip(pattern) {
        if *expected == ANY {
            if segment.is_empty() {
                return None;
            }
            captures.push(*segment);
        } else if !segment.eq_ignore_ascii_case(expected) {
            return None;
        }
    }
    Some(captures)
}

/// What a request path names.
enum Route {
    Validate(KeyedId),
    List(KeyedId),
    Instance(KeyedId, String),
    StopProtection(KeyedId, String),
    Sync(KeyedId, String),
    RecoveryPoints(KeyedId, String),
    /// findRestorableTimeRanges, validateRestore or restore (by its operationId).
    Restore(KeyedId, String, &'static str),
    Job(KeyedId, String),
    OperationStatus {
        subscription: String,
        id: String,
    },
    OperationResult {
        subscription: String,
        id: String,
    },
    Unknown,
}

impl Route {
    fn parse(path: &str) -> Self {
        let decoded: Vec<String> = path
            .trim_start_matches('/')
            .split('/')
            .map(|s| percent_decode_str(s).decode_utf8_lossy().into_owned())
            .collect();
        let segments: Vec<&str> = decoded.iter().map(String::as_str).collect();
        if let Some(c) = match_segments(&segments, &OPERATION_PATTERN) {
            let (subscription, id) = (c[0].to_owned(), c[3].to_owned());
            if c[2].eq_ignore_ascii_case("operationStatus") {
                return Self::OperationStatus { subscription, id };
            }
            if c[2].eq_ignore_ascii_case("operationResults") {
                return Self::OperationResult { subscription, id };
            }
            return Self::Unknown;
        }
        let n = VAULT_PATTERN.len();
        let Some(c) = segments
            .get(..n)
            .and_then(|head| match_segments(head, &VAULT_PATTERN))
        else {
            return Self::Unknown;
        };
        // Names no vault ID can hold (e.g. a decoded '/' or '?') name no route either.
        let Ok(vault) = VaultId::new(c[0], c[1], c[2]) else {
            return Self::Unknown;
        };
        let vault = KeyedId::from(&vault);
        let is = |s: &str, literal: &str| s.eq_ignore_ascii_case(literal);
        match &segments[n..] {
            [a] if is(a, "validateForBackup") => Self::Validate(vault),
            [a] if is(a, "backupInstances") => Self::List(vault),
            [a, name] if is(a, "backupInstances") && !name.is_empty() => {
                Self::Instance(vault, (*name).to_owned())
            }
            [a, id] if is(a, "backupJobs") && !id.is_empty() => Self::Job(vault, (*id).to_owned()),
            [a, name, action] if is(a, "backupInstances") && !name.is_empty() => {
                if is(action, "recoveryPoints") {
                    Self::RecoveryPoints(vault, (*name).to_owned())
                } else if is(action, "stopProtection") {
                    Self::StopProtection(vault, (*name).to_owned())
                } else if is(action, "sync") {
                    Self::Sync(vault, (*name).to_owned())
                } else if let Some(operation) = restore_operation(action) {
                    Self::Restore(vault, (*name).to_owned(), operation)
                } else {
                    Self::Unknown
                }
            }
            _ => Self::Unknown,
        }
    }

    /// Azure's operationId of this route and method (`None`: the method is not served).
    fn operation_id(&self, method: &Method) -> Option<&'static str> {
        Some(match (self, method.as_str()) {
            (Self::Validate(_), "POST") => operation_ids::VALIDATE_FOR_BACKUP,
            (Self::List(_), "GET") => operation_ids::LIST,
            (Self::Instance(..), "GET") => operation_ids::GET,
            (Self::Instance(..), "PUT") => operation_ids::CREATE_OR_UPDATE,
            (Self::Instance(..), "DELETE") => operation_ids::DELETE,
            (Self::StopProtection(..), "POST") => operation_ids::STOP_PROTECTION,
            (Self::Sync(..), "POST") => operation_ids::SYNC,
            (Self::RecoveryPoints(..), "GET") => operation_ids::RECOVERY_POINTS_LIST,
            (Self::Restore(.., operation), "POST") => operation,
            (Self::Job(..), "GET") => operation_ids::JOBS_GET,
            (Self::OperationStatus { .. }, "GET") => operation_ids::OPERATION_STATUS,
            (Self::OperationResult { .. }, "GET") => operation_ids::OPERATION_RESULT,
            _ => return None,
        })
    }

    /// The key of the backup instance a GET of it reads.
    fn read_instance(&self, method: &Method) -> Option<String> {
        match self {
            Self::Instance(vault, name) if *method == Method::GET => {
                Some(instance_key(&vault.key, name))
            }
            _ => None,
        }
    }

    /// The backup instance a write names (PUT, DELETE, stopProtection, sync).
    fn written_instance(&self, method: &Method) -> Option<(&KeyedId, &str)> {
        match self {
            Self::Instance(vault, name) if matches!(*method, Method::PUT | Method::DELETE) => {
                Some((vault, name))
            }
            Self::StopProtection(vault, name)
            | Self::Sync(vault, name)
            | Self::Restore(vault, name, operation_ids::TRIGGER_RESTORE)
                if *method == Method::POST =>
            {
                Some((vault, name))
            }
            _ => None,
        }
    }

    fn subscription(&self) -> &str {
        match self {
            Self::Validate(v)
            | Self::List(v)
            | Self::Instance(v, _)
            | Self::StopProtection(v, _)
            | Self::Sync(v, _)
            | Self::RecoveryPoints(v, _)
            | Self::Restore(v, ..)
            | Self::Job(v, _) => &v.subscription,
            Self::OperationStatus { subscription, .. }
            | Self::OperationResult { subscription, .. } => subscription,
            Self::Unknown => "",
        }
    }
}

/// The operationId of a restore action on a backup instance.
fn restore_operation(action: &str) -> Option<&'static str> {
    [
        (
            "findRestorableTimeRanges",
            operation_ids::FIND_RESTORABLE_TIME_RANGES,
        ),
        ("validateRestore", operation_ids::VALIDATE_FOR_RESTORE),
        ("restore", operation_ids::TRIGGER_RESTORE),
    ]
    .into_iter()
    .find(|(name, _)| action.eq_ignore_ascii_case(name))
    .map(|(_, operation)| operation)
}

/// Serves every non-admin request.
pub(crate) async fn arm(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let ids = request
        .extensions()
        .get::<RequestIds>()
        .cloned()
        .unwrap_or_else(RequestIds::fresh);
    let (parts, body) = request.into_parts();
    let route = Route::parse(parts.uri.path());
    let operation = route.operation_id(&parts.method);
    let name = operation.unwrap_or(UNKNOWN_OPERATION);
    // Judged on arrival, before faults, throttling or the write itself.
    let in_flight = route
        .written_instance(&parts.method)
        .is_some_and(|(vault, instance)| {
            shared
                .lock()
                .operation_running(vault, instance, Instant::now())
        });
    if in_flight {
        shared.count_in_flight_write(name);
    }
    // The instance a GET reads, counted when the service (not an injected fault) answers 200.
    let read_instance = route.read_instance(&parts.method);
    let mut served_get = None;
    let fault = shared.lock().roll_fault(name);
    let reply = match fault {
        Some(Fault::Drop) => {
            shared.count(name, 0, None);
            let mut response = Response::default();
            response.extensions_mut().insert(DropConnection);
            return response;
        }
        Some(Fault::InternalError(retry_after)) => Reply::error(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorBody::arm(
                "InternalServerError",
                "Encountered internal server error. (injected by the emulator)",
            ),
        )
        .retry_after(retry_after),
        Some(Fault::Unavailable(retry_after)) => Reply::error(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorBody::arm(
                "ServiceUnavailable",
                "The service is temporarily unavailable. Please retry after the time given in Retry-After. (injected by the emulator)",
            ),
        )
        .retry_after(retry_after),
        Some(Fault::MalformedBody) => Reply::body(StatusCode::OK, TRUNCATED_BODY.to_vec()),
        Some(Fault::EmptyBody) => Reply::body(StatusCode::OK, Vec::new()),
        slow => {
            if let Some(Fault::Slow(delay)) = slow {
                tokio::time::sleep(delay).await;
            }
            let reply = respond(&shared, &parts, route, operation, body, &ids)
                .await
                .unwrap_or_else(|error| error);
            served_get = read_instance.filter(|_| reply.status == StatusCode::OK);
            reply
        }
    };
    shared.count(name, reply.status.as_u16(), served_get);
    reply.into_response()
}

async fn respond(
    shared: &Shared,
    parts: &Parts,
    route: Route,
    operation: Option<&'static str>,
    body: Body,
    ids: &RequestIds,
) -> Answer {
    authenticate(shared, &parts.headers)?;
    let query = parts.uri.query().unwrap_or_default();
    let api_version = api_version(query)?;
    let unknown_type = || {
        Reply::error(
            StatusCode::NOT_FOUND,
            ErrorBody::arm(
                "InvalidResourceType",
                format!(
                    "The resource type of '{}' could not be found in the namespace 'Microsoft.DataProtection' for api version '{api_version}'. The emulator serves validateForBackup, backupInstances (GET, PUT, DELETE, list, stopProtection and sync, the last two from 2025-07-01; recoveryPoints, findRestorableTimeRanges, validateRestore and restore), backupJobs/{{id}} and locations/{{location}}/operationStatus|operationResults.",
                    parts.uri.path()
                ),
            ),
        )
    };
    let Some(operation) = operation else {
        return Err(match route {
            Route::Unknown => unknown_type(),
            _ => Reply::error(
                StatusCode::METHOD_NOT_ALLOWED,
                ErrorBody::arm(
                    "MethodNotAllowed",
                    format!(
                        "The requested resource does not support http method '{}'.",
                        parts.method
                    ),
                ),
            ),
        });
    };
    // The 2021-01-01 API had no stopProtection or sync.
    if api_version == "2021-01-01" && matches!(route, Route::StopProtection(..) | Route::Sync(..)) {
        return Err(unknown_type());
    }
    let is_write = matches!(parts.method, Method::PUT | Method::POST | Method::DELETE);
    let body = if is_write {
        axum::body::to_bytes(body, MAX_BODY).await.map_err(|_| {
            Reply::error(
                StatusCode::PAYLOAD_TOO_LARGE,
                ErrorBody::arm(
                    "RequestEntityTooLarge",
                    format!(
                        "The request content is larger than {MAX_BODY} bytes or could not be read."
                    ),
                ),
            )
        })?
    } else {
        Default::default()
    };
    let base = shared.base_url(&parts.headers);
    let ctx = Ctx {
        base: &base,
        api_version: &api_version,
        activity_id: &ids.correlation_id,
        now: Instant::now(),
        wall: Timestamp::now(),
    };
    let mut state = shared.lock();
    // Deletes spend ARM's delete budget and report it under their own header.
    let (budget, remaining_header, unthrottled) = if parts.method == Method::DELETE {
        (
            Budget::Deletes,
            REMAINING_DELETES,
            UNTHROTTLED_REMAINING_DELETES,
        )
    } else {
        (
            Budget::Writes,
            REMAINING_WRITES,
            UNTHROTTLED_REMAINING_WRITES,
        )
    };
    let remaining = if is_write {
        let left = state
            .take_write(route.subscription(), budget, ctx.now)
            .map_err(|retry| {
                throttled(route.subscription(), budget, retry).header(remaining_header.clone(), "0")
            })?;
        Some(left.unwrap_or(unthrottled))
    } else {
        None
    };
    let result = match &route {
        Route::Validate(vault) => state.validate_for_backup(&ctx, vault, &body),
        Route::List(vault) => {
            let token = query_param(query, "$skipToken");
            state.list_instances(&ctx, vault, token.as_deref())
        }
        Route::Instance(vault, name) => match operation {
            operation_ids::CREATE_OR_UPDATE => state.put_instance(&ctx, vault, name, &body),
            operation_ids::DELETE => state.delete_instance(&ctx, vault, name),
            _ => state.get_instance(&ctx, vault, name),
        },
        Route::StopProtection(vault, name) => state.instance_action(&ctx, vault, name, true),
        Route::Sync(vault, name) => state.instance_action(&ctx, vault, name, false),
        Route::RecoveryPoints(vault, name) => {
            let token = query_param(query, "$skipToken");
            state.list_recovery_points(&ctx, vault, name, token.as_deref())
        }
        Route::Restore(vault, name, operation) => match *operation {
            operation_ids::FIND_RESTORABLE_TIME_RANGES => {
                state.find_restorable_time_ranges(&ctx, vault, name, &body)
            }
            operation_ids::VALIDATE_FOR_RESTORE => state.validate_restore(&ctx, vault, name, &body),
            _ => state.trigger_restore(&ctx, vault, name, &body),
        },
        Route::Job(vault, id) => state.get_job(&ctx, vault, id),
        Route::OperationStatus { subscription, id } => {
            state.operation_status(&ctx, subscription, id)
        }
        Route::OperationResult { subscription, id } => {
            state.operation_result(&ctx, subscription, id)
        }
        Route::Unknown => Err(Refusal::InvalidContent("unroutable request".into())),
    };
    drop(state);
    let mut reply = reply::verdict(result, ctx.activity_id);
    if let Some(remaining) = remaining {
        reply = reply.header(remaining_header, remaining.to_string());
    }
    Ok(reply)
}

fn query_param(query: &str, name: &str) -> Option<String> {
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.into_owned())
}

fn api_version(query: &str) -> Result<String, Reply> {
    let Some(version) = query_param(query, "api-version") else {
        return Err(Reply::error(
            StatusCode::BAD_REQUEST,
            ErrorBody::arm(
                "MissingApiVersionParameter",
                "The api-version query parameter (?api-version=) is required for all requests.",
            ),
        ));
    };
    if SUPPORTED_API_VERSIONS.contains(&version.as_str()) {
        return Ok(version);
    }
    let mut supported = SUPPORTED_API_VERSIONS;
    supported.reverse();
    Err(Reply::error(
        StatusCode::BAD_REQUEST,
        ErrorBody::arm(
            "InvalidApiVersionParameter",
            format!(
                "The api-version '{version}' is invalid. The supported versions are '{}'.",
                supported.join(",")
            ),
        ),
    ))
}

fn authenticate(shared: &Shared, headers: &http::HeaderMap) -> Result<(), Reply> {
    let unauthorized = |code: &str, message: String, description: &str| {
        Reply::error(StatusCode::UNAUTHORIZED, ErrorBody::arm(code, message)).header(
            WWW_AUTHENTICATE,
            format!(
                "Bearer authorization_uri=\"https://login.windows.net/\", error=\"invalid_token\", error_description=\"{description}\""
            ),
        )
    };
    let Some(value) = headers.get(AUTHORIZATION) else {
        return Err(unauthorized(
            "AuthenticationFailed",
            "Authentication failed. The 'Authorization' header is missing.".into(),
            "The authentication failed because of missing 'Authorization' header.",
        ));
    };
    let token = value
        .to_str()
        .ok()
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("Bearer"))
        .map(|(_, token)| token.trim());
    let Some(token) = token else {
        return Err(unauthorized(
            "AuthenticationFailed",
            "Authentication failed. The 'Authorization' header is provided in an invalid format."
                .into(),
            "The authentication failed because of invalid 'Authorization' header.",
        ));
    };
    let config = shared.config();
    if config.expired_tokens.iter().any(|t| t == token) {
        let now = Timestamp::now();
        let expired = now
            .checked_sub(jiff::SignedDuration::from_hours(1))
            .unwrap_or(now);
        return Err(unauthorized(
            "ExpiredAuthenticationToken",
            format!(
                "The access token expiry UTC time '{}' is earlier than current UTC time '{}'.",
                expired.strftime("%Y-%m-%dT%H:%M:%SZ"),
                now.strftime("%Y-%m-%dT%H:%M:%SZ")
            ),
            "The access token has expired.",
        ));
    }
    if !config.tokens.iter().any(|t| t == token) {
        return Err(unauthorized(
            "InvalidAuthenticationToken",
            "The access token is invalid.".into(),
            "The access token is invalid.",
        ));
    }
    Ok(())
}

fn throttled(subscription: &str, budget: Budget, retry_after: u64) -> Reply {
    let kind = match budget {
        Budget::Writes => "write",
        Budget::Deletes => "delete",
    };
    Reply::error(
        StatusCode::TOO_MANY_REQUESTS,
        ErrorBody::arm(
            "SubscriptionRequestsThrottled",
            format!(
                "Number of '{kind}' requests for subscription '{subscription}' exceeded. Please try again after '{retry_after}' seconds after additional tokens are available. Refer to https://aka.ms/arm-throttling"
            ),
        ),
    )
    .retry_after(retry_after)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_match_any_casing_and_decode_names() {
        let vault =
            "/Subscriptions/s/resourcegroups/rg/providers/MICROSOFT.DATAPROTECTION/backupvaults/v";
        let route = Route::parse(&format!("{vault}/backupInstances/a%20b"));
        assert!(matches!(&route, Route::Instance(v, name) if v.name == "v" && name == "a b"));
        assert_eq!(
            route.operation_id(&Method::PUT),
            Some(operation_ids::CREATE_OR_UPDATE)
        );
        assert_eq!(route.operation_id(&Method::PATCH), None);
        let route = Route::parse(&format!("{vault}/backupInstances/x/STOPPROTECTION"));
        assert_eq!(
            route.operation_id(&Method::POST),
            Some(operation_ids::STOP_PROTECTION)
        );
        let route = Route::parse(
            "/subscriptions/s/providers/Microsoft.DataProtection/locations/westus/operationStatus/YQ==",
        );
        assert!(matches!(&route, Route::OperationStatus { id, .. } if id == "YQ=="));
        assert!(matches!(
            Route::parse(&format!("{vault}/backupPolicies/p")),
            Route::Unknown
        ));
        assert!(matches!(Route::parse("/"), Route::Unknown));
    }
}
