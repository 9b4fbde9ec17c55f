//! The internal API's frame decoder on arbitrary bytes: errors, never a
//! panic, and never an allocation sized by a hostile length prefix.
#![no_main]

use bytes::BytesMut;
use kai_actors::api::{decode, Request, Response};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut buf = BytesMut::from(data);
    while let Ok(Some(_)) = decode::<Request>(&mut buf) {}
    let mut buf = BytesMut::from(data);
    while let Ok(Some(_)) = decode::<Response>(&mut buf) {}
});
