//! Contract tests against the official examples (2026-06-01 and 2021-01-01) and the article's
//! transcripts, copied under tests/fixtures/azure/.
//!
//! - every example response of the operations the client uses deserialises;
//! - every request body the client builds has the same structure as the example request for
//!   the same operation (keys and JSON types, recursively; values ignored), except for the
//!   differences listed and explained in each test;
//! - the article's error and operation status bodies become the right errors and states.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use dataprotection::{
    ArmError, AzureErrorDetail, BackupInstance, BackupInstanceResource, BackupInstanceResourceList,
    CloudError, ErrorClass, OperationHandle, OperationJobExtendedInfo, OperationResource,
    OperationStatus, PROPERTY_NAMES, PolicyId, StorageAccountId, ValidateForBackupRequest,
};
use dataprotection::{
    BlobRestoreTarget, FindRestorableTimeRangesRequest, FindRestorableTimeRangesResponseResource,
    JobResource, JobState, RestoreCriteria, RestoreRequest, RestoreSource, ValidateRestoreRequest,
};
use http::HeaderMap;
use serde_json::{Value, json};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/azure")
}

fn fixture(relative: &str) -> Value {
    let path = fixtures().join(relative);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path:?}: {e}"))
}

/// Every example file of an api-version, relative to tests/fixtures/azure.
fn examples(version: &str) -> Vec<String> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "json") {
                out.push(path);
            }
        }
    }
    let mut files = Vec::new();
    walk(&fixtures().join(version), &mut files);
    let mut names: Vec<String> = files
        .iter()
        .map(|p| {
            p.strip_prefix(fixtures())
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    names
}

fn headers(value: &Value) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, v) in value.as_object().into_iter().flatten() {
        map.insert(
            http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            v.as_str().unwrap().parse().unwrap(),
        );
    }
    map
}

/// Checks one example file's responses with the parser its operation uses; returns how many
/// response bodies or header sets were checked.
fn check_example_responses(file: &str) -> usize {
    let example = fixture(file);
    let name = Path::new(file)
        .file_stem()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let mut checked = 0;
    for (code, response) in example["responses"].as_object().unwrap() {
        let body = response.get("body").cloned();
        let parse = |body: Value| -> Result<(), serde_json::Error> {
            match name.as_str() {
                n if n.starts_with("PutBackupInstance")
                    || n.starts_with("GetBackupInstance_")
                    || n == "GetBackupInstance"
                    || n == "GetBackupInstanceOperationResult" =>
                {
                    let resource: BackupInstanceResource = PROPERTY_NAMES.from_value(body)?;
                    let properties = resource.properties.as_ref().expect("properties");
                    assert!(
                        !properties.data_source_info.resource_id.is_empty(),
                        "{file}"
                    );
                    assert!(!properties.policy_info.policy_id.is_empty(), "{file}");
                    assert!(resource.protection_status().is_some(), "{file}");
                }
                n if n.starts_with("ListBackupInstances") => {
                    let list: BackupInstanceResourceList = PROPERTY_NAMES.from_value(body)?;
                    assert!(!list.value.is_empty(), "{file}");
                }
                n if n.starts_with("GetOperationStatus") => {
                    let status: OperationResource = PROPERTY_NAMES.from_value(body)?;
                    assert_eq!(
                        OperationStatus::from_operation_resource(&status),
                        Some(OperationStatus::Succeeded),
                        "{file}"
                    );
                }
                "ValidateForBackup" | "GetOperationResult" | "ValidateRestore"
                | "TriggerRestore" => {
                    let info: OperationJobExtendedInfo = PROPERTY_NAMES.from_value(body)?;
                    assert!(info.job_id.is_some(), "{file}");
                }
                "GetJob" => {
                    let job: JobResource = PROPERTY_NAMES.from_value(body)?;
                    let properties = job.properties.expect("properties");
                    // "Started" is not in the documented list: an open set, still running.
                    assert_eq!(
                        properties.state(),
                        JobState::Running {
                            raw: "Started".into()
                        },
                        "{file}"
                    );
                }
                // DELETE and stopProtection answer 200/204 with `{}` or nothing.
                "DeleteBackupInstance" | "StopProtection" => {
                    assert_eq!(body, json!({}), "{file}");
                }
                other => panic!("no parser for example {other}"),
            }
            Ok(())
        };
        if let Some(body) = body {
            parse(body).unwrap_or_else(|e| panic!("{file} {code}: {e}"));
            checked += 1;
        }
        if let Some(h) = response.get("headers") {
            let handle = OperationHandle::from_headers(&headers(h), SystemTime::now())
                .unwrap_or_else(|| panic!("{file} {code}: no poll URL"));
            // Azure-AsyncOperation wins over Location, and is kept verbatim.
            assert_eq!(
                handle.poll_url,
                h["Azure-AsyncOperation"].as_str().unwrap(),
                "{file} {code}"
            );
            let seconds: u64 = h["Retry-After"].as_str().unwrap().parse().unwrap();
            assert_eq!(
                handle.retry_after,
                Some(Duration::from_secs(seconds)),
                "{file}"
            );
            checked += 1;
        }
    }
    checked
}

