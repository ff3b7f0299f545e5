//! Percentiles of a sample.

use std::time::Duration;

#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize, Default)]
pub struct Summary {
    pub n: usize,
    pub min: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

/// `sample` in the unit `per` (e.g. microseconds: `Duration::from_micros(1)`), in its order.
pub fn values(sample: &[Duration], per: Duration) -> Vec<f64> {
    sample.iter().map(|d| d.as_secs_f64() / per.as_secs_f64()).collect()
}

/// Summary of durations, in the unit `per`.
pub fn summarize(sample: &[Duration], per: Duration) -> Summary {
    let mut v = values(sample, per);
    v.sort_by(f64::total_cmp);
    let at = |q: f64| -> f64 {
        if v.is_empty() {
            return 0.0;
        }
        let i = ((v.len() as f64 - 1.0) * q).round() as usize;
        v[i.min(v.len() - 1)]
    };
    Summary { n: v.len(), min: at(0.0), p50: at(0.5), p90: at(0.9), p99: at(0.99), max: at(1.0) }
}
