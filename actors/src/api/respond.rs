//! How a module turns its actors' answers into responses to internal API
//! requests: each module serves its own requests with these.

use super::Response;
use actix::prelude::*;

pub fn failed(e: impl std::fmt::Display) -> Response {
    Response::Error(e.to_string())
}

/// Awaits an actor's answer and turns it into a response.
pub fn reply<T, E: std::fmt::Display>(
    answer: impl std::future::Future<Output = Result<Result<T, E>, MailboxError>> + 'static,
    ok: impl FnOnce(T) -> Response + 'static,
) -> ResponseFuture<Response> {
    Box::pin(async move {
        match answer.await {
            Ok(Ok(value)) => ok(value),
            Ok(Err(e)) => failed(e),
            Err(e) => failed(e),
        }
    })
}

/// Awaits a client request's answer; a failure keeps its kind, so the
/// peer that forwarded it knows whether it may have run.
pub fn typed_reply<T>(
    answer: impl std::future::Future<Output = Result<crate::Result<T>, MailboxError>> + 'static,
    ok: impl FnOnce(T) -> Response + 'static,
) -> ResponseFuture<Response> {
    Box::pin(async move {
        match answer.await {
            Ok(Ok(value)) => ok(value),
            Ok(Err(e)) => Response::Failed(e),
            Err(e) => Response::Failed(crate::Error::Indeterminate(format!("coordinator: {e}"))),
        }
    })
}

/// A response known at once.
pub fn now(response: Response) -> ResponseFuture<Response> {
    Box::pin(async move { response })
}

pub fn refuse(why: String) -> ResponseFuture<Response> {
    now(Response::Error(why))
}

/// A request routed to a module that does not serve it: a bug in
/// `Request::owner`, answered rather than panicked on.
pub fn misrouted(module: &str, request: &super::Request) -> ResponseFuture<Response> {
    refuse(format!("{module} does not serve {}", request.name()))
}