#[test]
fn every_official_example_response_we_use_deserialises() {
    for version in ["2026-06-01", "2021-01-01"] {
        let files = examples(version);
        assert!(files.len() >= 7, "{version}: {files:?}");
        let checked: usize = files.iter().map(|f| check_example_responses(f)).sum();
        assert!(
            checked >= files.len(),
            "{version}: {checked} responses checked"
        );
    }
}

/// The differences in structure between two JSON documents: `+path` only in `ours`, `-path`
/// only in `theirs`, `~path` a different JSON type. Values are ignored; arrays are compared
/// by their first elements. Keys compare exactly, or ignoring case.
fn shape_diff(ours: &Value, theirs: &Value, ignore_case: bool) -> BTreeSet<String> {
    fn kind(v: &Value) -> &'static str {
        match v {
            Value::Null => "null",
            Value::Bool(_) => "bool",
            Value::Number(_) => "number",
            Value::String(_) => "string",
            Value::Array(_) => "array",
            Value::Object(_) => "object",
        }
    }
    fn walk(a: &Value, b: &Value, path: &str, ignore_case: bool, out: &mut BTreeSet<String>) {
        match (a, b) {
            (Value::Object(a), Value::Object(b)) => {
                let find = |map: &serde_json::Map<String, Value>, key: &str| {
                    map.iter()
                        .find(|(k, _)| {
                            if ignore_case {
                                k.eq_ignore_ascii_case(key)
                            } else {
                                k.as_str() == key
                            }
                        })
                        .map(|(_, v)| v.clone())
                };
                for (key, value) in a {
                    match find(b, key) {
                        Some(other) => {
                            walk(value, &other, &format!("{path}/{key}"), ignore_case, out)
                        }
                        None => {
                            out.insert(format!("+{path}/{key}"));
                        }
                    }
                }
                for key in b.keys() {
                    if find(a, key).is_none() {
                        out.insert(format!("-{path}/{key}"));
                    }
                }
            }
            (Value::Array(a), Value::Array(b)) => {
                if let (Some(x), Some(y)) = (a.first(), b.first()) {
                    walk(x, y, &format!("{path}/0"), ignore_case, out);
                }
            }
            _ if kind(a) != kind(b) => {
                out.insert(format!("~{path}"));
            }
            _ => {}
        }
    }
    let mut out = BTreeSet::new();
    walk(ours, theirs, "", ignore_case, &mut out);
    out
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

const ACCOUNT: &str = "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/RG-BlobBackup/providers/Microsoft.Storage/storageAccounts/msblobbackup";
const POLICY: &str = "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/TestBkpVaultRG/providers/Microsoft.DataProtection/backupVaults/testBkpVault/backupPolicies/BlobBackup-Policy";

fn blob_instance(vaulted: Option<&[String]>) -> BackupInstance {
    BackupInstance::for_blob_account(
        &StorageAccountId::parse(ACCOUNT).unwrap(),
        "westus",
        &PolicyId::parse(POLICY).unwrap(),
        vaulted,
    )
}

fn put_body(instance: &BackupInstance) -> Value {
    serde_json::to_value(BackupInstanceResource {
        properties: Some(instance.clone()),
        ..Default::default()
    })
    .unwrap()
}

fn validate_body(instance: &BackupInstance) -> Value {
    serde_json::to_value(ValidateForBackupRequest {
        backup_instance: instance.clone(),
    })
    .unwrap()
}

fn example_request(file: &str) -> Value {
    fixture(file)["parameters"]["parameters"].clone()
}

