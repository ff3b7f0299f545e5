//! The test stack: moto (DynamoDB, KMS, Secrets Manager) + the Finch emulator + Perch's
//! functions behind the local router, all on random loopback ports, all through the real AWS
//! SDK and real HTTP.
//!
//! moto is one process per test run: `scripts/test.sh` starts it and exports
//! `AWS_ENDPOINT_URL`; a bare `cargo test` starts its own from `.venv` with a watchdog that
//! stops it when the test binary exits. moto's state is shared, so every [`TestStack`] gets
//! its own table, KMS key and secret (random names), and its own Finch emulator.
//!
//! Logs of the whole test binary are captured at DEBUG (the most verbose level Perch allows in
//! production, see `perch::telemetry`) so tests can assert that no secret was ever logged.

pub mod aws_faults;
pub mod fast;
pub mod syncing;

use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use perch::crypto::TokenCipher;
use perch::store::{ReadConnection, SaveConnection};
use perch::{AppState, Config};
use perch_local::DevAuth;
use serde_json::Value;

/// The logs captured so far, as text.
pub fn captured_logs() -> String {
    String::from_utf8_lossy(&LOGS.lock().unwrap_or_else(std::sync::PoisonError::into_inner)).into_owned()
}

static LOGS: Mutex<Vec<u8>> = Mutex::new(Vec::new());

struct Capture;

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LOGS.lock().unwrap_or_else(std::sync::PoisonError::into_inner).extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

pub(crate) fn init_logs() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let _ =
            tracing_subscriber::fmt().json().with_max_level(tracing::Level::DEBUG).with_writer(|| Capture).try_init();
    });
}

fn workspace_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(std::path::Path::to_path_buf).unwrap_or_default()
}

/// The moto endpoint for this test run.
pub fn moto_url() -> String {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| {
        let bin = workspace_root().join(".venv/bin/moto_server");
        assert!(bin.exists(), "moto is not installed: run `scripts/test.sh` (it installs .venv)");
        // Ask the OS for a free port, then hand it to moto.
        let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port");
        let script = format!(
            "{bin} -H 127.0.0.1 -p {port} >/dev/null 2>&1 & m=$!; while kill -0 {parent} 2>/dev/null; do sleep 1; done; kill $m",
            bin = bin.display(),
            parent = std::process::id()
        );
        // Not waited on: the watchdog outlives this function and exits with the test binary.
        #[allow(clippy::zombie_processes)]
        std::process::Command::new("sh").arg("-c").arg(script).spawn().expect("start moto");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
        // Readiness: moto answers once its port accepts connections.
        for _ in 0..300 {
            if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok() {
                return format!("http://{addr}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("moto did not start on {addr}");
    })
    .clone()
}

/// An SDK configuration aimed at the emulators. Under `scripts/test.sh` the endpoints come from
/// `AWS_ENDPOINT_URL` (moto) and `AWS_ENDPOINT_URL_DYNAMODB` (DynamoDB Local, in the stricter
/// pass), read by the SDK exactly as the functions read them; otherwise this binary's own moto.
pub async fn sdk_config() -> aws_config::SdkConfig {
    if std::env::var_os("AWS_ENDPOINT_URL").is_some() {
        return aws_config::defaults(aws_config::BehaviorVersion::latest()).load().await;
    }
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new("test", "test", None, None, "static"))
        .endpoint_url(moto_url())
        .load()
        .await
}

/// One isolated Perch: its own table, key, secret, Finch emulator and local API.
pub struct TestStack {
    pub finch: finch_emulator::Running,
    pub app: Arc<AppState<perch::aws::Aws>>,
    /// The local API, e.g. `http://127.0.0.1:41234`.
    pub base: String,
    pub http: reqwest::Client,
    pub auth: DevAuth,
    pub config: Config,
    pub ddb: aws_sdk_dynamodb::Client,
    pub kms: aws_sdk_kms::Client,
    pub sm: aws_sdk_secretsmanager::Client,
    pub key_id: String,
    /// The fault-injecting proxy the functions reach AWS through (`start_with_aws_faults`).
    pub aws: Option<aws_faults::AwsFaults>,
    captures_logs: bool,
    /// client_secret, state_key, webhook_secret: checked against the logs on drop.
    secret_values: Vec<String>,
    server: tokio::task::JoinHandle<()>,
    /// The sync settings of `start_syncing` (its queue is the stack's own).
    sync: Option<perch::flows::sync::SyncSettings>,
}

impl Drop for TestStack {
    /// Every stack test is also a log-hygiene test: when it ends, none of its secrets — the
    /// tokens and codes Finch issued, the client secret, the state and webhook keys — may be
    /// in the captured logs (DEBUG, the most verbose level Perch allows in production).
    fn drop(&mut self) {
        self.server.abort();
        if !self.captures_logs || std::thread::panicking() {
            return;
        }
        let logs = captured_logs();
        let mut secrets = self.issued_tokens();
        secrets.extend(self.issued_codes());
        secrets.extend(self.secret_values.iter().cloned());
        for s in secrets.iter().filter(|s| s.len() >= 8) {
            assert!(!logs.contains(s.as_str()), "a secret ({} characters) reached the logs", s.len());
        }
    }
}

/// How a stack's functions reach AWS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Aws {
    Direct,
    /// Direct, with a sync queue of its own (`run_sync_queue` plays the worker).
    DirectSyncing,
    Proxy,
    /// Through the fault-injecting proxy, with a sync queue of its own.
    ProxySyncing,
    ProxyPerFunction,
}

