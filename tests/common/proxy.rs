//! A fault-injecting TCP proxy for outage tests, in the spirit of Toxiproxy.
//!
//! `Proxy::start(upstream)` listens on `127.0.0.1:0` and forwards every
//! connection to `upstream`. Faults:
//!
//! * [`Proxy::cut`]: closes every live connection (both sides see EOF) and
//!   refuses new ones (accepted, then closed at once) until [`Proxy::restore`].
//!   This is what a client sees when a broker dies or the network drops.
//! * [`Proxy::stall`]: keeps connections open but forwards no byte (new
//!   connections are accepted and stall too) until [`Proxy::restore`]. This is a
//!   hung broker or a black-holed network: only timeouts notice it.
//! * [`Proxy::cut_client`]: like `cut`, but only for the connections whose
//!   first bytes (a Kafka request header) carry a given client id, until
//!   [`Proxy::restore`]: one client cut off, the others not.
//! * [`Proxy::set_latency`]: delays every forwarded chunk.
//! * [`Proxy::drop_responses`]: the next `n` times the upstream sends bytes
//!   on a connection, they are thrown away and that connection is closed:
//!   the broker handled the request, the client never hears back (a lost
//!   acknowledgement).
//!
//! Std threads only: one acceptor thread plus two pump threads per connection.
//! Dropping the proxy closes everything and joins every thread.
//!
//! Kafka note: clients connect to the addresses a broker *advertises*, not to
//! the bootstrap address, so a proxy in front of a shared broker only sees the
//! bootstrap connection. For outage tests start a broker that advertises the
//! proxy's address (see `common::TansuBroker::start_behind_proxy`).
#![allow(dead_code)]

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::Duration;

/// How long the acceptor sleeps when no connection is pending. The listener is
/// non-blocking so that Drop never depends on waking a blocked `accept`.
const ACCEPT_POLL: Duration = Duration::from_millis(2);
/// How often a stalled pump re-checks whether it may forward again.
const STALL_POLL: Duration = Duration::from_millis(5);
const UPSTREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A running proxy; see the module docs.
pub struct Proxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

struct Shared {
    upstream: String,
    stop: AtomicBool,
    cut: AtomicBool,
    stalled: AtomicBool,
    latency_ms: AtomicU64,
    /// Upstream answers still to drop (see `Proxy::drop_responses`).
    drop_responses: AtomicUsize,
    /// Upstream answers dropped so far.
    dropped: AtomicUsize,
    /// Connections accepted and forwarded upstream since start.
    accepted: AtomicUsize,
    /// Connections refused because the proxy was cut.
    refused: AtomicUsize,
    live: Mutex<Vec<Conn>>,
    /// The client id `cut_client` cuts off, if any.
    cut_client: Mutex<Option<Vec<u8>>>,
    next_id: AtomicU64,
    pumps: Mutex<Vec<JoinHandle<()>>>,
}

/// Handles on one proxied connection, kept so that `cut` can close it.
struct Conn {
    id: u64,
    client: TcpStream,
    upstream: TcpStream,
    closed: Arc<AtomicBool>,
    /// The first bytes the client sent (its first request's header).
    hello: Arc<Mutex<Vec<u8>>>,
}

impl Conn {
    fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        // Shutting down both sockets wakes the pump threads blocked in read().
        let _ = self.client.shutdown(Shutdown::Both);
        let _ = self.upstream.shutdown(Shutdown::Both);
    }
}

