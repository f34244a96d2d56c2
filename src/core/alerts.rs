//! Alerts: what the ledger records when a production change gets an exception (`alert.raised`)
//! or loses one (`alert.resolved`), and when a destination took either (`alert.delivered`); which
//! codes are open for a change given the alert entries so far; and the bodies each webhook
//! format sends. Deduplication is by (change, code): a code is raised again only after it was
//! resolved. One entry groups every code one look at a change raised (or resolved) at once.

use crate::core::time::rfc3339;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// Entry kinds.
pub const RAISED: &str = "alert.raised";
pub const RESOLVED: &str = "alert.resolved";
pub const DELIVERED: &str = "alert.delivered";

/// Events the webhooks and the OTLP logs name: `firing` or `resolved`.
pub const FIRING: &str = "firing";
pub const RESOLVED_STATUS: &str = "resolved";

/// One exception code an alert raises, with the rule's own words about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertCode {
    pub code: String,
    pub evidence: String,
}

/// The payload of `alert.raised` and `alert.resolved` (the entry's subject is the change id):
/// the codes this entry raises or resolves, every code open after it, and who and what the
/// change is, as the evidence showed when it was written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertEvent {
    pub change_id: String,
    pub codes: Vec<AlertCode>,
    pub open: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved_by: Option<String>,
    /// An unlinked deploy's sighting: when the version was first seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_seen_ns: Option<i64>,
}

/// The subject alerts about a production version no change explains are filed under (there is
/// no change to name): `unlinked:ENVIRONMENT/SERVICE/VERSION`, the environment in lower case.
pub fn unlinked_subject(environment: &str, service: &str, version: &str) -> String {
    format!(
        "{UNLINKED_PREFIX}{}/{service}/{version}",
        environment.to_lowercase()
    )
}

/// What every unlinked deploy's subject starts with.
pub const UNLINKED_PREFIX: &str = "unlinked:";

impl AlertEvent {
    /// The change the event is about; `None` for an unlinked deploy (no change deployed it).
    pub fn change(&self) -> Option<&str> {
        (!self.change_id.starts_with(UNLINKED_PREFIX)).then_some(self.change_id.as_str())
    }

    /// An event about `change_id` saying nothing yet.
    pub fn about(change_id: &str) -> AlertEvent {
        AlertEvent {
            change_id: change_id.to_owned(),
            codes: Vec::new(),
            open: Vec::new(),
            service: None,
            environment: None,
            version: None,
            requested_by: None,
            approved_by: None,
            first_seen_ns: None,
        }
    }
}

/// A look at a subject for the writer: the event its evidence calls for now (`codes`: every
/// code present), and the entry seq that evidence was judged as of, for a change (a later fact
/// about it makes the look out of date).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Look {
    pub event: AlertEvent,
    pub as_of: Option<i64>,
}

/// The payload of `alert.delivered`: which event went where.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivered {
    pub event_seq: u64,
    pub destination: String,
    pub status: String,
}

/// The codes open for a change after its alert entries (`(kind, event)` in chain order), each
/// with the seq of the entry that raised it.
pub fn open_codes<'a>(
    events: impl IntoIterator<Item = (u64, &'a str, &'a AlertEvent)>,
) -> BTreeMap<String, u64> {
    let mut open = BTreeMap::new();
    for (seq, kind, ev) in events {
        for c in &ev.codes {
            match kind {
                RAISED => {
                    open.entry(c.code.clone()).or_insert(seq);
                }
                RESOLVED => {
                    open.remove(&c.code);
                }
                _ => {}
            }
        }
    }
    open
}

/// What a look at a change asks for: the codes to raise (present now, not open) and those to
/// resolve (open, not present now). A code present twice is raised once.
pub fn plan(open: &BTreeMap<String, u64>, now: &[AlertCode]) -> (Vec<AlertCode>, Vec<AlertCode>) {
    let present: BTreeSet<&str> = now.iter().map(|c| c.code.as_str()).collect();
    let mut seen = BTreeSet::new();
    let raise = now
        .iter()
        .filter(|c| !open.contains_key(&c.code) && seen.insert(c.code.as_str()))
        .cloned()
        .collect();
    let resolve = open
        .keys()
        .filter(|code| !present.contains(code.as_str()))
        .map(|code| AlertCode {
            code: code.clone(),
            evidence: "no longer found in the change's evidence".to_owned(),
        })
        .collect();
    (raise, resolve)
}

