//! Least privilege, checked: each function's role in `template.yaml` allows every AWS call its
//! code makes, and grants nothing it does not use.
//!
//! How: the stack runs each function with its own AWS identity (its binary name as the access
//! key id, see `perch_tests::access_key_id`) behind the recording proxy, as each Lambda has its own role. A scenario drives
//! every function through every path that touches AWS, including the clean-up paths that run
//! only when something fails. Each recorded request is turned into what IAM evaluates — an
//! action, a resource and, for KMS, the encryption context (a `TransactWriteItems` is one
//! `PutItem`/`UpdateItem`/`DeleteItem`/`ConditionCheckItem` per item, as IAM authorizes it) —
//! and checked against the statements of that function's role, conditions included.
//!
//! A third check closes the loop: every AWS operation the source can call is one the scenario
//! exercised, so a new SDK call fails this test even before a scenario covers it.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use perch::runtime::Service;
use perch_tests::TestStack;
use perch_tests::aws_faults::{AwsCall, AwsFault};
use serde_json::{Value, json};

const CHECK: &str = "check-connection-status";
const SYNC: &str = "sync-worker";

/// Operations the source can call that no function does: `perch-admin reencrypt` runs the KMS
/// ones with an operator's credentials (README "Operations"); `perch-local bootstrap` creates
/// the tables locally (the template creates them on AWS).
const NOT_BY_FUNCTIONS: &[&str] = &["ReEncrypt", "DescribeKey", "CreateTable", "UpdateTimeToLive"];

// --- template.yaml -------------------------------------------------------------------------

/// A string or a list of strings, as IAM allows for `Action` and `Resource`.
fn strings(v: &Value) -> Vec<String> {
    match v {
        Value::String(s) => vec![s.clone()],
        Value::Array(a) => a.iter().filter_map(|x| x.as_str().map(str::to_owned)).collect(),
        _ => Vec::new(),
    }
}

/// The logical resource a policy `Resource` names: `ConnectionsTable.Arn` → `ConnectionsTable`,
/// `${ConnectionsTable.Arn}/index/by_customer` → `ConnectionsTable/index/by_customer`.
fn logical(resource: &str) -> String {
    resource.replace("${", "").replace('}', "").replace(".Arn", "")
}

#[derive(Debug, Clone)]
struct Statement {
    actions: Vec<String>,
    resources: Vec<String>,
    condition: Option<Value>,
}

/// Each function's binary name → the statements of its role.
fn roles(t: &Value) -> BTreeMap<String, Vec<Statement>> {
    let resources = t["Resources"].as_object().unwrap();
    let mut out = BTreeMap::new();
    for (name, r) in resources.iter().filter(|(_, r)| r["Type"] == "AWS::Serverless::Function") {
        let binary = r["Metadata"]["BuildProperties"]["Binary"].as_str().unwrap().to_owned();
        let role = r["Properties"]["Role"].as_str().unwrap_or_else(|| panic!("{name} has no Role of its own"));
        let role = &resources[&logical(role)];
        assert_eq!(role["Type"], "AWS::IAM::Role");
        assert!(role["Properties"]["ManagedPolicyArns"].is_null(), "{name}: managed policies are not least privilege");
        let statements = role["Properties"]["Policies"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|p| p["PolicyDocument"]["Statement"].as_array().unwrap().clone())
            .map(|s| {
                assert_eq!(s["Effect"], "Allow", "{name}");
                assert!(s["NotAction"].is_null() && s["NotResource"].is_null(), "{name}");
                let resources = strings(&s["Resource"]).iter().map(|r| logical(r)).collect::<Vec<_>>();
                assert!(!resources.iter().any(|r| r.contains('*')), "{name}: a wildcard resource");
                Statement { actions: strings(&s["Action"]), resources, condition: s.get("Condition").cloned() }
            })
            .collect();
        out.insert(binary, statements);
    }
    out
}

// --- recorded calls, as IAM sees them ------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct IamRequest {
    action: String,
    resource: String,
    /// The KMS encryption context.
    context: BTreeMap<String, String>,
}

