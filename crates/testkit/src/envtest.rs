//! A real Kubernetes API server for tests: `etcd` and `kube-apiserver` from the directory named
//! by `KUBEBUILDER_ASSETS` (controller-runtime's envtest convention), on free loopback ports.
//!
//! [`Envtest::start`] writes a token file with two identities, an admin (`system:masters`) and
//! the operator's ServiceAccount (`system:serviceaccount:<ns>:<name>`, with the groups a pod's
//! token carries), so RBAC is checked as in a cluster; starts both processes; waits for
//! `/readyz`; and installs the CRDs it is given, with their CEL rules stripped (see
//! [`strip_cel_rules`]). [`Envtest::client`] hands out `kube::Client`s for either identity and
//! [`Envtest::write_kubeconfig`] writes one for a separate process (kubectl, the operator binary).
//!
//! The processes never outlive the test process: dropping the [`Envtest`] (or [`Envtest::stop`],
//! which the shared server runs from `atexit`) kills them and removes the temporary directory;
//! if the test process dies without running either, the kernel kills them
//! (`PR_SET_PDEATHSIG`, armed from a launcher thread that lives as long as they do), and the
//! next start removes directories left by processes that no longer exist.
//!
//! What the server does not do: see the `## What this server is not` notes of the binaries'
//! README. In short, no CEL (v1.19), no controller-manager (namespaces never finish
//! terminating, no garbage collection): give each test its own namespace
//! ([`Envtest::create_namespace`]) and delete what it made directly.

use std::ffi::OsString;
use std::fs::File;
use std::io::Write;
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use base64::Engine;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::{ApiResource, GroupVersionKind};
use kube::runtime::wait::{await_condition, conditions};
use serde_json::{Value, json};
use tokio::sync::OnceCell;

/// The environment variable naming the directory with `kube-apiserver` and `etcd`.
pub const ASSETS_ENV: &str = "KUBEBUILDER_ASSETS";
/// Field manager of what the launcher applies.
pub const FIELD_MANAGER: &str = "testkit-envtest";
/// How to get the binaries, for skip and failure messages.
pub const HOW_TO_GET_ASSETS: &str = "point KUBEBUILDER_ASSETS at a directory holding \
kube-apiserver and etcd: `export KUBEBUILDER_ASSETS=\"$(setup-envtest use -p path)\"` \
(sigs.k8s.io/controller-runtime/tools/setup-envtest), or in this repository's CI layout \
`export KUBEBUILDER_ASSETS=\"$(../shared/envtest/unpack.sh)\"`";
/// Prefix of the temporary directories, followed by the pid of the test process.
const DIR_PREFIX: &str = "bbo-envtest-";
/// Time for the server to become ready and for a CRD to be served, on a loaded 2-core machine.
const STARTUP: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{ASSETS_ENV}={dir}: {binary} is missing or not executable; {HOW_TO_GET_ASSETS}")]
    MissingBinary { dir: String, binary: &'static str },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{command} failed: {output}")]
    Command { command: String, output: String },
    #[error("{process} exited during startup ({status}); last lines of its log:\n{log}")]
    Exited {
        process: &'static str,
        status: String,
        log: String,
    },
    #[error("kube-apiserver not ready within {0:?}; last lines of its log:\n{1}")]
    NotReady(Duration, String),
    #[error("{what}: {source}")]
    Kube {
        what: String,
        #[source]
        source: kube::Error,
    },
    /// A manifest that does not parse or is not what it should be.
    #[error("{0}")]
    Manifest(String),
    /// Anything else that keeps the server from starting or being used.
    #[error("{0}")]
    Setup(String),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let what = what.into();
    move |source| Error::Io { what, source }
}

fn kube_err(what: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
    let what = what.into();
    move |source| Error::Kube { what, source }
}

/// Writes `text` to the test process's stderr directly, past the test harness's output
/// capture, so a passing run shows it too (what ran, what was skipped).
pub fn say(text: &str) {
    let _ = writeln!(std::io::stderr(), "{text}");
}

