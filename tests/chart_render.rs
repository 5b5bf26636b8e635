//! Renders the Helm chart with ./.tools/bin/helm (installed by scripts/install-tools.sh) and
//! checks what a platform team relies on: least-privilege RBAC, the restricted security context,
//! probes, flags, the auth modes, the CRD switches, and that deploy/ is the default render.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};

const RELEASE: &str = "blob-backup-operator";
const NAMESPACE: &str = "blob-backup-operator";
const CREDENTIAL_DIR: &str = "/var/run/secrets/blob-backup-operator/azure";

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn chart() -> PathBuf {
    repo().join("charts/blob-backup-operator")
}

fn helm() -> PathBuf {
    let helm = repo().join(".tools/bin/helm");
    assert!(
        helm.is_file(),
        "{} is missing: run scripts/install-tools.sh",
        helm.display()
    );
    helm
}

/// Runs a command; Ok(stdout) when it succeeded, Err(stdout + stderr) when it did not.
fn run(command: &mut Command) -> Result<String, String> {
    let output = command.output().expect("start the command");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if output.status.success() {
        Ok(stdout)
    } else {
        Err(format!(
            "{stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

/// `helm template` of the chart with extra arguments, parsed into its documents.
fn render(args: &[&str]) -> Result<Vec<Value>, String> {
    let out = run(Command::new(helm())
        .args(["template", RELEASE])
        .arg(chart())
        .args(["--namespace", NAMESPACE])
        .args(args))?;
    let docs: Vec<Value> = serde_saphyr::from_multiple(&out).map_err(|e| e.to_string())?;
    Ok(docs.into_iter().filter(|doc| !doc.is_null()).collect())
}

fn render_ok(args: &[&str]) -> Vec<Value> {
    render(args).unwrap_or_else(|e| panic!("helm template {args:?} failed:\n{e}"))
}

fn of_kind<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|doc| doc["kind"] == kind).collect()
}

fn one<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    match of_kind(docs, kind).as_slice() {
        [doc] => doc,
        found => panic!("expected one {kind}, found {}", found.len()),
    }
}

fn container(docs: &[Value]) -> &Value {
    &one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]
}

fn args(docs: &[Value]) -> Vec<String> {
    container(docs)["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(|arg| arg.as_str().expect("string arg").to_owned())
        .collect()
}

fn env<'a>(docs: &'a [Value], name: &str) -> Option<&'a Value> {
    container(docs)["env"]
        .as_array()
        .expect("env")
        .iter()
        .find(|var| var["name"] == name)
}

/// The rules on the operator's own resources and events: the same in a ClusterRole and in a
/// namespace's Role. Exactly the calls the operator makes: list/watch (the watch), get (a fresh
/// read when the watch is behind), patch (the finalizer's JSON patch), patch on status
/// (server-side apply), create/patch of events.k8s.io Events (kube's Recorder). No `update`,
/// no `finalizers` subresource, no core/v1 Events.
fn operator_rules() -> Value {
    json!([
        {"apiGroups": ["dataprotection.blobbackup.io"], "resources": ["blobbackupinstances"],
         "verbs": ["get", "list", "watch", "patch"]},
        {"apiGroups": ["dataprotection.blobbackup.io"], "resources": ["blobbackupinstances/status"],
         "verbs": ["patch"]},
        {"apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch"]},
    ])
}

fn lease_rules() -> Value {
    json!([
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
         "resourceNames": ["blob-backup-operator"], "verbs": ["get", "patch"]},
    ])
}

fn service_account_subject() -> Value {
    json!([{"kind": "ServiceAccount", "name": RELEASE, "namespace": NAMESPACE}])
}

fn assert_no_wildcards(docs: &[Value]) {
    for role in of_kind(docs, "ClusterRole")
        .into_iter()
        .chain(of_kind(docs, "Role"))
    {
        for rule in role["rules"].as_array().expect("rules") {
            for field in ["apiGroups", "resources", "verbs", "resourceNames"] {
                let values = rule[field]
                    .as_array()
                    .map(Vec::as_slice)
                    .unwrap_or_default();
                assert!(
                    !values
                        .iter()
                        .any(|v| v.as_str().is_some_and(|s| s.contains('*'))),
                    "wildcard in {field} of {}",
                    role["metadata"]["name"]
                );
            }
        }
    }
}

fn ci_values(name: &str) -> String {
    chart().join("ci").join(name).display().to_string()
}

