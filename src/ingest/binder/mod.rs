//! Which runtime spans are kept: the bound traces, and the bounded parking store where spans of
//! not-yet-bound traces wait out the late-binding window.
//!
//! Memory is bounded twice: parked spans by bytes and by age (the window), bound traces by count.
//! The byte bound counts what a parked span keeps alive, shared parts once. When it is reached,
//! the source holding the most bytes gives up its oldest span, so a sender flooding junk evicts
//! its own spans before anybody else's. Every drop is counted.
//!
//! Every operation touches only the spans it parks, releases or drops, each through a handful of
//! O(1) list and hash updates: a span carries its linked traces, so leaving cleans up after itself
//! and nothing is ever scanned for dead references. This runs under one mutex on the ingest
//! path, so total work stays linear in spans + links whatever the input looks like.

use crate::core::evidence::SentBy;
use std::collections::hash_map::{DefaultHasher, Entry};
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::mem::size_of;
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

/// What each distinct link of a parked span costs the binder itself: the trace id and node
/// index kept with the span; its node and a free-list place (twice: the node slab's capacity
/// stays below twice the nodes in use, or it is rebuilt); an entry in the linking table
/// (`TABLE_SLACK` times). Counted with the span, so links cannot grow the binder past its bound.
const LINK_BYTES: usize = size_of::<(TraceId, usize)>()
    + 2 * (size_of::<LinkNode>() + size_of::<usize>())
    + TABLE_SLACK * (size_of::<(TraceId, List)>() + 1);

/// How many entries' room a hash table may hold per entry in use: a table grows to about 2.3
/// times its entries (7/8 load, doubling), and keeps its peak size until the slab is rebuilt,
/// which happens once at most half the slots are in use.
const TABLE_SLACK: usize = 5;

/// What the binder itself holds for one parked item, beyond the item's own heap: its slot and
/// a free-list place (twice: the slab's capacity stays below twice the slots in use, or it is
/// rebuilt) and its entry in the by-trace table. A `Parkable::weight` counts this.
pub const fn slot_bytes<T>() -> usize {
    2 * (size_of::<Slot<T>>() + size_of::<usize>())
        + TABLE_SLACK * (size_of::<(TraceId, List)>() + 1)
}

/// What the binder holds for a shared part besides its bytes: its entries in the parts table
/// and in the per-source table. A `Parkable::shared` counts this in the part's bytes.
pub const SHARED_BYTES: usize =
    TABLE_SLACK * (size_of::<(usize, SharedPart)>() + size_of::<((SourceId, usize), u64)>() + 2);

/// The slab is rebuilt once it has room for at least this many slots (or link nodes) and at
/// most half of that room is in use, which bounds the free room and gives memory back after a
/// flood.
/// (Small in tests, so the model test rebuilds it often.)
#[cfg(not(test))]
const COMPACT_MIN: usize = 1024;
#[cfg(test)]
const COMPACT_MIN: usize = 2;

/// "No node": the end of a list.
const NIL: usize = usize::MAX;

/// A node's place in one doubly linked list.
#[derive(Debug, Clone, Copy)]
struct Link {
    prev: usize,
    next: usize,
}

const UNLINKED: Link = Link {
    prev: NIL,
    next: NIL,
};

/// The ends of one list; nodes are appended, so the head is the oldest.
#[derive(Debug, Clone, Copy)]
struct List {
    head: usize,
    tail: usize,
}

const EMPTY: List = List {
    head: NIL,
    tail: NIL,
};

/// Appends node `i` of `nodes` to `list`, through the link `at` selects.
fn push_back<N>(nodes: &mut [N], list: &mut List, i: usize, at: fn(&mut N) -> &mut Link) {
    *at(&mut nodes[i]) = Link {
        prev: list.tail,
        next: NIL,
    };
    match list.tail {
        NIL => list.head = i,
        tail => at(&mut nodes[tail]).next = i,
    }
    list.tail = i;
}

/// Takes node `i` out of `list`; true when the list is then empty.
fn unlink<N>(nodes: &mut [N], list: &mut List, i: usize, at: fn(&mut N) -> &mut Link) -> bool {
    let Link { prev, next } = std::mem::replace(at(&mut nodes[i]), UNLINKED);
    match prev {
        NIL => list.head = next,
        p => at(&mut nodes[p]).next = next,
    }
    match next {
        NIL => list.tail = prev,
        n => at(&mut nodes[n]).prev = prev,
    }
    list.head == NIL
}

