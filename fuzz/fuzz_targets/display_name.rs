#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| latchkey_fuzz::display_name::run(data));
