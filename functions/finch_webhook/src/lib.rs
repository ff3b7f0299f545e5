//! `POST /finch/webhooks`: Finch's webhook deliveries, verified against `finch-signature` and
//! applied at once (see `perch::flows::webhook`). No JWT: the signature is the authentication.

use lambda_http::{Body, Request, Response};
use perch::app::Adapters;
use perch::flows::webhook;
use perch::http::{error_response, json_response, request_id};
use perch::runtime::Service;
use perch::{AppState, Error};

/// The services this function calls besides DynamoDB: their clients are built in init
/// (`AppState::build`); a test checks the list against the calls it makes.
pub const SERVICES: &[Service] = &[Service::SecretsManager, Service::EventBridge, Service::Sqs];

/// Larger than any Finch event; refuses abuse before any work.
const MAX_WEBHOOK_BYTES: usize = 256 * 1024;

/// Handles one delivery; every anticipated failure is a problem response, never an `Err`.
pub async fn handle<A: Adapters>(app: &AppState<A>, req: Request) -> Response<Body> {
    let span = perch::http::request_span(&req);
    span.run(respond(app, req)).await
}

async fn respond<A: Adapters>(app: &AppState<A>, req: Request) -> Response<Body> {
    match run(app, &req).await {
        Ok(outcome) => json_response(200, &outcome),
        Err(e) => error_response(&e, request_id(&req)),
    }
}

async fn run<A: Adapters>(app: &AppState<A>, req: &Request) -> Result<webhook::Outcome, Error> {
    let body: &[u8] = req.body().as_ref();
    if body.len() > MAX_WEBHOOK_BYTES {
        return Err(Error::PayloadTooLarge { limit: MAX_WEBHOOK_BYTES });
    }
    let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
    webhook::handle(app, header("finch-event-id"), header("finch-timestamp"), header("finch-signature"), body).await
}

#[cfg(test)]
mod tests {
    use lambda_http::http::Method;
    use perch::http::testing::{api_request, json};
    use perch::memory::{sample_config, sample_secret};

    use super::*;

    fn app() -> AppState<perch::memory::Memory> {
        let config = sample_config("http://127.0.0.1:9").unwrap();
        AppState::in_memory(config, sample_secret("client", "secret").unwrap()).unwrap().0
    }

    #[tokio::test]
    async fn oversized_unsigned_and_forged_deliveries_are_refused() {
        let big = "x".repeat(MAX_WEBHOOK_BYTES + 1);
        let r = handle(&app(), api_request(Method::POST, "/finch/webhooks", Some(&big), None)).await;
        assert_eq!((r.status().as_u16(), json(&r)["code"].as_str()), (413, Some("payload_too_large")));
        let r = handle(&app(), api_request(Method::POST, "/finch/webhooks", Some("{}"), None)).await;
        assert_eq!((r.status().as_u16(), json(&r)["code"].as_str()), (400, Some("webhook_headers_missing")));
        let mut req = api_request(Method::POST, "/finch/webhooks", Some("{}"), None);
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        for (k, v) in [
            ("finch-event-id", "msg_1".to_owned()),
            ("finch-timestamp", now.to_string()),
            ("finch-signature", "v1,AAAA".to_owned()),
        ] {
            req.headers_mut().insert(k, v.parse().unwrap());
        }
        let r = handle(&app(), req).await;
        assert_eq!((r.status().as_u16(), json(&r)["code"].as_str()), (401, Some("unauthenticated")));
    }
}