/// A poisoned lock only means a pump panicked; the data is still usable.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Proxy {
    /// Starts a proxy on `127.0.0.1:0` that forwards to `upstream` (`host:port`).
    /// The upstream is connected lazily, once per accepted connection, so it
    /// need not be up yet.
    pub fn start(upstream: &str) -> io::Result<Proxy> {
        Proxy::start_on("127.0.0.1:0", upstream)
    }

    /// Like [`Proxy::start`] but listening on `listen` (e.g. a port picked in
    /// advance so that a broker can advertise it).
    pub fn start_on(listen: &str, upstream: &str) -> io::Result<Proxy> {
        let listener = TcpListener::bind(listen)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            upstream: upstream.to_string(),
            stop: AtomicBool::new(false),
            cut: AtomicBool::new(false),
            stalled: AtomicBool::new(false),
            latency_ms: AtomicU64::new(0),
            drop_responses: AtomicUsize::new(0),
            dropped: AtomicUsize::new(0),
            accepted: AtomicUsize::new(0),
            refused: AtomicUsize::new(0),
            live: Mutex::new(Vec::new()),
            cut_client: Mutex::new(None),
            next_id: AtomicU64::new(0),
            pumps: Mutex::new(Vec::new()),
        });
        let s = Arc::clone(&shared);
        let acceptor = thread::Builder::new()
            .name(format!("test-proxy-accept-{}", addr.port()))
            .spawn(move || accept_loop(listener, s))?;
        Ok(Proxy {
            addr,
            shared,
            acceptor: Some(acceptor),
        })
    }

    /// The address clients should connect to, `127.0.0.1:PORT`.
    pub fn addr(&self) -> String {
        self.addr.to_string()
    }

    /// The upstream address this proxy forwards to.
    pub fn upstream(&self) -> &str {
        &self.shared.upstream
    }

    /// Closes every live connection and refuses new ones until `restore`.
    pub fn cut(&self) {
        self.shared.cut.store(true, Ordering::SeqCst);
        let conns: Vec<Conn> = lock(&self.shared.live).drain(..).collect();
        for c in &conns {
            c.close();
        }
    }

    /// Closes the live connections of client `client_id` (those whose first
    /// request carried it) and closes its new ones on their first request,
    /// until `restore`; other clients' connections go on.
    pub fn cut_client(&self, client_id: &str) {
        let needle = client_id.as_bytes().to_vec();
        *lock(&self.shared.cut_client) = Some(needle.clone());
        for c in lock(&self.shared.live).iter() {
            if contains(&lock(&c.hello), &needle) {
                c.close();
            }
        }
    }

    /// Stops forwarding bytes in both directions, keeping connections open.
    pub fn stall(&self) {
        self.shared.stalled.store(true, Ordering::SeqCst);
    }

    /// Ends a `cut` or a `stall`: new connections are forwarded again and
    /// stalled bytes flow. (Connections closed by `cut` stay closed.)
    pub fn restore(&self) {
        self.shared.cut.store(false, Ordering::SeqCst);
        self.shared.stalled.store(false, Ordering::SeqCst);
        *lock(&self.shared.cut_client) = None;
    }

    /// Drops the next `n` upstream answers, closing each one's connection
    /// (see the module docs). Counts add up.
    pub fn drop_responses(&self, n: usize) {
        self.shared.drop_responses.fetch_add(n, Ordering::SeqCst);
    }

    /// Upstream answers dropped so far by [`Proxy::drop_responses`].
    pub fn dropped(&self) -> usize {
        self.shared.dropped.load(Ordering::SeqCst)
    }

    /// Delays each forwarded chunk by `latency` (zero: no delay).
    pub fn set_latency(&self, latency: Duration) {
        let ms = u64::try_from(latency.as_millis()).unwrap_or(u64::MAX);
        self.shared.latency_ms.store(ms, Ordering::SeqCst);
    }

    /// Connections accepted and forwarded upstream since start (refused ones
    /// are not counted).
    pub fn connections(&self) -> usize {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// Connections refused while cut.
    pub fn refused(&self) -> usize {
        self.shared.refused.load(Ordering::SeqCst)
    }

    /// Connections currently open through the proxy.
    pub fn live(&self) -> usize {
        lock(&self.shared.live).len()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.cut();
        if let Some(h) = self.acceptor.take() {
            let _ = h.join();
        }
        // The acceptor is gone, so no pump can be added any more.
        let pumps: Vec<JoinHandle<()>> = lock(&self.shared.pumps).drain(..).collect();
        for h in pumps {
            let _ = h.join();
        }
    }
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("addr", &self.addr)
            .field("upstream", &self.shared.upstream)
            .field("cut", &self.shared.cut.load(Ordering::SeqCst))
            .field("stalled", &self.shared.stalled.load(Ordering::SeqCst))
            .finish()
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    while !shared.stop.load(Ordering::SeqCst) {
        let client = match listener.accept() {
            Ok((client, _)) => client,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                thread::sleep(ACCEPT_POLL);
                continue;
            }
            // EMFILE, ECONNABORTED...: back off and keep serving.
            Err(_) => {
                thread::sleep(ACCEPT_POLL);
                continue;
            }
        };
        if shared.cut.load(Ordering::SeqCst) || shared.stop.load(Ordering::SeqCst) {
            // Refuse: the client sees its connection closed right away.
            shared.refused.fetch_add(1, Ordering::SeqCst);
            let _ = client.shutdown(Shutdown::Both);
            continue;
        }
        // On error (upstream unreachable) the client's connection is simply
        // closed, as a dead broker would do.
        let _ = forward(client, &shared);
        // Forget pumps that have finished so the list does not grow forever.
        lock(&shared.pumps).retain(|h| !h.is_finished());
    }
}

