//! Secrets at rest and in flight: encrypted tokens, Connect states, code hashes.
//!
//! **Tokens.** A Finch token is a bearer credential to an employer's payroll data that never
//! expires, so it is only ever written as a ciphertext. The [`TokenCipher`] port encrypts it
//! under an encryption context that names the `connection_id` and the owning customer
//! ([`context`]): authenticated with the ciphertext (KMS: AES-GCM AAD), so a ciphertext copied
//! onto another item — another connection, another customer — fails to decrypt instead of
//! handing one tenant's token to another. With KMS ([`crate::aws::kms`]) the context is also
//! what a `kms:EncryptionContext:*` IAM condition and CloudTrail see, so every decrypt is
//! attributable to a connection.
//!
//! **Records** ([`records`]): synced HR data, under one KMS data key per connection.
//!
//! **Match keys** ([`match_keys`]): the person index's SSNs, names and birthdays as keyed hashes.
//!
//! **States** ([`state`]) and **code hashes** ([`code_hash`]) are keyed with the `state_key`
//! from the Finch secret, so a table dump yields neither a usable state nor a way to confirm a
//! guessed code.

pub mod match_keys;
pub mod records;
pub mod state;

use async_trait::async_trait;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::domain::{AccessToken, AuthorizationCode, CodeHash, ConnectionId, CustomerId, Error};

/// `N` random bytes from the OS.
pub fn random_bytes<const N: usize>() -> Result<[u8; N], Error> {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).map_err(|e| Error::internal(format!("OS randomness unavailable: {e}")))?;
    Ok(b)
}

/// `N` random bytes in lowercase hex: run ids, lease holders (unguessable is not the point;
/// never colliding is).
pub fn random_hex<const N: usize>() -> Result<String, Error> {
    Ok(random_bytes::<N>()?.iter().map(|x| format!("{x:02x}")).collect())
}

/// A ciphertext of an [`AccessToken`], with the key that produced it.
#[derive(Clone, PartialEq, Eq)]
pub struct EncryptedToken {
    pub ciphertext: Vec<u8>,
    /// The key KMS reports (its ARN); kept for audits and key rotation.
    pub key_id: String,
}

impl std::fmt::Debug for EncryptedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EncryptedToken({} bytes, key {})", self.ciphertext.len(), self.key_id)
    }
}

/// The encryption context of a token: what it belongs to.
pub fn context(connection: &ConnectionId, customer: &CustomerId) -> [(&'static str, String); 3] {
    [
        ("purpose", "finch-access-token".to_owned()),
        ("connection_id", connection.as_str().to_owned()),
        ("customer_id", customer.as_str().to_owned()),
    ]
}

/// Encrypts and decrypts tokens, bound to their connection and customer.
#[async_trait]
pub trait TokenCipher: Send + Sync {
    async fn encrypt(
        &self,
        token: &AccessToken,
        connection: &ConnectionId,
        customer: &CustomerId,
    ) -> Result<EncryptedToken, Error>;

    /// Fails if the ciphertext was made for another connection or customer.
    async fn decrypt(
        &self,
        token: &EncryptedToken,
        connection: &ConnectionId,
        customer: &CustomerId,
    ) -> Result<AccessToken, Error>;
}

/// Moving ciphertexts to another key (`perch-admin reencrypt`; see [`crate::flows::rotation`]).
#[async_trait]
pub trait KeyMigration: Send + Sync {
    /// The canonical id (ARN) of a key given by id, ARN or alias.
    async fn key_arn(&self, key: &str) -> Result<String, Error>;

    /// Moves a ciphertext under `to_key` without the token ever being in plaintext here,
    /// keeping its encryption context.
    async fn reencrypt(
        &self,
        token: &EncryptedToken,
        to_key: &str,
        connection: &ConnectionId,
        customer: &CustomerId,
    ) -> Result<EncryptedToken, Error>;
}

/// Every key operation: what an adapter implements and [`crate::app::AppState`] holds.
pub trait Cipher: TokenCipher + KeyMigration + records::DataKeys + match_keys::MatchKeyring {}
impl<T: TokenCipher + KeyMigration + records::DataKeys + match_keys::MatchKeyring + ?Sized> Cipher for T {}

/// The key a code exchange's single-use marker is stored under: keyed, so a table dump cannot
/// be used to confirm a guessed code.
pub fn code_hash(state_key: &[u8], code: &AuthorizationCode) -> Result<CodeHash, Error> {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(state_key)
        .map_err(|_| Error::internal("state key rejected by HMAC"))?;
    mac.update(b"perch-code-v1.");
    mac.update(code.expose_secret().as_bytes());
    let hex: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
    Ok(CodeHash::parse(hex)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_hashes_are_keyed() {
        let c = AuthorizationCode::new("code-1");
        let a = code_hash(&[1u8; 32], &c).unwrap();
        assert_eq!(a.as_str().len(), 64);
        assert_ne!(a, code_hash(&[2u8; 32], &c).unwrap());
        assert_eq!(a, code_hash(&[1u8; 32], &c).unwrap());
        assert!(!a.as_str().contains("code-1"));
    }
}
