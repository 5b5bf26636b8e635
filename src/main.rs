//! The `blob-backup-operator` command line: `run` (the controller), `crd` (print the CRD
//! YAML) and, when built with the `embedded-vault` feature, `vault-emulator` (serve the local
//! Data Protection emulator). Everything else is in the library; this file only turns flags
//! into its configuration.

use std::collections::BTreeSet;
#[cfg(feature = "embedded-vault")]
use std::net::Ipv4Addr;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use blob_backup_operator::api::crd_yamls;
use blob_backup_operator::controller::decide::Timing;
use blob_backup_operator::controller::grants::VaultAccess;
use blob_backup_operator::controller::kubernetes_version;
use blob_backup_operator::controller::leader::{LeaderElectionConfig, run_as_leader};
use blob_backup_operator::controller::{self, ControllerConfig, KubeClients, WriteBudget};
use blob_backup_operator::telemetry::{self, HealthState, LogFormat, Metrics, Role};
use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::parser::ValueSource;
use clap::{ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use dataprotection::{
    self, ArmClient, ArmConfig, AuthConfig, AuthMode, DEFAULT_API_VERSION, DEFAULT_ENDPOINT,
};
use tokio::sync::watch;
use tracing::{info, warn};
#[cfg(feature = "embedded-vault")]
use vault_emulator::{EmulatorArgs, EmulatorConfig, RunningEmulator};

// The allocator is chosen, not inherited: glibc's per-thread arenas held about a third of the
// peak at 10,000 resources, and musl's (the container image) is slow under contention.
// mimalloc gives both builds one compact allocator, so the benchmark measures what ships.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `purge_delay` option (its enum `mi_option_e`; the sys crate leaves it unnamed).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Has mimalloc give freed pages back to the system at once rather than a second later
/// (its default): at 10,000 resources the churn of watch events and status writes kept a few
/// MiB of freed pages resident (BENCHMARKS.md, "Memory"). `MIMALLOC_PURGE_DELAY` still
/// overrides it.
fn return_freed_memory_at_once() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets one of mimalloc's options, which it allows at any time.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0) };
    }
}

/// How long a leader waits for its reconciles in flight after SIGTERM before it lets go of
/// them (Kubernetes' default termination grace period is 30 s).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);

/// Exit code of a failure while running: Kubernetes or Azure unreachable or refusing, the
/// metrics address taken, a Kubernetes too old, leader election failing.
const EXIT_RUNTIME: u8 = 1;
/// Exit code of a refused command line (a flag, an environment variable or their combination),
/// the code clap uses for its own refusals.
const EXIT_USAGE: u8 = 2;

/// Azure Blob backup, declared as Kubernetes resources (BlobBackupInstance).
///
/// Exit codes: 0 after a clean stop, 1 on a failure while running, 2 when the command line or
/// an environment variable is refused.
// args_override_self: the last occurrence of a flag wins, so the Helm chart's extraArgs can
// override a flag the chart sets.
#[derive(Debug, Parser)]
#[command(
    name = "blob-backup-operator",
    version,
    propagate_version = true,
    args_override_self = true
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the controller: reconcile BlobBackupInstance resources against Azure.
    Run(Box<RunArgs>),
    /// Print the CustomResourceDefinitions (BlobBackupInstance, BackupVaultGrant, BlobRestore) as
    /// YAML.
    Crd(CrdArgs),
    /// Serve the local Azure Data Protection emulator (the article's vault and account).
    #[cfg(feature = "embedded-vault")]
    VaultEmulator(EmulatorArgs),
}

#[derive(Debug, Args)]
struct CrdArgs {
    /// Only the CRD of this plural (blobbackupinstances, backupvaultgrants, blobrestores), as
    /// crds/<PLURAL>.yaml holds it; default: every CRD, as one multi-document YAML.
    #[arg(value_name = "PLURAL")]
    plural: Option<String>,
}

