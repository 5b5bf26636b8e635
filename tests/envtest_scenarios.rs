//! Controller scenarios against a real Kubernetes API server (the envtest tier): the real
//! controller (`controller::run`, under `run_as_leader` where leader election matters) against
//! `kube-apiserver` + `etcd` from `KUBEBUILDER_ASSETS` (one server for this test binary, a
//! namespace per test; crates/testkit/src/real_cluster.rs) and the vault emulator as Azure.
//!
//! What only a real server checks: the CRD's schema (structural, pruning, the status
//! subresource), server-side apply of the status with real field ownership, finalizers and
//! deletion, events.k8s.io/v1 Events, watches, Leases, and RBAC as the operator's own
//! ServiceAccount under the chart's roles. The CRD's CEL rules are not served (v1.19 predates
//! CEL); tests/crd_schema.rs checks them offline.
//!
//! Without `KUBEBUILDER_ASSETS` each test says it skipped and how to get the binaries, except
//! under `CI=true`, where it fails.

use std::process::Command;
use std::time::Duration;

use blob_backup_operator::api::{BackupVaultGrant, BlobBackupInstance};
use blob_backup_operator::controller::decide::Timing;
use blob_backup_operator::controller::grants::VaultAccess;
use blob_backup_operator::controller::leader::LeaderOutcome;
use blob_backup_operator::controller::{ControllerConfig, FIELD_MANAGER, REPORTING_CONTROLLER};
use blob_backup_operator::telemetry::Role;
use dataprotection::BackupInstance;
use dataprotection::ids::{StorageAccountId, VaultId};
use dataprotection::operation_ids as ops;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::core::ApiResource;
use kube::runtime::wait::await_condition;
use serde_json::{Value, json};
use testkit::checkout::{repo, tool};
use testkit::envtest::{self, Identity};
use testkit::real_cluster::{OPERATOR_NAME, OPERATOR_NAMESPACE, RealCluster};
use testkit::scenario::{
    ACCOUNT, OTHER_VAULT, RESOURCE, Replica, ResourceWaits, VAULT, WAIT, account, add_accounts,
    arm_client, condition, controller_config_in, emulator_config, has_finalizer, is_write,
    put_intended, resource, spec, test_timing, wait_until,
};

/// The emulator's world with operations of `latency`.
async fn cluster(test: &str, latency: Duration) -> Option<RealCluster> {
    RealCluster::start(test, emulator_config(latency)).await
}

const FAST: Duration = Duration::from_millis(100);

#[tokio::test]
async fn create_goes_ready_with_the_status_applied_by_the_operator() {
    let Some(c) = cluster("create-ready", FAST).await else {
        return;
    };
    let controller = c.controller(test_timing());
    let created = c
        .create("msblobbackup", spec(ACCOUNT, "BlobBackup-Policy"))
        .await;
    let uid = created["metadata"]["uid"].as_str().unwrap().to_owned();

    let ready = c.wait_ready("msblobbackup").await;
    let status = &ready["status"];
    assert_eq!(status["observedGeneration"], 1);
    assert_eq!(
        status["backupInstanceName"],
        format!("msblobbackup-{uid}").as_str()
    );
    assert_eq!(status["protectionStatus"], "ProtectionConfigured");
    assert_eq!(status["operation"]["action"], "Create");
    assert_eq!(status["operation"]["status"], "Succeeded");
    assert!(has_finalizer(&ready));
    // The server's own bookkeeping of server-side apply: the operator's field manager owns the
    // status, through the status subresource.
    let managers: Vec<(&str, &str)> = ready["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["manager"].as_str().unwrap_or_default(),
                m["subresource"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert!(
        ready["metadata"]["managedFields"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["manager"] == FIELD_MANAGER
                && m["operation"] == "Apply"
                && m["fieldsV1"]["f:status"].is_object()),
        "status applied by {FIELD_MANAGER}: {managers:?}"
    );

    let reasons = c.event_reasons("msblobbackup").await;
    for reason in ["Validating", "Creating", "Protected"] {
        assert!(
            reasons.iter().any(|r| r == reason),
            "{reason} in {reasons:?}"
        );
    }
    let events = c.events("msblobbackup").await;
    assert!(
        events
            .iter()
            .all(|e| e["reportingController"] == REPORTING_CONTROLLER),
        "{events:#?}"
    );
    assert_eq!(c.azure(ops::VALIDATE_FOR_BACKUP), 1);
    assert_eq!(c.azure(ops::CREATE_OR_UPDATE), 1);
    assert_eq!(c.emulator.admin().instances().len(), 1);
    controller.stop().await;
}

#[tokio::test]
async fn the_served_schema_refuses_a_malformed_vault_id_and_prunes_unknown_fields() {
    let Some(c) = cluster("served-schema", FAST).await else {
        return;
    };
    let mut bad = spec(ACCOUNT, "BlobBackup-Policy");
    bad["vault"]["id"] = json!("/subscriptions/not-a-uuid/resourceGroups/rg");
    match c.try_create("malformed", bad).await {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 422, "{status:?}");
            assert!(status.message.contains("spec.vault.id"), "{status:?}");
        }
        other => panic!("a malformed vault id was accepted: {other:?}"),
    }

    let mut extra = spec(ACCOUNT, "BlobBackup-Policy");
    extra["notAField"] = json!("dropped");
    let created = c.create("pruned", extra).await;
    assert_eq!(created["spec"]["notAField"], Value::Null, "{created:#}");
    assert_eq!(created["spec"]["policy"]["name"], "BlobBackup-Policy");
}

