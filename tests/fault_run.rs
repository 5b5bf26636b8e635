//! The fault run in small (N=20, two operator restarts), so a regression of its invariants
//! fails CI: 20% of Azure requests fail (500, 503, dropped connections), writes are throttled
//! with 429s, and the operator binary is SIGKILLed and restarted twice. Every resource must
//! still reach Ready, with no second PUT or DELETE of an instance while its operation runs,
//! no resource left without a Reconciling or Stalled explanation, and no panic.
//! `cargo bench --bench converge -- --faults` is the large version (BENCHMARKS.md).

use testkit::benchmark;

use std::path::PathBuf;
use std::time::Duration;

use std::collections::BTreeMap;
use std::sync::Arc;

use dataprotection::auth::{AuthConfig, credential};
use dataprotection::{
    ArmClient, ArmConfig, BackupInstance, StorageAccountId, VaultId, install_crypto_provider,
    operation_ids,
};
use vault_emulator::{
    DEFAULT_STORAGE_ACCOUNT_ID, DEFAULT_TOKEN, DEFAULT_VAULT_ID, EmulatorConfig, RunningEmulator,
    ThrottleSettings,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_instances_survive_faults_throttling_and_two_restarts() {
    let (_guard, work_dir) = benchmark::work_dir().unwrap();
    let options = benchmark::Options {
        instances: 20,
        subscriptions: 1,
        latency: Duration::from_secs(1),
        concurrency: 4,
        resync: Duration::from_secs(10),
        // A small bucket: the 40 writes (validate + PUT each) cannot all pass at once.
        throttle: Some(ThrottleSettings {
            budget: 10,
            refill_per_second: 5.0,
        }),
        faults: Some(benchmark::FaultPlan {
            share: 0.2,
            restarts: 2,
            seed: 20,
            kill_after: (Duration::from_millis(300), Duration::from_millis(1500)),
        }),
        kubernetes: benchmark::Kubernetes::FakeApiServer,
        binary: PathBuf::from(env!("CARGO_BIN_EXE_blob-backup-operator")),
        timeout: Duration::from_secs(40),
        steady_state: false,
        restores: 0,
        work_dir,
    };
    let report = benchmark::run(&options).await.unwrap();
    let table = benchmark::table(&report);
    println!("{table}");
    // The run did inject what it claims, or the invariants below prove nothing.
    assert_eq!(report.restarts, Some(2), "{table}");
    assert!(report.injected_faults > 0, "{table}");
    assert!(report.throttled_429 > 0, "{table}");
    // The invariants.
    assert_eq!(report.ready, 20, "{table}");
    assert_eq!(report.duplicate_writes, Some(0), "{table}");
    assert_eq!(report.unexplained_stuck, Some(0), "{table}");
    assert_eq!(report.panics, Some(0), "{table}");
    assert_eq!(report.unexpected_exits, Some(0), "{table}");
}

/// The duplicate-write count the fault run asserts on does count: a second PUT while the
/// first one's operation runs, and a DELETE while that runs, are both flagged; a PUT after the
/// operation finished is not.
#[tokio::test]
async fn the_emulator_flags_writes_sent_while_an_operation_runs() {
    install_crypto_provider();
    let mut config = EmulatorConfig::default();
    config.behavior.latency = Duration::from_millis(300);
    let emulator = RunningEmulator::start(config, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let http = reqwest::Client::new();
    let token = credential(&AuthConfig::fixed_token(DEFAULT_TOKEN), http.clone()).unwrap();
    let arm = ArmClient::new(
        ArmConfig::new(emulator.base_url(), "2026-06-01"),
        http,
        Arc::clone(&token),
        None,
    )
    .unwrap();
    let vault = VaultId::parse(DEFAULT_VAULT_ID).unwrap();
    let account = StorageAccountId::parse(DEFAULT_STORAGE_ACCOUNT_ID).unwrap();
    let body = BackupInstance::for_blob_account(
        &account,
        "westus",
        &vault.policy("BlobBackup-Policy"),
        None,
    );
    let id = vault.backup_instance("msblobbackup-dup");
    arm.create_or_update(&id, &body).await.result.unwrap();
    arm.create_or_update(&id, &body).await.result.unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    arm.create_or_update(&id, &body).await.result.unwrap();
    arm.delete(&id).await.result.unwrap();
    let _ = arm.delete(&id).await.result;
    let admin = emulator.admin();
    // Three PUTs and two DELETEs arrived; the second of each came while an operation ran.
    assert_eq!(admin.request_count(operation_ids::CREATE_OR_UPDATE), 3);
    assert_eq!(admin.request_count(operation_ids::DELETE), 2);
    assert_eq!(
        admin.in_flight_writes(),
        BTreeMap::from([
            (operation_ids::CREATE_OR_UPDATE.to_owned(), 1),
            (operation_ids::DELETE.to_owned(), 1),
        ])
    );
}
