//! Access tokens at rest: KMS-encrypted, bound to their connection and customer.
//!
//! A Finch token is a bearer credential to an employer's payroll data that never expires, so
//! it is only ever written as a KMS ciphertext. The encryption context names the
//! `connection_id` and the owning customer: KMS authenticates it (AES-GCM AAD), so a
//! ciphertext copied onto another item — another connection, another customer — fails to
//! decrypt instead of handing one tenant's token to another. The context is also what a
//! `kms:EncryptionContext:*` IAM condition and CloudTrail see, so every decrypt is
//! attributable to a connection.
//!
//! A token is ~40 bytes, well under KMS's 4 KiB direct-encryption limit: no data keys to
//! manage, and each stored token costs exactly one `Encrypt` and one `Decrypt` when used.

use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::EncryptionAlgorithmSpec;

use crate::error::Error;
use crate::types::{AccessToken, ConnectionId, CustomerId};

/// A KMS ciphertext of an [`AccessToken`], with the key that produced it.
#[derive(Clone, PartialEq, Eq)]
pub struct EncryptedToken {
    pub ciphertext: Vec<u8>,
    /// The key ARN KMS reports; kept for audits and key rotation.
    pub key_id: String,
}

impl std::fmt::Debug for EncryptedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EncryptedToken({} bytes, key {})", self.ciphertext.len(), self.key_id)
    }
}

/// The encryption context of a token: what it belongs to.
fn context(connection: &ConnectionId, customer: &CustomerId) -> [(&'static str, String); 3] {
    [
        ("purpose", "finch-access-token".to_owned()),
        ("connection_id", connection.as_str().to_owned()),
        ("customer_id", customer.as_str().to_owned()),
    ]
}

/// Encrypts and decrypts tokens with one KMS key.
#[derive(Clone)]
pub struct TokenCipher {
    client: crate::lazy::Lazy<aws_sdk_kms::Client>,
    key_id: String,
}

impl TokenCipher {
    pub fn new(client: crate::lazy::Lazy<aws_sdk_kms::Client>, key_id: String) -> Self {
        Self { client, key_id }
    }

    /// Builds the KMS client now (see [`crate::lazy`]).
    pub fn prewarm(&self) {
        self.client.get();
    }

    #[tracing::instrument(skip_all, fields(connection_id = %connection))]
    pub async fn encrypt(
        &self,
        token: &AccessToken,
        connection: &ConnectionId,
        customer: &CustomerId,
    ) -> Result<EncryptedToken, Error> {
        let mut req = self
            .client
            .get()
            .encrypt()
            .key_id(&self.key_id)
            .encryption_algorithm(EncryptionAlgorithmSpec::SymmetricDefault)
            .plaintext(Blob::new(token.expose_secret().as_bytes()));
        for (k, v) in context(connection, customer) {
            req = req.encryption_context(k, v);
        }
        let out = req.send().await.map_err(|e| {
            let r = crate::error::aws_retryable(&e);
            Error::aws("kms", "Encrypt", r, e)
        })?;
        let ciphertext = out.ciphertext_blob.ok_or_else(|| Error::internal("KMS Encrypt returned no ciphertext"))?;
        Ok(EncryptedToken {
            ciphertext: ciphertext.into_inner(),
            key_id: out.key_id.unwrap_or_else(|| self.key_id.clone()),
        })
    }

    /// Moves a ciphertext under `to_key` inside KMS (the token is never in plaintext here),
    /// keeping its encryption context. For key migrations; see `perch::rotation`.
    #[tracing::instrument(skip_all, fields(connection_id = %connection))]
    pub async fn reencrypt(
        &self,
        token: &EncryptedToken,
        to_key: &str,
        connection: &ConnectionId,
        customer: &CustomerId,
    ) -> Result<EncryptedToken, Error> {
        let mut req = self
            .client
            .get()
            .re_encrypt()
            .ciphertext_blob(Blob::new(token.ciphertext.clone()))
            .source_key_id(&token.key_id)
            .destination_key_id(to_key);
        for (k, v) in context(connection, customer) {
            req = req.source_encryption_context(k, v.clone()).destination_encryption_context(k, v);
        }
        let out = req.send().await.map_err(|e| {
            let r = crate::error::aws_retryable(&e);
            Error::aws("kms", "ReEncrypt", r, e)
        })?;
        let ciphertext = out.ciphertext_blob.ok_or_else(|| Error::internal("KMS ReEncrypt returned no ciphertext"))?;
        Ok(EncryptedToken {
            ciphertext: ciphertext.into_inner(),
            key_id: out.key_id.unwrap_or_else(|| to_key.to_owned()),
        })
    }

    /// The ARN of a key given by id, ARN or alias.
    pub async fn key_arn(&self, key: &str) -> Result<String, Error> {
        let out = self.client.get().describe_key().key_id(key).send().await.map_err(|e| {
            let r = crate::error::aws_retryable(&e);
            Error::aws("kms", "DescribeKey", r, e)
        })?;
        out.key_metadata.and_then(|m| m.arn).ok_or_else(|| Error::internal("DescribeKey returned no ARN"))
    }

    /// Decrypts a token; fails if the ciphertext was made for another connection or customer.
    #[tracing::instrument(skip_all, fields(connection_id = %connection))]
    pub async fn decrypt(
        &self,
        token: &EncryptedToken,
        connection: &ConnectionId,
        customer: &CustomerId,
    ) -> Result<AccessToken, Error> {
        let mut req = self
            .client
            .get()
            .decrypt()
            // Naming the key makes KMS refuse a ciphertext produced under any other key.
            .key_id(&token.key_id)
            .ciphertext_blob(Blob::new(token.ciphertext.clone()));
        for (k, v) in context(connection, customer) {
            req = req.encryption_context(k, v);
        }
        let out = req.send().await.map_err(|e| {
            let r = crate::error::aws_retryable(&e);
            Error::aws("kms", "Decrypt", r, e)
        })?;
        let plain = out.plaintext.ok_or_else(|| Error::internal("KMS Decrypt returned no plaintext"))?;
        let text =
            String::from_utf8(plain.into_inner()).map_err(|_| Error::internal("decrypted token is not UTF-8"))?;
        Ok(AccessToken::new(text))
    }
}