/// Alert entries `(seq, kind, time, payload)` whose payload is still there and parses: an erased
/// one is left out (a code it raised may be raised again, which beats never alerting again).
pub fn parse_events(
    rows: &[(u64, String, i64, Option<String>)],
) -> Vec<(u64, String, i64, AlertEvent)> {
    rows.iter()
        .filter_map(|(seq, kind, time, payload)| {
            let ev = serde_json::from_str(payload.as_deref()?).ok()?;
            Some((*seq, kind.clone(), *time, ev))
        })
        .collect()
}

/// What a look at a subject calls for after its alert entries `before` (chain order):
/// `alert.resolved` for open codes the look no longer shows, then `alert.raised` for codes it
/// shows that are not open, each naming every code open after it. Empty when nothing changed.
pub fn events_for(
    before: &[(u64, &str, &AlertEvent)],
    look: &AlertEvent,
) -> Vec<(&'static str, AlertEvent)> {
    let open = open_codes(before.iter().copied());
    let (raise, resolve) = plan(&open, &look.codes);
    let after_resolve: Vec<String> = open
        .keys()
        .filter(|c| !resolve.iter().any(|r| &r.code == *c))
        .cloned()
        .collect();
    let after_raise: BTreeSet<String> = after_resolve
        .iter()
        .cloned()
        .chain(raise.iter().map(|c| c.code.clone()))
        .collect();
    let mut out = Vec::new();
    for (kind, codes, open) in [
        (RESOLVED, resolve, after_resolve),
        (RAISED, raise, after_raise.into_iter().collect()),
    ] {
        if !codes.is_empty() {
            out.push((
                kind,
                AlertEvent {
                    codes,
                    open,
                    ..look.clone()
                },
            ));
        }
    }
    out
}

/// The webhook formats `[[alerts.webhooks]] format` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Alertmanager's API v2 (`POST /api/v2/alerts`): one alert per code.
    Alertmanager,
    /// A Slack incoming webhook: one message per event.
    Slack,
    /// changetrail's own JSON (below).
    Json,
}

/// One event as a destination receives it.
pub struct Notice<'a> {
    pub event_seq: u64,
    /// When the event's entry was appended.
    pub time_ns: i64,
    /// `FIRING` or `RESOLVED_STATUS`.
    pub status: &'a str,
    pub event: &'a AlertEvent,
    /// When each code in the event was raised (for a resolution: by the entry that raised it).
    pub raised_ns: &'a BTreeMap<String, i64>,
    /// The change's page, when the console's address is configured.
    pub link: Option<&'a str>,
}

/// How long Alertmanager keeps a firing alert active without hearing of it again: changetrail
/// sends it once, so the end is set this far ahead instead of Alertmanager's `resolve_timeout`
/// (5 minutes by default), and a resolution ends it sooner.
pub const ALERTMANAGER_ACTIVE_NS: i64 = 7 * 24 * 3600 * 1_000_000_000;

/// The request body for a format.
pub fn body(format: Format, n: &Notice<'_>) -> serde_json::Value {
    match format {
        Format::Alertmanager => alertmanager(n),
        Format::Slack => slack(n),
        Format::Json => json(n),
    }
}

