//! Latency histograms of a run: their bounds, and their text form between processes.
//!
//! Owns the one histogram shape every `live` figure uses (µs, 1 µs to one hour, 3 significant
//! digits) and its encoding on a protocol line: HdrHistogram's compressed V2 format in
//! base64, the same bytes an HdrHistogram interval log holds, so nothing is lost between a
//! worker and the report. Recording saturates at the top bound rather than failing.

use anyhow::{Context, Result, anyhow};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Deserializer, Serializer as _, V2DeflateSerializer};

/// Values above this (one hour, in µs) are recorded as this.
pub(crate) const LATENCY_US_MAX: u64 = 3_600_000_000;

/// A new, empty latency histogram.
pub(crate) fn new() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_US_MAX, 3).expect("constant bounds are valid")
}

/// The text form (`-` for an empty histogram, which is most ticks of a quiet worker).
pub(crate) fn encode(h: &Histogram<u64>) -> String {
    if h.is_empty() {
        return "-".into();
    }
    let mut bytes = Vec::new();
    V2DeflateSerializer::new()
        .serialize(h, &mut bytes)
        .expect("serializing into a Vec cannot fail");
    BASE64.encode(bytes)
}

/// Reads [`encode`]'s text.
pub(crate) fn decode(text: &str) -> Result<Histogram<u64>> {
    if text == "-" {
        return Ok(new());
    }
    let bytes = BASE64.decode(text).context("histogram is not base64")?;
    let h: Histogram<u64> = Deserializer::new()
        .deserialize(&mut bytes.as_slice())
        .map_err(|e| anyhow!("histogram does not decode: {e:?}"))?;
    // Re-home it in our bounds so merging never fails on a differently sized peer.
    let mut out = new();
    out.add(&h)
        .map_err(|e| anyhow!("histogram out of range: {e:?}"))?;
    Ok(out)
}

/// Adds `from` into `into` (same bounds by construction).
pub(crate) fn merge(into: &mut Histogram<u64>, from: &Histogram<u64>) {
    into.add(from).expect("histograms share bounds");
}

/// `q` of `h` in µs, or `None` when empty.
pub(crate) fn quantile(h: &Histogram<u64>, q: f64) -> Option<u64> {
    (!h.is_empty()).then(|| {
        if q >= 1.0 {
            h.max()
        } else {
            h.value_at_quantile(q)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let mut h = new();
        for v in [1, 50, 50, 1_000, 1_000_000, LATENCY_US_MAX] {
            h.record(v).expect("in range");
        }
        let back = decode(&encode(&h)).expect("decodes");
        assert_eq!(back, h);
        assert_eq!(encode(&new()), "-");
        assert!(decode("-").expect("empty").is_empty());
        assert!(decode("!!").is_err());
        assert_eq!(quantile(&h, 1.0), Some(h.max()));
        assert_eq!(quantile(&new(), 0.5), None);
    }
}
