//! Finch's request and response bodies, as in `openapi.json` (API version 2020-09-17).
//!
//! Requests borrow; responses own and are lenient where Finch is (open enums, nullable and
//! optional fields), strict where Perch relies on a field (`connection_id`, `access_token`).

use serde::{Deserialize, Serialize};

use crate::domain::{
    AccessToken, AuthMethod, ConnectionId, ConnectionStatus, EntityId, Product, SandboxMode, SessionId,
};

/// `integration` of a Connect session: skip provider selection.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Integration {
    pub provider: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_method: Option<AuthMethod>,
}

/// `POST /connect/sessions` body (`CreateConnectSessionRequest`).
#[derive(Debug, Serialize)]
pub struct CreateSessionRequest<'a> {
    pub customer_id: &'a str,
    pub customer_name: &'a str,
    pub products: &'a [Product],
    #[serde(skip_serializing_if = "Option::is_none")]
    pub customer_email: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redirect_uri: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub minutes_to_expire: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<SandboxMode>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub manual: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub integration: Option<&'a Integration>,
}

/// `POST /connect/sessions/reauthenticate` body (`ReauthenticateRequest`).
#[derive(Debug, Serialize)]
pub struct ReauthenticateRequest<'a> {
    pub connection_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub minutes_to_expire: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub products: Option<&'a [Product]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redirect_uri: Option<&'a str>,
}

/// A new Connect session (both endpoints answer this shape).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
pub struct ConnectSession {
    pub session_id: SessionId,
    pub connect_url: String,
}

/// `POST /auth/token` body; credentials go in the body, never in a header.
#[derive(Serialize)]
pub(crate) struct TokenRequest<'a> {
    pub code: &'a str,
    pub client_id: &'a str,
    pub client_secret: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redirect_uri: Option<&'a str>,
}

/// `CreateAccessTokenResponse`. `Debug` is safe: the token redacts itself.
#[derive(Debug, Deserialize)]
pub struct TokenResponse {
    pub access_token: AccessToken,
    /// Required by Finch's spec, absent from seed 003's example: the callback then reads it
    /// from `/introspect`.
    #[serde(default)]
    pub connection_id: Option<ConnectionId>,
    #[serde(default)]
    pub customer_id: Option<String>,
    #[serde(default)]
    pub customer_name: Option<String>,
    #[serde(default)]
    pub client_type: Option<String>,
    #[serde(default)]
    pub connection_type: Option<String>,
    #[serde(default)]
    pub products: Vec<Product>,
    pub provider_id: String,
    #[serde(default)]
    pub entity_ids: Vec<EntityId>,
    #[serde(default)]
    pub company_id: Option<String>,
}

/// `ConnectionStatusDetail`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
pub struct StatusDetail {
    pub status: ConnectionStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_successful_sync: Option<String>,
}

/// One entity of a multi-entity connection.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
pub struct Entity {
    pub id: EntityId,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub source_id: Option<String>,
    pub status: ConnectionStatus,
}

/// `GetIntrospectResponse`, the fields Perch keeps.
#[derive(Debug, Clone, Deserialize)]
pub struct Introspection {
    pub connection_id: ConnectionId,
    pub connection_status: StatusDetail,
    #[serde(default)]
    pub products: Vec<Product>,
    pub provider_id: String,
    #[serde(default)]
    pub customer_id: Option<String>,
    #[serde(default)]
    pub customer_name: Option<String>,
    #[serde(default)]
    pub company_id: Option<String>,
    #[serde(default)]
    pub entities: Option<Vec<Entity>>,
    #[serde(default)]
    pub manual: Option<bool>,
    #[serde(default)]
    pub client_type: Option<String>,
    #[serde(default)]
    pub connection_type: Option<String>,
    #[serde(default)]
    pub customer_email: Option<String>,
    #[serde(default)]
    pub authentication_methods: Option<Vec<AuthenticationMethod>>,
}

