//! The Node.js worker pool: spawns and supervises workers running the bridge, dispatches requests to entrypoints.
