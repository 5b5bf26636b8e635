//! End to end on a real API server: the real binary, `kubectl`, the checked-in CRD, the RBAC of
//! deploy/operator.yaml and the examples of deploy/examples/.
//!
//! The server is the cluster of `BBO_E2E_KUBECONFIG` (a disposable kind, k3d or AKS cluster);
//! without it, a `kube-apiserver` + `etcd` started from `KUBEBUILDER_ASSETS` (testkit's
//! envtest launcher; `crds/` installed with its CEL rules stripped, as v1.19 predates CEL).
//! With neither it says it skipped and how to get the binaries, except under `CI=true`, where
//! it fails. It
//! 1. creates a namespace `bbo-e2e-<random>`, applies `crds/` server-side (on a cluster), and
//!    applies the RBAC of deploy/operator.yaml into that namespace (ClusterRole and binding
//!    renamed after it), then checks with `kubectl auth can-i --as=<service account>` that it
//!    grants what the operator does;
//! 2. starts `blob-backup-operator run --embedded-vault --watch-namespace <ns>` locally (Azure
//!    is the embedded vault emulator), waits for `/readyz`; on envtest it runs with the
//!    ServiceAccount's own token, so the RBAC of step 1 is all it has; on a cluster, as the
//!    kubeconfig's user;
//! 3. for each example, one at a time (they protect the same account): `kubectl apply`,
//!    `kubectl wait --for=condition=Ready`, checks the `kubectl get` columns, the finalizer
//!    and the events, `kubectl delete`, checks the finalizer holds the resource until Azure
//!    confirms, `kubectl wait --for=delete`, and checks what the deletion policy left in the
//!    emulator (clearing it through the emulator's admin API for the next example);
//! 4. stops the operator with SIGTERM (it must exit 0) and deletes what it created.
//!
//! `kubectl` is ./.tools/bin/kubectl (scripts/install-tools.sh) or the one on PATH.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use testkit::checkout::repo;

use serde_json::{Value, json};
use testkit::envtest;

const BIN: &str = env!("CARGO_BIN_EXE_blob-backup-operator");
const CRD: &str = "blobbackupinstances.dataprotection.blobbackup.io";
/// The operator's ServiceAccount in deploy/operator.yaml.
const SERVICE_ACCOUNT: &str = "blob-backup-operator";
/// Time for one resource to go Ready or away (the embedded vault's operations take ~1 s each).
const WAIT: &str = "180s";

struct Kubectl {
    program: PathBuf,
    kubeconfig: PathBuf,
}

impl Kubectl {
    fn new(kubeconfig: PathBuf) -> Self {
        let bundled = repo().join(".tools/bin/kubectl");
        let program = if bundled.is_file() {
            bundled
        } else {
            PathBuf::from("kubectl")
        };
        Self {
            program,
            kubeconfig,
        }
    }

