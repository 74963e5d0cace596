//! Proves attachments end to end (DESIGN.md F8, docs/PROTOCOL.md §4.5–§4.7) against the real
//! `switchboard` binary and its built-in blob backend, with `curl` as the independent HTTP
//! client: reserve, upload, reference in a message, download as a member; the refusals
//! (not uploaded, another device's attachment, non-members and unreferenced chats get the
//! same `Forbidden`); and lifetime (an unreferenced upload and a blob whose last message
//! retention removed are deleted).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use switchboard_tests::chat::{ChatClient, WAIT, direct};
use switchboard_tests::gateway::Gateway;
use wire::{AttachmentId, Body, ErrorCode, Request};

const ALICE: u64 = 4001;
const BOB: u64 = 4002;
const CAROL: u64 = 4003;

/// A blob of `len` pseudo-random bytes.
fn blob(len: usize, seed: u8) -> Vec<u8> {
    let mut x = u64::from(seed) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn digest(bytes: &[u8]) -> wire::Sha256 {
    wire::Sha256::new(Sha256::digest(bytes).into())
}

/// `CreateAttachment` for `bytes`; returns its id and upload URL.
fn reserve(client: &mut ChatClient, bytes: &[u8]) -> (AttachmentId, String) {
    let reply = client.call(Request::CreateAttachment(wire::CreateAttachment {
        size: bytes.len() as u64,
        sha256: digest(bytes),
        mime: "image/png",
    }));
    reply.attachment_created()
}

/// `curl` with `args`, the body written to `out`; returns the HTTP status.
fn curl(out: &Path, args: &[&str]) -> u16 {
    let out = Command::new("curl")
        .args(["-sS", "-w", "%{http_code}", "-o"])
        .arg(out)
        .args(args)
        .output()
        .expect("running curl");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("curl {args:?}: {out:?}"))
}

/// PUTs `bytes` to `url`; returns the HTTP status.
fn upload(dir: &Path, url: &str, bytes: &[u8]) -> u16 {
    let file = dir.join("upload.bin");
    std::fs::write(&file, bytes).expect("writing the blob");
    curl(
        &dir.join("upload.out"),
        &["-T", file.to_str().expect("utf-8 path"), url],
    )
}

/// GETs `url` into memory; returns the status and the body.
fn download(dir: &Path, url: &str) -> (u16, Vec<u8>) {
    let file = dir.join("download.bin");
    let _ = std::fs::remove_file(&file);
    let status = curl(&file, &[url]);
    (status, std::fs::read(&file).unwrap_or_default())
}

fn get_url(
    client: &mut ChatClient,
    chat: wire::ChatId,
    attachment: AttachmentId,
) -> wire::ErrorCode {
    client
        .call(Request::GetAttachmentUrl(wire::GetAttachmentUrl {
            chat,
            attachment,
        }))
        .code
}

#[test]
fn an_attachment_goes_from_upload_to_a_members_download() {
    let gw = Gateway::start();
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut a1 = ChatClient::connect_fresh(&gw, ALICE, 1);
    let mut a2 = ChatClient::connect_fresh(&gw, ALICE, 2);
    let mut bob = ChatClient::connect_fresh(&gw, BOB, 1);
    let mut carol = ChatClient::connect_fresh(&gw, CAROL, 1);
    let chat = direct(ALICE, BOB);
    let bytes = blob(300_000, 7);
    let (id, upload_url) = reserve(&mut a1, &bytes);

    let try_send = |c: &mut ChatClient, n: u64| {
        let r = c.send_body(chat, n, Body::Text("look"), &[id]);
        c.wait_code(r)
    };
    assert_eq!(
        try_send(&mut a1, 1),
        ErrorCode::AttachmentNotReady,
        "not uploaded yet"
    );
    assert_eq!(upload(tmp.path(), &upload_url, &bytes), 200);
    assert_eq!(
        try_send(&mut a2, 2),
        ErrorCode::AttachmentNotReady,
        "only the creating device may reference it"
    );
    let sent = {
        let r = a1.send_body(chat, 3, Body::Text("look"), &[id]);
        a1.wait_result(r, WAIT).sent()
    };
    let m = bob.wait_message(WAIT);
    assert_eq!((m.seq, m.attachments.clone()), (sent.seq, vec![id]));

    let url = bob
        .call(Request::GetAttachmentUrl(wire::GetAttachmentUrl {
            chat,
            attachment: id,
        }))
        .attachment_url();
    let (status, got) = download(tmp.path(), &url);
    assert_eq!(status, 200);
    assert!(
        got == bytes,
        "the downloaded blob differs ({} bytes)",
        got.len()
    );

    // Not a member; a chat that does not reference it; an attachment that does not exist:
    // one and the same answer.
    assert_eq!(get_url(&mut carol, chat, id), ErrorCode::Forbidden);
    assert_eq!(
        get_url(&mut bob, direct(BOB, CAROL), id),
        ErrorCode::Forbidden
    );
    let unknown = AttachmentId::new(12345).expect("nonzero");
    assert_eq!(get_url(&mut bob, chat, unknown), ErrorCode::Forbidden);
}

