//! The connection's synced data, from Perch's store (never Finch inline):
//!
//! - `GET /connections/{id}/changes?cursor&limit` — the change feed in order: each record
//!   added, updated or removed since `cursor`, with its current version; `next_cursor` and
//!   `has_more`. Without a cursor, from the beginning.
//! - `GET /connections/{id}/employees?cursor&limit&q` — the people as last synced: directory,
//!   individual and employment joined by `individual_id`, with each one's `person_id`, paged;
//!   `q` keeps those whose name contains it.
//! - `GET /people?cursor&limit` — the customer's people across its connections, each with its
//!   sources (connection, entity, `individual_id`) and the rule that linked each.
//! - `GET /people/{person_id}` — one person: each source's records, and their pay across
//!   connections, newest first, with totals per currency.
//!
//! Pages stay far inside Lambda's 6 MB response (see `perch::flows::sync::view`). Another
//! customer's connection or person is a 404; a cursor Perch did not issue a 400.

use lambda_http::{Body, Request, Response};
use perch::app::Adapters;
use perch::flows::people::view::{self as people, DEFAULT_PEOPLE, MAX_PEOPLE};
use perch::flows::sync::view::{self, DEFAULT_CHANGES, DEFAULT_EMPLOYEES, MAX_CHANGES, MAX_EMPLOYEES, page_limit};
use perch::http::{customer_from_claims, error_response, json_response, path_param, query_param, request_id};
use perch::runtime::Service;
use perch::{AppState, Error};

/// The services this function calls besides DynamoDB: their clients are built in init
/// (`AppState::build`); a test checks the list against the calls it makes.
pub const SERVICES: &[Service] = &[Service::Kms];

/// Handles one request; every anticipated failure is a problem response, never an `Err`.
pub async fn handle<A: Adapters>(app: &AppState<A>, req: Request) -> Response<Body> {
    let span = perch::http::request_span(&req);
    span.run(respond(app, req)).await
}

async fn respond<A: Adapters>(app: &AppState<A>, req: Request) -> Response<Body> {
    let answer = async {
        let customer = customer_from_claims(&req, &app.config.customer_claim)?;
        let cursor = query_param(&req, "cursor")?;
        let limit = query_param(&req, "limit")?;
        if req.uri().path().starts_with("/people") {
            if req.uri().path().trim_end_matches('/') == "/people" {
                let limit = page_limit(limit.as_deref(), DEFAULT_PEOPLE, MAX_PEOPLE)?;
                return Ok(json_response(200, &people::people(app, &customer, cursor.as_deref(), limit).await?));
            }
            let person = path_param(&req, "person_id", "person")?;
            return Ok(json_response(200, &people::person(app, &customer, person).await?));
        }
        let id = path_param(&req, "id", "connection")?;
        perch::http::RequestSpan::record_connection(id);
        if req.uri().path().ends_with("/employees") {
            let limit = page_limit(limit.as_deref(), DEFAULT_EMPLOYEES, MAX_EMPLOYEES)?;
            let q = query_param(&req, "q")?;
            let page = view::employees(app, &customer, id, cursor.as_deref(), limit, q.as_deref()).await?;
            Ok::<_, Error>(json_response(200, &page))
        } else {
            let limit = page_limit(limit.as_deref(), DEFAULT_CHANGES, MAX_CHANGES)?;
            Ok(json_response(200, &view::changes(app, &customer, id, cursor.as_deref(), limit).await?))
        }
    };
    answer.await.unwrap_or_else(|e| error_response(&e, request_id(&req)))
}

#[cfg(test)]
mod tests {
    use lambda_http::http::Method;
    use perch::http::testing::{api_request, json, with_path, with_query};
    use perch::memory::{sample_config, sample_secret};

    use super::*;

    #[tokio::test]
    async fn foreign_ids_are_404_and_bad_queries_400() {
        let config = sample_config("http://127.0.0.1:9").unwrap();
        let (app, _) = AppState::in_memory(config, sample_secret("client", "secret").unwrap()).unwrap();
        for path in ["/connections/c-1/changes", "/connections/c-1/employees"] {
            let req = with_path(api_request(Method::GET, path, None, Some("acme")), &[("id", "c-1")]);
            let r = handle(&app, req).await;
            assert_eq!((r.status().as_u16(), json(&r)["code"].as_str()), (404, Some("not_found")), "{path}");
            for (k, bad) in [("limit", "0"), ("limit", "100000"), ("cursor", "forged")] {
                let req = with_path(api_request(Method::GET, path, None, Some("acme")), &[("id", "c-1")]);
                let r = handle(&app, with_query(req, &[(k, bad)])).await;
                assert_eq!(r.status().as_u16(), 400, "{path} {k}={bad}");
            }
        }
        let req = with_path(api_request(Method::GET, "/people/p-1", None, Some("acme")), &[("person_id", "p-1")]);
        let r = handle(&app, req).await;
        assert_eq!((r.status().as_u16(), json(&r)["code"].as_str()), (404, Some("not_found")));
        let r = handle(&app, api_request(Method::GET, "/people", None, Some("acme"))).await;
        assert_eq!((r.status().as_u16(), json(&r)["people"].as_array().map(Vec::len)), (200, Some(0)));
        for (k, bad) in [("limit", "0"), ("limit", "201"), ("cursor", "forged")] {
            let r =
                handle(&app, with_query(api_request(Method::GET, "/people", None, Some("acme")), &[(k, bad)])).await;
            assert_eq!(r.status().as_u16(), 400, "/people {k}={bad}");
        }
        let r = handle(&app, api_request(Method::GET, "/people", None, None)).await;
        assert_eq!(r.status().as_u16(), 401, "no customer in the claims");
    }
}
