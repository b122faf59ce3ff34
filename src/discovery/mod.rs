//! Targets from where fleets are already described: Prometheus file_sd files, an http_sd
//! endpoint, DNS SRV/A/AAAA records (see [`crate::config::Discover`]).
//!
//! ```text
//! Reloader ─watch<Loaded>─▶ Fleet ─watch<Loaded>─▶ Sweeper
//!                            ▲  (static services + every source's targets, made services by
//!   source tasks ──Update────┘   their template, deduplicated, sharded)
//! ```
//!
//! Each source runs as a task of its own and reports every refresh as an [`Update`]; a failed
//! refresh keeps the source's last good targets. The [`Fleet`] is the one writer of the config
//! the sweeper sees: when the config file or any source changes it composes the services
//! anew, between sweeps and without a reload, reusing the `Arc<Service>` of every target that
//! did not change (so at 100,000 targets a refresh that changes 1 % costs little), and the
//! snapshot keeps the state of every service whose name and target are unchanged.

mod dns;
mod file;
mod groups;
mod http;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::BuildHasher as _;
use std::sync::Arc;
use std::time::SystemTime;

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info_span, warn};

pub use groups::{Format, TargetGroup, parse};

use crate::config::{Config, Discover, Discovered, Loaded, Service, SourceSpec};
use crate::probe::Prober;

/// A source's report after a refresh.
#[derive(Debug, Clone)]
pub struct Update {
    pub source: Arc<str>,
    /// Which run of the source sent it: updates of a source stopped by a reload are ignored.
    epoch: u64,
    /// The source's targets now; `None` keeps the last good ones (the refresh failed).
    pub groups: Option<Arc<Vec<TargetGroup>>>,
    /// What went wrong, if anything. With `groups` set, part of the source failed (one file of
    /// several, one name of several) and its last good part is in `groups`.
    pub error: Option<String>,
    pub at: SystemTime,
}

impl Update {
    /// `d`'s report; a list longer than `d.max_targets` is refused (a generator gone wrong
    /// must not make a million services), keeping the last good one.
    fn new(
        d: &Discover,
        epoch: u64,
        groups: Option<Arc<Vec<TargetGroup>>>,
        error: Option<String>,
    ) -> Update {
        let listed: usize = groups
            .iter()
            .flat_map(|g| g.iter())
            .map(|g| g.targets.len())
            .sum();
        let (groups, error) = if listed > d.max_targets {
            let refused = format!(
                "{listed} targets, more than max_targets ({}); keeping the last good ones",
                d.max_targets
            );
            let error = match error {
                Some(e) => format!("{refused}; {e}"),
                None => refused,
            };
            (None, Some(error))
        } else {
            (groups, error)
        };
        Update {
            source: d.name.clone(),
            epoch,
            groups,
            error,
            at: SystemTime::now(),
        }
    }
}

/// Where a source sends its updates.
#[derive(Clone)]
struct Reporter {
    epoch: u64,
    tx: mpsc::Sender<Update>,
}

impl Reporter {
    async fn send(
        &self,
        d: &Discover,
        groups: Option<Arc<Vec<TargetGroup>>>,
        error: Option<String>,
    ) {
        let _ = self
            .tx
            .send(Update::new(d, self.epoch, groups, error))
            .await;
    }
}

/// Runs the source `d` until `stop`.
async fn run_source(d: Arc<Discover>, prober: Arc<Prober>, to: Reporter, stop: CancellationToken) {
    match &d.spec {
        SourceSpec::File(_) => file::run(&d, &to, &stop).await,
        SourceSpec::Http(_) => http::run(&d, &prober, &to, &stop).await,
        SourceSpec::Dns(_) => dns::run(&d, &to, &stop).await,
    }
}

/// Asks the source `d` once, for `validate --discover` and `check`.
pub async fn fetch_once(d: &Discover, prober: &Prober) -> Update {
    let (groups, error) = match &d.spec {
        SourceSpec::File(patterns) => file::read_all(patterns, &mut HashMap::new()),
        SourceSpec::Http(svc) => match http::fetch(prober, svc).await {
            Ok(g) => (Some(Arc::new(g)), None),
            Err(e) => (None, Some(e)),
        },
        SourceSpec::Dns(spec) => {
            let (g, e) = dns::query_all(spec, &mut HashMap::new()).await;
            (Some(Arc::new(g)), e)
        }
    };
    Update::new(d, 0, groups, error)
}

