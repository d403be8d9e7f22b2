//! libFuzzer entry for hatrunk-fuzz's `rpc` target.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| hatrunk_fuzz::rpc(data));