#[tokio::test]
async fn a_policy_change_sends_exactly_one_put() {
    let Some(c) = cluster("policy-change", FAST).await else {
        return;
    };
    let controller = c.controller(test_timing());
    c.create("msblobbackup", spec(ACCOUNT, "BlobBackup-Policy"))
        .await;
    c.wait_ready("msblobbackup").await;
    c.emulator.admin().reset_counts();

    c.merge_patch(
        "msblobbackup",
        json!({"spec": {"policy": {"name": "BlobBackup-Policy2"}}}),
    )
    .await;
    let updated = c
        .wait_for("msblobbackup", "Ready for generation 2", |o| {
            o["status"]["observedGeneration"] == 2
                && condition(o, "Ready").is_some_and(|c| c["status"] == "True")
        })
        .await;
    assert_eq!(updated["metadata"]["generation"], 2);
    assert_eq!(updated["status"]["operation"]["action"], "Update");
    // One Azure write since the edit: the PUT, with the new policy.
    let writes = [
        ops::VALIDATE_FOR_BACKUP,
        ops::CREATE_OR_UPDATE,
        ops::STOP_PROTECTION,
        ops::DELETE,
    ]
    .map(|op| (op, c.azure(op)));
    assert_eq!(
        writes,
        [
            (ops::VALIDATE_FOR_BACKUP, 0),
            (ops::CREATE_OR_UPDATE, 1),
            (ops::STOP_PROTECTION, 0),
            (ops::DELETE, 0)
        ]
    );
    let policies: Vec<Value> = c
        .emulator
        .admin()
        .instances()
        .iter()
        .map(|i| i["properties"]["policyInfo"]["policyId"].clone())
        .collect();
    assert!(
        policies.len() == 1
            && policies[0]
                .as_str()
                .unwrap()
                .ends_with("/BlobBackup-Policy2"),
        "{policies:?}"
    );
    controller.stop().await;
}