#[derive(Debug, Args)]
struct RunArgs {
    /// Azure Resource Manager endpoint (sovereign clouds have their own); plain http only to
    /// loopback addresses. [default: https://management.azure.com]
    #[arg(long, env = "BBO_ARM_ENDPOINT", value_name = "URL", value_parser = parse_url)]
    arm_endpoint: Option<url::Url>,

    /// Microsoft.DataProtection api-version of every call (2021-01-01 works, without
    /// deletionPolicy Retain).
    #[arg(long, env = "BBO_API_VERSION", value_name = "VERSION", default_value = DEFAULT_API_VERSION)]
    api_version: String,

    /// Where Azure tokens come from. workload-identity reads AZURE_CLIENT_ID,
    /// AZURE_TENANT_ID and AZURE_FEDERATED_TOKEN_FILE; managed-identity optionally
    /// AZURE_CLIENT_ID; client-secret needs --client-secret-file, AZURE_CLIENT_ID and
    /// AZURE_TENANT_ID; static-token needs --token-file or AZURE_ACCESS_TOKEN.
    /// AZURE_AUTHORITY_HOST selects a sovereign cloud's Entra ID. [default: workload-identity]
    #[arg(long, env = "BBO_AZURE_AUTH", value_enum, value_name = "MODE")]
    azure_auth: Option<AuthMode>,

    /// File holding the bearer token (static-token); re-read on every request.
    #[arg(long, env = "BBO_TOKEN_FILE", value_name = "PATH")]
    token_file: Option<PathBuf>,

    /// File holding the service principal's client secret (client-secret).
    #[arg(long, env = "BBO_CLIENT_SECRET_FILE", value_name = "PATH")]
    client_secret_file: Option<PathBuf>,

