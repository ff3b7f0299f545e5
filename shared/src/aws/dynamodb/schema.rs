//! The table's definition, in code, so the local bootstrap, the tests and `template.yaml`
//! describe one table (a test compares the template with [`LISTING_ATTRIBUTES`]).

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection, ProjectionType,
    ScalarAttributeType, TimeToLiveSpecification,
};

use super::keys::{GSI1PK, GSI1SK, INDEX_BY_CUSTOMER, LISTING_ATTRIBUTES, PK, TTL};
use crate::domain::Error;

fn build<T>(r: Result<T, aws_sdk_dynamodb::error::BuildError>) -> Result<T, Error> {
    r.map_err(crate::aws::build_error)
}

/// Creates the table (on-demand) with the `by_customer` index and TTL, unless it exists.
pub async fn create_table(client: &Client, name: &str) -> Result<(), Error> {
    let key = |n: &str, t| build(KeySchemaElement::builder().attribute_name(n).key_type(t).build());
    let attr = |n: &str| {
        build(AttributeDefinition::builder().attribute_name(n).attribute_type(ScalarAttributeType::S).build())
    };
    let index = build(
        GlobalSecondaryIndex::builder()
            .index_name(INDEX_BY_CUSTOMER)
            .key_schema(key(GSI1PK, KeyType::Hash)?)
            .key_schema(key(GSI1SK, KeyType::Range)?)
            .projection(
                Projection::builder()
                    .projection_type(ProjectionType::Include)
                    .set_non_key_attributes(Some(LISTING_ATTRIBUTES.iter().map(|s| (*s).to_owned()).collect()))
                    .build(),
            )
            .build(),
    )?;
    let res = client
        .create_table()
        .table_name(name)
        .billing_mode(BillingMode::PayPerRequest)
        .key_schema(key(PK, KeyType::Hash)?)
        .attribute_definitions(attr(PK)?)
        .attribute_definitions(attr(GSI1PK)?)
        .attribute_definitions(attr(GSI1SK)?)
        .global_secondary_indexes(index)
        .send()
        .await;
    with_ttl(client, name, res, TTL).await
}

/// Creates the records table (`pk`, `sk`; on-demand) with the sparse `due` index and TTL,
/// unless it exists (see [`super::data`]).
pub async fn create_records_table(client: &Client, name: &str) -> Result<(), Error> {
    use super::data::{DUE_AT, DUE_SHARD, INDEX_DUE, PK as RPK, SK, TTL as RTTL};
    let key = |n: &str, t| build(KeySchemaElement::builder().attribute_name(n).key_type(t).build());
    let attr = |n: &str, t| build(AttributeDefinition::builder().attribute_name(n).attribute_type(t).build());
    let due = build(
        GlobalSecondaryIndex::builder()
            .index_name(INDEX_DUE)
            .key_schema(key(DUE_SHARD, KeyType::Hash)?)
            .key_schema(key(DUE_AT, KeyType::Range)?)
            .projection(Projection::builder().projection_type(ProjectionType::All).build())
            .build(),
    )?;
    let res = client
        .create_table()
        .table_name(name)
        .billing_mode(BillingMode::PayPerRequest)
        .key_schema(key(RPK, KeyType::Hash)?)
        .key_schema(key(SK, KeyType::Range)?)
        .attribute_definitions(attr(RPK, ScalarAttributeType::S)?)
        .attribute_definitions(attr(SK, ScalarAttributeType::S)?)
        .attribute_definitions(attr(DUE_SHARD, ScalarAttributeType::S)?)
        .attribute_definitions(attr(DUE_AT, ScalarAttributeType::N)?)
        .global_secondary_indexes(due)
        .send()
        .await;
    with_ttl(client, name, res, RTTL).await
}

/// After `CreateTable`: a table that already exists is left as it is; a new one gets its TTL.
async fn with_ttl<T>(
    client: &Client,
    name: &str,
    created: Result<
        T,
        aws_sdk_dynamodb::error::SdkError<
            aws_sdk_dynamodb::operation::create_table::CreateTableError,
            aws_smithy_runtime_api::client::orchestrator::HttpResponse,
        >,
    >,
    ttl: &str,
) -> Result<(), Error> {
    match created {
        Ok(_) => {}
        Err(e) if e.as_service_error().is_some_and(|x| x.is_resource_in_use_exception()) => return Ok(()),
        Err(e) => return Err(crate::aws::error("dynamodb", "CreateTable")(e)),
    }
    client
        .update_time_to_live()
        .table_name(name)
        .time_to_live_specification(build(
            TimeToLiveSpecification::builder().enabled(true).attribute_name(ttl).build(),
        )?)
        .send()
        .await
        .map_err(crate::aws::error("dynamodb", "UpdateTimeToLive"))?;
    Ok(())
}
