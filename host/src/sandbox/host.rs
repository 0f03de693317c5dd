//! [`SandboxHost`]: loads the components of a custom-nodes folder as nodes.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use cretok_node_api::{Node, Registry};
use wasmtime::component::Component;
use wasmtime::Engine;

use super::cache::{sha256_hex, CompileCache};
use super::error::{HostError, LoadError};
use super::node::SandboxNode;
use super::runtime::{Caller, Runtime};
use super::schema::node_schema;
use super::wit::{GuestPre, Incompatible, SUPPORTED_VERSIONS};
use super::SandboxLimits;

/// Loads WebAssembly components as node types. One per process: it owns the
/// wasmtime engine and its epoch ticker thread, which the loaded nodes share.
pub struct SandboxHost {
    runtime: Arc<Runtime>,
    cache: Option<CompileCache>,
    /// Why components failed to load, by SHA-256, for failures that the same
    /// bytes would meet again: such a file is not compiled again until it
    /// changes.
    failed: Mutex<HashMap<String, String>>,
}

impl SandboxHost {
    /// A host enforcing `limits`. With `cache_dir`, compiled components are
    /// kept there (created private to this user); the folder must belong to
    /// the host alone, never be the custom-nodes folder itself.
    pub fn new(limits: SandboxLimits, cache_dir: Option<&Path>) -> Result<Self, HostError> {
        let runtime = Runtime::new(limits)?;
        let cache = cache_dir
            .map(|dir| {
                CompileCache::open(dir, &runtime.engine).map_err(|source| HostError::Cache {
                    dir: dir.to_owned(),
                    source,
                })
            })
            .transpose()?;
        Ok(SandboxHost {
            runtime: Arc::new(runtime),
            cache,
            failed: Mutex::new(HashMap::new()),
        })
    }

    /// The limits every call of this host's nodes runs under.
    pub fn limits(&self) -> &SandboxLimits {
        &self.runtime.limits
    }

    /// Loads every `*.wasm` file of `dir` as a node type. Files that fail
    /// come back as errors naming the file; the rest load. An id that a node
    /// of `native` has, or that more than one file declares, compared without
    /// case, is refused for every file that declares it: which file would win
    /// must not depend on file names. A missing folder holds no nodes. Call
    /// it again to reload: unchanged files come from the compile cache, and
    /// unchanged files that failed fail again without being compiled.
    pub fn load_dir(&self, dir: &Path, native: &Registry) -> (Vec<Arc<dyn Node>>, Vec<LoadError>) {
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return (Vec::new(), Vec::new()),
            Err(source) => {
                let dir = dir.to_owned();
                return (Vec::new(), vec![LoadError::ReadDir { dir, source }]);
            }
        };
        let mut files: Vec<_> = entries
            .filter_map(Result::ok)
            .map(|entry| entry.path())
            .filter(|path| {
                path.is_file()
                    && path
                        .extension()
                        .is_some_and(|ext| ext.eq_ignore_ascii_case("wasm"))
            })
            .collect();
        files.sort();
        let mut loaded = Vec::new();
        let mut errors = Vec::new();
        for path in files {
            match self.load_file(&path) {
                Ok(node) => loaded.push((path, node)),
                Err(e) => errors.push(e),
            }
        }
        let (nodes, refused) = refuse_collisions(loaded, native);
        errors.extend(refused);
        (nodes, errors)
    }

    /// `native` plus the custom nodes of `dir`, and the files that failed:
    /// what the server builds at start and swaps in on reload.
    pub fn registry_with_custom_nodes(
        &self,
        native: Registry,
        dir: &Path,
    ) -> (Registry, Vec<LoadError>) {
        let (nodes, errors) = self.load_dir(dir, &native);
        let mut registry = native;
        for node in nodes {
            registry.register(node);
        }
        (registry, errors)
    }

    /// Loads one component: refuses it if it is too large or failed before
    /// unchanged, compiles it (or reads the compile cache), checks its
    /// imports and version, links it and validates its `describe`.
    pub fn load_file(&self, path: &Path) -> Result<SandboxNode, LoadError> {
        let bytes = read_bounded(path, self.runtime.limits.file_bytes)?;
        let sha256 = sha256_hex(&bytes);
        if let Some(reason) = self
            .failed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&sha256)
        {
            return Err(LoadError::FailedBefore {
                path: path.to_owned(),
                reason: reason.clone(),
            });
        }
        let loaded = self.load_bytes(path, &bytes, &sha256);
        if let Err(e) = &loaded {
            if e.is_lasting() {
                let mut failed = self.failed.lock().unwrap_or_else(|p| p.into_inner());
                failed.insert(sha256, e.to_string());
            }
        }
        loaded
    }

    fn load_bytes(
        &self,
        path: &Path,
        bytes: &[u8],
        sha256: &str,
    ) -> Result<SandboxNode, LoadError> {
        let component = self.compile(path, bytes, sha256)?;
        let engine = &self.runtime.engine;
        let guest = match GuestPre::new(engine, &component) {
            Ok(Ok(guest)) => guest,
            Ok(Err(incompatible)) => return Err(incompatible_error(path, incompatible)),
            Err(e) => {
                return Err(LoadError::Link {
                    path: path.to_owned(),
                    reason: format!("{e:#}"),
                })
            }
        };
        let (described, log) = self
            .runtime
            .call(Caller::Loader, |store| guest.describe(store));
        for line in &log.lines {
            tracing::debug!(target: "cretok::sandbox", path = %path.display(), "describe: {}", line.message);
        }
        let described = described.map_err(|fault| LoadError::Describe {
            path: path.to_owned(),
            fault,
        })?;
        let component_name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let (schema, ports) = node_schema(described, &component_name, &self.runtime.limits)
            .map_err(|problem| LoadError::BadSchema {
                path: path.to_owned(),
                problem,
            })?;
        let file_name = path
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        Ok(SandboxNode::new(
            schema,
            ports,
            guest,
            file_name,
            sha256.to_owned(),
            Arc::clone(&self.runtime),
        ))
    }

    fn compile(&self, path: &Path, bytes: &[u8], sha256: &str) -> Result<Component, LoadError> {
        let engine = &self.runtime.engine;
        if let Some(component) = self.cache.as_ref().and_then(|c| c.get(engine, sha256)) {
            return Ok(component);
        }
        let invalid = |reason: String| LoadError::Invalid {
            path: path.to_owned(),
            reason,
        };
        let functions = count_functions(bytes).map_err(invalid)?;
        let max = self.runtime.limits.functions;
        if functions > max {
            return Err(LoadError::TooManyFunctions {
                path: path.to_owned(),
                functions,
                max,
            });
        }
        let budget = self.runtime.limits.compile_time;
        let component = compile_within(engine, bytes, budget)
            .ok_or_else(|| LoadError::CompileBudget {
                path: path.to_owned(),
                budget,
            })?
            .map_err(|e| invalid(format!("{e:#}")))?;
        if let Some(cache) = &self.cache {
            cache.put(sha256, &component);
        }
        Ok(component)
    }
}

