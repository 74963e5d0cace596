//! Once warm, encoding and decoding allocate nothing: the hot path of every message.
//!
//! A counting global allocator (this test binary only) measures it. The test runs on one thread
//! and counts only allocations made by that thread, so the harness does not disturb the count.
#![allow(unsafe_code)] // A `GlobalAlloc` impl is unsafe by definition; it only forwards.

mod common;

use common::{client_samples, server_samples};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use wire::{Encoder, Limits};

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: forwards every call to `System` unchanged; the counter is thread-local.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: the caller's contract is passed through to `System`.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

#[test]
fn warm_encoder_and_decoder_allocate_nothing() {
    let limits = Limits::default();
    let servers = server_samples();
    let clients = client_samples();
    let mut encoder = Encoder::new(&limits);
    let mut out = Vec::with_capacity(64 * 1024);
    let round = |encoder: &mut Encoder, out: &mut Vec<u8>| {
        for frame in &servers {
            out.clear();
            encoder.encode_ws(frame, out).expect("fits");
            let bytes = encoder.encode_server(frame).expect("fits");
            wire::decode_server(bytes, &limits).expect("decodes");
        }
        for frame in &clients {
            out.clear();
            encoder
                .encode_ws_client(frame, [1, 2, 3, 4], out)
                .expect("fits");
            let bytes = encoder.encode_client(frame).expect("fits");
            wire::decode_client(bytes, &limits).expect("decodes");
        }
    };
    round(&mut encoder, &mut out); // warm-up: the builder grows to its working size
    let before = allocations();
    for _ in 0..100 {
        round(&mut encoder, &mut out);
    }
    assert_eq!(allocations() - before, 0, "allocations after warm-up");
}