#[test]
fn vaulted_put_matches_the_adls_container_list_example() {
    let containers = vec!["images".to_string(), "logs".to_string()];
    let ours = put_body(&blob_instance(Some(&containers)));
    let theirs = example_request(
        "2026-06-01/examples/BackupInstanceOperations/PutBackupInstance_ADLSBlobBackupDatasourceParameters.json",
    );
    // friendlyName is optional: Azure derives it (the article's 201 shows one it made up).
    assert_eq!(
        shape_diff(&ours, &theirs, false),
        set(&["-/properties/friendlyName"])
    );
    let parameters = &ours["properties"]["policyInfo"]["policyParameters"];
    assert_eq!(
        parameters,
        &json!({"backupDatasourceParametersList": [
            {"objectType": "BlobBackupDatasourceParameters", "containersList": ["images", "logs"]}
        ]})
    );
}

#[test]
fn operational_put_matches_the_blob_example_and_the_article() {
    let ours = put_body(&blob_instance(None));
    // The blob auto-protection example: same data source (blobServices) and set; its
    // policyParameters are the vaulted auto-protection rules, which operational backup has not.
    let theirs = example_request(
        "2026-06-01/examples/BackupInstanceOperations/PutBackupInstance_BlobBackupAutoProtection.json",
    );
    assert_eq!(
        shape_diff(&ours, &theirs, false),
        set(&[
            "-/properties/friendlyName",
            "-/properties/policyInfo/policyParameters"
        ])
    );
    assert_eq!(
        ours["properties"]["dataSourceInfo"]["datasourceType"],
        theirs["properties"]["dataSourceInfo"]["datasourceType"]
    );
    assert_eq!(
        ours["properties"]["dataSourceSetInfo"]["objectType"],
        "DatasourceSet"
    );

    // The article's PUT: it also sends the read-only name and type, spells `datasourceinfo`
    // in lower case (so keys compare ignoring case) and leaves out dataSourceSetInfo, which
    // every official example sends and which we send too.
    let article = fixture("article/put-request.json");
    assert_eq!(
        shape_diff(&ours, &article, true),
        set(&["+/properties/dataSourceSetInfo", "-/name", "-/type"])
    );
    let ours_ds = &ours["properties"]["dataSourceInfo"];
    let article_ds = &article["properties"]["datasourceinfo"];
    for key in [
        "datasourceType",
        "objectType",
        "resourceName",
        "resourceType",
        "resourceLocation",
    ] {
        assert_eq!(ours_ds[key], article_ds[key], "{key}");
    }
    assert!(
        ours_ds["resourceID"]
            .as_str()
            .unwrap()
            .ends_with("/storageAccounts/msblobbackup")
    );
    assert_eq!(ours["properties"]["objectType"], "BackupInstance");
}

#[test]
fn validate_body_matches_the_examples_and_the_article() {
    let ours = validate_body(&blob_instance(None));
    // The article's validate body, casing included.
    let article = fixture("article/validate-request.json");
    assert_eq!(
        shape_diff(&ours, &article, false),
        set(&["+/backupInstance/dataSourceSetInfo"])
    );
    // The 2026-06-01 example (a PostgreSQL database): no objectType on the request itself;
    // its credentials and identity are PostgreSQL settings blobs do not use.
    let theirs =
        example_request("2026-06-01/examples/BackupInstanceOperations/ValidateForBackup.json");
    assert!(theirs.get("objectType").is_none());
    assert_eq!(
        shape_diff(&ours, &theirs, false),
        set(&[
            "-/backupInstance/datasourceAuthCredentials",
            "-/backupInstance/friendlyName",
            "-/backupInstance/identityDetails"
        ])
    );
    // 2021-01-01: the same shape without the PostgreSQL extras.
    let theirs =
        example_request("2021-01-01/examples/BackupInstanceOperations/ValidateForBackup.json");
    assert_eq!(
        shape_diff(&ours, &theirs, false),
        set(&["-/backupInstance/friendlyName"])
    );
    // The vaulted validate body carries the containers like the PUT.
    let containers = vec!["c1".to_string()];
    let vaulted = validate_body(&blob_instance(Some(&containers)));
    assert_eq!(
        vaulted["backupInstance"]["policyInfo"]["policyParameters"]["backupDatasourceParametersList"]
            [0]["containersList"],
        json!(["c1"])
    );
}

#[test]
fn put_body_matches_the_2021_example() {
    let ours = put_body(&blob_instance(None));
    let theirs =
        example_request("2021-01-01/examples/BackupInstanceOperations/PutBackupInstance.json");
    // The example is a PostgreSQL database with operational-store parameters.
    assert_eq!(
        shape_diff(&ours, &theirs, false),
        set(&[
            "-/properties/friendlyName",
            "-/properties/policyInfo/policyParameters"
        ])
    );
}

