//! The node types a running host knows: native nodes plus whatever custom
//! nodes are loaded, swapped atomically on reload.

use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::Duration;

use cretok_node_api::Registry;

pub struct NodeCatalog {
    current: RwLock<Arc<Registry>>,
    rebuilds: Mutex<Rebuilds>,
    /// Held while a rebuild runs.
    turn: Mutex<()>,
    /// Whether a background load is still under way, and the signal of its end.
    loading: Mutex<bool>,
    loaded: Condvar,
}

/// The rebuilds asked for and done, so that requests that wait for a running
/// rebuild are answered by the next one instead of each starting their own.
#[derive(Default)]
struct Rebuilds {
    /// Requests numbered in arrival order; the last number handed out.
    asked: u64,
    /// The number of the last request the finished rebuilds cover.
    covered: u64,
    /// The problems the last rebuild reported.
    problems: Vec<String>,
}

impl NodeCatalog {
    pub fn new(registry: Registry) -> Self {
        NodeCatalog {
            current: RwLock::new(Arc::new(registry)),
            rebuilds: Mutex::new(Rebuilds::default()),
            turn: Mutex::new(()),
            loading: Mutex::new(false),
            loaded: Condvar::new(),
        }
    }

    /// Serves the registry it has now while `build` makes the full one on a
    /// thread of its own (custom nodes compiling at start-up); the result is
    /// swapped in as by [`NodeCatalog::rebuild`].
    pub fn rebuild_in_background(
        self: &Arc<Self>,
        build: impl FnOnce() -> (Registry, Vec<String>) + Send + 'static,
    ) -> std::io::Result<()> {
        *self.lock_loading() = true;
        let catalog = Arc::clone(self);
        let spawned = std::thread::Builder::new()
            .name("node-catalog".into())
            .spawn(move || {
                let problems = catalog.rebuild(build);
                let count = catalog.snapshot().names().count();
                tracing::info!(
                    "node catalog ready: {count} node types ({} custom node files refused)",
                    problems.len()
                );
            });
        if spawned.is_err() {
            self.finish_loading();
        }
        spawned.map(drop)
    }

    /// The registry once a background load has finished, waiting for it at
    /// most `patience` (then the registry as it is).
    pub fn settled_snapshot(&self, patience: Duration) -> Arc<Registry> {
        let loading = self.lock_loading();
        drop(
            self.loaded
                .wait_timeout_while(loading, patience, |loading| *loading)
                .unwrap_or_else(|p| p.into_inner()),
        );
        self.snapshot()
    }

    fn finish_loading(&self) {
        *self.lock_loading() = false;
        self.loaded.notify_all();
    }

    fn lock_loading(&self) -> std::sync::MutexGuard<'_, bool> {
        self.loading.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The registry as it is now; a prompt keeps using its snapshot even if a reload happens.
    pub fn snapshot(&self) -> Arc<Registry> {
        Arc::clone(&self.current.read().unwrap_or_else(|p| p.into_inner()))
    }

    pub fn replace(&self, registry: Registry) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(registry);
    }

    /// Builds a new registry with `build` and swaps it in once; returns the
    /// problems `build` reported. One rebuild runs at a time. A request that
    /// arrives while one runs waits; when its turn comes, if a rebuild that
    /// started after it arrived has finished meanwhile, it gets that one's
    /// problems instead of rebuilding again (many reloads coalesce into two).
    pub fn rebuild(&self, build: impl FnOnce() -> (Registry, Vec<String>)) -> Vec<String> {
        let ticket = {
            let mut rebuilds = self.lock_rebuilds();
            rebuilds.asked += 1;
            rebuilds.asked
        };
        let _turn = self.turn.lock().unwrap_or_else(|p| p.into_inner());
        let started_at = {
            let rebuilds = self.lock_rebuilds();
            if rebuilds.covered >= ticket {
                return rebuilds.problems.clone();
            }
            rebuilds.asked
        };
        let (registry, problems) = build();
        self.replace(registry);
        self.finish_loading();
        let mut rebuilds = self.lock_rebuilds();
        rebuilds.covered = started_at;
        rebuilds.problems.clone_from(&problems);
        problems
    }

    fn lock_rebuilds(&self) -> std::sync::MutexGuard<'_, Rebuilds> {
        self.rebuilds.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    /// A node type that only has a name.
    struct Named;

    impl cretok_node_api::Node for Named {
        fn schema(&self) -> cretok_node_api::NodeSchema {
            cretok_node_api::NodeSchema::new("Named", "test")
        }

        fn run(
            &self,
            _: &cretok_node_api::Inputs,
            _: &cretok_node_api::RunContext,
        ) -> Result<cretok_node_api::NodeOutput, cretok_node_api::NodeError> {
            Ok(cretok_node_api::NodeOutput::values(Vec::new()))
        }
    }

    fn registry_with_one_node() -> Registry {
        let mut registry = Registry::default();
        registry.register(Arc::new(Named));
        registry
    }

    #[test]
    fn a_background_load_serves_the_old_registry_and_settles_on_the_new() {
        let catalog = Arc::new(NodeCatalog::new(Registry::default()));
        let (release, released) = std::sync::mpsc::channel::<()>();
        catalog
            .rebuild_in_background(move || {
                released.recv().ok();
                (registry_with_one_node(), Vec::new())
            })
            .unwrap();
        assert_eq!(
            catalog.snapshot().names().count(),
            0,
            "served while loading"
        );
        let impatient = catalog.settled_snapshot(Duration::from_millis(20));
        assert_eq!(impatient.names().count(), 0, "patience is bounded");
        release.send(()).unwrap();
        let settled = catalog.settled_snapshot(Duration::from_secs(10));
        assert!(settled.get("Named").is_some(), "waited for the load");
    }

    #[test]
    fn concurrent_rebuilds_run_one_at_a_time_and_coalesce() {
        let catalog = NodeCatalog::new(Registry::default());
        let running = AtomicUsize::new(0);
        let builds = AtomicUsize::new(0);
        std::thread::scope(|scope| {
            for _ in 0..20 {
                scope.spawn(|| {
                    let problems = catalog.rebuild(|| {
                        assert_eq!(running.fetch_add(1, Ordering::SeqCst), 0, "two at once");
                        let n = builds.fetch_add(1, Ordering::SeqCst);
                        std::thread::sleep(Duration::from_millis(30));
                        running.fetch_sub(1, Ordering::SeqCst);
                        (Registry::default(), vec![format!("build {n}")])
                    });
                    assert_eq!(problems.len(), 1);
                });
            }
        });
        let builds = builds.load(Ordering::SeqCst);
        assert!(
            (1..=3).contains(&builds),
            "{builds} rebuilds for 20 requests"
        );
    }
}
