//! The repository checkout the tests read (charts, crds, deploy, README) and the tools
//! `scripts/install-tools.sh` puts in `./.tools/bin`.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The repository's root directory.
pub fn repo() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

/// The Helm chart's directory.
pub fn chart() -> PathBuf {
    repo().join("charts/blob-backup-operator")
}

/// `kubectl` or `helm` from ./.tools/bin; panics naming the script that installs them.
pub fn tool(name: &str) -> PathBuf {
    let path = repo().join(".tools/bin").join(name);
    assert!(
        path.is_file(),
        "{} is missing: run scripts/install-tools.sh",
        path.display()
    );
    path
}

/// Runs a command; Ok(stdout) when it succeeded, Err(stdout + stderr) when it did not.
pub fn run(command: &mut Command) -> Result<String, String> {
    let output = command.output().expect("start the command");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if output.status.success() {
        Ok(stdout)
    } else {
        Err(format!(
            "{stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}