/// What names the stack's resources carry locally, by their logical ids in the template.
struct Names(HashMap<String, &'static str>);

impl Names {
    fn logical(&self, physical: &str) -> String {
        self.0.get(physical).map(|s| (*s).to_owned()).unwrap_or_else(|| format!("unknown resource {physical}"))
    }
}

fn iam_requests(call: &AwsCall, names: &Names) -> Vec<IamRequest> {
    let (service, op) = call.target.split_once('.').unwrap_or(("", ""));
    let b = &call.body;
    let plain = |action: String, resource: String| IamRequest { action, resource, context: BTreeMap::new() };
    match service {
        s if s.starts_with("DynamoDB_") => match op {
            "TransactWriteItems" => b["TransactItems"]
                .as_array()
                .unwrap()
                .iter()
                .flat_map(|item| item.as_object().unwrap().iter())
                .map(|(kind, inner)| {
                    let action = match kind.as_str() {
                        "ConditionCheck" => "ConditionCheckItem".to_owned(),
                        k => format!("{k}Item"),
                    };
                    plain(format!("dynamodb:{action}"), names.logical(inner["TableName"].as_str().unwrap()))
                })
                .collect(),
            // One request per table, authorized as the batch operation on each.
            "BatchWriteItem" | "BatchGetItem" => b["RequestItems"]
                .as_object()
                .unwrap()
                .keys()
                .map(|table| plain(format!("dynamodb:{op}"), names.logical(table)))
                .collect(),
            _ => {
                let mut resource = names.logical(b["TableName"].as_str().unwrap());
                if let Some(index) = b["IndexName"].as_str() {
                    resource = format!("{resource}/index/{index}");
                }
                vec![plain(format!("dynamodb:{op}"), resource)]
            }
        },
        "TrentService" => {
            // Decrypt of a symmetric ciphertext need not name the key: IAM uses the one that made it.
            // A key ARN (`arn:aws:kms:…:key/<id>`) names the key by its id.
            let resource = b["KeyId"]
                .as_str()
                .map(|k| names.logical(k.rsplit_once(":key/").map_or(k, |(_, id)| id)))
                .unwrap_or_else(|| "TokenKey".into());
            let context: BTreeMap<String, String> = b["EncryptionContext"]
                .as_object()
                .map(|m| m.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned())).collect())
                .unwrap_or_default();
            let actions = if op == "ReEncrypt" { vec!["ReEncryptFrom", "ReEncryptTo"] } else { vec![op] };
            actions
                .into_iter()
                .map(|a| IamRequest {
                    action: format!("kms:{a}"),
                    resource: resource.clone(),
                    context: context.clone(),
                })
                .collect()
        }
        "secretsmanager" => vec![plain(format!("secretsmanager:{op}"), names.logical(b["SecretId"].as_str().unwrap()))],
        "AWSEvents" => b["Entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| plain(format!("events:{op}"), names.logical(e["EventBusName"].as_str().unwrap_or("default"))))
            .collect(),
        // SendMessageBatch is authorized as sqs:SendMessage.
        "AmazonSQS" => {
            vec![plain(format!("sqs:{}", op.trim_end_matches("Batch")), names.logical(b["QueueUrl"].as_str().unwrap()))]
        }
        _ => panic!("an AWS call this test does not know how to authorize: {}", call.target),
    }
}

/// Whether `statement` allows `request`, conditions included. A condition this test cannot
/// evaluate fails it rather than passing silently.
fn allows(statement: &Statement, request: &IamRequest) -> bool {
    if !statement.actions.contains(&request.action) || !statement.resources.contains(&request.resource) {
        return false;
    }
    let Some(condition) = &statement.condition else { return true };
    condition.as_object().unwrap().iter().all(|(operator, tests)| {
        assert_eq!(operator, "StringEquals", "a condition operator this test cannot evaluate");
        tests.as_object().unwrap().iter().all(|(key, want)| {
            let field = key.strip_prefix("kms:EncryptionContext:").expect("a condition key this test cannot evaluate");
            let got = request.context.get(field).map(String::as_str);
            // One value, or a list of which the request's must be one (IAM's any-of).
            match want.as_array() {
                Some(any) => any.iter().any(|w| got == w.as_str()),
                None => got == want.as_str(),
            }
        })
    })
}

