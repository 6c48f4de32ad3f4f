//! Arbitrary bytes → the image optimizer's sniff + pixel-limit check + decode + resize + encode
//! (`ferry_image::transform_source`, what the server runs on a fetched body); no panic, no hang.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../crates/ferry-image/tests/support/fuzz_input.rs"]
mod fuzz_input;

fuzz_target!(|data: &[u8]| fuzz_input::run(data));
