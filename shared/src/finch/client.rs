//! The Finch HTTP client: one method per endpoint Perch uses.
//!
//! - `Finch-API-Version: 2020-09-17` on every request; Basic auth for Connect sessions,
//!   credentials in the body for `/auth/token`, Bearer for connection calls.
//! - A timeout per attempt, no redirects followed (a token endpoint that redirects is not
//!   Finch), and retries as Finch's own SDKs do (docs/finch-contract.md): 408, 409, 429, ≥ 500 and
//!   connection failures, `x-should-retry` first, then `retry-after-ms` / `retry-after`, else
//!   0.5 s × 2ⁿ (≤ 8 s) minus up to 25 % jitter.
//! - The code exchange is the exception: a code is single use, so once the request may have
//!   reached Finch it is never sent again. Only a failure to connect is retried.
//! - Every response, success or failure, is logged with its `Finch-Request-Id`.

use std::time::{Duration, Instant};

use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde::de::DeserializeOwned;
use url::Url;

use super::stream::PayStatementStream;
use super::types::{
    Accepted, BatchAnswer, BatchId, BatchOptions, BatchRequest, Company, ConnectSession, CreateSessionRequest,
    DirectoryPage, DisconnectEntityRequest, ErrorBody, Introspection, PayStatementRequest, PayStatementsRequest,
    ReauthenticateRequest, TokenRequest, TokenResponse,
};
use crate::domain::sync::WaitReason;
use crate::domain::{AccessToken, AuthorizationCode};
use crate::domain::{Error, FinchError};
use crate::secrets::FinchSecrets;
use secrecy::ExposeSecret;

/// The only Finch API version there is.
pub const FINCH_API_VERSION: &str = "2020-09-17";
/// Longest server-requested wait we honour inside a request; beyond it we fail fast.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(10);

/// When a failed attempt may be sent again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RetryPolicy {
    /// Idempotent or harmless to repeat: Finch's SDK rules.
    Standard,
    /// Only if the request provably never left (connection refused / DNS / TLS).
    OnlyIfUnsent,
}

