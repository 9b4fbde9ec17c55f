//! The admin protocol: an operator's commands by name, apart from the
//! peer protocol. Each command is a type in the module that answers it;
//! its arguments and its reply travel encoded as that type says, so a new
//! command changes neither the peer protocol nor any other module, and a
//! node asked for a command it lacks says that it does not know it.

use super::{AdminCall, ApiCall, Owner, Request, Response};
use crate::error::{Error, Result};
use actix::prelude::*;
use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// One admin command: its name as the admin tool types it, the module
/// that answers it, and what it answers.
pub trait AdminCommand: Serialize + DeserializeOwned + 'static {
    const NAME: &'static str;
    const MODULE: Owner;
    type Reply: Serialize + DeserializeOwned + 'static;

    fn call(&self) -> Result<Request> {
        let args = Bytes::from(rmp_serde::to_vec(self)?);
        Ok(Request::Admin(AdminCall { module: Self::MODULE.name().into(), command: Self::NAME.into(), args }))
    }

    /// Reads this command's reply out of a response.
    fn reply(response: Response) -> Result<Self::Reply> {
        match response {
            Response::Admin(bytes) => Ok(rmp_serde::from_slice(&bytes)?),
            Response::Failed(error) => Err(error),
            other => Err(Error::Protocol(format!("{} was answered with {other:?}", Self::NAME))),
        }
    }
}

/// Declares a type an admin command: its name as the admin tool types
/// it, the module that answers it, and its reply.
#[macro_export]
macro_rules! admin_command {
    ($command:ty, $name:literal, $module:ident, $reply:ty) => {
        impl $crate::api::admin::AdminCommand for $command {
            const NAME: &'static str = $name;
            const MODULE: $crate::api::Owner = $crate::api::Owner::$module;
            type Reply = $reply;
        }
    };
}

impl AdminCall {
    pub fn is<C: AdminCommand>(&self) -> bool {
        self.command == C::NAME
    }

    /// The answer for a command this node does not know.
    pub fn unknown(&self) -> ResponseFuture<Response> {
        let why = format!("this node does not know `{}`", self.command);
        super::respond::now(Response::Failed(Error::Unsupported(why)))
    }
}

/// Runs a module's handler for command `C`: reads the arguments, and
/// encodes the reply (or the typed failure).
pub fn answer<C, F>(call: &AdminCall, run: impl FnOnce(C) -> F) -> ResponseFuture<Response>
where
    C: AdminCommand,
    F: std::future::Future<Output = Result<C::Reply>> + 'static,
{
    let command = match rmp_serde::from_slice::<C>(&call.args) {
        Ok(command) => command,
        Err(e) => {
            let why = format!("bad arguments for `{}`: {e}", C::NAME);
            return super::respond::now(Response::Failed(Error::Client(why)));
        }
    };
    let reply = run(command);
    Box::pin(async move {
        match reply.await.and_then(|value| Ok(rmp_serde::to_vec(&value)?)) {
            Ok(bytes) => Response::Admin(Bytes::from(bytes)),
            Err(error) => Response::Failed(error),
        }
    })
}

/// Asks this node's own router an admin command (the HTTP port, tests).
pub async fn ask<C: AdminCommand>(router: &Recipient<ApiCall>, command: &C) -> Result<C::Reply> {
    let response = router.send(ApiCall::new(command.call()?)).await?;
    C::reply(response)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct Echo {
        word: String,
    }

    impl AdminCommand for Echo {
        const NAME: &'static str = "echo";
        const MODULE: Owner = Owner::Node;
        type Reply = String;
    }

    fn admin_call(request: Request) -> AdminCall {
        match request {
            Request::Admin(call) => call,
            other => panic!("not an admin call: {other:?}"),
        }
    }

    #[actix::test]
    async fn a_command_travels_by_name_and_its_reply_by_its_type() {
        let call = admin_call(Echo { word: "hi".into() }.call().unwrap());
        assert_eq!((call.module.as_str(), call.is::<Echo>()), ("node", true));
        let response = answer(&call, |echo: Echo| async move { Ok(echo.word.to_uppercase()) }).await;
        assert_eq!(Echo::reply(response).unwrap(), "HI");
    }

    #[actix::test]
    async fn an_unknown_command_and_bad_arguments_are_typed_failures() {
        let call = AdminCall { module: "node".into(), command: "resize_ring".into(), args: Bytes::new() };
        let Err(Error::Unsupported(why)) = Echo::reply(call.unknown().await) else { panic!("not unsupported") };
        assert_eq!(why, "this node does not know `resize_ring`");
        let call = AdminCall { args: Bytes::from_static(b"\xc1"), ..admin_call(Echo { word: "x".into() }.call().unwrap()) };
        let response = answer(&call, |echo: Echo| async move { Ok(echo.word) }).await;
        assert!(matches!(Echo::reply(response), Err(Error::Client(_))));
    }
}
