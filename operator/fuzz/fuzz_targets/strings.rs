#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| firedrill_fuzz::strings(data));
