//! Runs each health check of deploy/argocd/ (health.lua for BlobBackupInstance, grant-health.lua
//! for BackupVaultGrant) against every case of its test file the way Argo CD does: the resource
//! is the global `obj`, the script returns `{status, message}`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use mlua::serde::SerializeOptions;
use mlua::{Lua, LuaOptions, LuaSerdeExt, StdLib, Table};
use serde::Deserialize;

#[derive(Deserialize)]
struct HealthTests {
    tests: Vec<HealthTest>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct HealthTest {
    health_status: HealthStatus,
    input_path: String,
}

#[derive(Deserialize, Debug, PartialEq)]
struct HealthStatus {
    status: String,
    message: String,
}

fn argocd_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/argocd")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// Each kind's check: its script, its test file, its test data folder, its argocd-cm key.
const CHECKS: [(&str, &str, &str, &str); 3] = [
    (
        "health.lua",
        "health_test.yaml",
        "testdata",
        "resource.customizations.health.dataprotection.blobbackup.io_BlobBackupInstance",
    ),
    (
        "grant-health.lua",
        "grant-health_test.yaml",
        "grant-testdata",
        "resource.customizations.health.dataprotection.blobbackup.io_BackupVaultGrant",
    ),
    (
        "restore-health.lua",
        "restore-health_test.yaml",
        "restore-testdata",
        "resource.customizations.health.dataprotection.blobbackup.io_BlobRestore",
    ),
];

fn health_tests(file: &str) -> HealthTests {
    serde_saphyr::from_str(&read(&argocd_dir().join(file))).expect(file)
}

fn run_health(script: &str, resource: &serde_json::Value) -> mlua::Result<HealthStatus> {
    // Argo CD's interpreter has no io or os library: leaving them out catches a script that
    // would fail there.
    let lua = Lua::new_with(
        StdLib::TABLE | StdLib::STRING | StdLib::MATH,
        LuaOptions::default(),
    )?;
    // JSON null becomes nil, as in Argo CD, so `obj.status == nil` works for `status: null`.
    let options = SerializeOptions::new()
        .serialize_none_to_null(false)
        .serialize_unit_to_null(false);
    lua.globals()
        .set("obj", lua.to_value_with(resource, options)?)?;
    let hs: Table = lua.load(script).set_name("health.lua").eval()?;
    Ok(HealthStatus {
        status: hs.get("status")?,
        message: hs.get("message")?,
    })
}

#[test]
fn health_lua_passes_every_case() {
    let mut failures = Vec::new();
    for (script, file, _, _) in CHECKS {
        failures.extend(failures_of(script, file));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn failures_of(script: &str, file: &str) -> Vec<String> {
    let script = read(&argocd_dir().join(script));
    let tests = health_tests(file);
    assert!(!tests.tests.is_empty(), "{file} has no cases");
    let mut failures = Vec::new();
    for case in &tests.tests {
        let resource: serde_json::Value =
            serde_saphyr::from_str(&read(&argocd_dir().join(&case.input_path)))
                .unwrap_or_else(|e| panic!("{}: {e}", case.input_path));
        match run_health(&script, &resource) {
            Ok(got) if got == case.health_status => {}
            Ok(got) => failures.push(format!(
                "{}: want {:?}, got {got:?}",
                case.input_path, case.health_status
            )),
            Err(e) => failures.push(format!("{}: the script failed: {e}", case.input_path)),
        }
    }
    failures
}

#[test]
fn every_testdata_file_is_a_case() {
    for (_, file, dir, _) in CHECKS {
        let cases: BTreeSet<String> = health_tests(file)
            .tests
            .into_iter()
            .map(|case| case.input_path)
            .collect();
        let files: BTreeSet<String> = std::fs::read_dir(argocd_dir().join(dir))
            .expect(dir)
            .map(|entry| {
                format!(
                    "{dir}/{}",
                    entry.expect("entry").file_name().to_string_lossy()
                )
            })
            .collect();
        assert_eq!(files, cases, "{dir}/ and {file} disagree");
    }
}

#[test]
fn status_null_is_waiting_for_controller() {
    let resource = serde_json::json!({
        "metadata": {"name": "x", "generation": 1},
        "status": null,
    });
    for (script, _, _, _) in CHECKS {
        let got = run_health(&read(&argocd_dir().join(script)), &resource).expect("script runs");
        assert_eq!(
            got,
            HealthStatus {
                status: "Progressing".into(),
                message: "Waiting for controller".into(),
            },
            "{script}"
        );
    }
}

#[test]
fn argocd_cm_patch_carries_health_lua() {
    #[derive(Deserialize)]
    struct ConfigMap {
        metadata: serde_json::Value,
        data: std::collections::BTreeMap<String, String>,
    }
    let cm: ConfigMap =
        serde_saphyr::from_str(&read(&argocd_dir().join("argocd-cm-patch.yaml"))).expect("yaml");
    assert_eq!(cm.metadata["name"], "argocd-cm");
    for (script, _, _, key) in CHECKS {
        let embedded = cm.data.get(key).expect("the health customization key");
        assert!(
            *embedded == read(&argocd_dir().join(script)),
            "deploy/argocd/argocd-cm-patch.yaml is stale ({key}): run scripts/render-deploy.sh"
        );
    }
}
