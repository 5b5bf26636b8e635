//! Convergence benchmark: N BlobBackupInstances against the vault emulator, with the real
//! operator binary (release build) as a child process. See BENCHMARKS.md.
//!
//! `cargo bench --bench converge -- --instances N [--latency-ms L] [--faults] [--json]
//!   [--concurrency C] [--subscriptions S] [--kubeconfig PATH | --envtest] [--restores R]`

use testkit::{benchmark, envtest};

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use vault_emulator::ThrottleSettings;

/// Measures how fast and how cheaply the operator brings N resources to Ready.
#[derive(Debug, Parser)]
#[command(name = "converge")]
struct Args {
    /// How many BlobBackupInstances to create.
    #[arg(long, default_value_t = 100)]
    instances: usize,
    /// Subscriptions the instances are spread over (a vault and a write budget each).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    subscriptions: u16,
    /// The emulator's operation latency in milliseconds.
    #[arg(long, default_value_t = 1000)]
    latency_ms: u64,
    /// Fault run: 20% of Azure requests fail (500/503/dropped), a small write bucket, and the
    /// operator is SIGKILLed and restarted at random moments.
    #[arg(long)]
    faults: bool,
    /// Print one JSON object on the last line.
    #[arg(long)]
    json: bool,
    /// The operator's --concurrency.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// A real cluster instead of the fake apiserver.
    #[arg(long, env = "BBO_E2E_KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// A real API server (etcd and kube-apiserver) started from the directory named by
    /// KUBEBUILDER_ASSETS, instead of the fake apiserver.
    #[arg(long, conflicts_with = "kubeconfig")]
    envtest: bool,
    /// The operator's --resync-interval, in seconds; also the steady-state window.
    #[arg(long, default_value_t = 10)]
    resync_seconds: u64,
    /// The emulator's write bucket size (ARM's: 200); faults default to 20.
    #[arg(long)]
    write_budget: Option<u32>,
    /// Writes the bucket gains per second (ARM's: 10); faults default to 5.
    #[arg(long)]
    write_refill: Option<f64>,
    /// No write throttling at all.
    #[arg(long, conflicts_with_all = ["write_budget", "write_refill"])]
    no_throttle: bool,
    /// BlobRestores to create once all instances are Ready (one per instance, to a point in
    /// time); the report adds seconds to all Succeeded and Azure requests per restore.
    #[arg(long, default_value_t = 0)]
    restores: usize,
    /// Operator kills in a fault run.
    #[arg(long, default_value_t = 5)]
    restarts: usize,
    /// Share of failing Azure requests in a fault run.
    #[arg(long, default_value_t = 0.2)]
    fault_share: f64,
    /// Seed of fault picks and kill moments.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Give up after this many seconds (default: 3 × the lower bound + 60).
    #[arg(long)]
    timeout_seconds: Option<u64>,
    /// Measure this operator binary instead of the one cargo just built: another build (musl,
    /// another allocator), or a wrapper script that starts it under a profiler.
    #[arg(long)]
    operator_binary: Option<PathBuf>,
    /// Passed by `cargo bench`.
    #[arg(long, hide = true)]
    bench: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if !args.bench {
        // `cargo test --benches` runs bench binaries without --bench: nothing to measure then.
        println!("converge: run it with `cargo bench --bench converge -- --instances N`");
        return Ok(());
    }
    let latency = Duration::from_millis(args.latency_ms);
    let (budget, refill) = if args.faults { (20, 5.0) } else { (200, 10.0) };
    let throttle = (!args.no_throttle).then(|| ThrottleSettings {
        budget: args.write_budget.unwrap_or(budget),
        refill_per_second: args.write_refill.unwrap_or(refill),
    });
    let retry_after = Duration::from_secs(
        vault_emulator::ServiceBehavior {
            latency,
            ..Default::default()
        }
        .operation_retry_after(),
    );
    let subscriptions = usize::from(args.subscriptions);
    let bound = benchmark::lower_bound(
        args.instances,
        subscriptions,
        latency,
        retry_after,
        throttle.as_ref(),
    );
    let (_guard, work_dir) = benchmark::work_dir()?;
    let options = benchmark::Options {
        instances: args.instances,
        subscriptions,
        latency,
        concurrency: args.concurrency,
        resync: Duration::from_secs(args.resync_seconds),
        throttle,
        faults: args.faults.then(|| benchmark::FaultPlan {
            share: args.fault_share,
            restarts: args.restarts,
            seed: args.seed,
            // Spread the kills over about the expected run time.
            kill_after: (
                Duration::from_millis(500),
                Duration::from_secs_f64((bound * 1.5 / (args.restarts + 1) as f64).max(2.0)),
            ),
        }),
        kubernetes: match (args.envtest, args.kubeconfig) {
            (true, _) => benchmark::Kubernetes::Envtest(
                std::env::var_os(envtest::ASSETS_ENV)
                    .map(PathBuf::from)
                    .with_context(|| {
                        format!(
                            "--envtest needs {} set; {}",
                            envtest::ASSETS_ENV,
                            envtest::HOW_TO_GET_ASSETS
                        )
                    })?,
            ),
            (false, Some(path)) => benchmark::Kubernetes::Kubeconfig(path),
            (false, None) => benchmark::Kubernetes::FakeApiServer,
        },
        binary: args
            .operator_binary
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_blob-backup-operator"))),
        timeout: Duration::from_secs(args.timeout_seconds.unwrap_or((bound * 3.0) as u64 + 60)),
        steady_state: !args.faults,
        restores: args.restores,
        work_dir,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let report = runtime.block_on(benchmark::run(&options))?;
    print!("{}", benchmark::table(&report));
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    }
    Ok(())
}