    /// Namespace whose BlobBackupInstance resources are reconciled; empty: all namespaces.
    #[arg(
        long,
        env = "BBO_WATCH_NAMESPACE",
        value_name = "NAMESPACE",
        default_value = "",
        value_parser = parse_namespace
    )]
    watch_namespace: String,

    /// Resources reconciled at once (1 to 65535); one resource is never reconciled twice at
    /// once.
    #[arg(long, env = "BBO_CONCURRENCY", value_name = "N", default_value_t = 16,
          value_parser = clap::value_parser!(u16).range(1..))]
    concurrency: u16,

    /// How often a settled resource is compared with Azure again to notice drift (e.g. 30s,
    /// 10m, 1h).
    #[arg(long, env = "BBO_RESYNC_INTERVAL", value_name = "DURATION", default_value = "10m",
          value_parser = parse_duration)]
    resync_interval: Duration,

    /// Longest wait between retries while a resource is Stalled (retries start at 10s and
    /// double), since a person may fix Azure without touching the resource.
    #[arg(long, env = "BBO_STALLED_RETRY_MAX", value_name = "DURATION", default_value = "2m",
          value_parser = parse_duration)]
    stalled_retry_max: Duration,

    /// Longest wait Azure's `Retry-After` may impose (on throttling, accepted operations and
    /// polls; for a 429 on a write, on every Azure write to its subscription): longer waits
    /// are cut to this (1s to 24h).
    #[arg(long, env = "BBO_RETRY_AFTER_MAX", value_name = "DURATION", default_value = "5m",
          value_parser = parse_retry_after_max)]
    retry_after_max: Duration,

    /// Azure writes (validate, PUT, stopProtection, sync) sent at once to one subscription
    /// before the operator paces itself: the size of ARM's write bucket of a subscription
    /// (200); DELETEs have a bucket of this size of their own, as in ARM. The operator never
    /// assumes more than the writes left that Azure reports on each write, so other clients
    /// of the subscription are seen.
    #[arg(long, env = "BBO_AZURE_WRITE_BURST", value_name = "WRITES", default_value_t = 200,
          value_parser = clap::value_parser!(u32).range(1..))]
    azure_write_burst: u32,

    /// Azure writes (and deletes) per second and subscription once the burst is spent: ARM's
    /// refill rate (10).
    #[arg(long, env = "BBO_AZURE_WRITE_RATE", value_name = "PER_SECOND", default_value_t = 10.0,
          value_parser = parse_write_rate)]
    azure_write_rate: f64,

    /// Address serving /metrics (Prometheus), /healthz and /readyz: HOST:PORT, or :PORT for
    /// every IPv4 interface (as controller-runtime writes it).
    #[arg(
        long,
        env = "BBO_METRICS_ADDR",
        value_name = "ADDR",
        default_value = "0.0.0.0:8080",
        value_parser = parse_listen_addr
    )]
    metrics_addr: SocketAddr,

    /// Log line format (the filter comes from RUST_LOG, default info).
    #[arg(long, env = "BBO_LOG_FORMAT", value_enum, value_name = "FORMAT", default_value_t = LogFormat::Text)]
    log_format: LogFormat,

    /// Run the controller only while holding a Lease, so that of several replicas one works
    /// and the others stand by. The Lease lives in --leader-election-namespace, else in
    /// POD_NAMESPACE.
    #[arg(long, env = "BBO_LEADER_ELECT")]
    leader_elect: bool,

    /// Namespace of the leader election Lease (default: POD_NAMESPACE).
    #[arg(long, env = "BBO_LEADER_ELECTION_NAMESPACE", value_name = "NAMESPACE",
          value_parser = parse_namespace)]
    leader_election_namespace: Option<String>,

    /// Name of the leader election Lease, shared by the replicas.
    #[arg(
        long,
        env = "BBO_LEADER_ELECTION_LEASE_NAME",
        value_name = "NAME",
        default_value = "blob-backup-operator"
    )]
    leader_election_lease_name: String,

    /// Start the vault emulator inside this process (127.0.0.1, a free port, the article's
    /// vault testBkpVault and account msblobbackup) and use it instead of Azure: try the
    /// operator without an Azure subscription. Excludes the Azure flags.
    #[arg(long, env = "BBO_EMBEDDED_VAULT")]
    embedded_vault: bool,

    /// Which vaults a namespace may use: grants (only those a cluster-scoped BackupVaultGrant
    /// grants it: multi-team clusters) or open (every vault, with adoption of untagged backup
    /// instances: one-team clusters). [default: grants; open with --embedded-vault]
    #[arg(long, env = "BBO_VAULT_ACCESS", value_enum, value_name = "MODE")]
    vault_access: Option<VaultAccess>,

    /// This cluster's name in the owner tags of backup instances (blobbackup.io/cluster).
    /// Default: the uid of the kube-system namespace. Set it when two clusters must be told
    /// apart by a name, or the operator may not read namespaces.
    #[arg(long, env = "BBO_CLUSTER_ID", value_name = "ID", value_parser = parse_cluster_id)]
    cluster_id: Option<String>,

    /// Start even when the Kubernetes API server is older than the oldest version this
    /// operator supports (it then only warns). For test servers such as envtest's; on an
    /// unsupported cluster the CRD's validation rules are not enforced.
    #[arg(long, env = "BBO_ALLOW_UNSUPPORTED_KUBERNETES")]
    allow_unsupported_kubernetes: bool,

    /// The settings whose value came from their environment variable, by argument id.
    #[arg(skip)]
    from_env: BTreeSet<String>,
}

/// The environment variable of a `run` flag: `BBO_` and the flag's name (a test holds every
/// flag to it).
fn env_var_of(id: &str) -> String {
    format!("BBO_{}", id.to_uppercase())
}

/// Parses the command line; on a refusal prints clap's message, naming the environment
/// variable when the refused value came from one, and exits with [`EXIT_USAGE`].
fn parse_command_line() -> Cli {
    let matches = Cli::command()
        .try_get_matches()
        .unwrap_or_else(|error| exit_refused(error));
    let mut cli = Cli::from_arg_matches(&matches).unwrap_or_else(|error| exit_refused(error));
    if let (Command::Run(args), Some(("run", run))) = (&mut cli.command, matches.subcommand()) {
        args.from_env = given_by_environment(run);
    }
    cli
}

fn given_by_environment(matches: &ArgMatches) -> BTreeSet<String> {
    matches
        .ids()
        .filter(|id| matches.value_source(id.as_str()) == Some(ValueSource::EnvVariable))
        .map(|id| id.as_str().to_owned())
        .collect()
}