    /// Runs kubectl with `stdin`; stdout on success, the whole story on failure.
    fn try_run(&self, args: &[&str], stdin: Option<&str>) -> Result<String, String> {
        let mut child = Command::new(&self.program)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", self.program.display()))?;
        if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
            use std::io::Write;
            pipe.write_all(text.as_bytes())
                .map_err(|e| format!("kubectl stdin: {e}"))?;
        }
        let output = child
            .wait_with_output()
            .map_err(|e| format!("kubectl: {e}"))?;
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        if output.status.success() {
            Ok(stdout)
        } else {
            Err(format!(
                "kubectl {args:?} failed ({}):\n{stdout}{}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            ))
        }
    }

    fn run(&self, args: &[&str]) -> String {
        self.try_run(args, None).unwrap_or_else(|e| panic!("{e}"))
    }

    fn apply_json(&self, objects: &[Value]) -> String {
        let list = json!({"apiVersion": "v1", "kind": "List", "items": objects});
        self.try_run(&["apply", "-f", "-"], Some(&list.to_string()))
            .unwrap_or_else(|e| panic!("{e}"))
    }
}

/// The operator process and its log lines (JSON, read from stderr by a thread).
struct Operator {
    child: Child,
    logs: Arc<Mutex<Vec<String>>>,
}

impl Operator {
    /// `old_server`: the server predates the supported floor (envtest's v1.19), so the operator
    /// is told to run on it anyway.
    fn start(kubeconfig: &Path, namespace: &str, old_server: bool) -> Self {
        let mut child = Command::new(BIN)
            .args(["run", "--embedded-vault", "--watch-namespace", namespace])
            .args(old_server.then_some("--allow-unsupported-kubernetes"))
            .args(["--metrics-addr", "127.0.0.1:0", "--log-format", "json"])
            .env_clear()
            .env("KUBECONFIG", kubeconfig)
            .envs(
                ["PATH", "HOME"]
                    .iter()
                    .filter_map(|k| Some((k, std::env::var_os(k)?))),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the operator starts");
        let logs = Arc::new(Mutex::new(Vec::new()));
        if let Some(stderr) = child.stderr.take() {
            let sink = logs.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    sink.lock().unwrap().push(line);
                }
            });
        }
        Self { child, logs }
    }

    fn logs(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }

    /// The field `field` of the first JSON log line whose message is `message`.
    fn wait_for_log(&mut self, message: &str, field: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let found = self.logs.lock().unwrap().iter().find_map(|line| {
                let entry: Value = serde_json::from_str(line).ok()?;
                (entry["message"] == message).then(|| entry[field].as_str().map(str::to_owned))?
            });
            if let Some(value) = found {
                return value;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("the operator exited ({status}):\n{}", self.logs());
            }
            assert!(
                Instant::now() < deadline,
                "no log {message:?} in\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGTERM, then the exit status within 30 s.
    fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "no exit after SIGTERM:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Deletes what the test created, even when it fails half-way (resources left behind keep
/// their finalizer once the operator is gone, so it is removed first).
struct Cleanup<'k> {
    kubectl: &'k Kubectl,
    namespace: String,
    cluster_scoped: Vec<(String, String)>,
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        let ns = self.namespace.as_str();
        if let Ok(names) = self
            .kubectl
            .try_run(&["get", "bbi", "-n", ns, "-o", "name"], None)
        {
            for name in names.lines().filter(|l| !l.is_empty()) {
                let _ = self.kubectl.try_run(
                    &[
                        "patch",
                        name,
                        "-n",
                        ns,
                        "--type=merge",
                        "-p",
                        r#"{"metadata":{"finalizers":null}}"#,
                    ],
                    None,
                );
            }
        }
        let _ = self
            .kubectl
            .try_run(&["delete", "namespace", ns, "--wait=false"], None);
        for (kind, name) in &self.cluster_scoped {
            let _ = self
                .kubectl
                .try_run(&["delete", kind, name, "--ignore-not-found"], None);
        }
    }
}

/// The RBAC objects of deploy/operator.yaml, moved into `namespace` (cluster-scoped ones
/// renamed after it, so parallel runs and a real install do not collide).
fn rbac_for(namespace: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(repo().join("deploy/operator.yaml")).unwrap();
    let docs: Vec<Value> = serde_saphyr::from_multiple(&text).expect("deploy/operator.yaml parses");
    let unique = |name: &Value| json!(format!("{}-{namespace}", name.as_str().unwrap_or_default()));
    docs.into_iter()
        .filter(|doc| {
            matches!(
                doc["kind"].as_str(),
                Some(
                    "ServiceAccount"
                        | "ClusterRole"
                        | "ClusterRoleBinding"
                        | "Role"
                        | "RoleBinding"
                )
            )
        })
        .map(|mut doc| {
            match doc["kind"].as_str() {
                Some("ClusterRole") => doc["metadata"]["name"] = unique(&doc["metadata"]["name"]),
                Some("ClusterRoleBinding") => {
                    doc["metadata"]["name"] = unique(&doc["metadata"]["name"]);
                    doc["roleRef"]["name"] = unique(&doc["roleRef"]["name"]);
                }
                _ => doc["metadata"]["namespace"] = json!(namespace),
            }
            if let Some(subjects) = doc["subjects"].as_array_mut() {
                for subject in subjects {
                    subject["namespace"] = json!(namespace);
                }
            }
            doc
        })
        .collect()
}

/// `kubectl get` output as header → value, for the row of `name`.
fn columns(table: &str, name: &str) -> Vec<(String, String)> {
    let mut lines = table.lines();
    let header = lines.next().unwrap_or_default();
    let row = lines
        .find(|l| l.split_whitespace().next() == Some(name))
        .unwrap_or_else(|| panic!("no row {name} in\n{table}"));
    // Columns start where the header's words start; values may contain spaces (Message).
    let starts: Vec<usize> = header
        .char_indices()
        .filter(|(i, c)| !c.is_whitespace() && (*i == 0 || header[..*i].ends_with(' ')))
        .map(|(i, _)| i)
        .collect();
    starts
        .iter()
        .enumerate()
        .map(|(n, &start)| {
            let end = starts
                .get(n + 1)
                .copied()
                .unwrap_or(row.len())
                .min(row.len());
            let title = header[start..]
                .split_whitespace()
                .next()
                .unwrap_or_default();
            let value = row
                .get(start.min(row.len())..end)
                .unwrap_or_default()
                .trim();
            (title.to_owned(), value.to_owned())
        })
        .collect()
}

