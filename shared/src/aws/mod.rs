//! The AWS adapters: each port of the flows, implemented on an AWS service.
//!
//! - [`dynamodb`]: the [`crate::store`] traits, on one table;
//! - [`kms`]: the [`crate::crypto::TokenCipher`] and key migration;
//! - [`secrets_manager`]: the [`crate::secrets::SecretSource`];
//! - [`eventbridge`]: the [`crate::events::EventSink`];
//! - [`sqs`]: the sweep's [`crate::flows::sweep::WorkQueue`];
//! - [`sdk`]: the SDK configuration and [`tls`]: the roots its HTTPS client trusts.
//!
//! This module and [`crate::runtime`]'s wiring are the only places that name an AWS SDK type
//! (the architecture test in `tests/tests/architecture.rs` holds that line). Every SDK failure
//! becomes a [`Error::Aws`] through one conversion, [`error`], with one retry classification,
//! [`retryable`], whatever the service.

pub mod dynamodb;
pub mod eventbridge;
pub mod kms;
pub mod sdk;
pub mod secrets_manager;
pub mod sqs;
pub mod tls;

use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

use crate::app::Adapters;
use crate::domain::Error;

/// The AWS adapters, as one [`Adapters`]: what every Lambda function runs on.
pub struct Aws;

impl Adapters for Aws {
    type Store = dynamodb::DynamoStore;
    type Cipher = kms::KmsCipher;
    type Secrets = secrets_manager::SecretsManagerSource;
    type Events = eventbridge::EventBridgeSink;
    type Queue = sqs::SqsSyncQueue;
}

/// Whether an AWS SDK failure is worth retrying later: transport failures, throttling and
/// service-side errors. One rule for every AWS service Perch calls (the error codes below are
/// DynamoDB's, KMS's, SQS's and Secrets Manager's names for "busy" and "broken").
pub fn retryable<E: ProvideErrorMetadata>(e: &SdkError<E, HttpResponse>) -> bool {
    // A 5xx or 429 is transient whatever its body says (an emulator's HTML error page included).
    if e.raw_response().is_some_and(|r| r.status().is_server_error() || r.status().as_u16() == 429) {
        return true;
    }
    match e {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => true,
        SdkError::ServiceError(se) => {
            let code = se.err().code().unwrap_or("");
            code.contains("Throttl")
                || code.contains("Internal")
                || code.contains("Unavailable")
                || matches!(
                    code,
                    "ProvisionedThroughputExceededException"
                        | "RequestLimitExceeded"
                        | "TransactionConflictException"
                        | "DependencyTimeoutException"
                        | "LimitExceededException"
                )
        }
        _ => false,
    }
}

/// The conversion of a failed SDK call into Perch's error, classified by [`retryable`]:
/// `.map_err(aws::error("kms", "Decrypt"))`.
pub fn error<E>(service: &'static str, operation: &'static str) -> impl FnOnce(SdkError<E, HttpResponse>) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    move |e| {
        let retryable = retryable(&e);
        Error::aws(service, operation, retryable, e)
    }
}

/// A request the SDK's builder refused to build: a bug in Perch, not an AWS failure.
pub(crate) fn build_error(e: aws_smithy_types::error::operation::BuildError) -> Error {
    Error::internal_from("building an AWS request", e)
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_smithy_runtime_api::http::StatusCode;
    use aws_smithy_types::body::SdkBody;
    use aws_smithy_types::error::ErrorMetadata;

    #[derive(Debug)]
    struct Failure(ErrorMetadata);
    impl std::fmt::Display for Failure {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("failure")
        }
    }
    impl std::error::Error for Failure {}
    impl ProvideErrorMetadata for Failure {
        fn meta(&self) -> &ErrorMetadata {
            &self.0
        }
    }

    fn service_error(code: &str, status: u16) -> SdkError<Failure, HttpResponse> {
        let raw = HttpResponse::new(StatusCode::try_from(status).unwrap(), SdkBody::empty());
        SdkError::service_error(Failure(ErrorMetadata::builder().code(code).build()), raw)
    }

    #[test]
    fn busy_and_broken_services_are_retryable_refusals_are_not() {
        assert!(retryable(&service_error("ThrottlingException", 400)));
        assert!(retryable(&service_error("ProvisionedThroughputExceededException", 400)));
        assert!(retryable(&service_error("KMSInternalException", 500)));
        assert!(retryable(&service_error("Whatever", 503)), "any 5xx");
        assert!(retryable(&service_error("Whatever", 429)), "a 429");
        assert!(!retryable(&service_error("ConditionalCheckFailedException", 400)));
        assert!(!retryable(&service_error("AccessDeniedException", 400)));
        let e = error("kms", "Decrypt")(service_error("ThrottlingException", 400));
        assert!(matches!(e, Error::Aws { service: "kms", operation: "Decrypt", retryable: true, .. }));
    }
}