/// The access key id the harness's own calls sign with behind the proxy.
pub const HARNESS: &str = "testharness";

/// The access key id a function signs with behind the proxy: its binary name without dashes
/// (DynamoDB Local refuses key ids that are not alphanumeric).
pub fn access_key_id(binary: &str) -> String {
    binary.replace('-', "")
}

async fn proxy_sdk(url: &str, access_key_id: &str) -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(access_key_id, "test", None, None, "static"))
        .endpoint_url(url)
        .load()
        .await
}

/// The app URL the callback sends browsers to.
pub const APP_RETURN_URL: &str = "http://app.test/connections";

impl TestStack {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// A stack whose test binary captures no logs (for measurements).
    pub async fn start_quiet() -> Self {
        Self::build(|_| {}, false, Aws::Direct).await
    }

    /// A stack that syncs data: its own sync queue, handed to the sync worker when the test
    /// says (`run_sync_queue`); `tweak` may change the environment (the sync settings too).
    pub async fn start_syncing(tweak: impl FnOnce(&mut HashMap<&'static str, String>)) -> Self {
        Self::build(tweak, true, Aws::DirectSyncing).await
    }

    /// [`Self::start_syncing`] without capturing logs (for measurements).
    pub async fn start_syncing_quiet(tweak: impl FnOnce(&mut HashMap<&'static str, String>)) -> Self {
        Self::build(tweak, false, Aws::DirectSyncing).await
    }

    /// [`Self::start_syncing`] through the fault-injecting proxy (`stack.aws`).
    pub async fn start_syncing_with_aws_faults(tweak: impl FnOnce(&mut HashMap<&'static str, String>)) -> Self {
        Self::build(tweak, true, Aws::ProxySyncing).await
    }

    /// A stack whose functions reach AWS through a fault-injecting proxy (`stack.aws`).
    pub async fn start_with_aws_faults() -> Self {
        Self::build(|_| {}, true, Aws::Proxy).await
    }

    /// Starts a stack; `tweak` may change the functions' environment before it is read.
    pub async fn start_with(tweak: impl FnOnce(&mut HashMap<&'static str, String>)) -> Self {
        Self::build(tweak, true, Aws::Direct).await
    }

    /// A stack whose functions reach AWS through the recording proxy, each signing with its
    /// own access key id (its binary name), as each Lambda has its own role. The harness's own
    /// calls (`stack.app`, seeding) sign as [`HARNESS`]. See [`access_key_id`].
    pub async fn start_with_identities(tweak: impl FnOnce(&mut HashMap<&'static str, String>)) -> Self {
        Self::build(tweak, true, Aws::ProxyPerFunction).await
    }

    /// An SDK configuration that reaches AWS through this stack's proxy signing as the function
    /// `binary`.
    pub async fn sdk_as(&self, binary: &str) -> aws_config::SdkConfig {
        let proxy = self.aws.as_ref().expect("a stack started with a proxy");
        proxy_sdk(&proxy.url, &access_key_id(binary)).await
    }

    async fn build(tweak: impl FnOnce(&mut HashMap<&'static str, String>), capture_logs: bool, aws_mode: Aws) -> Self {
        if capture_logs {
            init_logs();
        }
        let sdk = sdk_config().await;
        let run = uuid::Uuid::new_v4().simple().to_string();
        let finch =
            finch_emulator::spawn(finch_emulator::EmulatorConfig::default(), "127.0.0.1:0".parse().expect("addr"))
                .await
                .expect("start the Finch emulator");
        let emu = finch_emulator::EmulatorConfig::default();
        let table = format!("perch-test-{run}");
        let records = format!("perch-test-records-{run}");
        let syncing = matches!(aws_mode, Aws::DirectSyncing | Aws::ProxySyncing);
        let queue = format!("perch-test-sync-{run}");
        let alias = format!("alias/perch-test-{run}");
        let secret = format!("perch/test/{run}");
        let created = perch_local::bootstrap::bootstrap(
            &sdk,
            &perch_local::bootstrap::Names {
                table: &table,
                records_table: Some(&records),
                sync_queue: syncing.then_some(queue.as_str()),
                key_alias: &alias,
                secret_id: &secret,
                client_id: &emu.client_id,
                client_secret: &emu.client_secret,
                webhook_secret: None,
            },
        )
        .await
        .expect("bootstrap table, key and secret in moto");

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let mut env: HashMap<&'static str, String> = HashMap::from([
            ("TABLE_NAME", table.clone()),
            ("RECORDS_TABLE_NAME", records.clone()),
            ("KMS_KEY_ID", alias.clone()),
            ("FINCH_SECRET_ID", secret.clone()),
            ("FINCH_API_URL", finch.base_url.clone()),
            ("FINCH_REDIRECT_URI", format!("{base}/connect/callback")),
            ("APP_RETURN_URL", APP_RETURN_URL.to_owned()),
            ("FINCH_TIMEOUT_MS", "3000".to_owned()),
        ]);
        if let Some(url) = &created.sync_queue_url {
            env.insert("SYNC_QUEUE_URL", url.clone());
        }
        tweak(&mut env);
        let config = Config::from_lookup(|k| env.get(k).cloned()).expect("config");
        let aws = if matches!(aws_mode, Aws::Direct | Aws::DirectSyncing) {
            None
        } else {
            let moto = std::env::var("AWS_ENDPOINT_URL").unwrap_or_else(|_| moto_url());
            Some(aws_faults::AwsFaults::start(moto, std::env::var("AWS_ENDPOINT_URL_DYNAMODB").ok()).await)
        };
        let app_sdk = match &aws {
            Some(proxy) => proxy_sdk(&proxy.url, HARNESS).await,
            None => sdk.clone(),
        };
        let mut app =
            AppState::on_aws(config.clone(), &app_sdk, &[]).expect("app state").with_sync_queue(&app_sdk, false);
        // One clock for every function of the stack, moved by the test (`stack.app.clock`).
        app.clock = perch::domain::Clock::adjustable();
        let app = Arc::new(app);
        let mut per_function = HashMap::new();
        if let (Aws::ProxyPerFunction, Some(proxy)) = (aws_mode, &aws) {
            for (_, _, function, _) in perch_local::ROUTES {
                let sdk = proxy_sdk(&proxy.url, &access_key_id(function.binary())).await;
                let mut state =
                    AppState::on_aws(config.clone(), &sdk, &[]).expect("app state").with_sync_queue(&sdk, false);
                // Each function's init, as `AppState::build` runs it on Lambda (its role must
                // allow the call that opens the connection).
                state.prewarm().await;
                state.clock = app.clock.clone();
                per_function.insert(*function, Arc::new(state));
            }
        }
        let auth =
            DevAuth::random("perch-test".into(), "perch".into(), config.customer_claim.clone()).expect("dev auth");
        let router = perch_local::router_per_function(Arc::clone(&app), per_function, auth.clone());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        let sync = syncing
            .then(|| perch::flows::sync::SyncSettings::from_lookup(|k| env.get(k).cloned()).expect("sync settings"));
        let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("http client");
        let mut stack = Self {
            finch,
            app,
            base,
            http,
            auth,
            config,
            ddb: aws_sdk_dynamodb::Client::new(&sdk),
            kms: aws_sdk_kms::Client::new(&sdk),
            sm: aws_sdk_secretsmanager::Client::new(&sdk),
            key_id: created.key_id,
            aws,
            captures_logs: capture_logs,
            secret_values: Vec::new(),
            server,
            sync,
        };
        stack.secret_values = stack.secret_values().await;
        stack
    }

    /// Plays Lambda's SQS event source for the sync worker (`start_syncing`): every message on
    /// the stack's sync queue is handed to `sync-worker`'s handler, until none is left (a
    /// message delayed for later is not waited for). How many were handled.
    pub async fn run_sync_queue(&self) -> usize {
        let settings = self.sync.as_ref().expect("a stack started with start_syncing");
        let url = self.config.sync_queue_url.as_deref().expect("SYNC_QUEUE_URL");
        let sqs = aws_sdk_sqs::Client::new(&sdk_config().await);
        let mut handled = 0;
        loop {
            let n = perch_local::worker::poll_once(&self.app, settings, &sqs, url, 0).await.expect("sync queue");
            if n == 0 {
                return handled;
            }
            handled += n;
        }
    }

    /// How many items the records table holds for a connection.
    pub async fn records_items(&self, connection_id: &str) -> i32 {
        self.ddb
            .query()
            .table_name(self.config.records_table_name.as_deref().expect("RECORDS_TABLE_NAME"))
            .key_condition_expression("pk = :pk")
            .expression_attribute_values(
                ":pk",
                aws_sdk_dynamodb::types::AttributeValue::S(format!("C#{connection_id}")),
            )
            .select(aws_sdk_dynamodb::types::Select::Count)
            .send()
            .await
            .expect("Query")
            .count()
    }

    /// A development JWT for `customer`.
    pub fn token(&self, customer: &str) -> String {
        self.auth.issue(customer, 600).expect("issue a dev token")
    }

    pub async fn post_json(&self, path: &str, token: Option<&str>, body: &Value) -> reqwest::Response {
        let mut r = self.http.post(format!("{}{path}", self.base)).json(body);
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        r.send().await.expect("POST")
    }

    /// `GET path` with `token`, asserting 200; its JSON.
    pub async fn get_ok(&self, token: &str, path: String) -> Value {
        let r = self.get(&path, Some(token)).await;
        assert_eq!(r.status(), 200, "{path}");
        r.json().await.expect("json")
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> reqwest::Response {
        let url = if path.starts_with("http") { path.to_owned() } else { format!("{}{path}", self.base) };
        let mut r = self.http.get(url);
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        r.send().await.expect("GET")
    }

    /// Creates a session for `customer` with `body`, asserting 201.
    pub async fn new_session(&self, customer: &str, body: Value) -> Value {
        let r = self.post_json("/connect/sessions", Some(&self.token(customer)), &body).await;
        let status = r.status();
        let v: Value = r.json().await.expect("json");
        assert_eq!(status, 201, "create session: {v}");
        v
    }

    /// Logs in at the emulator's Connect page; returns its response (302 to the callback for
    /// the redirect flow, a page carrying the code for the embedded flow).
    pub async fn login_at_finch(&self, connect_url: &str) -> reqwest::Response {
        self.http
            .post(connect_url)
            .form(&[("provider", "gusto"), ("username", "good_user"), ("password", "good_pass")])
            .send()
            .await
            .expect("POST Connect page")
    }

    /// Runs the redirect flow up to Finch's redirect; returns the callback URL (code + state).
    pub async fn callback_url_for(&self, customer: &str, body: Value) -> String {
        let s = self.new_session(customer, body).await;
        let r = self.login_at_finch(s["connect_url"].as_str().expect("connect_url")).await;
        assert_eq!(r.status(), 302, "Connect page should redirect");
        location(&r)
    }

    /// A whole redirect flow; returns the connection id.
    pub async fn connect(&self, customer: &str) -> String {
        self.connect_with(customer, &["company", "directory"]).await
    }

    /// [`Self::connect`], the employer granting `products`.
    pub async fn connect_with(&self, customer: &str, products: &[&str]) -> String {
        let cb = self.callback_url_for(customer, serde_json::json!({ "products": products })).await;
        let r = self.get(&cb, None).await;
        assert_eq!(r.status(), 302, "callback should redirect to the app");
        let loc = url::Url::parse(&location(&r)).expect("app url");
        loc.query_pairs()
            .find(|(k, _)| k == "connection_id")
            .map(|(_, v)| v.into_owned())
            .expect("connection_id in app url")
    }

    /// The caller's connections as JSON.
    pub async fn list(&self, customer: &str) -> Vec<Value> {
        let r = self.get("/connections", Some(&self.token(customer))).await;
        assert_eq!(r.status(), 200);
        let v: Value = r.json().await.expect("json");
        v["connections"].as_array().cloned().unwrap_or_default()
    }

    /// How many requests the emulator saw for a method and path.
    pub fn finch_calls(&self, method: &str, path: &str) -> usize {
        self.finch.requests().iter().filter(|r| r.method == method && r.path == path).count()
    }

    /// Every access token the emulator has issued.
    pub fn issued_tokens(&self) -> Vec<String> {
        self.finch.shared.world().tokens.keys().cloned().collect()
    }

    /// Every code the emulator has issued.
    pub fn issued_codes(&self) -> Vec<String> {
        self.finch.shared.world().codes.keys().cloned().collect()
    }

    /// The raw DynamoDB item of a connection.
    pub async fn raw_connection(&self, id: &str) -> Option<HashMap<String, aws_sdk_dynamodb::types::AttributeValue>> {
        self.ddb
            .get_item()
            .table_name(&self.config.table_name)
            .key("pk", aws_sdk_dynamodb::types::AttributeValue::S(format!("CONN#{id}")))
            .consistent_read(true)
            .send()
            .await
            .expect("GetItem")
            .item
    }

    /// The Finch secret's values (client secret, state key) as strings, for leak checks.
    pub async fn secret_values(&self) -> Vec<String> {
        let s = self.sm.get_secret_value().secret_id(&self.config.finch_secret_id).send().await.expect("secret");
        let v: Value = serde_json::from_str(s.secret_string().unwrap_or("{}")).expect("json");
        ["client_secret", "state_key", "webhook_secret"]
            .iter()
            .filter_map(|k| v[*k].as_str().map(str::to_owned))
            .collect()
    }

    /// Points the emulator's webhook sender at this stack's `POST /finch/webhooks`, with the
    /// webhook secret Perch holds.
    pub async fn enable_webhooks(&self) -> String {
        let s = self.sm.get_secret_value().secret_id(&self.config.finch_secret_id).send().await.expect("secret");
        let v: Value = serde_json::from_str(s.secret_string().unwrap_or("{}")).expect("json");
        let secret = v["webhook_secret"].as_str().expect("webhook_secret").to_owned();
        self.finch.shared.world().webhook = Some(finch_emulator::webhooks::Target {
            url: format!("{}/finch/webhooks", self.base),
            secret: secret.clone(),
        });
        secret
    }

    /// Flips a connection's status at the emulator (which delivers `account.updated` when
    /// webhooks are enabled); returns the emulator's answer.
    pub async fn flip(&self, connection_id: &str, status: &str) -> Value {
        self.http
            .post(format!("{}/_emulator/connections/{connection_id}/status", self.finch.base_url))
            .json(&serde_json::json!({"status": status}))
            .send()
            .await
            .expect("flip")
            .json()
            .await
            .expect("json")
    }

    /// Changes the employer's people at the emulator (`{"action": "hire"}`, `change`, …), which
    /// delivers Finch's data webhooks when they are enabled; the emulator's answer.
    pub async fn change_people(&self, connection_id: &str, change: &Value) -> Value {
        self.http
            .post(format!("{}/_emulator/connections/{connection_id}/people", self.finch.base_url))
            .json(change)
            .send()
            .await
            .expect("people")
            .json()
            .await
            .expect("json")
    }

    /// A connection as Perch's store reads it.
    pub async fn record(&self, id: &str) -> perch::store::ConnectionRecord {
        let id = perch::domain::ConnectionId::parse(id).expect("connection id");
        self.app.store.get_connection(&id).await.expect("GetItem").expect("the connection is stored")
    }

    /// The stored status of a connection.
    pub async fn stored_status(&self, id: &str) -> String {
        self.raw_connection(id)
            .await
            .and_then(|i| i.get("status").and_then(|v| v.as_s().ok()).cloned())
            .unwrap_or_default()
    }

    /// Seeds `n` connections for `customer` without going through Connect: each exists at the
    /// emulator with a token, and in Perch with that token KMS-encrypted. Returns their ids.
    pub async fn seed(&self, customer: &str, n: usize) -> Vec<String> {
        use futures_util::StreamExt;
        // Each as the callback would have stored it: the company's name and entity known.
        let pairs: Vec<(String, String, finch_emulator::world::Connection)> = {
            let mut w = self.finch.shared.world();
            (0..n)
                .map(|i| {
                    let fcid = format!("{customer}-seed-{i}");
                    let id = w.create_connection(
                        Some(fcid),
                        Some(format!("Seed {i}")),
                        None,
                        "gusto".into(),
                        vec!["company".into()],
                        "credential".into(),
                        None,
                        false,
                    );
                    let token = w.mint_token(&id);
                    let at_finch = w.connections[&id].clone();
                    (id, token, at_finch)
                })
                .collect()
        };
        let customer = perch::domain::CustomerId::parse(customer).expect("customer");
        futures_util::stream::iter(pairs.iter())
            .map(|(id, token, at_finch)| {
                let customer = customer.clone();
                async move {
                    let cid = perch::domain::ConnectionId::parse(id.clone()).expect("id");
                    let enc = self
                        .app
                        .cipher
                        .encrypt(&perch::domain::AccessToken::new(token.clone()), &cid, &customer)
                        .await
                        .expect("encrypt");
                    let now = time::OffsetDateTime::now_utc();
                    let rec = perch::store::ConnectionRecord {
                        connection_id: cid,
                        customer: customer.clone(),
                        finch_customer_id: perch::domain::FinchCustomerId::parse(format!("{customer}-seed"))
                            .expect("fcid"),
                        provider_id: "gusto".into(),
                        employer: perch::store::Employer {
                            company_id: Some(at_finch.company_id.clone()),
                            legal_name: Some(at_finch.company_name.clone()),
                            customer_name: at_finch.customer_name.clone(),
                            ..Default::default()
                        },
                        entities: at_finch
                            .entities
                            .iter()
                            .map(|e| perch::store::EntityRecord {
                                id: perch::domain::EntityId::parse(e.id.clone()).expect("entity id"),
                                name: Some(e.name.clone()),
                                source_id: Some(e.source_id.clone()),
                                status: perch::domain::ConnectionStatus::Connected,
                                observed_at: None,
                                disconnected_at: None,
                            })
                            .collect(),
                        employer_key: None,
                        refresh_requested_at: None,
                        status: perch::domain::ConnectionStatus::Connected.into(),
                        status_message: None,
                        last_successful_sync: None,
                        products: vec!["company".into()],
                        client_type: None,
                        created_at: now,
                        updated_at: now,
                        last_finch_request_id: None,
                        status_observed_at: None,
                        checked_at: None,
                        disconnected_at: None,
                        disconnect_lease: None,
                        version: 1,
                        token: Some(enc),
                    };
                    self.app.store.save_connection(&rec, None, None, None).await.expect("save");
                }
            })
            .buffer_unordered(16)
            .collect::<Vec<()>>()
            .await;
        pairs.into_iter().map(|(id, ..)| id).collect()
    }

    /// Injects a fault at the emulator.
    pub fn inject(&self, fault: Value) {
        let f: finch_emulator::world::Fault = serde_json::from_value(fault).expect("fault");
        self.finch.shared.world().faults.push(f);
    }
}

/// Every `.rs` file below `dir`, in a stable order.
pub fn rust_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).expect("read_dir").map(|e| e.expect("dir entry")) {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// `template.yaml` as JSON. CloudFormation's short tags (`!Ref X`, `!GetAtt X.Arn`, `!Sub "…"`)
/// load as their plain strings, which is all that naming a resource or parameter needs here.
pub fn template() -> Value {
    let text = std::fs::read_to_string(workspace_root().join("template.yaml")).expect("template.yaml");
    let docs = yaml_rust2::YamlLoader::load_from_str(&text).expect("template.yaml parses");
    yaml_to_json(&docs[0])
}

fn yaml_to_json(y: &yaml_rust2::Yaml) -> Value {
    use yaml_rust2::Yaml;
    match y {
        Yaml::String(s) | Yaml::Real(s) => Value::from(s.as_str()),
        Yaml::Integer(i) => Value::from(*i),
        Yaml::Boolean(b) => Value::from(*b),
        Yaml::Array(a) => Value::Array(a.iter().map(yaml_to_json).collect()),
        Yaml::Hash(h) => Value::Object(
            h.iter()
                .map(|(k, v)| (k.as_str().map(str::to_owned).unwrap_or_else(|| format!("{k:?}")), yaml_to_json(v)))
                .collect(),
        ),
        _ => Value::Null,
    }
}

/// Logs in at the emulator's Connect page as `username` for `provider`; with `picks`, through
/// the entity picker (Finch Sandbox's `multi_entity` password), ticking the company's entities
/// at those positions. The response is the Connect page's last (302 for the redirect flow).
pub async fn finch_login(
    http: &reqwest::Client,
    connect_url: &str,
    provider: &str,
    username: &str,
    picks: Option<&[usize]>,
) -> reqwest::Response {
    let Some(picks) = picks else {
        let form = [("provider", provider), ("username", username), ("password", "good_pass")];
        return http.post(connect_url).form(&form).send().await.expect("POST Connect page");
    };
    let form = [("provider", provider), ("username", username), ("password", "multi_entity")];
    let picker = http.post(connect_url).form(&form).send().await.expect("POST Connect page");
    assert_eq!(picker.status(), 200, "the entity picker");
    let html = picker.text().await.expect("picker page");
    let ids: Vec<String> = html
        .split("name=\"entity\" value=\"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next().map(str::to_owned))
        .collect();
    let mut body: Vec<(&str, &str)> =
        vec![("provider", provider), ("username", username), ("password", "multi_entity"), ("picked", "1")];
    for &i in picks {
        body.push(("entity", ids[i].as_str()));
    }
    http.post(connect_url).form(&body).send().await.expect("POST entity picker")
}

/// A connection Finch made for `finch_customer_id` to the company `username` reaches for
/// `customer_name` — as after a Connect for that id — and a code for it, redirecting to
/// `redirect_uri`: two Connects racing for the same employer, without two browsers.
pub fn finch_made(
    finch: &finch_emulator::Shared,
    redirect_uri: &str,
    customer_name: &str,
    finch_customer_id: &str,
    username: &str,
) -> String {
    use finch_emulator::world::{Code, NewConnection};
    let mut w = finch.world();
    let company = w.company_for(Some(customer_name), username);
    let new = NewConnection {
        customer_id: Some(finch_customer_id.into()),
        customer_name: Some(customer_name.into()),
        customer_email: None,
        provider_id: "gusto".into(),
        products: vec!["company".into()],
        auth_type: "credential".into(),
        manual: false,
    };
    let connection_id = w.connect(new, &company, &[], None);
    let code = uuid::Uuid::new_v4().to_string();
    let issued_at = w.now();
    let redirect_uri = Some(redirect_uri.to_owned());
    w.codes
        .insert(code.clone(), Code { connection_id, session_id: "raced".into(), redirect_uri, issued_at, used: false });
    code
}

/// The `Location` header of a response.
pub fn location(r: &reqwest::Response) -> String {
    r.headers().get("location").and_then(|v| v.to_str().ok()).map(str::to_owned).expect("Location header")
}

/// A query parameter of a URL.
pub fn query(url: &str, key: &str) -> Option<String> {
    url::Url::parse(url).ok()?.query_pairs().find(|(k, _)| k == key).map(|(_, v)| v.into_owned())
}

/// Sweep settings for tests: an effectively unlimited budget, 3 segments, a 1-hour recheck and
/// no time margin, with `extra` overriding.
pub fn sweep_settings(extra: &[(&str, &str)]) -> perch::flows::sweep::SweepSettings {
    let mut vars: HashMap<String, String> = [
        ("SWEEP_BUDGET_REQUESTS", "100000"),
        ("SWEEP_BUDGET_WINDOW_SECONDS", "1"),
        ("SWEEP_SEGMENTS", "3"),
        ("SWEEP_RECHECK_SECONDS", "3600"),
        ("SWEEP_TIME_MARGIN_SECONDS", "0"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    for (k, v) in extra {
        vars.insert((*k).to_owned(), (*v).to_owned());
    }
    perch::flows::sweep::SweepSettings::from_lookup(|k| vars.get(k).cloned()).expect("sweep settings")
}