/// Statements for what Lambda itself does with the role (write logs, poll SQS), not the code.
fn platform(statement: &Statement) -> bool {
    statement.actions.iter().all(|a| {
        a.starts_with("logs:")
            || ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility", "sqs:GetQueueAttributes"]
                .contains(&a.as_str())
    })
}

// --- the scenario --------------------------------------------------------------------------

fn lambda_event<T: serde::de::DeserializeOwned>(payload: Value) -> lambda_runtime::LambdaEvent<T> {
    lambda_event_within(payload, 60)
}

fn lambda_event_within<T: serde::de::DeserializeOwned>(payload: Value, secs: u64) -> lambda_runtime::LambdaEvent<T> {
    let mut ctx = lambda_runtime::Context::default();
    ctx.deadline = (std::time::SystemTime::now() + std::time::Duration::from_secs(secs))
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    lambda_runtime::LambdaEvent::new(serde_json::from_value(payload).unwrap(), ctx)
}

/// Plays SQS for the sync worker: every message on the queue, handed over until none is left
/// (or for one receive only, `once`), each invocation given `secs` before its deadline. The
/// messages handled.
async fn drain(
    worker: &sync_worker::Worker<'_, perch::aws::Aws>,
    sqs: &aws_sdk_sqs::Client,
    url: &str,
    secs: u64,
    once: bool,
) -> usize {
    let mut handled = 0;
    loop {
        let got = sqs.receive_message().queue_url(url).max_number_of_messages(10).send().await.unwrap();
        if got.messages().is_empty() {
            return handled;
        }
        let records: Vec<Value> =
            got.messages().iter().map(|m| json!({"messageId": m.message_id(), "body": m.body()})).collect();
        let out = sync_worker::handle(worker, lambda_event_within(json!({ "Records": records }), secs)).await.unwrap();
        assert_eq!(out["batchItemFailures"], json!([]), "sync work failed");
        for m in got.messages() {
            sqs.delete_message().queue_url(url).receipt_handle(m.receipt_handle().unwrap()).send().await.unwrap();
        }
        handled += got.messages().len();
        if once {
            return handled;
        }
    }
}

