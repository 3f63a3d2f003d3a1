//! WebSockets through a JS worker: `return stub.fetch(request)` tunnels the upgrade.
//!
//! The connection to upgrade cannot enter JavaScript, so it is parked here under a token
//! that travels with the request as the header [`TOKEN_HEADER`]: the stub's fetch takes
//! the connection back and hands it to the container's proxy, and parks the container's
//! `101 Switching Protocols` under the same token. When the worker's response is that
//! 101 (with the token), the worker answers with the parked one, and the proxy tunnels
//! both ways. A worker that answers something else leaves the upgrade undone.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use http::{Extensions, Response};

use crate::http::Body;

/// The header that carries the token through JavaScript.
pub(super) const TOKEN_HEADER: &str = "berth-upgrade-token";

/// The upgrades under way in one worker. Cheap to clone; clones share them.
#[derive(Clone, Default)]
pub(super) struct Upgrades(Arc<Mutex<Parked>>);

#[derive(Default)]
struct Parked {
    next: u64,
    /// The client's request extensions (its connection to upgrade), by token.
    requests: HashMap<u64, Extensions>,
    /// The container's 101, by token.
    responses: HashMap<u64, Response<Body>>,
}

impl Upgrades {
    fn lock(&self) -> MutexGuard<'_, Parked> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Parks the client's side of an upgrade; gives its token.
    pub fn park_request(&self, extensions: Extensions) -> u64 {
        let mut parked = self.lock();
        parked.next += 1;
        let token = parked.next;
        parked.requests.insert(token, extensions);
        token
    }

    pub fn take_request(&self, token: u64) -> Option<Extensions> {
        self.lock().requests.remove(&token)
    }

    pub fn park_response(&self, token: u64, response: Response<Body>) {
        self.lock().responses.insert(token, response);
    }

    pub fn take_response(&self, token: u64) -> Option<Response<Body>> {
        self.lock().responses.remove(&token)
    }

    /// Forgets what is left of the upgrade `token` (the request is answered).
    pub fn forget(&self, token: u64) {
        let mut parked = self.lock();
        parked.requests.remove(&token);
        parked.responses.remove(&token);
    }
}
