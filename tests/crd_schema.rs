//! The generated CRD: checked in and current, its patterns portable, and every bad spec
//! rejected by the schema (OpenAPI checks and CEL rules, run locally) and by `validate()`.

use blob_backup_operator::api::{
    BackupVaultGrant, BlobBackupInstance, BlobBackupInstanceSpec, crd_yaml, crd_yamls,
};
use kube::CustomResourceExt;
use kube::core::cel::Validator;
use regex::Regex;
use serde_json::{Value, json};

const VAULT: &str = "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/TestBkpVaultRG/providers/Microsoft.DataProtection/backupVaults/testBkpVault";
const OTHER_VAULT: &str = "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/TestBkpVaultRG/providers/Microsoft.DataProtection/backupVaults/otherVault";
const ACCOUNT: &str = "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/RG-BlobBackup/providers/Microsoft.Storage/storageAccounts/msblobbackup";

#[test]
fn checked_in_crd_is_current() {
    let generated = crd_yaml().expect("the CRD renders as YAML");
    let checked_in = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/crds/blobbackupinstances.yaml"
    ))
    .unwrap_or_default();
    assert!(
        generated == checked_in,
        "crds/blobbackupinstances.yaml is stale: regenerate it with \
         `cargo run -- crd > crds/blobbackupinstances.yaml` and commit it"
    );
    assert_eq!(generated, crd_yaml().unwrap(), "rendering is deterministic");
}

#[test]
fn every_checked_in_crd_is_current() {
    let crds = crd_yamls().expect("the CRDs render as YAML");
    let files = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/crds"))
        .expect("crds/")
        .count();
    assert_eq!(crds.len(), files, "one file in crds/ per CRD");
    for (plural, generated) in crds {
        let path = format!("{}/crds/{plural}.yaml", env!("CARGO_MANIFEST_DIR"));
        let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            generated == checked_in,
            "crds/{plural}.yaml is stale: regenerate it with \
             `cargo run -- crd {plural} > crds/{plural}.yaml` and commit it"
        );
    }
}

fn schema_of<K: CustomResourceExt>() -> Value {
    let crd = K::crd();
    let version = &crd.spec.versions[0];
    serde_json::to_value(&version.schema.as_ref().unwrap().open_api_v3_schema).unwrap()
}

fn schema() -> Value {
    schema_of::<BlobBackupInstance>()
}

fn grant_schema() -> Value {
    schema_of::<BackupVaultGrant>()
}

/// What the apiserver would say about creating the grant `object`.
fn grant_errors(object: &Value) -> Vec<String> {
    errors_against(&grant_schema(), object, None)
}

#[test]
fn the_grant_schema_refuses_a_malformed_vault_an_unknown_deletion_policy_and_no_namespaces() {
    let grant = |spec: Value| {
        json!({"apiVersion": "dataprotection.blobbackup.io/v1alpha1", "kind": "BackupVaultGrant",
               "metadata": {"name": "g"}, "spec": spec})
    };
    assert!(grant_errors(&grant(json!({"vaultId": VAULT, "namespaces": ["team-a"]}))).is_empty());
    assert!(
        grant_errors(&grant(json!({"vaultId": VAULT, "namespaceSelector": {}}))).is_empty(),
        "an empty selector matches every namespace"
    );
    let cases = [
        (
            json!({"vaultId": "/subscriptions/x/resourceGroups/rg/providers/Microsoft.DataProtection/backupVaults/v", "namespaces": ["a"]}),
            "spec.vaultId must look like",
        ),
        (
            json!({"vaultId": VAULT, "namespaces": ["a"], "deletionPolicies": ["Destroy"]}),
            "deletionPolicies",
        ),
        (json!({"vaultId": VAULT}), "spec.namespaceSelector"),
        (
            json!({"vaultId": VAULT, "namespaces": ["Team_A"]}),
            "namespaces",
        ),
        (
            json!({"vaultId": VAULT, "namespaceSelector": {"matchExpressions": [{"key": "k", "operator": "Like"}]}}),
            "operator",
        ),
    ];
    for (spec, expected) in cases {
        let errors = grant_errors(&grant(spec.clone()));
        assert!(
            errors.iter().any(|e| e.contains(expected)),
            "{spec}: {errors:?} lacks {expected:?}"
        );
    }
    let mut missing = Vec::new();
    let schema = grant_schema();
    undescribed(&schema["properties"]["spec"], "spec", &mut missing);
    undescribed(&schema["properties"]["status"], "status", &mut missing);
    assert!(
        missing.is_empty(),
        "grant fields without a description: {missing:?}"
    );
    let mut strings = Vec::new();
    status_strings(&schema["properties"]["status"], ".status", &mut strings);
    let unbounded: Vec<_> = strings.iter().filter(|(_, bounded)| !bounded).collect();
    assert!(unbounded.is_empty(), "no maxLength: {unbounded:?}");
    let crd = BackupVaultGrant::crd();
    assert_eq!(crd.spec.scope, "Cluster");
    assert_eq!(crd.spec.names.short_names, Some(vec!["bvg".to_owned()]));
    let columns: Vec<String> = crd.spec.versions[0]
        .additional_printer_columns
        .iter()
        .flatten()
        .map(|c| c.name.clone())
        .collect();
    assert_eq!(
        columns,
        ["Ready", "Vault", "Namespaces", "Adoption", "Age", "Message"]
    );
}