/// Whether this is a CI run (`CI=true`), where a missing server is a failure, not a skip.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

/// The directory named by `KUBEBUILDER_ASSETS`; `None` after saying that `test` is skipped
/// and how to get the binaries. Under `CI=true` a missing directory panics instead: the tier
/// must not pass by doing nothing in CI.
pub fn assets_or_skip(test: &str) -> Option<PathBuf> {
    // The test harness names each test's thread after the test.
    let thread = std::thread::current();
    let test = thread.name().filter(|n| *n != "main").unwrap_or(test);
    match std::env::var_os(ASSETS_ENV).filter(|v| !v.is_empty()) {
        Some(dir) => Some(PathBuf::from(dir)),
        None if in_ci() => panic!(
            "{test}: {ASSETS_ENV} is not set and CI=true: the real-API-server tests do not skip in CI; {HOW_TO_GET_ASSETS}"
        ),
        None => {
            say(&format!(
                "{test}: skipped (no real API server): {ASSETS_ENV} is not set; to run it, {HOW_TO_GET_ASSETS}"
            ));
            None
        }
    }
}

/// A ServiceAccount whose token the server accepts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceAccount {
    pub namespace: String,
    pub name: String,
}

impl ServiceAccount {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    /// The user name its token authenticates as.
    pub fn username(&self) -> String {
        format!("system:serviceaccount:{}:{}", self.namespace, self.name)
    }
}

/// Who a client or kubeconfig authenticates as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Identity {
    /// `system:masters`: everything, as a cluster admin.
    Admin,
    /// The ServiceAccount of [`Options::service_account`], under the RBAC applied for it.
    ServiceAccount,
}

/// What to start.
#[derive(Clone, Debug)]
pub struct Options {
    /// The identity of [`Identity::ServiceAccount`] (tokens are fixed at start).
    pub service_account: ServiceAccount,
    /// CRD manifests (files) installed once the server is ready, CEL rules stripped.
    pub crds: Vec<PathBuf>,
}

/// The running server: its address, identities and processes.
pub struct Envtest {
    url: String,
    ca_pem: String,
    admin_token: String,
    operator_token: String,
    service_account: ServiceAccount,
    version: String,
    running: Mutex<Option<Running>>,
}

/// The thread that started the processes (the parent `PR_SET_PDEATHSIG` watches) and the
/// sender whose drop ends it, after the processes are killed.
type Launcher = (mpsc::Sender<()>, JoinHandle<()>);

/// What [`Envtest::stop`] takes down.
struct Running {
    etcd: Child,
    apiserver: Child,
    launcher: Launcher,
    dir: tempfile::TempDir,
}

impl Running {
    fn stop(mut self) {
        for child in [&mut self.apiserver, &mut self.etcd] {
            let _ = child.kill();
            let _ = child.wait();
        }
        let (stop, thread) = self.launcher;
        drop(stop);
        let _ = thread.join();
        // `self.dir` is removed as it drops.
    }
}

/// A free port on 127.0.0.1 (released at once: the process started next binds it).
fn free_port() -> Result<u16, Error> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(io("free port"))?;
    Ok(listener.local_addr().map_err(io("free port"))?.port())
}

/// Removes temporary directories of earlier runs whose test process no longer exists (killed
/// before it could clean up).
fn remove_stale_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(DIR_PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

fn run_command(command: &mut Command) -> Result<(), Error> {
    let output = command
        .output()
        .map_err(io(format!("cannot run {command:?}")))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(Error::Command {
            command: format!("{command:?}"),
            output: String::from_utf8_lossy(&output.stderr).into_owned(),
        })
    }
}

