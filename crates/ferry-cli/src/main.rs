//! The `ferry` command line: build and start.

fn main() {}
