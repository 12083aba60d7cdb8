//! Client connections: which are open, which are idle, and closing those that would hold keel
//! hostage.
//!
//! Every accepted connection is entered in one table ([`Connections`]). Its socket is wrapped in
//! [`TrackedIo`], which notes (with one relaxed store) that bytes moved, and whether they were
//! the start of a request head while no request was in hand; the dispatcher marks a connection
//! busy while it answers a request ([`Conn::begin`]). A watcher task looks at the table a few
//! times per timeout and closes:
//! - connections sending a request head for longer than `[server] header_timeout` (slowloris) —
//!   at once;
//! - connections idle (no request in hand, no bytes moved) for longer than `[server]
//!   idle_timeout` — gracefully, so a request arriving at that moment is still answered;
//! - when `[server] max_connections` are open and another arrives, the connection idle the
//!   longest, to make room. When none is idle the newcomer is still taken, but answers only
//!   `/keel/health`; everything else gets a 503 saying so.
//!
//! When accepting fails for want of file descriptors, [`AcceptBackoff`] spaces the retries (10 ms
//! doubling to 1 s) and logs once per ten seconds, and idle connections are closed to free some.

use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicUsize, Ordering::Relaxed};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use keel_telemetry::metrics::names;
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Notify;

/// Client connections keel keeps open when `[server] max_connections` is 0 ("auto"): half the
/// open-file limit after a reserve (each busy client connection may hold one upstream
/// connection as well), never fewer than this.
const MIN_AUTO_CONNECTIONS: usize = 16;

/// Descriptors kept back from the automatic connection limit for the store, logs and listeners.
const RESERVED_DESCRIPTORS: u64 = 64;

/// The most client connections for `[server] max_connections = 0`, from the open-file limit.
pub(crate) fn auto_max_connections() -> usize {
    match rlimit::getrlimit(rlimit::Resource::NOFILE) {
        Ok((soft, _)) => usize::try_from(soft.saturating_sub(RESERVED_DESCRIPTORS) / 2)
            .unwrap_or(usize::MAX)
            .max(MIN_AUTO_CONNECTIONS),
        Err(_) => 10_000,
    }
}

/// How a connection is asked to close.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
enum Close {
    /// Not asked.
    No = 0,
    /// Finish the request in hand, if one arrives, then close.
    WhenIdle = 1,
    /// Close now (a request head that never completes).
    Now = 2,
}

/// One client connection's state, shared by its socket, its dispatcher and the watcher.
#[derive(Debug)]
pub(crate) struct Conn {
    /// Bytes were read or written since the watcher last looked.
    moved: AtomicBool,
    /// Bytes of a request head were read while no request was in hand.
    reading_head: AtomicBool,
    /// Requests being answered.
    busy: AtomicU32,
    /// At least one request was taken: a quiet connection is an idle keep-alive one, not one
    /// whose first request is still on its way.
    served: AtomicBool,
    /// A [`Close`], set by the watcher.
    close: AtomicU8,
    /// Wakes the connection's task when `close` is set.
    wake: Notify,
    /// Set when the connection's task ends.
    ended: AtomicBool,
    /// Taken beyond `[server] max_connections` (the cap, resolved) with none idle to close:
    /// answers only `/keel/health`.
    pub(crate) over_capacity: Option<usize>,
    /// The client's address.
    pub(crate) peer: IpAddr,
}

impl Conn {
    fn new(over_capacity: Option<usize>, peer: IpAddr) -> Conn {
        Conn {
            moved: AtomicBool::new(false),
            reading_head: AtomicBool::new(false),
            busy: AtomicU32::new(0),
            served: AtomicBool::new(false),
            close: AtomicU8::new(Close::No as u8),
            wake: Notify::new(),
            ended: AtomicBool::new(false),
            over_capacity,
            peer,
        }
    }

    /// Marks a request in hand until the returned guard drops (its response is ready).
    pub(crate) fn begin(self: &Arc<Conn>) -> Busy {
        self.reading_head.store(false, Relaxed);
        self.busy.fetch_add(1, Relaxed);
        self.served.store(true, Relaxed);
        Busy(Arc::clone(self))
    }

    fn is_idle(&self) -> bool {
        self.busy.load(Relaxed) == 0 && !self.reading_head.load(Relaxed) && self.close.load(Relaxed) == Close::No as u8
    }

    fn ask_to_close(&self, how: Close) {
        self.close.store(how as u8, Relaxed);
        self.wake.notify_one();
    }

    /// Waits until the watcher asks this connection to close; `true` means close now, `false`
    /// finish the request in hand first.
    pub(crate) async fn close_requested(&self) -> bool {
        loop {
            match self.close.load(Relaxed) {
                x if x == Close::Now as u8 => return true,
                x if x == Close::WhenIdle as u8 => return false,
                _ => self.wake.notified().await,
            }
        }
    }
}