/// Drives every function through every path that reaches AWS; returns the stack (whose proxy
/// holds the calls) and the sweep and sync queues' URLs.
async fn run_scenario() -> (TestStack, String, String) {
    let sdk = perch_tests::sdk_config().await;
    let run = uuid::Uuid::new_v4().simple().to_string();
    let bus = format!("perch-status-{run}");
    aws_sdk_eventbridge::Client::new(&sdk).create_event_bus().name(&bus).send().await.unwrap();
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let queue = sqs.create_queue().queue_name(format!("perch-sweep-{run}")).send().await.unwrap();
    let queue_url = queue.queue_url().unwrap().to_owned();
    let sync_queue = sqs.create_queue().queue_name(format!("perch-sync-{run}")).send().await.unwrap();
    let sync_url = sync_queue.queue_url().unwrap().to_owned();
    let stack = TestStack::start_with_identities(|env| {
        env.insert("EVENT_BUS_NAME", bus.clone());
        env.insert("SYNC_QUEUE_URL", sync_url.clone());
        // A directory of 300 people, checked against Finch's spec by the emulator, on a busy
        // machine: more than the default 3 s.
        env.insert("FINCH_TIMEOUT_MS", "30000".into());
    })
    .await;
    stack.enable_webhooks().await;

    // create-connect-session + oauth-callback: the redirect flow.
    let id = stack.connect("acme").await;

    // The embedded flow (the JWT-authenticated POST callback), then the frontend retrying the
    // code, answered from its code marker.
    let s = stack.new_session("globex", json!({"flow": "embedded", "products": ["company"]})).await;
    let page = stack.login_at_finch(s["connect_url"].as_str().unwrap()).await.text().await.unwrap();
    let code = page.split("data-code=\"").nth(1).and_then(|r| r.split('"').next()).unwrap().to_owned();
    let token = stack.token("globex");
    let r = stack.post_json("/connect/callback", Some(&token), &json!({"code": code, "state": s["state"]})).await;
    assert_eq!(r.status(), 201);
    let fresh =
        stack.new_session("globex", json!({"flow": "embedded", "products": ["company"], "additional": true})).await;
    let r = stack.post_json("/connect/callback", Some(&token), &json!({"code": code, "state": fresh["state"]})).await;
    assert_eq!(r.status(), 200, "a retried code answers from its marker");

    // A status Finch pushes while a first connect is between its exchange and its save: the
    // webhook parks it, the callback applies it.
    let cb = stack.callback_url_for("initech", json!({"products": ["company"]})).await;
    let parked = stack.finch.shared.world().codes[&perch_tests::query(&cb, "code").unwrap()].connection_id.clone();
    stack.inject(json!({"path": "/employer/company", "hold": "company", "times": 1}));
    let meanwhile = async {
        stack.finch.shared.holds().arrived("company").await;
        stack.flip(&parked, "reauth").await;
        stack.finch.shared.holds().release("company");
    };
    let (back, ()) = tokio::join!(stack.get(&cb, None), meanwhile);
    assert_eq!(perch_tests::query(&perch_tests::location(&back), "status").as_deref(), Some("reauth"));

    // Another connection for the same customer looks up the Finch ids its connections hold.
    let extra = stack.new_session("acme", json!({"products": ["company"], "additional": true})).await;
    assert_eq!(extra["finch_customer_id"], "acme-2");

    // Connecting again with the same Finch customer becomes a reauthentication.
    let again = stack.new_session("acme", json!({"products": ["company"]})).await;
    assert_eq!(again["reauthenticates"], id.as_str());

    // list-connections.
    assert_eq!(stack.list("acme").await.len(), 1);

    // sync-worker, connection-sync, connection-data: each callback above marked its entities
    // due and queued a first sync. Acme's employer has 300 people (enough for disconnect to
    // hand part of the purge to the worker); globex's token is refused when its run starts.
    let sync_sdk = stack.sdk_as(SYNC).await;
    let mut sync_app =
        perch::AppState::on_aws(stack.config.clone(), &sync_sdk, &[]).unwrap().with_sync_queue(&sync_sdk, false);
    sync_app.clock = stack.app.clock.clone();
    sync_app.prewarm().await;
    let entity = stack.record(&id).await.entities[0].id.as_str().to_owned();
    let globex = stack.list("globex").await[0]["connection_id"].as_str().unwrap().to_owned();
    {
        let mut w = stack.finch.shared.world();
        w.rosters
            .insert(entity.clone(), finch_emulator::people::Roster::new(finch_emulator::people::seed_of(&entity), 300));
        w.connections.get_mut(&globex).unwrap().status = "reauth".into();
    }
    let settings = |margin: &str| {
        perch::flows::sync::SyncSettings::from_lookup(|k| {
            (k == "SYNC_DEADLINE_MARGIN_SECONDS").then(|| margin.to_owned())
        })
        .unwrap()
    };
    // The schedule finds them due; a run cut by its deadline hands the rest back to the queue;
    // then every run completes (globex's ends in needs_reauth, and its connection says so).
    let scheduled = json!({"detail-type": "Scheduled Event", "source": "aws.events", "detail": {}});
    let worker = sync_worker::Worker { app: &sync_app, settings: settings("60") };
    assert!(sync_worker::handle(&worker, lambda_event(scheduled)).await.unwrap()["planned"].as_u64().unwrap() >= 2);
    assert!(drain(&worker, &sqs, &sync_url, 30, true).await >= 4);
    let worker = sync_worker::Worker { app: &sync_app, settings: settings("5") };
    drain(&worker, &sqs, &sync_url, 300, false).await;
    assert_eq!(stack.stored_status(&globex).await, "reauth", "a 401 in a sync marks the connection");
    // A person leaves; the app asks for a sync; the worker removes them.
    stack.finch.shared.world().roster(&entity).removed.insert(7);
    let acme = stack.token("acme");
    let r = stack.post_json(&format!("/connections/{id}/sync"), Some(&acme), &json!({})).await;
    assert_eq!(r.status(), 202);
    assert_eq!(drain(&worker, &sqs, &sync_url, 300, false).await, 1);
    let st: Value = stack.get(&format!("/connections/{id}/sync"), Some(&acme)).await.json().await.unwrap();
    assert_eq!(st["entities"][0]["last_success"]["counts"]["removed"], 1, "{st}");
    for path in ["changes", "employees"] {
        let r = stack.get(&format!("/connections/{id}/{path}?limit=5"), Some(&acme)).await;
        assert_eq!(r.status(), 200, "{path}");
    }
    // The worker indexed the people it synced: the customer's people, and one of them.
    let people: Value = stack.get("/people?limit=3", Some(&acme)).await.json().await.unwrap();
    let person = people["people"][0]["person_id"].as_str().expect("someone indexed").to_owned();
    let r = stack.get(&format!("/people/{person}"), Some(&acme)).await;
    assert_eq!(r.status(), 200);
    // A data webhook queues a run of its entity.
    let person = stack.finch.shared.world().roster(&entity).person(3).unwrap().id;
    let changed = stack
        .change_people(
            &id,
            &json!({"action": "change", "individual_id": person, "fields": {"title": "Chief Cat Herder"}}),
        )
        .await;
    assert!(changed["webhook_statuses"].as_array().unwrap().iter().all(|s| s == 200), "{changed}");
    assert!(drain(&worker, &sqs, &sync_url, 300, false).await >= 1);

    // finch-webhook: applied, then a failure half-way that un-records the event for Finch's retry.
    assert_eq!(stack.flip(&id, "reauth").await["webhook_status"], 200);
    let aws = stack.aws.as_ref().unwrap();
    aws.inject(AwsFault::outage("DynamoDB_20120810.UpdateItem", 500, "InternalServerError"));
    assert_ne!(stack.flip(&id, "connected").await["webhook_status"], 200);
    aws.clear();

    // create-reauth-session, and the reauthentication's callback swapping the token.
    let r = stack.post_json(&format!("/connections/{id}/reauthenticate"), Some(&stack.token("acme")), &json!({})).await;
    assert_eq!(r.status(), 201);
    let s: Value = r.json().await.unwrap();
    let r = stack.login_at_finch(s["connect_url"].as_str().unwrap()).await;
    let back = stack.get(&perch_tests::location(&r), None).await;
    assert_eq!(perch_tests::query(&perch_tests::location(&back), "outcome").as_deref(), Some("reauthenticated"));

    // check-connection-status: the schedule plans onto SQS, then SQS delivers the segments.
    let check_sdk = stack.sdk_as(CHECK).await;
    let check_app = perch::AppState::on_aws(stack.config.clone(), &check_sdk, &[]).unwrap();
    check_app.prewarm().await;
    let settings = perch_tests::sweep_settings(&[
        ("SWEEP_QUEUE_URL", &queue_url),
        ("SWEEP_SEGMENTS", "1"),
        ("SWEEP_RECHECK_SECONDS", "0"),
    ]);
    let queue = perch::aws::sqs::SqsQueue::new(aws_sdk_sqs::Client::new(&check_sdk), queue_url.clone());
    let sweeper = check_connection_status::Sweeper::new(&check_app, settings, Some(Box::new(queue)));
    // Finch's side changes without a webhook, for the sweep to find (and announce).
    stack.finch.shared.world().connections.get_mut(&id).unwrap().status = "reauth".into();
    let scheduled = json!({"version": "0", "detail-type": "Scheduled Event", "source": "aws.events", "detail": {}});
    let planned =
        check_connection_status::handle(&sweeper, lambda_event::<check_connection_status::Invocation>(scheduled))
            .await
            .unwrap();
    assert_eq!(planned["planned"], 1);
    let got = sqs.receive_message().queue_url(&queue_url).max_number_of_messages(10).send().await.unwrap();
    let records: Vec<Value> =
        got.messages().iter().map(|m| json!({"messageId": m.message_id(), "body": m.body()})).collect();
    let out = check_connection_status::handle(
        &sweeper,
        lambda_event::<check_connection_status::Invocation>(json!({ "Records": records })),
    )
    .await
    .unwrap();
    assert_eq!(out["batchItemFailures"], json!([]));
    assert_eq!(stack.stored_status(&id).await, "reauth", "the sweep saw the change");

    // disconnect: the data key shredded, part of the data deleted, the rest handed to the
    // worker, which deletes it.
    let r = stack.http.delete(format!("{}/connections/{id}", stack.base)).bearer_auth(stack.token("acme")).send().await;
    assert_eq!(r.unwrap().status(), 204);
    drain(&worker, &sqs, &sync_url, 300, false).await;
    let left = stack.records_items(&id).await;
    assert_eq!(left, 0, "nothing of a disconnected connection's data is left");
    drop(worker);
    (stack, queue_url, sync_url)
}