/// What `/status` and `/metrics` say about a source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceStatus {
    pub name: Arc<str>,
    /// `file`, `http` or `dns`.
    pub kind: &'static str,
    /// Services it adds now (after `keep`/`drop`, duplicates and rejected targets left out).
    pub targets: usize,
    /// When it last reported, successfully or not.
    pub last_refresh: Option<SystemTime>,
    /// When it last reported without an error.
    pub last_success: Option<SystemTime>,
    /// Whether the latest refresh went without an error (false before the first).
    pub successful: bool,
    /// The latest refresh's error (never a secret: no header, no URL credentials).
    pub error: Option<String>,
    pub failures_total: u64,
    /// Targets left out because a service of that name exists already (static ones win).
    pub duplicates: usize,
    /// Targets the template could not make a service of (a bad URL, a missing label).
    pub rejected: usize,
    /// Target labels dropped: names not valid for Prometheus, or reserved.
    pub dropped_labels: usize,
}

/// Every source's status, in config order.
pub type Statuses = Arc<Vec<SourceStatus>>;

/// A source's last good targets and what it last said, kept across reloads by name.
#[derive(Debug, Default)]
struct SourceState {
    groups: Option<Arc<Vec<TargetGroup>>>,
    last_refresh: Option<SystemTime>,
    last_success: Option<SystemTime>,
    error: Option<String>,
    reported: bool,
    failures_total: u64,
}

/// A target group's labels, shared by its targets.
type Labels = BTreeMap<String, String>;

/// A fast hasher, seeded per process (SipHash was a sixth of a refresh's CPU at 100,000
/// targets; a seed nobody outside knows keeps crafted target lists from colliding cheaply).
type Fast = foldhash::fast::RandomState;

/// One source's services, by group labels and target.
type SourceMade = HashMap<Arc<Labels>, HashMap<Box<str>, MadeService, Fast>, Fast>;

/// A service made of a target.
#[derive(Debug)]
struct MadeService {
    service: Arc<Service>,
    /// The hash of its name (with [`Made::names`]): duplicates are found without reading
    /// 100,000 names scattered over the heap.
    name_hash: u64,
    /// The number of the last composition that saw the target.
    seen: u64,
}

/// Services already made of discovered targets: reused when a refresh brings the same target
/// with the same labels again. Kept in place from one composition to the next and stamped
/// when seen, so an unchanged target costs one hash lookup and no allocation; what was not
/// seen is dropped at the end.
#[derive(Debug, Default)]
struct Made {
    sources: HashMap<Arc<str>, SourceMade, Fast>,
    stamp: u64,
    /// The hasher of names, kept with the hashes it made.
    names: Fast,
}

/// The last composition: what it was made of and what it found. An update that brings the
/// same targets again (a file read again unchanged, the same http_sd answer) composes nothing.
#[derive(Debug, Default)]
struct Composition {
    made: Made,
    /// Each source's groups it was made of, in config order; `None` before the first.
    groups: Option<Vec<Option<Arc<Vec<TargetGroup>>>>>,
    counts: Vec<Counts>,
}

impl Composition {
    /// Whether `groups` are the ones this composition was made of.
    fn made_of(&self, groups: &[Option<Arc<Vec<TargetGroup>>>]) -> bool {
        self.groups.as_ref().is_some_and(|mine| {
            mine.len() == groups.len()
                && mine.iter().zip(groups).all(|(a, b)| match (a, b) {
                    (None, None) => true,
                    (Some(a), Some(b)) => Arc::ptr_eq(a, b) || a == b,
                    _ => false,
                })
        })
    }
}

/// What composing found per source.
#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    targets: usize,
    duplicates: usize,
    rejected: usize,
    dropped_labels: usize,
}

