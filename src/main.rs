//! The `blob-backup-operator` command line (wired to the library as the modules land).
fn main() {}
