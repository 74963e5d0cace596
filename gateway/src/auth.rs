//! Who is connecting: JWT verification on the WebSocket upgrade, token minting for development,
//! and the development secret.
//!
//! Owns the token format (DESIGN.md F11): `sub` = user id, `dev` = device id (decimal strings,
//! or JSON numbers), `exp` = unix seconds; HS256 with a secret or EdDSA with a public key.
//! Invariant: an `Identity` exists only for a token whose signature, expiry (with the configured
//! leeway) and ids all checked out. Failures are classified for metrics but never explained to
//! the client (it gets a bare 401).

use crate::config::Config;
use anyhow::Context as _;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use wire::{DeviceId, UserId};

/// The development secret's file name inside the data directory.
pub const DEV_KEY_FILE: &str = "dev-jwt.key";

/// An authenticated device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Identity {
    /// The token's `sub`.
    pub user: UserId,
    /// The token's `dev`.
    pub device: DeviceId,
    /// The token's `exp` plus the leeway, in seconds since the Unix epoch: a connection still
    /// open then is closed (4003) and must reconnect with a fresh token.
    pub valid_until_s: u64,
}

/// Why a token was refused (a metrics label; never sent to the client).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthFailure {
    /// No token in the header or the query.
    Missing,
    /// Not a JWT, wrong algorithm, missing claims or invalid ids.
    Malformed,
    /// The signature does not verify.
    BadSignature,
    /// Past `exp` plus leeway.
    Expired,
}

impl AuthFailure {
    /// Every reason, for pre-creating metrics.
    pub const ALL: [Self; 4] = [
        Self::Missing,
        Self::Malformed,
        Self::BadSignature,
        Self::Expired,
    ];

    /// The metrics label.
    pub fn label(self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Malformed => "malformed",
            Self::BadSignature => "bad_signature",
            Self::Expired => "expired",
        }
    }
}

/// A claim holding an id: JWT `sub` is a string by the spec; numbers are accepted too.
#[derive(Deserialize, Serialize)]
#[serde(untagged)]
enum IdClaim {
    Text(String),
    Number(u64),
}

impl IdClaim {
    fn value(&self) -> Option<u64> {
        match self {
            IdClaim::Text(s) => s.parse().ok(),
            IdClaim::Number(n) => Some(*n),
        }
    }
}

#[derive(Deserialize, Serialize)]
struct Claims {
    sub: IdClaim,
    dev: IdClaim,
    exp: u64,
}

/// Verifies tokens with the configured key. Cheap to clone per core.
#[derive(Clone)]
pub struct Authenticator {
    key: DecodingKey,
    validation: Validation,
}

impl Authenticator {
    /// Loads the configured key (creating the development secret if none is configured).
    ///
    /// # Errors
    /// An unreadable or invalid key file.
    pub fn from_config(config: &Config) -> anyhow::Result<Self> {
        let (key, algorithm) = if let Some(public) = &config.jwt_public_key_file {
            let pem = std::fs::read(public)
                .with_context(|| format!("reading jwt_public_key_file {}", public.display()))?;
            let key = DecodingKey::from_ed_pem(&pem).with_context(|| {
                format!(
                    "jwt_public_key_file {} is not an Ed25519 PEM key",
                    public.display()
                )
            })?;
            (key, Algorithm::EdDSA)
        } else {
            (
                DecodingKey::from_secret(&hs256_secret(config)?),
                Algorithm::HS256,
            )
        };
        let mut validation = Validation::new(algorithm);
        validation.leeway = config.jwt_leeway_s;
        // `sub` and `dev` are required by `Claims` itself (as strings or numbers).
        validation.set_required_spec_claims(&["exp"]);
        Ok(Self { key, validation })
    }

    /// The identity a token proves.
    ///
    /// # Errors
    /// Why it proves nothing.
    pub fn verify(&self, token: &str) -> Result<Identity, AuthFailure> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation).map_err(
            |e| match e.kind() {
                ErrorKind::ExpiredSignature => AuthFailure::Expired,
                ErrorKind::InvalidSignature => AuthFailure::BadSignature,
                _ => AuthFailure::Malformed,
            },
        )?;
        let user = data
            .claims
            .sub
            .value()
            .and_then(UserId::new)
            .ok_or(AuthFailure::Malformed)?;
        let device = data
            .claims
            .dev
            .value()
            .and_then(DeviceId::new)
            .ok_or(AuthFailure::Malformed)?;
        let valid_until_s = data.claims.exp.saturating_add(self.validation.leeway);
        Ok(Identity {
            user,
            device,
            valid_until_s,
        })
    }
}

/// Mints an HS256 token with the configured (or development) secret.
///
/// # Errors
/// An EdDSA-only configuration (no secret to sign with), or an unreadable secret.
pub fn mint(config: &Config, user: UserId, device: DeviceId, ttl_s: u64) -> anyhow::Result<String> {
    anyhow::ensure!(
        config.jwt_public_key_file.is_none(),
        "the configuration verifies EdDSA tokens; mint them with the identity service's private key"
    );
    let secret = hs256_secret(config)?;
    let now = crate::clock::unix_s();
    let claims = Claims {
        sub: IdClaim::Text(user.get().to_string()),
        dev: IdClaim::Text(device.get().to_string()),
        exp: now + ttl_s,
    };
    Ok(jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(&secret),
    )?)
}