/// `config` with every source's targets added as services: static services first and
/// winning every name, then each source in config order; sharded as the static ones are.
/// Returns the config, the counts per source (in config order), the services made (the cache
/// for next time) and the names newly skipped, to log once.
fn compose(
    config: &Config,
    groups: &[Option<Arc<Vec<TargetGroup>>>],
    mut previous: Made,
) -> (Config, Vec<Counts>, Made, Vec<String>) {
    let shard = config.daemon.shard;
    let stamp = previous.stamp + 1;
    let mut made = Made {
        sources: HashMap::with_capacity_and_hasher(config.discover.len(), Fast::default()),
        stamp,
        names: previous.names.clone(),
    };
    // (source index, name hash, service), in source order.
    let mut discovered: Vec<(usize, u64, Arc<Service>)> = Vec::new();
    let mut counts = Vec::with_capacity(config.discover.len());
    let mut skipped = Vec::new();
    for (i, (d, groups)) in config.discover.iter().zip(groups).enumerate() {
        let mut c = Counts::default();
        let mut source = previous.sources.remove(&d.name).unwrap_or_default();
        for g in groups.iter().flat_map(|g| g.iter()) {
            let (labels, dropped) = clean_labels(&g.labels);
            c.dropped_labels += dropped;
            if !d.admits(&labels) {
                continue;
            }
            // The map's own `Arc` when these labels are known: the services of a group share
            // one copy of its labels.
            let labels = match source.get_key_value(&labels) {
                Some((known, _)) => known.clone(),
                None => Arc::new(labels),
            };
            let group = source.entry(labels.clone()).or_default();
            group.reserve(g.targets.len());
            for t in &g.targets {
                // Seen already in this composition: the same target twice, a duplicate name
                // (counted below).
                let (service, name_hash) = if let Some(m) = group.get_mut(t.as_str()) {
                    m.seen = stamp;
                    (m.service.clone(), m.name_hash)
                } else {
                    let target = Discovered {
                        target: t,
                        labels: &labels,
                    };
                    match d.template.instantiate(&target) {
                        Ok(s) => {
                            let name_hash = made.names.hash_one(s.name.as_str());
                            let service = Arc::new(s);
                            let m = MadeService {
                                service: service.clone(),
                                name_hash,
                                seen: stamp,
                            };
                            group.insert(t.as_str().into(), m);
                            (service, name_hash)
                        }
                        Err(e) => {
                            c.rejected += 1;
                            skipped.push(format!("{}: target {t:?}: {e}", d.name));
                            continue;
                        }
                    }
                };
                discovered.push((i, name_hash, service));
                c.targets += 1;
            }
        }
        // Targets gone from the source go with their services.
        source.retain(|_, group| {
            group.retain(|_, m| m.seen == stamp);
            !group.is_empty()
        });
        made.sources.insert(d.name.clone(), source);
        counts.push(c);
    }
    let duplicate = duplicates(&config.services, &discovered, &made.names);
    let mut kept = 0;
    let mut services = Vec::with_capacity(config.services.len() + discovered.len());
    services.extend(config.services.iter().cloned());
    for ((i, _, s), dup) in discovered.into_iter().zip(duplicate) {
        if dup {
            counts[i].duplicates += 1;
            counts[i].targets -= 1;
            let source = &config.discover[i].name;
            skipped.push(format!("{source}: service {:?} exists already", s.name));
        } else {
            kept += 1;
            if shard.owns(&s.name) {
                services.push(s);
            }
        }
    }
    let fleet_size = config.fleet_size + kept;
    let composed = Config {
        daemon: config.daemon.clone(),
        services,
        fleet_size,
        sources: config.sources.clone(),
        discover: config.discover.clone(),
        maintenance: config.maintenance.clone(),
    };
    (composed, counts, made, skipped)
}