#[tokio::test]
async fn every_function_is_granted_exactly_the_aws_calls_it_makes() {
    let (stack, queue_url, sync_url) = run_scenario().await;
    let config = &stack.config;
    let names = Names(HashMap::from([
        (config.table_name.clone(), "ConnectionsTable"),
        (config.kms_key_id.clone(), "TokenKey"),
        (stack.key_id.clone(), "TokenKey"),
        (config.finch_secret_id.clone(), "FinchSecret"),
        (config.event_bus_name.clone().unwrap(), "StatusEventBus"),
        (queue_url, "SweepQueue"),
        (config.records_table_name.clone().unwrap(), "RecordsTable"),
        (sync_url, "SyncQueue"),
    ]));
    let mut seen: BTreeMap<String, BTreeSet<IamRequest>> = BTreeMap::new();
    for call in stack.aws.as_ref().unwrap().calls() {
        if call.principal != perch_tests::HARNESS {
            seen.entry(call.principal.clone()).or_default().extend(iam_requests(&call, &names));
        }
    }
    let roles = roles(&perch_tests::template());
    assert_eq!(roles.len(), 10, "every function has a role");
    let mut problems = Vec::new();
    for (function, statements) in &roles {
        let requests = seen.remove(&perch_tests::access_key_id(function)).unwrap_or_default();
        // 1. Every call is allowed.
        for r in &requests {
            if !statements.iter().any(|s| allows(s, r)) {
                problems.push(format!(
                    "{function} calls {} on {} {:?}: not allowed by its role",
                    r.action, r.resource, r.context
                ));
            }
        }
        // 2. Every grant is used (Lambda's own logging and polling aside, checked below).
        for s in statements {
            if platform(s) {
                continue;
            }
            for action in &s.actions {
                for resource in &s.resources {
                    if !requests.iter().any(|r| &r.action == action && &r.resource == resource && allows(s, r)) {
                        problems.push(format!("{function} is granted {action} on {resource} but never calls it"));
                    }
                }
            }
        }
        // 3. Lambda's own needs: logs to the function's own group; only the sweep polls SQS.
        let logs: Vec<&Statement> =
            statements.iter().filter(|s| s.actions.iter().any(|a| a.starts_with("logs:"))).collect();
        assert_eq!(logs.len(), 1, "{function}: one logging statement");
        assert_eq!(logs[0].actions, ["logs:CreateLogStream", "logs:PutLogEvents"], "{function}");
        assert_eq!(logs[0].resources.len(), 1, "{function}");
        assert!(logs[0].resources[0].ends_with("Logs"), "{function} logs to {:?}", logs[0].resources);
        let polls = statements.iter().any(|s| platform(s) && s.actions.iter().any(|a| a.starts_with("sqs:")));
        assert_eq!(
            polls,
            function == CHECK || function == SYNC,
            "{function}: SQS polling is the sweep's and the sync worker's alone"
        );
    }
    assert!(seen.is_empty(), "calls signed by no function of the template: {seen:?}");
    assert!(problems.is_empty(), "least privilege:\n  {}", problems.join("\n  "));
}