/// Makes room for one more element, by half again when full (not by doubling): right after
/// a doubling, half the room would be free, and one removal would then rebuild the slab.
/// Growing by half, a rebuild needs a quarter of the elements gone first, so its cost per
/// removal stays constant.
fn grow<N>(v: &mut Vec<N>) {
    if v.len() == v.capacity() {
        v.reserve_exact(v.len() / 2 + 1);
    }
}

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
    /// Distinct traces it links to, each with its node in `link_nodes`, so leaving removes
    /// exactly its entries in `linking`.
    links: Box<[(TraceId, usize)]>,
}

/// A slot of the parking slab: a parked span (or nothing, when free) and its places in the
/// three lists every parked span is on.
struct Slot<T> {
    parked: Option<Parked<T>>,
    /// All parked spans, in the order they were parked (which is time order).
    age: Link,
    /// The spans of one own trace.
    trace: Link,
    /// The spans of one source.
    source: Link,
}

/// One link of one parked span, on the list of spans linking to `trace`.
struct LinkNode {
    /// The span's slot, and this node's place in its `links`.
    slot: usize,
    k: usize,
    link: Link,
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
    /// Its spans, oldest first.
    list: List,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BinderStats {
    pub parked_spans: u64,
    pub parked_bytes: u64,
    pub bound_traces: u64,
    pub dropped_expired: u64,
    pub dropped_overflow: u64,
    /// Spans set aside because a panic left parking untrustworthy. They are still in the
    /// journal, so a restart parks them again.
    pub dropped_reset: u64,
}

/// The parking store is a slab with intrusive lists: each parked span sits in one slot and is
/// linked into its age, trace and source lists (and, per link, a node on a linking list), so
/// parking, releasing, evicting and expiring a span are a few hash lookups and pointer updates
/// touching only that span, with no ordered index to rebalance and no per-span allocation
/// beyond its links. (Ordered maps here were about 15% of the ingest flood's CPU: issue 17's
/// profile.) Slots and nodes keep their index while in use; freed ones are reused, and once at
/// most half are in use the slab is rebuilt in age order, which reproduces every list's order
/// and gives the memory back.
struct State<T> {
    bound: HashMap<TraceId, Bound>,
    bound_order: VecDeque<(TraceId, Instant)>,
    slots: Vec<Slot<T>>,
    free_slots: Vec<usize>,
    link_nodes: Vec<LinkNode>,
    free_links: Vec<usize>,
    /// Every parked span, oldest first (times are clamped to never go back).
    by_age: List,
    /// The parked spans of each own trace.
    by_trace: HashMap<TraceId, List>,
    /// The link nodes of each linked trace.
    linking: HashMap<TraceId, List>,
    shares: HashMap<SourceId, Share>,
    /// (bytes, source) of every entry in `shares`: the largest holder is the last. There are
    /// as many entries as sources (ingest tokens), so this stays small.
    by_size: BTreeSet<(u64, SourceId)>,
    shared: HashMap<usize, SharedPart>,
    /// Holders of a shared part within one source, so each source is charged for it once.
    shared_by_source: HashMap<(SourceId, usize), u64>,
    /// The latest time seen; earlier ones (a request that waited for the lock) are raised to it,
    /// so the age list is in time order and expiry only ever looks at its head.
    latest: Option<Instant>,
    /// Index operations done (each O(1)): lets tests check the work is linear.
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
                slots: Vec::new(),
                free_slots: Vec::new(),
                link_nodes: Vec::new(),
                free_links: Vec::new(),
                by_age: EMPTY,
                by_trace: HashMap::new(),
                linking: HashMap::new(),
                shares: HashMap::new(),
                by_size: BTreeSet::new(),
                shared: HashMap::new(),
                shared_by_source: HashMap::new(),
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
        match self.state.lock() {
            Ok(g) => g,
            Err(p) => {
                // A panic while holding the lock may have left a list half relinked, and a
                // broken list could release a span under another trace's subject: parking is
                // emptied (its spans counted apart) rather than trusted. Bindings stay.
                let mut g = p.into_inner();
                g.reset_parking();
                self.state.clear_poison();
                g
            }
        }
    }

    pub fn stats(&self) -> BinderStats {
        self.lock().stats
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
        let out = f(&mut view);
        s.compact_if_sparse();
        out
    }
}