fn collect_patterns(schema: &Value, out: &mut Vec<String>) {
    match schema {
        Value::Object(map) => {
            if let Some(Value::String(p)) = map.get("pattern") {
                out.push(p.clone());
            }
            map.values().for_each(|v| collect_patterns(v, out));
        }
        Value::Array(items) => items.iter().for_each(|v| collect_patterns(v, out)),
        _ => {}
    }
}

#[test]
fn patterns_are_portable_between_ecma_re2_and_rust() {
    let mut patterns = Vec::new();
    collect_patterns(&schema(), &mut patterns);
    assert!(patterns.len() >= 7, "{patterns:?}");
    for p in patterns {
        Regex::new(&p).unwrap_or_else(|e| panic!("{p}: {e}"));
        // Flags, lookarounds and \w \d \s mean different things (or nothing) across engines.
        for construct in ["(?", r"\w", r"\d", r"\s", r"\b"] {
            assert!(!p.contains(construct), "{p} uses {construct}");
        }
        assert!(p.starts_with('^') && p.ends_with('$'), "{p} is anchored");
    }
}

/// The OpenAPI part of apiserver validation that a structural schema expresses: types,
/// required fields, enums, lengths, item counts, patterns and list-type set uniqueness.
fn openapi_errors(schema: &Value, value: &Value, path: &str, errors: &mut Vec<String>) {
    let want = schema.get("type").and_then(Value::as_str);
    let ok_type = match (want, value) {
        (Some("object"), Value::Object(_))
        | (Some("array"), Value::Array(_))
        | (Some("string"), Value::String(_))
        | (Some("boolean"), Value::Bool(_))
        | (None, _) => true,
        (Some("integer"), Value::Number(n)) => n.is_i64(),
        _ => false,
    };
    if !ok_type {
        errors.push(format!("{path}: must be of type {want:?}"));
        return;
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(value)
    {
        errors.push(format!("{path}: Unsupported value {value}"));
    }
    match value {
        Value::String(s) => {
            let len = s.chars().count() as u64;
            if let Some(max) = schema.get("maxLength").and_then(Value::as_u64)
                && len > max
            {
                errors.push(format!("{path}: Too long: may not be more than {max}"));
            }
            if let Some(min) = schema.get("minLength").and_then(Value::as_u64)
                && len < min
            {
                errors.push(format!(
                    "{path}: Invalid value: should be at least {min} chars"
                ));
            }
            if let Some(p) = schema.get("pattern").and_then(Value::as_str)
                && !Regex::new(p).unwrap().is_match(s)
            {
                errors.push(format!("{path}: Invalid value: should match '{p}'"));
            }
        }
        Value::Array(items) => {
            let n = items.len() as u64;
            if schema
                .get("maxItems")
                .and_then(Value::as_u64)
                .is_some_and(|m| n > m)
            {
                errors.push(format!("{path}: Too many: {n}"));
            }
            if schema
                .get("minItems")
                .and_then(Value::as_u64)
                .is_some_and(|m| n < m)
            {
                errors.push(format!("{path}: Too few: {n}"));
            }
            if schema.get("x-kubernetes-list-type").and_then(Value::as_str) == Some("set") {
                for (i, item) in items.iter().enumerate() {
                    if items[..i].contains(item) {
                        errors.push(format!("{path}[{i}]: Duplicate value: {item}"));
                    }
                }
            }
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    openapi_errors(item_schema, item, &format!("{path}[{i}]"), errors);
                }
            }
        }
        Value::Object(map) => {
            for required in schema
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let key = required.as_str().unwrap();
                if !map.contains_key(key) {
                    errors.push(format!("{path}.{key}: Required value"));
                }
            }
            if let Some(props) = schema.get("properties").and_then(Value::as_object) {
                for (key, v) in map {
                    if let Some(s) = props.get(key) {
                        openapi_errors(s, v, &format!("{path}.{key}"), errors);
                    }
                }
            }
        }
        _ => {}
    }
}

