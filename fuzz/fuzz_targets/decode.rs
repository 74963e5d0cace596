//! Fuzz target: any bytes through both decoders. Holds the codec to two promises: no input makes
//! a decoder panic, and any frame a decoder accepts re-encodes to bytes that decode to the same
//! frame. Run: `RUSTC_BOOTSTRAP=1 cargo fuzz run decode` from the repository root
//! (see docs/TESTING in the README); seeds are in `fuzz/corpus/decode`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wire::{Encoder, Limits};

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    let mut encoder = Encoder::new(&limits);
    if let Ok(frame) = wire::decode_client(data, &limits) {
        let again = encoder.encode_client(&frame).expect("a decoded frame fits its limits");
        assert_eq!(wire::decode_client(again, &limits), Ok(frame));
    }
    if let Ok(frame) = wire::decode_server(data, &limits) {
        let again = encoder.encode_server(&frame).expect("a decoded frame fits its limits");
        assert_eq!(wire::decode_server(again, &limits), Ok(frame));
    }
});
