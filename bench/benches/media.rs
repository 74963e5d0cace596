//! The cost of issuing a pre-signed media URL (DESIGN.md F8), per backend: the built-in
//! backend's HMAC-SHA256 URL (upload and download) and its check on the media listener, and
//! the S3 backend's `SigV4` pre-signed URL through `rusty-s3` (upload, which signs three extra
//! headers, and download).
//!
//! Every `CreateAttachment` and `GetAttachmentUrl` pays one of these on a gateway core, so
//! they should stay in the low microseconds. Compare figures as ratios within one run; this
//! machine is noisy.
// criterion's macros generate undocumented public functions.
#![allow(missing_docs)]

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use gateway::media::local::LocalBlobs;
use gateway::media::s3::{S3Blobs, S3Settings};
use gateway::media::sign::{Method, Signer};
use wire::AttachmentId;

const NOW_MS: u64 = 1_800_000_000_000;
const TTL_S: u64 = 900;
const MIME: &str = "image/jpeg";
const SIZE: u64 = 3 * 1024 * 1024;

fn id() -> AttachmentId {
    AttachmentId::from_bytes([0x5a; 16]).expect("nonzero")
}

fn sha() -> wire::Sha256 {
    wire::Sha256::new([0x42; 32])
}

fn local(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let signer = Signer::new(&[7u8; 32]);
    let blobs = LocalBlobs::open(dir.path(), "http://127.0.0.1:8081", signer.clone(), TTL_S)
        .expect("media dir");
    let mut g = c.benchmark_group("media_url_local");
    g.throughput(Throughput::Elements(1));
    g.bench_function("upload_url", |b| {
        b.iter(|| blobs.upload_url(black_box(id()), SIZE, &sha(), MIME, black_box(NOW_MS)));
    });
    g.bench_function("download_url", |b| {
        b.iter(|| blobs.download_url(black_box(id()), MIME, black_box(NOW_MS)));
    });
    let url = blobs.upload_url(id(), SIZE, &sha(), MIME, NOW_MS);
    let query = url.split_once('?').expect("a query").1.to_owned();
    g.bench_function("verify_upload_url", |b| {
        b.iter(|| {
            signer
                .verify(
                    Method::Put,
                    black_box(id()),
                    black_box(&query),
                    NOW_MS / 1000,
                )
                .expect("valid")
        });
    });
    g.finish();
}

fn s3(c: &mut Criterion) {
    let settings = S3Settings {
        endpoint: "http://127.0.0.1:9000".into(),
        bucket: "media".into(),
        region: "us-east-1".into(),
        access_key: "AKIDEXAMPLE".into(),
        secret_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
    };
    let blobs = S3Blobs::new(&settings, TTL_S).expect("settings");
    let mut g = c.benchmark_group("media_url_s3");
    g.throughput(Throughput::Elements(1));
    g.bench_function("upload_url", |b| {
        b.iter(|| blobs.upload_url(black_box(id()), SIZE, &sha(), MIME, black_box(NOW_MS)));
    });
    g.bench_function("download_url", |b| {
        b.iter(|| blobs.download_url(black_box(id()), MIME, black_box(NOW_MS)));
    });
    g.finish();
}

criterion_group!(benches, local, s3);
criterion_main!(benches);
