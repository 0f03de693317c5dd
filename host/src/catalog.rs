//! The node types a running host knows: native nodes plus whatever custom
//! nodes are loaded, swapped atomically on reload.

use std::sync::{Arc, RwLock};

use cretok_nodes::Registry;

pub struct NodeCatalog {
    current: RwLock<Arc<Registry>>,
}

impl NodeCatalog {
    pub fn new(registry: Registry) -> Self {
        NodeCatalog {
            current: RwLock::new(Arc::new(registry)),
        }
    }

    /// The registry as it is now; a prompt keeps using its snapshot even if a reload happens.
    pub fn snapshot(&self) -> Arc<Registry> {
        Arc::clone(&self.current.read().unwrap_or_else(|p| p.into_inner()))
    }

    pub fn replace(&self, registry: Registry) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(registry);
    }
}
