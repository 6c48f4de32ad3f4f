//! The Node.js worker pool: spawns and supervises workers running the bridge, dispatches requests to entrypoints.
//!
//! Each worker is a `node` process running `js/bridge/bridge.cjs` (embedded here) with the app's
//! project dir as cwd, serving HTTP/1.1 on a Unix socket. Ferry routes a request, then calls
//! [`WorkerPool::dispatch`] with an [`Invocation`] naming the entry module; request and response
//! bodies stream both ways.

mod error;
mod invocation;
mod pool;
pub mod sched;

pub use error::WorkerError;
pub use invocation::{
    ENTRY_HEADER, ERROR_HEADER, EntryKind, Invocation, InvocationMeta, KIND_HEADER, META_HEADER,
    NOT_FOUND_HEADER,
};
pub use pool::{PoolConfig, PoolStats, Startup, WorkerPool, WorkerResponseInfo};

/// The bridge script every worker runs (written to the pool's run dir at start).
pub const BRIDGE_JS: &str = include_str!("../../../js/bridge/bridge.cjs");
