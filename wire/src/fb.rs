//! The code flatc 25.12.19 generated from `schema/switchboard.fbs` (committed; regenerate with
//! `scripts/gen-wire`, which CI also runs with `--check`). Only `decode` and `encode` use it;
//! everything else speaks the typed frames of `frames`.
#![allow(
    unsafe_code,
    missing_docs,
    unreachable_pub,
    clippy::all,
    clippy::pedantic,
    clippy::unwrap_used,
    non_camel_case_types,
    deprecated
)]

// rustfmt must leave generated code byte-for-byte as flatc wrote it (CI compares).
#[rustfmt::skip]
#[path = "generated/switchboard_generated.rs"]
mod generated;

pub use generated::switchboard::wire::fb::*;
