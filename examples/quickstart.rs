//! The quickstart without a cluster: `scripts/quickstart.sh` runs this when no Kubernetes API
//! server is reachable through the kubeconfig.
//!
//! It runs the operator's own controller code against two stand-ins on loopback: the vault
//! emulator (as `run --embedded-vault` does) and the in-memory Kubernetes API server the tests
//! use (`testkit::fake_apiserver`). It applies deploy/examples/msblobbackup.yaml, prints
//! the resource the way `kubectl get bbi` would each time its status changes until it is Ready,
//! then deletes it and shows the finalizer holding it until the emulated Azure confirms.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use blob_backup_operator::api::BlobBackupInstance;
use blob_backup_operator::controller::grants::VaultAccess;
use blob_backup_operator::controller::{self, ControllerConfig};
use blob_backup_operator::telemetry::{HealthState, Metrics};
use dataprotection::auth::AuthConfig;
use dataprotection::{ArmClient, ArmConfig, DEFAULT_API_VERSION};
use kube::api::{Api, DeleteParams, PostParams};
use testkit::fake_apiserver::FakeApiServer;
use vault_emulator::{EmulatorConfig, RunningEmulator};

const NAMESPACE: &str = "default";
const EXAMPLE: &str = include_str!("../deploy/examples/msblobbackup.yaml");
const DEADLINE: Duration = Duration::from_secs(120);

#[tokio::main]
async fn main() -> Result<()> {
    dataprotection::install_crypto_provider();
    let emulator = RunningEmulator::start(
        EmulatorConfig::default(),
        SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
    )
    .await
    .context("starting the vault emulator")?;
    let kubernetes = FakeApiServer::start()
        .await
        .context("starting the Kubernetes API stand-in")?;
    let client = kubernetes.client()?;
    println!("vault emulator:         {}", emulator.base_url());
    println!("Kubernetes API stand-in: {}", kubernetes.url());

    let auth = AuthConfig::fixed_token(emulator.token());
    let http = dataprotection::default_http_client()?;
    let credential = dataprotection::credential(&auth, http.clone())?;
    let metrics = Metrics::new();
    let arm = ArmClient::new(
        ArmConfig::new(emulator.base_url(), DEFAULT_API_VERSION),
        http,
        credential,
        Some(Arc::new(metrics.clone())),
    )?;

    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let operator = tokio::spawn(controller::run(
        client.clone(),
        arm,
        ControllerConfig {
            watch_namespace: Some(NAMESPACE.to_owned()),
            // As `run --embedded-vault`: one team, every vault open. The stand-in has no
            // kube-system namespace to name the cluster after.
            vault_access: VaultAccess::Open,
            cluster_id: Some("quickstart".to_owned()),
            ..ControllerConfig::default()
        },
        metrics,
        HealthState::default(),
        async {
            let _ = stopped.await;
        },
    ));

    let resources: Api<BlobBackupInstance> = Api::namespaced(client, NAMESPACE);
    let example: BlobBackupInstance =
        serde_saphyr::from_str(EXAMPLE).context("parsing deploy/examples/msblobbackup.yaml")?;
    let name = example.metadata.name.clone().unwrap_or_default();
    println!("\n$ kubectl apply -f deploy/examples/msblobbackup.yaml");
    resources.create(&PostParams::default(), &example).await?;
    println!("blobbackupinstance.dataprotection.blobbackup.io/{name} created\n");

    println!("$ kubectl get bbi --watch");
    print_header();
    let mut last = String::new();
    let ready = wait(&resources, &name, &mut last, |bbi| {
        bbi.is_some_and(|bbi| condition(bbi, "Ready").0 == "True")
    })
    .await?;
    if !ready {
        bail!("{name} did not become Ready within {DEADLINE:?}");
    }

    println!("\n$ kubectl delete bbi {name}");
    resources.delete(&name, &DeleteParams::default()).await?;
    let gone = wait(&resources, &name, &mut last, |bbi| bbi.is_none()).await?;
    if !gone {
        bail!("{name} was not deleted within {DEADLINE:?}");
    }
    println!("blobbackupinstance.dataprotection.blobbackup.io \"{name}\" deleted");
    println!(
        "\nThe finalizer held the resource until the emulated Azure confirmed the DELETE of the backup instance."
    );
    println!(
        "Next: run it against a real cluster (scripts/quickstart.sh with a kubeconfig), or read README.md."
    );

    let _ = stop.send(());
    operator.await?;
    emulator.shutdown().await;
    Ok(())
}

/// Prints a row whenever the resource's printed columns change; true once `done` holds.
async fn wait(
    resources: &Api<BlobBackupInstance>,
    name: &str,
    last: &mut String,
    done: impl Fn(Option<&BlobBackupInstance>) -> bool,
) -> Result<bool> {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while tokio::time::Instant::now() < deadline {
        let current = resources.get_opt(name).await?;
        if let Some(bbi) = &current {
            let row = row(bbi);
            if row != *last {
                println!("{row}");
                *last = row;
            }
        }
        if done(current.as_ref()) {
            return Ok(true);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(false)
}

fn print_header() {
    println!(
        "{}",
        columns([
            "NAME",
            "READY",
            "REASON",
            "VAULT",
            "ACCOUNT",
            "DELETION",
            "OPERATION",
            "DELETING",
        ])
    );
}

/// One line in `kubectl get`'s column layout (the CRD's default printer columns, less the
/// policy and the age; `DELETING` shows the finalizer at work).
fn columns(
    [
        name,
        ready,
        reason,
        vault,
        account,
        deletion,
        operation,
        deleting,
    ]: [&str; 8],
) -> String {
    format!(
        "{name:<14} {ready:<7} {reason:<22} {vault:<14} {account:<14} {deletion:<9} {operation:<20} {deleting}"
    )
}

fn row(bbi: &BlobBackupInstance) -> String {
    let status = bbi.status.as_ref();
    let (ready, reason) = condition(bbi, "Ready");
    let deletion = format!("{:?}", bbi.spec.deletion_policy);
    columns([
        bbi.metadata.name.as_deref().unwrap_or_default(),
        &ready,
        &reason,
        status
            .and_then(|s| s.vault_name.as_deref())
            .unwrap_or_default(),
        status
            .and_then(|s| s.storage_account_name.as_deref())
            .unwrap_or_default(),
        &deletion,
        status
            .and_then(|s| s.current_operation.as_deref())
            .unwrap_or_default(),
        if bbi.metadata.deletion_timestamp.is_some() {
            "yes (finalizer)"
        } else {
            ""
        },
    ])
}

fn condition(bbi: &BlobBackupInstance, kind: &str) -> (String, String) {
    bbi.status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == kind))
        .map(|c| (format!("{:?}", c.status), c.reason.clone()))
        .unwrap_or_default()
}
