//! The `blob-backup-operator` command line: `run` (the controller), `crd` (print the CRD
//! YAML) and `vault-emulator` (serve the local Data Protection emulator). Everything else is
//! in the library; this file only turns flags into its configuration.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use blob_backup_operator::api::crd_yaml;
use blob_backup_operator::arm::{
    self, ArmClient, ArmConfig, AuthConfig, AuthMode, DEFAULT_API_VERSION, DEFAULT_ENDPOINT,
};
use blob_backup_operator::controller::decide::Settings;
use blob_backup_operator::controller::leader::{LeaderElectionConfig, run_as_leader};
use blob_backup_operator::controller::{self, ControllerConfig};
use blob_backup_operator::emulator::{self, EmulatorArgs, EmulatorConfig, RunningEmulator};
use blob_backup_operator::telemetry::{self, HealthState, LogFormat, Metrics, Role};
use clap::{Args, Parser, Subcommand};
use tokio::sync::watch;
use tracing::info;

// The allocator is chosen, not inherited: glibc's per-thread arenas held about a third of the
// peak at 10,000 resources, and musl's (the container image) is slow under contention.
// mimalloc gives both builds one compact allocator, so the benchmark measures what ships.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// How long a leader waits for its reconciles in flight after SIGTERM before it lets go of
/// them (Kubernetes' default termination grace period is 30 s).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);

/// Azure Blob backup, declared as Kubernetes resources (BlobBackupInstance).
#[derive(Debug, Parser)]
#[command(name = "blob-backup-operator", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the controller: reconcile BlobBackupInstance resources against Azure.
    Run(Box<RunArgs>),
    /// Print the BlobBackupInstance CustomResourceDefinition as YAML.
    Crd,
    /// Serve the local Azure Data Protection emulator (the article's vault and account).
    VaultEmulator(EmulatorArgs),
}

#[derive(Debug, Args)]
struct RunArgs {
    /// Azure Resource Manager endpoint (sovereign clouds have their own); plain http only to
    /// loopback addresses. [default: https://management.azure.com]
    #[arg(long, env = "BBO_ARM_ENDPOINT", value_name = "URL")]
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
        default_value = ""
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

    /// Azure writes (validate, PUT, DELETE, stopProtection, sync) sent at once before the
    /// operator paces itself: the size of ARM's write bucket for the subscription (200). The
    /// operator never assumes more than the writes left that Azure reports on each write, so
    /// other clients of the subscription are seen.
    #[arg(long, env = "BBO_AZURE_WRITE_BURST", value_name = "WRITES", default_value_t = 200,
          value_parser = clap::value_parser!(u32).range(1..))]
    azure_write_burst: u32,

    /// Azure writes per second once the burst is spent: ARM's refill rate (10).
    #[arg(long, env = "BBO_AZURE_WRITE_RATE", value_name = "PER_SECOND", default_value_t = 10.0,
          value_parser = parse_write_rate)]
    azure_write_rate: f64,

    /// Address serving /metrics (Prometheus), /healthz and /readyz.
    #[arg(
        long,
        env = "BBO_METRICS_ADDR",
        value_name = "ADDR",
        default_value = "0.0.0.0:8080"
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
    #[arg(long, env = "BBO_LEADER_ELECTION_NAMESPACE", value_name = "NAMESPACE")]
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
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let duration = humantime::parse_duration(text.trim())
        .map_err(|e| format!("{e} (write a duration such as 30s, 10m or 1h)"))?;
    if duration.is_zero() {
        return Err("must be longer than 0s".to_owned());
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
    Embedded { api_version: String },
}

