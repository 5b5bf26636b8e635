//! The BlobRestore CRD: checked in and current, its CEL rules (exactly one point, a target
//! only for vaulted restores, no prefixes into another account, an immutable spec), the
//! controller's own checks of what the schema cannot judge, and the examples.

use std::path::PathBuf;

use blob_backup_operator::api::{BlobRestore, RestorePointSpec, crd_yaml_of};
use kube::CustomResourceExt;
use kube::core::cel::Validator;
use serde_json::{Value, json};

const ACCOUNT: &str = "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/RG-BlobBackup/providers/Microsoft.Storage/storageAccounts/restoredblobs";

#[test]
fn checked_in_crd_is_current() {
    let checked_in = include_str!("../crds/blobrestores.yaml");
    assert!(
        crd_yaml_of::<BlobRestore>().expect("the CRD renders as YAML") == checked_in,
        "crds/blobrestores.yaml is stale: regenerate it with \
         `cargo run -- crd blobrestores > crds/blobrestores.yaml` and commit it"
    );
    let crd = BlobRestore::crd();
    assert_eq!(crd.spec.names.short_names, Some(vec!["bbr".to_string()]));
    assert_eq!(
        crd.spec.names.categories,
        Some(vec!["azure".to_string(), "backup".to_string()])
    );
    let columns: Vec<String> = crd.spec.versions[0]
        .additional_printer_columns
        .iter()
        .flatten()
        .filter(|c| c.priority.unwrap_or(0) == 0)
        .map(|c| c.name.clone())
        .collect();
    assert_eq!(columns, ["Phase", "Source", "Point", "Age"]);
}

fn schema() -> Value {
    let crd = BlobRestore::crd();
    serde_json::to_value(
        &crd.spec.versions[0]
            .schema
            .as_ref()
            .unwrap()
            .open_api_v3_schema,
    )
    .unwrap()
}

fn object(spec: Value) -> Value {
    json!({
        "apiVersion": "dataprotection.blobbackup.io/v1alpha1",
        "kind": "BlobRestore",
        "metadata": {"name": "r", "namespace": "team-a"},
        "spec": spec,
    })
}

fn cel_errors(new: &Value, old: Option<&Value>) -> Vec<String> {
    match Validator::new().validate(&schema(), new, old) {
        Ok(()) => Vec::new(),
        Err(errors) => errors.iter().map(|e| e.to_string()).collect(),
    }
}

#[test]
fn cel_rules_refuse_what_azure_would() {
    let source = json!({"name": "msblobbackup"});
    let target = json!({"id": ACCOUNT, "location": "westus"});
    // (case, spec, the text of the expected error or None when accepted)
    let rows = [
        (
            "a point in time",
            json!({"backupInstanceRef": source, "pointInTime": "2026-12-01T10:00:00Z"}),
            None,
        ),
        (
            "latest elsewhere",
            json!({"backupInstanceRef": source, "recoveryPoint": "latest", "containers": ["images"], "targetStorageAccount": target}),
            None,
        ),
        (
            "neither",
            json!({"backupInstanceRef": source}),
            Some("set exactly one of spec.pointInTime"),
        ),
        (
            "both",
            json!({"backupInstanceRef": source, "pointInTime": "2026-12-01T10:00:00Z", "recoveryPoint": "latest"}),
            Some("set exactly one of spec.pointInTime"),
        ),
        (
            "elsewhere from a point in time",
            json!({"backupInstanceRef": source, "pointInTime": "2026-12-01T10:00:00Z", "targetStorageAccount": target}),
            Some("spec.targetStorageAccount needs spec.recoveryPoint"),
        ),
        (
            "prefixes elsewhere",
            json!({"backupInstanceRef": source, "recoveryPoint": "latest", "prefixes": ["images/a"], "targetStorageAccount": target}),
            Some("spec.prefixes cannot be restored into another account"),
        ),
        (
            "a malformed target",
            json!({"backupInstanceRef": source, "recoveryPoint": "latest", "targetStorageAccount": {"id": "/subscriptions/x", "location": "westus"}}),
            Some("spec.targetStorageAccount.id must look like"),
        ),
    ];
    for (case, spec, expected) in rows {
        let errors = cel_errors(&object(spec.clone()), None);
        match expected {
            None => assert!(errors.is_empty(), "{case}: {errors:?}"),
            Some(text) => assert!(
                errors.iter().any(|e| e.contains(text)),
                "{case}: {errors:?}"
            ),
        }
        // What the schema lets through, the controller judges the same way.
        if let Ok(spec) = serde_json::from_value::<blob_backup_operator::api::BlobRestoreSpec>(spec)
        {
            let verdict = spec.validate("2026-12-03T00:00:00Z".parse().unwrap());
            assert_eq!(verdict.is_ok(), expected.is_none(), "{case}: {verdict:?}");
        }
    }
}