/// How a call authenticates.
enum Auth<'a> {
    Basic(&'a FinchSecrets),
    Bearer(&'a AccessToken),
    None,
}

/// A client for one Finch base URL; cheap to clone, built once per container.
#[derive(Clone)]
pub struct FinchClient {
    /// Built on first use or by [`FinchClient::prewarm`] (see [`crate::lazy`]); an error to
    /// build is kept and reported at each use.
    http: crate::lazy::Lazy<Result<reqwest::Client, String>>,
    base: Url,
    max_retries: u32,
}

/// The raw outcome of one successful call.
struct Answer {
    status: StatusCode,
    body: Vec<u8>,
    /// A 200 whose body is left to be read as it arrives ([`Read::AsItArrives`]).
    open: Option<Response>,
    request_id: Option<String>,
    /// `Finch-Data-Retrieved`: when Finch read the data from the provider (data endpoints).
    data_retrieved: Option<String>,
}

/// A data call's outcome: the data, or Finch's 202 with its reason (DATA.md §1.1).
#[derive(Debug)]
pub enum Data<T> {
    Ready(Fetched<T>),
    NotYet(WaitReason),
}

/// Finch's data with what says which snapshot it is.
#[derive(Debug)]
pub struct Fetched<T> {
    pub value: T,
    pub request_id: Option<String>,
    /// `Finch-Data-Retrieved` (ISO 8601), when Finch sent it.
    pub data_retrieved: Option<String>,
}

/// Finch's caps (DATA.md §0): a directory page, ids per individual/employment batch, payments
/// per pay-statement request and statements per payment per request.
pub const MAX_DIRECTORY_PAGE: u64 = 10_000;
pub const MAX_BATCH_IDS: usize = 10_000;
pub const MAX_PAYMENTS_PER_REQUEST: usize = 10;
pub const MAX_STATEMENTS_PER_PAYMENT: u64 = 5_000;

/// A Finch answer with the `Finch-Request-Id` it came with, kept on the connection for support.
#[derive(Debug, Clone)]
pub struct Traced<T> {
    pub value: T,
    pub request_id: Option<String>,
}

impl FinchClient {
    pub fn new(base: Url, timeout: Duration, max_retries: u32) -> Self {
        Self { http: crate::lazy::Lazy::new(move || build_http(timeout)), base, max_retries }
    }

    /// Builds the HTTP client now (in init), if not yet built.
    pub fn prewarm(&self) -> Result<(), Error> {
        self.http().map(|_| ())
    }

    fn http(&self) -> Result<&reqwest::Client, Error> {
        self.http.get().as_ref().map_err(|e| Error::internal(format!("building the Finch HTTP client: {e}")))
    }

    /// The same client (same connection pool) with another retry budget; the status sweep
    /// uses 0 and paces its own retries against Finch's rate limits.
    pub fn with_max_retries(&self, max_retries: u32) -> Self {
        Self { http: self.http.clone(), base: self.base.clone(), max_retries }
    }

    fn url(&self, path: &str) -> Result<Url, Error> {
        self.base.join(path).map_err(|e| Error::internal_from(format!("joining Finch path {path}"), e))
    }

    /// `POST /connect/sessions`.
    pub async fn create_connect_session(
        &self,
        creds: &FinchSecrets,
        body: &CreateSessionRequest<'_>,
    ) -> Result<Traced<ConnectSession>, Error> {
        let a = self
            .call(
                "create_connect_session",
                Method::POST,
                "connect/sessions",
                Auth::Basic(creds),
                Some(body),
                RetryPolicy::Standard,
            )
            .await?;
        parse(&a, "create_connect_session")
    }

    /// `POST /connect/sessions/reauthenticate`.
    pub async fn reauthenticate_session(
        &self,
        creds: &FinchSecrets,
        body: &ReauthenticateRequest<'_>,
    ) -> Result<Traced<ConnectSession>, Error> {
        let a = self
            .call(
                "reauthenticate_session",
                Method::POST,
                "connect/sessions/reauthenticate",
                Auth::Basic(creds),
                Some(body),
                RetryPolicy::Standard,
            )
            .await?;
        parse(&a, "reauthenticate_session")
    }

    /// `POST /auth/token`: exchanges a Connect code. `redirect_uri` only for the redirect flow.
    pub async fn exchange_code(
        &self,
        creds: &FinchSecrets,
        code: &AuthorizationCode,
        redirect_uri: Option<&str>,
    ) -> Result<Traced<TokenResponse>, Error> {
        let body = TokenRequest {
            code: code.expose_secret(),
            client_id: &creds.client_id,
            client_secret: creds.client_secret.expose_secret(),
            redirect_uri,
        };
        let a = self
            .call("exchange_code", Method::POST, "auth/token", Auth::None, Some(&body), RetryPolicy::OnlyIfUnsent)
            .await?;
        parse(&a, "exchange_code")
    }

    /// `GET /introspect`.
    pub async fn introspect(&self, token: &AccessToken) -> Result<Traced<Introspection>, Error> {
        let a = self
            .call::<()>("introspect", Method::GET, "introspect", Auth::Bearer(token), None, RetryPolicy::Standard)
            .await?;
        parse(&a, "introspect")
    }

    /// `GET /employer/company`; `None` while Finch answers 202 (data not yet available).
    pub async fn company(&self, token: &AccessToken) -> Result<Option<Traced<Company>>, Error> {
        let a = self
            .call::<()>("company", Method::GET, "employer/company", Auth::Bearer(token), None, RetryPolicy::Standard)
            .await?;
        if a.status == StatusCode::ACCEPTED {
            return Ok(None);
        }
        parse(&a, "company").map(Some)
    }

    /// `GET /employer/company` for one entity, as Finch's JSON (a sync stores it as given).
    pub async fn company_record(
        &self,
        token: &AccessToken,
        entity: &str,
    ) -> Result<Data<Box<serde_json::value::RawValue>>, Error> {
        let path = format!("employer/company?entity_ids={}", query_value(entity));
        let a =
            self.call::<()>("company", Method::GET, &path, Auth::Bearer(token), None, RetryPolicy::Standard).await?;
        data(a, "company")
    }

    /// `GET /employer/directory`: one page of one entity's directory (`limit` ≤ 10,000).
    pub async fn directory_page(
        &self,
        token: &AccessToken,
        entity: &str,
        offset: u64,
        limit: u64,
    ) -> Result<Data<DirectoryPage>, Error> {
        let limit = limit.clamp(1, MAX_DIRECTORY_PAGE);
        let path = format!("employer/directory?entity_ids={}&limit={limit}&offset={offset}", query_value(entity));
        let a =
            self.call::<()>("directory", Method::GET, &path, Auth::Bearer(token), None, RetryPolicy::Standard).await?;
        data(a, "directory")
    }

    /// `POST /employer/individual` for up to 10,000 ids of one entity; the SSN only when asked
    /// (and granted: Finch leaves it out otherwise).
    pub async fn individuals(
        &self,
        token: &AccessToken,
        entity: &str,
        ids: &[String],
        with_ssn: bool,
    ) -> Result<Data<BatchAnswer>, Error> {
        let options = with_ssn.then(|| BatchOptions { include: vec!["ssn"] });
        self.batch_for(token, "individual", entity, ids, options).await
    }

    /// `POST /employer/employment` for up to 10,000 ids of one entity.
    pub async fn employments(
        &self,
        token: &AccessToken,
        entity: &str,
        ids: &[String],
    ) -> Result<Data<BatchAnswer>, Error> {
        self.batch_for(token, "employment", entity, ids, None).await
    }

    async fn batch_for(
        &self,
        token: &AccessToken,
        product: &'static str,
        entity: &str,
        ids: &[String],
        options: Option<BatchOptions>,
    ) -> Result<Data<BatchAnswer>, Error> {
        if ids.len() > MAX_BATCH_IDS {
            return Err(Error::internal(format!(
                "{} ids in one {product} batch: Finch takes {MAX_BATCH_IDS}",
                ids.len()
            )));
        }
        let body = BatchRequest { requests: ids.iter().map(|id| BatchId { individual_id: id }).collect(), options };
        let path = format!("employer/{product}?entity_ids={}", query_value(entity));
        let a =
            self.call(product, Method::POST, &path, Auth::Bearer(token), Some(&body), RetryPolicy::Standard).await?;
        data(a, product)
    }

    /// `GET /employer/payment` for one entity: every payment paid from `start` to `end`
    /// (inclusive), as Finch's JSON bytes (one array: the endpoint has no paging).
    pub async fn payments(
        &self,
        token: &AccessToken,
        entity: &str,
        start: time::Date,
        end: time::Date,
    ) -> Result<Data<Vec<u8>>, Error> {
        let path = format!("employer/payment?entity_ids={}&start_date={start}&end_date={end}", query_value(entity));
        let a =
            self.call::<()>("payment", Method::GET, &path, Auth::Bearer(token), None, RetryPolicy::Standard).await?;
        raw_data(a)
    }

    /// `POST /employer/pay-statement` for up to 10 payments of one entity, each from its own
    /// offset (`limit` ≤ 5,000), read as it arrives ([`PayStatementStream`]): an answer at
    /// Finch's caps is 50,000 statements, more than a worker's memory. `within` bounds the
    /// whole exchange, body included (the caller's time left), rather than the per-attempt
    /// timeout: the pay pass reads the body at the pace it writes it.
    pub async fn pay_statements(
        &self,
        token: &AccessToken,
        entity: &str,
        requests: &[PayStatementRequest<'_>],
        within: Duration,
    ) -> Result<Data<PayStatementStream>, Error> {
        if requests.is_empty()
            || requests.len() > MAX_PAYMENTS_PER_REQUEST
            || requests.iter().any(|r| r.limit == 0 || r.limit > MAX_STATEMENTS_PER_PAYMENT)
        {
            return Err(Error::internal(format!(
                "a pay-statement request of {} payments: Finch takes 1 to {MAX_PAYMENTS_PER_REQUEST}, each 1 to {MAX_STATEMENTS_PER_PAYMENT} statements",
                requests.len()
            )));
        }
        let body = PayStatementsRequest { requests };
        let path = format!("employer/pay-statement?entity_ids={}", query_value(entity));
        let read = Read::AsItArrives { within };
        let a = self.call_as("pay_statement", Method::POST, &path, Auth::Bearer(token), Some(&body), read).await?;
        if a.status == StatusCode::ACCEPTED {
            let accepted: Accepted = serde_json::from_slice(&a.body).unwrap_or_default();
            return Ok(Data::NotYet(WaitReason::from_code(accepted.finch_code.as_deref())));
        }
        let Some(resp) = a.open else {
            return Err(Error::internal(format!("Finch's pay-statement call answered {}", a.status)));
        };
        Ok(Data::Ready(Fetched {
            value: PayStatementStream::read(resp),
            request_id: a.request_id,
            data_retrieved: a.data_retrieved,
        }))
    }

    /// `POST /disconnect`: revokes every token of the connection.
    pub async fn disconnect(&self, token: &AccessToken) -> Result<Traced<()>, Error> {
        let a = self
            .call::<()>("disconnect", Method::POST, "disconnect", Auth::Bearer(token), None, RetryPolicy::Standard)
            .await?;
        Ok(Traced { value: (), request_id: a.request_id })
    }

    /// `POST /disconnect-entity`: disconnects one entity of a multi-entity connection; the
    /// connection and its token stay for the others.
    pub async fn disconnect_entity(&self, token: &AccessToken, entity_id: &str) -> Result<Traced<()>, Error> {
        let body = DisconnectEntityRequest { entity_ids: &[entity_id] };
        let a = self
            .call(
                "disconnect_entity",
                Method::POST,
                "disconnect-entity",
                Auth::Bearer(token),
                Some(&body),
                RetryPolicy::Standard,
            )
            .await?;
        Ok(Traced { value: (), request_id: a.request_id })
    }

    /// A call whose answer is read whole (every endpoint but the pay statements).
    async fn call<B: serde::Serialize + ?Sized>(
        &self,
        operation: &'static str,
        method: Method,
        path: &str,
        auth: Auth<'_>,
        body: Option<&B>,
        policy: RetryPolicy,
    ) -> Result<Answer, Error> {
        self.call_as(operation, method, path, auth, body, Read::Whole(policy)).await
    }

    /// A call, retried as Finch's SDKs do, its successful answer read as `read` says.
    async fn call_as<B: serde::Serialize + ?Sized>(
        &self,
        operation: &'static str,
        method: Method,
        path: &str,
        auth: Auth<'_>,
        body: Option<&B>,
        read: Read,
    ) -> Result<Answer, Error> {
        let policy = read.policy();
        let url = self.url(path)?;
        let mut retries = 0u32;
        loop {
            let mut req: RequestBuilder = self.http()?.request(method.clone(), url.clone());
            req = match &auth {
                Auth::Basic(c) => req.basic_auth(&c.client_id, Some(c.client_secret.expose_secret())),
                Auth::Bearer(t) => req.bearer_auth(t.expose_secret()),
                Auth::None => req,
            };
            if let Some(b) = body {
                req = req.json(b);
            }
            if let Read::AsItArrives { within } = read {
                req = req.timeout(within);
            }
            let started = Instant::now();
            let outcome = req.send().await;
            let attempt = Attempt { operation, policy, retries, last: retries >= self.max_retries, started };
            let wait = match outcome {
                Ok(resp) => attempt.answered(resp, read).await?,
                Err(e) => attempt.failed(e)?,
            };
            match wait {
                Next::Done(answer) => return Ok(answer),
                Next::RetryAfter(d) => tokio::time::sleep(d).await,
            }
            retries += 1;
        }
    }
}

/// The most of a body's announced length reserved before it arrives (a larger one grows as it
/// comes): a `Content-Length` is the server's word, not a promise worth any allocation.
const MAX_BODY_RESERVED: u64 = 64 << 20;

/// A body, read as it arrives into one buffer sized by its announced length. Collecting it whole
/// and copying it out (`bytes()`, then `to_vec()`) held a large answer (a 10,000-person
/// directory page or batch: megabytes) two or three times at once: a worker's peak memory.
async fn read_body(mut resp: Response) -> Result<Vec<u8>, reqwest::Error> {
    let reserved = resp.content_length().unwrap_or(0).min(MAX_BODY_RESERVED);
    let mut body = Vec::with_capacity(usize::try_from(reserved).unwrap_or(0));
    while let Some(chunk) = resp.chunk().await? {
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// How a call's successful answer is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Read {
    /// Whole, into memory, before the call returns.
    Whole(RetryPolicy),
    /// A 200's body left open, to be read as it arrives, with the whole exchange bounded by
    /// `within` (Finch's SDK rules for retries: the request is idempotent).
    AsItArrives { within: Duration },
}

impl Read {
    fn policy(self) -> RetryPolicy {
        match self {
            Read::Whole(p) => p,
            Read::AsItArrives { .. } => RetryPolicy::Standard,
        }
    }
}

/// One attempt of a call, and what its outcome means for the next.
struct Attempt {
    operation: &'static str,
    policy: RetryPolicy,
    retries: u32,
    /// No retry is left.
    last: bool,
    started: Instant,
}

/// After an attempt: the answer, or another attempt after a wait.
enum Next {
    Done(Answer),
    RetryAfter(Duration),
}

impl Attempt {
    fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Finch answered: a success, a failure worth another attempt, or the error.
    async fn answered(&self, resp: Response, read: Read) -> Result<Next, Error> {
        let status = resp.status();
        let request_id = header(&resp, "finch-request-id");
        let should_retry = header(&resp, "x-should-retry");
        let data_retrieved = header(&resp, "finch-data-retrieved");
        let delay = retry_after(&resp);
        if status == StatusCode::OK && matches!(read, Read::AsItArrives { .. }) {
            tracing::info!(
                operation = self.operation,
                status = status.as_u16(),
                finch_request_id = request_id.as_deref().unwrap_or("-"),
                retry = self.retries,
                elapsed_ms = self.elapsed_ms(),
                "finch call (body read as it arrives)"
            );
            return Ok(Next::Done(Answer { status, body: Vec::new(), open: Some(resp), request_id, data_retrieved }));
        }
        let bytes = read_body(resp).await;
        tracing::info!(
            operation = self.operation,
            status = status.as_u16(),
            finch_request_id = request_id.as_deref().unwrap_or("-"),
            retry = self.retries,
            elapsed_ms = self.elapsed_ms(),
            "finch call"
        );
        let bytes = bytes.map_err(|e| Error::FinchTransport {
            operation: self.operation,
            maybe_sent: true,
            timed_out: e.is_timeout(),
            source: Box::new(e),
        })?;
        if status.is_success() {
            return Ok(Next::Done(Answer { status, body: bytes, open: None, request_id, data_retrieved }));
        }
        let retryable = self.policy == RetryPolicy::Standard
            && match should_retry.as_deref() {
                Some("true") => true,
                Some("false") => false,
                _ => matches!(status.as_u16(), 408 | 409 | 429) || status.is_server_error(),
            };
        let mut err = finch_error(self.operation, status, &bytes, request_id);
        err.retry_after = delay;
        match delay {
            _ if !retryable || self.last => Err(err.into()),
            Some(d) if d > MAX_RETRY_AFTER => Err(err.into()),
            Some(d) => Ok(Next::RetryAfter(d)),
            None => Ok(Next::RetryAfter(backoff(self.retries))),
        }
    }

    /// No answer: retried if the request provably never left, or if repeating it is harmless.
    fn failed(&self, e: reqwest::Error) -> Result<Next, Error> {
        let unsent = e.is_connect();
        tracing::warn!(
            operation = self.operation,
            retry = self.retries,
            elapsed_ms = self.elapsed_ms(),
            timed_out = e.is_timeout(),
            connect_failed = unsent,
            "finch call failed without a response"
        );
        let retryable = unsent || self.policy == RetryPolicy::Standard;
        if !retryable || self.last {
            return Err(Error::FinchTransport {
                operation: self.operation,
                maybe_sent: !unsent,
                timed_out: e.is_timeout(),
                source: Box::new(e.without_url()),
            });
        }
        Ok(Next::RetryAfter(backoff(self.retries)))
    }
}

/// A data answer: Finch's 202 becomes [`Data::NotYet`] with its reason.
fn data<T: DeserializeOwned>(a: Answer, operation: &'static str) -> Result<Data<T>, Error> {
    if a.status == StatusCode::ACCEPTED {
        let accepted: Accepted = serde_json::from_slice(&a.body).unwrap_or_default();
        return Ok(Data::NotYet(WaitReason::from_code(accepted.finch_code.as_deref())));
    }
    let Traced { value, request_id } = parse(&a, operation)?;
    Ok(Data::Ready(Fetched { value, request_id, data_retrieved: a.data_retrieved }))
}

/// A data answer kept as bytes (read in place by the caller); 202 as in [`data`].
fn raw_data(a: Answer) -> Result<Data<Vec<u8>>, Error> {
    if a.status == StatusCode::ACCEPTED {
        let accepted: Accepted = serde_json::from_slice(&a.body).unwrap_or_default();
        return Ok(Data::NotYet(WaitReason::from_code(accepted.finch_code.as_deref())));
    }
    Ok(Data::Ready(Fetched { value: a.body, request_id: a.request_id, data_retrieved: a.data_retrieved }))
}

/// An entity id in a query string: Finch's are UUIDs, so anything else is escaped, not trusted.
fn query_value(v: &str) -> String {
    url::form_urlencoded::byte_serialize(v.as_bytes()).collect()
}

fn header(resp: &Response, name: &str) -> Option<String> {
    resp.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
}

/// `retry-after-ms`, then `retry-after` (seconds or an HTTP date), as Finch's SDKs read them.
fn retry_after(resp: &Response) -> Option<Duration> {
    if let Some(ms) = header(resp, "retry-after-ms").and_then(|v| v.trim().parse::<f64>().ok())
        && ms.is_finite()
        && ms >= 0.0
    {
        return Some(Duration::from_secs_f64(ms / 1000.0));
    }
    let value = header(resp, "retry-after")?;
    if let Ok(secs) = value.trim().parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs));
    }
    let at = time::OffsetDateTime::parse(value.trim(), &time::format_description::well_known::Rfc2822).ok()?;
    let wait = at - time::OffsetDateTime::now_utc();
    Some(Duration::try_from(wait).unwrap_or(Duration::ZERO))
}

