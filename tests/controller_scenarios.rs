//! Controller scenarios: the real controller (`controller::run`) against the in-memory
//! Kubernetes API (`testkit::fake_apiserver`) and the vault emulator over HTTP, through
//! the harness in `testkit::scenario`.
//!
//! Timings are shortened (operations take 100 ms in the emulator, the controller's waits are
//! clamped to a few hundred ms); every wait is a condition with a timeout, never a sleep.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use blob_backup_operator::api::{BlobBackupInstance, BlobBackupInstanceStatus};
use blob_backup_operator::controller::{self, ControllerConfig, WriteBudget, decide::Timing};
use dataprotection::{
    self, BackupInstance, BackupInstanceId, LroStart, OperationStatus, PolicyId, StorageAccountId,
    VaultId, operation_ids as ops,
};
use serde_json::{Value, json};
use testkit::fake_apiserver::{Subresource, Verb};
use testkit::scenario::{
    ACCOUNT, Harness, NS, OTHER_VAULT, RESOURCE, RunningController, VAULT, WAIT, account,
    add_accounts, condition, controller_config, emulator_config, has_finalizer, put_intended, spec,
    test_timing, wait_until,
};
use vault_emulator::ThrottleSettings;

/// The article's resource, Ready, under a controller that resyncs every `interval`.
async fn protected_with_resync(interval: Duration) -> (Harness, RunningController, Value) {
    let h = Harness::start(emulator_config(Duration::from_millis(100))).await;
    let timing = Timing {
        resync_interval: interval,
        ..test_timing()
    };
    let controller = h.controller(timing);
    h.create("msblobbackup", spec(ACCOUNT, "BlobBackup-Policy"));
    let ready = h.wait_ready("msblobbackup").await;
    (h, controller, ready)
}

/// The article's resource made Ready, then deleted: as it is while Azure's DELETE runs.
async fn ready_then_deleting(h: &Harness) -> Value {
    h.create("msblobbackup", spec(ACCOUNT, "BlobBackup-Policy"));
    h.wait_ready("msblobbackup").await;
    h.api.delete(RESOURCE, NS, "msblobbackup").unwrap();
    h.wait_for("msblobbackup", "Delete in progress", |o| {
        o["status"]["operation"]["action"] == "Delete"
            && o["status"]["operation"]["status"] == "InProgress"
    })
    .await
}

/// Asserts that `text` contains each of `needles`.
fn assert_mentions(text: &str, needles: &[&str]) {
    for needle in needles {
        assert!(text.contains(needle), "{needle:?} not in {text:?}");
    }
}

#[tokio::test]
async fn create_from_nothing_to_ready() {
    let h = Harness::start(emulator_config(Duration::from_millis(100))).await;
    let controller = h.controller(test_timing());
    let created = h.create("msblobbackup", spec(ACCOUNT, "BlobBackup-Policy"));
    let uid = created["metadata"]["uid"].as_str().unwrap().to_owned();

    let ready = h.wait_ready("msblobbackup").await;
    let status = &ready["status"];
    assert_eq!(
        status["observedGeneration"],
        ready["metadata"]["generation"]
    );
    let name = format!("msblobbackup-{uid}");
    assert_eq!(status["backupInstanceName"], name.as_str());
    assert_eq!(
        status["backupInstanceId"],
        format!("{VAULT}/backupInstances/{name}").as_str()
    );
    assert_eq!(status["protectionStatus"], "ProtectionConfigured");
    assert_eq!(status["provisioningState"], "Succeeded");
    assert_eq!(status["operation"]["action"], "Create");
    assert_eq!(status["operation"]["status"], "Succeeded");
    assert!(status["operation"]["pollUrl"].as_str().is_some());
    for (type_, value, reason) in [
        ("Validated", "True", "ValidationSucceeded"),
        ("Reconciling", "False", "ProtectionConfigured"),
        ("Stalled", "False", "ProtectionConfigured"),
    ] {
        let c = condition(&ready, type_).unwrap();
        assert_eq!(
            (c["status"].as_str(), c["reason"].as_str()),
            (Some(value), Some(reason)),
            "{type_}"
        );
        assert_eq!(c["observedGeneration"], 1);
    }
    assert!(has_finalizer(&ready));

    let reasons = h.event_reasons("msblobbackup");
    for reason in ["Validating", "Creating", "Protected"] {
        assert!(
            reasons.iter().any(|r| r == reason),
            "{reason} in {reasons:?}"
        );
    }
    assert_eq!(h.azure(ops::VALIDATE_FOR_BACKUP), 1);
    assert_eq!(h.azure(ops::CREATE_OR_UPDATE), 1);
    assert_eq!(h.emulator.admin().instances().len(), 1);
    // Only the controller's field manager writes the status.
    assert!(
        h.api
            .requests()
            .iter()
            .filter(|r| r.info.subresource.as_deref() == Some("status"))
            .all(|r| r.field_manager.as_deref() == Some("blob-backup-operator"))
    );

    h.wait_metrics(&[
        "bbo_instances_ready{ready=\"true\"} 1",
        "bbo_instances{protection_status=\"ProtectionConfigured\"} 1",
        "bbo_operations_in_flight{action=\"Create\"} 0",
        "bbo_events_total{reason=\"Protected\"} 1",
    ])
    .await;
    controller.stop().await;
}