fn column<'t>(columns: &'t [(String, String)], title: &str) -> &'t str {
    columns
        .iter()
        .find(|(t, _)| t == title)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("no column {title} in {columns:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn examples_go_ready_and_away_on_a_real_cluster() {
    let namespace = format!(
        "bbo-e2e-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    if let Some(kubeconfig) = std::env::var_os("BBO_E2E_KUBECONFIG").filter(|v| !v.is_empty()) {
        let kubeconfig = PathBuf::from(kubeconfig);
        return examples_go_ready_and_away(&kubeconfig, &kubeconfig, &namespace, true).await;
    }
    envtest::say(
        "e2e: BBO_E2E_KUBECONFIG is not set (a disposable kind, k3d or AKS cluster): running on a kube-apiserver from KUBEBUILDER_ASSETS instead",
    );
    let Some(assets) = envtest::assets_or_skip("e2e") else {
        return;
    };
    let options = envtest::Options {
        service_account: envtest::ServiceAccount::new(&namespace, SERVICE_ACCOUNT),
        crds: vec![
            repo().join("crds/blobbackupinstances.yaml"),
            repo().join("crds/blobrestores.yaml"),
            repo().join("crds/backupvaultgrants.yaml"),
        ],
    };
    let server = envtest::Envtest::start(&assets, options)
        .await
        .unwrap_or_else(|e| panic!("e2e: cannot start the real API server: {e}"));
    let (admin, operator) = (
        server.dir().join("admin.kubeconfig"),
        server.dir().join("operator.kubeconfig"),
    );
    server
        .write_kubeconfig(&admin, envtest::Identity::Admin)
        .unwrap();
    server
        .write_kubeconfig(&operator, envtest::Identity::ServiceAccount)
        .unwrap();
    examples_go_ready_and_away(&admin, &operator, &namespace, false).await;
}

