//! Which production version each service runs, as its runtime spans show it: a sighting is
//! recorded when a (service, environment) shows a version it has not run lately — a new version,
//! a downgrade, a redeploy of an old one. A rollout's old version still draining (seen within the
//! window) is not a sighting; one that comes back after the window is.
//!
//! The state is this process's memory, loaded per (service, environment) from the recorded
//! sightings the first time it is needed, and updated only after the sightings it produced are
//! committed (a failed export leaves it as it was, so the retry records them).

use super::convert::{self, SpanItem};
use crate::core::evidence::{self, FactRecord, Intake, Policy, VersionFact};
use crate::read::ReadError;
use crate::read::history::History;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// What one (service, environment) was last seen running.
#[derive(Debug, Clone, Default)]
struct Running {
    /// The version of the latest sighting.
    current: Option<String>,
    /// When each version was last seen: by the receiver's clock and by the spans' own.
    last_seen: HashMap<String, Seen>,
}

/// A version's last sighting by both clocks. A version is back after a gap when either clock
/// shows one: the receipt when it runs live, the spans' times when history arrives at once.
#[derive(Debug, Clone, Copy)]
struct Seen {
    received_ns: i64,
    event_ns: i64,
}

/// Versions remembered per (service, environment): a sender cycling version strings costs this
/// much memory, not more (a version forgotten and seen again is a sighting, which it is).
const VERSIONS_PER_SERVICE: usize = 64;

/// Keeps the most recently received versions.
fn forget_oldest(seen: &mut HashMap<String, Seen>) {
    while seen.len() > VERSIONS_PER_SERVICE {
        let Some(oldest) = seen
            .iter()
            .min_by_key(|(_, s)| s.received_ns)
            .map(|(v, _)| v.clone())
        else {
            return;
        };
        seen.remove(&oldest);
    }
}

/// A change to the remembered state, applied once the export that showed it is committed.
#[derive(Debug, Clone)]
pub struct Update {
    key: (String, String),
    version: String,
    seen: Seen,
    /// The version of the latest sighting after this one.
    current: Option<String>,
}

pub struct Versions {
    window_ns: i64,
    max_remembered: usize,
    state: Mutex<HashMap<(String, String), Running>>,
}

/// One (service, environment, version) a request shows, from its earliest to its latest span.
struct Observed {
    service: String,
    environment: String,
    version: String,
    first_seen_ns: i64,
    last_seen_ns: i64,
    trace_id: String,
}

impl Versions {
    pub fn new(window_ns: i64, max_remembered: usize) -> Versions {
        Versions {
            window_ns: window_ns.max(1),
            max_remembered,
            state: Mutex::new(HashMap::new()),
        }
    }

    /// Production versions the request's runtime spans show (workflow spans describe deploys,
    /// not running versions), each once, at its earliest span.
    fn observed(items: &[SpanItem], policy: &Policy) -> Vec<Observed> {
        // One pass, each resource looked at once (its scopes and spans share it), each version
        // found by hash: a request of thousands of resources costs linear time, not quadratic.
        let mut by_resource: HashMap<*const convert::ResourcePart, (usize, i64, i64)> =
            HashMap::new();
        let mut order = Vec::new();
        for (n, item) in items.iter().enumerate().filter(|(_, i)| !i.contract) {
            let t = i64::try_from(item.span.start_time_unix_nano).unwrap_or(i64::MAX);
            let key = Arc::as_ptr(&item.origin.res);
            let e = by_resource.entry(key).or_insert_with(|| {
                order.push(key);
                (n, t, t)
            });
            if t < e.1 {
                e.0 = n;
            }
            e.1 = e.1.min(t);
            e.2 = e.2.max(t);
        }
        let mut out: Vec<Observed> = Vec::new();
        let mut index: HashMap<(String, String, String), usize> = HashMap::new();
        for key in order {
            let Some(&(first, start, end)) = by_resource.get(&key) else {
                continue;
            };
            let item = &items[first];
            let Some((service, environment, version)) = convert::deployed_version(&item.origin)
            else {
                continue;
            };
            if !policy.is_production(&environment) {
                continue;
            }
            match index.get(&(service.clone(), environment.clone(), version.clone())) {
                Some(&i) => {
                    let o = &mut out[i];
                    if o.first_seen_ns > start {
                        o.first_seen_ns = start;
                        o.trace_id = hex::encode(item.trace_id);
                    }
                    o.last_seen_ns = o.last_seen_ns.max(end);
                }
                None => {
                    index.insert(
                        (service.clone(), environment.clone(), version.clone()),
                        out.len(),
                    );
                    out.push(Observed {
                        service,
                        environment,
                        version,
                        first_seen_ns: start,
                        last_seen_ns: end,
                        trace_id: hex::encode(item.trace_id),
                    });
                }
            }
        }
        out.sort_by_key(|o| o.first_seen_ns);
        out
    }

