//! Renders the Helm chart with ./.tools/bin/helm (installed by scripts/install-tools.sh) and
//! checks what a platform team relies on: least-privilege RBAC, the restricted security context,
//! probes, flags, the auth modes, the CRD switches, and that deploy/ is the default render.

use std::path::PathBuf;
use std::process::Command;

use serde_json::{Value, json};
use testkit::checkout::{chart, repo, run, tool};

const RELEASE: &str = "blob-backup-operator";
const NAMESPACE: &str = "blob-backup-operator";
/// The ServiceAccount's default name: fixed, whatever the release is called.
const SERVICE_ACCOUNT: &str = "blob-backup-operator";
/// The oldest Kubernetes minor the chart installs on (the oldest AKS still supports).
const KUBE_FLOOR: &str = "1.32.0";
const CREDENTIAL_DIR: &str = "/var/run/secrets/blob-backup-operator/azure";

/// `helm template` of the chart with extra arguments, parsed into its documents.
fn render(args: &[&str]) -> Result<Vec<Value>, String> {
    render_release(RELEASE, args)
}

/// [`render`] under another release name.
fn render_release(release: &str, args: &[&str]) -> Result<Vec<Value>, String> {
    let out = run(Command::new(tool("helm"))
        .args(["template", release])
        .arg(chart())
        .args(["--namespace", NAMESPACE])
        .args(args))?;
    let docs: Vec<Value> = serde_saphyr::from_multiple(&out).map_err(|e| e.to_string())?;
    Ok(docs.into_iter().filter(|doc| !doc.is_null()).collect())
}

/// The NOTES.txt `helm install` prints, from a client-side dry run (no cluster).
fn notes(release: &str, args: &[&str]) -> String {
    let out = run(Command::new(tool("helm"))
        .args(["install", "--dry-run=client", release])
        .arg(chart())
        .args(["--namespace", NAMESPACE])
        .args(args))
    .unwrap_or_else(|e| panic!("helm install --dry-run {args:?} failed:\n{e}"));
    out.split_once("NOTES:")
        .unwrap_or_else(|| panic!("no NOTES in\n{out}"))
        .1
        .to_owned()
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

/// The one document of `kind` named `<release fullname><suffix>` (e.g. `-cluster`).
fn named<'a>(docs: &'a [Value], kind: &str, suffix: &str) -> &'a Value {
    let found: Vec<&Value> = of_kind(docs, kind)
        .into_iter()
        .filter(|doc| {
            doc["metadata"]["name"]
                .as_str()
                .is_some_and(|n| n.ends_with(&format!("blob-backup-operator{suffix}")))
        })
        .collect();
    match found.as_slice() {
        [doc] => doc,
        _ => panic!(
            "expected one {kind} named *blob-backup-operator{suffix}, found {}",
            found.len()
        ),
    }
}

