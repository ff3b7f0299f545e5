//! The Finch secret in Secrets Manager: the [`SecretSource`] port.

use async_trait::async_trait;
use secrecy::SecretString;

use crate::domain::Error;
use crate::lazy::Lazy;
use crate::secrets::SecretSource;

/// One secret, read with `GetSecretValue` (cached above by [`crate::secrets::SecretCache`]).
pub struct SecretsManagerSource {
    client: Lazy<aws_sdk_secretsmanager::Client>,
    secret_id: String,
}

impl SecretsManagerSource {
    pub fn new(client: Lazy<aws_sdk_secretsmanager::Client>, secret_id: String) -> Self {
        Self { client, secret_id }
    }
}

#[async_trait]
impl SecretSource for SecretsManagerSource {
    #[tracing::instrument(skip_all, fields(secret_id = %self.secret_id))]
    async fn fetch(&self) -> Result<SecretString, Error> {
        let out = self
            .client
            .get()
            .get_secret_value()
            .secret_id(&self.secret_id)
            .send()
            .await
            .map_err(super::error("secretsmanager", "GetSecretValue"))?;
        let json = out.secret_string.ok_or_else(|| Error::internal("Finch secret has no SecretString"))?;
        Ok(SecretString::from(json))
    }
}