fn connect_upstream(upstream: &str) -> io::Result<TcpStream> {
    let mut last = io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("no address for {upstream}"),
    );
    for a in upstream.to_socket_addrs()? {
        match TcpStream::connect_timeout(&a, UPSTREAM_CONNECT_TIMEOUT) {
            Ok(s) => return Ok(s),
            Err(e) => last = e,
        }
    }
    Err(last)
}

fn forward(client: TcpStream, shared: &Arc<Shared>) -> io::Result<()> {
    // Accepted sockets may inherit the listener's non-blocking mode on some
    // platforms; pumps want blocking reads.
    client.set_nonblocking(false)?;
    let upstream = connect_upstream(&shared.upstream)?;
    // Kafka requests are small; Nagle would add latency to every round trip.
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);

    let id = shared.next_id.fetch_add(1, Ordering::SeqCst);
    let closed = Arc::new(AtomicBool::new(false));
    let hello: Arc<Mutex<Vec<u8>>> = Arc::default();
    let conn = Conn {
        id,
        client: client.try_clone()?,
        upstream: upstream.try_clone()?,
        closed: Arc::clone(&closed),
        hello: Arc::clone(&hello),
    };
    // Register before starting the pumps so that a concurrent `cut` sees it.
    {
        let mut live = lock(&shared.live);
        if shared.cut.load(Ordering::SeqCst) {
            drop(live);
            conn.close();
            shared.refused.fetch_add(1, Ordering::SeqCst);
            return Ok(());
        }
        live.push(conn);
    }
    shared.accepted.fetch_add(1, Ordering::SeqCst);

    // The second pump to finish removes the connection from the live list.
    let remaining = Arc::new(AtomicUsize::new(2));
    let directions = [
        (client.try_clone()?, upstream.try_clone()?, "up"),
        (upstream, client, "down"),
    ];
    for (from, to, dir) in directions {
        let shared2 = Arc::clone(shared);
        let closed2 = Arc::clone(&closed);
        let remaining2 = Arc::clone(&remaining);
        let hello2 = Arc::clone(&hello);
        let h = thread::Builder::new()
            .name(format!("test-proxy-{id}-{dir}"))
            .spawn(move || {
                pump(from, to, &shared2, &closed2, &hello2, dir == "down");
                if remaining2.fetch_sub(1, Ordering::SeqCst) == 1 {
                    lock(&shared2.live).retain(|c| c.id != id);
                }
            })?;
        lock(&shared.pumps).push(h);
    }
    Ok(())
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

fn pump(
    mut from: TcpStream,
    mut to: TcpStream,
    shared: &Shared,
    closed: &AtomicBool,
    hello: &Mutex<Vec<u8>>,
    down: bool,
) {
    let mut buf = [0u8; 16 * 1024];
    // A clean EOF is forwarded as a half-close; an error (reset, cut) closes
    // both sides, or the opposite pump could wait forever on a silent peer.
    let clean = loop {
        let n = match from.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => n,
            Err(_) => break false,
        };
        while shared.stalled.load(Ordering::SeqCst)
            && !closed.load(Ordering::SeqCst)
            && !shared.stop.load(Ordering::SeqCst)
        {
            thread::sleep(STALL_POLL);
        }
        if closed.load(Ordering::SeqCst) {
            break false;
        }
        if !down {
            let mut h = lock(hello);
            if h.is_empty() {
                h.extend_from_slice(&buf[..n.min(512)]);
            }
            let cut_off = lock(&shared.cut_client)
                .as_ref()
                .is_some_and(|needle| contains(&h, needle));
            if cut_off {
                break false;
            }
        }
        let drop_it = down
            && shared
                .drop_responses
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
        if drop_it {
            shared.dropped.fetch_add(1, Ordering::SeqCst);
            break false;
        }
        let ms = shared.latency_ms.load(Ordering::SeqCst);
        if ms > 0 {
            thread::sleep(Duration::from_millis(ms));
        }
        if to.write_all(&buf[..n]).is_err() {
            break false;
        }
    };
    if clean && !closed.load(Ordering::SeqCst) {
        let _ = to.shutdown(Shutdown::Write);
    } else {
        let _ = to.shutdown(Shutdown::Both);
        let _ = from.shutdown(Shutdown::Both);
    }
}
