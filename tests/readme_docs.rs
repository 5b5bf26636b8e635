//! The README documents every condition and event reason the controller can write, so a person
//! reading `kubectl describe` can look any reason up. This fails when a reason is added without
//! its row.

use blob_backup_operator::controller::decide::Reason;

#[test]
fn every_reason_has_a_readme_row() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md is readable");
    let missing: Vec<&str> = Reason::ALL
        .iter()
        .map(|reason| reason.as_str())
        .filter(|reason| !readme.contains(&format!("| `{reason}` |")))
        .collect();
    assert!(
        missing.is_empty(),
        "README.md's reason table lacks rows for {missing:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// The install instructions: what can be checked without a cluster or Azure.
// ---------------------------------------------------------------------------------------------

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use serde_json::Value;

use testkit::checkout::{chart, repo, run, tool};

fn readme() -> String {
    std::fs::read_to_string(repo().join("README.md")).expect("README.md is readable")
}

/// The text of a `## ` section, up to the next one.
fn section(readme: &str, heading: &str) -> String {
    let start = readme
        .find(&format!("\n## {heading}\n"))
        .unwrap_or_else(|| panic!("README has no section {heading:?}"));
    let rest = &readme[start + 1..];
    let end = rest[3..].find("\n## ").map_or(rest.len(), |i| i + 3);
    rest[..end].to_owned()
}

/// The `sh` code blocks of a text, in order, with continuation lines joined.
fn sh_blocks(text: &str) -> Vec<Vec<String>> {
    text.split("```sh\n")
        .skip(1)
        .map(|block| {
            let body = block.split("```").next().unwrap_or_default();
            body.replace("\\\n", " ")
                .lines()
                .map(|line| line.split(" # ").next().unwrap_or(line).trim().to_owned())
                .filter(|line| !line.is_empty() && !line.starts_with('#'))
                .collect()
        })
        .collect()
}

/// `$NAME` and `${NAME...}` uses in a command line.
fn variables_used(line: &str) -> Vec<String> {
    let pattern = regex::Regex::new(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)").expect("regex");
    pattern
        .captures_iter(line)
        .map(|c| c[1].to_owned())
        .collect()
}

/// Runs the Install section's commands in the mind: every variable is set before it is used,
/// every namespace exists before a command in it, every resource waited for was applied
/// before, and every file named exists.
#[test]
fn install_commands_run_as_written_in_order() {
    let readme = readme();
    let install = section(&readme, "Install");
    let assignment = regex::Regex::new(r"^([A-Z_][A-Z0-9_]*)=(.*)$").expect("regex");
    let in_namespace = regex::Regex::new(r"kubectl -n (\S+) (\S+)(.*)").expect("regex");
    let mut variables: BTreeMap<String, String> = BTreeMap::new();
    // Argo CD's own namespace exists wherever its instructions apply.
    let mut namespaces: BTreeSet<String> = BTreeSet::from(["argocd".to_owned()]);
    let mut applied: BTreeSet<(String, String)> = BTreeSet::new();
    let mut problems = Vec::new();
    for line in sh_blocks(&install).into_iter().flatten() {
        for used in variables_used(&line) {
            if !variables.contains_key(&used) {
                problems.push(format!("${used} is used before it is set: {line}"));
            }
        }
        // Literal values stand in for their variables; command substitutions stay opaque.
        let mut expanded = line.clone();
        for (name, value) in &variables {
            expanded = expanded.replace(&format!("${name}"), value);
        }
        if let Some(set) = assignment.captures(&line) {
            variables.insert(set[1].to_owned(), set[2].to_owned());
            continue;
        }
        let words: Vec<&str> = expanded.split_whitespace().collect();
        if let Some(i) = words.iter().position(|w| *w == "--namespace")
            && words.contains(&"--create-namespace")
        {
            namespaces.insert(words[i + 1].to_owned());
        }
        if let Some(name) = expanded.strip_prefix("kubectl create namespace ") {
            namespaces.insert(name.trim().to_owned());
        }
        if expanded.starts_with("kubectl apply") {
            for file in words.windows(2).filter(|w| w[0] == "-f").map(|w| w[1]) {
                let text = std::fs::read_to_string(repo().join(file)).unwrap_or_default();
                for doc in serde_saphyr::from_multiple::<Value>(&text).unwrap_or_default() {
                    if doc["kind"] == "Namespace" {
                        namespaces.insert(doc["metadata"]["name"].as_str().unwrap_or("").into());
                    }
                }
            }
        }
        if let Some(command) = in_namespace.captures(&expanded) {
            let (namespace, verb, rest) = (&command[1], &command[2], &command[3]);
            if !namespaces.contains(namespace) {
                problems.push(format!("namespace {namespace} does not exist yet: {line}"));
            }
            if verb == "apply" {
                let file = rest.split_whitespace().skip_while(|w| *w != "-f").nth(1);
                let text =
                    std::fs::read_to_string(repo().join(file.unwrap_or(""))).unwrap_or_default();
                for doc in serde_saphyr::from_multiple::<Value>(&text).unwrap_or_default() {
                    if let Some(name) = doc["metadata"]["name"].as_str() {
                        applied.insert((namespace.to_owned(), name.to_owned()));
                    }
                }
            }
            if verb == "wait"
                && let Some(name) = rest.split_whitespace().find_map(|w| w.strip_prefix("bbi/"))
                && !applied.contains(&(namespace.to_owned(), name.to_owned()))
            {
                problems.push(format!("bbi/{name} was not applied before: {line}"));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "README Install:\n{}",
        problems.join("\n")
    );

    let path =
        regex::Regex::new(r"\b((?:deploy|charts|crds|scripts)/[A-Za-z0-9_./-]*(?:\.[a-z]+|/))")
            .expect("regex");
    let missing: BTreeSet<&str> = path
        .captures_iter(&readme)
        .map(|c| c.get(1).expect("path").as_str())
        .filter(|p| !repo().join(p).exists())
        .collect();
    assert!(
        missing.is_empty(),
        "README names missing files: {missing:?}"
    );
}

#[test]
fn install_says_nothing_is_published_and_how_to_build_it() {
    let install = section(&readme(), "Install");
    let lines: Vec<String> = sh_blocks(&install).into_iter().flatten().collect();
    let position = |prefix: &str| {
        lines
            .iter()
            .position(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no `{prefix}` in the Install commands"))
    };
    assert!(install.contains("Nothing is published yet"));
    assert!(position("docker build -t $REGISTRY/") < position("docker push $REGISTRY/"));
    assert!(position("docker push") < position("helm install"));
    assert!(
        position("az extension add --name dataprotection")
            < position("VAULT_ID=$(az dataprotection")
    );
    // Plain manifests: the identity annotation before the pods that use it are rolled out.
    assert!(
        position("kubectl -n blob-backup-operator annotate sa")
            < position("kubectl -n blob-backup-operator set image")
    );
    assert!(install.contains("rollout restart deploy/blob-backup-operator"));
    let floor = blob_backup_operator::controller::kubernetes_version::MINIMUM;
    assert!(
        install.contains(&format!("**Supported Kubernetes: {floor} and newer**")),
        "the README states the supported range"
    );
}

/// The README's `helm install` renders with exactly its flags, and the federated credential
/// subject it creates names the ServiceAccount the chart renders.
#[test]
fn readme_helm_install_renders_with_its_flags() {
    let install = section(&readme(), "Install");
    let lines: Vec<String> = sh_blocks(&install).into_iter().flatten().collect();
    let literal: BTreeMap<&str, &str> = lines
        .iter()
        .filter_map(|l| l.split_once('='))
        .filter(|(name, value)| {
            name.chars().all(|c| c.is_ascii_uppercase() || c == '_') && !value.contains('$')
        })
        .collect();
    let expand = |text: &str| {
        let mut text = text.to_owned();
        for (name, value) in &literal {
            text = text.replace(&format!("${name}"), value);
        }
        // What az prints at run time.
        for opaque in ["$CLIENT_ID", "$TENANT_ID"] {
            text = text.replace(opaque, "00000000-0000-0000-0000-000000000000");
        }
        text
    };
    let helm_install = lines
        .iter()
        .find(|l| l.starts_with("helm install blob-backup-operator charts/blob-backup-operator"))
        .expect("a helm install in the README");
    let words: Vec<String> = expand(helm_install)
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    let mut args: Vec<String> = vec!["template".into(), words[2].clone()];
    args.push(chart().display().to_string());
    args.extend(
        words[4..]
            .iter()
            .filter(|w| *w != "--create-namespace")
            .cloned(),
    );
    let out = run(Command::new(tool("helm")).args(&args))
        .unwrap_or_else(|e| panic!("helm {args:?} failed:\n{e}"));
    let docs: Vec<Value> = serde_saphyr::from_multiple(&out).expect("rendered YAML");
    let of = |kind: &str| {
        docs.iter()
            .find(|d| d["kind"] == kind)
            .unwrap_or_else(|| panic!("no {kind}"))
    };
    let image = of("Deployment")["spec"]["template"]["spec"]["containers"][0]["image"]
        .as_str()
        .expect("image")
        .to_owned();
    assert_eq!(
        image,
        expand("$REGISTRY/blob-backup-operator:$TAG"),
        "the README's image"
    );
    let service_account = of("ServiceAccount");
    assert!(
        service_account["metadata"]["annotations"]["azure.workload.identity/client-id"].is_string()
    );
    let subject = lines
        .iter()
        .find_map(|l| l.split("--subject ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .expect("the federated credential's --subject");
    assert_eq!(
        expand(subject),
        format!(
            "system:serviceaccount:{}:{}",
            service_account["metadata"]["namespace"]
                .as_str()
                .unwrap_or(""),
            service_account["metadata"]["name"].as_str().unwrap_or("")
        )
    );
}

/// The Flux example points a HelmRelease at the chart's path in a GitRepository, and its values
/// pass the chart's schema.
#[test]
fn flux_example_installs_the_chart_from_git() {
    let path = repo().join("deploy/flux/blob-backup-operator.yaml");
    let docs: Vec<Value> =
        serde_saphyr::from_multiple(&std::fs::read_to_string(&path).expect("flux example"))
            .expect("YAML");
    let source = docs
        .iter()
        .find(|d| d["kind"] == "GitRepository")
        .expect("a GitRepository");
    let release = docs
        .iter()
        .find(|d| d["kind"] == "HelmRelease")
        .expect("a HelmRelease");
    let chart_spec = &release["spec"]["chart"]["spec"];
    assert_eq!(chart_spec["sourceRef"]["kind"], "GitRepository");
    assert_eq!(chart_spec["sourceRef"]["name"], source["metadata"]["name"]);
    let chart_path = chart_spec["chart"].as_str().expect("chart path");
    assert!(
        repo().join(chart_path).join("Chart.yaml").is_file(),
        "{chart_path} is not a chart in this repository"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let values = dir.path().join("values.json");
    std::fs::write(&values, release["spec"]["values"].to_string()).expect("write values");
    run(Command::new(tool("helm"))
        .args(["template", "blob-backup-operator"])
        .arg(chart())
        .arg("--values")
        .arg(&values))
    .unwrap_or_else(|e| panic!("the HelmRelease's values do not render:\n{e}"));
}

#[test]
fn resource_section_warns_first_that_deleting_deletes_backups() {
    let resource = section(&readme(), "The resource");
    let warning_end = resource.find("```yaml").expect("the example");
    // One line: the block quote's markers and line breaks out.
    let warning = resource[..warning_end]
        .replace("\n>", " ")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    for needle in [
        "deletes its backups by default",
        "deletionPolicy: Delete",
        "deleting its namespace",
        "Argo CD prune",
    ] {
        assert!(warning.contains(needle), "{needle:?} not in {warning}");
    }
    for needle in [
        "`deletionPolicy: Orphan`",
        "`argocd.argoproj.io/sync-options: Delete=false`",
        "soft delete",
        "Deletion Policy: Delete",
    ] {
        assert!(
            resource.contains(needle),
            "{needle:?} not in the resource section"
        );
    }
}

#[test]
fn every_reason_row_is_well_formed() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md is readable");
    for reason in Reason::ALL {
        let start = format!("| `{reason}` |");
        let row = readme
            .lines()
            .find(|line| line.starts_with(&start))
            .unwrap_or_else(|| panic!("no row for {reason}"));
        // | reason | used in | meaning |: three cells, the second a short "where".
        let cells: Vec<&str> = row.trim_matches('|').split(" | ").map(str::trim).collect();
        assert_eq!(cells.len(), 3, "{row}");
        let used_in = cells[1];
        assert!(
            (used_in.starts_with("Condition") || used_in.starts_with("Event"))
                && !used_in.contains(':')
                && used_in.len() <= 40,
            "the 'Used in' cell of {reason} says where, not what: {row}"
        );
    }
}