    fn remembered(&self, key: &(String, String)) -> Option<Running> {
        self.state.lock().ok()?.get(key).cloned()
    }

    /// What the recorded sightings say of a (service, environment) this process has not seen
    /// yet: its latest version.
    async fn load(
        history: &History,
        service: &str,
        environment: &str,
    ) -> Result<Running, ReadError> {
        Ok(Running {
            current: history.latest_version(service, environment).await?,
            last_seen: HashMap::new(),
        })
    }

    /// The sightings a request's spans make (received at `now_ns`), and the state updates to
    /// apply once they are committed.
    pub async fn sightings(
        &self,
        history: &History,
        items: &[SpanItem],
        policy: &Policy,
        intake: &Intake,
    ) -> Result<(Vec<FactRecord>, Vec<Update>), ReadError> {
        let now = intake.received_ns;
        let mut local: HashMap<(String, String), Running> = HashMap::new();
        let mut facts = Vec::new();
        let mut updates = Vec::new();
        for o in Self::observed(items, policy) {
            let key = (o.service.clone(), o.environment.clone());
            if !local.contains_key(&key) {
                let r = match self.remembered(&key) {
                    Some(r) => r,
                    None => Self::load(history, &o.service, &o.environment).await?,
                };
                local.insert(key.clone(), r);
            }
            let Some(r) = local.get_mut(&key) else {
                continue;
            };
            if r.current.as_deref() != Some(o.version.as_str()) {
                // Not seen within the window, by either clock: new, or back after another
                // version ran.
                let gone = r.last_seen.get(&o.version).is_none_or(|t| {
                    now.saturating_sub(t.received_ns) > self.window_ns
                        || o.first_seen_ns.saturating_sub(t.event_ns) > self.window_ns
                });
                if gone {
                    facts.push(evidence::version_fact(
                        VersionFact {
                            service: o.service.clone(),
                            environment: o.environment.clone(),
                            version: o.version.clone(),
                            first_seen_ns: o.first_seen_ns,
                            trace_id: Some(o.trace_id.clone()),
                            previous: r.current.clone(),
                        },
                        self.window_ns,
                        intake,
                    ));
                    r.current = Some(o.version.clone());
                }
            }
            let seen = Seen {
                received_ns: now,
                event_ns: o.last_seen_ns,
            };
            r.last_seen.insert(o.version.clone(), seen);
            forget_oldest(&mut r.last_seen);
            updates.push(Update {
                key,
                version: o.version,
                seen,
                current: r.current.clone(),
            });
        }
        Ok((facts, updates))
    }

    /// Remembers what a committed export showed.
    pub fn commit(&self, updates: Vec<Update>) {
        if updates.is_empty() {
            return;
        }
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        if state.len() + updates.len() > self.max_remembered {
            // Forgetting only costs a lookup of the recorded sightings next time.
            state.clear();
        }
        for u in updates {
            let r = state.entry(u.key).or_default();
            r.current = u.current;
            let t = r.last_seen.entry(u.version).or_insert(u.seen);
            t.received_ns = t.received_ns.max(u.seen.received_ns);
            t.event_ns = t.event_ns.max(u.seen.event_ns);
            forget_oldest(&mut r.last_seen);
        }
    }
}
