//! The [`crate::store`] traits on one DynamoDB table, one file per kind of item around one key
//! module ([`keys`]) and one item conversion ([`item`]).
//!
//! Ownership of a Finch `customer_id` is claimed with a conditional put before it is ever
//! sent to Finch. The suffix scheme (`acme`, `acme-2`) is not injective across customers
//! (customer `acme-2` vs slot 2 of `acme`); the claim is what keeps one customer from being
//! handed a Connect session or a connection that Finch files under another's id.
//!
//! Every write that can race is conditional: states are consumed by a conditional delete, a
//! code exchange is started by a conditional put, and a connection is created with
//! `attribute_not_exists` or replaced only at the `version` it was read at. The index projects
//! only the listing attributes, so whoever reads it cannot see a ciphertext at all.

mod budget;
mod claims;
mod codes;
mod connections;
pub mod data;
mod events;
pub mod item;
pub mod keys;
mod parked;
mod people;
pub mod schema;
mod states;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;

pub use keys::{INDEX_BY_CUSTOMER, LISTING_ATTRIBUTES};

use crate::domain::Error;

/// The DynamoDB store; one per container, cheap to clone.
#[derive(Clone)]
pub struct DynamoStore {
    client: Client,
    table: String,
    /// The records table ([`data`]), for the functions that sync or serve data.
    records: Option<String>,
}

impl DynamoStore {
    pub fn new(client: Client, table: String) -> Self {
        Self { client, table, records: None }
    }

    /// The same store with the records table (`RECORDS_TABLE_NAME`).
    pub fn with_records(mut self, records: Option<String>) -> Self {
        self.records = records;
        self
    }

    /// Opens the HTTPS connection to DynamoDB, for init to pay its handshakes instead of the
    /// first request (`runtime::wiring`). `DescribeTable` on the function's own table: the
    /// cheapest call every role can be granted without reading an item (it shows only the
    /// table's schema and settings), and one that answers the same for every function.
    pub async fn open_connection(&self) -> Result<(), Error> {
        self.client
            .describe_table()
            .table_name(&self.table)
            .send()
            .await
            .map(drop)
            .map_err(super::error("dynamodb", "DescribeTable"))
    }
}

/// Whether a failure is a refused condition (the race or the check it was meant to catch).
fn is_condition_failure<E: ProvideErrorMetadata>(e: &SdkError<E, HttpResponse>) -> bool {
    matches!(e, SdkError::ServiceError(se) if se.err().code() == Some("ConditionalCheckFailedException"))
}

/// The outcome of a conditional write: `true` if applied, `false` if its condition failed.
fn conditional<T, E>(operation: &'static str, res: Result<T, SdkError<E, HttpResponse>>) -> Result<bool, Error>
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match res {
        Ok(_) => Ok(true),
        Err(e) if is_condition_failure(&e) => Ok(false),
        Err(e) => Err(super::error("dynamodb", operation)(e)),
    }
}
