//! Arbitrary bytes through the HTTP/1.1 request parser, body decoder and serializer; the
//! invariants live in `omnirelay_http1::fuzz::request_roundtrip`, which the main
//! crate's unit tests also run.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| omnirelay_http1::fuzz::request_roundtrip(data));