#[test]
fn lint_is_clean_with_default_and_ci_values() {
    let mut value_files: Vec<PathBuf> = std::fs::read_dir(chart().join("ci"))
        .expect("ci values")
        .map(|entry| entry.expect("entry").path())
        .collect();
    value_files.sort();
    assert!(value_files.len() >= 4, "ci/ lost its values files");
    let runs = std::iter::once(None).chain(value_files.iter().map(Some));
    for values in runs {
        let mut lint = Command::new(helm());
        lint.args(["lint", "--strict", "--namespace", NAMESPACE])
            .arg(chart());
        let mut template = Command::new(helm());
        template.args(["template", RELEASE]).arg(chart());
        if let Some(values) = values {
            lint.arg("--values").arg(values);
            template.arg("--values").arg(values);
        }
        if let Err(e) = run(&mut lint).and_then(|_| run(&mut template)) {
            panic!("helm lint/template with {values:?}:\n{e}");
        }
    }
}

#[test]
fn default_rbac_is_least_privilege() {
    let docs = render_ok(&[]);
    assert_no_wildcards(&docs);

    let cluster_role = one(&docs, "ClusterRole");
    assert_eq!(cluster_role["rules"], operator_rules());
    let binding = one(&docs, "ClusterRoleBinding");
    assert_eq!(binding["roleRef"]["kind"], "ClusterRole");
    assert_eq!(binding["roleRef"]["name"], cluster_role["metadata"]["name"]);
    assert_eq!(binding["subjects"], service_account_subject());

    // Leases: only in a Role of the release namespace.
    let role = one(&docs, "Role");
    assert_eq!(role["metadata"]["namespace"], NAMESPACE);
    assert_eq!(role["rules"], lease_rules());
    let role_binding = one(&docs, "RoleBinding");
    assert_eq!(role_binding["metadata"]["namespace"], NAMESPACE);
    assert_eq!(role_binding["roleRef"]["name"], role["metadata"]["name"]);
    assert_eq!(role_binding["subjects"], service_account_subject());

    let service_account = one(&docs, "ServiceAccount");
    assert_eq!(service_account["metadata"]["name"], RELEASE);
    assert_eq!(service_account["metadata"]["namespace"], NAMESPACE);
}

#[test]
fn default_pod_is_restricted_probed_and_flagged() {
    let docs = render_ok(&[]);
    let deployment = one(&docs, "Deployment");
    assert_eq!(deployment["metadata"]["namespace"], NAMESPACE);
    assert_eq!(deployment["spec"]["replicas"], 2);
    // With leader election, a rolling update hands the Lease over: no Recreate needed.
    assert!(deployment["spec"]["strategy"].is_null());
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], RELEASE);
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(pod["securityContext"]["runAsUser"], 65532);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    assert!(
        pod["volumes"].is_null(),
        "no volumes without a credential file"
    );
    assert!(pod["terminationGracePeriodSeconds"].as_u64().is_some());

    let container = container(&docs);
    assert_eq!(
        container["image"],
        "ghcr.io/blob-backup-operator/blob-backup-operator:0.1.0"
    );
    let security = &container["securityContext"];
    assert_eq!(security["runAsNonRoot"], true);
    assert_eq!(security["runAsUser"], 65532);
    assert_eq!(security["readOnlyRootFilesystem"], true);
    assert_eq!(security["allowPrivilegeEscalation"], false);
    assert_eq!(security["capabilities"], json!({"drop": ["ALL"]}));
    assert_eq!(security["seccompProfile"]["type"], "RuntimeDefault");

    assert_eq!(
        container["ports"],
        json!([{"name": "metrics", "containerPort": 8080, "protocol": "TCP"}])
    );
    assert_eq!(
        container["livenessProbe"]["httpGet"],
        json!({"path": "/healthz", "port": "metrics"})
    );
    assert_eq!(
        container["readinessProbe"]["httpGet"],
        json!({"path": "/readyz", "port": "metrics"})
    );

    assert_eq!(
        args(&docs),
        [
            "run",
            "--azure-auth=workload-identity",
            "--arm-endpoint=https://management.azure.com",
            "--api-version=2026-06-01",
            "--azure-write-burst=200",
            "--azure-write-rate=10",
            "--retry-after-max=5m",
            "--metrics-addr=0.0.0.0:8080",
            "--concurrency=16",
            "--resync-interval=10m",
            "--stalled-retry-max=2m",
            "--log-format=text",
            "--leader-elect",
            "--leader-election-lease-name=blob-backup-operator",
        ]
    );
    assert_eq!(
        env(&docs, "POD_NAMESPACE").expect("POD_NAMESPACE")["valueFrom"],
        json!({"fieldRef": {"fieldPath": "metadata.namespace"}})
    );

    let service = one(&docs, "Service");
    assert_eq!(service["metadata"]["namespace"], NAMESPACE);
    assert_eq!(
        service["spec"]["ports"],
        json!([{"name": "metrics", "port": 8080, "targetPort": "metrics", "protocol": "TCP"}])
    );
    assert_eq!(
        service["spec"]["selector"],
        deployment["spec"]["selector"]["matchLabels"]
    );
    assert!(of_kind(&docs, "ServiceMonitor").is_empty());
}

