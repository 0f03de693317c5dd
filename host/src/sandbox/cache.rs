//! The on-disk cache of compiled components.
//!
//! Compiling a component with Cranelift takes about 100 ms; loading a
//! compiled artifact takes well under a millisecond. Artifacts are keyed by
//! the wasm's SHA-256 and the engine's precompile compatibility hash (the
//! wasmtime version and the code-generation settings), written atomically
//! (temporary file + rename) and end with the SHA-256 of their own bytes,
//! checked before use: several hosts sharing one data directory (scale-out
//! workers) may write the same entry at once, and a torn, truncated or
//! altered file is compiled again, never deserialized. The directory is
//! created private to the user the hosts run as.

use std::fs;
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::component::Component;
use wasmtime::Engine;

/// Compiled components, one file per (wasm, engine) pair.
#[derive(Debug, Clone)]
pub(crate) struct CompileCache {
    dir: PathBuf,
    engine_key: String,
}

impl CompileCache {
    /// Uses (and creates, private to this user) `dir`, which must belong to the
    /// host alone: whoever can write there can run native code in the host.
    pub(crate) fn open(dir: &Path, engine: &Engine) -> std::io::Result<Self> {
        create_private_dir(dir)?;
        let mut hasher = Sha256Hasher(Sha256::new());
        engine.precompile_compatibility_hash().hash(&mut hasher);
        Ok(CompileCache {
            dir: dir.to_owned(),
            engine_key: hex(&hasher.0.finalize()[..8]),
        })
    }

    /// Where the artifact of a wasm file with this SHA-256 lives.
    fn artifact_path(&self, wasm_sha256: &str) -> PathBuf {
        self.dir
            .join(format!("{wasm_sha256}-{}.cwasm", self.engine_key))
    }

    /// The cached component, if there is a usable one.
    pub(crate) fn get(&self, engine: &Engine, wasm_sha256: &str) -> Option<Component> {
        let path = self.artifact_path(wasm_sha256);
        // Read, not mapped: a file changed under a mapping would crash the host.
        let stored = fs::read(&path).ok()?;
        let Some(artifact) = verified(&stored) else {
            tracing::warn!(path = %path.display(), "recompiling, cache entry fails its checksum");
            return None;
        };
        // SAFETY: `deserialize` trusts the bytes to be an artifact that
        // `Component::serialize` produced with a compatible engine, as a
        // corrupt or forged one could run arbitrary native code. Only hosts
        // of this user write into `self.dir` (created private to them in
        // `open`, filled through `put` by an atomic rename), the bytes match
        // the checksum written with them, the name carries the engine's
        // compatibility hash, and wasmtime still checks the header's version
        // and settings and fails cleanly on a mismatch.
        #[allow(unsafe_code)]
        let component = unsafe { Component::deserialize(engine, artifact) };
        match component {
            Ok(component) => Some(component),
            Err(e) => {
                tracing::warn!(path = %path.display(), "recompiling, unusable cache entry: {e:#}");
                None
            }
        }
    }

    /// Stores a compiled component; failures only cost a recompilation later.
    pub(crate) fn put(&self, wasm_sha256: &str, component: &Component) {
        let path = self.artifact_path(wasm_sha256);
        let written = component
            .serialize()
            .map_err(|e| std::io::Error::other(format!("{e:#}")))
            .and_then(|bytes| {
                let mut file = tempfile::NamedTempFile::new_in(&self.dir)?;
                file.write_all(&bytes)?;
                file.write_all(&Sha256::digest(&bytes))?;
                file.persist(&path).map_err(|e| e.error)?;
                Ok(())
            });
        if let Err(e) = written {
            tracing::warn!(path = %path.display(), "could not cache a compiled component: {e}");
        }
    }
}

/// The artifact of a stored entry (artifact + its SHA-256), if the checksum holds.
fn verified(stored: &[u8]) -> Option<&[u8]> {
    let split = stored.len().checked_sub(CHECKSUM_BYTES)?;
    let (artifact, checksum) = stored.split_at(split);
    (Sha256::digest(artifact).as_slice() == checksum).then_some(artifact)
}

const CHECKSUM_BYTES: usize = 32;

/// The SHA-256 of `bytes`, in lowercase hex.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// Feeds `Hash` input into SHA-256, so the key is stable across processes.
struct Sha256Hasher(Sha256);

impl Hasher for Sha256Hasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    fn finish(&self) -> u64 {
        let digest = self.0.clone().finalize();
        u64::from_le_bytes(
            digest[..8]
                .try_into()
                .expect("a SHA-256 digest has 32 bytes"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_used_only_when_their_checksum_holds() {
        let mut stored = b"artifact bytes".to_vec();
        stored.extend_from_slice(&Sha256::digest(b"artifact bytes"));
        assert_eq!(verified(&stored), Some(&b"artifact bytes"[..]));
        let mut flipped = stored.clone();
        flipped[3] ^= 1;
        assert_eq!(verified(&flipped), None);
        assert_eq!(verified(&stored[..stored.len() - 1]), None, "truncated");
        assert_eq!(verified(&stored[..10]), None, "shorter than a checksum");
    }

    #[test]
    fn sha256_matches_the_standard_vector() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