/// What the apiserver would say about creating `object` (or updating `old` to it): OpenAPI
/// errors first, then CEL rule failures, as one list of messages.
fn apiserver_errors(object: &Value, old: Option<&Value>) -> Vec<String> {
    errors_against(&schema(), object, old)
}

fn errors_against(schema: &Value, object: &Value, old: Option<&Value>) -> Vec<String> {
    let mut errors = Vec::new();
    openapi_errors(schema, object, "", &mut errors);
    if errors.is_empty()
        && let Err(cel) = Validator::new().validate(schema, object, old)
    {
        errors.extend(cel.iter().map(|e| e.to_string()));
    }
    errors
}

fn valid() -> Value {
    json!({
        "apiVersion": "dataprotection.blobbackup.io/v1alpha1",
        "kind": "BlobBackupInstance",
        "metadata": {"name": "msblobbackup", "namespace": "team-a"},
        "spec": {
            "vault": {"id": VAULT},
            "policy": {"name": "BlobBackup-Policy"},
            "storageAccount": {"id": ACCOUNT, "location": "westus"}
        }
    })
}

fn with(edit: impl FnOnce(&mut Value)) -> Value {
    let mut v = valid();
    edit(&mut v);
    v
}

/// `validate()`'s verdict: the field it names, or "serde" when the spec does not even parse.
fn controller_verdict(object: &Value) -> Result<(), String> {
    match serde_json::from_value::<BlobBackupInstanceSpec>(object["spec"].clone()) {
        Err(_) => Err("serde".into()),
        Ok(spec) => spec.validate().map(|_| ()).map_err(|e| {
            assert!(e.to_string().starts_with(e.field), "{e}");
            e.field.to_string()
        }),
    }
}

