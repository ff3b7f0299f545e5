//! The Connect `state`: a Perch-issued, signed, single-use handle on a pending Connect flow.
//!
//! The value is `<id>.<tag>`: 128 random bits and a 128-bit HMAC-SHA256 tag under the
//! `state_key` from Secrets Manager. The tag lets the callback refuse a forged or mangled
//! state without touching DynamoDB; the id keys the stored flow (customer, Finch customer id,
//! expiry), which the callback consumes with one conditional delete — single use even when
//! two browsers replay the same URL at once. Only the id is stored, so a table dump yields no
//! usable state.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::domain::{Error, StateId};

const ID_BYTES: usize = 16;
const TAG_BYTES: usize = 16;
const DOMAIN: &[u8] = b"perch-connect-state-v1.";

/// A state value that passed its signature check; `id()` keys the stored flow.
#[derive(Clone, PartialEq, Eq)]
pub struct VerifiedState {
    id: StateId,
}

impl VerifiedState {
    pub fn id(&self) -> &StateId {
        &self.id
    }
}

impl std::fmt::Debug for VerifiedState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The id alone is useless without the key, but it still names a live flow.
        f.write_str("VerifiedState([REDACTED])")
    }
}

fn tag(key: &[u8], id: &str) -> Result<[u8; TAG_BYTES], Error> {
    let mut mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(key).map_err(|_| Error::internal("state key rejected by HMAC"))?;
    mac.update(DOMAIN);
    mac.update(id.as_bytes());
    let full = mac.finalize().into_bytes();
    let mut out = [0u8; TAG_BYTES];
    out.copy_from_slice(&full[..TAG_BYTES]);
    Ok(out)
}

/// Random bytes from the OS, base64url-encoded.
pub fn random_id(bytes: usize) -> Result<String, Error> {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).map_err(|e| Error::internal(format!("OS randomness unavailable: {e}")))?;
    Ok(URL_SAFE_NO_PAD.encode(buf))
}

/// Issues a new state: returns the value to hand out and the id to store.
pub fn issue(key: &[u8]) -> Result<(String, VerifiedState), Error> {
    let id = random_id(ID_BYTES)?;
    let t = tag(key, &id)?;
    let value = format!("{id}.{}", URL_SAFE_NO_PAD.encode(t));
    Ok((value, VerifiedState { id: StateId::parse(id)? }))
}

/// Checks a state's shape and signature in constant time.
pub fn verify(key: &[u8], value: &str) -> Result<VerifiedState, Error> {
    let invalid = || Error::invalid("state_invalid", "The state is missing, malformed or was not issued by Perch.");
    // 22 + 1 + 22 characters; anything else is not ours.
    if value.len() != 45 {
        return Err(invalid());
    }
    let (id, tag_b64) = value.split_once('.').ok_or_else(invalid)?;
    let given = URL_SAFE_NO_PAD.decode(tag_b64).map_err(|_| invalid())?;
    let id_bytes = URL_SAFE_NO_PAD.decode(id).map_err(|_| invalid())?;
    if id_bytes.len() != ID_BYTES || given.len() != TAG_BYTES {
        return Err(invalid());
    }
    let expected = tag(key, id)?;
    if !bool::from(expected.ct_eq(&given[..])) {
        return Err(invalid());
    }
    Ok(VerifiedState { id: StateId::parse(id).map_err(|_| invalid())? })
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = &[42u8; 32];

    #[test]
    fn issued_states_verify_and_are_unique() {
        let (a, ida) = issue(KEY).unwrap();
        let (b, _) = issue(KEY).unwrap();
        assert_ne!(a, b);
        assert_eq!(verify(KEY, &a).unwrap(), ida);
    }

    #[test]
    fn forged_tampered_and_foreign_key_states_fail() {
        let (a, _) = issue(KEY).unwrap();
        assert!(verify(&[1u8; 32], &a).is_err());
        let mut t = a.clone().into_bytes();
        t[3] = if t[3] == b'A' { b'B' } else { b'A' };
        assert!(verify(KEY, std::str::from_utf8(&t).unwrap()).is_err());
        for bad in ["", "x", "a.b", &"A".repeat(45), &format!("{a}x"), &a.replace('.', "-")] {
            assert!(verify(KEY, bad).is_err(), "{bad}");
        }
    }
}