#[tokio::test]
async fn an_account_protected_elsewhere_stalls_as_already_protected() {
    let Some(c) = cluster("already-protected", FAST).await else {
        return;
    };
    c.emulator
        .admin()
        .protect_elsewhere(ACCOUNT, OTHER_VAULT)
        .unwrap();
    let controller = c.controller(test_timing());
    c.create("msblobbackup", spec(ACCOUNT, "BlobBackup-Policy"))
        .await;
    let stalled = c
        .wait_condition("msblobbackup", "Stalled", "True", "AlreadyProtected")
        .await;
    let message = condition(&stalled, "Ready").unwrap()["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(message.contains("otherVault"), "{message}");
    assert!(
        c.event_note("msblobbackup", "ValidationFailed")
            .await
            .contains("UserErrorDppDatasourceAlreadyProtected")
    );
    assert_eq!(c.azure(ops::CREATE_OR_UPDATE), 0);
    controller.stop().await;
}

#[tokio::test]
async fn a_missing_permission_stalls_until_granted_then_goes_ready() {
    let Some(c) = cluster("missing-permission", FAST).await else {
        return;
    };
    c.emulator.admin().revoke_role(ACCOUNT).unwrap();
    let controller = c.controller(test_timing());
    c.create("msblobbackup", spec(ACCOUNT, "BlobBackup-Policy"))
        .await;
    c.wait_condition("msblobbackup", "Stalled", "True", "MissingPermissions")
        .await;
    assert_eq!(c.azure(ops::CREATE_OR_UPDATE), 0);

    // Someone grants the role in Azure; nobody touches the resource.
    c.emulator.admin().grant_role(ACCOUNT).unwrap();
    let ready = c.wait_ready("msblobbackup").await;
    assert_eq!(ready["metadata"]["generation"], 1);
    assert!(c.azure(ops::VALIDATE_FOR_BACKUP) >= 2, "validation retried");
    assert_eq!(c.azure(ops::CREATE_OR_UPDATE), 1);
    controller.stop().await;
}

#[tokio::test]
async fn each_deletion_policy_makes_exactly_its_azure_calls() {
    let Some(c) = cluster("deletion-policies", FAST).await else {
        return;
    };
    let controller = c.controller(test_timing());
    let mut orphan = spec(&account("orphanacct"), "BlobBackup-Policy");
    orphan["deletionPolicy"] = json!("Orphan");
    let mut retain = spec(&account("vaultedacct"), "BlobVaulted-Policy");
    retain["vaultedBackup"] = json!({"containers": ["images", "logs"]});
    retain["deletionPolicy"] = json!("Retain");
    let mut delete = spec(ACCOUNT, "BlobBackup-Policy");
    delete["deletionPolicy"] = json!("Delete");
    for (name, spec) in [("orphan", orphan), ("retain", retain), ("delete", delete)] {
        c.create(name, spec).await;
    }
    for name in ["orphan", "retain", "delete"] {
        c.wait_ready(name).await;
    }

    // Orphan: no Azure call at all.
    let before = c.emulator.admin().request_counts();
    c.delete("orphan").await;
    c.wait_gone("orphan").await;
    assert_eq!(
        c.emulator.admin().request_counts(),
        before,
        "Orphan calls Azure"
    );
    assert!(
        c.event_reasons("orphan")
            .await
            .iter()
            .any(|r| r == "Orphaned")
    );

    // Retain: one stopProtection, the instance and its recovery points stay.
    c.emulator.admin().reset_counts();
    c.delete("retain").await;
    c.wait_gone("retain").await;
    assert_eq!(c.azure(ops::STOP_PROTECTION), 1);
    assert_eq!(c.azure(ops::DELETE), 0);

    // Delete: one DELETE, confirmed before the finalizer goes.
    c.emulator.admin().reset_counts();
    c.delete("delete").await;
    c.wait_gone("delete").await;
    assert_eq!(c.azure(ops::DELETE), 1);
    assert_eq!(c.azure(ops::STOP_PROTECTION), 0);

    let left = c.emulator.admin().instances();
    let statuses: Vec<&str> = left
        .iter()
        .map(|i| {
            i["properties"]["protectionStatus"]["status"]
                .as_str()
                .unwrap_or_default()
        })
        .collect();
    assert_eq!(left.len(), 2, "orphaned and retained stay: {statuses:?}");
    assert!(statuses.contains(&"ProtectionStopped"), "{statuses:?}");
    controller.stop().await;
}

#[tokio::test]
async fn an_instance_deleted_in_azure_is_recreated_with_a_drift_event() {
    let Some(c) = cluster("drift", FAST).await else {
        return;
    };
    let controller = c.controller(Timing {
        resync_interval: Duration::from_millis(300),
        ..test_timing()
    });
    c.create("msblobbackup", spec(ACCOUNT, "BlobBackup-Policy"))
        .await;
    let ready = c.wait_ready("msblobbackup").await;
    let id = ready["status"]["backupInstanceId"]
        .as_str()
        .unwrap()
        .to_owned();

    c.emulator.admin().delete_instance_out_of_band(&id).unwrap();
    c.wait_event("msblobbackup", "DriftDetected").await;
    assert!(
        c.event_note("msblobbackup", "DriftDetected")
            .await
            .contains("deleted outside Kubernetes")
    );
    // The recreation's PUT comes after a status write that leaves Ready=True, so a Ready seen
    // once the emulator has the instance again is the recreated one's.
    let emulator = c.emulator.admin();
    c.wait_for("msblobbackup", "Ready after the recreation", move |o| {
        emulator.instances().len() == 1
            && condition(o, "Ready").is_some_and(|c| c["status"] == "True")
    })
    .await;
    assert_eq!(c.azure(ops::CREATE_OR_UPDATE), 2);
    controller.stop().await;
}

#[tokio::test]
async fn a_controller_killed_mid_operation_is_resumed_without_a_second_put_or_delete() {
    // Operations long enough to kill the controller while they run.
    let Some(c) = cluster("restart", Duration::from_millis(1500)).await else {
        return;
    };
    let in_progress = |action: &'static str| {
        move |o: &Value| {
            o["status"]["operation"]["action"] == action
                && o["status"]["operation"]["status"] == "InProgress"
        }
    };
    let first = c.controller(test_timing());
    c.create("msblobbackup", spec(ACCOUNT, "BlobBackup-Policy"))
        .await;
    c.wait_for("msblobbackup", "the PUT's intent", put_intended)
        .await;
    wait_until("the PUT sent", || c.azure(ops::CREATE_OR_UPDATE) == 1).await;
    // The API has the PUT's intent; its poll URL is in the first controller's memory only.
    let creating = c.get("msblobbackup").await.unwrap();
    assert!(put_intended(&creating));
    assert_eq!(creating["status"]["operation"]["pollUrl"], Value::Null);
    first.kill().await;

    let second = c.controller(test_timing());
    let ready = c.wait_ready("msblobbackup").await;
    // The second controller found the instance the intended PUT created, by a GET.
    assert_eq!(ready["status"]["operation"]["action"], "Create");
    assert_eq!(c.azure(ops::CREATE_OR_UPDATE), 1, "exactly one PUT");
    assert_eq!(
        c.azure(ops::VALIDATE_FOR_BACKUP),
        1,
        "exactly one validation"
    );

    c.delete("msblobbackup").await;
    c.wait_for("msblobbackup", "Delete in progress", in_progress("Delete"))
        .await;
    second.kill().await;
    let third = c.controller(test_timing());
    c.wait_gone("msblobbackup").await;
    assert_eq!(c.azure(ops::DELETE), 1, "exactly one DELETE");
    assert!(c.emulator.admin().instances().is_empty());
    third.stop().await;
}

/// Waits until `replica` has `role`.
async fn wait_role(replica: &Replica, role: Role) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while replica.health.role() != role {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} never {role:?}",
            replica.name
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn lease_holder(c: &RealCluster, namespace: &str) -> Option<String> {
    let leases: Api<Lease> = Api::namespaced(c.kube.clone(), namespace);
    leases
        .get_opt(OPERATOR_NAME)
        .await
        .unwrap()?
        .spec?
        .holder_identity
}

/// Asserts every Event about `name` was reported by replica `by`.
async fn assert_events_from(c: &RealCluster, name: &str, by: &str) {
    let events = c.events(name).await;
    assert!(!events.is_empty(), "{name}: no events");
    for event in &events {
        assert_eq!(event["reportingInstance"], by, "{name}: {event:#}");
    }
}