/// Compiles on a thread of its own, waiting at most `budget`: `None` when the
/// compile overran. Cranelift cannot be stopped midway, so an overrunning
/// compile finishes in the background and its result is dropped; the caller
/// remembers the file as failed, so each file costs at most one such thread.
fn compile_within(
    engine: &Engine,
    bytes: &[u8],
    budget: Duration,
) -> Option<wasmtime::Result<Component>> {
    let (done, result) = mpsc::sync_channel(1);
    let (engine, bytes) = (engine.clone(), bytes.to_vec());
    let spawned = std::thread::Builder::new()
        .name("wasm-compile".into())
        .spawn(move || {
            let _ = done.send(Component::new(&engine, &bytes));
        });
    if let Err(e) = spawned {
        return Some(Err(wasmtime::Error::msg(format!(
            "cannot start a compile thread: {e}"
        ))));
    }
    result.recv_timeout(budget).ok()
}

/// Reads a file of at most `max` bytes; a larger one is refused before any
/// of it is read (and a file that grows meanwhile, once `max` is passed).
fn read_bounded(path: &Path, max: u64) -> Result<Vec<u8>, LoadError> {
    let read_error = |source| LoadError::Read {
        path: path.to_owned(),
        source,
    };
    let too_large = |size| LoadError::TooLarge {
        path: path.to_owned(),
        size,
        max,
    };
    let file = std::fs::File::open(path).map_err(read_error)?;
    let size = file.metadata().map_err(read_error)?.len();
    if size > max {
        return Err(too_large(size));
    }
    let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    file.take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(read_error)?;
    if bytes.len() as u64 > max {
        return Err(too_large(bytes.len() as u64));
    }
    Ok(bytes)
}

/// The functions defined by all core modules of a component (compiling is
/// linear in them), read without compiling anything.
fn count_functions(bytes: &[u8]) -> Result<u32, String> {
    let mut functions = 0u32;
    for payload in wasmparser::Parser::new(0).parse_all(bytes) {
        if let wasmparser::Payload::CodeSectionStart { count, .. } =
            payload.map_err(|e| e.to_string())?
        {
            functions = functions.saturating_add(count);
        }
    }
    Ok(functions)
}

/// Splits loaded nodes into those whose id is theirs alone (compared without
/// case, against `native` and each other) and errors for the rest.
fn refuse_collisions(
    loaded: Vec<(PathBuf, SandboxNode)>,
    native: &Registry,
) -> (Vec<Arc<dyn Node>>, Vec<LoadError>) {
    let native_ids: HashMap<String, &str> = native
        .names()
        .map(|name| (name.to_lowercase(), name))
        .collect();
    let mut files_by_id: HashMap<String, Vec<String>> = HashMap::new();
    for (_, node) in &loaded {
        let files = files_by_id
            .entry(node.schema().name.to_lowercase())
            .or_default();
        files.push(node.component().to_owned());
    }
    let mut nodes: Vec<Arc<dyn Node>> = Vec::new();
    let mut errors = Vec::new();
    for (path, node) in loaded {
        let id = node.schema().name;
        let key = id.to_lowercase();
        if let Some(native) = native_ids.get(&key) {
            let native = (*native).to_owned();
            errors.push(LoadError::NativeId { path, id, native });
            continue;
        }
        let others: Vec<String> = files_by_id[&key]
            .iter()
            .filter(|file| *file != node.component())
            .cloned()
            .collect();
        if others.is_empty() {
            nodes.push(Arc::new(node));
        } else {
            errors.push(LoadError::SharedId { path, id, others });
        }
    }
    (nodes, errors)
}

fn incompatible_error(path: &Path, incompatible: Incompatible) -> LoadError {
    let path = path.to_owned();
    match incompatible {
        Incompatible::NotANode { exports } => LoadError::NotANode { path, exports },
        Incompatible::UnsupportedVersion(version) => LoadError::UnsupportedVersion {
            path,
            version,
            supported: SUPPORTED_VERSIONS,
        },
        Incompatible::ForbiddenImport(import) => LoadError::ForbiddenImport { path, import },
    }
}
