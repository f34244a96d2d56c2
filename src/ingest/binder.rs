//! Which runtime spans are kept: the bound traces, and the bounded parking store where spans of
//! not-yet-bound traces wait out the late-binding window.
//!
//! Memory is bounded twice: parked spans by bytes (oldest dropped first) and by age (the window),
//! bound traces by count. Every drop is counted.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub type TraceId = [u8; 16];

/// A span waiting for its trace to be bound; `T` is whatever the ingest path needs to store it later.
struct Parked<T> {
    id: u64,
    item: T,
    bytes: usize,
}

struct Bound {
    subject: String,
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
    parked: HashMap<TraceId, Vec<Parked<T>>>,
    /// Parked spans that link to a trace: linked trace → (the span's own trace, parked id).
    /// Entries whose span has gone are skipped (and dropped) when looked at.
    linking: HashMap<TraceId, Vec<(TraceId, u64)>>,
    parked_order: VecDeque<(TraceId, u64, Instant)>,
    next_id: u64,
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
                parked: HashMap::new(),
                linking: HashMap::new(),
                parked_order: VecDeque::new(),
                next_id: 0,
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

    /// Runs `f` with exclusive access: one request's classification sees one consistent state.
    pub fn with<R>(&self, now: Instant, f: impl FnOnce(&mut BinderView<'_, T>) -> R) -> R {
        let mut s = self.lock();
        expire(&mut s, now, self.window);
        let mut view = BinderView {
            state: &mut s,
            now,
            max_parked_bytes: self.max_parked_bytes,
            max_bound_traces: self.max_bound_traces,
        };
        f(&mut view)
    }
}

fn expire<T>(s: &mut State<T>, now: Instant, window: Duration) {
    while let Some(&(trace, id, at)) = s.parked_order.front() {
        if now.duration_since(at) < window {
            break;
        }
        s.parked_order.pop_front();
        if remove_parked(s, &trace, id) {
            s.stats.dropped_expired += 1;
        }
    }
    // Link references of spans that are gone are dropped once they outnumber the parked spans.
    if s.linking.values().map(Vec::len).sum::<usize>() > 2 * s.stats.parked_spans as usize + 1024 {
        let parked = &s.parked;
        s.linking.retain(|_, refs| {
            refs.retain(|(own, id)| {
                parked
                    .get(own)
                    .is_some_and(|l| l.iter().any(|p| p.id == *id))
            });
            !refs.is_empty()
        });
    }
    while let Some(&(trace, at)) = s.bound_order.front() {
        if now.duration_since(at) < window {
            break;
        }
        s.bound_order.pop_front();
        s.bound.remove(&trace);
    }
    s.stats.bound_traces = s.bound.len() as u64;
}

/// Removes one parked span by id; false if it was released or dropped already.
fn remove_parked<T>(s: &mut State<T>, trace: &TraceId, id: u64) -> bool {
    let Some(list) = s.parked.get_mut(trace) else {
        return false;
    };
    let Some(pos) = list.iter().position(|p| p.id == id) else {
        return false;
    };
    let p = list.remove(pos);
    if list.is_empty() {
        s.parked.remove(trace);
    }
    s.stats.parked_spans -= 1;
    s.stats.parked_bytes -= p.bytes as u64;
    true
}

/// Access to the binder during one request.
pub struct BinderView<'a, T> {
    state: &'a mut State<T>,
    now: Instant,
    max_parked_bytes: usize,
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

    /// Takes the parked spans that link to `trace`: (their own trace, the span). The caller binds
    /// their traces in turn (rule: link).
    pub fn release_linking(&mut self, trace: &TraceId) -> Vec<(TraceId, T)> {
        let s = &mut *self.state;
        let Some(refs) = s.linking.remove(trace) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (own, id) in refs {
            let Some(list) = s.parked.get_mut(&own) else {
                continue;
            };
            let Some(pos) = list.iter().position(|p| p.id == id) else {
                continue;
            };
            let p = list.remove(pos);
            if list.is_empty() {
                s.parked.remove(&own);
            }
            s.stats.parked_spans -= 1;
            s.stats.parked_bytes -= p.bytes as u64;
            out.push((own, p.item));
        }
        out
    }