#[test]
fn valid_specs_pass_schema_and_controller() {
    let rows = [
        ("operational, policy by name", valid()),
        (
            "policy by id of the same vault",
            with(|v| {
                v["spec"]["policy"] =
                    json!({"id": format!("{VAULT}/backupPolicies/BlobVaulted-Policy")})
            }),
        ),
        (
            "policy id with other casing",
            with(|v| {
                v["spec"]["policy"] =
                    json!({"id": format!("{}/BACKUPPOLICIES/p1", VAULT.to_lowercase())})
            }),
        ),
        (
            "lowercase ARM segments as az prints them",
            with(|v| {
                v["spec"]["vault"]["id"] = json!(
                    VAULT
                        .replace("resourceGroups", "resourcegroups")
                        .replace("backupVaults", "backupvaults")
                );
                v["spec"]["storageAccount"]["id"] =
                    json!(ACCOUNT.replace("Microsoft.Storage", "microsoft.storage"));
            }),
        ),
        (
            "vaulted with Retain",
            with(|v| {
                v["spec"]["vaultedBackup"] = json!({"containers": ["images", "logs-2024"]});
                v["spec"]["deletionPolicy"] = json!("Retain");
            }),
        ),
        (
            "Orphan",
            with(|v| v["spec"]["deletionPolicy"] = json!("Orphan")),
        ),
        (
            "explicit instance name",
            with(|v| v["spec"]["backupInstanceName"] = json!("msblobbackup-msblobbackup-1")),
        ),
        (
            "100 containers",
            with(|v| {
                v["spec"]["vaultedBackup"] =
                    json!({"containers": (0..100).map(|i| format!("c{i:03}")).collect::<Vec<_>>()})
            }),
        ),
    ];
    for (name, object) in rows {
        assert_eq!(
            apiserver_errors(&object, None),
            Vec::<String>::new(),
            "{name}"
        );
        assert_eq!(controller_verdict(&object), Ok(()), "{name}");
    }
}

