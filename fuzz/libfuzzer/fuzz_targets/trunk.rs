//! libFuzzer entry for hatrunk-fuzz's `trunk` target.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| hatrunk_fuzz::trunk(data));
