//! ARM ID parsing: a table of good and bad IDs.

use std::collections::HashSet;

use dataprotection::{BackupInstanceId, PolicyId, StorageAccountId, VaultId};

const SUB: &str = "00000000-0000-0000-0000-000000000000";

fn vault_id() -> String {
    format!(
        "/subscriptions/{SUB}/resourceGroups/TestBkpVaultRG/providers/Microsoft.DataProtection/backupVaults/testBkpVault"
    )
}

#[test]
fn good_vault_ids_in_any_casing() {
    let canonical = vault_id();
    let good = [
        canonical.clone(),
        canonical.replace("resourceGroups", "resourcegroups"),
        canonical.replace("backupVaults", "Backupvaults"),
        canonical.replace("/subscriptions/", "/Subscriptions/"),
        canonical.replace("Microsoft.DataProtection", "microsoft.dataprotection"),
        canonical.to_uppercase().replace(&SUB.to_uppercase(), SUB),
        format!("{canonical}/"),
        format!("  {canonical}\n"),
    ];
    for input in &good {
        let id = VaultId::parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
        assert_eq!(id.subscription(), SUB, "{input}");
        assert!(id.resource_group().eq_ignore_ascii_case("TestBkpVaultRG"));
        assert!(id.name().eq_ignore_ascii_case("testBkpVault"));
        // Equality and hashing ignore case, as ARM does.
        assert_eq!(id, VaultId::parse(&canonical).unwrap());
        let set: HashSet<VaultId> = [id.clone(), VaultId::parse(&canonical).unwrap()].into();
        assert_eq!(set.len(), 1);
    }
    // Display is canonical casing, names verbatim.
    let lower = VaultId::parse(&canonical.replace("backupVaults", "backupvaults")).unwrap();
    assert_eq!(lower.to_string(), canonical);
    assert_eq!(
        VaultId::new(SUB, "TestBkpVaultRG", "testBkpVault").unwrap(),
        lower
    );
}

#[test]
fn bad_ids_name_the_segment_and_show_the_shape() {
    let v = vault_id();
    // (input, text the problem must contain)
    let bad: Vec<(String, &str)> = vec![
        (String::new(), "does not start with"),
        ("subscriptions/x".into(), "does not start with"),
        (
            v.replace("resourceGroups", "resourceGroup"),
            "segment 3 is \"resourceGroup\"",
        ),
        (
            v.replace("providers", "provider"),
            "segment 5 is \"provider\"",
        ),
        (
            v.replace("Microsoft.DataProtection", "Microsoft.RecoveryServices"),
            "segment 6 is \"Microsoft.RecoveryServices\" where \"Microsoft.DataProtection\"",
        ),
        (
            v.replace("backupVaults", "vaults"),
            "segment 7 is \"vaults\" where \"backupVaults\"",
        ),
        (v.replace("/testBkpVault", ""), "the vault name is missing"),
        (v.replace("/testBkpVault", "/"), "the vault name is missing"),
        (
            v.replace(SUB, ""),
            "the subscription ID (segment 2, \"\") is empty",
        ),
        (
            v.replace("testBkpVault", "test Vault"),
            "contains whitespace",
        ),
        (v.replace("testBkpVault", "test?x=1"), "contains one of"),
        (
            format!("{v}/backupInstances/x"),
            "unexpected segments after the vault name: \"backupInstances/x\"",
        ),
    ];
    for (input, expected) in &bad {
        let err = VaultId::parse(input).expect_err(input);
        let text = err.to_string();
        assert!(text.contains(expected), "{input:?}: {text}");
        assert!(
            text.contains("expected /subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.DataProtection/backupVaults/{vaultName}"),
            "{text}"
        );
        assert_eq!(err.kind, "Backup vault");
        assert_eq!(&err.input, input);
    }
}

#[test]
fn policies_instances_and_accounts() {
    let v = vault_id();
    let policy = PolicyId::parse(&format!("{v}/BackupPolicies/BlobBackup-Policy")).unwrap();
    assert_eq!(policy.name(), "BlobBackup-Policy");
    assert_eq!(policy.vault(), &VaultId::parse(&v).unwrap());
    assert_eq!(
        policy.to_string(),
        format!("{v}/backupPolicies/BlobBackup-Policy")
    );
    assert_eq!(
        policy,
        VaultId::parse(&v).unwrap().policy("blobbackup-policy")
    );

    let instance =
        BackupInstanceId::parse(&format!("{v}/backupinstances/msblobbackup-f2df34eb")).unwrap();
    assert_eq!(instance.name(), "msblobbackup-f2df34eb");
    assert_eq!(instance.vault().name(), "testBkpVault");
    assert_eq!(
        instance,
        instance.vault().backup_instance("MSBLOBBACKUP-F2DF34EB")
    );

    // The article's account ID, with its lower-case `resourcegroups`.
    let account = StorageAccountId::parse(
        "/subscriptions/xxxxxxxx-xxxx-xxxx-xxxx/resourcegroups/RG-BlobBackup/providers/Microsoft.Storage/storageAccounts/msblobbackup",
    )
    .unwrap();
    assert_eq!(account.subscription(), "xxxxxxxx-xxxx-xxxx-xxxx");
    assert_eq!(account.resource_group(), "RG-BlobBackup");
    assert_eq!(account.name(), "msblobbackup");
    assert_eq!(
        account.to_string(),
        "/subscriptions/xxxxxxxx-xxxx-xxxx-xxxx/resourceGroups/RG-BlobBackup/providers/Microsoft.Storage/storageAccounts/msblobbackup"
    );

    // Wrong kinds are rejected with their own shape.
    let err = PolicyId::parse(&format!("{v}/backupInstances/x")).unwrap_err();
    assert!(
        err.to_string().contains("where \"backupPolicies\" belongs"),
        "{err}"
    );
    assert!(
        err.to_string().contains("/backupPolicies/{policyName}"),
        "{err}"
    );
    let err = BackupInstanceId::parse(&v).unwrap_err();
    assert!(
        err.to_string().contains("\"backupInstances\" is missing"),
        "{err}"
    );
    let err = StorageAccountId::parse(&v).unwrap_err();
    assert!(
        err.to_string()
            .contains("where \"Microsoft.Storage\" belongs"),
        "{err}"
    );
    assert!(
        err.to_string().contains("storageAccounts/{accountName}"),
        "{err}"
    );

    // FromStr and serde go through the same parser.
    let parsed: StorageAccountId = account.to_string().parse().unwrap();
    assert_eq!(parsed, account);
    let json = serde_json::to_string(&instance).unwrap();
    assert_eq!(
        serde_json::from_str::<BackupInstanceId>(&json).unwrap(),
        instance
    );
    assert!(serde_json::from_str::<BackupInstanceId>("\"/subscriptions/x\"").is_err());
}
