//! Which certificate authorities Perch's TLS trusts, chosen for cold start.
//!
//! Both HTTP clients would otherwise parse the system's PEM bundle (~140 certificates) when
//! they are built: about 1.3 ms each, most of a function's init (BENCHMARKS.md). Instead:
//!
//! - **AWS** (the SDK's client): only Amazon Trust Services' roots, which every AWS endpoint
//!   chains to — Amazon Root CA 1–4 and Starfield Services Root CA G2 (the cross-signing root
//!   AWS documents for older clients). Five certificates, and a narrower trust than the whole
//!   web PKI for the calls that carry tokens and keys.
//! - **Finch** (reqwest): Mozilla's root set, compiled in (`webpki-root-certs`): Finch's
//!   certificate chains to a public CA, and the set arrives parsed, not read from disk.
//!
//! Both sets come from `webpki-root-certs`, so they are updated with the crate, not by hand.
//!
//! A `bench-tls` build (the benchmark's, never a shipped one) also trusts one loopback
//! authority: see [`crate::config::bench_ca`].
//!
//! The handshakes' randomness comes from aws-lc, built without its CPU jitter entropy source
//! (`.cargo/config.toml` says why: 40-80 ms of CPU at a process's first handshake).

use aws_smithy_http_client::tls::{self, TlsContext, TrustStore, rustls_provider::CryptoMode};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use crate::config::bench_ca;
use crate::domain::Error;

/// The subject names of the roots AWS endpoints chain to.
const AMAZON_ROOTS: &[&[u8]] = &[
    b"Amazon Root CA 1",
    b"Amazon Root CA 2",
    b"Amazon Root CA 3",
    b"Amazon Root CA 4",
    b"Starfield Services Root Certificate Authority - G2",
];

/// The DER certificates of `AMAZON_ROOTS`, found in Mozilla's set by their names.
///
/// This runs at every cold start over ~120 certificates (~125 KB): with a searcher built once
/// per name (`memchr`'s SIMD `memmem`) it takes ~25 µs; a naive byte-window scan took ~400 µs,
/// a sixth of a function's whole init.
pub fn amazon_roots() -> Vec<&'static [u8]> {
    let finders: Vec<memchr::memmem::Finder<'_>> = AMAZON_ROOTS.iter().map(memchr::memmem::Finder::new).collect();
    webpki_root_certs::TLS_SERVER_ROOT_CERTS
        .iter()
        .map(|c| c.as_ref())
        .filter(|der| finders.iter().any(|f| f.find(der).is_some()))
        .collect()
}

#[cfg(test)]
fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    memchr::memmem::find(haystack, needle).is_some()
}

/// The AWS SDK's HTTPS client, trusting only [`amazon_roots`].
pub fn aws_http_client() -> Result<aws_smithy_runtime_api::client::http::SharedHttpClient, Error> {
    let mut store = TrustStore::empty().with_native_roots(false);
    for der in amazon_roots() {
        let pem = format!("-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n", STANDARD.encode(der));
        store = store.with_pem_certificate(pem.into_bytes());
    }
    if let Some(pem) = bench_ca() {
        store = store.with_pem_certificate(pem);
    }
    let context = TlsContext::builder()
        .with_trust_store(store)
        .build()
        .map_err(|e| Error::internal_from("building the AWS TLS context", e))?;
    Ok(aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(CryptoMode::AwsLc))
        .tls_context(context)
        .build_https())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_five_amazon_roots_are_found_and_nothing_else() {
        let roots = amazon_roots();
        assert_eq!(roots.len(), AMAZON_ROOTS.len());
        for name in AMAZON_ROOTS {
            assert_eq!(roots.iter().filter(|der| contains(der, name)).count(), 1, "{}", String::from_utf8_lossy(name));
        }
    }

    /// `.cargo/config.toml` builds aws-lc without CPU jitter entropy: its start-up test would
    /// cost every function 40-80 ms of CPU at its first TLS handshake (BENCHMARKS.md, G9).
    #[test]
    fn aws_lc_seeds_from_the_kernel_without_the_jitter_source() {
        assert!(
            aws_lc_rs::try_fips_cpu_jitter_entropy().is_err(),
            "aws-lc was built with CPU jitter entropy: is AWS_LC_SYS_NO_JITTER_ENTROPY set (.cargo/config.toml)?"
        );
    }

    #[test]
    fn the_aws_client_builds() {
        assert!(aws_http_client().is_ok());
    }
}