#[tokio::test]
async fn with_two_replicas_only_the_lease_holder_writes() {
    let mut config = emulator_config(FAST);
    add_accounts(&mut config, &["first", "second", "after"]);
    let Some(c) = RealCluster::start("leader-election", config).await else {
        return;
    };
    let a = Replica::spawn("replica-a", c.kube.clone(), &c.ns, &c.ns, &c.emulator);
    wait_role(&a, Role::Leader).await;
    let b = Replica::spawn("replica-b", c.kube.clone(), &c.ns, &c.ns, &c.emulator);
    wait_role(&b, Role::Standby).await;
    assert_eq!(lease_holder(&c, &c.ns).await.as_deref(), Some(a.name));

    let first = ["first", "second"];
    for name in first {
        c.create(name, spec(&account(name), "BlobBackup-Policy"))
            .await;
    }
    for name in first {
        c.wait_ready(name).await;
        assert_events_from(&c, name, a.name).await;
        assert!(
            !a.requests
                .touching(0, &format!("/{RESOURCE}/{name}/status"))
                .is_empty()
        );
    }
    assert!(a.called_azure());
    assert!(!b.called_azure(), "the standby called Azure");
    let standby = b.requests.touching(0, "/");
    assert!(
        standby
            .iter()
            .all(|(_, path)| path.starts_with("/apis/coordination.k8s.io/v1/")),
        "the standby touched more than its Lease: {standby:?}"
    );

    // The leader stops: it releases the Lease, the standby takes it and reconciles from then on.
    let a_requests = a.requests.clone();
    assert_eq!(a.shut_down().await, LeaderOutcome::Shutdown);
    let a_sent = a_requests.len();
    wait_role(&b, Role::Leader).await;
    assert_eq!(lease_holder(&c, &c.ns).await.as_deref(), Some(b.name));
    c.create("after", spec(&account("after"), "BlobBackup-Policy"))
        .await;
    c.wait_ready("after").await;
    assert_events_from(&c, "after", b.name).await;
    assert!(b.called_azure());
    assert_eq!(c.azure(ops::CREATE_OR_UPDATE), 3, "one PUT per resource");
    assert_eq!(a_requests.len(), a_sent, "the old leader kept writing");
    assert!(
        !b.requests
            .touching(0, &format!("/{RESOURCE}/first/status"))
            .iter()
            .any(|(m, _)| is_write(m)),
        "the new leader rewrote a status that was current"
    );
    assert_eq!(b.shut_down().await, LeaderOutcome::Shutdown);
}

/// The chart's RBAC for a release in [`OPERATOR_NAMESPACE`] watching `namespace`: its
/// ServiceAccount, Roles and bindings (`helm template` with ./.tools/bin/helm).
fn chart_rbac(namespace: &str) -> Vec<Value> {
    let output = Command::new(tool("helm"))
        .args(["template", OPERATOR_NAME])
        .arg(repo().join("charts/blob-backup-operator"))
        .args(["--namespace", OPERATOR_NAMESPACE])
        .args(["--set", &format!("watchNamespace={namespace}")])
        .args(["--set", "crds.install=false"])
        .output()
        .expect("helm runs");
    assert!(
        output.status.success(),
        "helm template: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let docs: Vec<Value> =
        serde_saphyr::from_multiple(&String::from_utf8_lossy(&output.stdout)).unwrap();
    docs.into_iter()
        .filter(|d| {
            matches!(
                d["kind"].as_str(),
                Some(
                    "ServiceAccount"
                        | "Role"
                        | "RoleBinding"
                        | "ClusterRole"
                        | "ClusterRoleBinding"
                )
            )
        })
        .collect()
}

#[tokio::test]
async fn under_the_charts_rbac_as_its_service_account_it_goes_ready_and_deletes() {
    let Some(c) = cluster("chart-rbac", FAST).await else {
        return;
    };
    assert_eq!(
        c.env.service_account().username(),
        format!("system:serviceaccount:{OPERATOR_NAMESPACE}:{OPERATOR_NAME}")
    );
    c.env.ensure_namespace(OPERATOR_NAMESPACE).await.unwrap();
    let rbac = chart_rbac(&c.ns);
    let kinds: Vec<&str> = rbac.iter().filter_map(|d| d["kind"].as_str()).collect();
    assert!(kinds.contains(&"RoleBinding"), "{kinds:?}");
    envtest::apply(&c.kube, &rbac)
        .await
        .expect("the chart's RBAC applies");

    let operator = c.client(Identity::ServiceAccount).await;
    // The token is the ServiceAccount's, not an admin's: what the chart does not grant is refused.
    let secrets: Api<Secret> = Api::namespaced(operator.clone(), &c.ns);
    match secrets.list(&ListParams::default()).await {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, 403, "{status:?}"),
        other => panic!("the operator's ServiceAccount listed Secrets: {other:?}"),
    }

    let replica = Replica::spawn(
        "chart-rbac",
        operator,
        &c.ns,
        OPERATOR_NAMESPACE,
        &c.emulator,
    );
    wait_role(&replica, Role::Leader).await;
    c.create("msblobbackup", spec(ACCOUNT, "BlobBackup-Policy"))
        .await;
    let ready = c.wait_ready("msblobbackup").await;
    assert!(has_finalizer(&ready));
    assert_events_from(&c, "msblobbackup", "chart-rbac").await;
    c.delete("msblobbackup").await;
    c.wait_gone("msblobbackup").await;
    assert_eq!(c.azure(ops::DELETE), 1);
    assert!(c.emulator.admin().instances().is_empty());
    assert_eq!(replica.shut_down().await, LeaderOutcome::Shutdown);
}

#[tokio::test]
async fn the_launcher_stops_its_processes_and_removes_its_directory() {
    let Some(assets) = envtest::assets_or_skip("envtest launcher") else {
        return;
    };
    let options = testkit::real_cluster::envtest_options();
    let env = envtest::Envtest::start(&assets, options).await.unwrap();
    let pids = env.pids();
    let dir = env.dir();
    assert_eq!(pids.len(), 2);
    assert!(dir.is_dir());
    let client = env.client(Identity::Admin).await.unwrap();
    assert_eq!(
        env.version(),
        client.apiserver_version().await.unwrap().git_version
    );
    drop(env);
    for pid in pids {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "process {pid} outlived the launcher"
        );
    }
    assert!(!dir.exists(), "{} left behind", dir.display());
}

