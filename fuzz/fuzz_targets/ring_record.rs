//! Ring-buffer records from untrusted bytes: decode or a typed error.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = detector::event::decode::decode(data);
});
