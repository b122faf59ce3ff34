//! The connection budget, and the idle connections kept between checks.
//!
//! Every open connection, in use or idle, holds a [`Slot`]: one permit of a semaphore sized to
//! the descriptors the daemon may spend on checks (see [`crate::limits`]). A check that needs a
//! new connection takes a slot; when none is free it closes an idle connection to get one, and
//! only waits when every slot is in use by a check in flight. So reuse never starves a check of
//! a descriptor, and thousands of services never exhaust the open-file limit.
//!
//! Idle connections are pooled by endpoint (scheme, host, port) and everything else that shapes
//! a connection (see [`Endpoint`]): services behind the same endpoint with the same settings
//! share them, so a fleet larger than the descriptor budget still runs on kept connections
//! instead of opening one per check. A connection is taken out
//! only if the server has not closed it meanwhile and it is younger than [`MAX_AGE`].

use std::collections::HashMap;
use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::http1::Connection;
use crate::config::{Fingerprint, IpFamily, ResolverKind, Service, Target, TlsClient};

/// Oldest connection reused. Bounds how long checks keep talking to an address that DNS or a
/// load balancer has since moved away from.
pub const MAX_AGE: Duration = Duration::from_secs(300);

/// One descriptor's worth of the budget; given back when dropped.
#[derive(Debug)]
pub struct Slot {
    _permit: OwnedSemaphorePermit,
}

/// A connection with its slot and age: what a check holds and what the pool keeps.
pub struct Leased {
    pub connection: Connection,
    pub opened: Instant,
    /// Held for as long as the connection is open; dropping both frees the descriptor.
    pub _slot: Slot,
    /// What the TLS handshake showed, reported again by every check on the connection.
    pub tls: Option<std::sync::Arc<super::TlsFacts>>,
    /// The shape it was opened with, compared in full before it is handed out again (the map
    /// key is only a hash of it).
    pub shape: Box<ShapeKey>,
}

/// The key idle connections are pooled under: two checks share a connection only when a new
/// connection for either would be the very same connection. So the key holds everything that
/// shapes one: the endpoint (scheme, host, port, IP literal), which addresses may be used
/// (`ip_family`, and the resolver that finds them), and for TLS the server name sent and
/// checked and the client's fingerprint (trust roots and their content, verification mode,
/// client identity, ALPN; see [`crate::config::TlsClient`]). A connection verified under
/// `insecure_skip_verify`, another CA, another name or another client certificate is never
/// handed to a service that would not have accepted it, and a reload that changes any of these
/// changes the key. The key is a hash for the map; a connection's whole [`ShapeKey`] is
/// compared before it is reused, so a hash collision can never share a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Endpoint(u64);

/// A [`Shape`], owned: what a pooled connection remembers about how it was made.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ShapeKey {
    tls: bool,
    host: Box<str>,
    port: u16,
    ip: Option<std::net::IpAddr>,
    ip_family: IpFamily,
    resolver: ResolverKind,
    server: Option<(Box<str>, Fingerprint)>,
}

impl ShapeKey {
    /// Whether a connection made with this would be the one `shape` makes.
    pub fn matches(&self, shape: &Shape<'_>) -> bool {
        let t = shape.target;
        self.tls == t.tls
            && *self.host == *t.host
            && self.port == t.port
            && self.ip == t.ip
            && self.ip_family == shape.ip_family
            && self.resolver == shape.resolver
            && match (&self.server, &shape.tls) {
                (None, None) => true,
                (Some((n, f)), Some((m, g))) => **n == **m && f == g,
                _ => false,
            }
    }
}

/// What a connection for one request of a check is made with: see [`Endpoint`].
#[derive(Debug, Clone, Copy)]
pub struct Shape<'a> {
    pub target: &'a Target,
    pub ip_family: IpFamily,
    pub resolver: ResolverKind,
    /// To the service's own origin (its client identity is presented) or another one.
    pub same_origin: bool,
    /// For TLS: the name sent as SNI and checked in the certificate, and the fingerprint of the
    /// TLS client config used.
    pub tls: Option<(&'a str, Fingerprint)>,
}

