//! The enforcer agent: loads the kernel programs, compiles policy into their maps and
//! turns their events into verdict records.
//!
//! Layers, each importing only those below it: `cli` (operator verbs) → `api` (HTTP over
//! the Unix socket: server and client) → `daemon` (event loop, commands, engine, live
//! state, identities, records) → `kernel` (loader, maps, pins, events) → `policy` (pure:
//! model, validate, compile, evaluate, diff) → `enforcer_common`. `kube_client` (the
//! Kubernetes API client of the daemon's watches and the CLI's cluster verbs) sits at the
//! bottom beside `policy`.

pub mod api;
pub mod cli;
pub mod daemon;
pub mod kernel;
pub mod kube_client;
pub mod policy;
