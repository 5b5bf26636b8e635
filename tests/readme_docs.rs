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
