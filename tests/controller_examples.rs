//! deploy/examples/: every example is a valid BlobBackupInstance (it parses, passes the CRD's
//! CEL rules and `validate()`), shows what its file name promises, and names the emulator's
//! default world, so each goes Ready with `run --embedded-vault`. (The scenario
//! `every_example_goes_ready_and_deletes_per_its_policy` in controller_scenarios.rs runs them.)

use std::path::PathBuf;

use blob_backup_operator::api::{BlobBackupInstance, DeletionPolicy};
use vault_emulator::EmulatorConfig;

fn examples() -> Vec<(String, BlobBackupInstance)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("deploy/examples");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("deploy/examples exists")
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).unwrap();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let object: BlobBackupInstance = serde_saphyr::from_str(&text)
                .unwrap_or_else(|e| panic!("{name} is not a BlobBackupInstance: {e}"));
            (name, object)
        })
        .collect()
}

#[test]
fn every_example_passes_the_schema_rules_and_the_controllers_checks() {
    let examples = examples();
    assert_eq!(
        examples.len(),
        5,
        "{:?}",
        examples.iter().map(|e| &e.0).collect::<Vec<_>>()
    );
    let mut names = Vec::new();
    for (file, object) in &examples {
        assert_eq!(
            object.metadata.namespace, None,
            "{file}: kubectl apply -n picks the namespace"
        );
        kube::core::cel::validate_cel(object)
            .unwrap_or_else(|e| panic!("{file}: the CRD's CEL rules reject it: {e:?}"));
        object
            .spec
            .validate()
            .unwrap_or_else(|e| panic!("{file}: validate() rejects it: {e}"));
        names.push(object.metadata.name.clone().unwrap());
    }
    names.sort();
    names.dedup();
    assert_eq!(names.len(), examples.len(), "distinct names");
}

#[test]
fn examples_show_what_their_names_promise() {
    for (file, object) in examples() {
        let spec = &object.spec;
        match file.as_str() {
            "msblobbackup.yaml" => {
                assert_eq!(object.metadata.name.as_deref(), Some("msblobbackup"));
                assert_eq!(spec.policy.name.as_deref(), Some("BlobBackup-Policy"));
                assert_eq!(spec.storage_account.location, "westus");
                assert!(spec.vaulted_backup.is_none());
                assert_eq!(spec.deletion_policy, DeletionPolicy::Delete);
            }
            "vaulted.yaml" => {
                assert_eq!(spec.policy.name.as_deref(), Some("BlobVaulted-Policy"));
                assert!(!spec.vaulted_backup.as_ref().unwrap().containers.is_empty());
            }
            "deletion-policy-delete.yaml" => {
                assert_eq!(spec.deletion_policy, DeletionPolicy::Delete)
            }
            "deletion-policy-retain.yaml" => {
                assert_eq!(spec.deletion_policy, DeletionPolicy::Retain);
                assert!(spec.vaulted_backup.is_some());
            }
            "deletion-policy-orphan.yaml" => {
                assert_eq!(spec.deletion_policy, DeletionPolicy::Orphan)
            }
            other => panic!("unexpected example {other}: add it to this table"),
        }
    }
}

#[test]
fn examples_name_the_emulators_default_world() {
    let world = EmulatorConfig::default();
    for (file, object) in examples() {
        let spec = object.spec.validate().unwrap();
        let vault = world
            .vaults
            .iter()
            .find(|v| v.id.eq_ignore_ascii_case(&spec.vault.to_string()))
            .unwrap_or_else(|| panic!("{file}: vault {} is not the emulator's", spec.vault));
        assert!(
            vault.policies.iter().any(|p| p.name == spec.policy.name()),
            "{file}: policy {} is not in the emulator's vault",
            spec.policy.name()
        );
        assert!(
            world.storage_accounts.iter().any(|a| a
                .id
                .eq_ignore_ascii_case(&spec.storage_account.to_string())
                && a.location == spec.location),
            "{file}: storage account {} is not the emulator's",
            spec.storage_account
        );
    }
}

/// deploy/examples/grants/: a valid grant of the emulator's vault (the README's multi-team
/// set-up points at it).
#[test]
fn the_grant_example_is_a_valid_grant_of_the_emulators_vault() {
    use blob_backup_operator::api::BackupVaultGrant;
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("deploy/examples/grants/team-vault.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let grant: BackupVaultGrant = serde_saphyr::from_str(&text).expect("a BackupVaultGrant");
    kube::core::cel::validate_cel(&grant).unwrap_or_else(|e| panic!("CEL rules: {e:?}"));
    let valid = grant.validate().expect("validate()");
    assert_eq!(
        valid.vault.to_string(),
        EmulatorConfig::default().vaults[0].id
    );
    assert!(valid.matches_namespace("team-a", &Default::default()));
    assert!(!valid.allows_deletion_policy(DeletionPolicy::Delete));
}