    /// Takes every parked span of `trace`.
    pub fn release(&mut self, trace: &TraceId) -> Vec<T> {
        let s = &mut *self.state;
        let Some(list) = s.parked.remove(trace) else {
            return Vec::new();
        };
        s.stats.parked_spans -= list.len() as u64;
        s.stats.parked_bytes -= list.iter().map(|p| p.bytes as u64).sum::<u64>();
        // Their entries in parked_order become stale and are skipped when they come up.
        list.into_iter().map(|p| p.item).collect()
    }

    /// Parks a span that links to other traces: it is released when its own trace binds, or when
    /// one of the linked traces does.
    pub fn park_linking(&mut self, trace: TraceId, links: &[TraceId], item: T, bytes: usize) {
        let id = self.state.next_id;
        self.park(trace, item, bytes);
        if self.state.next_id > id {
            for l in links {
                self.state.linking.entry(*l).or_default().push((trace, id));
            }
        }
    }

    /// Parks a span; the oldest parked spans make room when the byte limit is reached.
    pub fn park(&mut self, trace: TraceId, item: T, bytes: usize) {
        let s = &mut *self.state;
        while s.stats.parked_bytes as usize + bytes > self.max_parked_bytes {
            let Some((old_trace, old_id, _)) = s.parked_order.pop_front() else {
                break;
            };
            if remove_parked(s, &old_trace, old_id) {
                s.stats.dropped_overflow += 1;
            }
        }
        if bytes > self.max_parked_bytes {
            s.stats.dropped_overflow += 1;
            return;
        }
        let id = s.next_id;
        s.next_id += 1;
        s.parked
            .entry(trace)
            .or_default()
            .push(Parked { id, item, bytes });
        s.parked_order.push_back((trace, id, self.now));
        s.stats.parked_spans += 1;
        s.stats.parked_bytes += bytes as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parked_spans_are_released_when_their_trace_binds() {
        let b: Binder<u32> = Binder::new(Duration::from_secs(60), 1000, 10);
        let t0 = Instant::now();
        b.with(t0, |v| {
            v.park([1; 16], 10, 100);
            v.park([1; 16], 11, 100);
            v.park([2; 16], 20, 100);
        });
        assert_eq!(b.stats().parked_spans, 3);
        let released = b.with(t0, |v| v.bind([1; 16], "CHG-1"));
        assert_eq!(released, vec![10, 11]);
        assert_eq!(b.stats().parked_spans, 1);
        assert_eq!(b.stats().parked_bytes, 100);
        b.with(t0, |v| assert_eq!(v.bound(&[1; 16]), Some("CHG-1")));
    }

    #[test]
    fn parking_is_bounded_by_bytes_and_by_age() {
        let b: Binder<u32> = Binder::new(Duration::from_secs(60), 250, 10);
        let t0 = Instant::now();
        b.with(t0, |v| {
            for i in 0..5 {
                v.park([i as u8; 16], i, 100);
            }
        });
        let s = b.stats();
        assert_eq!(
            (s.parked_spans, s.parked_bytes, s.dropped_overflow),
            (2, 200, 3)
        );
        // The survivors are the newest two.
        assert_eq!(b.with(t0, |v| v.release(&[4; 16])), vec![4]);
        b.with(t0 + Duration::from_secs(61), |_| {});
        let s = b.stats();
        assert_eq!(
            (s.parked_spans, s.parked_bytes, s.dropped_expired),
            (0, 0, 1)
        );
    }

    #[test]
    fn spans_linking_to_a_trace_are_released_when_it_binds() {
        let b: Binder<u32> = Binder::new(Duration::from_secs(60), 1000, 10);
        let t0 = Instant::now();
        b.with(t0, |v| {
            v.park_linking([5; 16], &[[1; 16]], 50, 100);
            v.park([1; 16], 10, 100);
        });
        let (linking, own) = b.with(t0, |v| {
            (v.release_linking(&[1; 16]), v.bind([1; 16], "CHG"))
        });
        assert_eq!(linking, vec![([5; 16], 50)]);
        assert_eq!(own, vec![10]);
        assert_eq!(b.stats().parked_spans, 0);
        assert!(b.with(t0, |v| v.release_linking(&[1; 16])).is_empty());
    }

    #[test]
    fn bound_traces_expire_and_are_capped() {
        let b: Binder<u32> = Binder::new(Duration::from_secs(60), 1000, 2);
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
}