fn exit_refused(error: clap::Error) -> ! {
    if matches!(
        error.kind(),
        ErrorKind::ValueValidation | ErrorKind::InvalidValue
    ) && let Some(ContextValue::String(arg)) = error.get(ContextKind::InvalidArg)
    {
        // clap names the flag (`--concurrency <N>`) even when the value came from its
        // environment variable: say which one it was.
        let flag = arg.split_whitespace().next().unwrap_or(arg);
        let on_command_line =
            std::env::args().any(|given| given == flag || given.starts_with(&format!("{flag}=")));
        let env = env_var_of(&flag.trim_start_matches("--").replace('-', "_"));
        if !on_command_line && std::env::var_os(&env).is_some() {
            let text = error.render().to_string().replacen(
                &format!("'{arg}'"),
                &format!("'{arg}' (from environment variable {env})"),
                1,
            );
            eprint!("{text}");
            std::process::exit(EXIT_USAGE.into());
        }
    }
    // clap exits 2 on usage errors, 0 for --help and --version.
    error.exit()
}
/// `HOST:PORT`, or `:PORT` for every IPv4 interface (controller-runtime's form).
fn parse_listen_addr(text: &str) -> Result<SocketAddr, String> {
    let text = text.trim();
    let full = match text.strip_prefix(':') {
        Some(port) => format!("0.0.0.0:{port}"),
        None => text.to_owned(),
    };
    full.parse().map_err(|_| {
        "write an address and port such as 0.0.0.0:8080 or 127.0.0.1:8080, or :8080 for every interface".to_owned()
    })
}

/// An absolute URL; a bare host name gets the hint to add its scheme.
fn parse_url(text: &str) -> Result<url::Url, String> {
    let text = text.trim();
    // "localhost:8090" parses as a URL of scheme "localhost": require the "://".
    if !text.contains("://") {
        return Err(format!("add https:// (https://{text})"));
    }
    url::Url::parse(text)
        .map_err(|e| format!("{e} (write a URL such as https://management.azure.com)"))
}

/// A namespace name: an RFC 1123 label (lowercase letters, digits and '-', at most 63, starting
/// and ending with a letter or digit), as the API server requires; empty means none. Written
/// here because the rule is one line and the crates that carry it bring a Kubernetes API model.
fn parse_namespace(text: &str) -> Result<String, String> {
    let name = text.trim();
    let alphanumeric = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    let valid = name.is_empty()
        || (name.len() <= 63
            && name.chars().all(|c| alphanumeric(c) || c == '-')
            && name.starts_with(alphanumeric)
            && name.ends_with(alphanumeric));
    if valid {
        Ok(name.to_owned())
    } else {
        Err("not a valid namespace name: use at most 63 lowercase letters, digits and '-', starting and ending with a letter or digit".to_owned())
    }
}

/// An ARM tag value: 1 to 256 characters, without the characters ARM refuses in tags.
fn parse_cluster_id(text: &str) -> Result<String, String> {
    let id = text.trim();
    if id.is_empty() || id.len() > 256 || id.contains(['<', '>', '%', '&', '\\', '?', '/']) {
        return Err("use 1 to 256 characters, none of < > % & \\ ? /".to_owned());
    }
    Ok(id.to_owned())
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let duration = humantime::parse_duration(text.trim())
        .map_err(|e| format!("{e} (write a duration such as 30s, 10m or 1h)"))?;
    if duration.is_zero() {
        return Err("must be longer than 0s".to_owned());
    }
    Ok(duration)
}

fn parse_retry_after_max(text: &str) -> Result<Duration, String> {
    let duration = parse_duration(text)?;
    let shortest = Timing::default().retry_after_min;
    let longest = Duration::from_secs(24 * 3600);
    if duration < shortest || duration > longest {
        return Err(format!(
            "must be between {} and {}",
            humantime::format_duration(shortest),
            humantime::format_duration(longest)
        ));
    }
    Ok(duration)
}

