//! libFuzzer entry for hatrunk-fuzz's `node_config` target.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| hatrunk_fuzz::node_config(data));