#[test]
fn single_namespace_mode_has_no_cluster_role() {
    let docs = render_ok(&["--set", "watchNamespace=team-a"]);
    assert_no_wildcards(&docs);
    assert!(of_kind(&docs, "ClusterRole").is_empty());
    assert!(of_kind(&docs, "ClusterRoleBinding").is_empty());

    let in_namespace = |kind: &str, namespace: &str| -> Value {
        let found: Vec<&Value> = of_kind(&docs, kind)
            .into_iter()
            .filter(|doc| doc["metadata"]["namespace"] == namespace)
            .collect();
        assert_eq!(found.len(), 1, "one {kind} in {namespace}");
        found[0].clone()
    };
    let role = in_namespace("Role", "team-a");
    assert_eq!(role["rules"], operator_rules());
    let binding = in_namespace("RoleBinding", "team-a");
    assert_eq!(binding["roleRef"]["kind"], "Role");
    assert_eq!(binding["roleRef"]["name"], role["metadata"]["name"]);
    assert_eq!(binding["subjects"], service_account_subject());
    // Leader election keeps its Lease in the release namespace.
    assert_eq!(in_namespace("Role", NAMESPACE)["rules"], lease_rules());
    in_namespace("RoleBinding", NAMESPACE);

    assert!(args(&docs).contains(&"--watch-namespace=team-a".to_owned()));
}

#[test]
fn client_secret_is_a_read_only_file() {
    let docs = render_ok(&["--values", &ci_values("client-secret-values.yaml")]);
    let pod = &one(&docs, "Deployment")["spec"]["template"]["spec"];
    assert_eq!(
        pod["volumes"],
        json!([{"name": "azure-credential", "secret": {
            "secretName": "blob-backup-operator-azure",
            "defaultMode": 0o440,
            "items": [{"key": "secret", "path": "client-secret"}],
        }}])
    );
    assert_eq!(
        container(&docs)["volumeMounts"],
        json!([{"name": "azure-credential", "mountPath": CREDENTIAL_DIR, "readOnly": true}])
    );
    let args = args(&docs);
    assert!(args.contains(&"--azure-auth=client-secret".to_owned()));
    assert!(args.contains(&format!(
        "--client-secret-file={CREDENTIAL_DIR}/client-secret"
    )));
    assert!(args.contains(&"--arm-endpoint=https://management.usgovcloudapi.net".to_owned()));
    assert_eq!(
        env(&docs, "AZURE_CLIENT_ID").expect("client id")["value"],
        "00000000-0000-0000-0000-0000000000aa"
    );
    assert_eq!(
        env(&docs, "AZURE_TENANT_ID").expect("tenant id")["value"],
        "00000000-0000-0000-0000-0000000000bb"
    );
    assert!(env(&docs, "AZURE_AUTHORITY_HOST").is_some());
    let labels = &pod_labels(&docs);
    assert!(labels["azure.workload.identity/use"].is_null());

    let missing_secret = render(&[
        "--set",
        "azure.auth=client-secret,azure.clientId=a,azure.tenantId=b",
    ]);
    let message = missing_secret.expect_err("client-secret without a Secret must not render");
    assert!(
        message.contains("azure.clientSecret.existingSecret is required"),
        "{message}"
    );
}

fn pod_labels(docs: &[Value]) -> Value {
    one(docs, "Deployment")["spec"]["template"]["metadata"]["labels"].clone()
}