/// `0.5 s × 2ⁿ`, at most 8 s, minus up to 25 % jitter.
pub(crate) fn backoff(retries: u32) -> Duration {
    let base = (0.5 * 2f64.powi(retries.min(10) as i32)).min(8.0);
    let mut b = [0u8; 2];
    let u = if getrandom::fill(&mut b).is_ok() { f64::from(u16::from_le_bytes(b)) / 65536.0 } else { 0.5 };
    Duration::from_secs_f64(base * (1.0 - 0.25 * u))
}

fn finch_error(operation: &'static str, status: StatusCode, body: &[u8], request_id: Option<String>) -> FinchError {
    // A body that is not Finch's JSON error (a proxy's HTML page, an empty 502) carries none of
    // its fields: the status alone classifies the failure, so an unreadable body is an empty one.
    let parsed: ErrorBody = serde_json::from_slice(body).unwrap_or_default();
    FinchError {
        operation,
        status: status.as_u16(),
        name: parsed.name,
        finch_code: parsed.finch_code,
        message: parsed.message,
        request_id,
        context_connection_id: parsed.context.and_then(|c| c.connection_id),
        retry_after: None,
    }
}

fn parse<T: DeserializeOwned>(a: &Answer, operation: &'static str) -> Result<Traced<T>, Error> {
    // serde_json's message names the field and position, never the value of a string.
    let value = serde_json::from_slice(&a.body).map_err(|e| {
        Error::internal(format!(
            "Finch {operation} answered {} with a body Perch cannot read: line {} column {} ({:?})",
            a.status,
            e.line(),
            e.column(),
            e.classify()
        ))
    })?;
    Ok(Traced { value, request_id: a.request_id.clone() })
}

