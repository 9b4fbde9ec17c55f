//! Kai's modules, one actor each, with the pure core beside the actor.
//!
//! | module | owns |
//! |---|---|
//! | [`hash`] | the ring: virtual nodes, buckets, preference lists, published as snapshots |
//! | [`version`] | dotted version vectors: stamp, compare, merge, prune; reconciles reads |
//! | [`store`] | local data on a memory or disk engine; coordinator-side atomic writes |
//! | [`api`] | the node-to-node protocol: MessagePack frames over TCP |
//! | [`membership`] | the member list and each member's state |
//! | [`coordinator`] | client requests: one short-lived quorum actor per request |
//! | [`sync`] | background upkeep of replicas (reaping, later handoff and anti-entropy) |
//! | [`memcache`] | the client face: the memcached text protocol |
//!
//! Imports run downhill: version and hash at the bottom, store on them,
//! api for transport, then membership, coordinator and sync, memcache on
//! the coordinator. [`node`] wires them together, for the `kai` program
//! and for the simulator alike.

pub mod api;
pub mod config;
pub mod coordinator;
pub mod error;
pub mod hash;
pub mod lean_context;
pub mod local_oneshot;
pub mod membership;
pub mod memcache;
pub mod node;
#[cfg(feature = "sim")]
pub mod sim;
pub mod stats;
pub mod store;
pub mod supervision;
pub mod sync;
pub mod tls;
pub mod version;

pub use error::{Error, Result};

use actix::prelude::*;

/// Asks an actor to stop so its supervisor starts it afresh: how an
/// operator resets a wedged module, and how tests show supervision works.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Restart;

/// Makes an actor supervised: counted and logged when restarted, stoppable
/// on request with [`Restart`], and made to panic on request with
/// [`supervision::Panic`] (fault injection).
macro_rules! supervised {
    ($actor:ty, $name:literal) => {
        impl actix::Supervised for $actor {
            fn restarting(&mut self, _: &mut Self::Context) {
                crate::stats::count_restart($name);
                tracing::warn!(concat!($name, " actor restarting"));
            }
        }

        impl actix::Handler<crate::Restart> for $actor {
            type Result = ();

            fn handle(&mut self, _: crate::Restart, ctx: &mut Self::Context) {
                tracing::warn!(concat!($name, " actor asked to restart"));
                actix::ActorContext::stop(ctx);
            }
        }

        impl actix::Handler<crate::supervision::Panic> for $actor {
            type Result = ();

            fn handle(&mut self, _: crate::supervision::Panic, _: &mut Self::Context) {
                panic!(concat!("fault injection: ", $name, " actor told to panic"));
            }
        }
    };
}
pub(crate) use supervised;
