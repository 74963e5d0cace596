//! Where the benchmark points: the gateway's `ws://` endpoint and its operations `http://` base.
//!
//! Owns URL parsing for the two forms we accept (plain `ws://` and `http://` with a literal IPv4
//! or IPv6 address and an explicit port: no TLS, no DNS, since loadgen runs against loopback and
//! test hosts). Invariant: a parsed target carries the socket address to connect to, the `Host`
//! header to send, and a request path that starts with `/`.

use std::net::SocketAddr;

use anyhow::{Context, Result, bail, ensure};

/// A parsed `ws://IP:PORT/path?query` or `http://IP:PORT/path` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    /// The address to connect to.
    pub(crate) addr: SocketAddr,
    /// The `Host` header value (`IP:PORT` as written).
    pub(crate) host: String,
    /// The request target: path and query, starting with `/`.
    pub(crate) path: String,
}

impl Target {
    /// Parses a `ws://` URL; the path defaults to `/ws`.
    pub(crate) fn websocket(url: &str) -> Result<Self> {
        Self::parse(url, "ws://", "/ws")
    }

    /// Parses the operations base URL (`http://IP:PORT`, the scheme optional); the path
    /// defaults to `/metrics`.
    pub(crate) fn ops(url: &str) -> Result<Self> {
        let with_scheme = if url.contains("://") {
            url.to_owned()
        } else {
            format!("http://{url}")
        };
        Self::parse(&with_scheme, "http://", "/metrics")
    }

    fn parse(url: &str, scheme: &str, default_path: &str) -> Result<Self> {
        let Some(rest) = url.strip_prefix(scheme) else {
            bail!("{url:?} must start with {scheme} (no TLS: loadgen targets loopback)");
        };
        let (host, path) = match rest.find(['/', '?']) {
            Some(at) => (&rest[..at], &rest[at..]),
            None => (rest, ""),
        };
        let addr: SocketAddr = host
            .parse()
            .with_context(|| format!("{host:?} in {url:?} is not IP:PORT (no DNS names)"))?;
        ensure!(addr.port() != 0, "{url:?} needs a nonzero port");
        let path = match path {
            "" | "/" => default_path.to_owned(),
            p if p.starts_with('?') => format!("{default_path}{p}"),
            p => p.to_owned(),
        };
        Ok(Self {
            addr,
            host: host.to_owned(),
            path,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn websocket_urls() {
        let t = Target::websocket("ws://127.0.0.1:8080/ws").expect("valid");
        assert_eq!(t.addr, "127.0.0.1:8080".parse().expect("addr"));
        assert_eq!(
            (t.host.as_str(), t.path.as_str()),
            ("127.0.0.1:8080", "/ws")
        );
        let bare = Target::websocket("ws://127.0.0.1:9").expect("valid");
        assert_eq!(bare.path, "/ws");
        let query = Target::websocket("ws://[::1]:9?x=1").expect("valid");
        assert_eq!(
            (query.host.as_str(), query.path.as_str()),
            ("[::1]:9", "/ws?x=1")
        );
    }

    #[test]
    fn ops_urls() {
        let t = Target::ops("http://127.0.0.1:9100").expect("valid");
        assert_eq!(t.path, "/metrics");
        let no_scheme = Target::ops("127.0.0.1:9100").expect("valid");
        assert_eq!(no_scheme, t);
        let path = Target::ops("http://127.0.0.1:9100/other").expect("valid");
        assert_eq!(path.path, "/other");
    }

    #[test]
    fn rejects() {
        for bad in [
            "wss://127.0.0.1:1/ws",
            "ws://localhost:1/ws",
            "ws://127.0.0.1/ws",
            "ws://1:0",
        ] {
            assert!(
                Target::websocket(bad).is_err(),
                "{bad:?} should be rejected"
            );
        }
        assert!(Target::ops("https://127.0.0.1:1").is_err());
    }
}