/// The HS256 secret: the configured file's bytes, or the development secret.
fn hs256_secret(config: &Config) -> anyhow::Result<Vec<u8>> {
    crate::keyfile::load(
        config.jwt_secret_file.as_deref(),
        &config.data_dir,
        DEV_KEY_FILE,
        "JWT secret",
        "generated a development JWT secret; production must set jwt_secret_file or \
         jwt_public_key_file",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dir: &std::path::Path) -> Config {
        Config {
            data_dir: dir.to_path_buf(),
            ..Config::default()
        }
    }

    fn ids() -> (UserId, DeviceId) {
        (
            UserId::new(42).expect("valid"),
            DeviceId::new(7).expect("valid"),
        )
    }

    #[test]
    fn minted_tokens_verify_and_the_dev_key_is_private() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = config(dir.path());
        let (user, device) = ids();
        let token = mint(&config, user, device, 60).expect("mint");
        let auth = Authenticator::from_config(&config).expect("auth");
        let identity = auth.verify(&token).expect("verifies");
        assert_eq!((identity.user, identity.device), (user, device));
        let meta = std::fs::metadata(dir.path().join(DEV_KEY_FILE)).expect("dev key exists");
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777,
            0o600
        );
        assert_eq!(
            std::fs::read(dir.path().join(DEV_KEY_FILE))
                .expect("read")
                .len(),
            64
        );
    }

    /// A throwaway Ed25519 key pair, for this test only.
    const ED25519_PRIVATE: &str = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIIirOxUpckNbseBFp7gkfxU4IPsci93lA1zSkx13pZmv\n-----END PRIVATE KEY-----";
    const ED25519_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAN+ynDFqan0LfPXrP7SBpgZdaA+ZOEhvv8SX5ffEQdRA=\n-----END PUBLIC KEY-----";

    #[test]
    fn eddsa_tokens_verify_with_the_public_key_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let public = dir.path().join("ed25519.pub.pem");
        std::fs::write(&public, ED25519_PUBLIC).expect("write key");
        let config = Config {
            jwt_public_key_file: Some(public),
            ..config(dir.path())
        };
        let auth = Authenticator::from_config(&config).expect("auth");
        let claims = Claims {
            sub: IdClaim::Text("42".into()),
            dev: IdClaim::Text("7".into()),
            exp: u64::MAX / 2,
        };
        let key = EncodingKey::from_ed_pem(ED25519_PRIVATE.as_bytes()).expect("private key");
        let token =
            jsonwebtoken::encode(&Header::new(Algorithm::EdDSA), &claims, &key).expect("encode");
        let (user, device) = ids();
        let identity = auth.verify(&token).expect("verifies");
        assert_eq!((identity.user, identity.device), (user, device));
        // An HS256 token is not accepted by an EdDSA configuration, and no dev key is created.
        let hs = jsonwebtoken::encode(
            &Header::default(),
            &claims,
            &EncodingKey::from_secret(&[7; 32]),
        );
        assert_eq!(
            auth.verify(&hs.expect("encode")),
            Err(AuthFailure::Malformed)
        );
        assert!(!dir.path().join(DEV_KEY_FILE).exists());
        assert!(
            mint(&config, user, device, 60).is_err(),
            "no secret to mint with"
        );
    }

    #[test]
    fn failures_are_classified() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = config(dir.path());
        let auth = Authenticator::from_config(&config).expect("auth");
        let (user, device) = ids();
        assert_eq!(auth.verify("not-a-jwt"), Err(AuthFailure::Malformed));
        let other = tempfile::tempdir().expect("tempdir");
        let forged = mint(
            &Config {
                data_dir: other.path().to_path_buf(),
                ..Config::default()
            },
            user,
            device,
            60,
        );
        assert_eq!(
            auth.verify(&forged.expect("mint")),
            Err(AuthFailure::BadSignature)
        );
        let secret = std::fs::read(dir.path().join(DEV_KEY_FILE)).expect("read");
        let expired = Claims {
            sub: IdClaim::Number(42),
            dev: IdClaim::Number(7),
            exp: 1_000,
        };
        let token = jsonwebtoken::encode(
            &Header::default(),
            &expired,
            &EncodingKey::from_secret(&secret),
        );
        assert_eq!(
            auth.verify(&token.expect("encode")),
            Err(AuthFailure::Expired)
        );
        let bad_user = Claims {
            sub: IdClaim::Text("0".into()),
            dev: IdClaim::Number(7),
            exp: u64::MAX / 2,
        };
        let token = jsonwebtoken::encode(
            &Header::default(),
            &bad_user,
            &EncodingKey::from_secret(&secret),
        );
        assert_eq!(
            auth.verify(&token.expect("encode")),
            Err(AuthFailure::Malformed)
        );
    }
}
