//! Signed URLs of the built-in blob backend: what a URL grants, its query string, and checking
//! one.
//!
//! Owns the signature format. A URL grants one method (`PUT` or `GET`) on one attachment until
//! `exp` (Unix seconds); a `PUT` grant also fixes the blob's exact size and SHA-256, and both fix
//! the MIME type the download is served with. The MAC is HMAC-SHA256 with the media key over
//! a domain tag and every granted field in a fixed, length-prefixed layout, so no two grants
//! sign the same bytes. Invariants: no IO and no clock here (`now` is an input); a signature is
//! compared in constant time (`Mac::verify_slice`); a URL for one attachment, method, size,
//! digest, type or expiry never verifies for another; every value in a URL is URL-safe
//! (numbers, unpadded URL-safe base64), so nothing needs percent-encoding.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit as _, Mac as _};
use sha2::Sha256;
use wire::AttachmentId;

/// Separates this MAC's inputs from any other use of the key (and versions the layout).
const DOMAIN: &[u8] = b"switchboard media url v1\0";

/// The method a URL grants.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// Upload the blob.
    Put,
    /// Download the blob.
    Get,
}

impl Method {
    fn tag(self) -> u8 {
        match self {
            Method::Put => b'P',
            Method::Get => b'G',
        }
    }
}

/// What one signed URL allows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    /// `PUT` or `GET`.
    pub method: Method,
    /// The attachment (the URL's path names it too; the MAC binds it).
    pub id: AttachmentId,
    /// `PUT`: the exact blob size in bytes. `GET`: 0.
    pub size: u64,
    /// `PUT`: the blob's SHA-256. `GET`: all zero.
    pub sha256: wire::Sha256,
    /// The MIME type the download is served with.
    pub mime: String,
    /// Valid up to and including this second (Unix time).
    pub expires_s: u64,
}

/// Why a URL grants nothing. Every reason is answered 403; the reason is for logs and tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// A parameter is missing, repeated, unknown or not decodable.
    #[error("malformed signed URL")]
    Malformed,
    /// The MAC does not match what the URL claims (tampered, or another attachment or method).
    #[error("bad signature")]
    BadSignature,
    /// Past its expiry.
    #[error("expired")]
    Expired,
}

/// Signs and checks grants with the media key. Cheap to clone (a keyed HMAC state).
#[derive(Clone)]
pub struct Signer {
    mac: Hmac<Sha256>,
}

impl Signer {
    /// A signer with `key` (any length; the gateway requires at least 32 bytes).
    ///
    /// # Panics
    /// Never: HMAC takes a key of any length.
    pub fn new(key: &[u8]) -> Self {
        let mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts a key of any length");
        Self { mac }
    }

    /// The query string of a URL granting `grant` (no leading `?`).
    pub fn query(&self, grant: &Grant) -> String {
        let sig = URL_SAFE_NO_PAD.encode(self.tag(grant));
        let mime = URL_SAFE_NO_PAD.encode(grant.mime.as_bytes());
        match grant.method {
            Method::Put => format!(
                "size={}&sha256={}&type={mime}&exp={}&sig={sig}",
                grant.size,
                URL_SAFE_NO_PAD.encode(grant.sha256.as_bytes()),
                grant.expires_s
            ),
            Method::Get => format!("type={mime}&exp={}&sig={sig}", grant.expires_s),
        }
    }

    /// What a request's `query` grants for `method` on `id` at `now_s` (Unix seconds).
    ///
    /// # Errors
    /// [`Refusal`]: the query does not parse, its MAC does not match, or it has expired.
    pub fn verify(
        &self,
        method: Method,
        id: AttachmentId,
        query: &str,
        now_s: u64,
    ) -> Result<Grant, Refusal> {
        let params = Params::parse(query)?;
        let (size, sha256) = match method {
            Method::Put => (
                params.size.ok_or(Refusal::Malformed)?,
                params.sha256.ok_or(Refusal::Malformed)?,
            ),
            Method::Get if params.size.is_some() || params.sha256.is_some() => {
                return Err(Refusal::Malformed);
            }
            Method::Get => (0, wire::Sha256::new([0; 32])),
        };
        let grant = Grant {
            method,
            id,
            size,
            sha256,
            mime: params.mime.ok_or(Refusal::Malformed)?,
            expires_s: params.expires_s.ok_or(Refusal::Malformed)?,
        };
        let sig = params.sig.ok_or(Refusal::Malformed)?;
        let mut mac = self.mac.clone();
        feed(&mut mac, &grant);
        mac.verify_slice(&sig).map_err(|_| Refusal::BadSignature)?;
        if now_s > grant.expires_s {
            return Err(Refusal::Expired);
        }
        Ok(grant)
    }

    fn tag(&self, grant: &Grant) -> [u8; 32] {
        let mut mac = self.mac.clone();
        feed(&mut mac, grant);
        mac.finalize().into_bytes().into()
    }
}

/// The MAC input: fixed-size fields in a fixed order; the one variable field is
/// length-prefixed, so the encoding is unambiguous.
fn feed(mac: &mut Hmac<Sha256>, grant: &Grant) {
    mac.update(DOMAIN);
    mac.update(&[grant.method.tag()]);
    mac.update(grant.id.as_bytes());
    mac.update(&grant.size.to_be_bytes());
    mac.update(grant.sha256.as_bytes());
    mac.update(&grant.expires_s.to_be_bytes());
    let mime_len = u32::try_from(grant.mime.len()).unwrap_or(u32::MAX);
    mac.update(&mime_len.to_be_bytes());
    mac.update(grant.mime.as_bytes());
}

/// The parameters of a signed URL's query, each at most once.
#[derive(Default)]
struct Params {
    size: Option<u64>,
    sha256: Option<wire::Sha256>,
    mime: Option<String>,
    expires_s: Option<u64>,
    sig: Option<Vec<u8>>,
}

