//! Measures the sandbox: compiling a component, loading it from the compile
//! cache, and the per-call latency of `template` (fresh store, instantiate,
//! run, output checks), and prints a Markdown table for `docs/sandbox.md`.
//!
//! `cargo run --release -p cretok-host --example sandbox_bench`

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cretok_host::sandbox::{SandboxHost, SandboxLimits};
use cretok_node_api::{CancelToken, Inputs, Node, NullSink, Paths, RunContext, Value};

const CALLS: usize = 1000;
const LOADS: usize = 20;

fn main() -> anyhow::Result<()> {
    let component = build_template()?;
    let limits = SandboxLimits::default();

    let uncached = SandboxHost::new(limits.clone(), None)?;
    let compile = sample(5, || uncached.load_file(&component).map(drop))?;

    let cache = tempfile::tempdir()?;
    let cached = SandboxHost::new(limits, Some(cache.path()))?;
    cached.load_file(&component)?;
    let cached_load = sample(LOADS, || cached.load_file(&component).map(drop))?;

    let node = cached.load_file(&component)?;
    let inputs = Inputs::new()
        .with(
            "template",
            Value::String("a photo of a {var_2} mixture of {var_0} and {var_1}".into()),
        )
        .with("vars.var_0", Value::String("owl".into()))
        .with("vars.var_1", Value::String("teapot".into()))
        .with("vars.var_2", Value::String("whimsical".into()));
    let paths = Paths::new(std::env::temp_dir(), None);
    let cancel = CancelToken::new();
    let ctx = RunContext::new("1", &paths, &cancel, &NullSink);
    for _ in 0..50 {
        node.run(&inputs, &ctx)?;
    }
    let calls = sample(CALLS, || node.run(&inputs, &ctx).map(drop))?;

    println!("| measure | median | p99 | samples |");
    println!("|---|---|---|---|");
    row(
        "load `template`, uncached (compile + link + describe)",
        &compile,
    );
    row(
        "load `template` from the compile cache (+ link + describe)",
        &cached_load,
    );
    row(
        "`template` call (fresh store + instantiate + run + checks)",
        &calls,
    );
    Ok(())
}

/// Builds the example guests into components next to this binary's target dir.
fn build_template() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    // <target>/release/examples/sandbox_bench
    let target = exe.ancestors().nth(3).ok_or_else(|| {
        anyhow::anyhow!("cannot find the target directory from {}", exe.display())
    })?;
    let root = target.join("wasm-guests");
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../wit/examples");
    let out = root.join("components");
    cretok_componentize::build_workspace(
        &examples,
        &root.join("target"),
        &out,
        &["template".to_owned()],
    )?;
    Ok(out.join("template.wasm"))
}

/// Times `n` runs of `f`, sorted.
fn sample<E>(n: usize, mut f: impl FnMut() -> Result<(), E>) -> Result<Vec<Duration>, E> {
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        f()?;
        times.push(started.elapsed());
    }
    times.sort();
    Ok(times)
}

fn row(what: &str, sorted: &[Duration]) {
    let at = |q: f64| sorted[((sorted.len() - 1) as f64 * q).round() as usize];
    println!(
        "| {what} | {:.1?} | {:.1?} | {} |",
        at(0.5),
        at(0.99),
        sorted.len()
    );
}