#[test]
fn bad_specs_are_rejected_by_schema_and_controller() {
    let long = "a".repeat(500);
    // (name, object, text the apiserver's errors contain, field validate() names)
    let rows: Vec<(&str, Value, &str, &str)> = vec![
        (
            "vault id without provider",
            with(|v| {
                v["spec"]["vault"]["id"] = json!(
                    "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg/backupVaults/v"
                )
            }),
            ".spec.vault.id: Invalid value",
            "spec.vault.id",
        ),
        (
            "vault id with a non-uuid subscription",
            with(|v| {
                v["spec"]["vault"]["id"] =
                    json!(VAULT.replace("00000000-0000-0000-0000-000000000000", "my-sub"))
            }),
            "spec.vault.id must look like /subscriptions/<uuid>/resourceGroups/<group>/providers/Microsoft.DataProtection/backupVaults/<vault>",
            "spec.vault.id",
        ),
        (
            "vault id with a '.' resource group",
            with(|v| {
                v["spec"]["vault"]["id"] =
                    json!(VAULT.replace("/resourceGroups/TestBkpVaultRG/", "/resourceGroups/./"))
            }),
            "spec.vault.id must look like /subscriptions/<uuid>/resourceGroups/<group>/providers/Microsoft.DataProtection/backupVaults/<vault>",
            "spec.vault.id",
        ),
        (
            "account id with a '..' resource group",
            with(|v| {
                v["spec"]["storageAccount"]["id"] =
                    json!(ACCOUNT.replace("/resourceGroups/RG-BlobBackup/", "/resourceGroups/../"))
            }),
            "spec.storageAccount.id must look like /subscriptions/<uuid>/resourceGroups/<group>/providers/Microsoft.Storage/storageAccounts/<account>",
            "spec.storageAccount.id",
        ),
        (
            "policy id with a resource group ending in '.'",
            with(|v| {
                v["spec"]["policy"] = json!({"id": format!(
                    "{}/backupPolicies/p",
                    VAULT.replace("/resourceGroups/TestBkpVaultRG/", "/resourceGroups/rg./")
                )});
                v["spec"]["vault"]["id"] =
                    json!(VAULT.replace("/resourceGroups/TestBkpVaultRG/", "/resourceGroups/rg./"));
            }),
            "spec.vault.id must look like /subscriptions/<uuid>/resourceGroups/<group>/providers/Microsoft.DataProtection/backupVaults/<vault>",
            "spec.vault.id",
        ),
        (
            "vault id with a trailing slash",
            with(|v| v["spec"]["vault"]["id"] = json!(format!("{VAULT}/"))),
            ".spec.vault.id: Invalid value",
            "spec.vault.id",
        ),
        (
            "vault id naming a storage account",
            with(|v| v["spec"]["vault"]["id"] = json!(ACCOUNT)),
            "spec.vault.id must look like /subscriptions/<uuid>/resourceGroups/<group>/providers/Microsoft.DataProtection/backupVaults/<vault>",
            "spec.vault.id",
        ),
        (
            "huge vault id",
            with(|v| v["spec"]["vault"]["id"] = json!(format!("{VAULT}{long}"))),
            ".spec.vault.id: Too long",
            "spec.vault.id",
        ),
        (
            "storage account id naming a vault",
            with(|v| v["spec"]["storageAccount"]["id"] = json!(VAULT)),
            "spec.storageAccount.id must look like /subscriptions/<uuid>/resourceGroups/<group>/providers/Microsoft.Storage/storageAccounts/<account>",
            "spec.storageAccount.id",
        ),
        (
            "storage account name with capitals",
            with(|v| {
                v["spec"]["storageAccount"]["id"] =
                    json!(ACCOUNT.replace("msblobbackup", "MsBlobBackup"))
            }),
            "spec.storageAccount.id must look like /subscriptions/<uuid>/resourceGroups/<group>/providers/Microsoft.Storage/storageAccounts/<account>",
            "spec.storageAccount.id",
        ),
        (
            "location with a space",
            with(|v| v["spec"]["storageAccount"]["location"] = json!("West US")),
            ".spec.storageAccount.location: Invalid value",
            "spec.storageAccount.location",
        ),
        (
            "missing location",
            with(|v| {
                v["spec"]["storageAccount"]
                    .as_object_mut()
                    .unwrap()
                    .remove("location");
            }),
            ".spec.storageAccount.location: Required value",
            "serde",
        ),
        (
            "policy in another vault",
            with(|v| {
                v["spec"]["policy"] = json!({"id": format!("{OTHER_VAULT}/backupPolicies/p")})
            }),
            "spec.policy.id must be a backup policy of spec.vault.id",
            "spec.policy.id",
        ),
        (
            "malformed policy id",
            with(|v| v["spec"]["policy"] = json!({"id": format!("{VAULT}/policies/p")})),
            "spec.policy.id must look like <spec.vault.id>/backupPolicies/<policy>",
            "spec.policy.id",
        ),
        (
            "both policy name and id",
            with(|v| {
                v["spec"]["policy"] =
                    json!({"name": "p", "id": format!("{VAULT}/backupPolicies/p")})
            }),
            "set exactly one of spec.policy.name and spec.policy.id",
            "spec.policy",
        ),
        (
            "neither policy name nor id",
            with(|v| v["spec"]["policy"] = json!({})),
            "set exactly one of spec.policy.name and spec.policy.id",
            "spec.policy",
        ),
        (
            "policy name with a slash",
            with(|v| v["spec"]["policy"]["name"] = json!("a/b")),
            ".spec.policy.name: Invalid value",
            "spec.policy.name",
        ),
        (
            "huge policy name",
            with(|v| v["spec"]["policy"]["name"] = json!(long)),
            ".spec.policy.name: Too long",
            "spec.policy.name",
        ),
        (
            "unknown deletion policy",
            with(|v| v["spec"]["deletionPolicy"] = json!("Keep")),
            ".spec.deletionPolicy: Unsupported value",
            "serde",
        ),
        (
            "Retain without vaultedBackup",
            with(|v| v["spec"]["deletionPolicy"] = json!("Retain")),
            "use Delete (stop protection and delete the backup data) or Orphan",
            "spec.deletionPolicy",
        ),
        (
            "huge instance name",
            with(|v| v["spec"]["backupInstanceName"] = json!("a".repeat(101))),
            ".spec.backupInstanceName: Too long",
            "spec.backupInstanceName",
        ),
        (
            "instance name with a slash",
            with(|v| v["spec"]["backupInstanceName"] = json!("../x")),
            ".spec.backupInstanceName: Invalid value",
            "spec.backupInstanceName",
        ),
        (
            "empty containers",
            with(|v| v["spec"]["vaultedBackup"] = json!({"containers": []})),
            ".spec.vaultedBackup.containers: Too few",
            "spec.vaultedBackup.containers",
        ),
        (
            "101 containers",
            with(|v| {
                v["spec"]["vaultedBackup"] =
                    json!({"containers": (0..101).map(|i| format!("c{i:03}")).collect::<Vec<_>>()})
            }),
            ".spec.vaultedBackup.containers: Too many",
            "spec.vaultedBackup.containers",
        ),
        (
            "container with capitals",
            with(|v| v["spec"]["vaultedBackup"] = json!({"containers": ["Images"]})),
            ".spec.vaultedBackup.containers[0]: Invalid value",
            "spec.vaultedBackup.containers",
        ),
        (
            "container with a double hyphen",
            with(|v| v["spec"]["vaultedBackup"] = json!({"containers": ["a--b"]})),
            ".spec.vaultedBackup.containers[0]: Invalid value",
            "spec.vaultedBackup.containers",
        ),
        (
            "container too short",
            with(|v| v["spec"]["vaultedBackup"] = json!({"containers": ["ab"]})),
            "should be at least 3 chars",
            "spec.vaultedBackup.containers",
        ),
        (
            "container listed twice",
            with(|v| v["spec"]["vaultedBackup"] = json!({"containers": ["logs", "logs"]})),
            "Duplicate value",
            "spec.vaultedBackup.containers",
        ),
        (
            "missing vault",
            with(|v| {
                v["spec"].as_object_mut().unwrap().remove("vault");
            }),
            ".spec.vault: Required value",
            "serde",
        ),
    ];
    for (name, object, apiserver_says, field) in rows {
        let errors = apiserver_errors(&object, None);
        // A person reads these: no error quotes a long regular expression.
        for error in &errors {
            assert!(
                error.len() <= 300 && !error.contains("[Ss]"),
                "{name}: {error}"
            );
        }
        assert!(
            errors.iter().any(|e| e.contains(apiserver_says)),
            "{name}: expected an apiserver error containing {apiserver_says:?}, got {errors:?}"
        );
        assert_eq!(
            controller_verdict(&object),
            Err(field.to_string()),
            "{name}"
        );
        // Servers without CEL leave it to the controller, whose InvalidSpec says the same.
        if apiserver_says.contains("must look like") {
            assert!(controller_text(&object).contains(apiserver_says), "{name}");
        }
    }
}