/// Runs kubectl as admin against the test's server, in the test's namespace; its output.
async fn kubectl(c: &RealCluster, args: &[&str]) -> std::process::Output {
    let dir = tempfile::tempdir().expect("temp dir");
    let kubeconfig = dir.path().join("kubeconfig");
    c.env
        .write_kubeconfig(&kubeconfig, Identity::Admin)
        .expect("kubeconfig");
    let mut command = Command::new(tool("kubectl"));
    command
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args(["-n", &c.ns])
        .args(args);
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .expect("kubectl task")
        .expect("kubectl runs");
    drop(dir);
    output
}

/// `kubectl wait --for=condition=Ready bbr/<name>` returns once the restore has succeeded, and
/// `kubectl get bbr` shows its phase, source and point: the kind, its status subresource
/// (applied by the operator) and its printer columns as a real server serves them.
#[tokio::test]
async fn kubectl_waits_for_a_restore_to_be_ready() {
    let Some(c) = cluster("restore-kubectl-wait", FAST).await else {
        return;
    };
    let controller = c.controller(test_timing());
    let mut backup = spec(&account("vaultedacct"), "BlobVaulted-Policy");
    backup["vaultedBackup"] = json!({"containers": ["images"]});
    c.create("vaulted", backup).await;
    c.wait_ready("vaulted").await;

    let restores: Api<kube::api::DynamicObject> = Api::namespaced_with(
        c.kube.clone(),
        &c.ns,
        &kube::core::ApiResource::erase::<blob_backup_operator::api::BlobRestore>(&()),
    );
    let restore = serde_json::from_value(json!({
        "apiVersion": "dataprotection.blobbackup.io/v1alpha1",
        "kind": "BlobRestore",
        "metadata": {"name": "images-back"},
        "spec": {"backupInstanceRef": {"name": "vaulted"}, "recoveryPoint": "latest"},
    }))
    .unwrap();
    restores
        .create(&kube::api::PostParams::default(), &restore)
        .await
        .expect("BlobRestore created");

    let waited = kubectl(
        &c,
        &[
            "wait",
            "--for=condition=Ready",
            "bbr/images-back",
            "--timeout=60s",
        ],
    )
    .await;
    assert!(
        waited.status.success(),
        "kubectl wait: {}{}",
        String::from_utf8_lossy(&waited.stdout),
        String::from_utf8_lossy(&waited.stderr)
    );
    assert!(String::from_utf8_lossy(&waited.stdout).contains("condition met"));

    let listed = kubectl(&c, &["get", "bbr"]).await;
    let table = String::from_utf8_lossy(&listed.stdout).into_owned();
    let mut lines = table.lines();
    let header: Vec<&str> = lines
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        ["NAME", "PHASE", "SOURCE", "POINT", "AGE"],
        "{table}"
    );
    let row: Vec<&str> = lines
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        row[..4],
        ["images-back", "Succeeded", "vaulted", "rp-0"],
        "{table}"
    );

    let object = restores.get("images-back").await.unwrap();
    let status = &object.data["status"];
    assert_eq!(status["observedGeneration"], 1);
    assert!(status["jobId"].is_string(), "{status}");
    assert_eq!(c.azure(ops::TRIGGER_RESTORE), 1);
    let reasons = c.event_reasons("images-back").await;
    assert!(reasons.iter().any(|r| r == "Restored"), "{reasons:?}");
    controller.stop().await;
}

// ---- ownership and vault grants (DESIGN.md section 9) ----

/// The grants tier: a controller in `--vault-access grants` watching `namespace`, naming its
/// cluster after the real kube-system namespace.
fn grants_config(namespace: &str, timing: Timing) -> ControllerConfig {
    ControllerConfig {
        vault_access: VaultAccess::Grants,
        cluster_id: None,
        ..controller_config_in(namespace, timing, "test")
    }
}

/// Settings whose Stalled retries never come within a test: whatever moves a resource on is a
/// watch event (a grant, a namespace's labels), not the backoff.
fn no_backoff_retries() -> Timing {
    Timing {
        stalled_retry_base: Duration::from_secs(3600),
        stalled_retry_max: Duration::from_secs(3600),
        ..test_timing()
    }
}

fn grants(c: &RealCluster) -> Api<DynamicObject> {
    Api::all_with(c.kube.clone(), &ApiResource::erase::<BackupVaultGrant>(&()))
}

/// Creates (or replaces) the grant `name` with `spec`.
async fn grant(c: &RealCluster, name: &str, spec: Value) {
    let object = json!({
        "apiVersion": "dataprotection.blobbackup.io/v1alpha1",
        "kind": "BackupVaultGrant",
        "metadata": {"name": name},
        "spec": spec,
    });
    grants(c)
        .patch(
            name,
            &PatchParams::apply("envtest-admin").force(),
            &Patch::Apply(&object),
        )
        .await
        .unwrap_or_else(|e| panic!("grant {name}: {e}"));
}

/// Waits until the operator reports grant `name` Ready, matching `namespaces` namespaces.
async fn wait_grant_ready(c: &RealCluster, name: &str, namespaces: i64) {
    let granted = tokio::time::timeout(
        WAIT,
        await_condition(grants(c), name, |g: Option<&DynamicObject>| {
            g.is_some_and(|g| {
                let g = serde_json::to_value(g).unwrap();
                g["status"]["matchedNamespaces"] == namespaces
                    && condition(&g, "Ready").is_some_and(|c| c["status"] == "True")
            })
        }),
    )
    .await;
    assert!(
        matches!(granted, Ok(Ok(Some(_)))),
        "grant {name} status: {granted:?}"
    );
}

