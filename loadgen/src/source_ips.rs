//! Source address lists: `127.0.0.2-127.0.0.40`, `127.0.0.5`, or a comma-separated mix.
//!
//! Owns parsing and the round-robin choice of a source address for connection number `i`.
//! Spreading connections over many source addresses keeps each (source, destination) pair far
//! from the ephemeral-port limit. Invariant: a parsed list is non-empty, has no duplicates and
//! holds at most [`SOURCE_IPS_MAX`] addresses (the whole of a /16 is plenty on loopback).

use std::net::Ipv4Addr;

use anyhow::{Context, Result, bail, ensure};

/// More source addresses than this is almost certainly a typo'd range.
const SOURCE_IPS_MAX: usize = 65_536;

/// A non-empty list of IPv4 source addresses, in the order given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SourceIps(Vec<Ipv4Addr>);

impl SourceIps {
    /// Parses `A-B`, `A`, or a comma-separated list of those.
    pub(crate) fn parse(text: &str) -> Result<Self> {
        let mut ips = Vec::new();
        for part in text.split(',').map(str::trim) {
            ensure!(
                !part.is_empty(),
                "empty entry in source address list {text:?}"
            );
            match part.split_once('-') {
                Some((first, last)) => push_range(&mut ips, parse_ip(first)?, parse_ip(last)?)?,
                None => ips.push(parse_ip(part)?),
            }
            ensure!(
                ips.len() <= SOURCE_IPS_MAX,
                "source address list {text:?} holds more than {SOURCE_IPS_MAX} addresses"
            );
        }
        let mut sorted = ips.clone();
        sorted.sort_unstable();
        if let Some([twice, _]) = sorted.windows(2).find(|pair| pair[0] == pair[1]) {
            bail!("source address {twice} appears twice in {text:?}");
        }
        Ok(Self(ips))
    }

    /// The source address for connection number `index` (round robin).
    pub(crate) fn pick(&self, index: u64) -> Ipv4Addr {
        // `index % len` < len ≤ SOURCE_IPS_MAX, so the cast back is lossless.
        self.0[(index % self.0.len() as u64) as usize]
    }

    /// How many addresses the list holds (at least one).
    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    /// The list in the syntax [`SourceIps::parse`] reads (comma-separated addresses).
    pub(crate) fn to_arg(&self) -> String {
        let texts: Vec<String> = self.0.iter().map(Ipv4Addr::to_string).collect();
        texts.join(",")
    }
}

fn parse_ip(text: &str) -> Result<Ipv4Addr> {
    text.trim()
        .parse()
        .with_context(|| format!("{:?} is not an IPv4 address", text.trim()))
}

fn push_range(ips: &mut Vec<Ipv4Addr>, first: Ipv4Addr, last: Ipv4Addr) -> Result<()> {
    let (lo, hi) = (u32::from(first), u32::from(last));
    ensure!(
        lo <= hi,
        "source address range {first}-{last} runs backwards"
    );
    ensure!(
        (hi - lo) as usize + ips.len() < SOURCE_IPS_MAX,
        "source address range {first}-{last} holds more than {SOURCE_IPS_MAX} addresses"
    );
    ips.extend((lo..=hi).map(Ipv4Addr::from));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> Ipv4Addr {
        text.parse().expect("test address")
    }

    #[test]
    fn range_is_inclusive() {
        let ips = SourceIps::parse("127.0.0.2-127.0.0.40").expect("valid range");
        assert_eq!(ips.len(), 39);
        assert_eq!(ips.pick(0), ip("127.0.0.2"));
        assert_eq!(ips.pick(38), ip("127.0.0.40"));
        assert_eq!(ips.pick(39), ip("127.0.0.2"));
    }

    #[test]
    fn single_and_mixed_lists() {
        let one = SourceIps::parse("127.0.0.9").expect("single address");
        assert_eq!(one.len(), 1);
        assert_eq!(one.pick(12_345), ip("127.0.0.9"));
        let mixed = SourceIps::parse("127.0.0.1, 127.0.1.254-127.0.2.1").expect("mixed list");
        assert_eq!(
            mixed.to_arg(),
            "127.0.0.1,127.0.1.254,127.0.1.255,127.0.2.0,127.0.2.1"
        );
        assert_eq!(
            SourceIps::parse(&mixed.to_arg()).expect("round trip"),
            mixed
        );
    }

    #[test]
    fn rejects_bad_lists() {
        for bad in [
            "",
            "127.0.0.1,",
            "127.0.0.300",
            "localhost",
            "127.0.0.9-127.0.0.2",
            "127.0.0.2-127.0.0.4,127.0.0.3",
            "10.0.0.0-10.255.255.255",
            "::1",
        ] {
            assert!(SourceIps::parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }
}