#[test]
fn a_wrong_blob_is_refused_and_the_attachment_stays_unusable() {
    let gw = Gateway::start();
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut a1 = ChatClient::connect_fresh(&gw, ALICE, 1);
    let bytes = blob(10_000, 3);
    let (id, url) = reserve(&mut a1, &bytes);
    let mut other = bytes.clone();
    other[5_000] ^= 1;
    assert_eq!(upload(tmp.path(), &url, &other), 400, "wrong SHA-256");
    assert_eq!(upload(tmp.path(), &url, &bytes[..9_999]), 400, "wrong size");
    let r = a1.send_body(direct(ALICE, BOB), 1, Body::Text("x"), &[id]);
    assert_eq!(a1.wait_code(r), ErrorCode::AttachmentNotReady);
}

#[test]
fn unreferenced_uploads_and_blobs_of_removed_messages_are_deleted() {
    let gw = Gateway::builder()
        .env("SWITCHBOARD_ATTACHMENT_UNREFERENCED_MS", "1000")
        .env("SWITCHBOARD_SWEEP_INTERVAL_MS", "100")
        .start();
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut a1 = ChatClient::connect_fresh(&gw, ALICE, 1);
    let mut bob = ChatClient::connect_fresh(&gw, BOB, 1);
    let chat = direct(ALICE, BOB);
    let (kept, kept_bytes) = {
        let bytes = blob(5_000, 1);
        let (id, url) = reserve(&mut a1, &bytes);
        assert_eq!(upload(tmp.path(), &url, &bytes), 200);
        (id, bytes)
    };
    let orphan = {
        let bytes = blob(5_000, 2);
        let (id, url) = reserve(&mut a1, &bytes);
        assert_eq!(upload(tmp.path(), &url, &bytes), 200);
        id
    };
    let r = a1.send_body(chat, 1, Body::Text("kept"), &[kept]);
    let sent = a1.wait_result(r, WAIT).sent();
    assert_eq!(bob.wait_message(WAIT).seq, sent.seq);
    let url = bob
        .call(Request::GetAttachmentUrl(wire::GetAttachmentUrl {
            chat,
            attachment: kept,
        }))
        .attachment_url();

    // The orphan goes after its 1 s (its blob, then its record); the referenced one stays.
    let orphan_file = gw
        .data_dir()
        .join("media")
        .join(hex::encode(orphan.as_bytes()));
    assert!(
        orphan_file.exists(),
        "{} after the upload",
        orphan_file.display()
    );
    let deadline = Instant::now() + WAIT;
    while orphan_file.exists() {
        assert!(Instant::now() < deadline, "the orphan was never deleted");
        std::thread::sleep(Duration::from_millis(50));
    }
    let r = a1.send_body(chat, 2, Body::Text("late"), &[orphan]);
    assert_eq!(
        a1.wait_code(r),
        ErrorCode::AttachmentNotReady,
        "its record is gone too"
    );
    let (status, got) = download(tmp.path(), &url);
    assert_eq!(
        (status, got == kept_bytes),
        (200, true),
        "a referenced blob stays"
    );

    // Both devices received seq 1: retention removes it, and then its blob.
    let r = a1.delivered(chat, sent.seq);
    a1.wait_code(r);
    let r = bob.delivered(chat, sent.seq);
    bob.wait_code(r);
    let deadline = Instant::now() + WAIT;
    while download(tmp.path(), &url).0 == 200 {
        assert!(
            Instant::now() < deadline,
            "the blob outlived its last message"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(download(tmp.path(), &url).0, 404);
}
