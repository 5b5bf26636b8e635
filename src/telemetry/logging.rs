use std::io::IsTerminal;

use tracing::Subscriber;
use tracing_subscriber::{EnvFilter, fmt::MakeWriter, util::SubscriberInitExt};

use super::TelemetryError;

/// Filter used when `RUST_LOG` is unset: our own logs at info, the Kubernetes client's
/// (`kube`, `kube_client`, `kube_runtime`, `kube_lease_manager`: targets match by prefix)
/// only when something goes wrong.
pub const DEFAULT_LOG_FILTER: &str = "info,kube=warn";

/// Log line format (`--log-format`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line: the event's fields at the top level (for example
    /// `request_id`, `operation`) and the enclosing spans' fields under `span` (innermost) and
    /// `spans` (all). A span's own name is its `name` key, so put the resource's name in a field
    /// called `resource` (with `namespace`), not `name`.
    Json,
}

/// Installs the global `tracing` subscriber (and the `log` bridge) writing to stderr.
///
/// The filter comes from `RUST_LOG` when set, else [`DEFAULT_LOG_FILTER`]. Fails when
/// `RUST_LOG` is invalid or a subscriber is already installed.
pub fn init_logging(format: LogFormat) -> Result<(), TelemetryError> {
    let filter = filter_from(std::env::var(EnvFilter::DEFAULT_ENV).ok().as_deref())?;
    // stderr, so that commands printing to stdout (`crd`) stay pipeable.
    let ansi = std::io::stderr().is_terminal();
    subscriber(format, filter, std::io::stderr, ansi)
        .try_init()
        .map_err(|e| TelemetryError::LoggerInstalled(e.to_string()))
}

/// Parses `RUST_LOG`'s value, or the default filter when it is unset or blank.
fn filter_from(value: Option<&str>) -> Result<EnvFilter, TelemetryError> {
    match value.map(str::trim).filter(|v| !v.is_empty()) {
        None => Ok(EnvFilter::new(DEFAULT_LOG_FILTER)),
        Some(v) => EnvFilter::try_new(v).map_err(|e| TelemetryError::InvalidLogFilter {
            filter: v.to_owned(),
            message: e.to_string(),
        }),
    }
}

fn subscriber<W>(
    format: LogFormat,
    filter: EnvFilter,
    writer: W,
    ansi: bool,
) -> Box<dyn Subscriber + Send + Sync>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    match format {
        LogFormat::Text => Box::new(builder.with_ansi(ansi).finish()),
        LogFormat::Json => Box::new(
            builder
                .json()
                .flatten_event(true)
                .with_current_span(true)
                .with_span_list(true)
                .finish(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn capture(format: LogFormat, filter: &str, log: impl FnOnce()) -> String {
        let out = Captured::default();
        let writer = out.clone();
        let sub = subscriber(
            format,
            EnvFilter::new(filter),
            move || writer.clone(),
            false,
        );
        tracing::subscriber::with_default(sub, log);
        String::from_utf8(out.0.lock().unwrap().clone()).unwrap()
    }

    #[test]
    fn json_lines_carry_span_and_event_fields() {
        let out = capture(LogFormat::Json, "info", || {
            let span = tracing::info_span!("reconcile", resource = "photos", namespace = "team-a");
            let _g = span.enter();
            tracing::warn!(
                operation = "BackupInstances_CreateOrUpdate",
                request_id = "req-1",
                "azure said no"
            );
        });
        let line: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
        assert_eq!(line["level"], "WARN");
        assert_eq!(line["message"], "azure said no");
        assert_eq!(line["request_id"], "req-1");
        assert_eq!(line["operation"], "BackupInstances_CreateOrUpdate");
        assert_eq!(line["span"]["name"], "reconcile");
        assert_eq!(line["span"]["resource"], "photos");
        assert_eq!(line["span"]["namespace"], "team-a");
        assert_eq!(line["spans"][0]["resource"], "photos");
    }

    #[test]
    fn text_lines_and_filter() {
        let out = capture(LogFormat::Text, DEFAULT_LOG_FILTER, || {
            tracing::info!(target: "kube_runtime::controller", "chatty");
            tracing::warn!(target: "kube_client", "client trouble");
            tracing::info!(request_id = "req-2", "ours");
        });
        assert!(!out.contains("chatty"), "{out}");
        assert!(out.contains("client trouble"), "{out}");
        assert!(out.contains("ours request_id=\"req-2\""), "{out}");
    }

    #[test]
    fn rust_log_parsing() {
        assert!(filter_from(None).is_ok());
        assert!(filter_from(Some("  ")).is_ok());
        assert!(filter_from(Some("debug,hyper=info")).is_ok());
        let err = filter_from(Some("info,kube=notalevel")).unwrap_err();
        assert!(err.to_string().contains("kube=notalevel"), "{err}");
    }
}