/// The last `n` lines of a log file.
fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Spawns `commands` from a thread of their own that stays alive until the returned sender is
/// dropped: each child gets `PR_SET_PDEATHSIG(SIGKILL)`, which fires when the thread that
/// forked it ends, so the thread must outlive the children (and ends with the test process).
fn spawn_watched(commands: Vec<Command>) -> Result<(Vec<Child>, Launcher), Error> {
    let (children_tx, children_rx) = mpsc::channel();
    let (stop_tx, stop_rx) = mpsc::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("envtest-launcher".to_owned())
        .spawn(move || {
            let parent = std::process::id();
            let mut children = Vec::new();
            for mut command in commands {
                // SAFETY: only async-signal-safe calls (prctl, getppid, _exit) between fork
                // and exec.
                unsafe {
                    command.pre_exec(move || {
                        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                            return Err(std::io::Error::last_os_error());
                        }
                        // The parent may have died before the signal was armed.
                        if libc::getppid() as u32 != parent {
                            libc::_exit(1);
                        }
                        Ok(())
                    });
                }
                let spawned = command
                    .spawn()
                    .map_err(io(format!("cannot start {:?}", command.get_program())));
                let failed = spawned.is_err();
                children.push(spawned);
                if failed {
                    break;
                }
            }
            let _ = children_tx.send(children);
            // Until the owner drops the sender.
            let _ = stop_rx.recv();
        })
        .map_err(io("envtest launcher thread"))?;
    let launcher = (stop_tx, thread);
    let results = children_rx
        .recv()
        .map_err(|_| Error::Setup("the envtest launcher thread died".to_owned()))?;
    let mut children = Vec::new();
    let mut error = None;
    for result in results {
        match result {
            Ok(child) => children.push(child),
            Err(e) => error = Some(e),
        }
    }
    if let Some(error) = error {
        for mut child in children {
            let _ = child.kill();
            let _ = child.wait();
        }
        return Err(error);
    }
    Ok((children, launcher))
}

/// Removes every `x-kubernetes-validations` (CEL rules) from `value`, returning how many rule
/// lists it removed. kube-apiserver v1.19 predates CEL (1.25): server-side apply refuses the
/// field and a create would drop it silently, so the launcher strips the rules and says so; the
/// rules themselves are tested offline.
pub fn strip_cel_rules(value: &mut Value) -> usize {
    match value {
        Value::Object(map) => {
            let removed = usize::from(map.remove("x-kubernetes-validations").is_some());
            removed + map.values_mut().map(strip_cel_rules).sum::<usize>()
        }
        Value::Array(items) => items.iter_mut().map(strip_cel_rules).sum(),
        _ => 0,
    }
}

/// The documents of a YAML file, nulls (empty documents) left out.
pub fn read_manifests(path: &Path) -> Result<Vec<Value>, Error> {
    let text = std::fs::read_to_string(path).map_err(io(format!("read {}", path.display())))?;
    let docs: Vec<Value> = serde_saphyr::from_multiple(&text)
        .map_err(|e| Error::Manifest(format!("{}: {e}", path.display())))?;
    Ok(docs.into_iter().filter(|d| !d.is_null()).collect())
}

/// Server-side applies `docs` (any kinds the server serves) with `client`, force-taking
/// conflicting fields, in order.
pub async fn apply(client: &kube::Client, docs: &[Value]) -> Result<(), Error> {
    for doc in docs {
        let (api_version, kind) = (
            doc["apiVersion"].as_str().unwrap_or_default(),
            doc["kind"].as_str().unwrap_or_default(),
        );
        let name = doc["metadata"]["name"].as_str().unwrap_or_default();
        let what = format!("apply {api_version} {kind} {name}");
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        let gvk = GroupVersionKind::gvk(group, version, kind);
        let (resource, capabilities) = kube::discovery::pinned_kind(client, &gvk)
            .await
            .map_err(kube_err(format!("{what}: discovery")))?;
        let api: Api<DynamicObject> = match doc["metadata"]["namespace"].as_str() {
            Some(ns) if capabilities.scope == kube::discovery::Scope::Namespaced => {
                Api::namespaced_with(client.clone(), ns, &resource)
            }
            _ => Api::all_with(client.clone(), &resource),
        };
        api.patch(
            name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(doc),
        )
        .await
        .map_err(kube_err(what))?;
    }
    Ok(())
}

