//! Perch's own API contract (`api/openapi.json`) against the handlers: the document names
//! exactly the routes the stack serves, and every answer of a walk through all routes —
//! successes and errors — matches the status, content type and schema the document gives.

use openapi_referee::Spec;
use perch_tests::{TestStack, location};
use serde_json::{Value, json};

fn spec() -> Spec {
    Spec::from_json(include_str!("../../api/openapi.json")).unwrap()
}

struct Checker {
    spec: Spec,
    checked: usize,
    problems: Vec<String>,
}

impl Checker {
    async fn check(&mut self, method: &str, path: &str, r: reqwest::Response) -> (u16, Value) {
        let status = r.status().as_u16();
        let ct = r.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
        assert_eq!(r.headers().get("cache-control").and_then(|v| v.to_str().ok()), Some("no-store"), "{method} {path}");
        let body = r.bytes().await.unwrap();
        let op = self.spec.operation(method, path).unwrap_or_else(|| panic!("{method} {path} is not in the document"));
        self.problems.extend(self.spec.check_response(&op, status, &ct, &body));
        self.checked += 1;
        (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
    }
}

#[test]
fn the_document_names_exactly_the_served_routes() {
    let mut documented = spec().operations();
    documented.sort();
    let mut served: Vec<(String, String)> =
        perch_local::ROUTES.iter().map(|(m, p, ..)| ((*m).to_owned(), (*p).to_owned())).collect();
    served.sort();
    assert_eq!(documented, served);
}

#[tokio::test]
async fn every_route_answers_as_documented() {
    let stack = TestStack::start_syncing(|_| {}).await;
    stack.enable_webhooks().await;
    let mut c = Checker { spec: spec(), checked: 0, problems: Vec::new() };
    let acme = stack.token("acme");
    let globex = stack.token("globex");

    // create-session: 201, 400 (body, products), 401 (no claim), 413.
    let r = stack.post_json("/connect/sessions", Some(&acme), &json!({"products": ["company", "directory"]})).await;
    let (_, session) = c.check("POST", "/connect/sessions", r).await;
    for body in [json!({}), json!({"products": ["payroll"]}), json!({"products": []})] {
        let r = stack.post_json("/connect/sessions", Some(&acme), &body).await;
        assert_eq!(c.check("POST", "/connect/sessions", r).await.0, 400);
    }
    let no_claim = stack.auth.issue_claims(json!({"sub": "x"}).as_object().unwrap()).unwrap();
    let r = stack.post_json("/connect/sessions", Some(&no_claim), &json!({"products": ["company"]})).await;
    assert_eq!(c.check("POST", "/connect/sessions", r).await.0, 401);
    let r = stack
        .http
        .post(format!("{}/connect/sessions", stack.base))
        .bearer_auth(&acme)
        .header("content-type", "application/json")
        .body("x".repeat(20_000))
        .send()
        .await
        .unwrap();
    assert_eq!(c.check("POST", "/connect/sessions", r).await.0, 413);

    // The redirect callback: always a 302 back to the app, also for the replay and for a
    // missing state.
    let r = stack.login_at_finch(session["connect_url"].as_str().unwrap()).await;
    let callback = location(&r);
    let r = stack.get(&callback, None).await;
    assert_eq!(c.check("GET", "/connect/callback", r).await.0, 302);
    let r = stack.get(&callback, None).await;
    assert_eq!(c.check("GET", "/connect/callback", r).await.0, 302);
    let r = stack.get("/connect/callback?code=abc", None).await;
    assert_eq!(c.check("GET", "/connect/callback", r).await.0, 302);

    // The embedded callback: 201, 200 (replay), 400.
    let e = stack.new_session("acme", json!({"flow": "embedded", "products": ["company"], "additional": true})).await;
    // Another employer than the redirect flow's (the same one would be `duplicate`, a 200).
    let url = e["connect_url"].as_str().unwrap();
    let html = perch_tests::finch_login(&stack.http, url, "gusto", "good_user+2", None).await.text().await.unwrap();
    let code = html.split("data-code=\"").nth(1).and_then(|r| r.split('"').next()).unwrap().to_owned();
    let r = stack.post_json("/connect/callback", Some(&acme), &json!({"code": code, "state": e["state"]})).await;
    assert_eq!(c.check("POST", "/connect/callback", r).await.0, 201);
    let again =
        stack.new_session("acme", json!({"flow": "embedded", "products": ["company"], "additional": true})).await;
    let r = stack.post_json("/connect/callback", Some(&acme), &json!({"code": code, "state": again["state"]})).await;
    assert_eq!(c.check("POST", "/connect/callback", r).await.0, 200);
    let r = stack.post_json("/connect/callback", Some(&acme), &json!({"code": 1})).await;
    assert_eq!(c.check("POST", "/connect/callback", r).await.0, 400);

    // The listing: 200 (and a page with a cursor), 400.
    let r = stack.get("/connections?limit=1", Some(&acme)).await;
    let (_, page) = c.check("GET", "/connections", r).await;
    let id = page["connections"][0]["connection_id"].as_str().unwrap().to_owned();
    let r = stack.get(&format!("/connections?cursor={}", page["next_cursor"].as_str().unwrap()), Some(&acme)).await;
    assert_eq!(c.check("GET", "/connections", r).await.0, 200);
    let r = stack.get("/connections?limit=0", Some(&acme)).await;
    assert_eq!(c.check("GET", "/connections", r).await.0, 400);

    // Reauthentication: 201, 404, 400.
    let path = format!("/connections/{id}/reauthenticate");
    let r = stack.post_json(&path, Some(&acme), &json!({})).await;
    assert_eq!(c.check("POST", &path, r).await.0, 201);
    let r = stack.post_json(&path, Some(&globex), &json!({})).await;
    assert_eq!(c.check("POST", &path, r).await.0, 404);
    let r = stack.post_json(&path, Some(&acme), &json!({"minutes_to_expire": 0})).await;
    assert_eq!(c.check("POST", &path, r).await.0, 400);

    // Sync: 200, 202, 404 (another customer's); changes and employees: 200, 400, 404.
    let path = format!("/connections/{id}/sync");
    let r = stack.get(&path, Some(&acme)).await;
    assert_eq!(c.check("GET", &path, r).await.0, 200);
    let r = stack.post_json(&path, Some(&acme), &json!({})).await;
    assert_eq!(c.check("POST", &path, r).await.0, 202);
    let r = stack.get(&path, Some(&globex)).await;
    assert_eq!(c.check("GET", &path, r).await.0, 404);
    let r = stack.post_json(&path, Some(&globex), &json!({})).await;
    assert_eq!(c.check("POST", &path, r).await.0, 404);
    for list in ["changes", "employees"] {
        let path = format!("/connections/{id}/{list}");
        let r = stack.get(&format!("{path}?limit=2"), Some(&acme)).await;
        assert_eq!(c.check("GET", &path, r).await.0, 200, "{list}");
        let r = stack.get(&format!("{path}?cursor=forged"), Some(&acme)).await;
        assert_eq!(c.check("GET", &path, r).await.0, 400, "{list}");
        let r = stack.get(&path, Some(&globex)).await;
        assert_eq!(c.check("GET", &path, r).await.0, 404, "{list}");
    }

    // People: 200 (a page, a person), 400 (a forged cursor), 401, 404 (unknown, or another
    // customer's person). The queued syncs run first: their worker indexes the people.
    stack.run_sync_queue().await;
    let r = stack.get("/people?limit=2", Some(&acme)).await;
    let (status, page) = c.check("GET", "/people", r).await;
    assert_eq!(status, 200);
    let r = stack.get("/people?cursor=forged", Some(&acme)).await;
    assert_eq!(c.check("GET", "/people", r).await.0, 400);
    let r = stack.get("/people", Some(&no_claim)).await;
    assert_eq!(c.check("GET", "/people", r).await.0, 401);
    let person = page["people"][0]["person_id"].as_str().expect("the synced people are indexed");
    let path = format!("/people/{person}");
    let r = stack.get(&path, Some(&acme)).await;
    assert_eq!(c.check("GET", &path, r).await.0, 200);
    let r = stack.get(&path, Some(&globex)).await;
    assert_eq!(c.check("GET", &path, r).await.0, 404);
    let r = stack.get("/people/no-such-person", Some(&acme)).await;
    assert_eq!(c.check("GET", "/people/no-such-person", r).await.0, 404);

    // Webhooks: 200, 401, 400.
    let flipped = stack.flip(&id, "reauth").await;
    assert_eq!(flipped["webhook_status"], 200);
    let r = stack
        .http
        .post(format!("{}/finch/webhooks", stack.base))
        .header("finch-event-id", "msg_x")
        .header("finch-timestamp", "1")
        .header("finch-signature", "v1,AAAA")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(c.check("POST", "/finch/webhooks", r).await.0, 401);
    let r = stack.http.post(format!("{}/finch/webhooks", stack.base)).body("{}").send().await.unwrap();
    assert_eq!(c.check("POST", "/finch/webhooks", r).await.0, 400);
    let signed = stack.finch.shared.world().webhook.clone().unwrap();
    let body = json!({"event_type": "company.updated", "connection_id": id, "data": null}).to_string();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let sig = finch_emulator::webhooks::sign(&signed.secret, "msg_contract", now, &body).unwrap();
    let r = stack
        .http
        .post(format!("{}/finch/webhooks", stack.base))
        .header("finch-event-id", "msg_contract")
        .header("finch-timestamp", now.to_string())
        .header("finch-signature", sig)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(c.check("POST", "/finch/webhooks", r).await.0, 200);

    // Disconnect: 204, 204 again, 404.
    let path = format!("/connections/{id}");
    let r = stack.http.delete(format!("{}{path}", stack.base)).bearer_auth(&acme).send().await.unwrap();
    assert_eq!(c.check("DELETE", &path, r).await.0, 204);
    let r = stack.http.delete(format!("{}{path}", stack.base)).bearer_auth(&acme).send().await.unwrap();
    assert_eq!(c.check("DELETE", &path, r).await.0, 204);
    let r = stack.http.delete(format!("{}{path}", stack.base)).bearer_auth(&globex).send().await.unwrap();
    assert_eq!(c.check("DELETE", &path, r).await.0, 404);

    assert!(c.problems.is_empty(), "{:#?}", c.problems);
    assert_eq!(c.checked, 40);
}
