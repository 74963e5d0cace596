//! switchboard's micro-benchmarks (criterion), one file per crate under `benches/`.
//!
//! Layout: `benches/wire.rs` (encode, verify+decode, `encode_ws`), `benches/store_log.rs` (the
//! write-ahead log alone), `benches/store_engine.rs` (the embedded store: durable writes, ack
//! latency beside fjall alone, sync reads, reopen and replay). `benches/media.rs`: issuing a
//! pre-signed media URL (built-in HMAC and S3 `SigV4`). Each benchmark is named after
//! what it measures and sets its throughput, so reports read as ns/op and bytes/s. Wall-clock
//! figures on a shared machine are compared as ratios within one run; benches never assert on
//! time. CI runs them once each (`cargo bench -p bench -- --test`) so they never rot.
