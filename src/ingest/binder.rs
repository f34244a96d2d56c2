//! Which runtime spans are kept: the bound traces, and the bounded parking store where spans of
//! not-yet-bound traces wait out the late-binding window.
//!
//! Memory is bounded twice: parked spans by bytes and by age (the window), bound traces by count.
//! The byte bound counts what a parked span keeps alive, shared parts once. When it is reached,
//! the source holding the most bytes gives up its oldest span, so a sender flooding junk evicts
//! its own spans before anybody else's. Every drop is counted.
//!
//! Every operation touches only the spans it parks, releases or drops, each through a handful of
//! O(log n) index updates: a span carries its linked traces, so leaving cleans up after itself
//! and nothing is ever scanned for dead references. This runs under one mutex on the ingest
//! path, so total work stays linear in spans + links whatever the input looks like.

use crate::core::evidence::SentBy;
use std::collections::hash_map::{DefaultHasher, Entry};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub type TraceId = [u8; 16];

/// What a parked item costs in memory, as the byte bound counts it.
pub trait Parkable {
    /// Bytes the item holds on its own while parked (its bookkeeping included).
    fn weight(&self) -> usize;

    /// A part the item shares with other items (typically behind an `Arc`): its identity and its
    /// bytes. It is counted once while any parked item holds it. The identity must not be reused
    /// by another part while this one is alive; an `Arc`'s address qualifies, since every parked
    /// holder keeps it alive.
    fn shared(&self) -> Option<(usize, usize)> {
        None
    }
}

/// Who parked a span: making room is fair between sources.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SourceId(u64);

impl SourceId {
    /// The sender's ingest token (or, for imports without one, its name).
    pub fn of(sender: &SentBy) -> SourceId {
        // Token ids are issued by changetrail, so a sender cannot pick one that collides with
        // another's; a collision would only pool two senders' shares.
        let mut h = DefaultHasher::new();
        match &sender.token_id {
            Some(t) => (0u8, t).hash(&mut h),
            None => (1u8, &sender.name).hash(&mut h),
        }
        SourceId(h.finish())
    }
}

/// What each distinct link of a parked span costs the binder itself: the trace id kept with the
/// span and its entry in the linking index. Counted with the span, so links cannot grow the
/// binder past its bound.
const LINK_BYTES: usize = 64;

/// A span waiting for its trace to be bound; `T` is whatever the ingest path needs to store it
/// later.
struct Parked<T> {
    item: T,
    trace: TraceId,
    source: SourceId,
    at: Instant,
    /// Its own bytes: the item's weight and its links.
    bytes: u64,
    /// Identity of the shared part it holds.
    shared: Option<usize>,
    /// Distinct traces it links to, so leaving removes exactly its entries in `linking`.
    links: Box<[TraceId]>,
}

struct Bound {
    subject: String,
}

/// A shared part held by parked spans.
struct SharedPart {
    holders: u64,
    bytes: u64,
}