impl<'a> Shape<'a> {
    /// The shape of a request of `svc` to `target`: the service's own origin (`same_origin`,
    /// its `server_name` and client identity apply) or another one reached by a redirect (the
    /// URL's host is the name, no client identity). `client` is the TLS client the connection
    /// uses, for `https`.
    pub fn of(
        svc: &'a Service,
        target: &'a Target,
        same_origin: bool,
        client: Option<&TlsClient>,
    ) -> Shape<'a> {
        let tls = client.filter(|_| target.tls).map(|c| {
            let name = match (&svc.extra.server_name, same_origin) {
                (Some(n), true) => n,
                _ => target.host.as_str(),
            };
            (name, c.for_origin(same_origin).1)
        });
        Shape {
            target,
            ip_family: svc.ip_family,
            resolver: svc.resolver,
            same_origin,
            tls,
        }
    }

    /// This shape, owned, for the connection to carry.
    pub fn key(&self) -> ShapeKey {
        let t = self.target;
        ShapeKey {
            tls: t.tls,
            host: t.host.as_str().into(),
            port: t.port,
            ip: t.ip,
            ip_family: self.ip_family,
            resolver: self.resolver,
            server: self.tls.map(|(n, f)| (n.into(), f)),
        }
    }

    /// The name to send as SNI and check the certificate for, for TLS.
    pub fn server_name(&self) -> &'a str {
        self.tls.map_or(self.target.host.as_str(), |(name, _)| name)
    }
}

impl Endpoint {
    pub fn of(shape: &Shape<'_>) -> Endpoint {
        use std::hash::{BuildHasher, Hash, Hasher};
        // foldhash, seeded once per process: a key per check and per service on every config
        // change, where SipHash cost a third of `Prober::use_config` at 100,000 services. A
        // collision only puts two shapes in one bucket (the whole shape is compared).
        static SEED: std::sync::LazyLock<foldhash::fast::RandomState> =
            std::sync::LazyLock::new(foldhash::fast::RandomState::default);
        let mut h = SEED.build_hasher();
        let t = shape.target;
        (t.tls, &t.host, t.port, t.ip).hash(&mut h);
        (shape.ip_family, shape.resolver, shape.tls).hash(&mut h);
        Endpoint(h.finish())
    }
}

/// The budget and the idle connections, most recently used last.
pub struct Pool {
    slots: Arc<Semaphore>,
    /// Sharded by endpoint: every check takes and puts a connection, from every worker thread
    /// at once, and one lock for all of them was contended.
    idle: Box<[Mutex<Idle>]>,
    /// How many connections `idle` holds, readable without the lock (a live metric).
    idle_count: Arc<AtomicUsize>,
}

