//! Tokens under KMS: the [`TokenCipher`] and [`KeyMigration`] ports on one key; and the
//! connections' record data keys ([`DataKeys`], see [`crate::crypto::records`]).
//!
//! A token is ~40 bytes, well under KMS's 4 KiB direct-encryption limit: no data keys to
//! manage, and each stored token costs exactly one `Encrypt` and one `Decrypt` when used. The
//! encryption context is [`crate::crypto::context`].

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_kms::operation::decrypt::DecryptError;
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{DataKeySpec, EncryptionAlgorithmSpec};
use zeroize::Zeroizing;

use crate::crypto::match_keys::{self, CustomerMatchKeys, MatchKeyring};
use crate::crypto::records::{self, DataKey, DataKeys, WrappedDataKey};
use crate::crypto::{EncryptedToken, KeyMigration, TokenCipher, context};
use crate::domain::{AccessToken, ConnectionId, CustomerId, Error};
use crate::lazy::Lazy;

/// An encryption context as KMS takes it (a token's: [`context`]; a data key's:
/// [`records::context`]).
fn as_kms(ctx: [(&'static str, String); 3]) -> HashMap<String, String> {
    ctx.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}

/// Encrypts under one KMS key; decrypts under whichever key a ciphertext names.
pub struct KmsCipher {
    client: Lazy<aws_sdk_kms::Client>,
    key_id: String,
}

impl KmsCipher {
    pub fn new(client: Lazy<aws_sdk_kms::Client>, key_id: String) -> Self {
        Self { client, key_id }
    }
}

#[async_trait]
impl TokenCipher for KmsCipher {
    #[tracing::instrument(skip_all, fields(connection_id = %connection))]
    async fn encrypt(
        &self,
        token: &AccessToken,
        connection: &ConnectionId,
        customer: &CustomerId,
    ) -> Result<EncryptedToken, Error> {
        let req = self
            .client
            .get()
            .encrypt()
            .key_id(&self.key_id)
            .encryption_algorithm(EncryptionAlgorithmSpec::SymmetricDefault)
            .plaintext(Blob::new(token.expose_secret().as_bytes()));
        let out = req
            .set_encryption_context(Some(as_kms(context(connection, customer))))
            .send()
            .await
            .map_err(super::error("kms", "Encrypt"))?;
        let ciphertext = out.ciphertext_blob.ok_or_else(|| Error::internal("KMS Encrypt returned no ciphertext"))?;
        Ok(EncryptedToken {
            ciphertext: ciphertext.into_inner(),
            key_id: out.key_id.unwrap_or_else(|| self.key_id.clone()),
        })
    }

    #[tracing::instrument(skip_all, fields(connection_id = %connection))]
    async fn decrypt(
        &self,
        token: &EncryptedToken,
        connection: &ConnectionId,
        customer: &CustomerId,
    ) -> Result<AccessToken, Error> {
        let out = self
            .client
            .get()
            .decrypt()
            // Naming the key makes KMS refuse a ciphertext produced under any other key.
            .key_id(&token.key_id)
            .ciphertext_blob(Blob::new(token.ciphertext.clone()))
            .set_encryption_context(Some(as_kms(context(connection, customer))))
            .send()
            .await
            .map_err(|e| match e.as_service_error() {
                // KMS answers these only for a ciphertext it will never decrypt under this key
                // and context; throttling and outages stay retryable `Aws` errors.
                Some(DecryptError::InvalidCiphertextException(_) | DecryptError::IncorrectKeyException(_)) => {
                    Error::TokenUnreadable(Box::new(e))
                }
                _ => super::error("kms", "Decrypt")(e),
            })?;
        let plain = out.plaintext.ok_or_else(|| Error::internal("KMS Decrypt returned no plaintext"))?;
        let text =
            String::from_utf8(plain.into_inner()).map_err(|_| Error::internal("decrypted token is not UTF-8"))?;
        Ok(AccessToken::new(text))
    }
}

#[async_trait]
impl KeyMigration for KmsCipher {
    async fn key_arn(&self, key: &str) -> Result<String, Error> {
        let out =
            self.client.get().describe_key().key_id(key).send().await.map_err(super::error("kms", "DescribeKey"))?;
        out.key_metadata.and_then(|m| m.arn).ok_or_else(|| Error::internal("DescribeKey returned no ARN"))
    }

    #[tracing::instrument(skip_all, fields(connection_id = %connection))]
    async fn reencrypt(
        &self,
        token: &EncryptedToken,
        to_key: &str,
        connection: &ConnectionId,
        customer: &CustomerId,
    ) -> Result<EncryptedToken, Error> {
        let out = self
            .client
            .get()
            .re_encrypt()
            .ciphertext_blob(Blob::new(token.ciphertext.clone()))
            .source_key_id(&token.key_id)
            .destination_key_id(to_key)
            .set_source_encryption_context(Some(as_kms(context(connection, customer))))
            .set_destination_encryption_context(Some(as_kms(context(connection, customer))))
            .send()
            .await
            .map_err(super::error("kms", "ReEncrypt"))?;
        let ciphertext = out.ciphertext_blob.ok_or_else(|| Error::internal("KMS ReEncrypt returned no ciphertext"))?;
        Ok(EncryptedToken {
            ciphertext: ciphertext.into_inner(),
            key_id: out.key_id.unwrap_or_else(|| to_key.to_owned()),
        })
    }
}

impl KmsCipher {
    /// A fresh AES-256 data key under this cipher's key and `ctx`: its plaintext (zeroed when
    /// dropped) and the ciphertext to store.
    async fn generate_data_key(
        &self,
        ctx: [(&'static str, String); 3],
    ) -> Result<(Zeroizing<Vec<u8>>, WrappedDataKey), Error> {
        let out = self
            .client
            .get()
            .generate_data_key()
            .key_id(&self.key_id)
            .key_spec(DataKeySpec::Aes256)
            .set_encryption_context(Some(as_kms(ctx)))
            .send()
            .await
            .map_err(super::error("kms", "GenerateDataKey"))?;
        let plain = Zeroizing::new(
            out.plaintext.ok_or_else(|| Error::internal("KMS GenerateDataKey returned no plaintext"))?.into_inner(),
        );
        let ciphertext =
            out.ciphertext_blob.ok_or_else(|| Error::internal("KMS GenerateDataKey returned no ciphertext"))?;
        let wrapped = WrappedDataKey {
            ciphertext: ciphertext.into_inner(),
            key_id: out.key_id.unwrap_or_else(|| self.key_id.clone()),
        };
        Ok((plain, wrapped))
    }

    /// A stored data key's plaintext (zeroed when dropped), under the key that made it and `ctx`.
    async fn decrypt_data_key(
        &self,
        wrapped: &WrappedDataKey,
        ctx: [(&'static str, String); 3],
    ) -> Result<Zeroizing<Vec<u8>>, Error> {
        let out = self
            .client
            .get()
            .decrypt()
            .key_id(&wrapped.key_id)
            .ciphertext_blob(Blob::new(wrapped.ciphertext.clone()))
            .set_encryption_context(Some(as_kms(ctx)))
            .send()
            .await
            .map_err(super::error("kms", "Decrypt"))?;
        Ok(Zeroizing::new(
            out.plaintext.ok_or_else(|| Error::internal("KMS Decrypt returned no plaintext"))?.into_inner(),
        ))
    }
}

/// Connections' data keys (`GenerateDataKey`, AES-256) under the same key as the tokens, with
/// their own encryption context; the plaintext is zeroed once the record keys are derived.
#[async_trait]
impl DataKeys for KmsCipher {
    #[tracing::instrument(skip_all, fields(connection_id = %connection))]
    async fn generate(
        &self,
        connection: &ConnectionId,
        customer: &CustomerId,
    ) -> Result<(DataKey, WrappedDataKey), Error> {
        let (plain, wrapped) = self.generate_data_key(records::context(connection, customer)).await?;
        Ok((DataKey::from_bytes(&plain)?, wrapped))
    }

    #[tracing::instrument(skip_all, fields(connection_id = %connection))]
    async fn unwrap(
        &self,
        wrapped: &WrappedDataKey,
        connection: &ConnectionId,
        customer: &CustomerId,
    ) -> Result<DataKey, Error> {
        DataKey::from_bytes(&self.decrypt_data_key(wrapped, records::context(connection, customer)).await?)
    }
}

/// Customers' match keys (`GenerateDataKey`, AES-256, used as an HMAC key) under the same key,
/// with their own encryption context.
#[async_trait]
impl MatchKeyring for KmsCipher {
    #[tracing::instrument(skip_all, fields(customer_id = %customer))]
    async fn generate_match_key(&self, customer: &CustomerId) -> Result<(CustomerMatchKeys, WrappedDataKey), Error> {
        let (plain, wrapped) = self.generate_data_key(match_keys::context(customer)).await?;
        Ok((CustomerMatchKeys::from_bytes(&plain)?, wrapped))
    }

    #[tracing::instrument(skip_all, fields(customer_id = %customer))]
    async fn unwrap_match_key(
        &self,
        wrapped: &WrappedDataKey,
        customer: &CustomerId,
    ) -> Result<CustomerMatchKeys, Error> {
        CustomerMatchKeys::from_bytes(&self.decrypt_data_key(wrapped, match_keys::context(customer)).await?)
    }
}