async fn revoke(c: &RealCluster, name: &str) {
    grants(c)
        .delete(name, &DeleteParams::default())
        .await
        .unwrap_or_else(|e| panic!("delete grant {name}: {e}"));
}

/// A grant's name unique on the shared server (grants are cluster-scoped).
fn grant_name(c: &RealCluster, suffix: &str) -> String {
    format!("{}-{suffix}", c.ns)
}

/// Every Azure request the emulator served, by operation.
fn azure_requests(c: &RealCluster) -> u64 {
    c.emulator
        .admin()
        .request_counts()
        .values()
        .flat_map(|by_status| by_status.values())
        .sum()
}

/// The one instance in the emulator, as JSON.
fn only_instance(c: &RealCluster) -> Value {
    let instances = c.emulator.admin().instances();
    assert_eq!(instances.len(), 1, "{instances:#?}");
    instances[0].clone()
}

/// A BlobBackupInstance API in another namespace of the shared server.
struct Tenant {
    ns: String,
    api: Api<DynamicObject>,
}

impl Tenant {
    async fn new(c: &RealCluster, prefix: &str) -> Self {
        let ns = c.env.create_namespace(prefix).await.expect("namespace");
        let api = Api::namespaced_with(
            c.kube.clone(),
            &ns,
            &ApiResource::erase::<BlobBackupInstance>(&()),
        );
        Self { ns, api }
    }

    async fn create(&self, name: &str, spec: Value) {
        let object: DynamicObject = serde_json::from_value(resource(name, &self.ns, spec)).unwrap();
        self.api
            .create(&PostParams::default(), &object)
            .await
            .unwrap_or_else(|e| panic!("create {name}: {e}"));
    }

    async fn wait(&self, name: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let condition = move |o: Option<&DynamicObject>| {
            o.is_some_and(|o| done(&serde_json::to_value(o).unwrap()))
        };
        match tokio::time::timeout(WAIT, await_condition(self.api.clone(), name, condition)).await {
            Ok(Ok(Some(object))) => serde_json::to_value(object).unwrap(),
            outcome => panic!(
                "{}/{name}: {what} not reached ({outcome:?}); now {:#?}",
                self.ns,
                self.api.get_opt(name).await
            ),
        }
    }

    async fn wait_reason(&self, name: &str, reason: &str) -> Value {
        self.wait(name, reason, |o| {
            condition(o, "Ready").is_some_and(|c| c["reason"] == reason)
        })
        .await
    }

    async fn delete_and_wait_gone(&self, name: &str) {
        self.api
            .delete(name, &DeleteParams::default())
            .await
            .unwrap_or_else(|e| panic!("delete {name}: {e}"));
        let gone = |o: Option<&DynamicObject>| o.is_none();
        let outcome =
            tokio::time::timeout(WAIT, await_condition(self.api.clone(), name, gone)).await;
        assert!(matches!(outcome, Ok(Ok(_))), "{name} not deleted");
    }
}

#[tokio::test]
async fn tenant_b_naming_tenant_as_instance_writes_nothing_and_leaves_it_intact_on_deletion() {
    let Some(c) = cluster("tenant-a", FAST).await else {
        return;
    };
    let b = Tenant::new(&c, "tenant-b").await;
    // Both namespaces may use the vault, and adopt: the tags, not the grant, keep B out.
    let name = grant_name(&c, "both");
    grant(
        &c,
        &name,
        json!({"vaultId": VAULT, "namespaces": [c.ns, b.ns], "allowAdoption": true}),
    )
    .await;
    let a_controller = c.controller_with(grants_config(&c.ns, test_timing()));
    let b_controller = c.controller_with(grants_config(&b.ns, test_timing()));

    let created = c
        .create("msblobbackup", spec(ACCOUNT, "BlobBackup-Policy"))
        .await;
    let a_uid = created["metadata"]["uid"].as_str().unwrap().to_owned();
    let ready = c.wait_ready("msblobbackup").await;
    assert_eq!(ready["status"]["ownership"], "Created");
    let instance_name = ready["status"]["backupInstanceName"]
        .as_str()
        .unwrap()
        .to_owned();
    let tags = only_instance(&c)["tags"].clone();
    assert_eq!(tags["blobbackup.io/uid"], a_uid.as_str());
    assert_eq!(tags["blobbackup.io/namespace"], c.ns.as_str());
    assert_eq!(tags["blobbackup.io/name"], "msblobbackup");
    let kube_system: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(c.kube.clone());
    let cluster_uid = kube_system.get("kube-system").await.unwrap().metadata.uid;
    assert_eq!(tags["blobbackup.io/cluster"], cluster_uid.unwrap().as_str());

    // B names A's instance, with another policy: it would PUT over it if it could.
    c.emulator.admin().reset_counts();
    let mut theirs = spec(ACCOUNT, "BlobBackup-Policy2");
    theirs["backupInstanceName"] = json!(instance_name);
    b.create("intruder", theirs).await;
    let stalled = b.wait_reason("intruder", "OwnedElsewhere").await;
    let message = condition(&stalled, "Ready").unwrap()["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        message.contains(&format!("{}/msblobbackup", c.ns)),
        "{message}"
    );
    assert_eq!(
        condition(&stalled, "Stalled").unwrap()["status"],
        "True",
        "{stalled:#}"
    );
    assert!(stalled["status"]["ownership"].is_null());

    b.delete_and_wait_gone("intruder").await;
    for op in [
        ops::CREATE_OR_UPDATE,
        ops::DELETE,
        ops::STOP_PROTECTION,
        ops::SYNC,
        ops::VALIDATE_FOR_BACKUP,
    ] {
        assert_eq!(c.azure(op), 0, "{op} from B");
    }
    // A's instance, its policy and its tags are as A left them; A is still Ready.
    let after = only_instance(&c);
    assert_eq!(after["tags"], tags);
    assert!(
        after["properties"]["policyInfo"]["policyId"]
            .as_str()
            .unwrap()
            .ends_with("/BlobBackup-Policy")
    );
    c.wait_ready("msblobbackup").await;
    b_controller.stop().await;
    a_controller.stop().await;
    revoke(&c, &name).await;
}

