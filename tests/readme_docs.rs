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