/// The whole run on the server of `kubeconfig` (kubectl's), the operator using
/// `operator_kubeconfig`, in namespace `ns`; `install_crd`: apply `crds/` first (envtest
/// installed it already, without the CEL rules that server refuses).
async fn examples_go_ready_and_away(
    kubeconfig: &Path,
    operator_kubeconfig: &Path,
    ns: &str,
    install_crd: bool,
) {
    let kubectl = Kubectl::new(kubeconfig.to_owned());
    let namespace = ns.to_owned();

    // 1. Namespace, CRD, RBAC.
    kubectl.run(&["create", "namespace", ns]);
    let mut cleanup = Cleanup {
        kubectl: &kubectl,
        namespace: namespace.clone(),
        cluster_scoped: Vec::new(),
    };
    let crd = repo().join("crds");
    if install_crd {
        kubectl.run(&[
            "apply",
            "--server-side",
            "--force-conflicts",
            "-f",
            crd.to_str().unwrap(),
        ]);
    }
    kubectl.run(&[
        "wait",
        "--for=condition=Established",
        &format!("crd/{CRD}"),
        "--timeout=60s",
    ]);
    let rbac = rbac_for(ns);
    for doc in &rbac {
        if matches!(
            doc["kind"].as_str(),
            Some("ClusterRole" | "ClusterRoleBinding")
        ) {
            let kind = doc["kind"].as_str().unwrap_or_default().to_lowercase();
            let name = doc["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            cleanup.cluster_scoped.push((kind, name));
        }
    }
    kubectl.apply_json(&rbac);
    let service_account = format!("system:serviceaccount:{ns}:{SERVICE_ACCOUNT}");
    for (verb, resource) in [
        ("watch", "blobbackupinstances.dataprotection.blobbackup.io"),
        (
            "patch",
            "blobbackupinstances.dataprotection.blobbackup.io/status",
        ),
        ("patch", "blobbackupinstances.dataprotection.blobbackup.io"),
        ("create", "events.events.k8s.io"),
        ("patch", "events.events.k8s.io"),
        ("create", "leases.coordination.k8s.io"),
    ] {
        let answer = kubectl.try_run(
            &[
                "auth",
                "can-i",
                verb,
                resource,
                "-n",
                ns,
                "--as",
                &service_account,
            ],
            None,
        );
        assert_eq!(
            answer.as_deref().map(str::trim),
            Ok("yes"),
            "RBAC: can the operator {verb} {resource}?"
        );
    }
    let denied = kubectl.try_run(
        &[
            "auth",
            "can-i",
            "delete",
            "secrets",
            "-n",
            ns,
            "--as",
            &service_account,
        ],
        None,
    );
    assert!(
        denied.is_err(),
        "least privilege: the operator cannot delete secrets"
    );

    // 2. The operator, against the embedded vault.
    // envtest (CRD installed by the launcher) is Kubernetes 1.19, below the supported floor.
    let mut operator = Operator::start(operator_kubeconfig, ns, !install_crd);
    let vault = operator.wait_for_log("embedded vault emulator started", "url");
    let metrics_addr = operator.wait_for_log("serving /metrics, /healthz and /readyz", "addr");
    let http = dataprotection::default_http_client().unwrap();
    let ready_by = Instant::now() + Duration::from_secs(60);
    loop {
        let readyz = http
            .get(format!("http://{metrics_addr}/readyz"))
            .send()
            .await;
        if readyz.is_ok_and(|r| r.status() == 200) {
            break;
        }
        assert!(
            Instant::now() < ready_by,
            "/readyz never 200:\n{}",
            operator.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let emulator_instances = || async {
        let url = format!("{}_emulator/instances", vault);
        let answer = http.get(url).send().await.unwrap();
        answer.json::<Vec<Value>>().await.unwrap()
    };

    // 3. Each example, one at a time: they all protect the article's account.
    for (file, name, leaves_instance) in [
        ("msblobbackup.yaml", "msblobbackup", false),
        ("deletion-policy-delete.yaml", "msblobbackup-delete", false),
        ("vaulted.yaml", "msblobbackup-vaulted", false),
        ("deletion-policy-retain.yaml", "msblobbackup-retain", true),
        ("deletion-policy-orphan.yaml", "msblobbackup-orphan", true),
    ] {
        let path = repo().join("deploy/examples").join(file);
        kubectl.run(&["apply", "-n", ns, "-f", path.to_str().unwrap()]);
        let bbi = format!("bbi/{name}");
        let waited = kubectl.try_run(
            &[
                "wait",
                "-n",
                ns,
                "--for=condition=Ready",
                &bbi,
                &format!("--timeout={WAIT}"),
            ],
            None,
        );
        if let Err(e) = waited {
            let object = kubectl.try_run(&["get", "-n", ns, &bbi, "-o", "yaml"], None);
            panic!(
                "{file}: {e}\n{object:?}\noperator logs:\n{}",
                operator.logs()
            );
        }

        let table = kubectl.run(&["get", "bbi", "-n", ns]);
        let row = columns(&table, name);
        assert_eq!(column(&row, "READY"), "True", "{table}");
        assert_eq!(column(&row, "REASON"), "ProtectionConfigured", "{table}");
        assert_eq!(column(&row, "VAULT"), "testBkpVault", "{table}");
        assert_eq!(column(&row, "ACCOUNT"), "msblobbackup", "{table}");
        assert!(!column(&row, "POLICY").is_empty(), "{table}");
        assert!(!column(&row, "DELETION").is_empty(), "{table}");
        // The Create succeeded: nothing in flight or failed to show.
        assert_eq!(column(&row, "OPERATION"), "", "{table}");
        let wide = kubectl.run(&["get", "bbi", "-n", ns, "-o", "wide"]);
        let wide_row = columns(&wide, name);
        assert_eq!(
            column(&wide_row, "PROTECTION"),
            "ProtectionConfigured",
            "{wide}"
        );
        assert!(!column(&wide_row, "MESSAGE").is_empty(), "{wide}");

        let object: Value =
            serde_json::from_str(&kubectl.run(&["get", "-n", ns, &bbi, "-o", "json"])).unwrap();
        assert!(
            object["metadata"]["finalizers"]
                .as_array()
                .is_some_and(|f| f
                    .iter()
                    .any(|f| f == "dataprotection.blobbackup.io/finalizer")),
            "{file}: finalizer"
        );
        assert_eq!(
            object["status"]["observedGeneration"],
            object["metadata"]["generation"]
        );
        let instance_id = object["status"]["backupInstanceId"]
            .as_str()
            .unwrap()
            .to_owned();
        let events = kubectl.run(&[
            "get",
            "events",
            "-n",
            ns,
            "--field-selector",
            &format!("involvedObject.name={name}"),
            "-o",
            "jsonpath={.items[*].reason}",
        ]);
        assert!(
            events.split_whitespace().any(|r| r == "Protected"),
            "{file}: events {events}"
        );

        kubectl.run(&["delete", "-n", ns, &bbi, "--wait=false"]);
        // Until Azure confirms, the finalizer keeps the resource (it may already be gone
        // when Azure was quick).
        if let Ok(text) = kubectl.try_run(&["get", "-n", ns, &bbi, "-o", "json"], None) {
            let deleting: Value = serde_json::from_str(&text).unwrap();
            assert!(deleting["metadata"]["deletionTimestamp"].is_string());
            assert!(
                deleting["metadata"]["finalizers"]
                    .as_array()
                    .is_some_and(|f| !f.is_empty()),
                "{file}: a resource being deleted keeps its finalizer until Azure confirms"
            );
        }
        let gone = kubectl.try_run(
            &[
                "wait",
                "-n",
                ns,
                "--for=delete",
                &bbi,
                &format!("--timeout={WAIT}"),
            ],
            None,
        );
        if let Err(e) = gone {
            panic!(
                "{file}: not deleted: {e}\noperator logs:\n{}",
                operator.logs()
            );
        }
        let left = emulator_instances().await;
        assert_eq!(
            left.len(),
            usize::from(leaves_instance),
            "{file}: left in Azure: {left:?}"
        );
        if leaves_instance {
            let mut url = url::Url::parse(&format!("{vault}_emulator/instances")).unwrap();
            url.query_pairs_mut().append_pair("id", &instance_id);
            let cleared = http.delete(url).send().await.unwrap();
            assert!(
                cleared.status().is_success(),
                "{file}: clearing the emulator"
            );
        }
    }

    // 4. A clean stop.
    let status = operator.terminate();
    assert!(status.success(), "exit {status}:\n{}", operator.logs());
    drop(cleanup);
}

// The helpers above, checked without a cluster.

#[test]
fn columns_are_read_under_their_headers() {
    let table = "\
NAME           READY   REASON                 OPERATION           AGE   PROTECTION             MESSAGE
msblobbackup   True    ProtectionConfigured                       12s   ProtectionConfigured   Azure reports ProtectionConfigured for it
other          False   Validating             Validate InProgress  1s                          Validating with Azure
";
    let row = columns(table, "msblobbackup");
    assert_eq!(column(&row, "READY"), "True");
    assert_eq!(column(&row, "OPERATION"), "");
    assert_eq!(
        column(&row, "MESSAGE"),
        "Azure reports ProtectionConfigured for it"
    );
    let other = columns(table, "other");
    assert_eq!(column(&other, "PROTECTION"), "");
    assert_eq!(column(&other, "OPERATION"), "Validate InProgress");
}

#[test]
fn the_rbac_under_test_is_deploy_operator_yaml_moved_into_the_namespace() {
    let docs = rbac_for("bbo-e2e-x");
    let mut kinds: Vec<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
    kinds.sort_unstable();
    // No Deployment: the operator under test runs locally, not as a pod. Cluster-wide: the
    // operator's resources, the cluster-scoped reads (kube-system, grants, namespaces), and the
    // tenants' aggregated view and edit roles.
    assert_eq!(
        kinds,
        [
            "ClusterRole",
            "ClusterRole",
            "ClusterRole",
            "ClusterRole",
            "ClusterRoleBinding",
            "ClusterRoleBinding",
            "Role",
            "RoleBinding",
            "ServiceAccount"
        ]
    );
    for doc in &docs {
        match doc["kind"].as_str() {
            Some("ClusterRole" | "ClusterRoleBinding") => {
                assert!(
                    doc["metadata"]["name"]
                        .as_str()
                        .unwrap()
                        .ends_with("-bbo-e2e-x")
                )
            }
            _ => assert_eq!(doc["metadata"]["namespace"], "bbo-e2e-x"),
        }
        for subject in doc["subjects"].as_array().into_iter().flatten() {
            assert_eq!(subject["namespace"], "bbo-e2e-x");
        }
    }
    let binding = docs
        .iter()
        .find(|d| d["kind"] == "ClusterRoleBinding")
        .unwrap();
    assert_eq!(binding["roleRef"]["name"], "blob-backup-operator-bbo-e2e-x");
}
