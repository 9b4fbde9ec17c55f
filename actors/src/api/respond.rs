//! How a module turns its actors' answers into responses to internal API
//! requests: each module serves its own requests with these. Every
//! failure keeps its kind (`Response::Failed`).

use super::Response;
use crate::error::Error;
use actix::prelude::*;

pub fn failed(e: impl Into<Error>) -> Response {
    Response::Failed(e.into())
}

/// Awaits an actor's answer and turns it into a response.
pub fn reply<T>(
    answer: impl std::future::Future<Output = Result<crate::Result<T>, MailboxError>> + 'static,
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

/// Awaits a client request's answer. An actor that took the request and
/// then went away may have run it: that failure is indeterminate, so the
/// peer that forwarded it does not run it again elsewhere.
pub fn typed_reply<T>(
    answer: impl std::future::Future<Output = Result<crate::Result<T>, MailboxError>> + 'static,
    ok: impl FnOnce(T) -> Response + 'static,
) -> ResponseFuture<Response> {
    Box::pin(async move {
        match answer.await {
            Ok(Ok(value)) => ok(value),
            Ok(Err(e)) => Response::Failed(e),
            Err(e) => Response::Failed(Error::Indeterminate(format!("coordinator: {e}"))),
        }
    })
}

/// A response known at once.
pub fn now(response: Response) -> ResponseFuture<Response> {
    Box::pin(async move { response })
}

pub fn refuse(error: Error) -> ResponseFuture<Response> {
    now(Response::Failed(error))
}

/// A request routed to a module that does not serve it: a bug in
/// `Request::owner`, answered rather than panicked on.
pub fn misrouted(module: &str, request: &super::Request) -> ResponseFuture<Response> {
    refuse(Error::Protocol(format!("{module} does not serve {}", request.name())))
}
