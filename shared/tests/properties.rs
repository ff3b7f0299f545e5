//! Properties of everything that parses untrusted input: it never panics, accepts what it
//! issued, and refuses what was tampered with. (proptest; `PROPTEST_CASES` for longer runs.)

// Test helpers: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use lambda_http::request::RequestContext;
use lambda_http::{Body, RequestExt};
use perch::Error;
use perch::crypto::state as state_token;
use perch::domain::{AuthorizationCode, ConnectionId, CustomerId, MAX_MINUTES_TO_EXPIRE};
use perch::flows::lifecycle::ReauthRequest;
use perch::flows::session::NewSessionRequest;
use perch::flows::webhook;
use perch::http::{customer_from_claims, json_body, query_param};
use proptest::prelude::*;
use sha2::Sha256;

const KEY: &[u8] = &[9u8; 32];
const SECRET: &str = "5WbX5kEWLlfzsGNjH64I8lOOqUB6e8FH";

fn sign(id: &str, ts: i64, body: &[u8]) -> String {
    let key = STANDARD.decode(SECRET).unwrap();
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{ts}.").as_bytes());
    mac.update(body);
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

fn request_with_claims(claims: Vec<(String, String)>) -> lambda_http::Request {
    let mut ctx = lambda_http::aws_lambda_events::apigw::ApiGatewayV2httpRequestContext::default();
    let mut jwt = lambda_http::aws_lambda_events::apigw::ApiGatewayRequestAuthorizerJwtDescription::default();
    jwt.claims = claims.into_iter().collect();
    let mut auth = lambda_http::aws_lambda_events::apigw::ApiGatewayRequestAuthorizer::default();
    auth.jwt = Some(jwt);
    ctx.authorizer = Some(auth);
    lambda_http::Request::default().with_request_context(RequestContext::ApiGatewayV2(ctx))
}

proptest! {
    #[test]
    fn states_verify_only_as_issued(garbage in ".{0,80}", flip in 0usize..45, byte in any::<u8>()) {
        // Forging a tag by chance is a 2⁻¹²⁸ event: anything not issued is refused.
        prop_assert!(state_token::verify(KEY, &garbage).is_err());
        let (value, id) = state_token::issue(KEY).unwrap();
        prop_assert_eq!(state_token::verify(KEY, &value).unwrap(), id);
        let mut bytes = value.clone().into_bytes();
        if bytes[flip] != byte {
            bytes[flip] = byte;
            if let Ok(s) = String::from_utf8(bytes) {
                prop_assert!(state_token::verify(KEY, &s).is_err());
            }
        }
    }

    #[test]
    fn webhook_verification_never_panics_and_binds_the_raw_body(
        id in "[ -~]{0,40}", ts in ".{0,20}", sig in ".{0,200}", body in proptest::collection::vec(any::<u8>(), 0..512),
        flip in any::<prop::sample::Index>(),
    ) {
        let now = 1_700_000_000;
        // Random headers never verify, and missing ones are the caller's 400, not our 500.
        prop_assert!(webhook::verify(SECRET, Some(&id), Some(&ts), Some(&sig), &body, now).is_err());
        let missing = webhook::verify(SECRET, None, Some(&ts), None, &body, now);
        prop_assert!(matches!(missing, Err(Error::Invalid { code: "webhook_headers_missing", .. })), "{:?}", missing);
        let good = sign("msg_1", now, &body);
        prop_assert!(webhook::verify(SECRET, Some("msg_1"), Some(&now.to_string()), Some(&good), &body, now).is_ok());
        if !body.is_empty() {
            let mut tampered = body.clone();
            let i = flip.index(tampered.len());
            tampered[i] ^= 0x01;
            prop_assert!(webhook::verify(SECRET, Some("msg_1"), Some(&now.to_string()), Some(&good), &tampered, now).is_err());
        }
    }

    #[test]
    fn ids_and_codes_never_panic_and_accept_only_safe_values(s in ".{0,300}") {
        if let Ok(c) = CustomerId::parse(s.clone()) {
            prop_assert!(!c.as_str().is_empty() && c.as_str().len() <= 128 && !c.as_str().contains('#'));
        }
        if let Ok(c) = ConnectionId::parse(s.clone()) {
            prop_assert!(c.as_str().bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:@|".contains(&b)));
        }
        if let Ok(code) = AuthorizationCode::parse(&s) {
            prop_assert!(!code.expose_secret().contains(' '));
        }
    }

    #[test]
    fn the_customer_comes_from_the_claim_or_the_request_is_refused(
        claims in proptest::collection::vec(("[a-z_:]{1,20}", ".{0,200}"), 0..6),
    ) {
        let req = request_with_claims(claims.clone());
        match customer_from_claims(&req, "customer_id") {
            Ok(c) => {
                let given = claims.iter().rev().find(|(k, _)| k == "customer_id").map(|(_, v)| v.clone());
                prop_assert_eq!(Some(c.as_str().to_owned()), given);
            }
            Err(e) => prop_assert!(matches!(e, Error::Unauthenticated(_)), "{:?}", e),
        }
    }

    #[test]
    fn json_bodies_and_queries_never_panic(body in proptest::collection::vec(any::<u8>(), 0..20_000), q in ".{0,64}") {
        let mut req = lambda_http::Request::new(Body::Binary(body));
        req.headers_mut().insert("content-type", "application/json".parse().unwrap());
        match json_body::<NewSessionRequest>(&req) {
            Ok(r) => check_validation(&r)?,
            Err(e) => prop_assert!(matches!(e, Error::Invalid { .. } | Error::PayloadTooLarge { .. }), "{:?}", e),
        }
        if let Err(e) = json_body::<ReauthRequest>(&req) {
            prop_assert!(matches!(e, Error::Invalid { .. } | Error::PayloadTooLarge { .. }), "{:?}", e);
        }
        let req = lambda_http::Request::default()
            .with_query_string_parameters(std::collections::HashMap::from([("limit".to_owned(), vec![q.clone(), q])]));
        prop_assert!(query_param(&req, "limit").is_err(), "a repeated parameter is refused");
    }

    #[test]
    fn session_requests_are_valid_exactly_when_finch_would_take_them(v in json_value()) {
        if let Ok(r) = serde_json::from_value::<NewSessionRequest>(v) {
            check_validation(&r)?;
        }
    }
}

/// `validate` accepts only what Finch takes, and refuses with a 400 otherwise.
fn check_validation(r: &NewSessionRequest) -> Result<(), TestCaseError> {
    let distinct = r.products.iter().collect::<std::collections::HashSet<_>>().len() == r.products.len();
    let finch_would_take = !r.products.is_empty()
        && distinct
        && r.minutes_to_expire.is_none_or(|m| (1..=MAX_MINUTES_TO_EXPIRE).contains(&m))
        && r.customer_name.as_ref().is_none_or(|n| !n.trim().is_empty() && n.chars().count() <= 255);
    match r.validate() {
        Ok(()) => prop_assert!(finch_would_take, "accepted {r:?}"),
        Err(e) => prop_assert!(matches!(e, Error::Invalid { .. }), "{e:?}"),
    }
    Ok(())
}

fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        prop_oneof![Just("company".to_owned()), Just("redirect".to_owned()), ".{0,20}".prop_map(String::from)]
            .prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::from),
            proptest::collection::hash_map(
                prop_oneof![
                    Just("products".to_owned()),
                    Just("flow".to_owned()),
                    Just("integration".to_owned()),
                    Just("minutes_to_expire".to_owned()),
                    "[a-z_]{1,12}".prop_map(String::from)
                ],
                inner,
                0..6
            )
            .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}