impl Envtest {
    /// Starts etcd and kube-apiserver from `assets`, waits until the server is ready and
    /// installs `options.crds`. A process that exits during startup (most likely a port taken
    /// between choosing it and binding it) is retried twice on new ports.
    pub async fn start(assets: &Path, options: Options) -> Result<Self, Error> {
        let mut attempt = 1;
        loop {
            match Self::start_once(assets, options.clone()).await {
                Err(Error::Exited { process, log, .. }) if attempt < 3 => {
                    say(&format!(
                        "envtest: {process} exited during startup (attempt {attempt}), retrying on new ports; its log:\n{log}"
                    ));
                    attempt += 1;
                }
                outcome => return outcome,
            }
        }
    }

    async fn start_once(assets: &Path, options: Options) -> Result<Self, Error> {
        let binary = |name: &'static str| {
            let path = assets.join(name);
            if path.is_file() {
                Ok(path)
            } else {
                Err(Error::MissingBinary {
                    dir: assets.display().to_string(),
                    binary: name,
                })
            }
        };
        let (etcd_bin, apiserver_bin) = (binary("etcd")?, binary("kube-apiserver")?);
        remove_stale_dirs();
        let dir = tempfile::Builder::new()
            .prefix(&format!("{DIR_PREFIX}{}-", std::process::id()))
            .tempdir()
            .map_err(io("envtest temporary directory"))?;
        let d = dir.path();

        // Two identities, as the README of the binaries describes (user,uid,"groups").
        let admin_token = uuid::Uuid::new_v4().simple().to_string();
        let operator_token = uuid::Uuid::new_v4().simple().to_string();
        let sa = &options.service_account;
        let tokens = format!(
            "{admin_token},envtest-admin,envtest-admin,\"system:masters,system:authenticated\"\n\
             {operator_token},{user},{uid},\"system:serviceaccounts,system:serviceaccounts:{ns},system:authenticated\"\n",
            user = sa.username(),
            uid = uuid::Uuid::new_v4(),
            ns = sa.namespace,
        );
        std::fs::write(d.join("tokens.csv"), tokens).map_err(io("write tokens.csv"))?;
        let (key, public) = (d.join("sa.key"), d.join("sa.pub"));
        run_command(
            Command::new("openssl")
                .args(["genrsa", "-out"])
                .arg(&key)
                .arg("2048"),
        )?;
        run_command(
            Command::new("openssl")
                .arg("rsa")
                .arg("-in")
                .arg(&key)
                .arg("-pubout")
                .arg("-out")
                .arg(&public),
        )?;

        let (etcd_port, peer_port, port) = (free_port()?, free_port()?, free_port()?);
        let etcd_url = format!("http://127.0.0.1:{etcd_port}");
        // stdout and stderr share one file (and its offset), as `2>&1` would.
        let log = |name: &str| -> Result<(Stdio, Stdio), Error> {
            let file = File::create(d.join(name)).map_err(io(format!("create {name}")))?;
            let clone = file.try_clone().map_err(io(format!("open {name}")))?;
            Ok((file.into(), clone.into()))
        };
        let (etcd_out, etcd_err) = log("etcd.log")?;
        let (apiserver_out, apiserver_err) = log("kube-apiserver.log")?;
        let mut etcd = Command::new(&etcd_bin);
        etcd.arg("--data-dir")
            .arg(d.join("etcd"))
            .args(["--listen-client-urls", &etcd_url])
            .args(["--advertise-client-urls", &etcd_url])
            .arg("--listen-peer-urls")
            .arg(format!("http://127.0.0.1:{peer_port}"))
            .stdin(Stdio::null())
            .stdout(etcd_out)
            .stderr(etcd_err);
        let flag = |name: &str, path: &Path| {
            let mut arg = OsString::from(format!("--{name}="));
            arg.push(path);
            arg
        };
        let mut apiserver = Command::new(&apiserver_bin);
        apiserver
            .arg(format!("--etcd-servers={etcd_url}"))
            .args(["--bind-address=127.0.0.1", "--advertise-address=127.0.0.1"])
            .arg(format!("--secure-port={port}"))
            // Without it, v1.19 also serves plain HTTP on 127.0.0.1:8080.
            .arg("--insecure-port=0")
            .arg(flag("cert-dir", &d.join("certs")))
            .arg(flag("token-auth-file", &d.join("tokens.csv")))
            .arg("--authorization-mode=RBAC")
            .arg("--service-account-issuer=https://kubernetes.default.svc")
            .arg(flag("service-account-key-file", &public))
            .arg(flag("service-account-signing-key-file", &key))
            .arg("--service-cluster-ip-range=10.96.0.0/16")
            .stdin(Stdio::null())
            .stdout(apiserver_out)
            .stderr(apiserver_err);
        let (children, launcher) = spawn_watched(vec![etcd, apiserver])?;
        let [etcd, apiserver]: [Child; 2] = children
            .try_into()
            .map_err(|_| Error::Setup("expected two processes".to_owned()))?;
        let running = Running {
            etcd,
            apiserver,
            launcher,
            dir,
        };

