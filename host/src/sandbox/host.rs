//! [`SandboxHost`]: loads the components of a custom-nodes folder as nodes.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use cretok_nodes::{Node, Registry};
use wasmtime::component::Component;

use super::cache::{sha256_hex, CompileCache};
use super::error::{HostError, LoadError};
use super::node::SandboxNode;
use super::runtime::Runtime;
use super::schema::node_schema;
use super::wit::{GuestPre, Incompatible, SUPPORTED_VERSIONS};
use super::SandboxLimits;

/// Loads WebAssembly components as node types. One per process: it owns the
/// wasmtime engine and its epoch ticker thread, which the loaded nodes share.
pub struct SandboxHost {
    runtime: Arc<Runtime>,
    cache: Option<CompileCache>,
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
        })
    }

    /// The limits every call of this host's nodes runs under.
    pub fn limits(&self) -> &SandboxLimits {
        &self.runtime.limits
    }

    /// Loads every `*.wasm` file of `dir` (in name order) as a node type.
    /// Files that fail, and ids that a node of `native` or an earlier file
    /// already has, come back as errors naming the file; the rest load. A
    /// missing folder holds no nodes. Call it again to reload: unchanged
    /// files come from the compile cache.
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
        let mut nodes: Vec<Arc<dyn Node>> = Vec::new();
        let mut errors = Vec::new();
        let mut taken: HashMap<String, String> = HashMap::new();
        for path in files {
            let node = match self.load_file(&path) {
                Ok(node) => node,
                Err(e) => {
                    errors.push(e);
                    continue;
                }
            };
            let id = node.schema().name;
            let taken_by = if native.get(&id).is_some() {
                Some("a built-in node".to_owned())
            } else {
                taken.get(&id).cloned()
            };
            if let Some(taken_by) = taken_by {
                errors.push(LoadError::DuplicateId { path, id, taken_by });
                continue;
            }
            taken.insert(id, node.component().to_owned());
            nodes.push(Arc::new(node));
        }
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

    /// Loads one component: compiles it (or reads the compile cache), checks
    /// its imports and version, links it and validates its `describe`.
    pub fn load_file(&self, path: &Path) -> Result<SandboxNode, LoadError> {
        let bytes = std::fs::read(path).map_err(|source| LoadError::Read {
            path: path.to_owned(),
            source,
        })?;
        let component = self.compile(path, &bytes)?;
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
        let (described, log) = self.runtime.call(|store| guest.describe(store));
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
        let (schema, ports) =
            node_schema(described, &component_name).map_err(|problem| LoadError::BadSchema {
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
            Arc::clone(&self.runtime),
        ))
    }

    fn compile(&self, path: &Path, bytes: &[u8]) -> Result<Component, LoadError> {
        let engine = &self.runtime.engine;
        let sha256 = sha256_hex(bytes);
        if let Some(component) = self.cache.as_ref().and_then(|c| c.get(engine, &sha256)) {
            return Ok(component);
        }
        let component = Component::new(engine, bytes).map_err(|e| LoadError::Invalid {
            path: path.to_owned(),
            reason: format!("{e:#}"),
        })?;
        if let Some(cache) = &self.cache {
            cache.put(&sha256, &component);
        }
        Ok(component)
    }
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
