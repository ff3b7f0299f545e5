//! The baseline: a `lambda_runtime` function that does nothing, built with Perch's release
//! profile and the same `current_thread` runtime, so init and loop costs compare on any machine.

use lambda_runtime::{Error, LambdaEvent, run, service_fn};
use serde_json::Value;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    run(service_fn(|event: LambdaEvent<Value>| async move { Ok::<Value, Error>(event.payload) })).await
}