/// `validate()`'s error text for an invalid spec.
fn controller_text(object: &Value) -> String {
    let spec: BlobBackupInstanceSpec = serde_json::from_value(object["spec"].clone()).unwrap();
    spec.validate().unwrap_err().to_string()
}

#[test]
fn container_errors_name_the_item() {
    let rows = [
        (vec!["images", "Logs"], r#"item 1 ("Logs") is malformed"#),
        (vec!["images", "ab"], r#"item 1 ("ab") has 2 characters"#),
        (
            vec!["logs", "images", "logs"],
            r#"items 0 and 2 are both "logs""#,
        ),
    ];
    for (containers, says) in rows {
        let object = with(|v| v["spec"]["vaultedBackup"] = json!({"containers": containers}));
        let text = controller_text(&object);
        assert!(
            text.starts_with("spec.vaultedBackup.containers: ") && text.contains(says),
            "{text}"
        );
    }
}

#[test]
fn transition_rules_keep_identity_fields_immutable() {
    let status_named =
        |v: &mut Value, name: &str| v["status"] = json!({"backupInstanceName": name});
    // (name, old, new, text of the expected error or None when the update is allowed)
    let rows: Vec<(&str, Value, Value, Option<&str>)> = vec![
        (
            "vault changes",
            valid(),
            with(|v| v["spec"]["vault"]["id"] = json!(OTHER_VAULT)),
            Some("spec.vault.id is immutable"),
        ),
        (
            "account changes",
            valid(),
            with(|v| {
                v["spec"]["storageAccount"]["id"] =
                    json!(ACCOUNT.replace("msblobbackup", "otheraccount"))
            }),
            Some("spec.storageAccount.id is immutable"),
        ),
        (
            "policy changes",
            valid(),
            with(|v| v["spec"]["policy"]["name"] = json!("BlobVaulted-Policy")),
            None,
        ),
        (
            "containers change",
            with(|v| v["spec"]["vaultedBackup"] = json!({"containers": ["a01"]})),
            with(|v| v["spec"]["vaultedBackup"] = json!({"containers": ["a01", "b02"]})),
            None,
        ),
        (
            "instance name set later, nothing created",
            valid(),
            with(|v| v["spec"]["backupInstanceName"] = json!("mine")),
            None,
        ),
        (
            "instance name changed",
            with(|v| v["spec"]["backupInstanceName"] = json!("mine")),
            with(|v| v["spec"]["backupInstanceName"] = json!("yours")),
            Some("spec.backupInstanceName is immutable once set"),
        ),
        (
            "instance name removed",
            with(|v| v["spec"]["backupInstanceName"] = json!("mine")),
            valid(),
            Some("spec.backupInstanceName is immutable once set"),
        ),
        (
            // The controller refuses it (InvalidSpec) and keeps the recorded name: a rule
            // reading the status would also judge every status write.
            "instance name set unlike the defaulted one in status",
            with(|v| status_named(v, "msblobbackup-uid")),
            with(|v| {
                status_named(v, "msblobbackup-uid");
                v["spec"]["backupInstanceName"] = json!("mine");
            }),
            None,
        ),
        (
            // A status written from an older snapshot raced a spec edit: the stored spec names
            // another instance than the status. Later status writes must still pass, or the
            // controller can never record anything again.
            "status-only write under a spec that differs from the status",
            with(|v| {
                status_named(v, "msblobbackup-uid");
                v["spec"]["backupInstanceName"] = json!("mine");
            }),
            with(|v| {
                status_named(v, "msblobbackup-uid");
                v["spec"]["backupInstanceName"] = json!("mine");
                v["status"]["protectionStatus"] = json!("ProtectionConfigured");
            }),
            None,
        ),
        (
            "instance name set to the defaulted one in status",
            with(|v| status_named(v, "msblobbackup-uid")),
            with(|v| {
                status_named(v, "msblobbackup-uid");
                v["spec"]["backupInstanceName"] = json!("msblobbackup-uid");
            }),
            None,
        ),
        (
            "status records the name for the first time",
            valid(),
            with(|v| status_named(v, "msblobbackup-uid")),
            None,
        ),
    ];
    for (name, old, new, expected) in rows {
        let errors = apiserver_errors(&new, Some(&old));
        match expected {
            None => assert_eq!(errors, Vec::<String>::new(), "{name}"),
            Some(text) => assert!(
                errors.iter().any(|e| e.contains(text)),
                "{name}: {errors:?}"
            ),
        }
    }
}

#[test]
fn defaulted_instance_name_is_account_and_uid() {
    let spec: BlobBackupInstanceSpec = serde_json::from_value(valid()["spec"].clone()).unwrap();
    let validated = spec.validate().unwrap();
    assert_eq!(
        validated.backup_instance_name("f2df34eb"),
        "msblobbackup-f2df34eb"
    );
    assert_eq!(
        validated.backup_instance_id("f2df34eb").to_string(),
        format!("{VAULT}/backupInstances/msblobbackup-f2df34eb")
    );
    assert_eq!(
        validated.policy.to_string(),
        format!("{VAULT}/backupPolicies/BlobBackup-Policy")
    );
}

/// Every string in the status schema, with its path, and whether it has a maxLength.
fn status_strings(schema: &Value, path: &str, out: &mut Vec<(String, bool)>) {
    if schema.get("type").and_then(Value::as_str) == Some("string") && schema.get("enum").is_none()
    {
        out.push((path.to_owned(), schema.get("maxLength").is_some()));
    }
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        for (key, s) in props {
            status_strings(s, &format!("{path}.{key}"), out);
        }
    }
    if let Some(items) = schema.get("items") {
        status_strings(items, &format!("{path}[]"), out);
    }
}

/// Paths of object properties under `schema` without a description.
fn undescribed(schema: &Value, path: &str, out: &mut Vec<String>) {
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        for (key, property) in props {
            let path = format!("{path}.{key}");
            if property
                .get("description")
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
            {
                out.push(path.clone());
            }
            undescribed(property, &path, out);
        }
    }
    if let Some(items) = schema.get("items") {
        undescribed(items, &format!("{path}[]"), out);
    }
}

