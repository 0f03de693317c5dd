//! Sandboxed custom nodes, end to end: the example and hostile guests in
//! `wit/examples` are built from source (once per run, cached in the target
//! directory), loaded with `SandboxHost` and run through the `Node` trait.

mod budgets;
mod examples;
mod forge;
mod hostile;
mod loading;
mod support;
mod versions;
