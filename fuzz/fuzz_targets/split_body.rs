//! An arbitrary request body and content type through the splitter, then every record
//! through the decoder: never a panic; the records cover the body (one per non-blank
//! NDJSON line, one per array element, a broken array as one rejected record); every
//! record decodes or is rejected with a reason.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (content_type, body) = ioc_fuzz::content_type_and_body(data);
    ioc_fuzz::split_and_check(content_type.as_deref(), body);
});