/// Each function's `SERVICES` (the clients its `main.rs` builds in init).
fn declared_services(function: &str) -> &'static [Service] {
    match function {
        "create-connect-session" => create_connect_session::SERVICES,
        "oauth-callback" => oauth_callback::SERVICES,
        "list-connections" => list_connections::SERVICES,
        "create-reauth-session" => create_reauth_session::SERVICES,
        "disconnect" => disconnect::SERVICES,
        "finch-webhook" => finch_webhook::SERVICES,
        CHECK => check_connection_status::SERVICES,
        SYNC => sync_worker::SERVICES,
        "connection-sync" => connection_sync::SERVICES,
        "connection-data" => connection_data::SERVICES,
        other => panic!("no SERVICES known for {other}"),
    }
}

/// The clients a function builds in init are exactly those of the AWS services it calls
/// (DynamoDB's is always built; the sweep's SQS client is its own): one more would be init
/// time spent for nothing, one fewer would land on a first request.
#[tokio::test]
async fn each_function_builds_in_init_the_clients_it_calls() {
    let (stack, _, _) = run_scenario().await;
    let mut called: BTreeMap<String, BTreeSet<Service>> = BTreeMap::new();
    for call in stack.aws.as_ref().unwrap().calls() {
        let service = match call.target.split_once('.').map(|(s, _)| s) {
            Some("TrentService") => Service::Kms,
            Some("secretsmanager") => Service::SecretsManager,
            Some("AWSEvents") => Service::EventBridge,
            // The sweep's SQS client is its own (`main.rs`), not the sync queue's.
            Some("AmazonSQS") if call.principal != perch_tests::access_key_id(CHECK) => Service::Sqs,
            _ => continue,
        };
        called.entry(call.principal.clone()).or_default().insert(service);
    }
    for function in roles(&perch_tests::template()).keys() {
        let declared: BTreeSet<Service> =
            declared_services(function).iter().copied().filter(|s| *s != Service::Finch).collect();
        let used = called.remove(&perch_tests::access_key_id(function)).unwrap_or_default();
        assert_eq!(declared, used, "{function}: SERVICES (without Finch) against the AWS services it called");
    }
}

