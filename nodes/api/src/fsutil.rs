//! File writing that never leaves partial files, and user-given paths that stay
//! inside their folder.

use std::io::Write;
use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Context, Result};
pub use cretok_support::files::{atomic_write, atomic_write_with, parent_dir, temp_file_in};

/// Writes `bytes` to a new file `dir/<stem>_NNNNN_.<ext>` with the first free
/// counter, atomically and without ever replacing an existing file (safe when
/// several writers share the folder). Returns the file name.
pub fn write_numbered(dir: &Path, stem: &str, ext: &str, bytes: &[u8]) -> Result<String> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut tmp = temp_file_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    let mut counter = next_counter(dir, stem, ext);
    loop {
        let name = format!("{stem}_{counter:05}_.{ext}");
        match tmp.persist_noclobber(dir.join(&name)) {
            Ok(_) => return Ok(name),
            Err(e) if e.error.kind() == std::io::ErrorKind::AlreadyExists => {
                tmp = e.file;
                counter += 1;
            }
            Err(e) => return Err(e.error).context(format!("writing {name}")),
        }
    }
}

/// One past the highest counter already used for `stem` in `dir`.
fn next_counter(dir: &Path, stem: &str, ext: &str) -> u64 {
    let prefix = format!("{stem}_");
    let suffix = format!("_.{ext}");
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter_map(|name| {
            name.strip_prefix(&prefix)?
                .strip_suffix(&suffix)?
                .parse::<u64>()
                .ok()
        })
        .max()
        .map_or(1, |n| n + 1)
}

/// Checks a user-given relative path (a subfolder, a filename prefix) and
/// returns it joined under `root`. Refuses absolute paths, `..`, and anything
/// else that could leave `root` by name. Links are not followed: this is for
/// folders the user curates by hand (model checkpoints may be links to another
/// disk, the frontend's files); every folder the server or a node writes into,
/// or serves to clients, goes through [`confined_join`].
pub fn safe_join(root: &Path, relative: &str) -> Result<PathBuf> {
    if relative.contains('\0') {
        bail!("path contains a NUL byte");
    }
    let rel = Path::new(relative);
    let mut out = root.to_path_buf();
    for component in rel.components() {
        match component {
            Component::Normal(part) => out.push(part),
            Component::CurDir => {}
            _ => bail!("path '{relative}' leaves its folder"),
        }
    }
    if relative.contains('\\') || relative.contains(':') {
        bail!("path '{relative}' has a forbidden character");
    }
    Ok(out)
}

/// [`safe_join`], then follows links: the deepest part of the result that exists
/// is resolved (`canonicalize`) and must still lie inside `root` (resolved the same
/// way), so a link in the folder cannot lead a read, write, delete or listing out
/// of it. Returns the resolved path (existing part canonical, the rest as given).
/// A dangling link on the way is refused: what it would create is unknown.
pub fn confined_join(root: &Path, relative: &str) -> Result<PathBuf> {
    let joined = safe_join(root, relative)?;
    let resolved = resolve_links(&joined)?;
    if !resolved.starts_with(resolve_links(root)?) {
        bail!("path '{relative}' leads out of its folder through a link");
    }
    Ok(resolved)
}

/// `path` with its longest existing prefix canonicalized.
fn resolve_links(path: &Path) -> Result<PathBuf> {
    let mut rest = Vec::new();
    let mut existing = path;
    loop {
        match std::fs::canonicalize(existing) {
            Ok(mut resolved) => {
                resolved.extend(rest.iter().rev());
                return Ok(resolved);
            }
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e).with_context(|| format!("resolving {}", existing.display()));
            }
            Err(_) if existing.symlink_metadata().is_ok() => {
                bail!("'{}' is a link to nothing", existing.display());
            }
            Err(_) => {}
        }
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name);
                existing = if parent.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    parent
                };
            }
            _ => bail!("no part of {} exists", path.display()),
        }
    }
}

/// Splits a ComfyUI-style `filename_prefix` (`"blends/pair"`) into its
/// subfolder and file stem; the stem must be a plain file name.
pub fn split_filename_prefix(prefix: &str) -> Result<(&str, &str)> {
    let (subfolder, stem) = prefix.rsplit_once('/').unwrap_or(("", prefix));
    if stem.is_empty() || stem == "." || stem == ".." {
        bail!("'{prefix}' does not end in a file name");
    }
    Ok((subfolder, stem))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safe_join_refuses_escapes() {
        let root = Path::new("/data/out");
        assert_eq!(safe_join(root, "a/b.png").unwrap(), root.join("a/b.png"));
        assert_eq!(safe_join(root, "").unwrap(), root);
        for bad in ["../x", "/etc/passwd", "a/../../x", "..", "a\\..\\b", "c:x"] {
            assert!(safe_join(root, bad).is_err(), "{bad} accepted");
        }
    }

    #[cfg(unix)]
    #[test]
    fn confined_join_refuses_links_out_of_the_folder() {
        use std::os::unix::fs::symlink;
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), b"s").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("out");
        std::fs::create_dir_all(root.join("real")).unwrap();
        symlink(outside.path().join("secret"), root.join("file_link")).unwrap();
        symlink(outside.path(), root.join("dir_link")).unwrap();
        symlink(root.join("loop"), root.join("loop")).unwrap();
        symlink(outside.path().join("none"), root.join("dangling")).unwrap();
        symlink(root.join("real"), root.join("inner_link")).unwrap();
        for bad in [
            "file_link",
            "dir_link",
            "dir_link/secret",
            "dir_link/new/file",
            "loop",
            "loop/x",
            "dangling",
            "dangling/x",
        ] {
            assert!(confined_join(&root, bad).is_err(), "{bad} accepted");
        }
        let canonical = root.canonicalize().unwrap();
        assert_eq!(
            confined_join(&root, "inner_link/a.png").unwrap(),
            canonical.join("real/a.png")
        );
        assert_eq!(
            confined_join(&root, "new/sub/b.txt").unwrap(),
            canonical.join("new/sub/b.txt")
        );
        let missing_root = dir.path().join("not/yet");
        assert_eq!(
            confined_join(&missing_root, "x").unwrap(),
            dir.path().canonicalize().unwrap().join("not/yet/x")
        );
    }

    #[test]
    fn numbered_files_never_clobber() {
        let dir = tempfile::tempdir().unwrap();
        let a = write_numbered(dir.path(), "img", "png", b"a").unwrap();
        let b = write_numbered(dir.path(), "img", "png", b"b").unwrap();
        assert_eq!(a, "img_00001_.png");
        assert_eq!(b, "img_00002_.png");
        assert_eq!(std::fs::read(dir.path().join(&a)).unwrap(), b"a");
        let leftovers = std::fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(leftovers, 2, "temporary files left behind");
    }

    #[test]
    fn atomic_write_replaces_whole_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/x.txt");
        atomic_write(&path, b"one").unwrap();
        atomic_write(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
    }
}