#[test]
fn every_status_string_has_a_max_length_the_controller_keeps_to() {
    let mut strings = Vec::new();
    status_strings(&schema()["properties"]["status"], ".status", &mut strings);
    assert!(strings.len() >= 15, "{strings:?}");
    let unbounded: Vec<_> = strings.iter().filter(|(_, bounded)| !bounded).collect();
    assert!(unbounded.is_empty(), "no maxLength: {unbounded:?}");

    // Azure's answers are recorded verbatim: however long, the written status fits.
    let huge = "é".repeat(40_000);
    let mut status: blob_backup_operator::api::BlobBackupInstanceStatus =
        serde_json::from_value(json!({
            "backupInstanceName": huge, "backupInstanceId": huge,
            "protectionStatus": huge, "protectionState": huge, "provisioningState": huge,
            "operation": {"action": "Create", "status": "Failed", "pollUrl": huge,
                "startTime": "2026-01-01T00:00:00Z",
                "error": {"code": huge, "message": huge,
                          "recommendedActions": vec![huge.clone(); 40]}},
            "conditions": [{"type": huge, "status": "True", "reason": huge, "message": huge,
                            "lastTransitionTime": "2026-01-01T00:00:00Z"}]
        }))
        .unwrap();
    let object = with(|v| v["status"] = serde_json::to_value(&status).unwrap());
    assert!(
        apiserver_errors(&object, None).len() >= 10,
        "the huge status is refused before fitting"
    );
    status.fit_to_schema();
    let object = with(|v| v["status"] = serde_json::to_value(&status).unwrap());
    assert_eq!(apiserver_errors(&object, None), Vec::<String>::new());
}

