#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| herald::fuzzing::contact_filter_query(data));