/// A function whose `SERVICES` name the sync queue is built by `AppState::build_sending` (the
/// only wiring that links SQS), and no other is: `AppState::on_aws` refuses `Service::Sqs`, and
/// a function that does not send should not carry the client in its binary (G6).
#[test]
fn only_the_senders_link_the_sync_queue() {
    let root = std::path::PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
    for function in roles(&perch_tests::template()).keys().filter(|f| *f != CHECK) {
        let main = root.join("functions").join(function.replace('-', "_")).join("src/main.rs");
        let main = std::fs::read_to_string(&main).unwrap_or_else(|e| panic!("{}: {e}", main.display()));
        let sends = declared_services(function).contains(&Service::Sqs);
        assert_eq!(main.contains("AppState::build_sending("), sends, "{function}: main.rs against its SERVICES");
    }
}

/// Every AWS operation the source can call, found by its SDK method (`.put_item()` on a
/// client), as `PutItem`.
fn operations_in_source() -> BTreeSet<String> {
    let root = std::path::PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
    let mut files = perch_tests::rust_files(&root.join("shared/src"));
    files.extend(perch_tests::rust_files(&root.join("functions")));
    // A client (`client`, `self.client`, `sqs`, or a lazy one's `client.get()`) followed by a
    // method call with no arguments: the SDK's operation builders.
    let call = regex::Regex::new(r"\b(?:client|sqs)\s*(?:\.\s*get\(\)\s*)?\.\s*([a-z_]+)\(\)").unwrap();
    let mut ops = BTreeSet::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        for c in call.captures_iter(&text) {
            let pascal: String = c[1].split('_').map(|w| w[..1].to_ascii_uppercase() + &w[1..]).collect();
            if pascal != "Clone" && pascal != "Get" {
                ops.insert(pascal);
            }
        }
    }
    ops
}

#[tokio::test]
async fn the_scenario_exercises_every_aws_operation_the_source_can_call() {
    let in_source = operations_in_source();
    assert!(
        in_source.contains("PutItem") && in_source.contains("SendMessageBatch"),
        "the scan finds calls: {in_source:?}"
    );
    let (stack, _, _) = run_scenario().await;
    let called: BTreeSet<String> = stack
        .aws
        .as_ref()
        .unwrap()
        .calls()
        .iter()
        .filter(|c| c.principal != perch_tests::HARNESS)
        .filter_map(|c| c.target.split_once('.').map(|(_, op)| op.to_owned()))
        .collect();
    for op in NOT_BY_FUNCTIONS {
        assert!(in_source.contains(*op), "{op} is no longer in the source: drop it from NOT_BY_FUNCTIONS");
        assert!(!called.contains(*op), "a function calls {op}, which no role allows");
    }
    let missed: Vec<&String> =
        in_source.iter().filter(|op| !called.contains(*op) && !NOT_BY_FUNCTIONS.contains(&op.as_str())).collect();
    assert!(
        missed.is_empty(),
        "the source can call {missed:?}, which the least-privilege scenario never does: extend it"
    );
}