#[test]
fn article_bodies_parse_into_models_errors_and_states() {
    // The article's PUT request, with `datasourceinfo`, reads as a backup instance.
    let put: BackupInstanceResource = PROPERTY_NAMES
        .from_value(fixture("article/put-request.json"))
        .unwrap();
    let properties = put.properties.unwrap();
    assert_eq!(
        properties.data_source_info.resource_name.as_deref(),
        Some("msblobbackup")
    );
    assert_eq!(properties.object_type, "BackupInstance");
    assert_eq!(properties.storage_account().unwrap().name(), "msblobbackup");
    assert_eq!(properties.policy().unwrap().name(), "BlobBackup-Policy");
    assert_eq!(properties.vaulted_containers(), None);

    let created: BackupInstanceResource = PROPERTY_NAMES
        .from_value(fixture("article/put-created-201.json")["body"].clone())
        .unwrap();
    assert_eq!(created.protection_status(), Some("ConfiguringProtection"));
    assert_eq!(
        created
            .properties
            .unwrap()
            .current_protection_state
            .as_deref(),
        Some("ConfiguringProtection")
    );

    // validateForBackup 400: already protected.
    let response = fixture("article/validate-already-protected-400.json");
    let cloud: CloudError = PROPERTY_NAMES.from_value(response["body"].clone()).unwrap();
    let detail = AzureErrorDetail::from_cloud_error(&cloud).unwrap();
    assert_eq!(detail.code, "UserErrorDppDatasourceAlreadyProtected");
    assert!(
        detail
            .message
            .starts_with("Datasource is already protected")
    );
    assert_eq!(detail.recommended_actions.len(), 1);
    assert!(
        detail.recommended_actions[0].starts_with("Delete the backup instance msblobbackuptemp")
    );
    assert_eq!(detail.detail, None);
    let error = ArmError::Azure {
        operation: "BackupInstances_ValidateForBackup",
        status: 400,
        detail: Box::new(detail),
        request_id: None,
        correlation_id: Some("f36eb67a-8932-42a8-8aba-c5ee2443aa2e".into()),
        retry_after: None,
    };
    assert_eq!(error.class(), ErrorClass::NeedsPerson);
    let text = error.to_string();
    for part in [
        "BackupInstances_ValidateForBackup failed with HTTP 400",
        "UserErrorDppDatasourceAlreadyProtected: Datasource is already protected",
        "Recommended action: Delete the backup instance msblobbackuptemp",
        "x-ms-correlation-request-id: f36eb67a-8932-42a8-8aba-c5ee2443aa2e",
    ] {
        assert!(text.contains(part), "{part:?} not in {text}");
    }

    // Operation status documents.
    let status = |file: &str| {
        let doc: OperationResource = PROPERTY_NAMES.from_value(fixture(file)).unwrap();
        OperationStatus::from_operation_resource(&doc).unwrap()
    };
    assert_eq!(
        status("article/operation-status-inprogress.json"),
        OperationStatus::InProgress {
            raw: "Inprogress".into()
        }
    );
    assert_eq!(
        status("article/operation-status-succeeded.json"),
        OperationStatus::Succeeded
    );
    match status("article/operation-status-failed-missing-permissions.json") {
        OperationStatus::Failed(detail) => {
            assert_eq!(detail.code, "UserErrorMissingRequiredPermissions");
            assert_eq!(
                detail.message,
                "Appropriate permissions to perform the operation is missing."
            );
            assert!(
                detail.recommended_actions[0]
                    .contains("aka.ms/UserErrorMissingRequiredPermissions")
            );
            let inner = detail.detail.unwrap();
            assert!(
                inner.contains("'Microsoft.Authorization/roleAssignments/read'"),
                "{inner}"
            );
            assert!(inner.contains("storageAccounts/msblobbackup"), "{inner}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn responses_tolerate_unknown_fields_and_other_casings() {
    let mut body = fixture("article/put-created-201.json")["body"].clone();
    body["properties"]["somethingNew"] = json!({"nested": [1, 2]});
    body["properties"]["protectionStatus"] = json!({
        "status": "ProtectionError",
        "errorDetails": {"code": "UserErrorMissingRequiredPermissions", "message": "m",
                         "recommendedAction": ["grant it"], "isRetryable": false}
    });
    body["properties"]["policyInfo"]["policyParameters"] = json!({
        "backupDatasourceParametersList": [
            {"objectType": "SomeFutureParameters", "x": 1},
            {"objectType": "BlobBackupDatasourceParameters", "containerslist": ["a"]}
        ]
    });
    let resource: BackupInstanceResource = PROPERTY_NAMES.from_value(body).unwrap();
    assert_eq!(resource.protection_status(), Some("ProtectionError"));
    let properties = resource.properties.unwrap();
    assert_eq!(
        properties.vaulted_containers(),
        Some(&["a".to_string()][..])
    );
    let error = properties.protection_status.unwrap().error_details.unwrap();
    let detail = AzureErrorDetail::from(&error);
    assert_eq!(detail.code, "UserErrorMissingRequiredPermissions");
    assert_eq!(detail.recommended_actions, vec!["grant it".to_string()]);
}

fn blob_restore(containers: &[&str], prefixes: &[&str]) -> BlobRestoreTarget {
    let account = StorageAccountId::parse(ACCOUNT).unwrap();
    BlobRestoreTarget {
        source: account.clone(),
        target: account,
        location: "westus".into(),
        containers: containers.iter().map(|c| c.to_string()).collect(),
        prefixes: prefixes.iter().map(|p| p.to_string()).collect(),
    }
}

/// The vaulted restore of a container with prefixes has the structure of Azure's item-level
/// blob restore example, but for what it does not send: a user-assigned identity (the vault's
/// own is used), credentials (blobs take none) and a rename.
#[test]
fn vaulted_restore_matches_the_item_level_blob_example() {
    let point = RestoreSource::RecoveryPoint("33fdef0e0e2e4594b63092ae9a56f58d".into());
    let ours = serde_json::to_value(RestoreRequest::for_blobs(
        &point,
        &blob_restore(&["container1"], &["container1/abc", "container1/def"]),
    ))
    .unwrap();
    let theirs = example_request(
        "2025-09-01/examples/BackupInstanceOperations/TriggerRestore_ItemLevel.json",
    );
    assert_eq!(
        shape_diff(&ours, &theirs, false),
        set(&[
            "-/identityDetails",
            "-/restoreTargetInfo/datasourceAuthCredentials",
            "-/restoreTargetInfo/restoreCriteria/0/renameTo",
        ])
    );
    // The schema's type for a target with criteria (the example says RestoreTargetInfo, which
    // has no restoreCriteria in the schema).
    assert_eq!(
        ours["restoreTargetInfo"]["objectType"],
        "ItemLevelRestoreTargetInfo"
    );
    assert_eq!(ours["objectType"], theirs["objectType"]);
    assert_eq!(ours["sourceDataStoreType"], theirs["sourceDataStoreType"]);
    assert_eq!(ours["restoreTargetInfo"]["recoveryOption"], "FailIfExists");
    assert_eq!(
        ours["restoreTargetInfo"]["restoreCriteria"][0],
        json!({"objectType": "ItemPathBasedRestoreCriteria", "itemPath": "container1",
               "isPathRelativeToBackupItem": true, "subItemPathPrefix": ["abc", "def"]})
    );
    // The datasource keys are the example's, in its casing.
    let target = &ours["restoreTargetInfo"];
    for key in ["datasourceInfo", "datasourceSetInfo"] {
        assert_eq!(
            shape_diff(&target[key], &theirs["restoreTargetInfo"][key], false),
            set(&[]),
            "{key}"
        );
    }
}

/// validateRestore wraps the same request in `restoreRequestObject`, as the example does.
#[test]
fn validate_restore_wraps_the_request_like_the_example() {
    let point = RestoreSource::RecoveryPoint("hardcodedRP".into());
    let request = RestoreRequest::for_blobs(&point, &blob_restore(&[], &[]));
    let ours = serde_json::to_value(ValidateRestoreRequest {
        restore_request_object: request.clone(),
    })
    .unwrap();
    let theirs =
        example_request("2026-06-01/examples/BackupInstanceOperations/ValidateRestore.json");
    assert_eq!(
        shape_diff(&ours, &theirs, false),
        set(&[
            "-/restoreRequestObject/identityDetails",
            "-/restoreRequestObject/restoreTargetInfo/datasourceAuthCredentials",
        ])
    );
    let trigger =
        example_request("2026-06-01/examples/BackupInstanceOperations/TriggerRestore.json");
    assert_eq!(
        shape_diff(&serde_json::to_value(&request).unwrap(), &trigger, false),
        set(&[
            "-/identityDetails",
            "-/restoreTargetInfo/datasourceAuthCredentials",
        ])
    );
    // Whole account: a RestoreTargetInfo, as in both examples.
    assert_eq!(
        ours["restoreRequestObject"]["restoreTargetInfo"]["objectType"],
        "RestoreTargetInfo"
    );
    // It reads back (the emulator parses it with the same model).
    let back: ValidateRestoreRequest = serde_json::from_value(ours).unwrap();
    assert_eq!(back.restore_request_object, request);
}

/// Operational restore: the schema's time-based request (no official example exists), with
/// the time in the form the schema documents and containers and prefixes as ranges.
#[test]
fn operational_restore_is_time_based_with_ranges() {
    let at: jiff::Timestamp = "2026-12-01T10:00:00Z".parse().unwrap();
    let request = RestoreRequest::for_blobs(
        &RestoreSource::PointInTime(at),
        &blob_restore(&["images"], &["logs/2026/"]),
    );
    let body = serde_json::to_value(&request).unwrap();
    assert_eq!(
        body["objectType"],
        "AzureBackupRecoveryTimeBasedRestoreRequest"
    );
    assert_eq!(body["recoveryPointTime"], "2026-12-01T10:00:00.0000000Z");
    assert_eq!(body["sourceDataStoreType"], "OperationalStore");
    assert_eq!(body["sourceResourceId"], ACCOUNT);
    assert!(body.get("recoveryPointId").is_none());
    assert_eq!(
        body["restoreTargetInfo"]["restoreCriteria"],
        json!([
            {"objectType": "RangeBasedItemLevelRestoreCriteria", "minMatchingValue": "images", "maxMatchingValue": "images-0"},
            {"objectType": "RangeBasedItemLevelRestoreCriteria", "minMatchingValue": "logs/2026/", "maxMatchingValue": "logs/20260"},
        ])
    );
    let whole = RestoreRequest::for_blobs(&RestoreSource::PointInTime(at), &blob_restore(&[], &[]));
    assert_eq!(whole.restore_target_info.object_type, "RestoreTargetInfo");
    assert_eq!(
        whole.restore_target_info.restore_criteria,
        None::<Vec<RestoreCriteria>>
    );
}

/// findRestorableTimeRanges: our request has the example's structure, and its answer reads
/// into ranges that contain what they should.
#[test]
fn restorable_time_ranges_match_the_example() {
    let example =
        fixture("2025-09-01/examples/BackupInstanceOperations/FindRestorableTimeRanges.json");
    let ours = serde_json::to_value(FindRestorableTimeRangesRequest {
        source_data_store_type: "OperationalStore".into(),
        start_time: Some("2020-10-17T23:28:17.6829685Z".into()),
        end_time: Some("2021-02-24T00:35:17.6829685Z".into()),
    })
    .unwrap();
    assert_eq!(ours, example["parameters"]["parameters"]);
    let found: FindRestorableTimeRangesResponseResource =
        serde_json::from_value(example["responses"]["200"]["body"].clone()).unwrap();
    let ranges = found.properties.unwrap().restorable_time_ranges;
    assert_eq!(ranges.len(), 1);
    let inside: jiff::Timestamp = "2021-02-23T20:00:00Z".parse().unwrap();
    let before: jiff::Timestamp = "2021-02-23T18:00:00Z".parse().unwrap();
    let after: jiff::Timestamp = "2021-02-24T00:35:18Z".parse().unwrap();
    assert!(ranges[0].contains(inside));
    assert!(!ranges[0].contains(before));
    assert!(!ranges[0].contains(after));
}

#[test]
fn job_states_follow_the_documented_statuses() {
    let job = |status: &str, errors: Value| -> JobState {
        let job: JobResource = serde_json::from_value(
            json!({"properties": {"status": status, "errorDetails": errors}}),
        )
        .unwrap();
        job.properties.unwrap().state()
    };
    assert_eq!(job("Completed", json!([])), JobState::Completed);
    assert_eq!(job("completedwithwarnings", json!([])), JobState::Completed);
    assert_eq!(job("Cancelled", json!([])), JobState::Cancelled);
    assert_eq!(
        job("InProgress", json!([])),
        JobState::Running {
            raw: "InProgress".into()
        }
    );
    match job(
        "Failed",
        json!([{"code": "UserErrorTargetContainersExistOnAccount", "message": "m", "recommendedActions": ["delete them"]}]),
    ) {
        JobState::Failed(detail) => {
            assert_eq!(detail.code, "UserErrorTargetContainersExistOnAccount");
            assert_eq!(detail.recommended_actions, vec!["delete them".to_string()]);
        }
        other => panic!("{other:?}"),
    }
}
