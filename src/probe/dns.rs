//! Name resolution for checks: the system resolver, or an asynchronous one with a cache.
//!
//! The system resolver (getaddrinfo, which honours nsswitch: /etc/hosts, LDAP, mDNS, ...) blocks,
//! so it runs on threads of its own ([`SystemLookups`], at most [`SYSTEM_LOOKUP_THREADS`]), not
//! on tokio's blocking pool: a DNS server that hangs holds each thread for the resolver's full
//! timeout after the check is gone, and on the shared pool those threads would queue up the
//! daemon's other blocking work (config loads) behind them. Here they only delay other system
//! lookups, and a lookup whose check has gone is skipped, not run. The
//! asynchronous resolver (hickory) reads the same /etc/resolv.conf and /etc/hosts, is cancelled
//! with the check, and caches answers for their TTL. The benchmark compares the two
//! (`healthsweep bench --hostnames`); see docs/performance.md for the numbers behind the default.

use std::net::SocketAddr;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::LookupIpStrategy;

pub use crate::config::ResolverKind;

/// Lookups in flight at once, across all checks. A sweep of thousands of new host names would
/// otherwise send thousands of queries in one burst: a DNS server drops what its socket buffer
/// cannot hold, and each dropped query costs the resolver's full timeout (5 s). It also bounds
/// the system resolver's blocking threads.
pub const MAX_CONCURRENT_LOOKUPS: usize = 256;

/// How long a lookup counts against [`MAX_CONCURRENT_LOOKUPS`]. Answers normally take
/// milliseconds; a lookup still waiting after this goes on outside the bound, so names whose DNS
/// server hangs cannot hold every turn and starve the lookups of healthy services.
pub const SLOW_LOOKUP: std::time::Duration = std::time::Duration::from_millis(250);

/// Names cached at most by the asynchronous resolver: room for a large fleet's distinct hosts,
/// a few hundred bytes each, allocated only as names are seen.
const CACHE_SIZE: usize = 65_536;

/// Threads that run getaddrinfo at most. A lookup that hangs holds one for the resolver's
/// timeout (`options timeout:5 attempts:2` in resolv.conf: 10 s or more); more threads would
/// only let a hanging DNS server hold more of them.
pub const SYSTEM_LOOKUP_THREADS: usize = 32;

/// System lookups waiting for a thread at most. While a DNS server hangs, every thread is held
/// for seconds and each sweep queues its lookups again: unbounded, the queue would grow by a
/// fleet's worth every sweep. Past this, a lookup fails at once (`dns`, "resolver overloaded"),
/// which is what it would have done after its timeout anyway.
pub const SYSTEM_LOOKUP_QUEUE: usize = 4096;

/// A resolver ready to use.
pub enum Resolver {
    System(std::sync::Arc<SystemLookups>),
    Async(Box<TokioResolver>),
}

/// One getaddrinfo call to make, and where its answer goes.
struct Job {
    host: String,
    port: u16,
    reply: tokio::sync::oneshot::Sender<Result<Vec<SocketAddr>, String>>,
}

/// The threads that run system lookups, started on first use (a fleet on the asynchronous
/// resolver never needs them) up to [`SYSTEM_LOOKUP_THREADS`].
pub struct SystemLookups {
    jobs: std::sync::Mutex<Option<std::sync::mpsc::SyncSender<Job>>>,
    queue: std::sync::Arc<std::sync::Mutex<std::sync::mpsc::Receiver<Job>>>,
    threads: std::sync::atomic::AtomicUsize,
    /// Jobs queued and not yet taken by a thread; a thread is started while they outnumber
    /// the idle threads, so one idle thread is never left to serve a burst alone.
    pending: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    idle: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Default for SystemLookups {
    fn default() -> Self {
        SystemLookups::with_queue(SYSTEM_LOOKUP_QUEUE, 0)
    }
}

impl SystemLookups {
    /// Lookups queued at most `queue`, with `threads` counted as started already.
    fn with_queue(queue: usize, threads: usize) -> Self {
        let (tx, rx) = std::sync::mpsc::sync_channel(queue);
        SystemLookups {
            jobs: std::sync::Mutex::new(Some(tx)),
            queue: std::sync::Arc::new(std::sync::Mutex::new(rx)),
            threads: std::sync::atomic::AtomicUsize::new(threads),
            pending: std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0)),
            idle: std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0)),
        }
    }

    /// The addresses of `host` by getaddrinfo, on one of the lookup threads.
    pub async fn lookup(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, String> {
        use std::sync::atomic::Ordering;
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job = Job {
            host: host.to_string(),
            port,
            reply,
        };
        {
            let jobs = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
            let Some(jobs) = jobs.as_ref() else {
                return Err("the resolver is shutting down".into());
            };
            match jobs.try_send(job) {
                Ok(()) => {
                    self.pending.fetch_add(1, Ordering::Relaxed);
                }
                Err(std::sync::mpsc::TrySendError::Full(_)) => {
                    return Err(format!(
                        "system resolver overloaded: {SYSTEM_LOOKUP_QUEUE} lookups waiting (is the DNS server answering?)"
                    ));
                }
                Err(std::sync::mpsc::TrySendError::Disconnected(_)) => {
                    return Err("the resolver threads are gone".into());
                }
            }
        }
        // A thread more while queued jobs outnumber idle threads, up to the bound.
        if self.pending.load(Ordering::Relaxed) > self.idle.load(Ordering::Relaxed) {
            let n = self.threads.fetch_add(1, Ordering::Relaxed);
            if n < SYSTEM_LOOKUP_THREADS {
                self.spawn_thread();
            } else {
                self.threads.fetch_sub(1, Ordering::Relaxed);
            }
        }
        answer
            .await
            .unwrap_or_else(|_| Err("the lookup thread stopped".into()))
    }

    fn spawn_thread(&self) {
        let queue = self.queue.clone();
        let (idle, pending) = (self.idle.clone(), self.pending.clone());
        let spawned = std::thread::Builder::new()
            .name("getaddrinfo".into())
            .spawn(move || serve(&queue, &idle, &pending));
        if let Err(e) = spawned {
            self.threads
                .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
            tracing::warn!(error = %e, "cannot start a name lookup thread");
        }
    }
}