/// What one source holds in parking.
#[derive(Clone, Copy)]
struct Share {
    spans: u64,
    /// Its spans' own bytes plus each shared part they hold, once.
    bytes: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BinderStats {
    pub parked_spans: u64,
    pub parked_bytes: u64,
    pub bound_traces: u64,
    pub dropped_expired: u64,
    pub dropped_overflow: u64,
}

struct State<T> {
    bound: HashMap<TraceId, Bound>,
    bound_order: VecDeque<(TraceId, Instant)>,
    /// Parked spans by parked id. Ids grow with (clamped) time, so the first is the oldest.
    parked: BTreeMap<u64, Parked<T>>,
    /// (own trace, parked id) of every parked span.
    by_trace: BTreeSet<(TraceId, u64)>,
    /// (linked trace, parked id) for every distinct link of every parked span.
    linking: BTreeSet<(TraceId, u64)>,
    /// (source, parked id): a source's oldest span is the first of its range.
    by_source: BTreeSet<(SourceId, u64)>,
    shares: HashMap<SourceId, Share>,
    /// (bytes, source) of every entry in `shares`: the largest holder is the last.
    by_size: BTreeSet<(u64, SourceId)>,
    shared: HashMap<usize, SharedPart>,
    /// Holders of a shared part within one source, so each source is charged for it once.
    shared_by_source: HashMap<(SourceId, usize), u64>,
    next_id: u64,
    /// The latest time seen; earlier ones (a request that waited for the lock) are raised to it,
    /// so parked ids are in time order and expiry only ever looks at the first.
    latest: Option<Instant>,
    /// Index operations done (each O(log n)): lets tests check the work is linear.
    work: u64,
    stats: BinderStats,
}

pub struct Binder<T> {
    state: Mutex<State<T>>,
    window: Duration,
    max_parked_bytes: usize,
    max_bound_traces: usize,
}

impl<T> Binder<T> {
    pub fn new(window: Duration, max_parked_bytes: usize, max_bound_traces: usize) -> Binder<T> {
        Binder {
            state: Mutex::new(State {
                bound: HashMap::new(),
                bound_order: VecDeque::new(),
                parked: BTreeMap::new(),
                by_trace: BTreeSet::new(),
                linking: BTreeSet::new(),
                by_source: BTreeSet::new(),
                shares: HashMap::new(),
                by_size: BTreeSet::new(),
                shared: HashMap::new(),
                shared_by_source: HashMap::new(),
                next_id: 0,
                latest: None,
                work: 0,
                stats: BinderStats::default(),
            }),
            window,
            max_parked_bytes,
            max_bound_traces: max_bound_traces.max(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State<T>> {
        // A panic while holding the lock leaves consistent-enough maps; keep serving.
        match self.state.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    pub fn stats(&self) -> BinderStats {
        self.lock().stats
    }

    #[cfg(test)]
    fn work(&self) -> u64 {
        self.lock().work
    }

    /// Runs `f` with exclusive access: one request's classification sees one consistent state.
    pub fn with<R>(&self, now: Instant, f: impl FnOnce(&mut BinderView<'_, T>) -> R) -> R {
        let mut s = self.lock();
        let now = match s.latest {
            Some(latest) if latest > now => latest,
            _ => now,
        };
        s.latest = Some(now);
        s.expire(now, self.window);
        let mut view = BinderView {
            state: &mut s,
            now,
            max_parked_bytes: self.max_parked_bytes as u64,
            max_bound_traces: self.max_bound_traces,
        };
        f(&mut view)
    }
}

impl<T> State<T> {
    fn expire(&mut self, now: Instant, window: Duration) {
        while let Some((&id, p)) = self.parked.first_key_value() {
            if now.duration_since(p.at) < window {
                break;
            }
            self.remove(id);
            self.stats.dropped_expired += 1;
        }
        while let Some(&(trace, at)) = self.bound_order.front() {
            if now.duration_since(at) < window {
                break;
            }
            self.bound_order.pop_front();
            self.bound.remove(&trace);
        }
        self.stats.bound_traces = self.bound.len() as u64;
    }

    fn add(&mut self, id: u64, p: Parked<T>, part: Option<(usize, usize)>) {
        self.work += 1 + p.links.len() as u64;
        let (mut total, mut mine) = (p.bytes, p.bytes);
        if let Some((key, bytes)) = part {
            let part = self.shared.entry(key).or_insert(SharedPart {
                holders: 0,
                bytes: bytes as u64,
            });
            if part.holders == 0 {
                total += part.bytes;
            }
            part.holders += 1;
            let held = self.shared_by_source.entry((p.source, key)).or_insert(0);
            if *held == 0 {
                mine += part.bytes;
            }
            *held += 1;
        }
        self.by_trace.insert((p.trace, id));
        self.by_source.insert((p.source, id));
        for l in &p.links {
            self.linking.insert((*l, id));
        }
        self.set_share(p.source, |s| Share {
            spans: s.spans + 1,
            bytes: s.bytes + mine,
        });
        self.stats.parked_spans += 1;
        self.stats.parked_bytes += total;
        self.parked.insert(id, p);
    }

    /// Removes one parked span with all its index entries; None if it is gone already.
    fn remove(&mut self, id: u64) -> Option<Parked<T>> {
        let p = self.parked.remove(&id)?;
        self.work += 1 + p.links.len() as u64;
        self.by_trace.remove(&(p.trace, id));
        self.by_source.remove(&(p.source, id));
        for l in &p.links {
            self.linking.remove(&(*l, id));
        }
        let (mut total, mut mine) = (p.bytes, p.bytes);
        if let Some(key) = p.shared
            && let Entry::Occupied(mut part) = self.shared.entry(key)
        {
            let bytes = part.get().bytes;
            part.get_mut().holders -= 1;
            if part.get().holders == 0 {
                part.remove();
                total += bytes;
            }
            if let Entry::Occupied(mut held) = self.shared_by_source.entry((p.source, key)) {
                *held.get_mut() -= 1;
                if *held.get() == 0 {
                    held.remove();
                    mine += bytes;
                }
            }
        }
        self.set_share(p.source, |s| Share {
            spans: s.spans - 1,
            bytes: s.bytes - mine,
        });
        self.stats.parked_spans -= 1;
        self.stats.parked_bytes -= total;
        Some(p)
    }

    /// Updates a source's share and its place in `by_size`; a source with no spans is forgotten.
    fn set_share(&mut self, source: SourceId, f: impl FnOnce(Share) -> Share) {
        let old = self
            .shares
            .get(&source)
            .copied()
            .unwrap_or(Share { spans: 0, bytes: 0 });
        if old.spans > 0 {
            self.by_size.remove(&(old.bytes, source));
        }
        let new = f(old);
        if new.spans > 0 {
            self.by_size.insert((new.bytes, source));
            self.shares.insert(source, new);
        } else {
            self.shares.remove(&source);
        }
    }

    /// Drops the oldest span of the source holding the most bytes.
    fn evict(&mut self) -> bool {
        self.work += 1;
        let Some(&(_, source)) = self.by_size.last() else {
            return false;
        };
        let oldest = self
            .by_source
            .range((source, 0)..=(source, u64::MAX))
            .next()
            .map(|&(_, id)| id);
        match oldest.and_then(|id| self.remove(id)) {
            Some(_) => {
                self.stats.dropped_overflow += 1;
                true
            }
            None => false,
        }
    }

    /// Takes the spans whose (trace, id) entries in `index` fall under `trace`, oldest first.
    fn take(
        &mut self,
        index: fn(&Self) -> &BTreeSet<(TraceId, u64)>,
        trace: &TraceId,
    ) -> Vec<Parked<T>> {
        self.work += 1;
        let ids: Vec<u64> = index(self)
            .range((*trace, 0)..=(*trace, u64::MAX))
            .map(|&(_, id)| id)
            .collect();
        ids.into_iter().filter_map(|id| self.remove(id)).collect()
    }
}

/// Access to the binder during one request.
pub struct BinderView<'a, T> {
    state: &'a mut State<T>,
    now: Instant,
    max_parked_bytes: u64,
    max_bound_traces: usize,
}

impl<T> BinderView<'_, T> {
    /// The subject a bound trace was bound with, if it is bound.
    pub fn bound(&self, trace: &TraceId) -> Option<&str> {
        self.state.bound.get(trace).map(|b| b.subject.as_str())
    }

    /// Marks a trace bound (keeping the first subject it was bound with unless that was empty)
    /// and hands back the spans that were parked waiting for it.
    pub fn bind(&mut self, trace: TraceId, subject: &str) -> Vec<T> {
        let s = &mut *self.state;
        match s.bound.get_mut(&trace) {
            Some(b) if b.subject.is_empty() && !subject.is_empty() => {
                b.subject = subject.to_owned()
            }
            Some(_) => {}
            None => {
                if s.bound.len() >= self.max_bound_traces
                    && let Some((old, _)) = s.bound_order.pop_front()
                {
                    s.bound.remove(&old);
                }
                s.bound.insert(
                    trace,
                    Bound {
                        subject: subject.to_owned(),
                    },
                );
                s.bound_order.push_back((trace, self.now));
            }
        }
        s.stats.bound_traces = s.bound.len() as u64;
        self.release(&trace)
    }

    /// Takes the parked spans that link to `trace`: (their own trace, the span), oldest first.
    /// The caller binds their traces in turn (rule: link).
    pub fn release_linking(&mut self, trace: &TraceId) -> Vec<(TraceId, T)> {
        let s = &mut *self.state;
        s.take(|s| &s.linking, trace)
            .into_iter()
            .map(|p| (p.trace, p.item))
            .collect()
    }

    /// Takes every parked span of `trace`, oldest first.
    pub fn release(&mut self, trace: &TraceId) -> Vec<T> {
        let s = &mut *self.state;
        s.take(|s| &s.by_trace, trace)
            .into_iter()
            .map(|p| p.item)
            .collect()
    }
}

impl<T: Parkable> BinderView<'_, T> {
    /// Parks a span that links to other traces: it is released when its own trace binds, or when
    /// one of the linked traces does.
    pub fn park_linking(&mut self, trace: TraceId, links: &[TraceId], item: T, source: SourceId) {
        let mut links = links.to_vec();
        links.sort_unstable();
        links.dedup();
        self.state.work += links.len() as u64;
        self.insert(trace, links.into_boxed_slice(), item, source);
    }

    /// Parks a span. When the byte limit is reached, the source holding the most bytes makes
    /// room, its oldest spans first.
    pub fn park(&mut self, trace: TraceId, item: T, source: SourceId) {
        self.insert(trace, Box::default(), item, source);
    }

    fn insert(&mut self, trace: TraceId, links: Box<[TraceId]>, item: T, source: SourceId) {
        let s = &mut *self.state;
        let bytes = (item.weight() + links.len() * LINK_BYTES) as u64;
        let part = item.shared();
        let new_part = match part {
            Some((key, part_bytes)) if !s.shared.contains_key(&key) => part_bytes as u64,
            _ => 0,
        };
        // A span that could never fit is refused before it pushes anybody out.
        if bytes + new_part > self.max_parked_bytes {
            s.stats.dropped_overflow += 1;
            return;
        }
        let id = s.next_id;
        s.next_id += 1;
        let p = Parked {
            item,
            trace,
            source,
            at: self.now,
            bytes,
            shared: part.map(|(key, _)| key),
            links,
        };
        s.add(id, p, part);
        // The newcomer counts towards its own source first: a flood evicts itself.
        while s.stats.parked_bytes > self.max_parked_bytes && s.evict() {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// A parked item for the tests: a number, its weight, and maybe a shared part whose bytes
    /// are the number it holds.
    #[derive(Debug, Clone)]
    struct Item {
        n: u32,
        bytes: usize,
        shared: Option<Arc<usize>>,
    }

    impl Parkable for Item {
        fn weight(&self) -> usize {
            self.bytes
        }
        fn shared(&self) -> Option<(usize, usize)> {
            self.shared.as_ref().map(|a| (Arc::as_ptr(a) as usize, **a))
        }
    }

    fn item(n: u32, bytes: usize) -> Item {
        Item {
            n,
            bytes,
            shared: None,
        }
    }

    fn ns(items: Vec<Item>) -> Vec<u32> {
        items.into_iter().map(|i| i.n).collect()
    }

    const A: SourceId = SourceId(1);
    const B: SourceId = SourceId(2);

    #[test]
    fn parked_spans_are_released_when_their_trace_binds() {
        let b: Binder<Item> = Binder::new(Duration::from_secs(60), 1000, 10);
        let t0 = Instant::now();
        b.with(t0, |v| {
            v.park([1; 16], item(10, 100), A);
            v.park([1; 16], item(11, 100), A);
            v.park([2; 16], item(20, 100), A);
        });
        assert_eq!(b.stats().parked_spans, 3);
        let released = b.with(t0, |v| v.bind([1; 16], "CHG-1"));
        assert_eq!(ns(released), vec![10, 11]);
        assert_eq!(b.stats().parked_spans, 1);
        assert_eq!(b.stats().parked_bytes, 100);
        b.with(t0, |v| assert_eq!(v.bound(&[1; 16]), Some("CHG-1")));
    }

    #[test]
    fn parking_is_bounded_by_bytes_and_by_age() {
        let b: Binder<Item> = Binder::new(Duration::from_secs(60), 250, 10);
        let t0 = Instant::now();
        b.with(t0, |v| {
            for i in 0..5 {
                v.park([i as u8; 16], item(i, 100), A);
            }
        });
        let s = b.stats();
        assert_eq!(
            (s.parked_spans, s.parked_bytes, s.dropped_overflow),
            (2, 200, 3)
        );
        // The survivors are the newest two.
        assert_eq!(ns(b.with(t0, |v| v.release(&[4; 16]))), vec![4]);
        b.with(t0 + Duration::from_secs(61), |_| {});
        let s = b.stats();
        assert_eq!(
            (s.parked_spans, s.parked_bytes, s.dropped_expired),
            (0, 0, 1)
        );
    }

    #[test]
    fn a_span_that_can_never_fit_pushes_nobody_out() {
        let b: Binder<Item> = Binder::new(Duration::from_secs(60), 250, 10);
        let t0 = Instant::now();
        b.with(t0, |v| {
            v.park([1; 16], item(1, 100), A);
            v.park([2; 16], item(2, 300), A);
        });
        let s = b.stats();
        assert_eq!(
            (s.parked_spans, s.parked_bytes, s.dropped_overflow),
            (1, 100, 1)
        );
    }

    #[test]
    fn spans_linking_to_a_trace_are_released_when_it_binds() {
        let b: Binder<Item> = Binder::new(Duration::from_secs(60), 1000, 10);
        let t0 = Instant::now();
        b.with(t0, |v| {
            v.park_linking([5; 16], &[[1; 16], [1; 16], [2; 16]], item(50, 100), A);
            v.park([1; 16], item(10, 100), A);
        });
        // The repeated link is kept once.
        assert_eq!(b.stats().parked_bytes, 200 + 2 * LINK_BYTES as u64);
        let (linking, own) = b.with(t0, |v| {
            (v.release_linking(&[1; 16]), v.bind([1; 16], "CHG"))
        });
        let linking: Vec<_> = linking.into_iter().map(|(t, i)| (t, i.n)).collect();
        assert_eq!(linking, vec![([5; 16], 50)]);
        assert_eq!(ns(own), vec![10]);
        assert_eq!((b.stats().parked_spans, b.stats().parked_bytes), (0, 0));
        assert!(b.with(t0, |v| v.release_linking(&[1; 16])).is_empty());
        // Its other link went with it.
        assert!(b.with(t0, |v| v.release_linking(&[2; 16])).is_empty());
    }

    #[test]
    fn bound_traces_expire_and_are_capped() {
        let b: Binder<Item> = Binder::new(Duration::from_secs(60), 1000, 2);
        let t0 = Instant::now();
        b.with(t0, |v| {
            v.bind([1; 16], "a");
            v.bind([2; 16], "b");
            v.bind([3; 16], "c");
            assert_eq!(v.bound(&[1; 16]), None, "the oldest made room");
            assert_eq!(v.bound(&[3; 16]), Some("c"));
        });
        b.with(t0 + Duration::from_secs(61), |v| {
            assert_eq!(v.bound(&[3; 16]), None)
        });
    }

    #[test]
    fn a_source_flooding_junk_evicts_its_own_spans() {
        let b: Binder<Item> = Binder::new(Duration::from_secs(60), 10_000, 10);
        let t0 = Instant::now();
        b.with(t0, |v| {
            for i in 0..10u8 {
                v.park([100 + i; 16], item(u32::from(i), 100), B);
            }
        });
        b.with(t0 + Duration::from_secs(1), |v| {
            for i in 0..1000u32 {
                let mut t = [0; 16];
                t[..4].copy_from_slice(&i.to_be_bytes());
                v.park(t, item(1000 + i, 100), A);
            }
        });
        let s = b.stats();
        assert_eq!(
            (s.parked_spans, s.parked_bytes, s.dropped_overflow),
            (100, 10_000, 910)
        );
        for i in 0..10u8 {
            let released = b.with(t0 + Duration::from_secs(2), |v| {
                v.bind([100 + i; 16], "CHG")
            });
            assert_eq!(ns(released), vec![u32::from(i)], "B's span {i} survived");
        }
        // A kept its newest spans.
        let newest = b.with(t0 + Duration::from_secs(2), |v| {
            v.release(&{
                let mut t = [0; 16];
                t[..4].copy_from_slice(&999u32.to_be_bytes());
                t
            })
        });
        assert_eq!(ns(newest), vec![1999]);
    }

    #[test]
    fn a_shared_part_is_counted_once_while_held() {
        let b: Binder<Item> = Binder::new(Duration::from_secs(60), 1 << 20, 10);
        let t0 = Instant::now();
        let origin = Arc::new(5000usize);
        b.with(t0, |v| {
            for i in 0..1000u32 {
                let shared = Some(origin.clone());
                let it = Item {
                    n: i,
                    bytes: 100,
                    shared,
                };
                v.park([(i % 2) as u8; 16], it, A);
            }
        });
        assert_eq!(b.stats().parked_bytes, 100_000 + 5000);
        let half = b.with(t0, |v| v.bind([0; 16], "CHG"));
        assert_eq!(half.len(), 500);
        drop(half);
        assert_eq!(b.stats().parked_bytes, 50_000 + 5000);
        b.with(t0 + Duration::from_secs(61), |_| {});
        let s = b.stats();
        assert_eq!(
            (s.parked_spans, s.parked_bytes, s.dropped_expired),
            (0, 0, 500)
        );
        assert_eq!(Arc::strong_count(&origin), 1, "nothing parked holds it");
    }

    #[test]
    fn a_shared_part_counts_towards_the_bound() {
        // 10 spans of 100 bytes sharing 600 bytes fill the bound of 1,600 exactly.
        let b: Binder<Item> = Binder::new(Duration::from_secs(60), 1600, 10);
        let t0 = Instant::now();
        let origin = Arc::new(600usize);
        b.with(t0, |v| {
            for i in 0..11u32 {
                let shared = Some(origin.clone());
                v.park(
                    [1; 16],
                    Item {
                        n: i,
                        bytes: 100,
                        shared,
                    },
                    A,
                );
            }
        });
        let s = b.stats();
        assert_eq!(
            (s.parked_spans, s.parked_bytes, s.dropped_overflow),
            (10, 1600, 1)
        );
    }

    /// Parks `n` spans each linking to 128 traces (shared by groups of spans), releases those
    /// linking to every 256th of these traces and lets the rest expire. Returns the work done and
    /// spans + links.
    fn many_links(n: u32) -> (u64, u64) {
        const LINKS: u32 = 128;
        let b: Binder<Item> = Binder::new(Duration::from_secs(60), usize::MAX, 10);
        let t0 = Instant::now();
        let trace = |kind: u8, i: u32| {
            let mut t = [kind; 16];
            t[..4].copy_from_slice(&i.to_be_bytes());
            t
        };
        let linked = n / 2;
        b.with(t0, |v| {
            for i in 0..n {
                let links: Vec<TraceId> = (0..LINKS)
                    .map(|j| trace(2, (i / 16 + j * 7) % linked))
                    .collect();
                v.park_linking(trace(1, i), &links, item(i, 100), A);
            }
        });
        assert_eq!(b.stats().parked_spans, u64::from(n));
        let mut released = 0;
        b.with(t0, |v| {
            for k in (0..linked).step_by(256) {
                released += v.release_linking(&trace(2, k)).len();
            }
        });
        assert!(released > 0, "some spans are released through their links");
        b.with(t0 + Duration::from_secs(61), |_| {});
        let s = b.stats();
        assert_eq!((s.parked_spans, s.parked_bytes), (0, 0));
        assert_eq!(s.dropped_expired, u64::from(n) - released as u64);
        (b.work(), u64::from(n) * u64::from(1 + LINKS))
    }

    #[test]
    fn work_is_linear_in_spans_and_links() {
        let (work, size) = many_links(2000);
        assert!(work <= 4 * size, "{work} index operations for {size}");
        let (work2, size2) = many_links(4000);
        assert!(work2 <= 4 * size2, "{work2} index operations for {size2}");
        let ratio = work2 as f64 / work as f64;
        assert!(ratio < 2.5, "twice the input, {ratio} times the work");
    }

    #[test]
    fn source_ids_follow_the_token() {
        let by = |token: Option<&str>, name: &str| {
            SourceId::of(&SentBy {
                token_id: token.map(str::to_owned),
                name: name.to_owned(),
            })
        };
        assert_eq!(by(Some("t1"), "a"), by(Some("t1"), "b"));
        assert_ne!(by(Some("t1"), "a"), by(Some("t2"), "a"));
        assert_ne!(by(None, "t1"), by(Some("t1"), "t1"));
    }

    mod model {
        //! The binder against a plain list that scans everything on every step.
        use super::*;
        use proptest::prelude::*;

        const WINDOW: u64 = 60;
        const MAX_BYTES: u64 = 600;
        const MAX_BOUND: usize = 4;

        #[derive(Debug, Clone)]
        enum Op {
            Park {
                trace: u8,
                source: u8,
                links: Vec<u8>,
                bytes: usize,
                shared: Option<usize>,
            },
            Bind(u8),
            ReleaseLinking(u8),
            Wait(u64),
        }

        fn park() -> impl Strategy<Value = Op> {
            let links = prop::collection::vec(0..8u8, 0..4);
            let shared = prop::option::of(0..2usize);
            (0..8u8, 0..3u8, links, 0..200usize, shared).prop_map(
                |(trace, source, links, bytes, shared)| Op::Park {
                    trace,
                    source,
                    links,
                    bytes,
                    shared,
                },
            )
        }

        fn op() -> impl Strategy<Value = Op> {
            prop_oneof![
                6 => park(),
                2 => (0..8u8).prop_map(Op::Bind),
                1 => (0..8u8).prop_map(Op::ReleaseLinking),
                1 => (0..40u64).prop_map(Op::Wait),
            ]
        }

        struct Span {
            n: u32,
            trace: u8,
            source: u8,
            links: Vec<u8>,
            at: u64,
            bytes: u64,
            shared: Option<usize>,
        }

        #[derive(Default)]
        struct Model {
            spans: Vec<Span>,
            bound: Vec<(u8, u64)>,
            stats: BinderStats,
        }

        impl Model {
            fn part_bytes(parts: &[Arc<usize>], spans: &[&Span]) -> u64 {
                let mut held: Vec<usize> = spans.iter().filter_map(|s| s.shared).collect();
                held.sort_unstable();
                held.dedup();
                held.iter().map(|k| *parts[*k] as u64).sum()
            }

            fn bytes(&self, parts: &[Arc<usize>], source: Option<u8>) -> u64 {
                let spans: Vec<&Span> = self
                    .spans
                    .iter()
                    .filter(|s| source.is_none_or(|src| s.source == src))
                    .collect();
                spans.iter().map(|s| s.bytes).sum::<u64>() + Model::part_bytes(parts, &spans)
            }

            fn expire(&mut self, now: u64) {
                let before = self.spans.len();
                self.spans.retain(|s| now - s.at < WINDOW);
                self.stats.dropped_expired += (before - self.spans.len()) as u64;
                self.bound.retain(|(_, at)| now - at < WINDOW);
            }

            fn park(&mut self, parts: &[Arc<usize>], span: Span) {
                let held = self
                    .spans
                    .iter()
                    .any(|s| s.shared.is_some() && s.shared == span.shared);
                let new_part = match span.shared {
                    Some(k) if !held => *parts[k] as u64,
                    _ => 0,
                };
                if span.bytes + new_part > MAX_BYTES {
                    self.stats.dropped_overflow += 1;
                    return;
                }
                self.spans.push(span);
                while self.bytes(parts, None) > MAX_BYTES {
                    let largest = (0..3u8)
                        .filter(|src| self.spans.iter().any(|s| s.source == *src))
                        .max_by_key(|src| (self.bytes(parts, Some(*src)), *src));
                    let Some(src) = largest else { break };
                    let Some(pos) = self.spans.iter().position(|s| s.source == src) else {
                        break;
                    };
                    self.spans.remove(pos);
                    self.stats.dropped_overflow += 1;
                }
            }

            fn take(&mut self, f: impl Fn(&Span) -> bool) -> Vec<(u8, u32)> {
                let (out, keep): (Vec<Span>, Vec<Span>) = std::mem::take(&mut self.spans)
                    .into_iter()
                    .partition(|s| f(s));
                self.spans = keep;
                out.into_iter().map(|s| (s.trace, s.n)).collect()
            }

            fn bind(&mut self, trace: u8, now: u64) -> Vec<u32> {
                if !self.bound.iter().any(|(t, _)| *t == trace) {
                    if self.bound.len() >= MAX_BOUND {
                        self.bound.remove(0);
                    }
                    self.bound.push((trace, now));
                }
                self.take(|s| s.trace == trace)
                    .into_iter()
                    .map(|(_, n)| n)
                    .collect()
            }
        }

        fn tid(t: u8) -> TraceId {
            [t; 16]
        }

        /// Runs `ops` on a binder and on the model, comparing what they release and their stats
        /// after every step.
        fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
            let parts = [Arc::new(150usize), Arc::new(400usize)];
            let b: Binder<Item> =
                Binder::new(Duration::from_secs(WINDOW), MAX_BYTES as usize, MAX_BOUND);
            let t0 = Instant::now();
            let mut m = Model::default();
            let mut now = 0u64;
            for (n, op) in ops.into_iter().enumerate() {
                let n = n as u32;
                let at = t0 + Duration::from_secs(now);
                m.expire(now);
                match op {
                    Op::Park {
                        trace,
                        source,
                        links,
                        bytes,
                        shared,
                    } => {
                        let it = Item {
                            n,
                            bytes,
                            shared: shared.map(|k| parts[k].clone()),
                        };
                        let linked: Vec<TraceId> = links.iter().map(|l| tid(*l)).collect();
                        let src = SourceId(u64::from(source));
                        b.with(at, |v| v.park_linking(tid(trace), &linked, it, src));
                        let mut links = links;
                        links.sort_unstable();
                        links.dedup();
                        let bytes = (bytes + links.len() * LINK_BYTES) as u64;
                        let span = Span {
                            n,
                            trace,
                            source,
                            links,
                            at: now,
                            bytes,
                            shared,
                        };
                        m.park(&parts, span);
                    }
                    Op::Bind(t) => {
                        let got = b.with(at, |v| v.bind(tid(t), "CHG"));
                        prop_assert_eq!(ns(got), m.bind(t, now));
                    }
                    Op::ReleaseLinking(t) => {
                        let got: Vec<(u8, u32)> = b
                            .with(at, |v| v.release_linking(&tid(t)))
                            .into_iter()
                            .map(|(own, i)| (own[0], i.n))
                            .collect();
                        prop_assert_eq!(got, m.take(|s| s.links.contains(&t)));
                    }
                    Op::Wait(secs) => {
                        now += secs;
                        b.with(t0 + Duration::from_secs(now), |_| {});
                        m.expire(now);
                    }
                }
                m.stats.parked_spans = m.spans.len() as u64;
                m.stats.parked_bytes = m.bytes(&parts, None);
                m.stats.bound_traces = m.bound.len() as u64;
                prop_assert_eq!(b.stats(), m.stats);
                let later = t0 + Duration::from_secs(now);
                let bound: Vec<bool> = b.with(later, |v| {
                    (0..8).map(|t| v.bound(&tid(t)).is_some()).collect()
                });
                let expected: Vec<bool> = (0..8)
                    .map(|t| m.bound.iter().any(|(b, _)| *b == t))
                    .collect();
                prop_assert_eq!(bound, expected);
            }
            // Everything leaves: the counts return to zero and no shared part is held.
            b.with(t0 + Duration::from_secs(now + WINDOW), |_| {});
            let s = b.stats();
            prop_assert_eq!((s.parked_spans, s.parked_bytes), (0, 0));
            prop_assert!(parts.iter().all(|p| Arc::strong_count(p) == 1));
            Ok(())
        }

        proptest! {
            #[test]
            fn binder_matches_the_model(ops in prop::collection::vec(op(), 1..120)) {
                run(ops)?;
            }
        }
    }
}
