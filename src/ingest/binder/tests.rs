//! Unit and property tests of the binder: fairness, eviction, shared parts counted once.

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

/// What the tests look at inside a binder.
impl<T> Binder<T> {
    fn work(&self) -> u64 {
        self.lock().work
    }

    /// Slots and link nodes in use, after checking every list against them and that the slab
    /// is not mostly free.
    fn held(&self) -> (usize, usize) {
        let s = self.lock();
        s.check_lists();
        let live = (
            s.slots.len() - s.free_slots.len(),
            s.link_nodes.len() - s.free_links.len(),
        );
        // What the charges rely on: the room the slab holds stays below twice what is in use.
        let room = [
            (s.slots.capacity(), live.0),
            (s.link_nodes.capacity(), live.1),
        ];
        for (cap, live) in room {
            assert!(
                cap < COMPACT_MIN || 2 * live > cap,
                "{live} in use of {cap}"
            );
        }
        live
    }

    /// Slots and link nodes the slab has, in use or free.
    fn slab(&self) -> (usize, usize) {
        let s = self.lock();
        (s.slots.len(), s.link_nodes.len())
    }
}

impl<T> State<T> {
    /// Walks every list both ways and checks each node is where its span says it is.
    fn check_lists(&self) {
        fn walk<N>(nodes: &[N], list: &List, at: fn(&N) -> Link) -> Vec<usize> {
            let (mut fwd, mut at_) = (Vec::new(), list.head);
            while at_ != NIL {
                assert!(fwd.len() < nodes.len(), "a list without a cycle");
                fwd.push(at_);
                at_ = at(&nodes[at_]).next;
            }
            let (mut back, mut at_) = (Vec::new(), list.tail);
            while at_ != NIL {
                assert!(back.len() < nodes.len(), "a list without a cycle");
                back.push(at_);
                at_ = at(&nodes[at_]).prev;
            }
            back.reverse();
            assert_eq!(fwd, back, "a list reads the same both ways");
            fwd
        }
        let live = |i: &usize| self.slots[*i].parked.is_some();
        let spans = self.slots.len() - self.free_slots.len();
        assert_eq!(spans as u64, self.stats.parked_spans);
        assert!(
            self.free_slots.iter().all(|i| !live(i)),
            "free slots are empty"
        );
        let age = walk(&self.slots, &self.by_age, |s| s.age);
        assert_eq!(age.len(), spans);
        assert!(age.iter().all(live));
        // Every other list is in age order (releases and evictions go oldest first).
        let rank: HashMap<usize, usize> = age.iter().enumerate().map(|(r, &i)| (i, r)).collect();
        let in_age_order = |slots: &[usize]| slots.windows(2).all(|w| rank[&w[0]] < rank[&w[1]]);
        let mut on_trace = 0;
        for (trace, list) in &self.by_trace {
            let on = walk(&self.slots, list, |s| s.trace);
            assert!(in_age_order(&on));
            for &i in &on {
                assert_eq!(self.slots[i].parked.as_ref().map(|p| p.trace), Some(*trace));
            }
            on_trace += on.len();
        }
        assert_eq!(on_trace, spans);
        let mut on_source = 0;
        for (source, share) in &self.shares {
            let on = walk(&self.slots, &share.list, |s| s.source);
            assert!(in_age_order(&on));
            assert_eq!(on.len() as u64, share.spans);
            assert!(self.by_size.contains(&(share.bytes, *source)));
            for &i in &on {
                let p = self.slots[i].parked.as_ref();
                assert_eq!(p.map(|p| p.source), Some(*source));
            }
            on_source += on.len();
        }
        assert_eq!(on_source, spans);
        assert_eq!(self.by_size.len(), self.shares.len());
        let mut on_link = 0;
        for (trace, list) in &self.linking {
            let on = walk(&self.link_nodes, list, |x| x.link);
            let owners: Vec<usize> = on.iter().map(|&n| self.link_nodes[n].slot).collect();
            assert!(in_age_order(&owners));
            for &n in &on {
                let node = &self.link_nodes[n];
                let p = self.slots[node.slot].parked.as_ref().expect("a live span");
                assert_eq!(p.links[node.k], (*trace, n), "the span holds its node");
                on_link += 1;
            }
        }
        assert_eq!(on_link, self.link_nodes.len() - self.free_links.len());
    }
}

