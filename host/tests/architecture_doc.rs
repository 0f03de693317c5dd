//! docs/architecture.md lists every module of `host/src/` and every `cretok` command, and
//! nothing else: a module added, renamed or removed without updating the table fails here.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

fn host_src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn architecture_doc() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/architecture.md");
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The rows of the "## Modules" table: (first cell without backticks, whole row).
fn module_rows(doc: &str) -> Vec<(String, String)> {
    doc.split("\n## ")
        .find(|section| section.starts_with("Modules\n"))
        .expect("docs/architecture.md has a \"## Modules\" section")
        .lines()
        .filter(|line| line.starts_with("| `"))
        .map(|row| {
            let first = row.split('|').nth(1).unwrap_or_default();
            (first.trim().trim_matches('`').to_owned(), row.to_owned())
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

#[test]
fn the_module_table_matches_host_src() {
    let documented: BTreeSet<String> = module_rows(&architecture_doc())
        .into_iter()
        .map(|(module, _)| module)
        .collect();
    let on_disk = modules_on_disk(&host_src());
    let undocumented: Vec<_> = on_disk.difference(&documented).collect();
    let stale: Vec<_> = documented.difference(&on_disk).collect();
    assert!(
        undocumented.is_empty() && stale.is_empty(),
        "docs/architecture.md, \"Modules\": add a row for {undocumented:?}; \
         remove or rename the rows for {stale:?}"
    );
}

#[test]
fn the_cli_row_names_every_command() {
    let rows = module_rows(&architecture_doc());
    let (_, cli_row) = rows
        .iter()
        .find(|(module, _)| module == "cli/")
        .expect("a `cli/` row in docs/architecture.md");
    let missing: Vec<String> = modules_on_disk(&host_src().join("cli"))
        .into_iter()
        .filter(|command| !cli_row.contains(&format!("`{command}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "the `cli/` row of docs/architecture.md does not name {missing:?}"
    );
}

#[test]
fn the_table_parser_reads_only_the_modules_section() {
    let doc = "# x\n\n## Modules\n\n| module | does |\n|---|---|\n| `graph` | parses |\n\n## Next\n| `not_a_module` | x |\n";
    let documented: Vec<String> = module_rows(doc).into_iter().map(|(m, _)| m).collect();
    assert_eq!(documented, ["graph"]);
    let on_disk = modules_on_disk(&host_src());
    assert!(on_disk.contains("graph") && on_disk.contains("server/"));
    assert!(!on_disk.contains("lib") && !on_disk.contains("main"));
}
