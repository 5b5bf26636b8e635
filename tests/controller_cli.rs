//! The `blob-backup-operator` binary: its refusals of bad flags (one clear error line, a
//! non-zero exit), `crd`, and `run --embedded-vault --leader-elect` against the in-memory
//! Kubernetes API, from start to Ready to a clean exit on SIGTERM that releases the Lease.

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use testkit::fake_apiserver::{FakeApiOptions, FakeApiServer};

const BIN: &str = env!("CARGO_BIN_EXE_blob-backup-operator");

/// Runs the binary with only the given environment (no BBO_* or Azure variables leak in).
fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("the binary runs")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn run_help_documents_every_flag_with_its_environment_variable() {
    let output = run(&["run", "--help"], &[]);
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    for (flag, env) in [
        ("--arm-endpoint", "BBO_ARM_ENDPOINT"),
        ("--api-version", "BBO_API_VERSION"),
        ("--azure-auth", "BBO_AZURE_AUTH"),
        ("--token-file", "BBO_TOKEN_FILE"),
        ("--client-secret-file", "BBO_CLIENT_SECRET_FILE"),
        ("--watch-namespace", "BBO_WATCH_NAMESPACE"),
        ("--concurrency", "BBO_CONCURRENCY"),
        ("--resync-interval", "BBO_RESYNC_INTERVAL"),
        ("--stalled-retry-max", "BBO_STALLED_RETRY_MAX"),
        ("--retry-after-max", "BBO_RETRY_AFTER_MAX"),
        ("--azure-write-burst", "BBO_AZURE_WRITE_BURST"),
        ("--azure-write-rate", "BBO_AZURE_WRITE_RATE"),
        ("--metrics-addr", "BBO_METRICS_ADDR"),
        ("--log-format", "BBO_LOG_FORMAT"),
        ("--leader-elect", "BBO_LEADER_ELECT"),
        (
            "--leader-election-namespace",
            "BBO_LEADER_ELECTION_NAMESPACE",
        ),
        (
            "--leader-election-lease-name",
            "BBO_LEADER_ELECTION_LEASE_NAME",
        ),
        ("--embedded-vault", "BBO_EMBEDDED_VAULT"),
        ("--vault-access", "BBO_VAULT_ACCESS"),
        ("--cluster-id", "BBO_CLUSTER_ID"),
    ] {
        assert!(help.contains(flag), "{flag} missing from\n{help}");
        // Error messages name a setting's variable by this rule.
        assert_eq!(
            env,
            format!("BBO_{}", flag[2..].replace('-', "_").to_uppercase())
        );
        assert!(
            help.contains(&format!("[env: {env}")),
            "{env} missing from\n{help}"
        );
    }
    for default in [
        "https://management.azure.com",
        "2026-06-01",
        "workload-identity",
        "10m",
        "2m",
        "0.0.0.0:8080",
    ] {
        assert!(help.contains(default), "default {default} missing");
    }
}