impl Params {
    fn parse(query: &str) -> Result<Self, Refusal> {
        let mut params = Self::default();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').ok_or(Refusal::Malformed)?;
            match key {
                "size" => set(&mut params.size, value.parse().ok())?,
                "sha256" => set(&mut params.sha256, b64_array(value).map(wire::Sha256::new))?,
                "type" => set(
                    &mut params.mime,
                    b64(value).and_then(|b| String::from_utf8(b).ok()),
                )?,
                "exp" => set(&mut params.expires_s, value.parse().ok())?,
                "sig" => set(&mut params.sig, b64(value))?,
                _ => return Err(Refusal::Malformed),
            }
        }
        Ok(params)
    }
}

/// Sets a parameter once: a repeated or undecodable one is malformed.
fn set<T>(slot: &mut Option<T>, value: Option<T>) -> Result<(), Refusal> {
    if slot.is_some() {
        return Err(Refusal::Malformed);
    }
    *slot = Some(value.ok_or(Refusal::Malformed)?);
    Ok(())
}

fn b64(value: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(value).ok()
}

fn b64_array<const N: usize>(value: &str) -> Option<[u8; N]> {
    b64(value)?.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW_S: u64 = 1_800_000_000;

    fn id(n: u8) -> AttachmentId {
        AttachmentId::from_bytes([n; 16]).expect("nonzero")
    }

    fn put(n: u8) -> Grant {
        Grant {
            method: Method::Put,
            id: id(n),
            size: 1234,
            sha256: wire::Sha256::new([7; 32]),
            mime: "image/jpeg".into(),
            expires_s: NOW_S + 900,
        }
    }

    fn get(n: u8) -> Grant {
        Grant {
            method: Method::Get,
            size: 0,
            sha256: wire::Sha256::new([0; 32]),
            ..put(n)
        }
    }

    fn signer() -> Signer {
        Signer::new(b"0123456789abcdef0123456789abcdef")
    }

    #[test]
    fn a_signed_grant_verifies_to_itself_until_it_expires() {
        let s = signer();
        for grant in [put(1), get(1)] {
            let q = s.query(&grant);
            assert!(
                q.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_=&".contains(&b))
            );
            assert_eq!(
                s.verify(grant.method, grant.id, &q, NOW_S),
                Ok(grant.clone())
            );
            let last = grant.expires_s;
            assert_eq!(
                s.verify(grant.method, grant.id, &q, last),
                Ok(grant.clone())
            );
            assert_eq!(
                s.verify(grant.method, grant.id, &q, last + 1),
                Err(Refusal::Expired)
            );
        }
    }

    #[test]
    fn another_attachment_method_or_key_is_refused() {
        let s = signer();
        let q = s.query(&put(1));
        assert_eq!(
            s.verify(Method::Put, id(2), &q, NOW_S),
            Err(Refusal::BadSignature)
        );
        // A PUT URL used for GET carries parameters a GET never has.
        assert_eq!(
            s.verify(Method::Get, id(1), &q, NOW_S),
            Err(Refusal::Malformed)
        );
        // A GET URL's MAC does not verify as a PUT, whatever size and digest are added.
        let g = s.query(&get(1));
        let as_put = format!("size=0&sha256={}&{g}", URL_SAFE_NO_PAD.encode([0u8; 32]));
        assert_eq!(
            s.verify(Method::Put, id(1), &as_put, NOW_S),
            Err(Refusal::BadSignature)
        );
        let other = Signer::new(b"another key, also 32 bytes long!");
        assert_eq!(
            other.verify(Method::Put, id(1), &q, NOW_S),
            Err(Refusal::BadSignature)
        );
    }

    #[test]
    fn any_tampered_parameter_is_refused() {
        let s = signer();
        let grant = put(1);
        let q = s.query(&grant);
        let tampered = [
            q.replace("size=1234", "size=1235"),
            q.replace(
                &format!("exp={}", grant.expires_s),
                &format!("exp={}", NOW_S + 99_999),
            ),
            q.replace(
                &URL_SAFE_NO_PAD.encode("image/jpeg"),
                &URL_SAFE_NO_PAD.encode("text/html"),
            ),
            q.replace(
                &URL_SAFE_NO_PAD.encode([7u8; 32]),
                &URL_SAFE_NO_PAD.encode([8u8; 32]),
            ),
        ];
        for t in &tampered {
            assert_ne!(t, &q);
            assert_eq!(
                s.verify(Method::Put, id(1), t, NOW_S),
                Err(Refusal::BadSignature),
                "{t}"
            );
        }
        // One flipped signature byte.
        let (head, sig) = q.split_once("sig=").expect("has a signature");
        let mut raw = URL_SAFE_NO_PAD.decode(sig).expect("base64");
        raw[5] ^= 1;
        let flipped = format!("{head}sig={}", URL_SAFE_NO_PAD.encode(raw));
        assert_eq!(
            s.verify(Method::Put, id(1), &flipped, NOW_S),
            Err(Refusal::BadSignature)
        );
    }

    #[test]
    fn malformed_queries_are_refused_not_panicked_on() {
        let s = signer();
        let q = s.query(&put(1));
        for bad in [
            String::new(),
            "size".into(),
            format!("{q}&size=1234"),
            format!("{q}&extra=1"),
            q.replace("size=1234", "size=-1"),
            q.replace("sig=", "sig=%%"),
            q.replace("sha256=", "sha256=AAAA"),
        ] {
            assert_eq!(
                s.verify(Method::Put, id(1), &bad, NOW_S),
                Err(Refusal::Malformed),
                "{bad}"
            );
        }
    }
}
