//! Who sent a request: the client's address and, when keys are on, the key that admitted it.
//! Both travel in the request's extensions, for the stages that limit, queue and log by client.

use std::sync::Arc;

use crate::config::KeyLimits;

/// The address of the client that sent a request (in its extensions when it came over TCP): who
/// is limited and queued when there are no keys.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ClientIp(pub(crate) std::net::IpAddr);

/// Who sent a request, as the key that admitted it says: put in the request's extensions by
/// `stages::auth::admit` for the stages after it (rate limits, admission) and for logs and metrics. Its
/// presence also tells a second `admit` (the router's layer ran first) the key was checked.
#[derive(Clone, Debug)]
pub(crate) struct Caller {
    /// The key's name (never the key).
    pub(crate) name: Arc<str>,
    /// The key's own limits and priority.
    pub(crate) limits: KeyLimits,
    /// The key has the `admin` scope: it may use sessions other keys own.
    pub(crate) admin: bool,
}

/// Who a request counts as, for rate limits and admission queues: the key that admitted it, else
/// the client's address, else `Local` (a request that came without TCP, as in tests).
#[derive(Clone, Copy, Debug)]
pub(crate) enum Sender<'a> {
    /// The key's name.
    Key(&'a Arc<str>),
    /// The client's address (no keys).
    Address(std::net::IpAddr),
    /// Neither is known.
    Local,
}

impl Sender<'_> {
    /// The sender of the request whose extensions these are.
    pub(crate) fn of(extensions: &http::Extensions) -> Sender<'_> {
        match (extensions.get::<Caller>(), extensions.get::<ClientIp>()) {
            (Some(caller), _) => Sender::Key(&caller.name),
            (None, Some(ClientIp(ip))) => Sender::Address(*ip),
            (None, None) => Sender::Local,
        }
    }
}