/// A request in hand on a connection (see [`Conn::begin`]).
pub(crate) struct Busy(Arc<Conn>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.busy.fetch_sub(1, Relaxed);
        self.0.moved.store(true, Relaxed);
    }
}

/// The watcher's view of one connection.
struct Entry {
    conn: Arc<Conn>,
    /// Since when nothing moved and nothing was in hand (as of the watcher's last look).
    quiet_since: Instant,
    /// Since when a request head has been arriving, if one is.
    head_since: Option<Instant>,
}

/// The timeouts and the cap the watcher enforces.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    /// `[server] header_timeout` (zero: off).
    pub(crate) header_timeout: Duration,
    /// `[server] idle_timeout` (zero: off).
    pub(crate) idle_timeout: Duration,
    /// `[server] max_connections`, resolved.
    pub(crate) max_connections: usize,
}

/// Every open client connection, across serving threads.
pub(crate) struct Connections {
    table: Mutex<Vec<Entry>>,
    open: AtomicUsize,
    limits: Limits,
}

/// A connection's place in the table: dropping it (when the connection's task ends) lets the
/// watcher forget it.
pub(crate) struct Registration {
    conn: Arc<Conn>,
    connections: Arc<Connections>,
}

impl Registration {
    /// The connection's shared state.
    pub(crate) fn conn(&self) -> &Arc<Conn> {
        &self.conn
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.conn.ended.store(true, Relaxed);
        self.connections.open.fetch_sub(1, Relaxed);
        metrics::gauge!(names::CLIENT_CONNECTIONS).decrement(1.0);
    }
}

impl Connections {
    /// An empty table enforcing `limits`.
    pub(crate) fn new(limits: Limits) -> Arc<Connections> {
        metrics::gauge!(names::CLIENT_CONNECTIONS).set(0.0);
        for reason in ["header_timeout", "idle", "capacity", "descriptors"] {
            metrics::counter!(names::CLIENT_CONNECTIONS_CLOSED_TOTAL, "reason" => reason).absolute(0);
        }
        Arc::new(Connections { table: Mutex::new(Vec::new()), open: AtomicUsize::new(0), limits })
    }

    /// Enters a newly accepted connection. At `[server] max_connections` the connection idle the
    /// longest is asked to close; with none idle, the newcomer is marked over capacity.
    pub(crate) fn register(self: &Arc<Connections>, peer: IpAddr) -> Registration {
        let mut table = self.table.lock();
        let open = self.open.fetch_add(1, Relaxed);
        let over_capacity =
            open >= self.limits.max_connections && !close_longest_idle(&table, Instant::now(), "capacity");
        if over_capacity {
            tracing::warn!(
                open,
                max_connections = self.limits.max_connections,
                "client connection limit reached and none is idle; the new connection gets 503 (raise [server] max_connections or the open-file limit)"
            );
        }
        let conn = Arc::new(Conn::new(over_capacity.then_some(self.limits.max_connections), peer));
        table.push(Entry { conn: Arc::clone(&conn), quiet_since: Instant::now(), head_since: None });
        metrics::gauge!(names::CLIENT_CONNECTIONS).increment(1.0);
        Registration { conn, connections: Arc::clone(self) }
    }

    /// Asks the connection idle the longest to close (when descriptors run out); `false` if
    /// none is idle.
    pub(crate) fn close_one_idle(&self) -> bool {
        close_longest_idle(&self.table.lock(), Instant::now(), "descriptors")
    }

    /// Open client connections.
    pub(crate) fn open(&self) -> usize {
        self.open.load(Relaxed)
    }

    /// How often the watcher looks: a quarter of the shortest timeout, between 50 ms and 1 s.
    fn tick(&self) -> Duration {
        let timeouts = [self.limits.header_timeout, self.limits.idle_timeout];
        let shortest = timeouts.into_iter().filter(|t| !t.is_zero()).min().unwrap_or(Duration::from_secs(4));
        (shortest / 4).clamp(Duration::from_millis(50), Duration::from_secs(1))
    }

