//! Runs meta commands through the coordinator and writes their replies as
//! memcached 1.6 does, with Kai's additions: `r<n>`/`w<n>` for this
//! request's R or W, `y` for a key's sibling count, `a` for every sibling.

use super::expires_at;
use super::meta::{return_flags, unsupported, MetaKind, MetaRequest};
use super::reply::error_line;
use super::SessionEnv;
use crate::coordinator::{Fetched, Origin};
use crate::error::{Error, Result};
use crate::stats::NodeStats;
use crate::store::{live_versions, Condition, Mutation, Write, WriteOutcome};
use crate::version::{cas_token, Version};
use bytes::Bytes;

/// What memcached answers an `ma` on a value that is not a number.
const NON_NUMERIC: &str = "CLIENT_ERROR cannot increment or decrement non-numeric value";
const BAD_SET_MODE: &str = "CLIENT_ERROR invalid mode for ms M token";
/// In Kai a touch is a write, after which a key reads as never hit:
/// memcached's answer (the access before the touch) cannot be given.
const ACCESS_WITH_TOUCH: &str = "CLIENT_ERROR flags h and l cannot be combined with T: in Kai a touch is a write";

/// The error line of a request the node could not serve.
fn failed(e: Error) -> String {
    error_line(&e)
}

/// Runs one meta command, appending its reply (if any) to `out`.
pub async fn execute(env: &SessionEnv, request: MetaRequest, out: &mut Vec<u8>) {
    if let Err(reply) = run(env, &request, out).await {
        out.extend_from_slice(reply.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
}

/// Err is a whole error line: a flag Kai cannot honour, a bad token, or
/// the node's error for the request.
async fn run(env: &SessionEnv, request: &MetaRequest, out: &mut Vec<u8>) -> std::result::Result<(), String> {
    if let Some(why) = request.flags.iter().find_map(|f| unsupported(request.kind, f.letter)) {
        return Err(why.to_string());
    }
    match request.kind {
        MetaKind::Noop => out.extend_from_slice(b"MN\r\n"),
        MetaKind::Get => get(env, request, out).await?,
        MetaKind::Set => set(env, request, out).await?,
        MetaKind::Delete => {
            let quorum = quorum(env, request, b'w')?;
            let condition = match request.number::<u64>(b'C')? {
                Some(cas) => Condition::Context(cas),
                None => Condition::Present,
            };
            let write = Write { condition, mutation: Mutation::Delete };
            let outcome = write_key(env, request, write, quorum).await.map_err(failed)?;
            NodeStats::hit_or_miss(
                matches!(outcome, WriteOutcome::Stored { .. }),
                &env.stats.delete_hits,
                &env.stats.delete_misses,
            );
            status(out, request, outcome_code(&outcome), |_| None);
        }
        MetaKind::Arith => arith(env, request, out).await?,
        MetaKind::Debug => {
            let r = quorum(env, request, b'r')?;
            let versions = read_key(env, request, r).await.map_err(failed)?;
            let Some(newest) = versions.last() else {
                out.extend_from_slice(b"EN\r\n");
                return Ok(());
            };
            let line = format!(
                "ME {} exp={} cas={} size={} siblings={}\r\n",
                String::from_utf8_lossy(&request.sent_key),
                ttl(newest, env.clock().secs()),
                cas_token(&request.key, &versions),
                newest.value.len(),
                versions.len()
            );
            out.extend_from_slice(line.as_bytes());
        }
    }
    Ok(())
}

/// R or W for this request from Kai's `r`/`w` flag, checked against N.
fn quorum(env: &SessionEnv, request: &MetaRequest, letter: u8) -> std::result::Result<Option<u8>, String> {
    let n = env.coordinator.replicas();
    match request.number::<u8>(letter) {
        Ok(Some(q)) if (1..=n).contains(&(q as usize)) => Ok(Some(q)),
        Ok(None) => Ok(None),
        _ => Err(format!("CLIENT_ERROR bad {} flag: it must be a number from 1 to N ({n})", letter as char)),
    }
}

async fn read_key(env: &SessionEnv, request: &MetaRequest, quorum: Option<u8>) -> Result<Vec<Version>> {
    env.coordinator.get(request.key.clone(), Origin::CLIENT, quorum).await
}

async fn write_key(env: &SessionEnv, request: &MetaRequest, write: Write, quorum: Option<u8>) -> Result<WriteOutcome> {
    env.coordinator.write(request.key.clone(), write, Origin::CLIENT, quorum).await
}

/// Seconds a version has left, as memcached's `t` says it: -1 for never.
fn ttl(version: &Version, now: u64) -> i64 {
    match version.expires_at {
        0 => -1,
        at => at.saturating_sub(now) as i64,
    }
}

/// The two-letter code of a write's outcome.
fn outcome_code(outcome: &WriteOutcome) -> &'static str {
    match outcome {
        WriteOutcome::Stored { .. } => "HD",
        WriteOutcome::NotStored => "NS",
        WriteOutcome::Exists => "EX",
        WriteOutcome::NotFound | WriteOutcome::NonNumeric => "NF",
    }
}

/// A status line and its return flags; under `q`, a success says nothing.
fn status(out: &mut Vec<u8>, request: &MetaRequest, code: &str, value_of: impl FnMut(u8) -> Option<String>) {
    if code == "HD" && request.quiet() {
        return;
    }
    out.extend_from_slice(code.as_bytes());
    return_flags(out, request, value_of);
    out.extend_from_slice(b"\r\n");
}

/// The live siblings a write left, for the cas token it returns.
fn held_live(outcome: &WriteOutcome, now: u64) -> Vec<Version> {
    match outcome {
        WriteOutcome::Stored { held, .. } => live_versions(held, now),
        _ => Vec::new(),
    }
}

async fn get(env: &SessionEnv, request: &MetaRequest, out: &mut Vec<u8>) -> std::result::Result<(), String> {
    let r = quorum(env, request, b'r')?;
    let touch = request.number::<i64>(b'T')?;
    let check = request.number::<u64>(b'C')?;
    let stats = &env.stats;
    NodeStats::incr(&stats.cmd_get);
    let (hit_before, last_access) = (request.has(b'h'), request.has(b'l'));
    let fetched = match touch {
        None => env.coordinator.fetch(request.key.clone(), Origin::CLIENT, r).await.map_err(failed)?,
        Some(_) if hit_before || last_access => return Err(ACCESS_WITH_TOUCH.into()),
        Some(exptime) => {
            NodeStats::incr(&stats.cmd_touch);
            let mutation = Mutation::Touch { expires_at: expires_at(exptime, env.clock().secs()) };
            let siblings =
                match write_key(env, request, Write { condition: Condition::Present, mutation }, None).await.map_err(failed)? {
                    outcome @ WriteOutcome::Stored { .. } => held_live(&outcome, env.clock().secs()),
                    _ => Vec::new(),
                };
            Fetched { siblings, last_read_ms: 0 }
        }
    };
    let versions = &fetched.siblings;
    if versions.is_empty() {
        NodeStats::incr(&stats.get_misses);
        if !request.quiet() {
            out.extend_from_slice(b"EN");
            return_flags(out, request, |_| None);
            out.extend_from_slice(b"\r\n");
        }
        return Ok(());
    }
    NodeStats::incr(&stats.get_hits);
    let cas = cas_token(&request.key, versions);
    // With C, the value is sent only when the client's copy is stale.
    let with_value = request.has(b'v') && check != Some(cas);
    let now_ms = env.clock().millis();
    let now = now_ms / 1000;
    let count = versions.len();
    let shown = if request.has(b'a') { &versions[..] } else { &versions[count - 1..] };
    for version in shown {
        if with_value {
            out.extend_from_slice(format!("VA {}", version.value.len()).as_bytes());
        } else {
            // (q hides only a miss's EN: a hit says HD even so.)
            out.extend_from_slice(b"HD");
        }
        return_flags(out, request, |letter| match letter {
            b'c' => Some(cas.to_string()),
            b'f' => Some(version.flags.to_string()),
            b's' => Some(version.value.len().to_string()),
            b't' => Some(ttl(version, now).to_string()),
            b'y' => Some(count.to_string()),
            b'h' => Some(u8::from(fetched.hit_before()).to_string()),
            b'l' => Some(fetched.idle_secs(now_ms).to_string()),
            _ => None,
        });
        out.extend_from_slice(b"\r\n");
        if with_value {
            out.extend_from_slice(&version.value);
            out.extend_from_slice(b"\r\n");
        }
    }
    Ok(())
}

async fn set(env: &SessionEnv, request: &MetaRequest, out: &mut Vec<u8>) -> std::result::Result<(), String> {
    let w = quorum(env, request, b'w')?;
    let flags = request.number::<u32>(b'F')?.unwrap_or(0);
    let expires = expires_at(request.number::<i64>(b'T')?.unwrap_or(0), env.clock().secs());
    let cas = request.number::<u64>(b'C')?;
    let vivify = request.number::<i64>(b'N')?;
    let mode = match request.token(b'M') {
        None => b'S',
        Some([m]) => m.to_ascii_uppercase(),
        Some(_) => return Err(BAD_SET_MODE.into()),
    };
    let value = request.value.clone();
    let set = Mutation::Set { value: value.clone(), flags, expires_at: expires };
    let (condition, mutation) = match mode {
        b'S' => (Condition::Always, set.clone()),
        b'E' => (Condition::Absent, set.clone()),
        b'R' => (Condition::Present, set.clone()),
        b'A' => (Condition::Present, Mutation::Append(value.clone())),
        b'P' => (Condition::Present, Mutation::Prepend(value.clone())),
        _ => return Err(BAD_SET_MODE.into()),
    };
    // A cas token makes any mode conditional on the key being unchanged.
    let condition = cas.map_or(condition, Condition::Context);
    NodeStats::incr(&env.stats.cmd_set);
    let mut outcome = write_key(env, request, Write { condition, mutation }, w).await.map_err(failed)?;
    if let (WriteOutcome::NotStored, Some(ttl), b'A' | b'P') = (&outcome, vivify, mode) {
        // Append with N: a miss creates the key from the appended data.
        let create = Mutation::Set { value: value.clone(), flags, expires_at: expires_at(ttl, env.clock().secs()) };
        outcome = write_key(env, request, Write { condition: Condition::Absent, mutation: create }, w).await.map_err(failed)?;
    }
    if cas.is_some() {
        match &outcome {
            WriteOutcome::Stored { .. } => NodeStats::incr(&env.stats.cas_hits),
            WriteOutcome::Exists => NodeStats::incr(&env.stats.cas_badval),
            _ => NodeStats::incr(&env.stats.cas_misses),
        }
    }
    let live = held_live(&outcome, env.clock().secs());
    let stored_size = match &outcome {
        WriteOutcome::Stored { new, .. } => new.value.len(),
        _ => 0,
    };
    status(out, request, outcome_code(&outcome), |letter| match letter {
        b'c' => Some(if live.is_empty() { 0 } else { cas_token(&request.key, &live) }.to_string()),
        b's' if stored_size > 0 => Some(stored_size.to_string()),
        _ => None,
    });
    Ok(())
}

async fn arith(env: &SessionEnv, request: &MetaRequest, out: &mut Vec<u8>) -> std::result::Result<(), String> {
    let w = quorum(env, request, b'w')?;
    let delta = request.number::<u64>(b'D')?.unwrap_or(1);
    let initial = request.number::<u64>(b'J')?.unwrap_or(0);
    let vivify = request.number::<i64>(b'N')?;
    let touch = request.number::<i64>(b'T')?;
    let incr = match request.token(b'M') {
        None => true,
        Some([b'I' | b'i' | b'+']) => true,
        Some([b'D' | b'd' | b'-']) => false,
        Some(_) => return Err("CLIENT_ERROR invalid mode for ma M token".into()),
    };
    let condition = match request.number::<u64>(b'C')? {
        Some(cas) => Condition::Context(cas),
        None => Condition::Present,
    };
    let mutation = if incr { Mutation::Incr(delta) } else { Mutation::Decr(delta) };
    let arith = Write { condition, mutation };
    let mut outcome = write_key(env, request, arith.clone(), w).await.map_err(failed)?;
    if let (WriteOutcome::NotFound, Some(ttl)) = (&outcome, vivify) {
        // N: a miss creates the counter at J (and a racing creator's value
        // is counted on instead).
        let create =
            Mutation::Set { value: Bytes::from(initial.to_string()), flags: 0, expires_at: expires_at(ttl, env.clock().secs()) };
        outcome =
            match write_key(env, request, Write { condition: Condition::Absent, mutation: create }, w).await.map_err(failed)? {
                WriteOutcome::NotStored => write_key(env, request, arith, w).await.map_err(failed)?,
                created => created,
            };
    }
    if let (WriteOutcome::Stored { .. }, Some(exptime)) = (&outcome, touch) {
        let mutation = Mutation::Touch { expires_at: expires_at(exptime, env.clock().secs()) };
        outcome = write_key(env, request, Write { condition: Condition::Present, mutation }, w).await.map_err(failed)?;
    }
    let hit = matches!(outcome, WriteOutcome::Stored { .. });
    match incr {
        true => NodeStats::hit_or_miss(hit, &env.stats.incr_hits, &env.stats.incr_misses),
        false => NodeStats::hit_or_miss(hit, &env.stats.decr_hits, &env.stats.decr_misses),
    }
    let live = held_live(&outcome, env.clock().secs());
    let (new, cas) = match &outcome {
        WriteOutcome::NonNumeric => return Err(NON_NUMERIC.into()),
        WriteOutcome::Stored { new, .. } => (Some(new.clone()), cas_token(&request.key, &live)),
        _ => (None, 0),
    };
    let now = env.clock().secs();
    let value_of = |letter| match (letter, &new) {
        (b'c', Some(_)) => Some(cas.to_string()),
        (b't', Some(new)) => Some(ttl(new, now).to_string()),
        _ => None,
    };
    match &new {
        // Under q, memcached's ma says nothing on success, value or not.
        Some(_) if request.quiet() => {}
        Some(new) if request.has(b'v') => {
            out.extend_from_slice(format!("VA {}", new.value.len()).as_bytes());
            return_flags(out, request, value_of);
            out.extend_from_slice(b"\r\n");
            out.extend_from_slice(&new.value);
            out.extend_from_slice(b"\r\n");
        }
        _ => status(out, request, outcome_code(&outcome), value_of),
    }
    Ok(())
}
