//! Arbitrary bytes → request → every routing phase against the real fixture tables; no panic.
#![no_main]

use std::sync::OnceLock;

use ferry_router::Router;
use libfuzzer_sys::fuzz_target;

static ROUTERS: OnceLock<Vec<Router>> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let routers = ROUTERS.get_or_init(ferry_fuzz::routers);
    ferry_fuzz::run(routers, data);
});