/// Which of `discovered` have a name taken already: by a static service, or by an earlier
/// target. Names are compared only when their hashes are equal.
fn duplicates(
    statics: &[Arc<Service>],
    discovered: &[(usize, u64, Arc<Service>)],
    hasher: &Fast,
) -> Vec<bool> {
    // Entries: (name hash, index: a static service below `statics.len()`, else a discovered
    // one).
    let mut table: hashbrown::HashTable<(u64, usize)> =
        hashbrown::HashTable::with_capacity(statics.len() + discovered.len());
    let name = |i: usize| match i.checked_sub(statics.len()) {
        None => statics[i].name.as_str(),
        Some(d) => discovered[d].2.name.as_str(),
    };
    let mut insert = |hash: u64, i: usize| -> bool {
        match table.entry(hash, |&(h, j)| h == hash && name(j) == name(i), |&(h, _)| h) {
            hashbrown::hash_table::Entry::Occupied(_) => false,
            hashbrown::hash_table::Entry::Vacant(v) => {
                v.insert((hash, i));
                true
            }
        }
    };
    for (i, s) in statics.iter().enumerate() {
        insert(hasher.hash_one(s.name.as_str()), i);
    }
    discovered
        .iter()
        .enumerate()
        .map(|(d, &(_, hash, _))| !insert(hash, statics.len() + d))
        .collect()
}

/// A target group's labels as a service may carry them: Prometheus' meta labels (`__*`) left
/// out, and names that are not valid label names or that healthsweep sets itself dropped
/// (counted, so `/status` can say so).
fn clean_labels(labels: &Labels) -> (Labels, usize) {
    let mut dropped = 0;
    let kept = labels
        .iter()
        .filter(|(k, _)| {
            if k.starts_with("__") {
                return false;
            }
            let ok = crate::config::is_label_name(k) && !crate::labels::is_reserved(k);
            if !ok {
                dropped += 1;
            }
            ok
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    (kept, dropped)
}

/// The one writer of the config the sweeper sees: the config file's services, and every
/// source's.
pub struct Fleet {
    prober: Arc<Prober>,
    configs: watch::Receiver<Loaded>,
    out: watch::Sender<Loaded>,
    status: watch::Sender<Statuses>,
}

impl Fleet {
    /// A fleet reading the config file's versions from `configs`.
    pub fn new(prober: Arc<Prober>, configs: watch::Receiver<Loaded>) -> Fleet {
        let first = configs.borrow().clone();
        let (out, _) = watch::channel(first.clone());
        let (status, _) = watch::channel(Arc::new(initial_statuses(&first.config)));
        Fleet {
            prober,
            configs,
            out,
            status,
        }
    }

    /// The composed config, for the sweeper.
    pub fn configs(&self) -> watch::Receiver<Loaded> {
        self.out.subscribe()
    }

    /// Every source's status, for `/status` and `/metrics`.
    pub fn status(&self) -> watch::Receiver<Statuses> {
        self.status.subscribe()
    }

    /// Runs the sources of the config in force, and composes, until `shutdown`.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let (tx, mut rx) = mpsc::channel::<Update>(64);
        let mut loaded = self.configs.borrow_and_update().clone();
        let mut states: HashMap<Arc<str>, SourceState> = HashMap::new();
        let mut last = Composition::default();
        let mut logged: HashSet<String> = HashSet::new();
        let mut epoch = 0;
        let mut run = self.start(&loaded.config, epoch, &tx, &shutdown);
        self.publish(&loaded, &states, &mut last, &mut logged).await;
        loop {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => return,
                Ok(()) = self.configs.changed() => {
                    run.cancel();
                    epoch += 1;
                    loaded = self.configs.borrow_and_update().clone();
                    states.retain(|name, _| loaded.config.discover.iter().any(|d| &d.name == name));
                    // Templates may have changed: make every service anew.
                    last = Composition::default();
                    run = self.start(&loaded.config, epoch, &tx, &shutdown);
                    self.publish(&loaded, &states, &mut last, &mut logged).await;
                }
                Some(update) = rx.recv() => {
                    if update.epoch != epoch {
                        continue;
                    }
                    apply(&mut states, update);
                    // Updates that came meanwhile go in the same composition.
                    while let Ok(more) = rx.try_recv() {
                        if more.epoch == epoch {
                            apply(&mut states, more);
                        }
                    }
                    self.publish(&loaded, &states, &mut last, &mut logged).await;
                }
            }
        }
    }

    /// Starts a task per source of `config`; all stop when the returned token is cancelled.
    fn start(
        &self,
        config: &Config,
        epoch: u64,
        tx: &mpsc::Sender<Update>,
        shutdown: &CancellationToken,
    ) -> CancellationToken {
        let stop = shutdown.child_token();
        for d in &config.discover {
            let to = Reporter {
                epoch,
                tx: tx.clone(),
            };
            tokio::spawn(
                run_source(d.clone(), self.prober.clone(), to, stop.clone())
                    .instrument(info_span!("discover", source = %d.name)),
            );
        }
        stop
    }

    /// Composes the config with every source's last good targets and publishes it (when its
    /// services changed), and every source's status.
    async fn publish(
        &self,
        loaded: &Loaded,
        states: &HashMap<Arc<str>, SourceState>,
        last: &mut Composition,
        logged: &mut HashSet<String>,
    ) {
        let config = loaded.config.clone();
        if config.discover.is_empty() {
            self.out.send_replace(loaded.clone());
            self.status.send_replace(Arc::new(Vec::new()));
            return;
        }
        let groups: Vec<_> = config
            .discover
            .iter()
            .map(|d| states.get(&d.name).and_then(|s| s.groups.clone()))
            .collect();
        if last.made_of(&groups) {
            // The same targets again: the services stand; only the statuses are news.
            last.groups = Some(groups);
            self.publish_statuses(&config, states, &last.counts);
            return;
        }
        let previous = std::mem::take(&mut last.made);
        // Making 100,000 services is CPU work: off the async workers.
        let (c, g) = (config.clone(), groups.clone());
        let composed = tokio::task::spawn_blocking(move || compose(&c, &g, previous)).await;
        let Ok((composed, counts, next, skipped)) = composed else {
            warn!("composing the discovered services failed; keeping the services as they are");
            return;
        };
        last.made = next;
        last.groups = Some(groups);
        last.counts = counts.clone();
        log_skipped(logged, skipped);
        let unchanged = {
            let current = self.out.borrow();
            current.config.fleet_size == composed.fleet_size
                && current.config.services.len() == composed.services.len()
                && current
                    .config
                    .services
                    .iter()
                    .zip(&composed.services)
                    .all(|(a, b)| Arc::ptr_eq(a, b))
                && current.generation == loaded.generation
        };
        if !unchanged {
            debug!(services = composed.services.len(), "fleet composed");
            self.out.send_replace(Loaded {
                generation: loaded.generation,
                config: Arc::new(composed),
            });
        }
        self.publish_statuses(&config, states, &counts);
    }

    fn publish_statuses(
        &self,
        config: &Config,
        states: &HashMap<Arc<str>, SourceState>,
        counts: &[Counts],
    ) {
        let statuses = config
            .discover
            .iter()
            .zip(counts)
            .map(|(d, c)| status_of(d, states.get(&d.name), *c))
            .collect();
        self.status.send_replace(Arc::new(statuses));
    }
}

