//! What a client write does to a key's current versions: the memcache
//! commands as one pure decision. Run at the coordinator, atomically with
//! the stamp, so `add`, `cas`, `incr` and friends are atomic per coordinator.

use crate::version::{Payload, Version};
use bytes::{Bytes, BytesMut};
use serde::{Deserialize, Serialize};

/// When a write may go ahead.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    /// `set`: always.
    Always,
    /// `add`: only when the key has no live value.
    Absent,
    /// `replace` and the read-modify-write commands: only when it has one.
    Present,
    /// `cas`: only when the live values still have this context digest.
    Context(u64),
}

/// What the write makes of the key.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum Mutation {
    Set { value: Bytes, flags: u32, expires_at: u64 },
    Append(Bytes),
    Prepend(Bytes),
    Incr(u64),
    Decr(u64),
    Touch { expires_at: u64 },
    Delete,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Write {
    pub condition: Condition,
    pub mutation: Mutation,
}

/// How a write ended at the coordinator.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum WriteOutcome {
    /// Stamped and stored: the new version, and every version the
    /// coordinator now holds for the key, which is what replicas receive
    /// (the whole set, so a replica never holds a dot without the older
    /// unsuperseded dots of the same coordinator).
    Stored { new: Version, held: Vec<Version> },
    /// `add` on a present key, `replace`/`append`/`prepend` on an absent one.
    NotStored,
    /// `cas` whose context is stale.
    Exists,
    /// `cas`, `incr`, `decr`, `touch`, `delete` on an absent key.
    NotFound,
    /// `incr`/`decr` on a value that is not a decimal number.
    NonNumeric,
}

impl Write {
    pub fn set(value: Bytes, flags: u32, expires_at: u64) -> Self {
        Write { condition: Condition::Always, mutation: Mutation::Set { value, flags, expires_at } }
    }

    pub fn delete() -> Self {
        Write { condition: Condition::Present, mutation: Mutation::Delete }
    }

    /// The outcome when the key has no live value and the write needs one.
    fn absent_outcome(&self) -> WriteOutcome {
        match (&self.condition, &self.mutation) {
            (Condition::Context(_), _) => WriteOutcome::NotFound,
            (_, Mutation::Set { .. } | Mutation::Append(_) | Mutation::Prepend(_)) => WriteOutcome::NotStored,
            _ => WriteOutcome::NotFound,
        }
    }
}

/// Decides a write against the key's live versions (newest last): either
/// the payload of the new version, or the outcome that stops it. The live
/// versions' cas token is computed only for a write that names one.
pub fn plan(write: &Write, live: &[Version], live_token: impl FnOnce() -> u64) -> Result<Payload, WriteOutcome> {
    let newest = live.last();
    match (&write.condition, newest) {
        (Condition::Absent, Some(_)) => return Err(WriteOutcome::NotStored),
        (Condition::Present | Condition::Context(_), None) => return Err(write.absent_outcome()),
        (Condition::Context(token), Some(_)) if *token != live_token() => return Err(WriteOutcome::Exists),
        _ => {}
    }
    let keep = |value: Bytes, v: &Version| Payload { value, flags: v.flags, expires_at: v.expires_at, deleted: false };
    match (&write.mutation, newest) {
        (Mutation::Set { value, flags, expires_at }, _) => {
            Ok(Payload { value: value.clone(), flags: *flags, expires_at: *expires_at, deleted: false })
        }
        (Mutation::Delete, _) => Ok(Payload { value: Bytes::new(), flags: 0, expires_at: 0, deleted: true }),
        (Mutation::Append(tail), Some(v)) => Ok(keep(concat(&v.value, tail), v)),
        (Mutation::Prepend(head), Some(v)) => Ok(keep(concat(head, &v.value), v)),
        (Mutation::Incr(delta), Some(v)) => {
            let n = parse_counter(&v.value).ok_or(WriteOutcome::NonNumeric)?;
            Ok(keep(Bytes::from(n.wrapping_add(*delta).to_string()), v))
        }
        (Mutation::Decr(delta), Some(v)) => {
            let n = parse_counter(&v.value).ok_or(WriteOutcome::NonNumeric)?;
            Ok(keep(Bytes::from(n.saturating_sub(*delta).to_string()), v))
        }
        (Mutation::Touch { expires_at }, Some(v)) => {
            Ok(Payload { value: v.value.clone(), flags: v.flags, expires_at: *expires_at, deleted: false })
        }
        (_, None) => Err(write.absent_outcome()),
    }
}