fn alertmanager(n: &Notice<'_>) -> serde_json::Value {
    let ev = n.event;
    let alerts: Vec<serde_json::Value> = ev
        .codes
        .iter()
        .map(|c| {
            let mut labels = serde_json::Map::new();
            labels.insert("alertname".into(), c.code.clone().into());
            match ev.change() {
                Some(id) => labels.insert("change_id".into(), id.into()),
                None => labels.insert("subject".into(), ev.change_id.clone().into()),
            };
            labels.insert("source".into(), "changetrail".into());
            labels.insert("severity".into(), "warning".into());
            for (k, v) in [
                ("service", &ev.service),
                ("environment", &ev.environment),
                ("version", &ev.version),
            ] {
                if let Some(v) = v {
                    labels.insert(k.into(), v.clone().into());
                }
            }
            let starts = n.raised_ns.get(&c.code).copied().unwrap_or(n.time_ns);
            let ends = if n.status == FIRING {
                starts.saturating_add(ALERTMANAGER_ACTIVE_NS)
            } else {
                n.time_ns
            };
            let mut a = serde_json::json!({
                "labels": labels,
                "annotations": {
                    "summary": format!("{} on {}", c.code, what(ev)),
                    "description": c.evidence,
                },
                "startsAt": rfc3339(starts),
                "endsAt": rfc3339(ends),
            });
            if let Some(link) = n.link {
                a["generatorURL"] = link.into();
            }
            a
        })
        .collect();
    serde_json::Value::Array(alerts)
}

/// "change CHG-1", or "a deploy no change explains".
fn what(ev: &AlertEvent) -> String {
    match ev.change() {
        Some(id) => format!("change {id}"),
        None => "a deploy no change explains".to_owned(),
    }
}

/// What the change is, in one line: "checkout 1.4.2 → production, change CHG-1".
fn headline(ev: &AlertEvent) -> String {
    let mut s = String::new();
    if let Some(svc) = &ev.service {
        s.push_str(svc);
        if let Some(v) = &ev.version {
            s.push(' ');
            s.push_str(v);
        }
        if let Some(e) = &ev.environment {
            s.push_str(" → ");
            s.push_str(e);
        }
        s.push_str(", ");
    }
    s.push_str(&what(ev));
    s
}

/// Slack's mrkdwn treats `&`, `<` and `>` as markup: escaped, so a sender's text cannot make a
/// link or a mention.
fn slack_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn slack(n: &Notice<'_>) -> serde_json::Value {
    let ev = n.event;
    let head = if n.status == FIRING {
        format!(":rotating_light: *changetrail*: {}", headline(ev))
    } else {
        format!(
            ":white_check_mark: *changetrail* resolved: {}",
            headline(ev)
        )
    };
    let mut text = slack_escape(&head);
    for c in &ev.codes {
        text.push_str(&format!(
            "\n• *{}*: {}",
            slack_escape(&c.code),
            slack_escape(&c.evidence)
        ));
    }
    let who = [
        ("requested by", &ev.requested_by),
        ("approved by", &ev.approved_by),
    ]
    .iter()
    .filter_map(|(label, v)| v.as_ref().map(|v| format!("{label} {}", slack_escape(v))))
    .collect::<Vec<_>>();
    if !who.is_empty() {
        text.push_str(&format!("\n{}", who.join(", ")));
    }
    if n.status != FIRING && !ev.open.is_empty() {
        text.push_str(&format!(
            "\nstill open: {}",
            slack_escape(&ev.open.join(", "))
        ));
    }
    if let Some(link) = n.link {
        text.push_str(&format!("\n<{}|open the change>", slack_escape(link)));
    }
    // No previews: a URL in a sender's words must not make Slack fetch it.
    serde_json::json!({ "text": text, "unfurl_links": false, "unfurl_media": false })
}