/// Arguments, environment, and what the error line must say.
type Refusal<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a [&'a str]);

#[test]
fn bad_flag_combinations_are_refused_with_one_clear_line() {
    let token_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(token_file.path(), "token").unwrap();
    let token_path = token_file.path().to_str().unwrap();
    let cases: &[Refusal] = &[
        (
            &["run", "--azure-auth", "static-token"],
            &[],
            &["static-token", "--token-file", "AZURE_ACCESS_TOKEN"],
        ),
        (
            &[
                "run",
                "--azure-auth",
                "static-token",
                "--arm-endpoint",
                "http://arm.example.com",
            ],
            &[("AZURE_ACCESS_TOKEN", "t")],
            &["--arm-endpoint", "plain http", "loopback"],
        ),
        (
            &[
                "run",
                "--azure-auth",
                "static-token",
                "--token-file",
                token_path,
                "--api-version",
                "latest",
            ],
            &[],
            &["api-version", "YYYY-MM-DD"],
        ),
        (
            &["run", "--embedded-vault", "--leader-elect"],
            &[],
            &[
                "--leader-elect",
                "POD_NAMESPACE",
                "--leader-election-namespace",
            ],
        ),
        (
            &["run", "--embedded-vault"],
            &[("BBO_LEADER_ELECT", "true")],
            &["--leader-elect", "POD_NAMESPACE"],
        ),
        (&["run", "--concurrency", "0"], &[], &["--concurrency", "0"]),
        (
            &["run", "--vault-access", "everyone"],
            &[],
            &["--vault-access", "everyone"],
        ),
        (
            &["run"],
            &[("BBO_VAULT_ACCESS", "all")],
            &["--vault-access", "BBO_VAULT_ACCESS"],
        ),
        (
            &["run", "--cluster-id", "a/b"],
            &[],
            &["--cluster-id", "256 characters"],
        ),
        (
            &["run", "--resync-interval", "soon"],
            &[],
            &["--resync-interval", "soon"],
        ),
        (
            &["run", "--stalled-retry-max", "0s"],
            &[],
            &["--stalled-retry-max", "longer than 0s"],
        ),
        (
            &["run", "--retry-after-max", "500ms"],
            &[],
            &["--retry-after-max", "between 1s and 1day"],
        ),
        (
            &["run", "--azure-write-burst", "0"],
            &[],
            &["--azure-write-burst", "0"],
        ),
        (
            &["run", "--azure-write-rate", "fast"],
            &[],
            &["--azure-write-rate", "writes per second"],
        ),
        (
            &["run", "--azure-write-rate", "0"],
            &[],
            &["--azure-write-rate", "between"],
        ),
        (
            &[
                "run",
                "--embedded-vault",
                "--arm-endpoint",
                "https://management.azure.com",
            ],
            &[],
            &["--embedded-vault", "--arm-endpoint"],
        ),
        (
            &["run", "--embedded-vault"],
            &[("BBO_AZURE_AUTH", "azure-cli")],
            &["--embedded-vault", "--azure-auth"],
        ),
        (
            &["run", "--token-file", token_path],
            &[],
            &["--token-file", "static-token", "workload-identity"],
        ),
        (
            &["run", "--azure-auth", "client-secret"],
            &[],
            &["client-secret", "--client-secret-file"],
        ),
        (
            &["run", "--metrics-addr", "8080"],
            &[],
            &["--metrics-addr", ":8080 for every interface"],
        ),
        (
            &["run", "--arm-endpoint", "management.azure.com"],
            &[],
            &["--arm-endpoint", "add https://"],
        ),
        (
            &["run", "--watch-namespace", "Bad_NS"],
            &[],
            &["--watch-namespace", "Bad_NS", "not a valid namespace name"],
        ),
        (
            &["run", "--embedded-vault", "--leader-elect"],
            &[("BBO_LEADER_ELECTION_NAMESPACE", "-ops")],
            &[
                "--leader-election-namespace",
                "environment variable BBO_LEADER_ELECTION_NAMESPACE",
                "not a valid namespace name",
            ],
        ),
        (
            &["run"],
            &[("BBO_CONCURRENCY", "0")],
            &["--concurrency", "environment variable BBO_CONCURRENCY"],
        ),
        (
            &["run"],
            &[("BBO_TOKEN_FILE", token_path)],
            &["--token-file (environment variable BBO_TOKEN_FILE) is read only with"],
        ),
        (
            &["run", "--azure-auth", "static-token"],
            &[
                ("AZURE_ACCESS_TOKEN", "t"),
                ("BBO_ARM_ENDPOINT", "http://arm.example.com"),
            ],
            &[
                "--arm-endpoint (environment variable BBO_ARM_ENDPOINT)",
                "plain http",
            ],
        ),
        // The last occurrence of a flag wins (the chart's extraArgs override its own flags).
        (
            &[
                "run",
                "--azure-auth",
                "static-token",
                "--azure-auth",
                "workload-identity",
                "--token-file",
                token_path,
            ],
            &[],
            &["--token-file is read only", "is workload-identity"],
        ),
        (
            &[
                "run",
                "--azure-auth",
                "workload-identity",
                "--azure-auth",
                "static-token",
            ],
            &[],
            &["static-token needs a token"],
        ),
    ];
    for (args, env, expected) in cases {
        let output = run(args, env);
        let text = stderr(&output);
        assert_eq!(
            output.status.code(),
            Some(2),
            "{args:?}: a usage error exits 2: {text}"
        );
        let error_lines: Vec<&str> = text.lines().filter(|l| l.starts_with("error:")).collect();
        assert_eq!(error_lines.len(), 1, "{args:?}: one error line in\n{text}");
        for needle in *expected {
            assert!(
                error_lines[0].contains(needle),
                "{args:?}: {needle:?} not in {:?}",
                error_lines[0]
            );
        }
        assert!(!text.contains("panicked"), "{args:?}: {text}");
    }
}

#[test]
fn errors_name_only_the_setting_at_fault() {
    let (endpoint, version) = (
        run(
            &["run", "--azure-auth", "static-token"],
            &[
                ("AZURE_ACCESS_TOKEN", "t"),
                ("BBO_ARM_ENDPOINT", "http://arm.example.com"),
            ],
        ),
        run(
            &[
                "run",
                "--azure-auth",
                "static-token",
                "--api-version",
                "latest",
            ],
            &[("AZURE_ACCESS_TOKEN", "t")],
        ),
    );
    let (endpoint, version) = (stderr(&endpoint), stderr(&version));
    assert!(!endpoint.contains("api-version"), "{endpoint}");
    assert!(version.contains("--api-version"), "{version}");
    assert!(!version.contains("--arm-endpoint"), "{version}");
    let flag = run(&["run", "--concurrency", "0"], &[("BBO_CONCURRENCY", "0")]);
    assert!(
        !stderr(&flag).contains("environment variable"),
        "given on the command line: {}",
        stderr(&flag)
    );
}

#[test]
fn runtime_failures_exit_1() {
    let output = run(
        &["run", "--embedded-vault", "--metrics-addr", "127.0.0.1:0"],
        &[("KUBECONFIG", "/nonexistent/kubeconfig")],
    );
    let text = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{text}");
    assert!(text.contains("Kubernetes client"), "{text}");
    assert!(text.contains("/nonexistent/kubeconfig"), "{text}");
}

// Multi-threaded: the binary runs synchronously while this runtime serves the fake API server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kubernetes_older_than_the_floor_is_refused_naming_both_versions() {
    let api = FakeApiServer::start_with(FakeApiOptions {
        kubernetes_version: (1, 31),
        ..FakeApiOptions::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    api.write_kubeconfig(&kubeconfig).unwrap();
    let output = run(
        &["run", "--embedded-vault", "--metrics-addr", "127.0.0.1:0"],
        &[("KUBECONFIG", kubeconfig.to_str().unwrap())],
    );
    let text = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{text}");
    let error_lines: Vec<&str> = text.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(error_lines.len(), 1, "one error line in\n{text}");
    assert!(error_lines[0].contains("v1.31.0-fake"), "{text}");
    assert!(error_lines[0].contains("older than 1.32"), "{text}");
}

// Multi-threaded: the binary runs synchronously while this runtime serves the fake API server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_metrics_address_is_refused_naming_it() {
    let api = FakeApiServer::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    api.write_kubeconfig(&kubeconfig).unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let output = run(
        &["run", "--embedded-vault", "--metrics-addr", &addr],
        &[("KUBECONFIG", kubeconfig.to_str().unwrap())],
    );
    let text = stderr(&output);
    assert!(!output.status.success(), "started on a taken port: {text}");
    let error_lines: Vec<&str> = text.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(error_lines.len(), 1, "one error line in\n{text}");
    assert!(error_lines[0].contains("--metrics-addr"), "{text}");
    assert!(error_lines[0].contains(&addr), "{text}");
    assert!(!text.contains("panicked"), "{text}");
}

#[test]
fn crd_prints_the_checked_in_definitions() {
    let checked_in = |plural: &str| {
        std::fs::read_to_string(format!("{}/crds/{plural}.yaml", env!("CARGO_MANIFEST_DIR")))
            .unwrap()
    };
    let plurals = ["blobbackupinstances", "backupvaultgrants", "blobrestores"];
    for plural in plurals {
        let output = run(&["crd", plural], &[]);
        assert!(output.status.success(), "{}", stderr(&output));
        assert_eq!(String::from_utf8_lossy(&output.stdout), checked_in(plural));
    }
    let all = run(&["crd"], &[]);
    assert!(all.status.success(), "{}", stderr(&all));
    assert_eq!(
        String::from_utf8_lossy(&all.stdout),
        plurals.map(checked_in).join("---\n")
    );
    let unknown = run(&["crd", "backups"], &[]);
    assert!(!unknown.status.success());
    assert!(
        stderr(&unknown).contains("backupvaultgrants"),
        "{}",
        stderr(&unknown)
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A child process (operator or emulator), killed if a test fails before it stopped it.
struct Operator(std::process::Child);

impl Operator {
    /// Sends SIGTERM and waits (at most 15 s) for the exit.
    async fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.0.id().to_string();
        let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(killed.success());
        let started = Instant::now();
        loop {
            if let Some(status) = self.0.try_wait().unwrap() {
                return status;
            }
            assert!(
                started.elapsed() < Duration::from_secs(15),
                "no exit after SIGTERM"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_vault_leader_goes_ready_and_stops_cleanly_on_sigterm() {
    let api = FakeApiServer::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    api.write_kubeconfig(&kubeconfig).unwrap();
    let port = free_port();
    let metrics_addr = format!("127.0.0.1:{port}");
    let child = Command::new(BIN)
        .args(["run", "--embedded-vault", "--watch-namespace", "quickstart"])
        // controller-runtime's form: every interface, so loopback too.
        .args([
            "--metrics-addr",
            &format!(":{port}"),
            "--log-format",
            "json",
        ])
        .arg("--leader-elect")
        .env_clear()
        .env("KUBECONFIG", &kubeconfig)
        .env("POD_NAMESPACE", "quickstart")
        .env("POD_NAME", "operator-0")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut operator = Operator(child);

    let example = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/examples/msblobbackup.yaml"
    ))
    .unwrap();
    let mut object: serde_json::Value = serde_saphyr::from_str(&example).unwrap();
    object["metadata"]["namespace"] = json!("quickstart");
    api.create(object).unwrap();

    let ready = api
        .wait_for_object(
            "blobbackupinstances",
            "quickstart",
            "msblobbackup",
            Duration::from_secs(30),
            |o| {
                o["status"]["conditions"].as_array().is_some_and(|c| {
                    c.iter()
                        .any(|c| c["type"] == "Ready" && c["status"] == "True")
                })
            },
        )
        .await;
    assert!(
        ready.is_ok(),
        "not Ready: {:#}",
        api.get("blobbackupinstances", "quickstart", "msblobbackup")
            .unwrap_or_default()
    );

    let http = dataprotection::default_http_client().unwrap();
    let readyz = http
        .get(format!("http://{metrics_addr}/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(readyz.status(), 200);
    let metrics = http
        .get(format!("http://{metrics_addr}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("bbo_azure_requests_total{operation=\"BackupInstances_CreateOrUpdate\""),
        "{metrics}"
    );

    let holder = |api: &FakeApiServer| {
        api.get("leases", "quickstart", "blob-backup-operator")
            .and_then(|lease| lease["spec"]["holderIdentity"].as_str().map(str::to_owned))
            .unwrap_or_default()
    };
    assert!(holder(&api).starts_with("operator-0_"), "{}", holder(&api));

    let status = operator.terminate().await;
    let mut logs = String::new();
    if let Some(mut stderr) = operator.0.stderr.take() {
        use std::io::Read;
        let _ = stderr.read_to_string(&mut logs);
    }
    assert!(status.success(), "exit {status}: {logs}");
    assert!(
        !holder(&api).starts_with("operator-0_"),
        "the Lease is released on the way out"
    );
    // JSON logs, with the resource on the reconcile span.
    let reconcile_line = logs
        .lines()
        .find(|l| l.contains("\"resource\":\"msblobbackup\""))
        .unwrap_or_else(|| panic!("no reconcile log line in\n{logs}"));
    assert!(serde_json::from_str::<serde_json::Value>(reconcile_line).is_ok());
    assert!(logs.contains("SIGTERM"), "{logs}");
}

#[tokio::test]
async fn vault_emulator_serves_until_sigterm() {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let child = Command::new(BIN)
        .args(["vault-emulator", "--listen", &listen])
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut emulator = Operator(child);
    let http = dataprotection::default_http_client().unwrap();
    let started = Instant::now();
    // The article's vault answers its own path (401 without a token: it is up).
    let url = format!(
        "http://{listen}/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/TestBkpVaultRG/providers/Microsoft.DataProtection/backupVaults/testBkpVault/backupInstances?api-version=2026-06-01"
    );
    let answer = loop {
        match http.get(&url).bearer_auth("emulator-token").send().await {
            Ok(answer) => break answer,
            Err(_) if started.elapsed() < Duration::from_secs(15) => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(error) => panic!("the emulator never answered: {error}"),
        }
    };
    assert_eq!(answer.status(), 200);
    let status = emulator.terminate().await;
    assert!(status.success(), "exit {status}");
}
