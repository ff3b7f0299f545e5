//! The AWS SDK's configuration, loaded once per container.

use aws_config::BehaviorVersion;
use aws_config::environment::EnvironmentVariableCredentialsProvider;

use crate::domain::Error;

/// The AWS configuration from the environment (region, `AWS_ENDPOINT_URL*`, credentials), with
/// an HTTPS client that trusts only Amazon's roots (see [`super::tls`]).
///
/// Credentials come from the environment variables, where Lambda puts the function role's
/// (and where the local stack puts its own). The default chain would also build providers
/// Lambda never uses — web identity among them, which builds an STS client at init: ~0.7 M
/// instructions, a tenth of a function's init (BENCHMARKS.md).
pub async fn sdk_config() -> Result<aws_config::SdkConfig, Error> {
    Ok(aws_config::defaults(BehaviorVersion::latest())
        .http_client(super::tls::aws_http_client()?)
        .credentials_provider(EnvironmentVariableCredentialsProvider::new())
        .load()
        .await)
}