/// A lookup thread: takes jobs until the queue closes; skips those whose check is gone.
fn serve(
    queue: &std::sync::Mutex<std::sync::mpsc::Receiver<Job>>,
    idle: &std::sync::atomic::AtomicUsize,
    pending: &std::sync::atomic::AtomicUsize,
) {
    use std::net::ToSocketAddrs as _;
    use std::sync::atomic::Ordering;
    loop {
        idle.fetch_add(1, Ordering::Relaxed);
        let job = queue.lock().unwrap_or_else(|e| e.into_inner()).recv();
        idle.fetch_sub(1, Ordering::Relaxed);
        let Ok(job) = job else { return };
        pending.fetch_sub(1, Ordering::Relaxed);
        if job.reply.is_closed() {
            continue;
        }
        let answer = (job.host.as_str(), job.port)
            .to_socket_addrs()
            .map(Iterator::collect)
            .map_err(|e| e.to_string());
        let _ = job.reply.send(answer);
    }
}

impl Resolver {
    /// Builds the resolver of `kind`. The asynchronous one reads /etc/resolv.conf; if that fails
    /// the system resolver is used instead, and the reason logged.
    pub fn new(kind: ResolverKind) -> Resolver {
        match kind {
            ResolverKind::System => Resolver::System(Default::default()),
            ResolverKind::Async => match TokioResolver::builder_tokio() {
                Ok(mut builder) => {
                    let opts = builder.options_mut();
                    opts.cache_size = CACHE_SIZE;
                    // Both families: `ip_family = "any"` tries every address until one connects,
                    // and the per-service family is applied to the answer.
                    opts.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
                    Resolver::Async(Box::new(builder.build()))
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the system DNS configuration; using the system resolver");
                    Resolver::System(Default::default())
                }
            },
        }
    }

    /// The addresses of `host`, with `port`.
    pub async fn lookup(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, String> {
        let addrs: Vec<SocketAddr> = match self {
            Resolver::System(threads) => threads.lookup(host, port).await?,
            Resolver::Async(r) => r
                .lookup_ip(host)
                .await
                .map_err(|e| e.to_string())?
                .iter()
                .map(|ip| SocketAddr::new(ip, port))
                .collect(),
        };
        if addrs.is_empty() {
            return Err("no addresses".into());
        }
        Ok(addrs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn system_lookups_answer_from_their_own_threads() {
        let lookups = SystemLookups::default();
        let addrs = lookups
            .lookup("127.0.0.1", 80)
            .await
            .expect("a literal resolves");
        assert_eq!(addrs, vec![SocketAddr::from(([127, 0, 0, 1], 80))]);
    }

    #[tokio::test]
    async fn a_burst_of_lookups_gets_threads_even_while_one_is_idle() {
        use std::sync::atomic::Ordering;
        // A thread counted idle that will take nothing (as one about to block in a hanging
        // getaddrinfo would): a burst must start threads of its own, not wait for it.
        let lookups = std::sync::Arc::new(SystemLookups::with_queue(64, 0));
        lookups.idle.store(1, Ordering::Relaxed);
        let burst: Vec<_> = (0..8)
            .map(|i| {
                let l = lookups.clone();
                tokio::spawn(async move { l.lookup("127.0.0.1", i).await })
            })
            .collect();
        for b in burst {
            tokio::time::timeout(std::time::Duration::from_secs(10), b)
                .await
                .expect("answered: threads were started")
                .expect("task")
                .expect("resolves");
        }
        assert!(lookups.threads.load(Ordering::Relaxed) >= 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_queue_fails_new_lookups_at_once_instead_of_growing() {
        // Every thread "busy" (none will start): queued lookups wait, the one past the bound
        // fails at once.
        let lookups = std::sync::Arc::new(SystemLookups::with_queue(3, SYSTEM_LOOKUP_THREADS));
        let mut waiting = Vec::new();
        for _ in 0..3 {
            let l = lookups.clone();
            waiting.push(tokio::spawn(async move { l.lookup("a.test", 80).await }));
        }
        tokio::task::yield_now().await;
        let refused = lookups.lookup("b.test", 80).await.expect_err("queue full");
        assert!(refused.contains("overloaded"), "{refused}");
        assert!(waiting.iter().all(|w| !w.is_finished()));
    }
}