fn concat(a: &[u8], b: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(a.len() + b.len());
    out.extend_from_slice(a);
    out.extend_from_slice(b);
    out.freeze()
}

/// memcached's rule: a counter is a decimal u64, perhaps padded with spaces
/// on the right (what a shrinking `decr` once left behind).
fn parse_counter(value: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(value).ok()?.trim_end_matches(' ');
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::version::{stamp, VClock};

    fn live(value: &str) -> Vec<Version> {
        let p = Payload { value: Bytes::from(value.to_string()), flags: 7, expires_at: 0, deleted: false };
        vec![stamp("a", &[], &VClock::new(), p, 1, 10)]
    }

    fn w(condition: Condition, mutation: Mutation) -> Write {
        Write { condition, mutation }
    }

    #[test]
    fn add_and_replace_follow_presence() {
        let set = Mutation::Set { value: Bytes::from("v"), flags: 0, expires_at: 0 };
        assert_eq!(plan(&w(Condition::Absent, set.clone()), &live("x"), || 0), Err(WriteOutcome::NotStored));
        assert!(plan(&w(Condition::Absent, set.clone()), &[], || 0).is_ok());
        assert_eq!(plan(&w(Condition::Present, set.clone()), &[], || 0), Err(WriteOutcome::NotStored));
        assert!(plan(&w(Condition::Present, set), &live("x"), || 0).is_ok());
    }

    #[test]
    fn cas_checks_the_context() {
        let set = Mutation::Set { value: Bytes::from("v"), flags: 0, expires_at: 0 };
        assert_eq!(plan(&w(Condition::Context(5), set.clone()), &[], || 0), Err(WriteOutcome::NotFound));
        assert_eq!(plan(&w(Condition::Context(5), set.clone()), &live("x"), || 6), Err(WriteOutcome::Exists));
        assert!(plan(&w(Condition::Context(5), set), &live("x"), || 5).is_ok());
    }

    #[test]
    fn append_prepend_keep_flags() {
        let p = plan(&w(Condition::Present, Mutation::Append(Bytes::from("!"))), &live("hi"), || 0).unwrap();
        assert_eq!((p.value, p.flags), (Bytes::from("hi!"), 7));
        let p = plan(&w(Condition::Present, Mutation::Prepend(Bytes::from(">"))), &live("hi"), || 0).unwrap();
        assert_eq!(p.value, Bytes::from(">hi"));
        assert_eq!(plan(&w(Condition::Present, Mutation::Append(Bytes::new())), &[], || 0), Err(WriteOutcome::NotStored));
    }

    #[test]
    fn counters_wrap_up_and_floor_down() {
        let incr = |v: &str, d| plan(&w(Condition::Present, Mutation::Incr(d)), &live(v), || 0).map(|p| p.value);
        let decr = |v: &str, d| plan(&w(Condition::Present, Mutation::Decr(d)), &live(v), || 0).map(|p| p.value);
        assert_eq!(incr("41", 1), Ok(Bytes::from("42")));
        assert_eq!(incr("18446744073709551615", 2), Ok(Bytes::from("1")));
        assert_eq!(decr("3", 5), Ok(Bytes::from("0")));
        assert_eq!(decr("10 ", 1), Ok(Bytes::from("9")));
        assert_eq!(incr("abc", 1), Err(WriteOutcome::NonNumeric));
        assert_eq!(incr("-1", 1), Err(WriteOutcome::NonNumeric));
        assert_eq!(plan(&w(Condition::Present, Mutation::Incr(1)), &[], || 0), Err(WriteOutcome::NotFound));
    }

    #[test]
    fn delete_and_touch_need_a_value() {
        assert_eq!(plan(&Write::delete(), &[], || 0), Err(WriteOutcome::NotFound));
        assert!(plan(&Write::delete(), &live("x"), || 0).unwrap().deleted);
        let touch = w(Condition::Present, Mutation::Touch { expires_at: 99 });
        assert_eq!(plan(&touch, &[], || 0), Err(WriteOutcome::NotFound));
        let p = plan(&touch, &live("x"), || 0).unwrap();
        assert_eq!((p.value, p.expires_at), (Bytes::from("x"), 99));
    }
}