#[test]
fn workload_identity_annotates_the_service_account_and_labels_the_pod() {
    let docs = render_ok(&[
        "--set",
        "azure.clientId=11111111-2222-3333-4444-555555555555,azure.tenantId=66666666-7777-8888-9999-000000000000",
    ]);
    let annotations = &one(&docs, "ServiceAccount")["metadata"]["annotations"];
    assert_eq!(
        annotations["azure.workload.identity/client-id"],
        "11111111-2222-3333-4444-555555555555"
    );
    assert_eq!(
        annotations["azure.workload.identity/tenant-id"],
        "66666666-7777-8888-9999-000000000000"
    );
    assert_eq!(pod_labels(&docs)["azure.workload.identity/use"], "true");
    // The webhook injects AZURE_CLIENT_ID and the token file; the chart must not shadow them.
    assert!(env(&docs, "AZURE_CLIENT_ID").is_none());
    assert!(container(&docs)["volumeMounts"].is_null());
}

#[test]
fn managed_identity_passes_the_client_id() {
    let docs = render_ok(&["--values", &ci_values("managed-identity-values.yaml")]);
    assert!(args(&docs).contains(&"--azure-auth=managed-identity".to_owned()));
    assert_eq!(
        env(&docs, "AZURE_CLIENT_ID").expect("client id")["value"],
        "00000000-0000-0000-0000-0000000000cc"
    );
    assert!(pod_labels(&docs)["azure.workload.identity/use"].is_null());
    assert!(of_kind(&docs, "ServiceAccount").is_empty());
    assert_eq!(
        one(&docs, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"],
        "backup-operator"
    );
}

#[test]
fn replicas_require_leader_election() {
    let message = render(&["--set", "leaderElection.enabled=false"])
        .expect_err("two replicas without leader election must not render");
    assert!(
        message.contains("replicaCount is 2 but leaderElection.enabled is false"),
        "{message}"
    );

    let docs = render_ok(&["--set", "leaderElection.enabled=false,replicaCount=1"]);
    // A rolling update would run the new pod next to the old one: two controllers at once.
    assert_eq!(
        one(&docs, "Deployment")["spec"]["strategy"],
        json!({"type": "Recreate"})
    );
    assert!(
        of_kind(&docs, "Role").is_empty(),
        "no lease rights without leader election"
    );
    assert!(
        !args(&docs)
            .iter()
            .any(|arg| arg.starts_with("--leader-elect"))
    );
}

#[test]
fn write_budget_values_become_the_pacing_flags() {
    let docs = render_ok(&[
        "--set",
        "azure.writeBurst=50",
        "--set",
        "azure.writeRate=2.5",
    ]);
    let args = args(&docs);
    assert!(
        args.contains(&"--azure-write-burst=50".to_owned()),
        "{args:?}"
    );
    assert!(
        args.contains(&"--azure-write-rate=2.5".to_owned()),
        "{args:?}"
    );
    let message = render(&["--set", "azure.writeRate=0"]).expect_err("a zero write rate");
    assert!(message.contains("/azure/writeRate"), "{message}");
    let message = render(&["--set", "azure.writeRate=fast"]).expect_err("not a number");
    assert!(message.contains("/azure/writeRate"), "{message}");
    let message = render(&["--set", "azure.writeBurst=0"]).expect_err("an empty bucket");
    assert!(message.contains("/azure/writeBurst"), "{message}");
}

#[test]
fn values_schema_rejects_unknown_auth_modes() {
    let message = render(&["--set", "azure.auth=password"]).expect_err("unknown auth mode");
    assert!(message.contains("/azure/auth"), "{message}");
}

#[test]
fn crd_is_installed_and_kept_by_default() {
    let docs = render_ok(&[]);
    let crd = one(&docs, "CustomResourceDefinition");
    assert_eq!(
        crd["metadata"]["annotations"]["helm.sh/resource-policy"],
        "keep"
    );
    let source: Value = serde_saphyr::from_str(
        &std::fs::read_to_string(repo().join("crds/blobbackupinstances.yaml")).expect("crds/"),
    )
    .expect("crds/blobbackupinstances.yaml");
    assert_eq!(crd["metadata"]["name"], source["metadata"]["name"]);
    assert_eq!(
        crd["spec"], source["spec"],
        "the chart's CRD differs from crds/"
    );

    let not_kept = render_ok(&["--set", "crds.keep=false"]);
    let crd = one(&not_kept, "CustomResourceDefinition");
    assert!(crd["metadata"]["annotations"]["helm.sh/resource-policy"].is_null());

    let without = render_ok(&["--set", "crds.install=false"]);
    assert!(of_kind(&without, "CustomResourceDefinition").is_empty());
}

#[test]
fn chart_crd_copy_equals_crds_dir() {
    let read = |path: &str| std::fs::read_to_string(repo().join(path)).expect(path);
    assert!(
        read("charts/blob-backup-operator/files/crd.yaml") == read("crds/blobbackupinstances.yaml"),
        "charts/blob-backup-operator/files/crd.yaml is stale: run scripts/render-deploy.sh"
    );
}

#[test]
fn service_monitor_scrapes_the_metrics_service() {
    let docs = render_ok(&["--values", &ci_values("servicemonitor-values.yaml")]);
    let monitor = one(&docs, "ServiceMonitor");
    assert_eq!(
        monitor["metadata"]["labels"]["release"],
        "kube-prometheus-stack"
    );
    assert_eq!(
        monitor["spec"]["endpoints"],
        json!([{"port": "metrics", "path": "/metrics", "interval": "15s"}])
    );
    let service = one(&docs, "Service");
    for (key, value) in monitor["spec"]["selector"]["matchLabels"]
        .as_object()
        .expect("matchLabels")
    {
        assert_eq!(&service["metadata"]["labels"][key], value, "label {key}");
    }
    assert_eq!(service["spec"]["ports"][0]["port"], 9090);
    assert_eq!(container(&docs)["ports"][0]["containerPort"], 9090);
    assert!(args(&docs).contains(&"--metrics-addr=0.0.0.0:9090".to_owned()));
}

#[test]
fn deploy_manifests_are_the_default_render() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fresh = dir.path().join("operator.yaml");
    if let Err(e) = run(Command::new(repo().join("scripts/render-deploy.sh")).arg(&fresh)) {
        panic!("scripts/render-deploy.sh failed:\n{e}");
    }
    let committed = std::fs::read_to_string(repo().join("deploy/operator.yaml")).expect("deploy/");
    assert!(
        std::fs::read_to_string(&fresh).expect("rendered") == committed,
        "deploy/operator.yaml is stale: run scripts/render-deploy.sh"
    );

    let docs: Vec<Value> = serde_saphyr::from_multiple(&committed).expect("deploy/operator.yaml");
    let docs: Vec<Value> = docs.into_iter().filter(|doc| !doc.is_null()).collect();
    assert_eq!(docs[0]["kind"], "Namespace");
    assert_eq!(docs[0]["metadata"]["name"], NAMESPACE);
    let kinds: Vec<&str> = docs.iter().filter_map(|doc| doc["kind"].as_str()).collect();
    for kind in [
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "Deployment",
        "Service",
    ] {
        assert!(kinds.contains(&kind), "deploy/operator.yaml has no {kind}");
    }
    assert!(
        !kinds.contains(&"CustomResourceDefinition"),
        "the CRD is applied from crds/, not from deploy/operator.yaml"
    );
}