impl Pool {
    /// A pool that lets at most `budget` connections be open at once.
    pub fn new(budget: usize) -> Self {
        Pool {
            slots: Arc::new(Semaphore::new(budget.max(1))),
            idle: (0..SHARDS).map(|_| Mutex::default()).collect(),
            idle_count: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// A slot for a new connection: a free one, else one freed by closing an idle connection,
    /// else the next one a check in flight gives back.
    pub async fn slot(&self) -> Slot {
        loop {
            if let Ok(p) = self.slots.clone().try_acquire_owned() {
                return Slot { _permit: p };
            }
            if !self.evict_one() {
                break;
            }
        }
        Slot {
            _permit: self
                .slots
                .clone()
                .acquire_owned()
                .await
                .expect("the slot semaphore is never closed"),
        }
    }

    /// An idle connection to `endpoint` that is still usable: the most recently used first,
    /// as it is the likeliest to be alive. Dead ones found on the way are closed.
    pub fn take(&self, endpoint: Endpoint, shape: &Shape<'_>) -> Option<Leased> {
        let mut idle = self.shard(endpoint);
        let stack = idle.get_mut(&endpoint)?;
        let mut found = None;
        while let Some(at) = stack.iter().rposition(|l| l.shape.matches(shape)) {
            let leased = stack.remove(at);
            self.idle_count.fetch_sub(1, Ordering::Relaxed);
            if leased.opened.elapsed() < MAX_AGE
                && leased.connection.is_clean()
                && still_open(&leased.connection)
            {
                found = Some(leased);
                break;
            }
        }
        if stack.is_empty() {
            idle.remove(&endpoint);
        }
        found
    }

    /// Keeps `leased` for the next check of a service at `endpoint`.
    pub fn put(&self, endpoint: Endpoint, mut leased: Leased) {
        leased.connection.shrink();
        let mut idle = self.shard(endpoint);
        idle.entry(endpoint).or_default().push(leased);
        // Under the shard's lock, as every change of the count is: a connection is counted
        // before anyone can take it, so the count never dips below zero (and wraps).
        self.idle_count.fetch_add(1, Ordering::Relaxed);
    }

    /// Closes every idle connection to endpoints `keep` says no to, and every one older than
    /// [`MAX_AGE`]: after each sweep, so connections no service will take again (a reload
    /// changed their shape, a redirect target stopped being one) do not hold descriptors.
    pub fn retain(&self, mut keep: impl FnMut(Endpoint) -> bool) {
        for shard in &self.idle {
            let mut idle = lock(shard);
            let before: usize = idle.values().map(Vec::len).sum();
            idle.retain(|e, stack| {
                stack.retain(|l| l.opened.elapsed() < MAX_AGE);
                !stack.is_empty() && keep(*e)
            });
            let after: usize = idle.values().map(Vec::len).sum();
            // What this shard let go, not a total stored at the end: checks on other threads
            // take and put connections in the shards already counted meanwhile.
            self.idle_count.fetch_sub(before - after, Ordering::Relaxed);
        }
    }

    /// Idle connections held now.
    pub fn idle(&self) -> usize {
        self.idle_count.load(Ordering::Relaxed)
    }

    /// A live view of [`Pool::idle`], for the metrics.
    pub fn idle_gauge(&self) -> Arc<AtomicUsize> {
        self.idle_count.clone()
    }

    /// Closes one idle connection (the least recently used of some endpoint), freeing its
    /// slot; `false` if there was none.
    fn evict_one(&self) -> bool {
        for shard in &self.idle {
            let mut idle = lock(shard);
            let Some((&endpoint, stack)) = idle.iter_mut().next() else {
                continue;
            };
            if !stack.is_empty() {
                stack.remove(0);
                self.idle_count.fetch_sub(1, Ordering::Relaxed);
            }
            if stack.is_empty() {
                idle.remove(&endpoint);
            }
            return true;
        }
        false
    }

    fn shard(&self, endpoint: Endpoint) -> MutexGuard<'_, Idle> {
        lock(&self.idle[(endpoint.0 % SHARDS as u64) as usize])
    }
}

/// Shards of [`Pool::idle`]: a few per core, so two threads rarely want the same one.
const SHARDS: usize = 16;

/// One shard of the idle connections, by endpoint, most recently used last. Keyed by the
/// endpoint's hash already, so hashed with foldhash rather than SipHash again.
type Idle = HashMap<Endpoint, Vec<Leased>, foldhash::fast::FixedState>;

fn lock(shard: &Mutex<Idle>) -> MutexGuard<'_, Idle> {
    // Every operation under the lock leaves the map whole; a panic cannot tear it.
    shard.lock().unwrap_or_else(|e| e.into_inner())
}

