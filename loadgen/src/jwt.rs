//! Minting the gateway's access tokens: JWT HS256 with `sub`, `dev` and `exp` claims.
//!
//! Owns the claim layout loadgen signs (`sub` = user id and `dev` = device id as decimal strings,
//! `exp` in unix seconds) and the key: the exact bytes of a secret file, no trimming, as the
//! gateway reads it. Never verifies anything on the hot path; [`Minter::mint`] is pure given
//! its inputs (the clock is the caller's).

use std::path::Path;

use anyhow::{Context, Result, ensure};
use jsonwebtoken::{EncodingKey, Header};
use serde::{Deserialize, Serialize};

/// The claims the gateway reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Claims {
    /// User id, decimal, 1..=2^63-1.
    pub(crate) sub: String,
    /// Device id, decimal, nonzero.
    pub(crate) dev: String,
    /// Expiry, unix seconds.
    pub(crate) exp: u64,
}

/// Signs tokens with one HS256 key.
pub(crate) struct Minter {
    key: EncodingKey,
    header: Header,
}

impl Minter {
    /// A minter over the exact bytes of `path`.
    pub(crate) fn from_file(path: &Path) -> Result<Self> {
        let secret = std::fs::read(path)
            .with_context(|| format!("reading JWT secret file {}", path.display()))?;
        ensure!(
            !secret.is_empty(),
            "JWT secret file {} is empty",
            path.display()
        );
        Ok(Self::from_secret(&secret))
    }

    /// A minter over `secret`.
    pub(crate) fn from_secret(secret: &[u8]) -> Self {
        Self {
            key: EncodingKey::from_secret(secret),
            header: Header::default(),
        }
    }

    /// A token for `(user, device)` that expires at `exp_unix_s`.
    pub(crate) fn mint(&self, user: u64, device: u64, exp_unix_s: u64) -> Result<String> {
        ensure!(
            (1..=i64::MAX as u64).contains(&user),
            "user id {user} outside 1..=2^63-1"
        );
        ensure!(device != 0, "device id must be nonzero");
        let claims = Claims {
            sub: user.to_string(),
            dev: device.to_string(),
            exp: exp_unix_s,
        };
        jsonwebtoken::encode(&self.header, &claims, &self.key).context("signing a JWT")
    }
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::{Algorithm, DecodingKey, Validation};

    use super::*;

    const SECRET: &[u8] = b"00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

    #[test]
    fn round_trip_hs256() {
        let exp = 4_000_000_000; // year 2096: `Validation` checks expiry against the real clock.
        let token = Minter::from_secret(SECRET).mint(42, 7, exp).expect("mint");
        let header = jsonwebtoken::decode_header(&token).expect("header");
        assert_eq!(header.alg, Algorithm::HS256);
        let data = jsonwebtoken::decode::<Claims>(
            &token,
            &DecodingKey::from_secret(SECRET),
            &Validation::new(Algorithm::HS256),
        )
        .expect("verifies with the same bytes");
        assert_eq!(
            data.claims,
            Claims {
                sub: "42".into(),
                dev: "7".into(),
                exp
            }
        );
        let other = jsonwebtoken::decode::<Claims>(
            &token,
            &DecodingKey::from_secret(b"another key"),
            &Validation::new(Algorithm::HS256),
        );
        assert!(other.is_err(), "a different key must not verify");
    }

    #[test]
    fn refuses_out_of_range_ids() {
        let minter = Minter::from_secret(SECRET);
        assert!(minter.mint(0, 1, 1).is_err());
        assert!(minter.mint(1 << 63, 1, 1).is_err());
        assert!(minter.mint(1, 0, 1).is_err());
        assert!(minter.mint(i64::MAX as u64, u64::MAX, 1).is_ok());
    }
}
