//! JSON bodies of every route that takes one: never panic, validation included.
#![no_main]

use lambda_http::Body;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let mut req = lambda_http::Request::new(Body::Binary(data.to_vec()));
    req.headers_mut().insert("content-type", lambda_http::http::HeaderValue::from_static("application/json"));
    if let Ok(r) = perch::http::json_body::<perch::connect::NewSessionRequest>(&req) {
        let _ = r.validate();
    }
    let _ = perch::http::json_body::<perch::lifecycle::ReauthRequest>(&req);
});
