//! The benchmark's certificate authority (PERFORMANCE.md G9), in a `bench-tls` build only.
//!
//! Timing a first request's TLS handshake needs an endpoint on the loopback that both HTTPS
//! clients trust. A build with the `bench-tls` feature also trusts the PEM authority in
//! `PERCH_BENCH_CA_PEM`; without the feature [`bench_ca`] is a constant `None` and the variable
//! is never read, so no setting of a shipped function widens what it trusts. The benchmark
//! builds that variant into its own target directory (`scripts/bench.sh --cold-first`), and
//! `tests/tests/release_trust.rs` checks that nothing shipped enables the feature.

/// The extra authority to trust (PEM).
#[cfg(feature = "bench-tls")]
pub fn bench_ca() -> Option<Vec<u8>> {
    std::env::var("PERCH_BENCH_CA_PEM").ok().filter(|p| !p.trim().is_empty()).map(String::into_bytes)
}

/// The extra authority to trust: none, in every build but the benchmark's.
#[cfg(not(feature = "bench-tls"))]
pub const fn bench_ca() -> Option<Vec<u8>> {
    None
}

#[cfg(test)]
mod tests {
    #[cfg(not(feature = "bench-tls"))]
    #[test]
    fn a_build_without_the_bench_feature_trusts_no_extra_authority() {
        assert_eq!(super::bench_ca(), None);
    }
}
