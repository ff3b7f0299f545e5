//! The per-container state every function borrows: configuration and clients, built once.
//!
//! Building touches no network: AWS clients and the HTTP client connect lazily, and the Finch
//! secret is fetched on first use (see [`crate::secrets`]). Clients other than DynamoDB's are
//! themselves built on first use, or in init by [`AppState::prewarm`] for the services the
//! function calls (see [`crate::lazy`]).

use aws_config::BehaviorVersion;
use aws_config::environment::EnvironmentVariableCredentialsProvider;

use crate::config::Config;
use crate::crypto::TokenCipher;
use crate::error::Error;
use crate::events::EventPublisher;
use crate::finch::FinchClient;
use crate::lazy::{Lazy, Service};
use crate::secrets::SecretCache;
use crate::store::DynamoStore;

/// The AWS configuration from the environment (region, `AWS_ENDPOINT_URL*`, credentials), with
/// an HTTPS client that trusts only Amazon's roots (see [`crate::tls`]).
///
/// Credentials come from the environment variables, where Lambda puts the function role's
/// (and where the local stack puts its own). The default chain would also build providers
/// Lambda never uses — web identity among them, which builds an STS client at init: ~0.7 M
/// instructions, a tenth of a function's init (BENCHMARKS.md).
pub async fn sdk_config() -> Result<aws_config::SdkConfig, Error> {
    Ok(aws_config::defaults(BehaviorVersion::latest())
        .http_client(crate::tls::aws_http_client()?)
        .credentials_provider(EnvironmentVariableCredentialsProvider::new())
        .load()
        .await)
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
        let cipher = TokenCipher::new(lazy(sdk, aws_sdk_kms::Client::new), config.kms_key_id.clone());
        let secrets = SecretCache::new(
            lazy(sdk, aws_sdk_secretsmanager::Client::new),
            config.finch_secret_id.clone(),
            config.secret_cache_ttl,
        );
        let finch = FinchClient::new(config.finch_api_url.clone(), config.finch_timeout, config.finch_max_retries);
        let events = EventPublisher::new(lazy(sdk, aws_sdk_eventbridge::Client::new), config.event_bus_name.clone());
        Ok(Self { config, store, cipher, secrets, finch, events })
    }

    /// Builds, now, the clients of the services a function calls (its `SERVICES`), so their
    /// cost is part of init rather than of the first request.
    pub fn prewarm(&self, services: &[Service]) -> Result<(), Error> {
        for service in services {
            match service {
                Service::Kms => self.cipher.prewarm(),
                Service::SecretsManager => self.secrets.prewarm(),
                Service::EventBridge => self.events.prewarm(),
                Service::Finch => self.finch.prewarm()?,
            }
        }
        Ok(())
    }
}

fn lazy<C: 'static>(sdk: &aws_config::SdkConfig, build: fn(&aws_config::SdkConfig) -> C) -> Lazy<C> {
    let sdk = sdk.clone();
    Lazy::new(move || build(&sdk))
}