#[tokio::test]
async fn without_a_grant_no_azure_call_then_a_grant_makes_it_ready_and_removing_it_stops_writes() {
    let Some(c) = cluster("grant-lifecycle", FAST).await else {
        return;
    };
    let controller = c.controller_with(grants_config(&c.ns, no_backoff_retries()));
    c.create("msblobbackup", spec(ACCOUNT, "BlobBackup-Policy"))
        .await;
    let stalled = c
        .wait_condition("msblobbackup", "Stalled", "True", "VaultNotGranted")
        .await;
    assert!(
        condition(&stalled, "Ready").unwrap()["message"]
            .as_str()
            .unwrap()
            .contains(&c.ns),
        "{stalled:#}"
    );
    assert_eq!(azure_requests(&c), 0, "an ungranted resource called Azure");
    assert!(
        !has_finalizer(&stalled),
        "no finalizer before an Azure write"
    );

    // The grant re-queues the resource at once (the Stalled backoff here is an hour).
    let name = grant_name(&c, "team");
    grant(&c, &name, json!({"vaultId": VAULT, "namespaces": [c.ns]})).await;
    let ready = c.wait_ready("msblobbackup").await;
    assert_eq!(ready["status"]["ownership"], "Created");
    wait_grant_ready(&c, &name, 1).await;

    // Removed: a spec change is no longer carried to Azure.
    revoke(&c, &name).await;
    c.wait_condition("msblobbackup", "Stalled", "True", "VaultNotGranted")
        .await;
    c.emulator.admin().reset_counts();
    c.merge_patch(
        "msblobbackup",
        json!({"spec": {"policy": {"name": "BlobBackup-Policy2"}}}),
    )
    .await;
    c.wait_for("msblobbackup", "generation 2 not granted", |o| {
        o["status"]["observedGeneration"] == 2
            && condition(o, "Ready").is_some_and(|c| c["reason"] == "VaultNotGranted")
    })
    .await;
    assert_eq!(
        azure_requests(&c),
        0,
        "a removed grant still let calls through"
    );

    // The resource created its instance: it may delete it without a grant.
    c.delete("msblobbackup").await;
    c.wait_gone("msblobbackup").await;
    assert_eq!(c.azure(ops::DELETE), 1);
    assert!(c.emulator.admin().instances().is_empty());
    controller.stop().await;
}

#[tokio::test]
async fn a_grant_removed_mid_operation_pauses_it_and_a_new_grant_resumes_it() {
    // Operations long enough to remove the grant while one runs.
    let Some(c) = cluster("grant-mid-flight", Duration::from_millis(1500)).await else {
        return;
    };
    let name = grant_name(&c, "team");
    grant(&c, &name, json!({"vaultId": VAULT, "namespaces": [c.ns]})).await;
    let controller = c.controller_with(grants_config(&c.ns, no_backoff_retries()));
    c.create("msblobbackup", spec(ACCOUNT, "BlobBackup-Policy"))
        .await;
    c.wait_for("msblobbackup", "the PUT's intent", put_intended)
        .await;
    wait_until("the PUT sent", || c.azure(ops::CREATE_OR_UPDATE) == 1).await;
    revoke(&c, &name).await;
    let stalled = c
        .wait_condition("msblobbackup", "Stalled", "True", "VaultNotGranted")
        .await;
    // The operation stays recorded, to be resumed (not resent) once granted again.
    assert_eq!(stalled["status"]["operation"]["status"], "InProgress");
    c.emulator.admin().reset_counts();
    grant(&c, &name, json!({"vaultId": VAULT, "namespaces": [c.ns]})).await;
    let ready = c.wait_ready("msblobbackup").await;
    assert_eq!(ready["status"]["operation"]["action"], "Create");
    assert_eq!(
        c.azure(ops::CREATE_OR_UPDATE),
        0,
        "the Create was resumed, not resent"
    );
    controller.stop().await;
    revoke(&c, &name).await;
}