/// A trace id of `kind` numbered `i`.
fn trace(kind: u8, i: u32) -> TraceId {
    let mut t = [kind; 16];
    t[..4].copy_from_slice(&i.to_be_bytes());
    t
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

/// A panic inside `with` may leave a list half relinked: the next caller finds parking emptied
/// and counted as reset (not as overflow), the bindings kept, and the binder usable again.
#[test]
fn a_panic_while_parking_empties_parking_and_keeps_bindings() {
    let b: Binder<Item> = Binder::new(Duration::from_secs(60), 10_000, 10);
    let t0 = Instant::now();
    b.with(t0, |v| {
        v.bind([9; 16], "CHG-9");
        for i in 0..3 {
            v.park([i as u8; 16], item(i, 100), A);
        }
    });
    let panicked = std::thread::scope(|s| {
        s.spawn(|| {
            b.with(t0, |v| {
                v.park([7; 16], item(7, 100), A);
                panic!("a bug in the middle of an update");
            })
        })
        .join()
        .is_err()
    });
    assert!(panicked);
    let s = b.stats();
    assert_eq!(
        (
            s.parked_spans,
            s.parked_bytes,
            s.dropped_reset,
            s.dropped_overflow
        ),
        (0, 0, 4, 0)
    );
    assert_eq!(
        b.with(t0, |v| v.bound(&[9; 16]).map(str::to_owned)),
        Some("CHG-9".into())
    );
    assert!(b.with(t0, |v| v.release(&[1; 16])).is_empty());
    b.with(t0, |v| v.park([5; 16], item(5, 100), A));
    assert_eq!(ns(b.with(t0, |v| v.release(&[5; 16]))), vec![5]);
    assert_eq!(b.held(), (0, 0));
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
fn the_slab_gives_memory_back_after_a_flood() {
    let b: Binder<Item> = Binder::new(Duration::from_secs(60), usize::MAX, 10_000);
    let t0 = Instant::now();
    let trace = |i: u32| trace(7, i);
    b.with(t0, |v| {
        for i in 0..5000 {
            v.park_linking(trace(i), &[trace(i + 1), [9; 16]], item(i, 10), A);
        }
    });
    assert_eq!(b.held(), (5000, 10_000));
    // Binding all but the last 100 traces releases their spans (and, through the links, ...
    let released = b.with(t0, |v| {
        (0..4900).map(|i| v.release(&trace(i)).len()).sum::<usize>()
    });
    assert_eq!(released, 4900);
    // ... the slab is rebuilt around the 100 left, in the same order.
    assert_eq!(b.held(), (100, 200));
    assert_eq!(b.slab(), (100, 200));
    let rest = b.with(t0, |v| {
        ns(v.release_linking(&[9; 16])
            .into_iter()
            .map(|(_, i)| i)
            .collect())
    });
    assert_eq!(rest, (4900..5000).collect::<Vec<u32>>());
    assert_eq!(b.held(), (0, 0));
}

#[test]
fn link_nodes_are_rebuilt_without_touching_the_other_spans() {
    let b: Binder<Item> = Binder::new(Duration::from_secs(60), usize::MAX, 10_000);
    let t0 = Instant::now();
    b.with(t0, |v| {
        for i in 0..3000 {
            v.park(trace(1, i), item(i, 10), A);
        }
    });
    let work = b.work();
    // A few linking spans, parked and released again and again, must not make every one of
    // the 3,000 others be placed again.
    for round in 0..20u32 {
        b.with(t0, |v| {
            for j in 0..8 {
                let links: Vec<TraceId> =
                    (0..8).map(|l| trace(2, round * 64 + j * 8 + l)).collect();
                v.park_linking(trace(3, round * 8 + j), &links, item(9000 + j, 10), A);
            }
        });
        let back = b.with(t0, |v| {
            (0..8)
                .map(|j| v.release(&trace(3, round * 8 + j)).len())
                .sum::<usize>()
        });
        assert_eq!(back, 8);
        assert_eq!(b.held(), (3000, 0));
    }
    // About 220 a round; placing the 3,000 again would be 3,000 a round.
    assert!(
        b.work() - work < 20 * 500,
        "{} index operations for 160 linking spans",
        b.work() - work
    );
}

#[test]
fn parking_and_releasing_at_the_threshold_does_not_rebuild_every_time() {
    let b: Binder<Item> = Binder::new(Duration::from_secs(60), usize::MAX, 100_000);
    let t0 = Instant::now();
    let trace = |i: u32| trace(4, i);
    b.with(t0, |v| {
        for i in 0..4096 {
            v.park(trace(i), item(i, 10), A);
        }
    });
    let start = b.work();
    // One span parked and one released per request, around whatever size the slab is at.
    for i in 0..2000u32 {
        b.with(t0, |v| v.park(trace(10_000 + i), item(i, 10), A));
        b.with(t0, |v| v.release(&trace(i)));
    }
    assert_eq!(b.held().0, 4096);
    let work = b.work() - start;
    assert!(
        work < 2000 * 20,
        "{work} index operations for 4,000 parks and releases"
    );
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
            // The slab is dense: a slot per parked span and a node per distinct link.
            let links: usize = m.spans.iter().map(|s| s.links.len()).sum();
            prop_assert_eq!(b.held(), (m.spans.len(), links));
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
        prop_assert_eq!(b.held(), (0, 0));
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