/// Whether an idle connection's socket is still open with nothing unread: a peek that would
/// block. End of stream (the server closed it) or unexpected bytes (for TLS, likely a
/// close_notify alert) make it unusable.
fn still_open(connection: &Connection) -> bool {
    let tcp = connection.stream().tcp();
    // Asked of the socket only when the runtime has seen it become readable since the last
    // read drained it (a close, stray bytes): else nothing can have arrived, and the answer
    // costs no system call. A close the runtime has not seen yet fails the request before any
    // response, which is sent again on a new connection.
    let peek = || {
        let mut byte = [MaybeUninit::<u8>::uninit(); 1];
        socket2::SockRef::from(tcp).peek(&mut byte)
    };
    match tcp.try_io(tokio::io::Interest::READABLE, peek) {
        Err(e) => e.kind() == std::io::ErrorKind::WouldBlock,
        Ok(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Service;

    fn service(extra: &str) -> Arc<Service> {
        let src =
            format!("[[service]]\nname = \"a\"\nurl = \"https://127.0.0.1:8443/h\"\n{extra}\n");
        let c = crate::config::parse(std::path::Path::new("t.toml"), &src).expect("valid");
        c.services[0].clone()
    }

    fn key(svc: &Service, same_origin: bool) -> Endpoint {
        Endpoint::of(&Shape::of(
            svc,
            &svc.target,
            same_origin,
            svc.tls.as_deref(),
        ))
    }

    #[test]
    fn shapes_that_differ_in_any_connection_setting_get_their_own_key() {
        let base = service("");
        assert_eq!(
            key(&base, true),
            key(&service(""), true),
            "same settings, same key"
        );
        let variants = [
            service("ip_family = \"ipv4\""),
            service("resolver = \"system\""),
            service("server_name = \"other.test\""),
            service("insecure_skip_verify = true"),
        ];
        let mut seen = std::collections::HashSet::from([key(&base, true)]);
        for v in &variants {
            assert!(seen.insert(key(v, true)));
        }
        // A redirect to the same host from another origin does not use `server_name`.
        let named = &variants[2];
        assert_ne!(key(named, true), key(named, false));
        assert_eq!(key(named, false), key(&base, false));
    }

    /// A connected pair on loopback: the pool's side as a plain connection, and the peer.
    async fn pair() -> (Connection, tokio::net::TcpStream) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let client = tokio::net::TcpStream::connect(l.local_addr().expect("addr"));
        let (client, accepted) = tokio::join!(client, l.accept());
        let client = client.expect("connect");
        let (peer, _) = accepted.expect("accept");
        (
            Connection::new(super::super::http1::Stream::Plain(client)),
            peer,
        )
    }

    async fn leased(pool: &Pool, svc: &Service) -> (Leased, tokio::net::TcpStream) {
        let (connection, peer) = pair().await;
        let shape = Shape::of(svc, &svc.target, true, svc.tls.as_deref());
        let leased = Leased {
            connection,
            opened: Instant::now(),
            _slot: pool.slot().await,
            tls: None,
            shape: Box::new(shape.key()),
        };
        (leased, peer)
    }

    #[tokio::test(start_paused = true)]
    async fn a_kept_connection_is_reused_by_the_same_shape_only_and_not_past_its_age() {
        let pool = Pool::new(8);
        let svc = service("");
        let other = service("ip_family = \"ipv4\"");
        let (l, _peer) = leased(&pool, &svc).await;
        let shape = Shape::of(&svc, &svc.target, true, svc.tls.as_deref());
        let key = Endpoint::of(&shape);
        pool.put(key, l);
        assert_eq!(pool.idle(), 1);
        // Another shape under the same map key (as a hash collision would be) is never given it.
        let other_shape = Shape::of(&other, &other.target, true, other.tls.as_deref());
        assert!(pool.take(key, &other_shape).is_none());
        assert!(pool.take(key, &shape).is_some(), "the same shape gets it");
        let (l, _peer) = leased(&pool, &svc).await;
        pool.put(key, l);
        tokio::time::advance(MAX_AGE).await;
        assert!(pool.take(key, &shape).is_none(), "too old to trust");
        assert_eq!(pool.idle(), 0);
    }

    #[tokio::test]
    async fn a_connection_the_server_closed_while_idle_is_not_handed_out() {
        let pool = Pool::new(8);
        let svc = service("");
        let shape = Shape::of(&svc, &svc.target, true, svc.tls.as_deref());
        let key = Endpoint::of(&shape);
        let (l, peer) = leased(&pool, &svc).await;
        pool.put(key, l);
        drop(peer);
        // The FIN arrives asynchronously; give it a moment on loopback.
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert!(pool.take(key, &shape).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_budget_closes_an_idle_connection_for_a_new_one_and_waits_only_when_all_are_busy()
     {
        let pool = Pool::new(2);
        let svc = service("");
        let shape = Shape::of(&svc, &svc.target, true, svc.tls.as_deref());
        let key = Endpoint::of(&shape);
        let (idle, _p1) = leased(&pool, &svc).await;
        let (busy, _p2) = leased(&pool, &svc).await;
        pool.put(key, idle);
        // Both slots taken (one idle, one in use): a new slot closes the idle connection.
        let third = tokio::time::timeout(std::time::Duration::from_secs(1), pool.slot())
            .await
            .expect("an idle connection gives way");
        assert_eq!(pool.idle(), 0);
        // Now both are in use: the next waits until one is given back.
        let waiting = pool.slot();
        tokio::pin!(waiting);
        assert!(
            tokio::time::timeout(std::time::Duration::from_secs(60), &mut waiting)
                .await
                .is_err()
        );
        drop(busy);
        tokio::time::timeout(std::time::Duration::from_secs(1), waiting)
            .await
            .expect("a slot given back is taken");
        drop(third);
    }

    #[tokio::test(start_paused = true)]
    async fn retain_closes_shapes_no_service_uses_and_old_connections() {
        let pool = Pool::new(8);
        let svc = service("");
        let shape = Shape::of(&svc, &svc.target, true, svc.tls.as_deref());
        let key = Endpoint::of(&shape);
        let (l, _p) = leased(&pool, &svc).await;
        pool.put(key, l);
        pool.retain(|e| e == key);
        assert_eq!(pool.idle(), 1, "still used");
        pool.retain(|_| false);
        assert_eq!(pool.idle(), 0, "no longer used");
        let (l, _p) = leased(&pool, &svc).await;
        pool.put(key, l);
        tokio::time::advance(MAX_AGE).await;
        pool.retain(|_| true);
        assert_eq!(pool.idle(), 0, "past its age");
    }
}
