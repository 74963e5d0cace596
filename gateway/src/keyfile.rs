//! Secret key files (the JWT HS256 secret, the media URL signing key): a configured file's
//! exact bytes, or a development key generated once in the data directory.
//!
//! Owns the one rule both secrets follow. Invariants: a key has at least [`KEY_BYTES_MIN`]
//! bytes; a generated key is random, hex, mode 0600, written with `create_new` so that two
//! processes starting at once agree on one key; generating one is logged as a warning.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;

/// Fewest bytes a key may have.
pub const KEY_BYTES_MIN: usize = 32;
/// Random bytes in a generated development key (written as hex).
const DEV_KEY_BYTES: usize = 32;

/// A secret key: `configured`'s bytes, else `<data_dir>/<dev_file>` (generated on first use,
/// with `warning` logged). `what` names it in errors.
///
/// # Errors
/// The file cannot be read or created, or holds fewer than [`KEY_BYTES_MIN`] bytes.
pub fn load(
    configured: Option<&Path>,
    data_dir: &Path,
    dev_file: &str,
    what: &str,
    warning: &str,
) -> anyhow::Result<Vec<u8>> {
    let path = match configured {
        Some(path) => path.to_owned(),
        None => dev_key(data_dir, dev_file, warning)?,
    };
    let key = std::fs::read(&path).with_context(|| format!("reading {what} {}", path.display()))?;
    anyhow::ensure!(
        key.len() >= KEY_BYTES_MIN,
        "{what} {} is shorter than {KEY_BYTES_MIN} bytes",
        path.display()
    );
    Ok(key)
}

/// The development key file, generated (random, mode 0600) on first use.
fn dev_key(data_dir: &Path, dev_file: &str, warning: &str) -> anyhow::Result<PathBuf> {
    let path = data_dir.join(dev_file);
    if path.exists() {
        return Ok(path);
    }
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating data dir {}", data_dir.display()))?;
    let mut bytes = [0u8; DEV_KEY_BYTES];
    rand::fill(&mut bytes);
    let created = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path);
    match created {
        Ok(mut file) => {
            file.write_all(hex::encode(bytes).as_bytes())?;
            file.sync_all()?;
            tracing::warn!(path = %path.display(), "{warning}");
        }
        // Another process (a concurrent `switchboard token`, say) created it first: use theirs.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e).with_context(|| format!("creating {}", path.display())),
    }
    Ok(path)
}