/// The article's vault, and the body that protects its storage account with its policy, for
/// writes a test makes as another Azure client.
fn article_vault_and_body() -> (VaultId, BackupInstance) {
    let body = BackupInstance::for_blob_account(
        &StorageAccountId::parse(ACCOUNT).unwrap(),
        "westus",
        &PolicyId::parse(&format!("{VAULT}/backupPolicies/BlobBackup-Policy")).unwrap(),
        None,
    );
    (VaultId::parse(VAULT).unwrap(), body)
}

#[tokio::test]
async fn adopts_an_existing_instance_with_one_put_of_its_owner_tags() {
    let h = Harness::start(emulator_config(Duration::from_millis(100))).await;
    // Someone protected the account already, under the name the resource asks for.
    let arm = h.arm(dataprotection::DEFAULT_API_VERSION);
    let (vault, body) = article_vault_and_body();
    let id: BackupInstanceId = vault.backup_instance("msblobbackup-existing");
    if let LroStart::Pending { handle, .. } = arm.create_or_update(&id, &body).await.result.unwrap()
    {
        tokio::time::timeout(WAIT, async {
            while !matches!(
                arm.poll(&handle.poll_url, &id).await.unwrap().status,
                OperationStatus::Succeeded
            ) {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await
        .expect("the setup PUT finishes");
    }
    h.emulator.admin().reset_counts();

    let controller = h.controller(test_timing());
    let mut adopted = spec(ACCOUNT, "BlobBackup-Policy");
    adopted["backupInstanceName"] = json!("msblobbackup-existing");
    h.create("adopted", adopted);
    let ready = h.wait_ready("adopted").await;
    assert_eq!(
        ready["status"]["backupInstanceName"],
        "msblobbackup-existing"
    );
    assert!(h.event_reasons("adopted").iter().any(|r| r == "Adopted"));
    assert!(
        h.event_note("adopted", "Adopted")
            .contains("msblobbackup-existing")
    );
    // --vault-access open allows adoption: one PUT writes the owner tags, no validation.
    assert_eq!(ready["status"]["ownership"], "Adopted");
    assert_eq!(h.azure(ops::CREATE_OR_UPDATE), 1);
    assert_eq!(h.azure(ops::VALIDATE_FOR_BACKUP), 0);
    let instances = h.emulator.admin().instances();
    assert_eq!(
        instances[0]["tags"]["blobbackup.io/uid"],
        ready["metadata"]["uid"]
    );
    controller.stop().await;
}

#[tokio::test]
async fn policy_change_updates_in_place() {
    let h = Harness::start(emulator_config(Duration::from_millis(100))).await;
    let controller = h.controller(test_timing());
    h.create("msblobbackup", spec(ACCOUNT, "BlobBackup-Policy"));
    h.wait_ready("msblobbackup").await;
    h.emulator.admin().reset_counts();

    h.api
        .edit(RESOURCE, NS, "msblobbackup", Subresource::Main, |doc| {
            doc["spec"]["policy"]["name"] = json!("BlobBackup-Policy2");
        })
        .unwrap();
    let updated = h
        .wait_for("msblobbackup", "Ready for generation 2", |o| {
            o["status"]["observedGeneration"] == 2
                && condition(o, "Ready").is_some_and(|c| c["status"] == "True")
        })
        .await;
    assert_eq!(updated["status"]["operation"]["action"], "Update");
    assert_eq!(
        condition(&updated, "Ready").unwrap()["observedGeneration"],
        2
    );
    assert!(
        h.event_reasons("msblobbackup")
            .iter()
            .any(|r| r == "Updating")
    );
    assert_eq!(h.azure(ops::CREATE_OR_UPDATE), 1, "one PUT for the update");
    assert_eq!(h.azure(ops::VALIDATE_FOR_BACKUP), 0, "no second validation");
    let instances = h.emulator.admin().instances();
    let policy = instances[0]["properties"]["policyInfo"]["policyId"]
        .as_str()
        .unwrap();
    assert!(policy.ends_with("/BlobBackup-Policy2"), "{policy}");
    controller.stop().await;
}

#[tokio::test]
async fn already_protected_elsewhere_stalls_naming_the_vault() {
    let h = Harness::start(emulator_config(Duration::from_millis(100))).await;
    h.emulator
        .admin()
        .protect_elsewhere(ACCOUNT, OTHER_VAULT)
        .unwrap();
    let controller = h.controller(test_timing());
    h.create("msblobbackup", spec(ACCOUNT, "BlobBackup-Policy"));
    let stalled = h
        .wait_condition("msblobbackup", "Stalled", "True", "AlreadyProtected")
        .await;
    let ready = condition(&stalled, "Ready").unwrap();
    assert_eq!(
        (ready["status"].as_str(), ready["reason"].as_str()),
        (Some("False"), Some("AlreadyProtected"))
    );
    assert_mentions(
        ready["message"].as_str().unwrap(),
        &[
            "otherVault",
            "Recommended action",
            "UserErrorDppDatasourceAlreadyProtected",
        ],
    );
    assert_eq!(
        condition(&stalled, "Reconciling").unwrap()["status"],
        "False"
    );
    assert_mentions(
        &h.event_note("msblobbackup", "ValidationFailed"),
        &["UserErrorDppDatasourceAlreadyProtected"],
    );
    assert_eq!(h.azure(ops::CREATE_OR_UPDATE), 0);
    controller.stop().await;
}

#[tokio::test]
async fn missing_permission_stalls_then_heals_once_granted() {
    let h = Harness::start(emulator_config(Duration::from_millis(100))).await;
    h.emulator.admin().revoke_role(ACCOUNT).unwrap();
    let controller = h.controller(test_timing());
    h.create("msblobbackup", spec(ACCOUNT, "BlobBackup-Policy"));
    let stalled = h
        .wait_condition("msblobbackup", "Stalled", "True", "MissingPermissions")
        .await;
    assert_mentions(
        condition(&stalled, "Ready").unwrap()["message"]
            .as_str()
            .unwrap(),
        &[
            "Microsoft.Authorization/roleAssignments/read",
            &format!("{ACCOUNT}/providers/Microsoft.Authorization"),
            "Storage Account Backup Contributor",
        ],
    );
    assert_eq!(condition(&stalled, "Validated").unwrap()["status"], "False");
    assert!(
        h.event_reasons("msblobbackup")
            .iter()
            .any(|r| r == "ValidationFailed")
    );
    assert_eq!(h.azure(ops::CREATE_OR_UPDATE), 0);

    // Someone grants the role in Azure; nobody touches the resource.
    h.emulator.admin().grant_role(ACCOUNT).unwrap();
    let ready = h.wait_ready("msblobbackup").await;
    assert_eq!(ready["metadata"]["generation"], 1);
    assert!(
        h.azure(ops::VALIDATE_FOR_BACKUP) >= 2,
        "validation was retried"
    );
    assert_eq!(h.azure(ops::CREATE_OR_UPDATE), 1);
    controller.stop().await;
}

#[tokio::test]
async fn delete_policy_deletes_the_instance_before_the_finalizer_goes() {
    // Slow operations, to see the resource wait for Azure's confirmation.
    let h = Harness::start(emulator_config(Duration::from_millis(600))).await;
    let controller = h.controller(test_timing());
    let deleting = ready_then_deleting(&h).await;
    assert!(
        has_finalizer(&deleting),
        "the finalizer stays while Azure deletes"
    );
    assert_eq!(h.emulator.admin().instances().len(), 1);
    h.wait_gone("msblobbackup").await;
    assert!(h.emulator.admin().instances().is_empty());
    assert_eq!(h.azure(ops::DELETE), 1);
    assert_eq!(h.azure(ops::STOP_PROTECTION), 0);
    let reasons = h.event_reasons("msblobbackup");
    assert!(reasons.iter().any(|r| r == "Deleting"), "{reasons:?}");
    assert!(reasons.iter().any(|r| r == "Deleted"), "{reasons:?}");
    h.wait_metrics(&[
        "bbo_instances_ready{ready=\"true\"} 0",
        "bbo_operations_in_flight{action=\"Delete\"} 0",
    ])
    .await;
    controller.stop().await;
}

#[tokio::test]
async fn retain_policy_stops_protection_and_keeps_the_instance() {
    let h = Harness::start(emulator_config(Duration::from_millis(100))).await;
    let controller = h.controller(test_timing());
    let mut vaulted = spec(&account("vaultedacct"), "BlobVaulted-Policy");
    vaulted["vaultedBackup"] = json!({"containers": ["images", "logs"]});
    vaulted["deletionPolicy"] = json!("Retain");
    h.create("vaulted", vaulted);
    let ready = h.wait_ready("vaulted").await;
    // The emulator backs a vaulted instance up when protection starts: status says when.
    let last = ready["status"]["lastRecoveryPointTime"]
        .as_str()
        .unwrap_or_default();
    assert!(
        last.parse::<jiff::Timestamp>().is_ok(),
        "no lastRecoveryPointTime in {ready:#}"
    );
    assert!(h.azure(ops::RECOVERY_POINTS_LIST) >= 1);
    assert_eq!(ready["status"]["vaultName"], "testBkpVault");
    assert_eq!(ready["status"]["storageAccountName"], "vaultedacct");
    assert_eq!(ready["status"]["policyName"], "BlobVaulted-Policy");

    h.api.delete(RESOURCE, NS, "vaulted").unwrap();
    h.wait_gone("vaulted").await;
    assert_eq!(h.azure(ops::STOP_PROTECTION), 1);
    assert_eq!(h.azure(ops::DELETE), 0);
    let instances = h.emulator.admin().instances();
    assert_eq!(instances.len(), 1, "the recovery points stay in the vault");
    assert_eq!(
        instances[0]["properties"]["protectionStatus"]["status"],
        "ProtectionStopped"
    );
    assert!(
        h.event_reasons("vaulted")
            .iter()
            .any(|r| r == "StoppingProtection")
    );
    controller.stop().await;
}

#[tokio::test]
async fn orphan_policy_leaves_azure_untouched() {
    let h = Harness::start(emulator_config(Duration::from_millis(100))).await;
    let controller = h.controller(test_timing());
    let mut orphan = spec(&account("orphanacct"), "BlobBackup-Policy");
    orphan["deletionPolicy"] = json!("Orphan");
    h.create("orphan", orphan);
    h.wait_ready("orphan").await;
    let writes_before = h.emulator.admin().request_counts();

    h.api.delete(RESOURCE, NS, "orphan").unwrap();
    h.wait_gone("orphan").await;
    assert_eq!(h.azure(ops::DELETE), 0);
    assert_eq!(h.azure(ops::STOP_PROTECTION), 0);
    assert_eq!(
        h.emulator.admin().request_counts(),
        writes_before,
        "no Azure call at all"
    );
    assert_eq!(h.emulator.admin().instances().len(), 1);
    assert!(h.event_reasons("orphan").iter().any(|r| r == "Orphaned"));
    controller.stop().await;
}

#[tokio::test]
async fn instance_deleted_behind_the_operators_back_is_recreated() {
    let (h, controller, ready) = protected_with_resync(Duration::from_millis(300)).await;
    let id = ready["status"]["backupInstanceId"]
        .as_str()
        .unwrap()
        .to_owned();

    h.emulator.admin().delete_instance_out_of_band(&id).unwrap();
    h.wait_for("msblobbackup", "a DriftDetected event", |_| {
        h.event_reasons("msblobbackup")
            .iter()
            .any(|r| r == "DriftDetected")
    })
    .await;
    // A second PUT means the status went through Validating (written before the PUT), so a
    // Ready=True seen after it is the recreated instance's.
    h.wait_for("msblobbackup", "Ready after the recreation", |o| {
        h.azure(ops::CREATE_OR_UPDATE) == 2
            && condition(o, "Ready").is_some_and(|c| c["status"] == "True")
    })
    .await;
    assert!(
        h.event_note("msblobbackup", "DriftDetected")
            .contains("deleted outside Kubernetes")
    );
    assert_eq!(h.azure(ops::VALIDATE_FOR_BACKUP), 2);
    assert_eq!(h.emulator.admin().instances().len(), 1);
    controller.stop().await;
}

#[tokio::test]
async fn a_second_operator_resumes_the_recorded_operation() {
    // Operations long enough to kill the first operator while its PUT runs.
    let h = Harness::start(emulator_config(Duration::from_millis(1500))).await;
    let first = h.controller(test_timing());
    h.create("msblobbackup", spec(ACCOUNT, "BlobBackup-Policy"));
    h.wait_for("msblobbackup", "the PUT's intent", put_intended)
        .await;
    wait_until("the PUT sent", || h.azure(ops::CREATE_OR_UPDATE) == 1).await;
    // The API has the PUT's intent; its poll URL is in the first operator's memory only.
    let in_flight = h.get("msblobbackup").unwrap();
    assert!(put_intended(&in_flight));
    assert_eq!(in_flight["status"]["operation"]["pollUrl"], Value::Null);
    first.kill().await;

    let second = h.controller(test_timing());
    let ready = h.wait_ready("msblobbackup").await;
    // The second operator found the instance the intended PUT created, by a GET.
    assert_eq!(ready["status"]["operation"]["action"], "Create");
    assert_eq!(h.azure(ops::CREATE_OR_UPDATE), 1, "exactly one PUT");
    assert_eq!(
        h.azure(ops::VALIDATE_FOR_BACKUP),
        1,
        "exactly one validation"
    );
    second.stop().await;
}

#[tokio::test]
async fn a_forged_poll_url_gets_no_request_and_does_not_block_deletion() {
    let h = Harness::start(emulator_config(Duration::from_millis(600))).await;
    let first = h.controller(test_timing());
    let deleting = ready_then_deleting(&h).await;
    first.kill().await;

    // Someone who can write /status points the operation at another ARM path on the endpoint.
    let genuine = deleting["status"]["operation"]["pollUrl"].as_str().unwrap();
    let base = &genuine[..genuine.find("/subscriptions/").unwrap()];
    let forged = format!(
        "{base}{}/providers/Microsoft.Storage/storageAccounts/other/listKeys?api-version=2023-05-01",
        &VAULT[..VAULT.find("/providers/").unwrap()]
    );
    h.api
        .edit(RESOURCE, NS, "msblobbackup", Subresource::Status, |o| {
            o["status"]["operation"]["pollUrl"] = json!(forged);
        })
        .unwrap();
    // Azure finishes the deletion meanwhile.
    tokio::time::timeout(WAIT, async {
        while !h.emulator.admin().instances().is_empty() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the emulator finishes the DELETE");
    let before = h.emulator.admin().request_counts();

    let second = h.controller(test_timing());
    h.wait_gone("msblobbackup").await;
    let after = h.emulator.admin().request_counts();
    let called: Vec<&String> = after
        .iter()
        .filter(|(operation, counts)| before.get(*operation) != Some(counts))
        .map(|(operation, _)| operation)
        .collect();
    assert_eq!(
        called,
        [ops::GET],
        "only a GET of the instance, no second DELETE"
    );
    assert_eq!(h.azure(ops::DELETE), 1);
    let reasons = h.event_reasons("msblobbackup");
    assert!(reasons.iter().any(|r| r == "PollUrlRefused"), "{reasons:?}");
    assert_mentions(
        &h.event_note("msblobbackup", "PollUrlRefused"),
        &[
            "/providers/Microsoft.Storage/storageAccounts/other/listKeys",
            "no token was sent",
        ],
    );
    second.stop().await;
}

#[tokio::test]
async fn status_is_written_only_when_it_changes() {
    let (h, controller, _) = protected_with_resync(Duration::from_millis(150)).await;
    let writes = h.status_writes("msblobbackup");
    let gets = h.azure(ops::GET);
    let events = h.event_reasons("msblobbackup").len();

    // Several resyncs that find everything as it was.
    h.api
        .wait_for(WAIT, |_| h.azure(ops::GET) >= gets + 4)
        .await
        .expect("the controller resyncs");
    assert_eq!(
        h.status_writes("msblobbackup"),
        writes,
        "no status write without a change"
    );
    assert_eq!(
        h.event_reasons("msblobbackup").len(),
        events,
        "no new events either"
    );
    // A whole creation takes three writes, not one per step: the validation started
    // (Validating, its poll URL; it changes nothing in Azure, so no intent before it), the
    // creation's intent before the PUT (Creating, Validated=True; the PUT's poll URL stays in
    // memory: after a crash the intent makes the next reconcile GET the instance), Ready.
    assert_eq!(writes, 3, "status writes for a creation");
    controller.stop().await;
}

#[tokio::test]
async fn invalid_spec_stalls_naming_the_field_without_calling_azure() {
    let h = Harness::start(emulator_config(Duration::from_millis(100))).await;
    let controller = h.controller(test_timing());
    // The fake apiserver has no schema: this is a resource created under an older CRD.
    let mut bad = spec(ACCOUNT, "BlobBackup-Policy");
    bad["vault"]["id"] = json!(
        "/subscriptions/not-a-uuid/resourceGroups/rg/providers/Microsoft.DataProtection/backupVaults/v"
    );
    h.create("invalid", bad);
    let stalled = h
        .wait_condition("invalid", "Stalled", "True", "InvalidSpec")
        .await;
    let message = condition(&stalled, "Ready").unwrap()["message"]
        .as_str()
        .unwrap();
    assert!(message.contains("spec.vault.id"), "{message}");
    assert!(
        !has_finalizer(&stalled),
        "nothing written to Azure, nothing to clean up"
    );
    assert!(
        h.emulator.admin().request_counts().is_empty(),
        "no Azure call"
    );
    assert!(
        h.event_reasons("invalid")
            .iter()
            .any(|r| r == "InvalidSpec")
    );

    // Deleting it needs no finalizer work.
    h.api.delete(RESOURCE, NS, "invalid").unwrap();
    h.wait_gone("invalid").await;
    controller.stop().await;
}

#[tokio::test]
async fn retain_on_an_api_version_without_stop_protection_keeps_the_finalizer() {
    let h = Harness::start(emulator_config(Duration::from_millis(100))).await;
    let controller = h.controller_with(test_timing(), "2021-01-01");
    let mut vaulted = spec(&account("vaultedacct"), "BlobVaulted-Policy");
    vaulted["vaultedBackup"] = json!({"containers": ["images"]});
    vaulted["deletionPolicy"] = json!("Retain");
    h.create("vaulted", vaulted);
    h.wait_ready("vaulted").await;

    h.api.delete(RESOURCE, NS, "vaulted").unwrap();
    let stalled = h
        .wait_condition("vaulted", "Stalled", "True", "StopProtectionUnsupported")
        .await;
    assert!(has_finalizer(&stalled));
    let message = condition(&stalled, "Ready").unwrap()["message"]
        .as_str()
        .unwrap();
    assert!(message.contains("--api-version"), "{message}");
    assert_eq!(h.azure(ops::STOP_PROTECTION), 0);
    assert_eq!(h.azure(ops::DELETE), 0);
    controller.stop().await;
}

#[tokio::test]
async fn every_example_goes_ready_and_deletes_per_its_policy() {
    let h = Harness::start(emulator_config(Duration::from_millis(100))).await;
    let controller = h.controller(test_timing());
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/examples");
    // All examples protect the article's account: one at a time, as their comments say.
    for (file, leaves_instance) in [
        ("msblobbackup.yaml", false),
        ("deletion-policy-delete.yaml", false),
        ("vaulted.yaml", false),
        ("deletion-policy-retain.yaml", true),
        ("deletion-policy-orphan.yaml", true),
    ] {
        let text = std::fs::read_to_string(dir.join(file)).unwrap();
        let mut object: Value = serde_saphyr::from_str(&text).unwrap();
        object["metadata"]["namespace"] = json!(NS);
        let name = object["metadata"]["name"].as_str().unwrap().to_owned();
        h.api.create(object).unwrap();
        let ready = h.wait_ready(&name).await;
        let id = ready["status"]["backupInstanceId"]
            .as_str()
            .unwrap()
            .to_owned();

        h.api.delete(RESOURCE, NS, &name).unwrap();
        h.wait_gone(&name).await;
        let left: Vec<Value> = h.emulator.admin().instances();
        assert_eq!(left.len(), usize::from(leaves_instance), "{file}: {left:?}");
        if leaves_instance {
            // Clear the account for the next example.
            h.emulator.admin().delete_instance_out_of_band(&id).unwrap();
        }
    }
    controller.stop().await;
}

/// A PUT that waits for its slot in the write budget (one write, the next 3 s on) costs no
/// extra GET: the controller knows the intent it recorded when the wait began was not sent,
/// so it sends the PUT at the slot as it would have without the wait; the one GET is the one
/// that sees the instance protected. (Before: a GET at the slot too, 6 requests, not 5.)
#[tokio::test]
async fn a_put_that_waited_for_its_slot_costs_no_extra_get() {
    let h = Harness::start(emulator_config(Duration::from_millis(100))).await;
    let config = ControllerConfig {
        write_budget: WriteBudget {
            burst: 1,
            refill: Duration::from_secs(3),
        },
        // The intent may be this old and still be sent without a GET.
        timing: Timing {
            retry_after_max: Duration::from_secs(10),
            ..test_timing()
        },
        ..controller_config(test_timing(), "test")
    };
    let controller = h.controller_configured(config, dataprotection::DEFAULT_API_VERSION);
    h.create(RESOURCE, spec(ACCOUNT, "BlobBackup-Policy"));
    h.wait_ready(RESOURCE).await;
    assert_eq!(h.azure(ops::VALIDATE_FOR_BACKUP), 1);
    assert_eq!(h.azure(ops::CREATE_OR_UPDATE), 1);
    assert_eq!(h.azure(ops::GET), 1, "GETs of the instance");
    controller.stop().await;
}

/// Another client of the subscription spent most of Azure's write budget. Once a write is
/// answered with the writes left (`x-ms-ratelimit-remaining-subscription-writes`), the
/// controller spaces the rest at its own refill rate instead of spending its larger burst,
/// and provokes no 429.
#[tokio::test]
async fn writes_keep_to_the_budget_azure_reports_left() {
    const FIRST: &str = "budgetfirst";
    const LATER: [&str; 2] = ["budgetsecond", "budgetthird"];
    let mut config = emulator_config(Duration::from_millis(100));
    config.behavior.throttle = Some(ThrottleSettings {
        budget: 3,
        refill_per_second: 2.0,
    });
    add_accounts(&mut config, &[&[FIRST][..], &LATER[..]].concat());
    let h = Harness::start(config).await;

    // Someone else's writes: two of the three.
    let other = h.arm(dataprotection::DEFAULT_API_VERSION);
    let (vault, body) = article_vault_and_body();
    for _ in 0..2 {
        other
            .validate_for_backup(&vault, &body)
            .await
            .result
            .unwrap();
    }

    // The controller's own copy of the bucket would let 200 writes go at once; its refill
    // (one write per 600 ms) is slower than Azure's.
    let controller = h.controller_configured(
        ControllerConfig {
            write_budget: WriteBudget {
                burst: 200,
                refill: Duration::from_millis(600),
            },
            ..controller_config(test_timing(), "test")
        },
        dataprotection::DEFAULT_API_VERSION,
    );
    h.create(FIRST, spec(&account(FIRST), "BlobBackup-Policy"));
    let first_write_answered = h
        .api
        .wait_for(WAIT, |_| h.azure(ops::VALIDATE_FOR_BACKUP) >= 3)
        .await;
    assert!(first_write_answered.is_ok(), "the controller validated");
    for name in LATER {
        h.create(name, spec(&account(name), "BlobBackup-Policy"));
    }
    for name in [&[FIRST][..], &LATER[..]].concat() {
        h.wait_ready(name).await;
    }

    let throttled: Vec<(String, u64)> = h
        .emulator
        .admin()
        .request_counts()
        .into_iter()
        .filter_map(|(operation, by_status)| Some((operation, *by_status.get(&429)?)))
        .collect();
    assert_eq!(throttled, Vec::new(), "429s by operation");
    assert_eq!(h.azure(ops::CREATE_OR_UPDATE), 3);
    controller.stop().await;
}

#[tokio::test]
async fn a_status_write_refused_as_invalid_is_not_retried_at_once() {
    let h = Harness::start(emulator_config(Duration::from_millis(100))).await;
    // A 422 is no conflict: retrying it at once (every retry_after_min, 50 ms here) only
    // hammers the API server. It waits for the longest Stalled backoff.
    let timing = Timing {
        stalled_retry_max: Duration::from_secs(60),
        ..test_timing()
    };
    h.api.fail_next_where(100, 422, |info| {
        info.verb == Verb::Patch && info.subresource.as_deref() == Some("status")
    });
    let controller = h.controller(timing);
    h.create("msblobbackup", spec(ACCOUNT, "BlobBackup-Policy"));
    h.api
        .wait_for(WAIT, |_| h.status_writes("msblobbackup") >= 1)
        .await
        .expect("the controller writes a status");
    // Absence over a window forty times the conflict retry delay.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        h.status_writes("msblobbackup"),
        1,
        "the refused status write was sent again at once"
    );
    controller.stop().await;
}

/// Fails the controller's status writes with 500 while `armed` holds and the emulator has
/// served `operation` at least once: the write that records the started operation (its poll
/// URL) cannot get through.
fn fail_status_writes_after(h: &Harness, operation: &'static str, armed: Arc<AtomicBool>) {
    let admin = h.emulator.admin().clone();
    h.api.fail_next_where(u64::MAX, 500, move |info| {
        armed.load(Ordering::SeqCst)
            && info.verb == Verb::Patch
            && info.subresource.as_deref() == Some("status")
            && admin.request_count(operation) > 0
    });
}

#[tokio::test]
async fn an_operation_that_cannot_be_recorded_is_never_sent_twice() {
    // Operations long enough that the first status writes fail while they still run.
    let h = Harness::start(emulator_config(Duration::from_millis(1500))).await;
    let controller = h.controller(test_timing());
    let armed = Arc::new(AtomicBool::new(true));
    fail_status_writes_after(&h, ops::CREATE_OR_UPDATE, armed.clone());
    h.create("msblobbackup", spec(ACCOUNT, "BlobBackup-Policy"));
    // The PUT went out; its poll URL cannot be recorded: more than the three quick retries.
    let failed_writes = || {
        h.api
            .requests()
            .iter()
            .filter(|r| r.info.subresource.as_deref() == Some("status") && r.status == 500)
            .count()
    };
    h.api
        .wait_for(WAIT, |_| failed_writes() >= 5)
        .await
        .expect("the status writes after the PUT fail");
    armed.store(false, Ordering::SeqCst);
    let ready = h.wait_ready("msblobbackup").await;
    assert_eq!(h.azure(ops::CREATE_OR_UPDATE), 1, "exactly one PUT");
    assert_eq!(ready["status"]["operation"]["action"], "Create");

    // The same for the DELETE.
    h.api.clear_requests();
    let armed = Arc::new(AtomicBool::new(true));
    fail_status_writes_after(&h, ops::DELETE, armed.clone());
    h.api
        .delete(RESOURCE, NS, "msblobbackup")
        .expect("deletion requested");
    h.api
        .wait_for(WAIT, |_| failed_writes() >= 5)
        .await
        .expect("the status writes after the DELETE fail");
    armed.store(false, Ordering::SeqCst);
    h.wait_gone("msblobbackup").await;
    assert_eq!(h.azure(ops::DELETE), 1, "exactly one DELETE");
    controller.stop().await;
}

#[tokio::test]
async fn a_restart_after_an_unrecorded_put_takes_the_instance_as_its_outcome() {
    let h = Harness::start(emulator_config(Duration::from_millis(1500))).await;
    let first = h.controller(test_timing());
    let armed = Arc::new(AtomicBool::new(true));
    fail_status_writes_after(&h, ops::CREATE_OR_UPDATE, armed.clone());
    h.create("msblobbackup", spec(ACCOUNT, "BlobBackup-Policy"));
    // Recorded before the PUT: the intent. The PUT's poll URL never made it.
    let intent = h
        .wait_for("msblobbackup", "the PUT's intent", |o| {
            o["status"]["operation"]["action"] == "Create"
                && o["status"]["operation"]["status"] == "Pending"
        })
        .await;
    assert!(intent["status"]["backupInstanceName"].is_string());
    h.api
        .wait_for(WAIT, |_| h.azure(ops::CREATE_OR_UPDATE) == 1)
        .await
        .expect("the PUT is sent");
    first.kill().await;
    armed.store(false, Ordering::SeqCst);

    let second = h.controller(test_timing());
    h.wait_ready("msblobbackup").await;
    assert_eq!(h.azure(ops::CREATE_OR_UPDATE), 1, "exactly one PUT");
    assert_eq!(h.azure(ops::VALIDATE_FOR_BACKUP), 1, "one validation");
    let reasons = h.event_reasons("msblobbackup");
    for unwanted in ["AlreadyProtected", "Adopted"] {
        assert!(!reasons.iter().any(|r| r == unwanted), "{reasons:?}");
    }
    second.stop().await;
}

#[tokio::test]
async fn a_status_apply_decided_on_a_stale_copy_gets_a_conflict() {
    let h = Harness::start(emulator_config(Duration::from_millis(100))).await;
    h.create("msblobbackup", spec(ACCOUNT, "BlobBackup-Policy"));
    let api: kube::Api<BlobBackupInstance> =
        kube::Api::namespaced(h.api.client_in(NS).unwrap(), NS);
    let stale = api.get("msblobbackup").await.unwrap();
    // Someone changes the resource after the copy the status was decided on.
    h.api
        .edit(RESOURCE, NS, "msblobbackup", Subresource::Main, |o| {
            o["spec"]["policy"]["name"] = json!("BlobBackup-Policy2")
        })
        .unwrap();
    let decided = |mut obj: BlobBackupInstance| {
        obj.status = Some(BlobBackupInstanceStatus {
            observed_generation: obj.metadata.generation,
            ..BlobBackupInstanceStatus::default()
        });
        obj
    };
    match controller::apply_status(&api, &decided(stale)).await {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, 409, "{status:?}"),
        other => panic!("a stale status apply must conflict, got {other:?}"),
    }
    assert!(
        h.get("msblobbackup").unwrap()["status"].is_null(),
        "nothing overwritten"
    );
    let fresh = api.get("msblobbackup").await.unwrap();
    let written = controller::apply_status(&api, &decided(fresh))
        .await
        .unwrap();
    assert_eq!(written.status.unwrap().observed_generation, Some(2));
}

#[tokio::test]
async fn a_conflict_is_retried_against_a_fresh_read() {
    let h = Harness::start(emulator_config(Duration::from_millis(100))).await;
    // The first status write conflicts, as when someone changed the resource after the
    // watch's copy: the retry must not decide on that copy again.
    h.api.fail_next_where(1, 409, |info| {
        info.verb == Verb::Patch && info.subresource.as_deref() == Some("status")
    });
    let controller = h.controller(test_timing());
    h.create("msblobbackup", spec(ACCOUNT, "BlobBackup-Policy"));
    h.wait_ready("msblobbackup").await;
    let requests = h.api.requests();
    let conflict = requests
        .iter()
        .position(|r| r.status == 409 && r.info.subresource.as_deref() == Some("status"))
        .expect("the injected conflict");
    let next_status_write = conflict
        + 1
        + requests[conflict + 1..]
            .iter()
            .position(|r| r.info.subresource.as_deref() == Some("status"))
            .expect("a status write after the conflict");
    assert!(
        requests[conflict + 1..next_status_write].iter().any(|r| {
            r.info.verb == Verb::Get
                && r.info.resource == RESOURCE
                && r.info.name.as_deref() == Some("msblobbackup")
        }),
        "no fresh read between the conflict and the next status write"
    );
    controller.stop().await;
}

#[tokio::test]
async fn a_crash_right_after_the_puts_intent_sends_one_put() {
    let h = Harness::start(emulator_config(Duration::from_millis(300))).await;
    let first = h.controller(test_timing());
    h.create("msblobbackup", spec(ACCOUNT, "BlobBackup-Policy"));
    // Killed as soon as the intent is stored: before the PUT went out, or just after.
    h.wait_for("msblobbackup", "the PUT's intent", |o| {
        o["status"]["operation"]["action"] == "Create"
            && o["status"]["operation"]["status"] == "Pending"
    })
    .await;
    first.kill().await;
    let sent_before = h.azure(ops::CREATE_OR_UPDATE);
    assert!(sent_before <= 1);

    let second = h.controller(test_timing());
    h.wait_ready("msblobbackup").await;
    assert_eq!(
        h.azure(ops::CREATE_OR_UPDATE),
        1,
        "exactly one PUT over both"
    );
    assert_eq!(h.azure(ops::VALIDATE_FOR_BACKUP), 1, "no second validation");
    let reasons = h.event_reasons("msblobbackup");
    assert!(
        !reasons.iter().any(|r| r == "AlreadyProtected"),
        "{reasons:?}"
    );
    second.stop().await;
}