    /// Looks at every connection once: forgets ended ones, closes those past a timeout.
    fn look(&self, now: Instant) {
        let Limits { header_timeout, idle_timeout, .. } = self.limits;
        let mut table = self.table.lock();
        table.retain(|entry| !entry.conn.ended.load(Relaxed));
        for entry in table.iter_mut() {
            let conn = &entry.conn;
            let moved = conn.moved.swap(false, Relaxed);
            if conn.busy.load(Relaxed) > 0 || !conn.reading_head.load(Relaxed) {
                entry.head_since = None;
            } else if entry.head_since.is_none() {
                entry.head_since = Some(now);
            }
            if moved || conn.busy.load(Relaxed) > 0 {
                entry.quiet_since = now;
            }
            if let Some(since) = entry.head_since
                && !header_timeout.is_zero()
                && now.duration_since(since) >= header_timeout
            {
                closed(conn, Close::Now, "header_timeout");
            } else if !idle_timeout.is_zero() && conn.is_idle() && now.duration_since(entry.quiet_since) >= idle_timeout
            {
                closed(conn, Close::WhenIdle, "idle");
            }
        }
    }

    /// The watcher: looks at the table a few times per timeout until dropped.
    pub(crate) async fn watch(self: Arc<Connections>) {
        let mut tick = tokio::time::interval(self.tick());
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.look(Instant::now());
        }
    }
}

/// How long a new connection that has sent nothing yet is spared from making room: its first
/// request may be in the socket, unread, and closing it would fail a client that did no wrong.
const FIRST_REQUEST_GRACE: Duration = Duration::from_secs(1);

/// Asks the idle connection quiet the longest to close; `false` when none is idle.
fn close_longest_idle(table: &[Entry], now: Instant, reason: &'static str) -> bool {
    let evictable = |entry: &&Entry| {
        let conn = &entry.conn;
        !conn.ended.load(Relaxed)
            && conn.is_idle()
            && (conn.served.load(Relaxed) || now.duration_since(entry.quiet_since) >= FIRST_REQUEST_GRACE)
    };
    let longest = table.iter().filter(evictable).min_by_key(|entry| entry.quiet_since);
    match longest {
        Some(entry) => {
            closed(&entry.conn, Close::WhenIdle, reason);
            true
        }
        None => false,
    }
}

/// Asks `conn` to close, counted by `reason`.
fn closed(conn: &Conn, how: Close, reason: &'static str) {
    if conn.close.load(Relaxed) != Close::No as u8 {
        return;
    }
    tracing::debug!(reason, "closing a client connection");
    metrics::counter!(names::CLIENT_CONNECTIONS_CLOSED_TOTAL, "reason" => reason).increment(1);
    conn.ask_to_close(how);
}

/// A client socket that tells its [`Conn`] when bytes move.
pub(crate) struct TrackedIo {
    stream: TcpStream,
    conn: Arc<Conn>,
}

impl TrackedIo {
    /// Wraps an accepted socket.
    pub(crate) fn new(stream: TcpStream, conn: Arc<Conn>) -> TrackedIo {
        TrackedIo { stream, conn }
    }

    /// Notes bytes written.
    fn note_written(&self, polled: &Poll<std::io::Result<usize>>) {
        if let Poll::Ready(Ok(n)) = polled
            && *n > 0
        {
            self.conn.moved.store(true, Relaxed);
        }
    }
}

impl AsyncRead for TrackedIo {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.stream).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.conn.moved.store(true, Relaxed);
            if this.conn.busy.load(Relaxed) == 0 {
                this.conn.reading_head.store(true, Relaxed);
            }
        }
        polled
    }
}

impl AsyncWrite for TrackedIo {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.stream).poll_write(cx, buf);
        this.note_written(&polled);
        polled
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.stream).poll_write_vectored(cx, bufs);
        this.note_written(&polled);
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// Spacing of `accept` retries while the process is out of file descriptors, and their log.
pub(crate) struct AcceptBackoff {
    delay: Duration,
    failures: u64,
    last_log: Option<Instant>,
}

/// The first and the longest pause after a failed `accept`.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(10), Duration::from_secs(1));

/// At most one log line per this long about failing accepts.
const LOG_EVERY: Duration = Duration::from_secs(10);

impl AcceptBackoff {
    /// No failures yet.
    pub(crate) fn new() -> AcceptBackoff {
        AcceptBackoff { delay: BACKOFF.0, failures: 0, last_log: None }
    }

    /// An accept succeeded: the next failure starts from the shortest pause.
    pub(crate) fn succeeded(&mut self) {
        self.delay = BACKOFF.0;
    }