fn parse_write_rate(text: &str) -> Result<f64, String> {
    let rate: f64 = text
        .trim()
        .parse()
        .map_err(|_| "write a number of writes per second, such as 10 or 0.5".to_owned())?;
    // Below one write an hour the pacer would stop writing altogether; above a million the
    // interval rounds to nothing.
    if !(1.0 / 3600.0..=1_000_000.0).contains(&rate) {
        return Err("must be between 0.0003 (one an hour) and 1000000".to_owned());
    }
    Ok(rate)
}

/// Where Azure is and how to authenticate, as the flags say.
enum Azure {
    /// The real ARM endpoint (or another one given by --arm-endpoint).
    Endpoint {
        config: ArmConfig,
        auth: Box<AuthConfig>,
    },
    /// The emulator in this process.
    #[cfg(feature = "embedded-vault")]
    Embedded { api_version: String },
}

/// Everything `run` needs, checked.
struct Plan {
    azure: Azure,
    controller: ControllerConfig,
    metrics_addr: SocketAddr,
    log_format: LogFormat,
    leader: Option<LeaderElectionConfig>,
    allow_unsupported_kubernetes: bool,
}

/// An environment variable's value; blank counts as unset.
fn env_setting(name: &str) -> Option<String> {
    std::env::var(name).ok().as_deref().and_then(non_blank)
}

/// A setting's trimmed value; blank counts as unset.
fn non_blank(value: &str) -> Option<String> {
    Some(value.trim().to_owned()).filter(|v| !v.is_empty())
}

impl RunArgs {
    /// How a setting was given, for error messages: `--flag`, with its environment variable
    /// when the value came from there.
    fn given(&self, id: &str) -> String {
        let flag = format!("--{}", id.replace('_', "-"));
        if self.from_env.contains(id) {
            format!("{flag} (environment variable {})", env_var_of(id))
        } else {
            flag
        }
    }

    /// `--embedded-vault`: the emulator in this process, when the binary has one.
    #[cfg(feature = "embedded-vault")]
    fn embedded_azure(&self) -> Result<Azure> {
        Ok(Azure::Embedded {
            api_version: self.api_version.clone(),
        })
    }

    /// `--embedded-vault` in a build without the emulator (the container image): refused.
    #[cfg(not(feature = "embedded-vault"))]
    fn embedded_azure(&self) -> Result<Azure> {
        bail!(
            "{}: this binary was built without the vault emulator (cargo feature embedded-vault; the container image leaves it out): drop it and point --arm-endpoint at Azure, or run a build with the feature (cargo run)",
            self.given("embedded_vault")
        )
    }

    /// Checks the flags together and refuses combinations that cannot work.
    fn plan(self) -> Result<Plan> {
        let azure = if self.embedded_vault {
            let conflicting: Vec<String> = [
                ("arm_endpoint", self.arm_endpoint.is_some()),
                ("azure_auth", self.azure_auth.is_some()),
                ("token_file", self.token_file.is_some()),
                ("client_secret_file", self.client_secret_file.is_some()),
            ]
            .into_iter()
            .filter(|(_, given)| *given)
            .map(|(id, _)| self.given(id))
            .collect();
            if !conflicting.is_empty() {
                bail!(
                    "{} uses the vault emulator inside this process, so {} cannot be given with it (drop {}, or drop --embedded-vault to use Azure)",
                    self.given("embedded_vault"),
                    conflicting.join(", "),
                    if conflicting.len() == 1 { "it" } else { "them" }
                );
            }
            self.embedded_azure()?
        } else {
            self.azure_endpoint()?
        };

        let leader = if self.leader_elect {
            let namespace = self
                .leader_election_namespace
                .as_deref()
                .and_then(non_blank)
                .or_else(|| env_setting("POD_NAMESPACE"))
                .with_context(|| format!("{} needs the namespace of its Lease: set --leader-election-namespace (BBO_LEADER_ELECTION_NAMESPACE) or POD_NAMESPACE", self.given("leader_elect")))?;
            Some(LeaderElectionConfig::new(
                namespace,
                self.leader_election_lease_name.trim(),
            ))
        } else {
            None
        };

        let watch_namespace = non_blank(&self.watch_namespace);
        let timing = Timing {
            resync_interval: self.resync_interval,
            stalled_retry_max: self.stalled_retry_max,
            retry_after_max: self.retry_after_max,
            ..Timing::default()
        };
        let write_budget = WriteBudget {
            burst: self.azure_write_burst,
            refill: Duration::from_secs_f64(1.0 / self.azure_write_rate),
        };
        Ok(Plan {
            azure,
            controller: ControllerConfig {
                watch_namespace,
                concurrency: self.concurrency,
                timing,
                write_budget,
                reporting_instance: env_setting("POD_NAME").or_else(|| env_setting("HOSTNAME")),
                // The emulator is a one-team world: open unless told otherwise.
                vault_access: self.vault_access.unwrap_or(if self.embedded_vault {
                    VaultAccess::Open
                } else {
                    VaultAccess::Grants
                }),
                cluster_id: self.cluster_id.clone(),
                ..ControllerConfig::default()
            },
            metrics_addr: self.metrics_addr,
            log_format: self.log_format,
            leader,
            allow_unsupported_kubernetes: self.allow_unsupported_kubernetes,
        })
    }

