//! Proves the blob layer (F8) with real parts: a real `switchboard serve` and its media
//! listener, `curl` as the independent HTTP client, and URLs minted in the test with the
//! gateway's own signer and its data directory's `dev-media.key` (the messaging requests that
//! issue them are tested in `gateway_media.rs`). Built-in backend: a good upload is stored and
//! downloaded byte for byte with its type; a wrong digest or size is refused with 400 and
//! leaves nothing behind; an expired, tampered, other-attachment or other-method URL gets 403;
//! a ranged download resumes; a 100 MiB upload leaves the gateway's memory flat. S3 backend:
//! against `s3s-fs` (a real S3 server that checks signatures and checksums; built by
//! `scripts/s3s-fs`), the pre-signed upload takes the right blob and refuses a wrong one, and
//! `confirm` (HEAD), download and `delete` work.

use gateway::media::local::{LocalBlobs, signed_url};
use gateway::media::s3::{S3Blobs, S3Settings};
use gateway::media::sign::{Grant, Method, Signer};
use sha2::Digest as _;
use std::io::Write as _;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use switchboard_tests::chat::{ChatClient, WAIT, direct};
use switchboard_tests::gateway::Gateway;
use switchboard_tests::repo_root;
use wire::{AttachmentId, Body, ErrorCode};

/// URL validity used by the tests (the gateway's default too).
const TTL_S: u64 = 900;
/// The size of the memory test's blob: the largest attachment by default.
const BIG_BYTES: u64 = 100 * 1024 * 1024;
/// How much the gateway's resident memory may grow while it takes `BIG_BYTES`.
const RSS_GROWTH_MAX_BYTES: u64 = 24 * 1024 * 1024;

// ---- helpers ----------------------------------------------------------------------------------

fn now_s() -> u64 {
    gateway::clock::unix_s()
}

/// Attachment `n` (every test has its own gateway, data dir and bucket, so ids may repeat).
fn id(n: u8) -> AttachmentId {
    let mut bytes = [0xa5; 16];
    bytes[15] = n;
    AttachmentId::from_bytes(bytes).expect("nonzero")
}

fn sha256(data: &[u8]) -> wire::Sha256 {
    wire::Sha256::new(sha2::Sha256::digest(data).into())
}