/// The API server writes the default into every new resource, so `kubectl get -o yaml` and
/// `kubectl describe` show `Deletion Policy: Delete` even when the manifest leaves it out; and
/// `kubectl explain` warns that every way of deleting applies it.
#[test]
fn deletion_policy_defaults_to_delete_in_the_schema_and_explains_itself() {
    let policy = &schema()["properties"]["spec"]["properties"]["deletionPolicy"];
    assert_eq!(policy["default"], "Delete");
    let description = policy["description"].as_str().expect("description");
    for needle in ["namespace", "prune", "`Orphan`"] {
        assert!(
            description.contains(needle),
            "{needle:?} not in {description}"
        );
    }
}

#[test]
fn kubectl_explain_describes_every_field() {
    let schema = schema();
    let mut missing = Vec::new();
    undescribed(&schema["properties"]["spec"], "spec", &mut missing);
    undescribed(&schema["properties"]["status"], "status", &mut missing);
    assert!(
        missing.is_empty(),
        "fields without a description: {missing:?}"
    );
    for part in ["spec", "status"] {
        assert!(
            schema["properties"][part]["description"].is_string(),
            "{part}"
        );
    }
}

#[test]
fn printer_columns_are_short_and_say_different_things() {
    let crd = BlobBackupInstance::crd();
    let columns = crd.spec.versions[0]
        .additional_printer_columns
        .clone()
        .unwrap_or_default();
    let named = |name: &str| {
        columns
            .iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("no {name} column"))
    };
    for (name, path) in [
        ("Vault", ".status.vaultName"),
        ("Account", ".status.storageAccountName"),
        ("Policy", ".status.policyName"),
        ("Deletion", ".spec.deletionPolicy"),
        ("Operation", ".status.currentOperation"),
    ] {
        assert_eq!(named(name).json_path, path);
        assert_eq!(named(name).priority, None, "{name} shows without -o wide");
    }
    // No column prints a whole ARM ID, and Reason and Protection are not side by side.
    assert!(columns.iter().all(|c| !c.json_path.ends_with(".id")));
    assert_eq!(named("Protection").priority, Some(1));
}