/// At most this many targets newly left out are logged one by one per composition; the rest
/// are counted in one line (a source listing 100,000 bad targets must not flood the log).
const SKIPPED_LOGGED: usize = 20;

/// Logs the targets left out now that were not left out before, and remembers only what is
/// left out now: a target that comes back broken is logged again, and a source whose bad
/// targets change every refresh cannot grow the memory of them without bound.
fn log_skipped(logged: &mut HashSet<String>, skipped: Vec<String>) {
    let now: HashSet<String> = skipped.into_iter().collect();
    let mut new = now.iter().filter(|s| !logged.contains(*s));
    for s in new.by_ref().take(SKIPPED_LOGGED) {
        warn!(target_skipped = %s, "discovered target left out");
    }
    let more = new.count();
    if more > 0 {
        warn!(
            more,
            "more discovered targets left out (each source's counts are in /status)"
        );
    }
    *logged = now;
}

fn apply(states: &mut HashMap<Arc<str>, SourceState>, u: Update) {
    let s = states.entry(u.source.clone()).or_default();
    s.reported = true;
    s.last_refresh = Some(u.at);
    if u.error.is_some() {
        s.failures_total += 1;
    } else {
        s.last_success = Some(u.at);
    }
    if let Some(e) = &u.error {
        warn!(source = %u.source, error = %e, kept_last_good = u.groups.is_none(), "discovery refresh failed");
    }
    s.error = u.error;
    if let Some(g) = u.groups {
        s.groups = Some(g);
    }
}

