//! The table's definition, in code, so the local bootstrap, the tests and `template.yaml`
//! describe one table (a test compares the template with [`LISTING_ATTRIBUTES`]).

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection, ProjectionType,
    ScalarAttributeType, TimeToLiveSpecification,
};

use super::{INDEX_BY_CUSTOMER, LISTING_ATTRIBUTES};
use crate::error::Error;

/// The TTL attribute (epoch seconds) of states and code markers.
pub const TTL_ATTRIBUTE: &str = "expires_at";

fn build<T>(r: Result<T, aws_sdk_dynamodb::error::BuildError>) -> Result<T, Error> {
    r.map_err(|e| Error::internal_from("building the table definition", e))
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
            .key_schema(key("gsi1pk", KeyType::Hash)?)
            .key_schema(key("gsi1sk", KeyType::Range)?)
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
        .key_schema(key("pk", KeyType::Hash)?)
        .attribute_definitions(attr("pk")?)
        .attribute_definitions(attr("gsi1pk")?)
        .attribute_definitions(attr("gsi1sk")?)
        .global_secondary_indexes(index)
        .send()
        .await;
    match res {
        Ok(_) => {}
        Err(e) if e.as_service_error().is_some_and(|x| x.is_resource_in_use_exception()) => return Ok(()),
        Err(e) => return Err(Error::aws("dynamodb", "CreateTable", false, e)),
    }
    client
        .update_time_to_live()
        .table_name(name)
        .time_to_live_specification(build(
            TimeToLiveSpecification::builder().enabled(true).attribute_name(TTL_ATTRIBUTE).build(),
        )?)
        .send()
        .await
        .map_err(|e| Error::aws("dynamodb", "UpdateTimeToLive", false, e))?;
    Ok(())
}