impl<T> State<T> {
    fn expire(&mut self, now: Instant, window: Duration) {
        while let Some(p) = self
            .slots
            .get(self.by_age.head)
            .and_then(|s| s.parked.as_ref())
        {
            if now.duration_since(p.at) < window {
                break;
            }
            self.remove(self.by_age.head);
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

    /// Parks `p` (whose `links` hold only traces so far), charging its bytes and shared part.
    fn add(&mut self, mut p: Parked<T>, part: Option<(usize, usize)>) {
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
        self.set_share(p.source, |s| Share {
            spans: s.spans + 1,
            bytes: s.bytes + mine,
            ..s
        });
        self.stats.parked_spans += 1;
        self.stats.parked_bytes += total;
        let i = self.place(&mut p);
        self.slots[i].parked = Some(p);
    }

    /// Gives `p` a slot and puts it at the end of its age, trace, source and linking lists;
    /// its accounting is the caller's.
    fn place(&mut self, p: &mut Parked<T>) -> usize {
        let i = match self.free_slots.pop() {
            Some(i) => i,
            None => {
                grow(&mut self.slots);
                self.slots.push(Slot {
                    parked: None,
                    age: UNLINKED,
                    trace: UNLINKED,
                    source: UNLINKED,
                });
                self.slots.len() - 1
            }
        };
        push_back(&mut self.slots, &mut self.by_age, i, |s| &mut s.age);
        let list = self.by_trace.entry(p.trace).or_insert(EMPTY);
        push_back(&mut self.slots, list, i, |s| &mut s.trace);
        if let Some(share) = self.shares.get_mut(&p.source) {
            push_back(&mut self.slots, &mut share.list, i, |s| &mut s.source);
        }
        for (k, (trace, node)) in p.links.iter_mut().enumerate() {
            let n = LinkNode {
                slot: i,
                k,
                link: UNLINKED,
            };
            *node = match self.free_links.pop() {
                Some(k) => {
                    self.link_nodes[k] = n;
                    k
                }
                None => {
                    grow(&mut self.link_nodes);
                    self.link_nodes.push(n);
                    self.link_nodes.len() - 1
                }
            };
            let list = self.linking.entry(*trace).or_insert(EMPTY);
            push_back(&mut self.link_nodes, list, *node, |x| &mut x.link);
        }
        i
    }

    /// Removes the span in slot `i` with all its list entries; None if the slot is free.
    fn remove(&mut self, i: usize) -> Option<Parked<T>> {
        let p = self.slots.get_mut(i)?.parked.take()?;
        self.work += 1 + p.links.len() as u64;
        unlink(&mut self.slots, &mut self.by_age, i, |s| &mut s.age);
        if let Entry::Occupied(mut list) = self.by_trace.entry(p.trace)
            && unlink(&mut self.slots, list.get_mut(), i, |s| &mut s.trace)
        {
            list.remove();
        }
        for &(trace, node) in p.links.iter() {
            if let Entry::Occupied(mut list) = self.linking.entry(trace)
                && unlink(&mut self.link_nodes, list.get_mut(), node, |n| &mut n.link)
            {
                list.remove();
            }
            self.free_links.push(node);
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
        if let Some(share) = self.shares.get_mut(&p.source) {
            unlink(&mut self.slots, &mut share.list, i, |s| &mut s.source);
        }
        self.set_share(p.source, |s| Share {
            spans: s.spans - 1,
            bytes: s.bytes - mine,
            ..s
        });
        self.free_slots.push(i);
        self.stats.parked_spans -= 1;
        self.stats.parked_bytes -= total;
        Some(p)
    }

    /// Rebuilds the slab when at most half of it is in use: every span is placed again in age
    /// order, which gives each list the order it had (lists are appended in age order), and the
    /// tables are made no larger than they need be. Linear in spans and links, and done only
    /// after as many removals, so its cost per removal stays constant.
    fn compact_if_sparse(&mut self) {
        let live_links = self.link_nodes.len() - self.free_links.len();
        // By capacity, not length: what a `Vec` holds is its capacity, and the charges in
        // `slot_bytes` and `LINK_BYTES` rely on it staying below twice what is in use.
        let sparse = |cap: usize, live: usize| cap >= COMPACT_MIN && 2 * live <= cap;
        if !sparse(self.slots.capacity(), self.stats.parked_spans as usize) {
            // Link nodes alone are rebuilt on their own: rebuilding every slot for them would
            // let a few linking spans, parked and released, cost a pass over all the others.
            if sparse(self.link_nodes.capacity(), live_links) {
                self.compact_links(live_links);
            }
            return;
        }
        let mut parked = Vec::with_capacity(self.stats.parked_spans as usize);
        let mut at = self.by_age.head;
        while let Some(slot) = self.slots.get_mut(at) {
            at = slot.age.next;
            if let Some(p) = slot.parked.take() {
                parked.push(p);
            }
        }
        debug_assert_eq!(parked.len() as u64, self.stats.parked_spans);
        self.work += parked.len() as u64 + live_links as u64;
        self.clear_slab();
        self.slots.reserve_exact(parked.len());
        self.link_nodes.reserve_exact(live_links);
        self.by_trace.reserve(parked.len());
        for mut p in parked {
            let i = self.place(&mut p);
            self.slots[i].parked = Some(p);
        }
        self.linking.shrink_to_fit();
    }

    /// Rebuilds the link-node slab alone, list by list (keeping each list's order), and points
    /// each span's `links` at its nodes' new places.
    fn compact_links(&mut self, live_links: usize) {
        self.work += live_links as u64;
        let old = std::mem::replace(&mut self.link_nodes, Vec::with_capacity(live_links));
        self.free_links = Vec::new();
        for list in self.linking.values_mut() {
            let (mut at, mut prev) = (list.head, NIL);
            list.head = NIL;
            while let Some(node) = old.get(at) {
                let n = self.link_nodes.len();
                self.link_nodes.push(LinkNode {
                    slot: node.slot,
                    k: node.k,
                    link: Link { prev, next: NIL },
                });
                match prev {
                    NIL => list.head = n,
                    p => self.link_nodes[p].link.next = n,
                }
                if let Some(entry) = self
                    .slots
                    .get_mut(node.slot)
                    .and_then(|s| s.parked.as_mut())
                    .and_then(|p| p.links.get_mut(node.k))
                {
                    entry.1 = n;
                }
                prev = n;
                at = node.link.next;
            }
            list.tail = prev;
        }
        self.linking.shrink_to_fit();
    }

    /// Empties the slab and every list (the spans' accounting is the caller's).
    fn clear_slab(&mut self) {
        self.slots = Vec::new();
        self.free_slots = Vec::new();
        self.link_nodes = Vec::new();
        self.free_links = Vec::new();
        self.by_age = EMPTY;
        self.by_trace = HashMap::new();
        self.linking = HashMap::new();
        for share in self.shares.values_mut() {
            share.list = EMPTY;
        }
    }

    /// Empties parking (after a panic left it untrustworthy), counting its spans as reset.
    fn reset_parking(&mut self) {
        self.stats.dropped_reset += self.stats.parked_spans;
        self.stats.parked_spans = 0;
        self.stats.parked_bytes = 0;
        self.clear_slab();
        self.shares = HashMap::new();
        self.by_size = BTreeSet::new();
        self.shared = HashMap::new();
        self.shared_by_source = HashMap::new();
    }

    /// Updates a source's share and its place in `by_size`; a source with no spans is forgotten.
    fn set_share(&mut self, source: SourceId, f: impl FnOnce(Share) -> Share) {
        let old = self.shares.get(&source).copied().unwrap_or(Share {
            spans: 0,
            bytes: 0,
            list: EMPTY,
        });
        let new = f(old);
        if old.spans > 0 {
            self.by_size.remove(&(old.bytes, source));
        }
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
        let oldest = self.shares.get(&source).map(|s| s.list.head);
        match oldest.and_then(|i| self.remove(i)) {
            Some(_) => {
                self.stats.dropped_overflow += 1;
                true
            }
            None => false,
        }
    }

    /// Takes every span parked under `trace`: by their own trace, or (`linking`) those linking
    /// to it. Oldest first.
    fn take(&mut self, linking: bool, trace: &TraceId) -> Vec<Parked<T>> {
        self.work += 1;
        let mut out = Vec::new();
        loop {
            let index = if linking {
                &self.linking
            } else {
                &self.by_trace
            };
            let Some(list) = index.get(trace) else { break };
            // Removing the head unlinks it here (and drops the list once it is empty).
            let slot = match linking {
                true => self.link_nodes[list.head].slot,
                false => list.head,
            };
            match self.remove(slot) {
                Some(p) => out.push(p),
                None => break,
            }
        }
        out
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
        s.take(true, trace)
            .into_iter()
            .map(|p| (p.trace, p.item))
            .collect()
    }

    /// Takes every parked span of `trace`, oldest first.
    pub fn release(&mut self, trace: &TraceId) -> Vec<T> {
        let s = &mut *self.state;
        s.take(false, trace).into_iter().map(|p| p.item).collect()
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
        let links = links.into_iter().map(|t| (t, NIL)).collect();
        self.insert(trace, links, item, source);
    }

    /// Parks a span. When the byte limit is reached, the source holding the most bytes makes
    /// room, its oldest spans first.
    pub fn park(&mut self, trace: TraceId, item: T, source: SourceId) {
        self.insert(trace, Box::default(), item, source);
    }

    fn insert(
        &mut self,
        trace: TraceId,
        links: Box<[(TraceId, usize)]>,
        item: T,
        source: SourceId,
    ) {
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
        let p = Parked {
            item,
            trace,
            source,
            at: self.now,
            bytes,
            shared: part.map(|(key, _)| key),
            links,
        };
        s.add(p, part);
        // The newcomer counts towards its own source first: a flood evicts itself.
        while s.stats.parked_bytes > self.max_parked_bytes && s.evict() {}
    }
}

#[cfg(test)]
mod tests;