#[tokio::test]
async fn adoption_is_refused_without_allow_adoption_and_done_with_it() {
    let Some(c) = cluster("adoption", FAST).await else {
        return;
    };
    // Someone created the instance outside Kubernetes: no owner tags.
    let arm = arm_client(&c.emulator, dataprotection::DEFAULT_API_VERSION, &c.metrics);
    let vault = VaultId::parse(VAULT).unwrap();
    let instance = vault.backup_instance("made-in-the-portal");
    let body = BackupInstance::for_blob_account(
        &StorageAccountId::parse(ACCOUNT).unwrap(),
        "westus",
        &vault.policy("BlobBackup-Policy"),
        None,
    );
    arm.create_or_update(&instance, &body).await.result.unwrap();
    assert!(only_instance(&c)["tags"].is_null());

    let name = grant_name(&c, "team");
    grant(&c, &name, json!({"vaultId": VAULT, "namespaces": [c.ns]})).await;
    let controller = c.controller_with(grants_config(&c.ns, no_backoff_retries()));
    c.emulator.admin().reset_counts();
    let mut adopt = spec(ACCOUNT, "BlobBackup-Policy");
    adopt["backupInstanceName"] = json!("made-in-the-portal");
    c.create("adopter", adopt).await;
    let refused = c
        .wait_condition("adopter", "Stalled", "True", "AdoptionNotAllowed")
        .await;
    assert!(refused["status"]["ownership"].is_null());
    assert_eq!(c.azure(ops::CREATE_OR_UPDATE), 0);
    assert!(only_instance(&c)["tags"].is_null(), "refused, yet tagged");

    // The administrator allows adoption: the grant's change re-queues the resource at once.
    grant(
        &c,
        &name,
        json!({"vaultId": VAULT, "namespaces": [c.ns], "allowAdoption": true}),
    )
    .await;
    let ready = c.wait_ready("adopter").await;
    assert_eq!(ready["status"]["ownership"], "Adopted");
    assert_eq!(c.azure(ops::CREATE_OR_UPDATE), 1, "one PUT: our tags");
    assert_eq!(c.azure(ops::VALIDATE_FOR_BACKUP), 0);
    let uid = ready["metadata"]["uid"].as_str().unwrap();
    assert_eq!(only_instance(&c)["tags"]["blobbackup.io/uid"], uid);
    c.wait_event("adopter", "Adopted").await;

    // Not granted any more: deleting leaves the adopted instance in Azure, as with Orphan.
    revoke(&c, &name).await;
    c.wait_condition("adopter", "Stalled", "True", "VaultNotGranted")
        .await;
    c.emulator.admin().reset_counts();
    c.delete("adopter").await;
    c.wait_gone("adopter").await;
    assert_eq!(azure_requests(&c), 0);
    assert_eq!(c.emulator.admin().instances().len(), 1);
    assert!(
        c.event_reasons("adopter")
            .await
            .iter()
            .any(|r| r == "Orphaned")
    );
    controller.stop().await;
}

#[tokio::test]
async fn under_the_charts_rbac_in_grants_mode_it_reads_grants_and_namespaces() {
    let Some(c) = cluster("chart-rbac-grants", FAST).await else {
        return;
    };
    c.env.ensure_namespace(OPERATOR_NAMESPACE).await.unwrap();
    envtest::apply(&c.kube, &chart_rbac(&c.ns))
        .await
        .expect("the chart's RBAC applies");
    let operator = c.client(Identity::ServiceAccount).await;
    // Grants are the administrator's: the operator may read them, never create them.
    let as_operator: Api<DynamicObject> = Api::all_with(
        operator.clone(),
        &ApiResource::erase::<BackupVaultGrant>(&()),
    );
    let forged: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "dataprotection.blobbackup.io/v1alpha1",
        "kind": "BackupVaultGrant",
        "metadata": {"name": grant_name(&c, "forged")},
        "spec": {"vaultId": VAULT, "namespaces": [c.ns]},
    }))
    .unwrap();
    match as_operator.create(&PostParams::default(), &forged).await {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, 403, "{status:?}"),
        other => panic!("the operator created a grant: {other:?}"),
    }

    let name = grant_name(&c, "team");
    grant(&c, &name, json!({"vaultId": VAULT, "namespaces": [c.ns]})).await;
    let replica = Replica::spawn_with(
        "chart-rbac-grants",
        operator,
        &c.ns,
        OPERATOR_NAMESPACE,
        &c.emulator,
        grants_config(&c.ns, test_timing()),
    );
    wait_role(&replica, Role::Leader).await;
    c.create("msblobbackup", spec(ACCOUNT, "BlobBackup-Policy"))
        .await;
    let ready = c.wait_ready("msblobbackup").await;
    assert_eq!(ready["status"]["ownership"], "Created");
    // The grant's status, written by the operator under the chart's RBAC.
    wait_grant_ready(&c, &name, 1).await;
    assert_eq!(replica.shut_down().await, LeaderOutcome::Shutdown);
    revoke(&c, &name).await;
}

#[tokio::test]
async fn labelling_the_namespace_into_a_grants_selector_serves_its_resources_at_once() {
    let Some(c) = cluster("grant-by-label", FAST).await else {
        return;
    };
    let name = grant_name(&c, "selector");
    grant(
        &c,
        &name,
        json!({"vaultId": VAULT, "namespaceSelector": {"matchLabels": {"backup-grant": c.ns}}}),
    )
    .await;
    let controller = c.controller_with(grants_config(&c.ns, no_backoff_retries()));
    // A selector that matches nothing yet is a valid grant, matching 0 namespaces.
    wait_grant_ready(&c, &name, 0).await;
    c.create("msblobbackup", spec(ACCOUNT, "BlobBackup-Policy"))
        .await;
    c.wait_condition("msblobbackup", "Stalled", "True", "VaultNotGranted")
        .await;
    assert_eq!(azure_requests(&c), 0);

    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(c.kube.clone());
    namespaces
        .patch(
            &c.ns,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"backup-grant": c.ns}}})),
        )
        .await
        .unwrap();
    c.wait_ready("msblobbackup").await;
    wait_grant_ready(&c, &name, 1).await;
    controller.stop().await;
    revoke(&c, &name).await;
}