#[test]
fn static_token_is_a_read_only_file() {
    let docs = render_ok(&[
        "--set",
        "azure.auth=static-token,azure.staticToken.existingSecret=emulator-token",
        "--set",
        "azure.armEndpoint=http://127.0.0.1:8090",
    ]);
    assert_eq!(
        one(&docs, "Deployment")["spec"]["template"]["spec"]["volumes"][0]["secret"]["items"],
        json!([{"key": "token", "path": "token"}])
    );
    assert!(args(&docs).contains(&format!("--token-file={CREDENTIAL_DIR}/token")));
    assert_eq!(container(&docs)["volumeMounts"][0]["readOnly"], true);
}

#[test]
fn embedded_vault_drops_azure_settings_and_extras_are_appended() {
    let docs = render_ok(&[
        "--set",
        "embeddedVault=true,replicaCount=1,azure.clientId=ignored",
        "--set-json",
        r#"extraArgs=["--some-new-flag=1"]"#,
        "--set-json",
        r#"extraEnv=[{"name":"RUST_LOG","value":"debug"}]"#,
    ]);
    let args = args(&docs);
    assert_eq!(args[..2], ["run", "--embedded-vault"]);
    assert!(!args.iter().any(|arg| arg.starts_with("--azure-auth")));
    assert_eq!(args.last().map(String::as_str), Some("--some-new-flag=1"));
    assert_eq!(env(&docs, "RUST_LOG").expect("extra env")["value"], "debug");
    assert!(pod_labels(&docs)["azure.workload.identity/use"].is_null());
    assert!(one(&docs, "ServiceAccount")["metadata"]["annotations"].is_null());
}