/// changetrail's own format, versioned: what the event entry says, with the entry's seq (the
/// receiver can fetch its inclusion proof) and a delivery id to drop repeats by.
fn json(n: &Notice<'_>) -> serde_json::Value {
    let ev = n.event;
    serde_json::json!({
        "source": "changetrail",
        "schema": 1,
        "status": n.status,
        "entry_seq": n.event_seq,
        "time": rfc3339(n.time_ns),
        "subject": ev.change_id,
        "change": {
            "id": ev.change(),
            "service": ev.service,
            "environment": ev.environment,
            "version": ev.version,
            "requested_by": ev.requested_by,
            "approved_by": ev.approved_by,
        },
        "exceptions": ev.codes.iter().map(|c| serde_json::json!({
            "code": c.code,
            "evidence": c.evidence,
            "raised": n.raised_ns.get(&c.code).map(|t| rfc3339(*t)),
        })).collect::<Vec<_>>(),
        "open": ev.open,
        "link": n.link,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(c: &str) -> AlertCode {
        AlertCode {
            code: c.into(),
            evidence: format!("{c} because"),
        }
    }

    fn event(codes: &[&str]) -> AlertEvent {
        AlertEvent {
            change_id: "CHG-1".into(),
            codes: codes.iter().map(|c| code(c)).collect(),
            open: vec![],
            service: Some("checkout".into()),
            environment: Some("production".into()),
            version: Some("1.4.2".into()),
            requested_by: Some("alice".into()),
            approved_by: None,
            first_seen_ns: None,
        }
    }

    #[test]
    fn a_code_is_open_from_its_raise_to_its_resolution() {
        let (a, b, c) = (
            event(&["NO_APPROVAL", "UNVERIFIED_IDENTITY"]),
            event(&["NO_APPROVAL"]),
            event(&["NO_APPROVAL"]),
        );
        let open = open_codes([(5, RAISED, &a)]);
        assert_eq!(
            open.into_iter().collect::<Vec<_>>(),
            vec![("NO_APPROVAL".into(), 5), ("UNVERIFIED_IDENTITY".into(), 5)]
        );
        let open = open_codes([(5, RAISED, &a), (9, RESOLVED, &b)]);
        assert_eq!(open.keys().collect::<Vec<_>>(), vec!["UNVERIFIED_IDENTITY"]);
        // Raised again after its resolution: open since the new raise.
        let open = open_codes([(5, RAISED, &a), (9, RESOLVED, &b), (12, RAISED, &c)]);
        assert_eq!(open.get("NO_APPROVAL"), Some(&12));
        // Other kinds change nothing.
        let open = open_codes([(5, DELIVERED, &a)]);
        assert!(open.is_empty());
    }

    #[test]
    fn the_plan_raises_what_is_new_and_resolves_what_went() {
        let open: BTreeMap<String, u64> = [("NO_APPROVAL".to_owned(), 3)].into();
        let (raise, resolve) = plan(
            &open,
            &[
                code("SELF_APPROVAL"),
                code("NO_APPROVAL"),
                code("SELF_APPROVAL"),
            ],
        );
        assert_eq!(raise, vec![code("SELF_APPROVAL")]);
        assert!(resolve.is_empty());
        let (raise, resolve) = plan(&open, &[]);
        assert!(raise.is_empty());
        assert_eq!(
            resolve.iter().map(|c| c.code.as_str()).collect::<Vec<_>>(),
            vec!["NO_APPROVAL"]
        );
        let (raise, resolve) = plan(&open, &[code("NO_APPROVAL")]);
        assert!(raise.is_empty() && resolve.is_empty());
    }

    #[test]
    fn a_look_resolves_what_went_then_raises_what_came() {
        let raised = event(&["NO_APPROVAL", "UNVERIFIED_IDENTITY"]);
        let before = [(4, RAISED, &raised)];
        let out = events_for(&before, &event(&["UNVERIFIED_IDENTITY", "SELF_APPROVAL"]));
        let kinds: Vec<_> = out
            .iter()
            .map(|(k, e)| (*k, e.codes[0].code.as_str(), e.open.clone()))
            .collect();
        assert_eq!(
            kinds,
            vec![
                (
                    RESOLVED,
                    "NO_APPROVAL",
                    vec!["UNVERIFIED_IDENTITY".to_owned()]
                ),
                (
                    RAISED,
                    "SELF_APPROVAL",
                    vec!["SELF_APPROVAL".to_owned(), "UNVERIFIED_IDENTITY".to_owned()]
                ),
            ]
        );
        assert!(events_for(&before, &raised).is_empty(), "nothing changed");
    }

    fn notice<'a>(
        status: &'a str,
        ev: &'a AlertEvent,
        raised: &'a BTreeMap<String, i64>,
    ) -> Notice<'a> {
        Notice {
            event_seq: 42,
            time_ns: 1_700_000_000_000_000_000,
            status,
            event: ev,
            raised_ns: raised,
            link: Some("https://ct.example/console/#/changes/CHG-1"),
        }
    }

    #[test]
    fn alertmanager_gets_one_alert_per_code_ended_by_the_resolution() {
        let ev = event(&["NO_APPROVAL", "SELF_APPROVAL"]);
        let raised = BTreeMap::from([("NO_APPROVAL".to_owned(), 1_699_999_000_000_000_000)]);
        let firing = body(Format::Alertmanager, &notice(FIRING, &ev, &raised));
        let alerts = firing.as_array().unwrap();
        assert_eq!(alerts.len(), 2);
        assert_eq!(alerts[0]["labels"]["alertname"], "NO_APPROVAL");
        assert_eq!(alerts[0]["labels"]["change_id"], "CHG-1");
        assert_eq!(alerts[0]["labels"]["service"], "checkout");
        assert_eq!(alerts[0]["startsAt"], "2023-11-14T21:56:40Z");
        assert_eq!(alerts[0]["endsAt"], "2023-11-21T21:56:40Z");
        // A code with no recorded raise starts at the event.
        assert_eq!(alerts[1]["startsAt"], "2023-11-14T22:13:20Z");
        assert_eq!(
            alerts[1]["generatorURL"],
            "https://ct.example/console/#/changes/CHG-1"
        );
        let resolved = body(Format::Alertmanager, &notice(RESOLVED_STATUS, &ev, &raised));
        assert_eq!(resolved[0]["endsAt"], "2023-11-14T22:13:20Z");
        assert_eq!(resolved[0]["startsAt"], "2023-11-14T21:56:40Z");
    }

    #[test]
    fn slack_text_cannot_carry_markup_from_the_evidence() {
        let mut ev = event(&["NO_APPROVAL"]);
        ev.codes[0].evidence = "<!channel> see <https://evil|here> & more".into();
        let raised = BTreeMap::new();
        let b = body(Format::Slack, &notice(FIRING, &ev, &raised));
        let text = b["text"].as_str().unwrap();
        assert!(text.contains("checkout 1.4.2 → production, change CHG-1"));
        assert!(text.contains("&lt;!channel&gt; see &lt;https://evil|here&gt; &amp; more"));
        assert!(!text.contains("<!channel>"));
        assert!(text.contains("requested by alice"));
        let b = body(Format::Slack, &notice(RESOLVED_STATUS, &ev, &raised));
        assert!(b["text"].as_str().unwrap().contains("resolved"));
    }

    #[test]
    fn an_unlinked_deploy_names_no_change() {
        let mut ev = event(&["UNLINKED_DEPLOY"]);
        ev.change_id = unlinked_subject("Production", "checkout", "7.0.1");
        assert_eq!(ev.change_id, "unlinked:production/checkout/7.0.1");
        assert_eq!(ev.change(), None);
        let raised = BTreeMap::new();
        let am = body(Format::Alertmanager, &notice(FIRING, &ev, &raised));
        assert!(am[0]["labels"].get("change_id").is_none());
        assert_eq!(
            am[0]["labels"]["subject"],
            "unlinked:production/checkout/7.0.1"
        );
        assert_eq!(am[0]["labels"]["version"], "1.4.2");
        let j = body(Format::Json, &notice(FIRING, &ev, &raised));
        assert!(j["change"]["id"].is_null());
        assert_eq!(j["subject"], "unlinked:production/checkout/7.0.1");
        let sl = body(Format::Slack, &notice(FIRING, &ev, &raised));
        assert!(
            sl["text"]
                .as_str()
                .unwrap()
                .contains("a deploy no change explains")
        );
    }

    #[test]
    fn the_json_format_names_the_entry_and_every_code() {
        let ev = event(&["NO_APPROVAL"]);
        let raised = BTreeMap::from([("NO_APPROVAL".to_owned(), 1_700_000_000_000_000_000)]);
        let b = body(Format::Json, &notice(FIRING, &ev, &raised));
        assert_eq!(b["status"], "firing");
        assert_eq!(b["entry_seq"], 42);
        assert_eq!(b["change"]["id"], "CHG-1");
        assert_eq!(b["exceptions"][0]["code"], "NO_APPROVAL");
        assert_eq!(b["exceptions"][0]["raised"], "2023-11-14T22:13:20Z");
    }
}
