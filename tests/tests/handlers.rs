//! The handlers fed real API Gateway (HTTP API, payload v2) events from fixtures, with AWS
//! pointed at a closed port: each case must be decided at the edge, before any AWS or Finch
//! call (a call would fail and turn the answer into a 5xx).

use lambda_http::{Body, Response};
use perch::{AppState, Config};
use serde_json::Value;

async fn offline_app() -> AppState<perch::aws::Aws> {
    let config = Config::from_lookup(|k| {
        Some(
            match k {
                "TABLE_NAME" => "t",
                "KMS_KEY_ID" => "alias/k",
                "FINCH_SECRET_ID" => "s",
                "FINCH_API_URL" => "http://127.0.0.1:9",
                "FINCH_REDIRECT_URI" => "https://api.example.com/connect/callback",
                "APP_RETURN_URL" => "https://app.example.com/",
                _ => return None,
            }
            .to_owned(),
        )
    })
    .unwrap();
    let sdk = aws_config::SdkConfig::builder()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .endpoint_url("http://127.0.0.1:9")
        .build();
    AppState::on_aws(config, &sdk, &[]).unwrap()
}

fn event(name: &str) -> lambda_http::Request {
    let path = format!("{}/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    lambda_http::request::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn problem(r: Response<Body>) -> (u16, Value) {
    let status = r.status().as_u16();
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    assert_eq!(r.headers()["cache-control"], "no-store");
    let body: Value = serde_json::from_slice(r.body().as_ref()).unwrap();
    assert_eq!(body["request_id"], "req-fixture-1", "the API Gateway request id is echoed for support");
    (status, body)
}

#[tokio::test]
async fn create_session_rejects_an_unknown_product() {
    let app = offline_app().await;
    let (s, p) =
        problem(create_connect_session::handle(&app, event("apigw_v2_create_session_unknown_product.json")).await);
    assert_eq!((s, p["code"].as_str().unwrap()), (400, "invalid_body"));
    assert!(p["detail"].as_str().unwrap().contains("payroll"));
}

#[tokio::test]
async fn create_session_requires_the_customer_claim() {
    let app = offline_app().await;
    let (s, p) = problem(
        create_connect_session::handle(&app, event("apigw_v2_create_session_without_customer_claim.json")).await,
    );
    assert_eq!((s, p["code"].as_str().unwrap()), (401, "unauthenticated"));
}

#[tokio::test]
async fn create_session_refuses_a_customer_in_a_base64_body() {
    let app = offline_app().await;
    let (s, p) =
        problem(create_connect_session::handle(&app, event("apigw_v2_create_session_customer_in_body.json")).await);
    assert_eq!((s, p["code"].as_str().unwrap()), (400, "invalid_body"));
    assert!(p["detail"].as_str().unwrap().contains("customer_id"));
}

#[tokio::test]
async fn redirect_callback_without_state_goes_back_to_the_app_before_any_call() {
    let app = offline_app().await;
    let r = oauth_callback::handle(&app, event("apigw_v2_callback_without_state.json")).await;
    assert_eq!(r.status().as_u16(), 302);
    let to = r.headers()["location"].to_str().unwrap().to_owned();
    assert!(to.contains("outcome=error") && to.contains("reason=state_invalid") && to.contains("next=restart"), "{to}");
    assert!(to.contains("request_id=req-fixture-1"), "the API Gateway request id rides along for support: {to}");
}

#[tokio::test]
async fn embedded_callback_does_not_echo_a_malformed_body() {
    let app = offline_app().await;
    let (s, p) = problem(oauth_callback::handle(&app, event("apigw_v2_embedded_callback_bad_body.json")).await);
    assert_eq!((s, p["code"].as_str().unwrap()), (400, "invalid_body"));
    assert!(!p.to_string().contains("42"));
}

#[tokio::test]
async fn list_connections_bounds_the_page_size() {
    let app = offline_app().await;
    let (s, p) = problem(list_connections::handle(&app, event("apigw_v2_list_connections_bad_limit.json")).await);
    assert_eq!((s, p["code"].as_str().unwrap()), (400, "invalid_limit"));
}
