//! docs/architecture.md lists every module of `host/src/` and every module of the command line
//! (`host/cli/src/`), and nothing else: a module added, renamed or removed without updating its
//! table fails here.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

fn host_src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn cli_src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("cli/src")
}

fn architecture_doc() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/architecture.md");
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The first cells, without backticks, of the table under "## {section}".
fn table_modules(doc: &str, section: &str) -> BTreeSet<String> {
    doc.split("\n## ")
        .find(|s| s.starts_with(&format!("{section}\n")))
        .unwrap_or_else(|| panic!("docs/architecture.md has a \"## {section}\" section"))
        .lines()
        .filter(|line| line.starts_with("| `"))
        .map(|row| {
            let first = row.split('|').nth(1).unwrap_or_default();
            first.trim().trim_matches('`').to_owned()
        })
        .collect()
}

/// `name` for `name.rs`, `name/` for a folder, leaving out the crate roots.
fn modules_on_disk(dir: &Path) -> BTreeSet<String> {
    fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("a readable directory entry").path())
        .filter_map(|path| {
            let name = path.file_name()?.to_str()?.to_owned();
            if path.is_dir() {
                path.join("mod.rs").is_file().then(|| format!("{name}/"))
            } else {
                let stem = name.strip_suffix(".rs")?;
                (!matches!(stem, "lib" | "main" | "mod")).then(|| stem.to_owned())
            }
        })
        .collect()
}

/// Fails unless the table under "## {section}" names exactly the modules of `dir`.
fn assert_table_matches(section: &str, dir: &Path) {
    let documented = table_modules(&architecture_doc(), section);
    let on_disk = modules_on_disk(dir);
    let undocumented: Vec<_> = on_disk.difference(&documented).collect();
    let stale: Vec<_> = documented.difference(&on_disk).collect();
    assert!(
        undocumented.is_empty() && stale.is_empty(),
        "docs/architecture.md, \"{section}\": add a row for {undocumented:?}; \
         remove or rename the rows for {stale:?}"
    );
}

#[test]
fn the_module_table_matches_host_src() {
    assert_table_matches("Modules", &host_src());
}

#[test]
fn the_commands_table_matches_the_command_line_modules() {
    assert_table_matches("Commands", &cli_src());
}
