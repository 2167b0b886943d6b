//! Arbitrary bytes as one event (a Kafka message, an NDJSON line): never a panic; an
//! accepted event re-encodes to itself; a rejection always has a reason.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = ioc_fuzz::decode_and_check(data);
});