    /// An accept failed with `err`: logs (at most once per ten seconds, with the count since),
    /// and gives how long to pause before accepting again.
    pub(crate) fn failed(&mut self, err: &std::io::Error, open: usize, now: Instant) -> Duration {
        self.failures += 1;
        if self.last_log.is_none_or(|last| now.duration_since(last) >= LOG_EVERY) {
            tracing::warn!(
                %err,
                failures = self.failures,
                open_connections = open,
                "accepting client connections is failing; closing idle ones and retrying. If this is 'Too many open files', raise the open-file limit (ulimit -n, LimitNOFILE=) or lower [server] max_connections"
            );
            self.failures = 0;
            self.last_log = Some(now);
        }
        let delay = self.delay;
        self.delay = (self.delay * 2).min(BACKOFF.1);
        delay
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOCAL: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    fn limits(max_connections: usize) -> Limits {
        Limits { header_timeout: Duration::from_secs(2), idle_timeout: Duration::from_secs(5), max_connections }
    }

    fn close_of(conn: &Conn) -> u8 {
        conn.close.load(Relaxed)
    }

    #[test]
    fn a_connection_sending_its_head_too_long_is_closed_at_once() {
        let connections = Connections::new(limits(10));
        let registered = connections.register(LOCAL);
        let conn = registered.conn();
        let start = Instant::now();
        conn.reading_head.store(true, Relaxed);
        connections.look(start);
        connections.look(start + Duration::from_secs(1));
        assert_eq!(close_of(conn), Close::No as u8);
        connections.look(start + Duration::from_secs(2));
        assert_eq!(close_of(conn), Close::Now as u8);
    }

    #[test]
    fn a_request_in_hand_is_never_idle_or_slow() {
        let connections = Connections::new(limits(10));
        let registered = connections.register(LOCAL);
        let conn = registered.conn();
        let busy = conn.begin();
        let start = Instant::now();
        for seconds in 0..30 {
            connections.look(start + Duration::from_secs(seconds));
        }
        assert_eq!(close_of(conn), Close::No as u8);
        drop(busy);
        connections.look(start + Duration::from_secs(31));
        connections.look(start + Duration::from_secs(35));
        assert_eq!(close_of(conn), Close::No as u8, "quiet for 4 s of 5");
        connections.look(start + Duration::from_secs(36));
        assert_eq!(close_of(conn), Close::WhenIdle as u8);
    }

    #[test]
    fn bytes_moving_keep_a_connection_open() {
        let connections = Connections::new(limits(10));
        let registered = connections.register(LOCAL);
        let conn = registered.conn();
        let start = Instant::now();
        for seconds in 0..20 {
            conn.moved.store(true, Relaxed);
            connections.look(start + Duration::from_secs(seconds));
        }
        assert_eq!(close_of(conn), Close::No as u8);
    }

    #[test]
    fn at_the_cap_the_longest_idle_connection_makes_room() {
        let connections = Connections::new(limits(2));
        let first = connections.register(LOCAL);
        drop(first.conn().begin());
        let second = connections.register(LOCAL);
        let _busy = second.conn().begin();
        let third = connections.register(LOCAL);
        assert_eq!(close_of(first.conn()), Close::WhenIdle as u8, "the idle one closes");
        assert!(third.conn().over_capacity.is_none());
        // Nothing idle left: the next is over capacity.
        let _busy_third = third.conn().begin();
        let fourth = connections.register(LOCAL);
        assert_eq!(fourth.conn().over_capacity, Some(2));
        drop(first);
        assert_eq!(connections.open(), 3);
    }

    #[test]
    fn a_new_connection_is_not_closed_to_make_room_before_its_first_request() {
        let connections = Connections::new(limits(1));
        let fresh = connections.register(LOCAL);
        assert!(!connections.close_one_idle(), "its request may be in the socket, unread");
        assert_eq!(close_of(fresh.conn()), Close::No as u8);
        let later = Instant::now() + FIRST_REQUEST_GRACE;
        assert!(close_longest_idle(&connections.table.lock(), later, "descriptors"), "silent past the grace");
        assert_eq!(close_of(fresh.conn()), Close::WhenIdle as u8);
    }

    #[test]
    fn ended_connections_are_forgotten() {
        let connections = Connections::new(limits(10));
        let registered = connections.register(LOCAL);
        drop(registered);
        connections.look(Instant::now());
        assert!(connections.table.lock().is_empty());
        assert_eq!(connections.open(), 0);
    }

    #[test]
    fn accept_failures_back_off_and_log_rarely() {
        let mut backoff = AcceptBackoff::new();
        let err = std::io::Error::other("Too many open files");
        let now = Instant::now();
        let delays: Vec<_> = (0..10).map(|_| backoff.failed(&err, 0, now)).collect();
        assert_eq!(delays[0], Duration::from_millis(10));
        assert_eq!(delays[1], Duration::from_millis(20));
        assert_eq!(delays[9], Duration::from_secs(1));
        assert_eq!(backoff.failures, 9, "one log line for the first; the rest counted for the next");
        backoff.succeeded();
        assert_eq!(backoff.failed(&err, 0, now), Duration::from_millis(10));
    }
}
