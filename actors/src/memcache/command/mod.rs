//! One command model for the three protocols. The text, binary and meta
//! protocols each parse a request into one of these commands; the command
//! runs through the coordinator and counts its stats; the protocol then
//! only encodes the answer. A behaviour (a touch, a counter made on a
//! miss, flush refused) is thus decided once, in one file per command.

mod arith;
mod delete;
mod flush;
mod read;
mod store;
mod touch;

pub use arith::Arith;
pub use delete::Delete;
pub use flush::{Flush, FLUSH_DISABLED};
pub use read::Read;
pub use store::{Store, StoreMode};
pub use touch::Touch;

use super::SessionEnv;
use crate::coordinator::Origin;
use crate::error::Result;
use crate::store::{live_versions, Write, WriteOutcome};
use crate::version::Version;
use bytes::Bytes;

async fn write(env: &SessionEnv, key: &Bytes, write: Write, quorum: Option<u8>) -> Result<WriteOutcome> {
    env.coordinator.write(key.clone(), write, Origin::CLIENT, quorum).await
}

/// The live siblings a write left (none when it did not go ahead): what a
/// touch reads back, and what a write's cas token covers.
pub fn held_live(outcome: &WriteOutcome, now: u64) -> Vec<Version> {
    match outcome {
        WriteOutcome::Stored { held, .. } => live_versions(held, now),
        _ => Vec::new(),
    }
}

/// The commands run on a simulated three-node cluster, as a session runs
/// them.
#[cfg(all(test, feature = "sim"))]
mod tests {
    use super::*;
    use crate::sim::{simulate, Cluster};
    use crate::Error;

    fn key(k: &str) -> Bytes {
        Bytes::from(k.to_string())
    }

    fn set(k: &str, value: &str) -> Store {
        Store::new(key(k), StoreMode::Set, Bytes::from(value.to_string()), 0, 0)
    }

    async fn value(env: &SessionEnv, k: &str) -> Option<String> {
        let fetched = Read::new(key(k)).run(env).await.unwrap();
        fetched.siblings.last().map(|v| String::from_utf8_lossy(&v.value).into_owned())
    }

    fn stored(outcome: &WriteOutcome) -> bool {
        matches!(outcome, WriteOutcome::Stored { .. })
    }

    #[test]
    fn stores_honour_their_mode_and_cas_whatever_the_protocol() {
        simulate(async {
            let cluster = Cluster::start(1, 3).await;
            let env = &cluster.node(0).unwrap().sessions[0];
            let add = |v: &str| Store { mode: StoreMode::Add, ..set("k", v) };
            assert!(stored(&add("a").run(env).await.unwrap()));
            assert_eq!(add("b").run(env).await.unwrap(), WriteOutcome::NotStored, "add on a present key");
            let replace = Store { mode: StoreMode::Replace, ..set("absent", "x") };
            assert_eq!(replace.run(env).await.unwrap(), WriteOutcome::NotStored);
            let stale = Store { cas: Some(1), ..set("k", "c") };
            assert_eq!(stale.run(env).await.unwrap(), WriteOutcome::Exists, "a cas that does not match");
            assert_eq!(env.stats.cas_badval.load(std::sync::atomic::Ordering::Relaxed), 1);
            let append = Store { mode: StoreMode::Append, ..set("k", "+") };
            assert!(stored(&append.run(env).await.unwrap()));
            assert_eq!(value(env, "k").await.as_deref(), Some("a+"));
            let vivified = Store { mode: StoreMode::Append, vivify: Some(0), ..set("new", "tail") };
            assert!(stored(&vivified.run(env).await.unwrap()), "append with vivify makes the key");
            assert_eq!(value(env, "new").await.as_deref(), Some("tail"));
        });
    }

    #[test]
    fn a_counter_is_made_on_a_miss_only_when_asked_and_counted_once() {
        simulate(async {
            let cluster = Cluster::start(2, 3).await;
            let env = &cluster.node(0).unwrap().sessions[0];
            assert_eq!(Arith::new(key("c"), true, 5).run(env).await.unwrap(), WriteOutcome::NotFound);
            let create = Arith { create: Some((10, 0)), ..Arith::new(key("c"), true, 5) };
            assert!(stored(&create.clone().run(env).await.unwrap()));
            assert_eq!(value(env, "c").await.as_deref(), Some("10"), "made at the initial value");
            assert!(stored(&create.run(env).await.unwrap()));
            assert_eq!(value(env, "c").await.as_deref(), Some("15"), "then counted");
            assert!(stored(&Arith::new(key("c"), false, 20).run(env).await.unwrap()));
            assert_eq!(value(env, "c").await.as_deref(), Some("0"), "a decrement stops at zero");
            set("text", "abc").run(env).await.unwrap();
            assert_eq!(Arith::new(key("text"), true, 1).run(env).await.unwrap(), WriteOutcome::NonNumeric);
        });
    }

    #[test]
    fn touch_delete_and_flush_decide_the_same_for_every_protocol() {
        simulate(async {
            let cluster = Cluster::start(3, 3).await;
            let env = &cluster.node(0).unwrap().sessions[0];
            let touched = Read { touch: Some(0), ..Read::new(key("k")) };
            assert!(touched.clone().run(env).await.unwrap().siblings.is_empty(), "a touch on a miss reads nothing");
            set("k", "v").run(env).await.unwrap();
            let fetched = touched.run(env).await.unwrap();
            assert_eq!(fetched.siblings.len(), 1);
            assert!(!fetched.hit_before(), "in Kai a touch is a write");
            assert_eq!(Touch { key: key("gone"), expires_at: 0 }.run(env).await.unwrap(), WriteOutcome::NotFound);
            let delete = Delete { key: key("k"), cas: None, quorum: None };
            assert!(stored(&delete.clone().run(env).await.unwrap()));
            assert_eq!(delete.run(env).await.unwrap(), WriteOutcome::NotFound);
            match (Flush { delay: 0 }).run(env).await {
                Err(Error::Client(why)) => assert_eq!(why, FLUSH_DISABLED),
                other => panic!("flush on a node that forbids it: {other:?}"),
            }
        });
    }
}
