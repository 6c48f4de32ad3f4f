//! Next.js routing phases in Rust: resolves a request against the manifest's routing tables, pure and I/O-free.