        let mut envtest = Self {
            url: format!("https://127.0.0.1:{port}"),
            ca_pem: String::new(),
            admin_token,
            operator_token,
            service_account: options.service_account.clone(),
            version: String::new(),
            running: Mutex::new(Some(running)),
        };
        // From here on, dropping `envtest` stops the processes.
        envtest.wait_ready().await?;
        say(&format!(
            "envtest: kube-apiserver {} at {} (etcd and kube-apiserver from {ASSETS_ENV}={})",
            envtest.version,
            envtest.url,
            assets.display()
        ));
        for crd in &options.crds {
            envtest.install_crds(crd).await?;
        }
        Ok(envtest)
    }

    /// Waits for the self-signed certificate, then for `GET /readyz` as admin, and reads the
    /// server version.
    async fn wait_ready(&mut self) -> Result<(), Error> {
        let dir = self.dir();
        let (cert, log) = (
            dir.join("certs/apiserver.crt"),
            dir.join("kube-apiserver.log"),
        );
        let deadline = Instant::now() + STARTUP;
        let mut last_error = String::new();
        loop {
            self.check_alive()?;
            if Instant::now() > deadline {
                return Err(Error::NotReady(
                    STARTUP,
                    format!("{last_error}\n{}", tail(&log, 30)),
                ));
            }
            // The server writes its certificate and the CA that signed it at startup; read
            // again on every try, in case a try saw the file half-written.
            match std::fs::read_to_string(&cert) {
                Ok(pem) if pem.contains("END CERTIFICATE") => self.ca_pem = pem,
                _ => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            }
            let client = self.client(Identity::Admin).await?;
            let readyz = http_get(&client, "/readyz").await;
            match readyz {
                Ok(body) if body.trim() == "ok" => {
                    let info = client
                        .apiserver_version()
                        .await
                        .map_err(kube_err("GET /version"))?;
                    self.version = info.git_version;
                    return Ok(());
                }
                Ok(body) => last_error = body,
                Err(e) => last_error = e.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// An error naming the process when etcd or kube-apiserver has exited.
    fn check_alive(&self) -> Result<(), Error> {
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        let Some(running) = running.as_mut() else {
            return Err(Error::Setup("envtest was stopped".to_owned()));
        };
        for (process, child, log) in [
            ("etcd", &mut running.etcd, "etcd.log"),
            (
                "kube-apiserver",
                &mut running.apiserver,
                "kube-apiserver.log",
            ),
        ] {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(Error::Exited {
                    process,
                    status: status.to_string(),
                    log: tail(&running.dir.path().join(log), 30),
                });
            }
        }
        Ok(())
    }

    /// The temporary directory (certificates, tokens, logs, etcd data).
    pub fn dir(&self) -> PathBuf {
        self.running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|r| r.dir.path().to_owned())
            .unwrap_or_default()
    }

    /// The process ids of etcd and kube-apiserver while they run.
    pub fn pids(&self) -> Vec<u32> {
        self.running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|r| vec![r.etcd.id(), r.apiserver.id()])
            .unwrap_or_default()
    }

    /// `https://127.0.0.1:<port>`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The server's `gitVersion`, e.g. `v1.19.0-source`.
    pub fn version(&self) -> &str {
        &self.version
    }

    pub fn service_account(&self) -> &ServiceAccount {
        &self.service_account
    }

    /// A kubeconfig (as JSON, which every kubeconfig reader accepts) for `identity`.
    pub fn kubeconfig(&self, identity: Identity) -> Value {
        let token = match identity {
            Identity::Admin => &self.admin_token,
            Identity::ServiceAccount => &self.operator_token,
        };
        let ca = base64::engine::general_purpose::STANDARD.encode(&self.ca_pem);
        json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "envtest", "cluster": {
                "server": self.url, "certificate-authority-data": ca}}],
            "users": [{"name": "envtest", "user": {"token": token}}],
            "contexts": [{"name": "envtest", "context": {"cluster": "envtest", "user": "envtest"}}],
            "current-context": "envtest",
        })
    }

    /// Writes [`Envtest::kubeconfig`] to `path`, for kubectl or a separate operator process.
    pub fn write_kubeconfig(&self, path: &Path, identity: Identity) -> Result<(), Error> {
        std::fs::write(path, self.kubeconfig(identity).to_string())
            .map_err(io(format!("write {}", path.display())))
    }

    /// A client for `identity`. Its connection pool lives in the current tokio runtime: make
    /// one per test.
    pub async fn client(&self, identity: Identity) -> Result<kube::Client, Error> {
        self.client_in(identity, "default").await
    }

    /// A client for `identity` whose default namespace is `namespace`.
    pub async fn client_in(
        &self,
        identity: Identity,
        namespace: &str,
    ) -> Result<kube::Client, Error> {
        let mut kubeconfig = self.kubeconfig(identity);
        kubeconfig["contexts"][0]["context"]["namespace"] = json!(namespace);
        let kubeconfig = Kubeconfig::from_yaml(&kubeconfig.to_string())
            .map_err(|e| Error::Setup(format!("envtest kubeconfig: {e}")))?;
        let config =
            kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                .await
                .map_err(|e| Error::Setup(format!("envtest kubeconfig: {e}")))?;
        kube::Client::try_from(config).map_err(kube_err("envtest client"))
    }

    /// Creates namespace `<prefix>-<random>` and returns its name (namespaces never finish
    /// terminating on this server, so every test gets a fresh one).
    pub async fn create_namespace(&self, prefix: &str) -> Result<String, Error> {
        let name = format!(
            "{prefix}-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        self.ensure_namespace(&name).await?;
        Ok(name)
    }

    /// Creates namespace `name` unless it exists.
    pub async fn ensure_namespace(&self, name: &str) -> Result<(), Error> {
        let client = self.client(Identity::Admin).await?;
        let namespaces: Api<Namespace> = Api::all(client);
        let namespace: Namespace = serde_json::from_value(json!({"metadata": {"name": name}}))
            .map_err(|e| Error::Setup(e.to_string()))?;
        match namespaces.create(&PostParams::default(), &namespace).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
            Err(e) => Err(kube_err(format!("create namespace {name}"))(e)),
        }
    }

    /// Installs the CRDs of manifest `path` with their CEL rules stripped (saying so), and
    /// waits until each is Established and served.
    pub async fn install_crds(&self, path: &Path) -> Result<(), Error> {
        let client = self.client(Identity::Admin).await?;
        let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
        for mut doc in read_manifests(path)? {
            let stripped = strip_cel_rules(&mut doc);
            let crd: CustomResourceDefinition = serde_json::from_value(doc)
                .map_err(|e| Error::Manifest(format!("{}: not a CRD: {e}", path.display())))?;
            let name = crd.metadata.name.clone().unwrap_or_default();
            crds.patch(
                &name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&crd),
            )
            .await
            .map_err(kube_err(format!("install CRD {name}")))?;
            say(&format!(
                "envtest: installed CRD {name} from {} with its {stripped} CEL rule list(s) \
                 (x-kubernetes-validations) stripped: kube-apiserver {} predates CEL; the rules \
                 are tested offline",
                path.display(),
                self.version
            ));
            tokio::time::timeout(
                STARTUP,
                await_condition(crds.clone(), &name, conditions::is_crd_established()),
            )
            .await
            .map_err(|_| Error::Setup(format!("CRD {name} not Established in {STARTUP:?}")))?
            .map_err(|e| Error::Setup(format!("CRD {name}: {e}")))?;
            // Established can come a moment before the resource is served.
            let version = crd.spec.versions.iter().find(|v| v.served);
            let resource = ApiResource {
                group: crd.spec.group.clone(),
                version: version.map(|v| v.name.clone()).unwrap_or_default(),
                api_version: format!(
                    "{}/{}",
                    crd.spec.group,
                    version.map(|v| v.name.as_str()).unwrap_or_default()
                ),
                kind: crd.spec.names.kind.clone(),
                plural: crd.spec.names.plural.clone(),
            };
            let api: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
            let deadline = Instant::now() + STARTUP;
            while let Err(e) = api.list(&ListParams::default().limit(1)).await {
                if Instant::now() > deadline {
                    return Err(kube_err(format!("CRD {name} never served"))(e));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Ok(())
    }

    /// Kills both processes and removes the temporary directory (idempotent).
    pub fn stop(&self) {
        let running = self
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(running) = running {
            running.stop();
        }
    }
}

impl Drop for Envtest {
    fn drop(&mut self) {
        self.stop();
    }
}

/// GET `path` as text.
async fn http_get(client: &kube::Client, path: &str) -> Result<String, kube::Error> {
    let request = http::Request::get(path)
        .body(Vec::new())
        .map_err(kube::Error::HttpError)?;
    client.request_text(request).await
}

/// The one server of a test process (tests in one binary share it, each in its own namespace).
static SHARED: OnceCell<Envtest> = OnceCell::const_new();

/// Stops the shared server as the test process exits normally.
extern "C" fn stop_shared() {
    if let Some(envtest) = SHARED.get() {
        envtest.stop();
    }
}

/// The server shared by the tests of this process, started by the first caller with `options`
/// (later callers get that one). `None` when `KUBEBUILDER_ASSETS` is unset outside CI, after
/// saying that `test` was skipped (see [`assets_or_skip`]). Panics when the server cannot start.
pub async fn shared(test: &str, options: impl FnOnce() -> Options) -> Option<&'static Envtest> {
    let assets = assets_or_skip(test)?;
    let envtest = SHARED
        .get_or_init(|| async {
            let started = Envtest::start(&assets, options())
                .await
                .unwrap_or_else(|e| panic!("envtest: cannot start the real API server: {e}"));
            // SAFETY: registers a plain extern "C" function; it only takes a lock and kills
            // and reaps the two children.
            unsafe {
                libc::atexit(stop_shared);
            }
            started
        })
        .await;
    Some(envtest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cel_rules_are_stripped_at_every_depth_and_counted() {
        let mut crd = json!({"spec": {"versions": [{"schema": {"openAPIV3Schema": {
            "x-kubernetes-validations": [{"rule": "self.a == self.b"}],
            "properties": {"spec": {
                "x-kubernetes-validations": [{"rule": "self == oldSelf"}],
                "properties": {"name": {"type": "string", "pattern": "^[a-z]+$"}}
            }}
        }}}]}});
        assert_eq!(strip_cel_rules(&mut crd), 2);
        assert!(!crd.to_string().contains("x-kubernetes-validations"));
        let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
        assert_eq!(
            schema["properties"]["spec"]["properties"]["name"]["pattern"], "^[a-z]+$",
            "everything else stays"
        );
        assert_eq!(strip_cel_rules(&mut crd), 0);
    }

    #[test]
    fn a_service_account_authenticates_under_its_kubernetes_user_name() {
        let sa = ServiceAccount::new("blob-backup-operator", "operator");
        assert_eq!(
            sa.username(),
            "system:serviceaccount:blob-backup-operator:operator"
        );
    }
}