/// Finch's HTTP client: its API version and JSON on every request, no redirects, timeouts.
fn build_http(timeout: Duration) -> Result<reqwest::Client, String> {
    let mut headers = HeaderMap::new();
    headers.insert("finch-api-version", HeaderValue::from_static(FINCH_API_VERSION));
    headers.insert(reqwest::header::ACCEPT, HeaderValue::from_static("application/json"));
    // Finch's certificate chains to a public CA: trust Mozilla's root set, compiled in, rather
    // than parse the system's PEM bundle at every cold start. That parse is ~1.3 ms, a third
    // of init, and the AWS SDK already does it once for AWS (BENCHMARKS.md).
    let roots =
        webpki_root_certs::TLS_SERVER_ROOT_CERTS.iter().filter_map(|der| reqwest::Certificate::from_der(der).ok());
    // The benchmark's loopback authority, in a `bench-tls` build only (see `config::bench_ca`).
    let bench = crate::config::bench_ca().and_then(|pem| reqwest::Certificate::from_pem(&pem).ok());
    reqwest::Client::builder()
        .tls_certs_only(roots.chain(bench))
        .default_headers(headers)
        .user_agent(concat!("perch/", env!("CARGO_PKG_VERSION")))
        .redirect(reqwest::redirect::Policy::none())
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(5)))
        .build()
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_compiled_in_root_is_a_certificate_reqwest_takes() {
        let roots = webpki_root_certs::TLS_SERVER_ROOT_CERTS;
        assert!(roots.len() > 100, "Mozilla's root set: {}", roots.len());
        assert!(roots.iter().all(|der| reqwest::Certificate::from_der(der).is_ok()));
    }

    #[test]
    fn backoff_follows_the_sdk_schedule() {
        for (n, lo, hi) in [(0, 0.375, 0.5), (1, 0.75, 1.0), (4, 6.0, 8.0), (9, 6.0, 8.0)] {
            let d = backoff(n).as_secs_f64();
            assert!(d >= lo && d <= hi, "retry {n}: {d}");
        }
    }
}