/// Everything `run` needs, checked.
struct Plan {
    azure: Azure,
    controller: ControllerConfig,
    metrics_addr: SocketAddr,
    log_format: LogFormat,
    leader: Option<LeaderElectionConfig>,
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
    /// Checks the flags together and refuses combinations that cannot work.
    fn plan(self) -> Result<Plan> {
        let azure = if self.embedded_vault {
            let conflicting: Vec<&str> = [
                ("--arm-endpoint", self.arm_endpoint.is_some()),
                ("--azure-auth", self.azure_auth.is_some()),
                ("--token-file", self.token_file.is_some()),
                ("--client-secret-file", self.client_secret_file.is_some()),
            ]
            .into_iter()
            .filter_map(|(flag, given)| given.then_some(flag))
            .collect();
            if !conflicting.is_empty() {
                bail!(
                    "--embedded-vault uses the vault emulator inside this process, so {} cannot be given with it (drop {}, or drop --embedded-vault to use Azure)",
                    conflicting.join(", "),
                    if conflicting.len() == 1 { "it" } else { "them" }
                );
            }
            Azure::Embedded {
                api_version: self.api_version.clone(),
            }
        } else {
            self.azure_endpoint()?
        };

        let leader = if self.leader_elect {
            let namespace = self
                .leader_election_namespace
                .as_deref()
                .and_then(non_blank)
                .or_else(|| env_setting("POD_NAMESPACE"))
                .context("--leader-elect needs the namespace of its Lease: set --leader-election-namespace (BBO_LEADER_ELECTION_NAMESPACE) or POD_NAMESPACE")?;
            Some(LeaderElectionConfig::new(
                namespace,
                self.leader_election_lease_name.trim(),
            ))
        } else {
            None
        };

        let watch_namespace = non_blank(&self.watch_namespace);
        let settings = Settings {
            resync_interval: self.resync_interval,
            stalled_retry_max: self.stalled_retry_max,
            write_burst: self.azure_write_burst,
            write_refill: Duration::from_secs_f64(1.0 / self.azure_write_rate),
            ..Settings::default()
        };
        Ok(Plan {
            azure,
            controller: ControllerConfig {
                watch_namespace,
                concurrency: self.concurrency,
                settings,
                reporting_instance: env_setting("POD_NAME").or_else(|| env_setting("HOSTNAME")),
            },
            metrics_addr: self.metrics_addr,
            log_format: self.log_format,
            leader,
        })
    }

    fn azure_endpoint(&self) -> Result<Azure> {
        let mode = self.azure_auth.unwrap_or_default();
        if self.token_file.is_some() && mode != AuthMode::StaticToken {
            bail!("--token-file is read only with --azure-auth static-token (it is {mode})");
        }
        if self.client_secret_file.is_some() && mode != AuthMode::ClientSecret {
            bail!(
                "--client-secret-file is read only with --azure-auth client-secret (it is {mode})"
            );
        }
        if mode == AuthMode::StaticToken
            && self.token_file.is_none()
            && env_setting("AZURE_ACCESS_TOKEN").is_none()
        {
            bail!(
                "--azure-auth static-token needs a token: give --token-file (BBO_TOKEN_FILE) or set AZURE_ACCESS_TOKEN"
            );
        }
        if mode == AuthMode::ClientSecret && self.client_secret_file.is_none() {
            bail!(
                "--azure-auth client-secret needs --client-secret-file (BBO_CLIENT_SECRET_FILE), with AZURE_CLIENT_ID and AZURE_TENANT_ID"
            );
        }
        let endpoint = match &self.arm_endpoint {
            Some(url) => url.clone(),
            None => url::Url::parse(DEFAULT_ENDPOINT).context("the default ARM endpoint")?,
        };
        let config = ArmConfig::new(endpoint, self.api_version.trim());
        config
            .validate()
            .map_err(|e| anyhow::anyhow!("--arm-endpoint/--api-version: {e}"))?;
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
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => run(*args).await,
        Command::Crd => print_crd(),
        Command::VaultEmulator(args) => vault_emulator(args).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // One line, with the causes: what a person reads first in `kubectl logs`.
            eprintln!("error: {}", one_line(&error));
            ExitCode::FAILURE
        }
    }
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

fn print_crd() -> Result<()> {
    print!("{}", crd_yaml().context("cannot render the CRD")?);
    Ok(())
}

async fn vault_emulator(args: EmulatorArgs) -> Result<()> {
    telemetry::init_logging(LogFormat::Text)?;
    emulator::serve(args).await?;
    Ok(())
}

async fn run(args: RunArgs) -> Result<()> {
    let plan = args.plan()?;
    telemetry::init_logging(plan.log_format)?;
    arm::install_crypto_provider();

    let client = kube::Client::try_default().await.context(
        "cannot configure the Kubernetes client (in a pod: the service account; elsewhere: KUBECONFIG or ~/.kube/config)",
    )?;
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
        || {
            controller::run(
                client.clone(),
                arm.clone(),
                plan.controller.clone(),
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

/// The ARM client the plan asks for; with `--embedded-vault`, also the emulator it talks to.
async fn azure_client(
    azure: Azure,
    metrics: &Metrics,
) -> Result<(ArmClient, Option<RunningEmulator>)> {
    let (config, auth, embedded) = match azure {
        Azure::Endpoint { config, auth } => (config, *auth, None),
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
    let http = arm::default_http_client()?;
    let credential = arm::credential(&auth, http.clone())?;
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
