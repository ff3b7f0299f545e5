//! The per-container state every function borrows: configuration and clients, built once.
//!
//! Building touches no network: AWS clients and the HTTP client are lazy, and the Finch secret
//! is fetched on first use (see [`crate::secrets`]). That keeps init to constructing structs.

use aws_config::BehaviorVersion;

use crate::config::Config;
use crate::crypto::TokenCipher;
use crate::error::Error;
use crate::events::EventPublisher;
use crate::finch::FinchClient;
use crate::secrets::SecretCache;
use crate::store::DynamoStore;

/// The AWS configuration the standard way (environment, role), with an HTTPS client that
/// trusts only Amazon's roots (see [`crate::tls`]).
pub async fn sdk_config() -> Result<aws_config::SdkConfig, Error> {
    Ok(aws_config::defaults(BehaviorVersion::latest()).http_client(crate::tls::aws_http_client()?).load().await)
}

/// Shared clients and configuration for one Lambda container (or one local server).
pub struct AppState {
    pub config: Config,
    pub store: DynamoStore,
    pub cipher: TokenCipher,
    pub secrets: SecretCache,
    pub finch: FinchClient,
    pub events: EventPublisher,
}

impl AppState {
    /// Loads the AWS configuration the standard way (environment, role) and builds everything.
    /// Locally, `AWS_ENDPOINT_URL*` points the same code at the emulator.
    pub async fn build(config: Config) -> Result<Self, Error> {
        Self::from_sdk_config(config, &sdk_config().await?)
    }

    /// Builds from an already-loaded SDK configuration (tests point it at their emulator).
    pub fn from_sdk_config(config: Config, sdk: &aws_config::SdkConfig) -> Result<Self, Error> {
        let store = DynamoStore::new(aws_sdk_dynamodb::Client::new(sdk), config.table_name.clone());
        let cipher = TokenCipher::new(aws_sdk_kms::Client::new(sdk), config.kms_key_id.clone());
        let secrets = SecretCache::new(
            aws_sdk_secretsmanager::Client::new(sdk),
            config.finch_secret_id.clone(),
            config.secret_cache_ttl,
        );
        let finch = FinchClient::new(config.finch_api_url.clone(), config.finch_timeout, config.finch_max_retries)?;
        let events = EventPublisher::new(aws_sdk_eventbridge::Client::new(sdk), config.event_bus_name.clone());
        Ok(Self { config, store, cipher, secrets, finch, events })
    }
}
