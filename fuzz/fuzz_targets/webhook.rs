//! A webhook delivery: arbitrary headers and raw body never panic the verifier.
#![no_main]

libfuzzer_sys::fuzz_target!(|input: (&str, &str, &str, &[u8])| {
    let (id, ts, sig, body) = input;
    let _ = perch::webhook::verify("5WbX5kEWLlfzsGNjH64I8lOOqUB6e8FH", Some(id), Some(ts), Some(sig), body, 1_700_000_000);
    if let Ok(event) = serde_json::from_slice::<perch::webhook::Event>(body) {
        if let Some(data) = event.data {
            let _ = serde_json::from_value::<perch::webhook::AccountUpdated>(data);
        }
    }
});
