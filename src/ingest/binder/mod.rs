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
mod tests;
