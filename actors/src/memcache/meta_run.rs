//! Runs meta commands as the command model's commands and writes their
//! replies as memcached 1.6 does, with Kai's additions: `r<n>`/`w<n>` for
//! this request's R or W, `y` for a key's sibling count, `a` for every
//! sibling.

use super::command::{self as cmd, held_live, StoreMode};
use super::expires_at;
use super::meta::{client_error, return_flags, unsupported, MetaKind, MetaRequest};
use super::reply::error_line;
use super::SessionEnv;
use crate::coordinator::Fetched;
use crate::error::Result;
use crate::store::WriteOutcome;
use crate::version::{cas_token, Version};

const BAD_SET_MODE: &str = "CLIENT_ERROR invalid mode for ms M token";
const BAD_ARITH_MODE: &str = "CLIENT_ERROR invalid mode for ma M token";
/// In Kai a touch is a write, after which a key reads as never hit:
/// memcached's answer (the access before the touch) cannot be given.
const ACCESS_WITH_TOUCH: &str = "CLIENT_ERROR flags h and l cannot be combined with T: in Kai a touch is a write";

/// Runs one meta command, appending its reply (if any) to `out`.
pub async fn execute(env: &SessionEnv, request: MetaRequest, out: &mut Vec<u8>) {
    if let Err(e) = run(env, &request, out).await {
        out.extend_from_slice(error_line(&e).as_bytes());
        out.extend_from_slice(b"\r\n");
    }
}

/// Err is the reply: a flag Kai cannot honour, a bad token, or the node's
/// error for the request.
async fn run(env: &SessionEnv, request: &MetaRequest, out: &mut Vec<u8>) -> Result<()> {
    if let Some(why) = request.flags.iter().find_map(|f| unsupported(request.kind, f.letter)) {
        return Err(client_error(why));
    }
    match request.kind {
        MetaKind::Noop => out.extend_from_slice(b"MN\r\n"),
        MetaKind::Get => get(env, request, out).await?,
        MetaKind::Set => set(env, request, out).await?,
        MetaKind::Delete => {
            let delete =
                cmd::Delete { key: request.key.clone(), cas: request.number(b'C')?, quorum: quorum(env, request, b'w')? };
            let outcome = delete.run(env).await?;
            status(out, request, outcome_code(&outcome), |_| None);
        }
        MetaKind::Arith => arith(env, request, out).await?,
        MetaKind::Debug => debug(env, request, out).await?,
    }
    Ok(())
}

/// R or W for this request from Kai's `r`/`w` flag, checked against N.
fn quorum(env: &SessionEnv, request: &MetaRequest, letter: u8) -> Result<Option<u8>> {
    let n = env.coordinator.replicas();
    match request.number::<u8>(letter) {
        Ok(Some(q)) if (1..=n).contains(&(q as usize)) => Ok(Some(q)),
        Ok(None) => Ok(None),
        _ => Err(client_error(&format!("bad {} flag: it must be a number from 1 to N ({n})", letter as char))),
    }
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

/// `me`: what the node knows of a key's newest version.
async fn debug(env: &SessionEnv, request: &MetaRequest, out: &mut Vec<u8>) -> Result<()> {
    let r = quorum(env, request, b'r')?;
    let versions = env.coordinator.get(request.key.clone(), crate::coordinator::Origin::CLIENT, r).await?;
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
    Ok(())
}

async fn get(env: &SessionEnv, request: &MetaRequest, out: &mut Vec<u8>) -> Result<()> {
    let touch = request.number::<i64>(b'T')?;
    if touch.is_some() && (request.has(b'h') || request.has(b'l')) {
        return Err(client_error(ACCESS_WITH_TOUCH));
    }
    let read = cmd::Read {
        key: request.key.clone(),
        touch: touch.map(|exptime| expires_at(exptime, env.clock().secs())),
        quorum: quorum(env, request, b'r')?,
    };
    let check = request.number::<u64>(b'C')?;
    let fetched = read.run(env).await?;
    if fetched.siblings.is_empty() {
        if !request.quiet() {
            out.extend_from_slice(b"EN");
            return_flags(out, request, |_| None);
            out.extend_from_slice(b"\r\n");
        }
        return Ok(());
    }
    let cas = cas_token(&request.key, &fetched.siblings);
    // With C, the value is sent only when the client's copy is stale.
    let with_value = request.has(b'v') && check != Some(cas);
    write_values(env, request, &fetched, cas, with_value, out);
    Ok(())
}

/// A hit's lines: the newest sibling, or every one under `a`.
fn write_values(env: &SessionEnv, request: &MetaRequest, fetched: &Fetched, cas: u64, with_value: bool, out: &mut Vec<u8>) {
    let versions = &fetched.siblings;
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
}

async fn set(env: &SessionEnv, request: &MetaRequest, out: &mut Vec<u8>) -> Result<()> {
    let now = env.clock().secs();
    let mode = match request.token(b'M') {
        None => StoreMode::Set,
        Some([m]) => match m.to_ascii_uppercase() {
            b'S' => StoreMode::Set,
            b'E' => StoreMode::Add,
            b'R' => StoreMode::Replace,
            b'A' => StoreMode::Append,
            b'P' => StoreMode::Prepend,
            _ => return Err(client_error(BAD_SET_MODE)),
        },
        Some(_) => return Err(client_error(BAD_SET_MODE)),
    };
    let store = cmd::Store {
        key: request.key.clone(),
        mode,
        value: request.value.clone(),
        flags: request.number::<u32>(b'F')?.unwrap_or(0),
        expires_at: expires_at(request.number::<i64>(b'T')?.unwrap_or(0), now),
        cas: request.number::<u64>(b'C')?,
        vivify: request.number::<i64>(b'N')?.map(|ttl| expires_at(ttl, now)),
        quorum: quorum(env, request, b'w')?,
    };
    let outcome = store.run(env).await?;
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

/// `ma`: the command from its flags.
fn arith_command(env: &SessionEnv, request: &MetaRequest) -> Result<cmd::Arith> {
    let now = env.clock().secs();
    let incr = match request.token(b'M') {
        None | Some([b'I' | b'i' | b'+']) => true,
        Some([b'D' | b'd' | b'-']) => false,
        Some(_) => return Err(client_error(BAD_ARITH_MODE)),
    };
    let initial = request.number::<u64>(b'J')?.unwrap_or(0);
    Ok(cmd::Arith {
        key: request.key.clone(),
        incr,
        delta: request.number::<u64>(b'D')?.unwrap_or(1),
        cas: request.number::<u64>(b'C')?,
        create: request.number::<i64>(b'N')?.map(|ttl| (initial, expires_at(ttl, now))),
        touch: request.number::<i64>(b'T')?.map(|exptime| expires_at(exptime, now)),
        quorum: quorum(env, request, b'w')?,
    })
}

async fn arith(env: &SessionEnv, request: &MetaRequest, out: &mut Vec<u8>) -> Result<()> {
    let outcome = arith_command(env, request)?.run(env).await?;
    let live = held_live(&outcome, env.clock().secs());
    let (new, cas) = match &outcome {
        WriteOutcome::NonNumeric => return Err(crate::Error::Client(super::session::NON_NUMERIC.into())),
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