fn status_of(d: &Discover, s: Option<&SourceState>, c: Counts) -> SourceStatus {
    SourceStatus {
        name: d.name.clone(),
        kind: d.spec.kind(),
        targets: c.targets,
        last_refresh: s.and_then(|s| s.last_refresh),
        last_success: s.and_then(|s| s.last_success),
        successful: s.is_some_and(|s| s.reported && s.error.is_none()),
        error: s.and_then(|s| s.error.clone()),
        failures_total: s.map_or(0, |s| s.failures_total),
        duplicates: c.duplicates,
        rejected: c.rejected,
        dropped_labels: c.dropped_labels,
    }
}

fn initial_statuses(config: &Config) -> Vec<SourceStatus> {
    config
        .discover
        .iter()
        .map(|d| status_of(d, None, Counts::default()))
        .collect()
}

/// One composition of `config` with `updates` (one per source, as [`fetch_once`] gives them):
/// what `check` sweeps and `validate --discover` lists.
pub fn compose_once(
    config: &Config,
    updates: &[Update],
) -> (Config, Vec<SourceStatus>, Vec<String>) {
    let mut states = HashMap::new();
    for u in updates {
        apply(&mut states, u.clone());
    }
    let groups: Vec<_> = config
        .discover
        .iter()
        .map(|d| {
            states
                .get(&d.name)
                .and_then(|s: &SourceState| s.groups.clone())
        })
        .collect();
    let (composed, counts, _, skipped) = compose(config, &groups, Made::default());
    let statuses = config
        .discover
        .iter()
        .zip(counts)
        .map(|(d, c)| status_of(d, states.get(&d.name), c))
        .collect();
    (composed, statuses, skipped)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(src: &str) -> Config {
        crate::config::parse(std::path::Path::new("t.toml"), src).expect("valid")
    }

    /// One group as written in a test: its targets, then its labels.
    type Group<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)]);

    fn groups(list: &[Group<'_>]) -> Option<Arc<Vec<TargetGroup>>> {
        Some(Arc::new(
            list.iter()
                .map(|(targets, labels)| TargetGroup {
                    targets: targets.iter().map(|t| t.to_string()).collect(),
                    labels: labels
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                })
                .collect(),
        ))
    }

    const TWO_SOURCES: &str = r#"
        [[service]]
        name = "10.0.0.1:80"
        url = "http://10.0.0.1/health"
        [[discover]]
        name = "a"
        file = { paths = ["a.json"] }
        keep = { env = "prod|staging" }
        [[discover]]
        name = "b"
        file = { paths = ["b.json"] }
        drop = { tier = "batch" }
        [discover.service]
        name = "b-{host}"
        url = "http://{target}/ready"
        group = "{label:team}"
    "#;

    #[test]
    fn static_services_win_names_then_sources_in_order_and_keep_and_drop_filter_groups() {
        let c = config(TWO_SOURCES);
        let a = groups(&[
            (&["10.0.0.1:80", "10.0.0.2:80"], &[("env", "prod")]),
            (&["10.0.0.3:80"], &[("env", "dev")]),
        ]);
        let b = groups(&[
            (&["10.0.0.2:80"], &[("team", "x")]),
            (&["10.0.0.4:80"], &[("team", "y"), ("tier", "batch")]),
            (&["10.0.0.5:80"], &[]),
        ]);
        let (composed, counts, _, skipped) = compose(&c, &[a, b], Made::default());
        let names: Vec<&str> = composed.services.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["10.0.0.1:80", "10.0.0.2:80", "b-10.0.0.2"]);
        let b2 = &composed.services[2];
        assert_eq!(b2.extra.source.as_deref(), Some("b"));
        assert_eq!(b2.extra.group.as_deref(), Some("x"));
        assert_eq!(&*b2.url, "http://10.0.0.2/ready");
        assert_eq!(
            (counts[0].targets, counts[0].duplicates),
            (1, 1),
            "the static one wins"
        );
        assert_eq!(counts[1].rejected, 1, "no team label for {{label:team}}");
        assert_eq!(composed.fleet_size, 3);
        assert_eq!(skipped.len(), 2, "{skipped:?}");
    }

    #[test]
    fn meta_labels_are_dropped_and_invalid_or_reserved_ones_counted() {
        let c = config("[[discover]]\nname = \"a\"\nfile = { paths = [\"a.json\"] }\n");
        let g = groups(&[(
            &["h:1"],
            &[
                ("__meta_x", "1"),
                ("team", "t"),
                ("bad-name", "2"),
                ("target", "3"),
            ],
        )]);
        let (composed, counts, _, _) = compose(&c, &[g], Made::default());
        let s = &composed.services[0];
        assert_eq!(
            s.labels.keys().collect::<Vec<_>>(),
            ["team"],
            "only the valid, unreserved label stays"
        );
        assert_eq!(counts[0].dropped_labels, 2);
    }

    #[test]
    fn an_unchanged_target_keeps_its_service_so_its_state_carries_over() {
        let c = config("[[discover]]\nname = \"a\"\nfile = { paths = [\"a.json\"] }\n");
        let first = groups(&[(&["h:1", "h:2"], &[])]);
        let (one, _, made, _) = compose(&c, &[first], Made::default());
        let second = groups(&[(&["h:2", "h:3"], &[])]);
        let (two, _, _, _) = compose(&c, &[second], made);
        let find = |cfg: &Config, n: &str| cfg.services.iter().find(|s| s.name == n).cloned();
        assert!(Arc::ptr_eq(
            &find(&one, "h:2").expect("h:2"),
            &find(&two, "h:2").expect("h:2")
        ));
        assert!(find(&two, "h:1").is_none(), "gone from the source: gone");
        assert!(find(&two, "h:3").is_some());
    }

    #[test]
    fn refreshes_reuse_services_by_target_and_labels_and_share_each_groups_labels() {
        let c = config("[[discover]]\nname = \"a\"\nfile = { paths = [\"a.json\"] }\n");
        let v1 = groups(&[(&["h:1", "h:2"], &[("env", "prod")]), (&["h:3"], &[])]);
        let (one, _, made, _) = compose(&c, &[v1], Made::default());
        assert!(
            Arc::ptr_eq(&one.services[0].labels, &one.services[1].labels),
            "one copy of a group's labels"
        );
        // h:1 leaves, h:2 changes labels, h:3 stays; then h:1 comes back.
        let v2 = groups(&[(&["h:2"], &[("env", "dev")]), (&["h:3"], &[])]);
        let (two, _, made, _) = compose(&c, &[v2], made);
        let v3 = groups(&[(&["h:3"], &[]), (&["h:1", "h:3"], &[("env", "prod")])]);
        let (three, counts, _, skipped) = compose(&c, &[v3], made);
        let find = |cfg: &Config, n: &str| cfg.services.iter().find(|s| s.name == n).cloned();
        let get = |cfg: &Config, n: &str| find(cfg, n).expect(n);
        assert!(
            !Arc::ptr_eq(&get(&one, "h:2"), &get(&two, "h:2")),
            "new labels, new service"
        );
        assert_eq!(get(&two, "h:2").labels["env"], "dev");
        assert!(Arc::ptr_eq(&get(&one, "h:3"), &get(&three, "h:3")));
        assert!(find(&two, "h:1").is_none());
        assert!(
            !Arc::ptr_eq(&get(&one, "h:1"), &get(&three, "h:1")),
            "made anew on return"
        );
        // h:3 is in two groups with other labels: the first wins, the second is a duplicate.
        assert_eq!(three.services.len(), 2);
        assert_eq!((counts[0].targets, counts[0].duplicates), (2, 1));
        assert_eq!(skipped.len(), 1, "{skipped:?}");
    }

    #[test]
    fn the_same_target_twice_in_one_group_is_one_service_and_a_duplicate() {
        let c = config("[[discover]]\nname = \"a\"\nfile = { paths = [\"a.json\"] }\n");
        let g = groups(&[(&["h:1", "h:1"], &[]), (&["h:1"], &[])]);
        let (composed, counts, made, _) = compose(&c, std::slice::from_ref(&g), Made::default());
        assert_eq!(composed.services.len(), 1);
        assert_eq!(counts[0].duplicates, 2);
        let (again, _, _, _) = compose(&c, &[g], made);
        assert!(Arc::ptr_eq(&composed.services[0], &again.services[0]));
    }

    #[test]
    fn a_composition_knows_the_groups_it_was_made_of_by_content() {
        let a = groups(&[(&["h:1"], &[])]);
        let same = groups(&[(&["h:1"], &[])]);
        let other = groups(&[(&["h:2"], &[])]);
        let last = Composition {
            groups: Some(vec![a.clone(), None]),
            ..Composition::default()
        };
        assert!(last.made_of(&[a, None]));
        assert!(
            last.made_of(&[same.clone(), None]),
            "equal content, another Arc"
        );
        assert!(!last.made_of(&[other, None]));
        assert!(!last.made_of(&[same.clone(), same]));
        assert!(!Composition::default().made_of(&[]), "nothing made yet");
    }

    #[test]
    fn only_what_is_left_out_now_is_remembered() {
        let mut logged = HashSet::new();
        let batch = |r: std::ops::Range<usize>| r.map(|i| format!("t{i}")).collect::<Vec<_>>();
        log_skipped(&mut logged, batch(0..1000));
        assert_eq!(logged.len(), 1000);
        log_skipped(&mut logged, batch(1000..2000));
        assert_eq!(logged.len(), 1000, "churning bad targets do not pile up");
        log_skipped(&mut logged, Vec::new());
        assert!(logged.is_empty());
    }

    #[test]
    fn a_list_longer_than_max_targets_is_refused_and_the_last_good_one_stays() {
        let c = config(
            "[[discover]]\nname = \"a\"\nmax_targets = 2\nfile = { paths = [\"a.json\"] }\n",
        );
        let d = &c.discover[0];
        let ok = Update::new(d, 0, groups(&[(&["h:1", "h:2"], &[])]), None);
        assert!(ok.groups.is_some() && ok.error.is_none());
        let many = Update::new(
            d,
            0,
            groups(&[(&["h:1"], &[]), (&["h:2", "h:3"], &[])]),
            None,
        );
        assert!(many.groups.is_none(), "refused");
        let e = many.error.clone().expect("an error");
        assert!(e.contains("3 targets, more than max_targets (2)"), "{e}");
        let (composed, statuses, _) = compose_once(&c, &[ok, many]);
        assert_eq!(composed.services.len(), 2, "the last good list");
        assert!(!statuses[0].successful);
    }

    #[test]
    fn a_source_that_has_never_answered_adds_nothing_and_says_so() {
        let c = config("[[discover]]\nname = \"a\"\nfile = { paths = [\"a.json\"] }\n");
        let (composed, statuses, _) = compose_once(&c, &[]);
        assert!(composed.services.is_empty());
        assert!(!statuses[0].successful && statuses[0].last_refresh.is_none());
    }

    #[test]
    fn discovered_services_are_sharded_like_static_ones() {
        let src = "[daemon]\nshard = \"1/3\"\n[[discover]]\nname = \"a\"\nfile = { paths = [\"a.json\"] }\n";
        let c = config(src);
        let targets: Vec<String> = (0..300).map(|i| format!("h{i}:80")).collect();
        let refs: Vec<&str> = targets.iter().map(String::as_str).collect();
        let g = groups(&[(&refs, &[])]);
        let (composed, _, _, _) = compose(&c, &[g], Made::default());
        assert_eq!(composed.fleet_size, 300);
        let shard = crate::shard::Shard::new(1, 3).expect("shard");
        assert!(composed.services.iter().all(|s| shard.owns(&s.name)));
        assert!(
            (70..130).contains(&composed.services.len()),
            "{}",
            composed.services.len()
        );
    }
}
