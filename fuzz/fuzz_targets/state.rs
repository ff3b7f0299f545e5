//! A Connect `state` from the callback's query string: never panics, never verifies unless issued.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &str| {
    let key = [7u8; 32];
    assert!(perch::state_token::verify(&key, data).is_err() || data.len() == 45);
    let _ = perch::types::CustomerId::parse(data);
    let _ = perch::types::ConnectionId::parse(data);
    let _ = perch::connect::parse_code(data);
});
