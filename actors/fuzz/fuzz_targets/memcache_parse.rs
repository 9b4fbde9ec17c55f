//! The memcache parser on arbitrary bytes: it must never panic, never
//! claim more bytes than it was given, and never take a value larger than
//! the limit into a command.
#![no_main]

use kai_actors::memcache::parse::{parse, Command, Parsed};
use libfuzzer_sys::fuzz_target;

const MAX_VALUE: usize = 1024;

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    // Parse the whole input as a pipeline, as a session would.
    for _ in 0..10_000 {
        match parse(rest, MAX_VALUE) {
            Parsed::Incomplete => break,
            Parsed::Command(command, used) => {
                assert!(used > 0 && used <= rest.len());
                if let Command::Store { value, .. } = &command {
                    assert!(value.len() <= MAX_VALUE);
                }
                rest = &rest[used..];
            }
            Parsed::Invalid { consumed, close, .. } => {
                assert!(consumed > 0 && consumed <= rest.len());
                if close {
                    break;
                }
                rest = &rest[consumed..];
            }
            Parsed::Swallow { consumed, skip, .. } => {
                assert!(consumed > 0 && consumed <= rest.len());
                rest = &rest[consumed..];
                rest = &rest[skip.min(rest.len())..];
            }
        }
    }
});
