//! JWTs as the gateway expects them (HS256; `sub`, `dev` decimal strings; `exp` seconds),
//! and deliberately wrong ones.

use jsonwebtoken::{EncodingKey, Header};
use serde_json::{Value, json};

/// Seconds since the Unix epoch.
///
/// # Panics
/// When the clock is before 1970.
pub fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs()
}

/// `{"sub": "<user>", "dev": "<device>", "exp": exp}`.
pub fn claims(user: u64, device: u64, exp: u64) -> Value {
    json!({"sub": user.to_string(), "dev": device.to_string(), "exp": exp})
}

/// `claims` signed with HS256 and `secret`.
///
/// # Panics
/// Never for a JSON object (HS256 signing cannot fail).
pub fn sign(secret: &[u8], claims: &Value) -> String {
    jsonwebtoken::encode(
        &Header::default(),
        claims,
        &EncodingKey::from_secret(secret),
    )
    .expect("HS256 signing a JSON object")
}