#[test]
fn the_spec_is_immutable() {
    let old =
        object(json!({"backupInstanceRef": {"name": "a"}, "pointInTime": "2026-12-01T10:00:00Z"}));
    for edit in [
        json!({"backupInstanceRef": {"name": "b"}, "pointInTime": "2026-12-01T10:00:00Z"}),
        json!({"backupInstanceRef": {"name": "a"}, "pointInTime": "2026-12-01T11:00:00Z"}),
        json!({"backupInstanceRef": {"name": "a"}, "pointInTime": "2026-12-01T10:00:00Z", "containers": ["images"]}),
    ] {
        let errors = cel_errors(&object(edit.clone()), Some(&old));
        assert!(
            errors
                .iter()
                .any(|e| e.contains("the spec of a BlobRestore is immutable")),
            "{edit}: {errors:?}"
        );
    }
    // A status write keeps the spec: allowed.
    let mut with_status = old.clone();
    with_status["status"] = json!({"phase": "Pending"});
    assert!(cel_errors(&with_status, Some(&old)).is_empty());
}

#[test]
fn a_point_in_the_future_or_not_a_time_names_the_field() {
    let spec = |point: &str| -> blob_backup_operator::api::BlobRestoreSpec {
        serde_json::from_value(json!({"backupInstanceRef": {"name": "a"}, "pointInTime": point}))
            .unwrap()
    };
    let now = "2026-12-03T00:00:00Z".parse().unwrap();
    for point in ["2026-12-03T00:00:01Z", "yesterday", "2026-13-01T00:00:00Z"] {
        let error = spec(point).validate(now).unwrap_err();
        assert_eq!(error.field, "spec.pointInTime", "{point}: {error}");
    }
    let ok = spec("2026-12-02T23:59:59+01:00").validate(now).unwrap();
    assert_eq!(
        ok.point,
        RestorePointSpec::PointInTime("2026-12-02T22:59:59Z".parse().unwrap())
    );
}

#[test]
fn the_examples_are_valid_restores_of_the_backup_examples() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("deploy/examples/restore");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("deploy/examples/restore exists")
        .map(|entry| entry.unwrap().path())
        .collect();
    files.sort();
    let names: Vec<String> = files
        .iter()
        .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["operational.yaml", "vaulted.yaml"]);
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let restore: BlobRestore = serde_saphyr::from_str(&text).unwrap();
        let value = serde_json::to_value(&restore).unwrap();
        assert!(cel_errors(&value, None).is_empty(), "{file:?}");
        let spec = restore.spec.validate(jiff::Timestamp::now()).unwrap();
        let source = &restore.spec.backup_instance_ref.name;
        match file.file_name().unwrap().to_str().unwrap() {
            "operational.yaml" => {
                assert!(matches!(spec.point, RestorePointSpec::PointInTime(_)));
                assert_eq!(source, "msblobbackup");
            }
            _ => {
                assert_eq!(spec.point, RestorePointSpec::Latest);
                assert!(spec.target.is_some());
                assert_eq!(source, "msblobbackup-vaulted");
            }
        }
        // The source is one of the backup examples.
        let backups = std::fs::read_to_string(dir.join("..").join(match source.as_str() {
            "msblobbackup" => "msblobbackup.yaml",
            _ => "vaulted.yaml",
        }))
        .unwrap();
        assert!(backups.contains(&format!("name: {source}\n")), "{source}");
    }
}

/// An enum listing null (schemars' spelling of an optional enum) is a schema the apiserver
/// refuses to install (v1.19 answers "per-version schemas may not all be set to identical
/// values"): none may have one.
#[test]
fn no_enum_lists_null() {
    fn walk(value: &Value, path: &str, out: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                if map
                    .get("enum")
                    .and_then(Value::as_array)
                    .is_some_and(|values| values.contains(&Value::Null))
                {
                    out.push(path.to_owned());
                }
                for (key, inner) in map {
                    walk(inner, &format!("{path}/{key}"), out);
                }
            }
            Value::Array(items) => items.iter().for_each(|i| walk(i, path, out)),
            _ => {}
        }
    }
    let mut found = Vec::new();
    walk(&schema(), "", &mut found);
    assert!(found.is_empty(), "enums with null: {found:?}");
}