    fn azure_endpoint(&self) -> Result<Azure> {
        let mode = self.azure_auth.unwrap_or_default();
        let auth = self.given("azure_auth");
        if self.token_file.is_some() && mode != AuthMode::StaticToken {
            bail!(
                "{} is read only with --azure-auth static-token ({auth} is {mode})",
                self.given("token_file")
            );
        }
        if self.client_secret_file.is_some() && mode != AuthMode::ClientSecret {
            bail!(
                "{} is read only with --azure-auth client-secret ({auth} is {mode})",
                self.given("client_secret_file")
            );
        }
        if mode == AuthMode::StaticToken
            && self.token_file.is_none()
            && env_setting("AZURE_ACCESS_TOKEN").is_none()
        {
            bail!(
                "{auth} static-token needs a token: give --token-file (BBO_TOKEN_FILE) or set AZURE_ACCESS_TOKEN"
            );
        }
        if mode == AuthMode::ClientSecret && self.client_secret_file.is_none() {
            bail!(
                "{auth} client-secret needs --client-secret-file (BBO_CLIENT_SECRET_FILE), with AZURE_CLIENT_ID and AZURE_TENANT_ID"
            );
        }
        let default_endpoint =
            url::Url::parse(DEFAULT_ENDPOINT).context("the default ARM endpoint")?;
        let endpoint = self
            .arm_endpoint
            .clone()
            .unwrap_or(default_endpoint.clone());
        // Checked one setting at a time, so that the error names the one at fault.
        ArmConfig::new(endpoint.clone(), DEFAULT_API_VERSION)
            .validate()
            .map_err(|e| anyhow::anyhow!("{}: {e}", self.given("arm_endpoint")))?;
        ArmConfig::new(default_endpoint, self.api_version.trim())
            .validate()
            .map_err(|e| anyhow::anyhow!("{}: {e}", self.given("api_version")))?;
        let config = ArmConfig::new(endpoint, self.api_version.trim());
        let auth = Box::new(AuthConfig {
            mode,
            token_file: self.token_file.clone(),
            client_secret_file: self.client_secret_file.clone(),
            ..AuthConfig::default()
        });
        Ok(Azure::Endpoint { config, auth })
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    return_freed_memory_at_once();
    let cli = parse_command_line();
    let result = match cli.command {
        Command::Run(args) => match args.plan() {
            Ok(plan) => run(plan).await,
            Err(error) => return report(&error, EXIT_USAGE),
        },
        Command::Crd(args) => print_crd(args.plural.as_deref()),
        #[cfg(feature = "embedded-vault")]
        Command::VaultEmulator(args) => vault_emulator(args).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => report(&error, EXIT_RUNTIME),
    }
}

/// Prints the error as one line, with the causes (what a person reads first in `kubectl
/// logs`), and returns the exit code.
fn report(error: &anyhow::Error, code: u8) -> ExitCode {
    eprintln!("error: {}", one_line(error));
    ExitCode::from(code)
}

/// The error and its causes joined by ": ", leaving out a cause whose text the line already
/// holds (kube and Azure errors repeat their sources in their own messages).
fn one_line(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in error.chain() {
        let text = cause.to_string().replace('\n', " ");
        if !line.contains(text.trim()) {
            if !line.is_empty() {
                line.push_str(": ");
            }
            line.push_str(text.trim());
        }
    }
    line
}

fn print_crd(plural: Option<&str>) -> Result<()> {
    let crds = crd_yamls().context("cannot render the CRDs")?;
    let known: Vec<&str> = crds.iter().map(|(name, _)| *name).collect();
    let chosen: Vec<&String> = crds
        .iter()
        .filter(|(name, _)| plural.is_none_or(|p| p == *name))
        .map(|(_, yaml)| yaml)
        .collect();
    if chosen.is_empty() {
        bail!(
            "crd: no CRD {:?}: give one of {}",
            plural.unwrap_or_default(),
            known.join(", ")
        );
    }
    for (index, yaml) in chosen.into_iter().enumerate() {
        if index > 0 {
            println!("---");
        }
        print!("{yaml}");
    }
    Ok(())
}

#[cfg(feature = "embedded-vault")]
async fn vault_emulator(args: EmulatorArgs) -> Result<()> {
    telemetry::init_logging(LogFormat::Text)?;
    vault_emulator::serve(args).await?;
    Ok(())
}

async fn run(plan: Plan) -> Result<()> {
    telemetry::init_logging(plan.log_format)?;
    dataprotection::install_crypto_provider();

    let kube_config = kube::Config::infer().await.context(
        "cannot configure the Kubernetes client (in a pod: the service account; elsewhere: KUBECONFIG or ~/.kube/config)",
    )?;
    let clients = KubeClients::new(
        kube_config,
        controller::KUBE_CONNECT_TIMEOUT,
        controller::KUBE_READ_TIMEOUT,
    )
    .context("cannot build the Kubernetes client")?;
    let client = clients.requests.clone();
    // The Helm chart refuses an old cluster itself; plain manifests rely on this check.
    let kubernetes = match kubernetes_version::ensure_supported(&client).await {
        Err(kubernetes_version::VersionError::TooOld { found })
            if plan.allow_unsupported_kubernetes =>
        {
            warn!(
                "the Kubernetes API server is version {found}, older than {}: running anyway (--allow-unsupported-kubernetes); the CRD's validation rules may not be enforced",
                kubernetes_version::MINIMUM
            );
            found
        }
        supported => supported?.to_string(),
    };
    let metrics = Metrics::new();
    let (arm, embedded) = azure_client(plan.azure, &metrics).await?;
    metrics.set_azure_api_version(arm.api_version());

    let (stop, stopped) = watch::channel(false);
    tokio::spawn(forward_signals(stop.clone()));
    let shutdown = move |stopped: &watch::Receiver<bool>| {
        let mut stopped = stopped.clone();
        async move {
            // An error means the sender is gone: nobody can ask for a stop any more.
            let _ = stopped.wait_for(|stop| *stop).await;
        }
    };

    let health = HealthState::default();
    let listener = tokio::net::TcpListener::bind(plan.metrics_addr)
        .await
        .with_context(|| format!("--metrics-addr {}: cannot listen", plan.metrics_addr))?;
    let telemetry_server = tokio::spawn(telemetry::serve_on(
        listener,
        metrics.clone(),
        health.clone(),
        shutdown(&stopped),
    ));

    info!(
        kubernetes = %kubernetes,
        arm_endpoint = %arm.config().endpoint,
        api_version = arm.api_version(),
        namespace = plan.controller.watch_namespace.as_deref().unwrap_or("(all)"),
        concurrency = plan.controller.concurrency,
        leader_election = plan.leader.is_some(),
        "starting blob-backup-operator"
    );

    // SIGTERM starts a graceful shutdown of the controller; a leader gives its reconciles
    // SHUTDOWN_GRACE to finish before the election loop drops them and releases the Lease.
    let leader_shutdown = {
        let health = health.clone();
        let stopped = shutdown(&stopped);
        async move {
            stopped.await;
            if health.role() == Role::Leader {
                tokio::time::sleep(SHUTDOWN_GRACE).await;
            }
        }
    };
    let outcome = run_as_leader(
        client.clone(),
        plan.leader,
        metrics.clone(),
        health.clone(),
        leader_shutdown,
        |fence| {
            controller::run(
                client.clone(),
                arm.clone(),
                ControllerConfig {
                    fence,
                    watch_client: Some(clients.watches.clone()),
                    ..plan.controller.clone()
                },
                metrics.clone(),
                health.clone(),
                shutdown(&stopped),
            )
        },
    )
    .await;

    // Stop serving metrics too (the election may have ended without a signal, on an error).
    stop.send_replace(true);
    match telemetry_server.await {
        Ok(Err(error)) => tracing::warn!(%error, "metrics server failed"),
        Err(error) => tracing::warn!(%error, "metrics server task failed"),
        Ok(Ok(())) => {}
    }
    if let Some(emulator) = embedded {
        emulator.shutdown().await;
    }
    outcome.context("leader election")?;
    info!("stopped");
    Ok(())
}

/// The emulator started by `--embedded-vault`, stopped when `run` ends.
#[cfg(feature = "embedded-vault")]
type EmbeddedVault = RunningEmulator;
/// A build without the `embedded-vault` feature never has one.
#[cfg(not(feature = "embedded-vault"))]
enum EmbeddedVault {}

#[cfg(not(feature = "embedded-vault"))]
impl EmbeddedVault {
    async fn shutdown(self) {
        match self {}
    }
}

/// The ARM client the plan asks for; with `--embedded-vault`, also the emulator it talks to.
async fn azure_client(
    azure: Azure,
    metrics: &Metrics,
) -> Result<(ArmClient, Option<EmbeddedVault>)> {
    let (config, auth, embedded) = match azure {
        Azure::Endpoint { config, auth } => (config, *auth, None),
        #[cfg(feature = "embedded-vault")]
        Azure::Embedded { api_version } => {
            let emulator = RunningEmulator::start(
                EmulatorConfig::default(),
                SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            )
            .await
            .context("--embedded-vault: cannot start the vault emulator")?;
            info!(url = %emulator.base_url(), "embedded vault emulator started");
            let auth = AuthConfig::fixed_token(emulator.token());
            let config = ArmConfig::new(emulator.base_url(), api_version);
            (config, auth, Some(emulator))
        }
    };
    let http = dataprotection::default_http_client()?;
    let credential = dataprotection::credential(&auth, http.clone())?;
    let arm = ArmClient::new(config, http, credential, Some(Arc::new(metrics.clone())))
        .context("--arm-endpoint/--api-version")?;
    Ok((arm, embedded))
}

/// Turns the first SIGTERM or Ctrl-C into a stop request.
async fn forward_signals(stop: watch::Sender<bool>) {
    let reason = wait_for_signal().await;
    info!("{reason}: shutting down");
    stop.send_replace(true);
}

async fn wait_for_signal() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => tokio::select! {
                _ = tokio::signal::ctrl_c() => "interrupted",
                _ = term.recv() => "SIGTERM",
            },
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM; stopping on Ctrl-C only");
                let _ = tokio::signal::ctrl_c().await;
                "interrupted"
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        "interrupted"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The option set is mimalloc's purge delay: its default is a second, and setting it
    /// makes freed memory go back at once.
    #[test]
    fn freed_memory_goes_back_at_once() {
        // SAFETY: reads one of mimalloc's options.
        let purge_delay = || unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) };
        assert_eq!(purge_delay(), 1000, "mimalloc's default purge delay");
        return_freed_memory_at_once();
        assert_eq!(purge_delay(), 0);
    }
}
