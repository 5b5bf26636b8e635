//! Runs deploy/argocd/health.lua against every case of deploy/argocd/health_test.yaml the way
//! Argo CD does: the resource is the global `obj`, the script returns `{status, message}`.

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

fn health_tests() -> HealthTests {
    serde_saphyr::from_str(&read(&argocd_dir().join("health_test.yaml"))).expect("health_test.yaml")
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
    let script = read(&argocd_dir().join("health.lua"));
    let tests = health_tests();
    assert!(!tests.tests.is_empty(), "health_test.yaml has no cases");
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
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_testdata_file_is_a_case() {
    let cases: BTreeSet<String> = health_tests()
        .tests
        .into_iter()
        .map(|case| case.input_path)
        .collect();
    let files: BTreeSet<String> = std::fs::read_dir(argocd_dir().join("testdata"))
        .expect("testdata")
        .map(|entry| {
            format!(
                "testdata/{}",
                entry.expect("entry").file_name().to_string_lossy()
            )
        })
        .collect();
    assert_eq!(files, cases, "testdata/ and health_test.yaml disagree");
}

#[test]
fn status_null_is_waiting_for_controller() {
    let script = read(&argocd_dir().join("health.lua"));
    let resource = serde_json::json!({
        "metadata": {"name": "x", "generation": 1},
        "status": null,
    });
    let got = run_health(&script, &resource).expect("script runs");
    assert_eq!(
        got,
        HealthStatus {
            status: "Progressing".into(),
            message: "Waiting for controller".into(),
        }
    );
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
    let key = "resource.customizations.health.dataprotection.blobbackup.io_BlobBackupInstance";
    let embedded = cm.data.get(key).expect("the health customization key");
    assert!(
        *embedded == read(&argocd_dir().join("health.lua")),
        "deploy/argocd/argocd-cm-patch.yaml is stale: run scripts/render-deploy.sh"
    );
}