impl Introspection {
    /// How the connection authenticates (`credential`, `api_token`, `oauth`, `assisted`, …):
    /// the first method Finch lists, else `assisted` for a manual connection.
    pub fn authentication_method(&self) -> Option<String> {
        self.authentication_methods
            .as_ref()
            .and_then(|m| m.first())
            .and_then(|m| m.kind.clone())
            .or_else(|| (self.manual == Some(true)).then(|| "assisted".to_owned()))
    }
}

/// One of `authentication_methods`: only its type is kept.
#[derive(Debug, Clone, Deserialize)]
pub struct AuthenticationMethod {
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
}

/// `GetCompanyResponse`, the fields Perch shows.
#[derive(Debug, Clone, Deserialize)]
pub struct Company {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub legal_name: Option<String>,
}

/// `POST /disconnect-entity` body.
#[derive(Debug, Serialize)]
pub struct DisconnectEntityRequest<'a> {
    pub entity_ids: &'a [&'a str],
}

/// Finch's error body: every field optional, as it varies by endpoint (docs/finch-contract.md).
#[derive(Debug, Default, Deserialize)]
pub(crate) struct ErrorBody {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub finch_code: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub context: Option<ErrorContext>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct ErrorContext {
    #[serde(default)]
    pub connection_id: Option<String>,
}

/// `GET /employer/directory`'s answer: one page. Each individual is kept as Finch's JSON (it is
/// stored as given, encrypted); only its `id` is read ([`Identified`]).
#[derive(Debug, Deserialize)]
pub struct DirectoryPage {
    pub paging: Paging,
    pub individuals: Vec<Box<serde_json::value::RawValue>>,
}

/// `Paging`: `count` is the total for the whole query, `offset` where this page starts.
#[derive(Debug, Clone, Copy, Deserialize)]
pub struct Paging {
    #[serde(default)]
    pub count: Option<u64>,
    pub offset: u64,
}

/// The one field of a record Perch reads before storing it.
#[derive(Debug, Deserialize)]
pub struct Identified {
    pub id: String,
}

/// `POST /employer/individual` and `/employer/employment` bodies.
#[derive(Debug, Serialize)]
pub struct BatchRequest<'a> {
    pub requests: Vec<BatchId<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub options: Option<BatchOptions>,
}

#[derive(Debug, Serialize)]
pub struct BatchId<'a> {
    pub individual_id: &'a str,
}

#[derive(Debug, Serialize)]
pub struct BatchOptions {
    pub include: Vec<&'static str>,
}

/// A batch's answer: one item per id asked, each with its own status (a 404 inside a 200).
#[derive(Debug, Deserialize)]
pub struct BatchAnswer {
    pub responses: Vec<BatchItem>,
}

#[derive(Debug, Deserialize)]
pub struct BatchItem {
    pub individual_id: String,
    pub code: u16,
    /// The record (code 200) or a `BatchError`.
    pub body: Box<serde_json::value::RawValue>,
}

/// One payment of a `POST /employer/pay-statement` request: its statements from `offset`.
#[derive(Debug, Clone, Serialize)]
pub struct PayStatementRequest<'a> {
    pub payment_id: &'a str,
    pub limit: u64,
    pub offset: u64,
}

#[derive(Debug, Serialize)]
pub struct PayStatementsRequest<'a, 'b> {
    pub requests: &'b [PayStatementRequest<'a>],
}

/// The fields of a payment Perch reads before storing it.
#[derive(Debug, Deserialize)]
pub struct PaymentKey {
    pub id: String,
    pub pay_date: Option<String>,
    /// Counted, not kept.
    #[serde(default)]
    pub individual_ids: Option<Vec<serde::de::IgnoredAny>>,
}

/// The field of a pay statement Perch reads before storing it.
#[derive(Debug, Deserialize)]
pub struct StatementKey {
    #[serde(default)]
    pub individual_id: Option<String>,
}

/// Finch's 202 body (`AcceptedResponse`): why the data is not there yet.
#[derive(Debug, Default, Deserialize)]
pub struct Accepted {
    #[serde(default)]
    pub finch_code: Option<String>,
}