/// The cluster-wide reads of `--vault-access grants`: namespaces (the kube-system uid names the
/// cluster; list/watch their labels) and grants (list/watch, their status by apply). Never a
/// write to a grant itself.
fn grant_rules() -> Value {
    json!([
        {"apiGroups": [""], "resources": ["namespaces"], "resourceNames": ["kube-system"],
         "verbs": ["get"]},
        {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["list", "watch"]},
        {"apiGroups": ["dataprotection.blobbackup.io"], "resources": ["backupvaultgrants"],
         "verbs": ["list", "watch"]},
        {"apiGroups": ["dataprotection.blobbackup.io"], "resources": ["backupvaultgrants/status"],
         "verbs": ["patch"]},
    ])
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
        {"apiGroups": ["dataprotection.blobbackup.io"], "resources": ["blobrestores"],
         "verbs": ["get", "list", "watch"]},
        {"apiGroups": ["dataprotection.blobbackup.io"], "resources": ["blobrestores/status"],
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
    json!([{"kind": "ServiceAccount", "name": SERVICE_ACCOUNT, "namespace": NAMESPACE}])
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
        let mut lint = Command::new(tool("helm"));
        lint.args(["lint", "--strict", "--namespace", NAMESPACE])
            .arg(chart());
        let mut template = Command::new(tool("helm"));
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

    for (suffix, rules) in [("", operator_rules()), ("-cluster", grant_rules())] {
        let cluster_role = named(&docs, "ClusterRole", suffix);
        assert_eq!(cluster_role["rules"], rules, "{suffix}");
        let binding = named(&docs, "ClusterRoleBinding", suffix);
        assert_eq!(binding["roleRef"]["kind"], "ClusterRole");
        assert_eq!(binding["roleRef"]["name"], cluster_role["metadata"]["name"]);
        assert_eq!(binding["subjects"], service_account_subject());
    }
    // Tenants: view reads, edit and admin manage BlobBackupInstance; no status, no grants.
    let view = named(&docs, "ClusterRole", "-view");
    assert_eq!(
        view["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-view"],
        "true"
    );
    let edit = named(&docs, "ClusterRole", "-edit");
    for label in ["aggregate-to-edit", "aggregate-to-admin"] {
        assert_eq!(
            edit["metadata"]["labels"][format!("rbac.authorization.k8s.io/{label}")],
            "true"
        );
    }
    for role in [view, edit] {
        for rule in role["rules"].as_array().unwrap() {
            assert_eq!(
                rule["resources"],
                json!(["blobbackupinstances"]),
                "{role:#}"
            );
        }
    }
    assert_eq!(of_kind(&docs, "ClusterRole").len(), 4);
    assert_eq!(of_kind(&docs, "ClusterRoleBinding").len(), 2);
    let without = render_ok(&["--set", "tenantRoles.aggregate=false"]);
    assert_eq!(of_kind(&without, "ClusterRole").len(), 2);
    // open with a cluster id given: no cluster-wide reads at all.
    let open = render_ok(&["--set", "vaultAccess=open", "--set", "clusterId=aks-prod"]);
    assert!(args(&open).contains(&"--vault-access=open".to_owned()));
    assert!(args(&open).contains(&"--cluster-id=aks-prod".to_owned()));
    assert!(of_kind(&open, "ClusterRole").iter().all(|r| {
        !r["metadata"]["name"]
            .as_str()
            .unwrap()
            .ends_with("-cluster")
    }));

    // Leases: only in a Role of the release namespace.
    let role = one(&docs, "Role");
    assert_eq!(role["metadata"]["namespace"], NAMESPACE);
    assert_eq!(role["rules"], lease_rules());
    let role_binding = one(&docs, "RoleBinding");
    assert_eq!(role_binding["metadata"]["namespace"], NAMESPACE);
    assert_eq!(role_binding["roleRef"]["name"], role["metadata"]["name"]);
    assert_eq!(role_binding["subjects"], service_account_subject());

    let service_account = one(&docs, "ServiceAccount");
    assert_eq!(service_account["metadata"]["name"], SERVICE_ACCOUNT);
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
    assert_eq!(pod["serviceAccountName"], SERVICE_ACCOUNT);
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
            "--vault-access=grants",
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
fn single_namespace_mode_has_no_cluster_role_on_resources() {
    let docs = render_ok(&[
        "--set",
        "watchNamespace=team-a",
        "--set",
        "tenantRoles.aggregate=false",
    ]);
    assert_no_wildcards(&docs);
    // Cluster-wide only what is cluster-scoped: namespaces and grants.
    assert_eq!(of_kind(&docs, "ClusterRole").len(), 1);
    assert_eq!(
        named(&docs, "ClusterRole", "-cluster")["rules"],
        grant_rules()
    );
    assert_eq!(of_kind(&docs, "ClusterRoleBinding").len(), 1);

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

/// Every CRD in crds/, by file name.
fn crd_files() -> Vec<String> {
    let mut files: Vec<String> = std::fs::read_dir(repo().join("crds"))
        .expect("crds/")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    files
}

#[test]
fn crd_is_installed_and_kept_by_default() {
    let docs = render_ok(&[]);
    let crds = of_kind(&docs, "CustomResourceDefinition");
    assert_eq!(crds.len(), crd_files().len(), "one CRD per file of crds/");
    for file in crd_files() {
        let source: Value = serde_saphyr::from_str(
            &std::fs::read_to_string(repo().join("crds").join(&file)).expect("crds/"),
        )
        .expect(&file);
        let crd = crds
            .iter()
            .find(|crd| crd["metadata"]["name"] == source["metadata"]["name"])
            .unwrap_or_else(|| panic!("the chart lacks the CRD of crds/{file}"));
        assert_eq!(
            crd["metadata"]["annotations"]["helm.sh/resource-policy"],
            "keep"
        );
        assert_eq!(
            crd["spec"], source["spec"],
            "the chart's CRD differs from crds/{file}"
        );
    }

    let not_kept = render_ok(&["--set", "crds.keep=false"]);
    for crd in of_kind(&not_kept, "CustomResourceDefinition") {
        assert!(crd["metadata"]["annotations"]["helm.sh/resource-policy"].is_null());
    }

    let without = render_ok(&["--set", "crds.install=false"]);
    assert!(of_kind(&without, "CustomResourceDefinition").is_empty());
}

#[test]
fn chart_crd_copy_equals_crds_dir() {
    let read = |path: &str| std::fs::read_to_string(repo().join(path)).expect(path);
    let copies: Vec<String> = std::fs::read_dir(chart().join("files/crds"))
        .expect("files/crds")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        copies.len(),
        crd_files().len(),
        "run scripts/render-deploy.sh"
    );
    for file in crd_files() {
        assert!(
            read(&format!("charts/blob-backup-operator/files/crds/{file}"))
                == read(&format!("crds/{file}")),
            "charts/blob-backup-operator/files/crds/{file} is stale: run scripts/render-deploy.sh"
        );
    }
}

#[test]
fn vault_grants_render_from_values() {
    let vault = "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg/providers/Microsoft.DataProtection/backupVaults/prod";
    let docs = render_ok(&[
        "--set",
        "vaultGrants[0].name=prod-team-a",
        "--set",
        &format!("vaultGrants[0].vaultId={vault}"),
        "--set",
        "vaultGrants[0].namespaces[0]=team-a",
        "--set",
        "vaultGrants[0].allowAdoption=true",
        "--set",
        "vaultGrants[0].deletionPolicies[0]=Retain",
    ]);
    let grant = one(&docs, "BackupVaultGrant");
    assert_eq!(grant["metadata"]["name"], "prod-team-a");
    assert!(grant["metadata"]["namespace"].is_null(), "cluster-scoped");
    assert_eq!(
        grant["spec"],
        json!({"vaultId": vault, "namespaces": ["team-a"], "allowAdoption": true,
               "deletionPolicies": ["Retain"]})
    );
    assert!(of_kind(&render_ok(&[]), "BackupVaultGrant").is_empty());
    let message = render(&[
        "--set",
        "vaultGrants[0].name=x",
        "--set",
        "vaultGrants[0].vaultId=/a",
    ])
    .expect_err("a grant without namespaces or a malformed vault id");
    assert!(message.contains("vaultGrants"), "{message}");
    let message = render(&["--set", "vaultAccess=everything"]).expect_err("unknown mode");
    assert!(message.contains("vaultAccess"), "{message}");

    // NOTES say which mode is in force and what a missing grant looks like.
    let grants = notes(RELEASE, &["--set", "azure.clientId=client"]);
    assert!(grants.contains("kubectl get bvg"), "{grants}");
    assert!(grants.contains("VaultNotGranted"), "{grants}");
    let open = notes(
        RELEASE,
        &[
            "--set",
            "azure.clientId=client",
            "--set",
            "vaultAccess=open",
        ],
    );
    assert!(open.contains("Vault access: open"), "{open}");
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
        json!([{"port": "metrics", "path": "/metrics", "interval": "15s", "scrapeTimeout": "10s",
                "relabelings": [{"targetLabel": "cluster", "replacement": "aks-prod"}],
                "metricRelabelings": [{"sourceLabels": ["__name__"], "regex": "bbo_.*", "action": "keep"}]}])
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

#[test]
fn service_account_name_is_fixed_whatever_the_release_and_notes_name_the_subject() {
    let docs = render_release("bbo", &["--set", "azure.clientId=client"]).expect("render bbo");
    let service_account = one(&docs, "ServiceAccount");
    assert_eq!(service_account["metadata"]["name"], SERVICE_ACCOUNT);
    assert_eq!(
        one(&docs, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"],
        SERVICE_ACCOUNT
    );
    assert_eq!(
        named(&docs, "ClusterRoleBinding", "")["subjects"],
        service_account_subject()
    );
    let subject = format!("system:serviceaccount:{NAMESPACE}:{SERVICE_ACCOUNT}");
    let text = notes("bbo", &["--set", "azure.clientId=client"]);
    assert!(text.contains(&format!("   {subject}\n")), "{text}");

    let renamed = render_release("bbo", &["--set", "serviceAccount.name=backup-sa"]).unwrap();
    assert_eq!(
        one(&renamed, "ServiceAccount")["metadata"]["name"],
        "backup-sa"
    );
    let text = notes("bbo", &["--set", "serviceAccount.name=backup-sa"]);
    assert!(
        text.contains(&format!("system:serviceaccount:{NAMESPACE}:backup-sa")),
        "{text}"
    );
    let message = render(&["--set", "serviceAccount.name=Backup_SA"]).expect_err("bad name");
    assert!(message.contains("/serviceAccount/name"), "{message}");
}

#[test]
fn notes_warn_that_deleting_deletes_backups() {
    let text = notes(RELEASE, &[]);
    for needle in [
        "DELETING DELETES BACKUPS",
        "deletionPolicy Delete (the default)",
        "deleting its namespace",
        "Argo CD prune",
        "deletionPolicy: Orphan",
        "argocd.argoproj.io/sync-options: Delete=false",
        "soft delete",
    ] {
        assert!(text.contains(needle), "{needle:?} not in NOTES:\n{text}");
    }
}

#[test]
fn chart_installs_from_the_kubernetes_floor_and_refuses_older() {
    let chart_yaml: Value = serde_saphyr::from_str(
        &std::fs::read_to_string(chart().join("Chart.yaml")).expect("Chart.yaml"),
    )
    .expect("Chart.yaml parses");
    assert_eq!(chart_yaml["kubeVersion"], format!(">={KUBE_FLOOR}-0"));
    for version in [KUBE_FLOOR, "v1.32.3-aks.1", "1.37.0"] {
        let docs = render_ok(&[
            "--kube-version",
            version,
            "--values",
            &ci_values("alerts-networkpolicy-values.yaml"),
        ]);
        one(&docs, "Deployment");
    }
    let message = render(&["--kube-version", "1.31.9"]).expect_err("1.31 is below the floor");
    assert!(
        message.contains("kubeVersion") && message.contains("1.31.9"),
        "{message}"
    );
    // The binary's own check (for plain manifests) uses the same floor.
    assert_eq!(
        blob_backup_operator::controller::kubernetes_version::MINIMUM.to_string(),
        KUBE_FLOOR.trim_end_matches(".0")
    );
}

#[test]
fn pod_disruption_budget_only_with_more_than_one_replica() {
    let docs = render_ok(&[]);
    let budget = one(&docs, "PodDisruptionBudget");
    assert_eq!(budget["spec"]["maxUnavailable"], 1);
    assert_eq!(
        budget["spec"]["selector"]["matchLabels"],
        one(&docs, "Deployment")["spec"]["selector"]["matchLabels"]
    );
    for args in [
        &["--set", "replicaCount=1"][..],
        &["--set", "embeddedVault=true"],
        &["--set", "podDisruptionBudget.enabled=false"],
    ] {
        assert!(
            of_kind(&render_ok(args), "PodDisruptionBudget").is_empty(),
            "{args:?}"
        );
    }
}

#[test]
fn embedded_vault_runs_one_replica() {
    let docs = render_ok(&["--set", "embeddedVault=true,replicaCount=3"]);
    assert_eq!(one(&docs, "Deployment")["spec"]["replicas"], 1);
}

#[test]
fn network_policy_is_off_by_default_and_allows_only_dns_https_and_metrics() {
    assert!(of_kind(&render_ok(&[]), "NetworkPolicy").is_empty());
    let docs = render_ok(&["--values", &ci_values("alerts-networkpolicy-values.yaml")]);
    let policy = one(&docs, "NetworkPolicy");
    assert_eq!(
        policy["spec"]["podSelector"]["matchLabels"],
        one(&docs, "Deployment")["spec"]["selector"]["matchLabels"]
    );
    assert_eq!(policy["spec"]["policyTypes"], json!(["Ingress", "Egress"]));
    assert_eq!(
        policy["spec"]["ingress"],
        json!([{"ports": [{"port": "metrics", "protocol": "TCP"}],
                "from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]}])
    );
    let egress = policy["spec"]["egress"].as_array().expect("egress");
    assert_eq!(egress.len(), 2, "{egress:?}");
    assert_eq!(
        egress[0]["ports"],
        json!([{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}])
    );
    assert_eq!(
        egress[0]["to"][0]["podSelector"]["matchLabels"]["k8s-app"],
        "kube-dns"
    );
    assert_eq!(
        egress[1]["ports"],
        json!([{"port": 443, "protocol": "TCP"}, {"port": 6443, "protocol": "TCP"}])
    );
    assert_eq!(
        egress[1]["to"],
        json!([{"ipBlock": {"cidr": "10.0.0.1/32"}}, {"ipBlock": {"cidr": "0.0.0.0/0"}}])
    );
}

#[test]
fn prometheus_rule_alerts_on_series_the_operator_exports() {
    assert!(of_kind(&render_ok(&[]), "PrometheusRule").is_empty());
    let docs = render_ok(&["--values", &ci_values("alerts-networkpolicy-values.yaml")]);
    let rule = one(&docs, "PrometheusRule");
    assert_eq!(
        rule["metadata"]["labels"]["release"],
        "kube-prometheus-stack"
    );
    let rules = rule["spec"]["groups"][0]["rules"]
        .as_array()
        .expect("rules");
    let names: Vec<&str> = rules.iter().filter_map(|r| r["alert"].as_str()).collect();
    assert_eq!(
        names,
        [
            "BlobBackupOperatorResourcesNotReady",
            "BlobBackupOperatorReconcileErrors",
            "BlobBackupOperatorAzureErrors",
            "BlobBackupOperatorThrottled",
            "BlobBackupOperatorNoLeader",
        ]
    );
    assert_eq!(rules[0]["for"], "1h");
    // Every series an alert reads is one the operator exports once it has seen the events
    // the alert is about, and every expression selects this release's scrape job.
    use blob_backup_operator::telemetry::{ExpositionFormat, Metrics};
    use dataprotection::RequestObserver as _;
    let metrics = Metrics::new();
    let [_, _, _, status_write_failed, ..] =
        blob_backup_operator::controller::Error::METRIC_REASONS;
    metrics.record_reconcile(
        std::time::Duration::from_millis(1),
        Some(status_write_failed),
    );
    metrics.record_throttling_wait("BackupInstances_Get");
    metrics.observe(
        "BackupInstances_Get",
        Some(500),
        std::time::Duration::from_millis(1),
    );
    metrics.set_leader(true);
    let exported = metrics
        .encode(ExpositionFormat::PrometheusText)
        .expect("encode");
    let series = regex::Regex::new(r"bbo_[a-z_]+").expect("regex");
    let job = format!("job=\"{RELEASE}-metrics\",namespace=\"{NAMESPACE}\"");
    for rule in rules {
        let expr = rule["expr"].as_str().expect("expr");
        assert!(expr.contains(&job), "{expr}");
        for name in series.find_iter(expr) {
            let name = name.as_str();
            assert!(
                exported
                    .lines()
                    .any(|line| line.starts_with(&format!("{name}{{"))
                        || line.starts_with(&format!("{name} "))),
                "{name} (in {expr}) is not exported:\n{exported}"
            );
        }
        assert_eq!(rule["labels"]["team"], "platform");
        assert!(rule["annotations"]["description"].as_str().is_some());
    }
    // bbo_reconcile_errors_total counts failures on the Kubernetes API (its reasons are
    // StatusWriteFailed and the like), not condition reasons: the alert must not send people
    // to the condition reasons table.
    let errors = rules[1]["annotations"]["description"].as_str().unwrap();
    assert!(errors.contains("Kubernetes API"), "{errors}");
    assert!(!errors.contains("condition reasons"), "{errors}");
}

#[test]
fn values_schema_refuses_what_the_operator_would_refuse() {
    for (set, path) in [
        ("resyncInterval=0s", "/resyncInterval"),
        ("stalledRetryMax=0m 0s", "/stalledRetryMax"),
        ("azure.retryAfterMax=0s", "/azure/retryAfterMax"),
        ("azure.retryAfterMax=25h", "/azure/retryAfterMax"),
        ("azure.retryAfterMax=86401s", "/azure/retryAfterMax"),
        ("azure.retryAfterMax=1441m", "/azure/retryAfterMax"),
        (
            "azure.armEndpoint=http://arm.example.com",
            "/azure/armEndpoint",
        ),
        (
            "azure.armEndpoint=management.azure.com",
            "/azure/armEndpoint",
        ),
        (
            "azure.armEndpoint=ftp://management.azure.com",
            "/azure/armEndpoint",
        ),
        ("azure.apiVersion=latest", "/azure/apiVersion"),
        ("watchNamespace=Bad_NS", "/watchNamespace"),
        ("concurrency=70000", "/concurrency"),
        (
            "leaderElection.leaseName=Lease!",
            "/leaderElection/leaseName",
        ),
        (
            "metrics.serviceMonitor.scrapeTimeout=ten",
            "/metrics/serviceMonitor/scrapeTimeout",
        ),
    ] {
        let message = render(&["--set", set]).expect_err(set);
        assert!(message.contains(path), "{set}: {message}");
    }
    for set in [
        "resyncInterval=1h 30m",
        "azure.armEndpoint=https://management.usgovcloudapi.net/",
        "azure.armEndpoint=http://127.0.0.1:8090",
        "azure.armEndpoint=http://localhost:8090/prefix",
        "azure.apiVersion=2025-09-01-preview",
        "watchNamespace=team-a",
    ] {
        render_ok(&["--set", set]);
    }
}

#[test]
fn extra_args_come_after_the_charts_flags_so_they_override_them() {
    let docs = render_ok(&["--set-json", r#"extraArgs=["--concurrency=4"]"#]);
    let args = args(&docs);
    let chart = args.iter().position(|a| a == "--concurrency=16");
    let extra = args.iter().position(|a| a == "--concurrency=4");
    assert!(
        matches!((chart, extra), (Some(c), Some(e)) if c < e),
        "the operator takes the last occurrence: {args:?}"
    );
}