/// Deterministic, incompressible-looking bytes (xorshift).
fn blob(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// The gateway's signer (its data dir's development key) and its media base URL.
struct Minter {
    signer: Signer,
    base: String,
}

impl Minter {
    fn of(gw: &Gateway) -> Self {
        let key = std::fs::read(gw.data_dir().join("dev-media.key")).expect("dev-media.key");
        Self {
            signer: Signer::new(&key),
            base: format!("http://{}", gw.media),
        }
    }

    fn url(&self, grant: &Grant) -> String {
        signed_url(&self.base, &self.signer, grant)
    }

    fn put(&self, id: AttachmentId, data: &[u8], mime: &str) -> String {
        self.url(&put_grant(id, data.len() as u64, sha256(data), mime))
    }

    fn get(&self, id: AttachmentId, mime: &str) -> String {
        self.url(&get_grant(id, mime))
    }
}

fn put_grant(id: AttachmentId, size: u64, sha256: wire::Sha256, mime: &str) -> Grant {
    Grant {
        method: Method::Put,
        id,
        size,
        sha256,
        mime: mime.into(),
        expires_s: now_s() + TTL_S,
    }
}

fn get_grant(id: AttachmentId, mime: &str) -> Grant {
    Grant {
        method: Method::Get,
        id,
        size: 0,
        sha256: wire::Sha256::new([0; 32]),
        mime: mime.into(),
        expires_s: now_s() + TTL_S,
    }
}

/// What `curl` got: the status, the headers (names lower-cased) and the body.
#[derive(Debug)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Runs `curl` with `args`; the body goes to `out` (read back unless it is large).
fn curl_to(out: &Path, args: &[&str]) -> Reply {
    let dir = tempfile::tempdir().expect("temp dir");
    let head = dir.path().join("headers");
    let output = Command::new("curl")
        .args(["-sS", "--max-time", "120", "-o"])
        .arg(out)
        .arg("-D")
        .arg(&head)
        .args(["-w", "%{http_code}"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("curl runs (Debian package curl)");
    let code = String::from_utf8_lossy(&output.stdout);
    let status = code.trim().parse().unwrap_or_else(|_| {
        panic!(
            "curl {args:?}: no status ({code}); stderr: {}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    let headers = std::fs::read_to_string(&head)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let body = match std::fs::metadata(out) {
        Ok(m) if m.len() <= 16 * 1024 * 1024 => std::fs::read(out).unwrap_or_default(),
        _ => Vec::new(),
    };
    Reply {
        status,
        headers,
        body,
    }
}

fn curl(args: &[&str]) -> Reply {
    let dir = tempfile::tempdir().expect("temp dir");
    curl_to(&dir.path().join("body"), args)
}

/// `PUT` of `data` (from a file, as `curl -T` streams it).
fn upload(url: &str, data: &[u8], extra: &[&str]) -> Reply {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("blob");
    std::fs::write(&file, data).expect("writing the blob");
    let file = file.to_string_lossy().into_owned();
    let mut args = vec!["-T", file.as_str()];
    args.extend_from_slice(extra);
    args.push(url);
    curl(&args)
}

fn media_dir(gw: &Gateway) -> PathBuf {
    gw.data_dir().join("media")
}

fn blob_path(gw: &Gateway, id: AttachmentId) -> PathBuf {
    media_dir(gw).join(hex::encode(id.as_bytes()))
}

/// The names in `<media_dir>/tmp`, after giving a refused upload's cleanup task a moment.
fn leftovers(gw: &Gateway) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let names: Vec<String> = std::fs::read_dir(media_dir(gw).join("tmp"))
            .expect("media tmp dir")
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        if names.is_empty() || Instant::now() >= deadline {
            return names;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn assert_nothing_kept(gw: &Gateway, id: AttachmentId) {
    assert!(!blob_path(gw, id).exists(), "a refused blob was kept");
    assert_eq!(leftovers(gw), Vec::<String>::new(), "temporary files left");
}

// ---- built-in backend -------------------------------------------------------------------------

#[test]
fn the_ready_line_names_the_media_listener_and_a_taken_one_is_refused() {
    let first = Gateway::start();
    // Port 0 picked a real port, and it answers HTTP (the harness parsed `media=<addr>`).
    assert_ne!(first.media.port(), 0);
    assert_eq!(curl(&[&format!("http://{}/", first.media)]).status, 404);
    let failure = match Gateway::builder().media_listen(first.media).try_start() {
        Ok(second) => panic!("a second gateway started on media {}", second.media),
        Err(failure) => failure,
    };
    assert!(
        failure.status.is_some_and(|s| !s.success()),
        "it did not exit non-zero: {failure}"
    );
    assert!(
        failure.stderr.contains(&first.media.to_string()),
        "stderr does not name {}: {failure}",
        first.media
    );
}

#[test]
fn an_upload_is_stored_and_downloaded_byte_for_byte_with_its_type() {
    let gw = Gateway::start();
    let m = Minter::of(&gw);
    let data = blob(3 * 1024 * 1024 + 17, 1);
    let a = id(1);
    let put = upload(&m.put(a, &data, "image/webp"), &data, &[]);
    assert_eq!(put.status, 200, "{put:?}");
    assert_eq!(std::fs::read(blob_path(&gw, a)).expect("stored"), data);
    assert_eq!(leftovers(&gw), Vec::<String>::new());

    let get = curl(&[&m.get(a, "image/webp")]);
    assert_eq!(get.status, 200);
    assert_eq!(get.header("content-type"), Some("image/webp"));
    assert_eq!(get.header("accept-ranges"), Some("bytes"));
    assert_eq!(get.header("x-content-type-options"), Some("nosniff"));
    assert!(get.body == data, "the download differs from the upload");

    let head = curl(&["-I", &m.get(a, "image/webp")]);
    assert_eq!(head.status, 200);
    assert_eq!(
        head.header("content-length"),
        Some(data.len().to_string().as_str())
    );
    // Idempotent: the same upload again (a client retry) is fine.
    let again = upload(&m.put(a, &data, "image/webp"), &data, &[]);
    assert_eq!(again.status, 200, "{again:?}");
    // A blob nobody uploaded is not found (with a valid URL).
    assert_eq!(curl(&[&m.get(id(2), "image/webp")]).status, 404);
}

#[test]
fn a_wrong_digest_or_size_is_refused_and_nothing_is_kept() {
    let gw = Gateway::start();
    let m = Minter::of(&gw);
    let data = blob(2 * 1024 * 1024, 2);
    let mut other = data.clone();
    other[12345] ^= 0xff;

    // Wrong digest: the right size, one byte different (found only after the whole body).
    let a = id(1);
    let r = upload(&m.put(a, &data, "application/pdf"), &other, &[]);
    assert_eq!(r.status, 400, "{r:?}");
    assert!(
        String::from_utf8_lossy(&r.body).contains("SHA-256"),
        "{r:?}"
    );
    assert_nothing_kept(&gw, a);

    // Longer or shorter than declared (Content-Length known up front).
    let b = id(2);
    let url = m.put(b, &data, "application/pdf");
    let mut longer = data.clone();
    longer.push(0);
    for body in [&longer[..], &data[..data.len() - 1], &data[..100]] {
        let r = upload(&url, body, &[]);
        assert_eq!(r.status, 400, "{} bytes: {r:?}", body.len());
        assert_nothing_kept(&gw, b);
    }
    // Longer, chunked (no Content-Length): refused once the count passes the declared size.
    let r = upload(&url, &longer, &["-H", "Transfer-Encoding: chunked"]);
    assert_eq!(r.status, 400, "{r:?}");
    assert!(String::from_utf8_lossy(&r.body).contains("larger"), "{r:?}");
    assert_nothing_kept(&gw, b);
    // Shorter, chunked.
    let r = upload(&url, &data[..1000], &["-H", "Transfer-Encoding: chunked"]);
    assert_eq!(r.status, 400, "{r:?}");
    assert_nothing_kept(&gw, b);
    // A checksum header that disagrees with the signed digest is refused before the body.
    let r = upload(&url, &data, &["-H", "x-amz-checksum-sha256: AAAA"]);
    assert_eq!(r.status, 400, "{r:?}");
    assert_nothing_kept(&gw, b);
    // And the same URL still takes the right blob.
    assert_eq!(upload(&url, &data, &[]).status, 200);
}

#[test]
fn expired_tampered_or_foreign_urls_are_forbidden() {
    let gw = Gateway::start();
    let m = Minter::of(&gw);
    let data = blob(64 * 1024, 3);
    let a = id(1);
    let good = m.put(a, &data, "text/plain");

    let mut expired = put_grant(a, data.len() as u64, sha256(&data), "text/plain");
    expired.expires_s = now_s() - 1;
    let r = upload(&m.url(&expired), &data, &[]);
    assert_eq!(r.status, 403, "{r:?}");
    assert!(
        String::from_utf8_lossy(&r.body).contains("expired"),
        "{r:?}"
    );

    // Tampered: a signature byte, the size, the expiry, the type.
    let (head, sig) = good.split_once("sig=").expect("signed");
    let flipped = if sig.starts_with('A') { "B" } else { "A" };
    let tampered = [
        format!("{head}sig={flipped}{}", &sig[1..]),
        good.replace(&format!("size={}", data.len()), "size=1"),
        good.replace("exp=", "exp=9"),
        good.replace(&b64url("text/plain"), &b64url("text/html")),
    ];
    for url in &tampered {
        let r = upload(url, &data, &[]);
        assert_eq!(r.status, 403, "{url}: {r:?}");
    }
    // The URL of attachment `a` used for attachment `b`.
    let b = id(2);
    let foreign = good.replace(&hex::encode(a.as_bytes()), &hex::encode(b.as_bytes()));
    assert_eq!(upload(&foreign, &data, &[]).status, 403);
    // No signature at all.
    let bare = good.split_once('?').expect("has a query").0;
    assert_eq!(upload(bare, &data, &[]).status, 403);
    assert_nothing_kept(&gw, a);
    assert_nothing_kept(&gw, b);

    // Methods: the upload URL does not download, and a download URL does not upload.
    assert_eq!(upload(&good, &data, &[]).status, 200);
    assert_eq!(curl(&[&good]).status, 403, "a PUT URL used for GET");
    let get = m.get(a, "text/plain");
    assert_eq!(
        upload(&get, &data, &[]).status,
        403,
        "a GET URL used for PUT"
    );
    let foreign_get = get.replace(&hex::encode(a.as_bytes()), &hex::encode(b.as_bytes()));
    assert_eq!(curl(&[&foreign_get]).status, 403);
    let mut expired_get = get_grant(a, "text/plain");
    expired_get.expires_s = now_s() - 1;
    assert_eq!(curl(&[&m.url(&expired_get)]).status, 403);
    assert_eq!(curl(&[&get]).status, 200);
    // Other methods and paths.
    assert_eq!(curl(&["-X", "DELETE", &get]).status, 405);
    assert_eq!(
        curl(&[&format!("http://{}/v1/blobs/zz", gw.media)]).status,
        404
    );
}

#[test]
fn a_ranged_download_resumes_where_it_stopped() {
    let gw = Gateway::start();
    let m = Minter::of(&gw);
    let data = blob(1_000_003, 4);
    let a = id(1);
    assert_eq!(
        upload(&m.put(a, &data, "video/mp4"), &data, &[]).status,
        200
    );
    let url = m.get(a, "video/mp4");

    // The first 300,000 bytes, as an interrupted download would have them.
    let dir = tempfile::tempdir().expect("temp dir");
    let part = dir.path().join("part");
    let first = curl_to(&part, &["-r", "0-299999", &url]);
    assert_eq!(first.status, 206);
    assert_eq!(
        first.header("content-range"),
        Some("bytes 0-299999/1000003")
    );
    assert_eq!(first.body, &data[..300_000]);
    // `curl -C -` resumes from the file's length (Range: bytes=300000-) and appends.
    let rest = Command::new("curl")
        .args(["-sS", "-C", "-", "-o"])
        .arg(&part)
        .arg(&url)
        .status()
        .expect("curl");
    assert!(rest.success());
    assert!(
        std::fs::read(&part).expect("resumed file") == data,
        "the resumed download differs"
    );

    let tail = curl(&["-H", "Range: bytes=-10", &url]);
    assert_eq!(tail.status, 206);
    assert_eq!(tail.body, &data[data.len() - 10..]);
    assert_eq!(
        tail.header("content-range"),
        Some("bytes 999993-1000002/1000003")
    );
    let beyond = curl(&["-H", "Range: bytes=1000003-", &url]);
    assert_eq!(beyond.status, 416);
    assert_eq!(beyond.header("content-range"), Some("bytes */1000003"));
    // Several ranges are not supported: the whole blob (allowed by RFC 9110).
    let multi = curl(&["-H", "Range: bytes=0-1,5-6", &url]);
    assert_eq!(multi.status, 200);
    assert!(multi.body == data);
}

/// Resident memory of `pid`, in bytes (`VmRSS`).
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("VmRSS")
        * 1024
}

#[test]
// MiB and MB/s figures for the log: f64 precision is plenty.
#[allow(clippy::cast_precision_loss)]
fn a_100_mib_upload_leaves_the_gateway_memory_flat() {
    let gw = Gateway::start();
    let m = Minter::of(&gw);
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("big");
    let data = blob(BIG_BYTES as usize, 5);
    std::fs::File::create(&file)
        .and_then(|mut f| f.write_all(&data))
        .expect("writing the big blob");
    let a = id(1);
    let url = m.put(a, &data, "application/octet-stream");
    drop(data);
    // Warm up (first upload maps the allocator's pages), then measure a second blob.
    let small = blob(1024 * 1024, 6);
    assert_eq!(
        upload(&m.put(id(2), &small, "x/y"), &small, &[]).status,
        200
    );

    let pid = gw.pid();
    let before = rss(pid);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut peak = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                peak = peak.max(rss(pid));
                std::thread::sleep(Duration::from_millis(5));
            }
            peak
        })
    };
    let started = Instant::now();
    let r = curl(&["-T", &file.to_string_lossy(), &url]);
    let took = started.elapsed();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let peak = sampler.join().expect("sampler").max(rss(pid));
    let after = rss(pid);
    assert_eq!(r.status, 200, "{r:?}");
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    eprintln!(
        "100 MiB upload: {:.1} MB/s; gateway RSS before {:.1} MiB, peak {:.1} MiB (+{:.1}), \
         after {:.1} MiB",
        BIG_BYTES as f64 / took.as_secs_f64() / 1e6,
        mib(before),
        mib(peak),
        mib(peak.saturating_sub(before)),
        mib(after)
    );
    assert!(
        peak.saturating_sub(before) < RSS_GROWTH_MAX_BYTES,
        "RSS grew {:.1} MiB during a 100 MiB upload",
        mib(peak - before)
    );
    assert_eq!(
        std::fs::metadata(blob_path(&gw, a)).expect("stored").len(),
        BIG_BYTES
    );
}

#[test]
fn local_confirm_and_delete_see_only_verified_blobs() {
    let gw = Gateway::start();
    let m = Minter::of(&gw);
    let data = blob(10_000, 7);
    let a = id(1);
    assert_eq!(upload(&m.put(a, &data, "a/b"), &data, &[]).status, 200);
    let key = std::fs::read(gw.data_dir().join("dev-media.key")).expect("key");
    let dir = media_dir(&gw);
    let base = m.base.clone();
    let size = data.len() as u64;
    let (found, wrong_size, missing, after_delete) = on_executor(move || async move {
        let blobs = LocalBlobs::open(&dir, &base, Signer::new(&key), TTL_S).expect("open");
        let blobs = gateway::media::Blobs::Local(blobs);
        let digest = wire::Sha256::new([0; 32]);
        let found = blobs.confirm(a, size, &digest).await.expect("confirm");
        let wrong = blobs.confirm(a, size + 1, &digest).await.expect("confirm");
        let missing = blobs.confirm(id(9), size, &digest).await.expect("confirm");
        blobs.delete(a).await.expect("delete");
        blobs.delete(a).await.expect("deleting twice is fine");
        let after = blobs.confirm(a, size, &digest).await.expect("confirm");
        (found, wrong, missing, after)
    });
    assert_eq!(
        (found, wrong_size, missing, after_delete),
        (true, false, false, false)
    );
    assert_eq!(curl(&[&m.get(a, "a/b")]).status, 404, "deleted");
}

/// Runs `f`'s future on a Glommio executor thread (the backends' async IO needs one).
fn on_executor<F, Fut, T>(f: F) -> T
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = T> + 'static,
    T: Send + 'static,
{
    glommio::LocalExecutorBuilder::default()
        .io_memory(1 << 20)
        .spawn(move || async move { f().await })
        .expect("an executor")
        .join()
        .expect("the executor ran")
}

// ---- S3 backend (s3s-fs) ----------------------------------------------------------------------

/// A running `s3s-fs` on a free port with one bucket; killed on drop.
struct S3Server {
    child: Child,
    addr: SocketAddr,
    _root: tempfile::TempDir,
}

const ACCESS_KEY: &str = "switchboard-test";
const SECRET_KEY: &str = "switchboard-test-secret-key-0123456789";
const BUCKET: &str = "media";

impl S3Server {
    /// `None` (and a message saying why) when `s3s-fs` is not built.
    fn start() -> Option<Self> {
        let bin = std::env::var_os("SWITCHBOARD_S3S_FS").map_or_else(
            || repo_root().join("target/tools/bin/s3s-fs"),
            PathBuf::from,
        );
        if !bin.is_file() {
            eprintln!(
                "SKIPPED: no s3s-fs at {} (scripts/test builds it with scripts/s3s-fs)",
                bin.display()
            );
            return None;
        }
        let root = tempfile::tempdir().expect("temp dir");
        // s3s-fs keeps a bucket as a directory of its root.
        std::fs::create_dir(root.path().join(BUCKET)).expect("bucket dir");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new(&bin)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
            .arg(root.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting s3s-fs");
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let server = Self {
            child,
            addr,
            _root: root,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(addr).is_err() {
            assert!(Instant::now() < deadline, "s3s-fs did not listen on {addr}");
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(server)
    }

    fn settings(&self) -> S3Settings {
        S3Settings {
            endpoint: format!("http://{}", self.addr),
            bucket: BUCKET.into(),
            region: "us-east-1".into(),
            access_key: ACCESS_KEY.into(),
            secret_key: SECRET_KEY.into(),
        }
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn b64url(text: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text)
}

fn b64(digest: &wire::Sha256) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(digest.as_bytes())
}

/// `PUT` to a pre-signed S3 URL with the headers the URL requires.
fn s3_upload(url: &str, data: &[u8], mime: &str, digest: &wire::Sha256) -> Reply {
    let ctype = format!("Content-Type: {mime}");
    let sum = format!("x-amz-checksum-sha256: {}", b64(digest));
    upload(url, data, &["-H", &ctype, "-H", &sum])
}

#[test]
fn s3_presigned_uploads_are_checked_by_the_store_then_confirmed_and_deleted() {
    let Some(server) = S3Server::start() else {
        return;
    };
    let s3 = S3Blobs::new(&server.settings(), TTL_S).expect("S3 settings");
    let now = gateway::clock::unix_ms();
    let data = blob(1_500_000, 8);
    let digest = sha256(&data);
    let (good, bad) = (id(1), id(2));

    // The right blob is accepted.
    let url = s3.upload_url(good, data.len() as u64, &digest, "image/png", now);
    let r = s3_upload(&url, &data, "image/png", &digest);
    assert_eq!(r.status, 200, "{r:?} {}", String::from_utf8_lossy(&r.body));

    // A blob whose bytes differ from the signed checksum: the store refuses it (BadDigest).
    let mut other = data.clone();
    other[99] ^= 1;
    let url = s3.upload_url(bad, data.len() as u64, &digest, "image/png", now);
    let r = s3_upload(&url, &other, "image/png", &digest);
    assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(&r.body));
    assert!(String::from_utf8_lossy(&r.body).contains("BadDigest"));
    // Headers other than the signed ones (a checksum of the other bytes, or another size)
    // break the signature.
    let r = s3_upload(&url, &other, "image/png", &sha256(&other));
    assert_eq!(r.status, 403, "{}", String::from_utf8_lossy(&r.body));
    let r = s3_upload(&url, &data[1..], "image/png", &digest);
    assert_eq!(r.status, 403, "{}", String::from_utf8_lossy(&r.body));
    // An expired URL.
    let old = now - (TTL_S + 5) * 1000;
    let url = s3.upload_url(bad, data.len() as u64, &digest, "image/png", old);
    let r = s3_upload(&url, &data, "image/png", &digest);
    assert_eq!(r.status, 403, "{}", String::from_utf8_lossy(&r.body));

    // Download: the bytes and the declared type.
    let get = curl(&[&s3.download_url(good, "image/png", now)]);
    assert_eq!(get.status, 200);
    assert!(get.body == data, "the S3 download differs");
    assert_eq!(get.header("content-type"), Some("image/png"));

    // confirm (HEAD) and delete, on an executor as in the gateway.
    let settings = server.settings();
    let size = data.len() as u64;
    let results = on_executor(move || async move {
        let s3 = S3Blobs::new(&settings, TTL_S).expect("S3 settings");
        let blobs = gateway::media::Blobs::S3(s3);
        let found = blobs.confirm(good, size, &digest).await.expect("HEAD");
        let wrong_size = blobs.confirm(good, size - 1, &digest).await.expect("HEAD");
        let wrong_digest = blobs
            .confirm(good, size, &wire::Sha256::new([3; 32]))
            .await
            .expect("HEAD");
        let refused = blobs.confirm(bad, size, &digest).await.expect("HEAD");
        blobs.delete(good).await.expect("DELETE");
        blobs.delete(good).await.expect("DELETE twice");
        let deleted = blobs.confirm(good, size, &digest).await.expect("HEAD");
        [found, wrong_size, wrong_digest, refused, deleted]
    });
    assert_eq!(results, [true, false, false, false, false]);
    assert_eq!(
        curl(&[&s3.download_url(good, "image/png", now)]).status,
        404
    );
}

#[test]
fn s3_confirm_fails_loudly_when_the_store_is_down_or_the_key_is_wrong() {
    let Some(server) = S3Server::start() else {
        return;
    };
    let mut wrong_key = server.settings();
    wrong_key.secret_key = "not the secret".into();
    let down = S3Settings {
        endpoint: "http://127.0.0.1:9".into(),
        ..server.settings()
    };
    let (bad_key, no_store) = on_executor(move || async move {
        let digest = wire::Sha256::new([0; 32]);
        let wrong = S3Blobs::new(&wrong_key, TTL_S).expect("settings");
        let down = S3Blobs::new(&down, TTL_S).expect("settings");
        (
            wrong.confirm(id(1), 1, &digest).await.is_err(),
            down.confirm(id(1), 1, &digest).await.is_err(),
        )
    });
    assert!(
        bad_key,
        "a HEAD with the wrong secret must be an error, not 'absent'"
    );
    assert!(no_store, "an unreachable store must be an error");
}

#[test]
fn a_gateway_starts_on_the_s3_backend() {
    let Some(server) = S3Server::start() else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let secret = dir.path().join("s3-secret");
    std::fs::write(&secret, format!("{SECRET_KEY}\n")).expect("secret file");
    let gw = Gateway::builder()
        .env("SWITCHBOARD_MEDIA_BACKEND", "s3")
        .env("SWITCHBOARD_S3_ENDPOINT", format!("http://{}", server.addr))
        .env("SWITCHBOARD_S3_BUCKET", BUCKET)
        .env("SWITCHBOARD_S3_ACCESS_KEY", ACCESS_KEY)
        .env("SWITCHBOARD_S3_SECRET_KEY_FILE", &secret)
        .start();
    // Its media listener exists (the ready line names it) but serves no blobs.
    assert_eq!(
        curl(&[&format!("http://{}/v1/blobs/{}", gw.media, "01".repeat(16))]).status,
        404
    );
    assert!(!gw.data_dir().join("dev-media.key").exists());

    // Through the protocol: reserve, upload to the bucket, reference, download as a member.
    let (alice, bob) = (5001, 5002);
    let mut a1 = ChatClient::connect_fresh(&gw, alice, 1);
    let mut b1 = ChatClient::connect_fresh(&gw, bob, 1);
    let chat = direct(alice, bob);
    let data = blob(200_000, 11);
    let digest = sha256(&data);
    let reply = a1.call(wire::Request::CreateAttachment(wire::CreateAttachment {
        size: data.len() as u64,
        sha256: digest,
        mime: "image/png",
    }));
    let (attachment, upload_url) = reply.attachment_created();
    assert!(
        upload_url.starts_with(&format!("http://{}/{BUCKET}/", server.addr)),
        "{upload_url}"
    );
    let request = a1.send_body(chat, 1, Body::Text("x"), &[attachment]);
    assert_eq!(
        a1.wait_code(request),
        ErrorCode::AttachmentNotReady,
        "not in the bucket yet"
    );
    let r = s3_upload(&upload_url, &data, "image/png", &digest);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let request = a1.send_body(chat, 2, Body::Text("x"), &[attachment]);
    let sent = a1.wait_result(request, WAIT).sent();
    assert_eq!(b1.wait_message(WAIT).seq, sent.seq);
    let url = b1
        .call(wire::Request::GetAttachmentUrl(wire::GetAttachmentUrl {
            chat,
            attachment,
        }))
        .attachment_url();
    let got = curl(&[&url]);
    assert_eq!(got.status, 200);
    assert!(
        got.body == data,
        "the download through the protocol differs"
    );
}
