//! The fuzz corpus (`fuzz/corpus/decode`) runs as an ordinary test: every input must go through
//! both decoders without a panic, and whatever decodes must re-encode to the same frame, exactly
//! as the fuzz target checks. With `SWITCHBOARD_WRITE_SEEDS=1` the test first (re)writes the seed
//! inputs: one encoding of every sample frame.

mod common;

use std::path::PathBuf;
use wire::{Encoder, Limits};

fn corpus() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/decode")
}

fn write_seeds() {
    std::fs::create_dir_all(corpus()).expect("create corpus dir");
    let clients = common::client_samples()
        .into_iter()
        .map(|f| common::client_bytes(&f));
    let seeds = clients.chain(
        common::server_samples()
            .into_iter()
            .map(|f| common::server_bytes(&f)),
    );
    for (i, bytes) in seeds.enumerate() {
        std::fs::write(corpus().join(format!("seed-{i:03}")), bytes).expect("write seed");
    }
}

#[test]
fn corpus_inputs_never_panic_and_round_trip() {
    if std::env::var_os("SWITCHBOARD_WRITE_SEEDS").is_some() {
        write_seeds();
    }
    let limits = Limits::default();
    let mut encoder = Encoder::new(&limits);
    let (mut inputs, mut decoded) = (0, 0);
    for entry in std::fs::read_dir(corpus()).expect("fuzz/corpus/decode exists") {
        let data = std::fs::read(entry.expect("dir entry").path()).expect("read input");
        inputs += 1;
        if let Ok(frame) = wire::decode_client(&data, &limits) {
            decoded += 1;
            let again = encoder.encode_client(&frame).expect("fits");
            assert_eq!(wire::decode_client(again, &limits), Ok(frame));
        }
        if let Ok(frame) = wire::decode_server(&data, &limits) {
            decoded += 1;
            let again = encoder.encode_server(&frame).expect("fits");
            assert_eq!(wire::decode_server(again, &limits), Ok(frame));
        }
    }
    assert!(
        inputs >= 31,
        "the corpus holds at least the seeds ({inputs} inputs)"
    );
    assert!(decoded >= 31, "the seeds decode ({decoded} decoded)");
}
