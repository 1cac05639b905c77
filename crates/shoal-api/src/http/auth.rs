//! Who is calling: HTTP basic auth checked against the node's users (`crate::auth`), and
//! the grant it yields, which every handler takes as [`Caller`] and checks each command
//! against. Without users and without TLS the node serves anonymous clients as before.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use shoal_core::auth::{Access, Grant};
use shoal_core::{Command, Consistency, Error, Reply};

use super::AppState;
use super::error::ApiError;
use crate::auth::{Authenticator, parse_basic};

/// What a client without credentials is told once the node needs them.
const LOGIN_FIRST: &str = "this node requires a user name and password: send HTTP basic auth \
     (curl -u USER:PASSWORD; the shoal CLI: --user USER with SHOAL_PASSWORD set)";

/// Marks a request sent without credentials. Such a request may at most create the first
/// user (served anonymously while the cluster has none, or `Authenticator::may_bootstrap`).
#[derive(Clone, Copy)]
pub(crate) struct Anonymous;

/// Checks the request's credentials before any handler runs.
pub(crate) async fn authenticate(
    State(auth): State<Arc<Authenticator>>,
    mut request: Request,
    next: Next,
) -> Response {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |info| info.0.ip());
    let grant = match request.headers().get(header::AUTHORIZATION) {
        Some(value) => match parse_basic(value.as_bytes()) {
            Err(why) => return refuse(format!("the Authorization header {why}")),
            Ok((user, password)) => match auth.login(peer, &user, &password).await {
                Ok(grant) => Some(grant),
                Err(err) => return refuse(format!("{err} (user {user:?})")),
            },
        },
        None => {
            request.extensions_mut().insert(Anonymous);
            auth.anonymous()
        }
    };
    match grant {
        Some(grant) => {
            request.extensions_mut().insert(grant);
        }
        // Load balancers probe it without credentials; it says nothing about the data.
        None if request.uri().path() == "/health" => {}
        None if request.method() == Method::POST
            && request.uri().path() == "/v1/users"
            && auth.may_bootstrap(peer) => {}
        None => return refuse(LOGIN_FIRST.to_string()),
    }
    next.run(request).await
}

fn refuse(message: String) -> Response {
    ApiError::from(Error::Unauthenticated(message)).into_response()
}

/// The logged-in user of a request, for handlers.
pub(crate) struct Caller(pub Grant);

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        parts
            .extensions
            .get::<Grant>()
            .cloned()
            .map(Caller)
            .ok_or_else(|| Error::Unauthenticated(LOGIN_FIRST.to_string()).into())
    }
}

impl Caller {
    /// May this caller do what `access` needs?
    pub fn require(&self, access: Access) -> Result<(), ApiError> {
        Ok(self.0.check_access(access).map_err(Error::from)?)
    }
}

impl AppState {
    /// Runs `command` for `caller` if their role and key prefix allow it.
    pub(crate) async fn run(
        &self,
        caller: &Caller,
        command: Command,
        consistency: Consistency,
    ) -> Result<Reply, ApiError> {
        caller.0.check(&command).map_err(Error::from)?;
        Ok(self.backend.execute(command, consistency).await?)
    }
}
