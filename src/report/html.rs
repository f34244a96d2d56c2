//! report.html: the page a person reads, rendered from the catalogue's template with the
//! summary, the charts, the first exceptions and the sample.

use super::{Ctx, ReportError, Summary};
use crate::core::evidence::report::{self as core, RotationRow};
use crate::core::evidence::rules;

/// Credentials listed in the page's rotation table: those on several changes, the first ones.
const REUSED_CREDENTIALS: usize = 200;

/// Renders report.html into `ctx.work`.
pub(super) fn write(ctx: &Ctx<'_>, s: &Summary) -> Result<(), ReportError> {
    let (query, settings, cat) = (ctx.job.query, ctx.job.settings, &ctx.job.settings.catalogue);
    let tally = &s.tally;
    let weeks: Vec<(String, u64)> = tally
        .per_week
        .iter()
        .map(|(k, v)| (k.clone(), *v))
        .collect();
    let lead = super::json::lead_time(tally);
    let codes: Vec<(String, u64)> = rules::ALL
        .iter()
        .map(|c| {
            (
                c.to_string(),
                tally.exceptions_by_code.get(*c).copied().unwrap_or(0),
            )
        })
        .collect();
    let reused_credentials: Vec<&RotationRow> = s
        .rotation
        .rows()
        .filter(|r| r.changes > 1)
        .take(REUSED_CREDENTIALS)
        .collect();
    let mut env = minijinja::Environment::new();
    env.set_auto_escape_callback(|_| minijinja::AutoEscape::Html);
    env.add_template("soc2.html", &settings.template)
        .map_err(|e| ReportError::Other(format!("report template: {e}")))?;
    let html = env
        .get_template("soc2.html")
        .and_then(|t| {
            t.render(minijinja::context! {
                title => &cat.title,
                framework => &cat.framework,
                period_start => crate::core::time::rfc3339(ctx.period.from_ns),
                period_end => crate::core::time::rfc3339(ctx.period.to_ns),
                environment => &query.environment,
                service => &query.service,
                origin => ctx.job.key.origin().as_str(),
                checkpoint_size => ctx.checkpoint.size,
                checkpoint_root => ctx.checkpoint.root.to_b64(),
                first_seq => tally.first_seq,
                last_seq => tally.last_seq,
                generated_at => &s.generated_at,
                software_version => env!("CARGO_PKG_VERSION"),
                selection => &s.selection,
                tally => minijinja::value::Serde(tally),
                exceptions_total => s.exceptions_total(),
                unlinked => s.unlinked,
                ledger_ok => s.ledger.ok(),
                ledger_verdict => &s.ledger.verdict,
                controls => minijinja::value::Serde(&s.controls),
                chart_weeks => core::bar_chart("chart-weeks", "Production changes per week", &weeks, false),
                chart_lead => core::bar_chart("chart-lead", "Approval lead time", &lead, false),
                chart_codes => core::hbar_chart("chart-codes", "Exceptions by code", &codes, true),
                delivery => minijinja::value::Serde(&s.delivery.keys),
                chart_deploys => core::bar_chart("chart-deploys", "Deployments per week", &s.delivery.per_week, false),
                chart_change_lead => core::bar_chart("chart-change-lead", "Lead time for changes", &s.delivery.lead, false),
                exceptions => minijinja::value::Serde(&s.html_exceptions),
                sample => minijinja::value::Serde(s.sample.iter().map(|(_, r)| r).collect::<Vec<_>>()),
                rotation => minijinja::value::Serde(&s.rotation_summary),
                reused_credentials => minijinja::value::Serde(&reused_credentials),
                sample_seed => &query.seed,
                sample_method => core::SAMPLE_METHOD,
            })
        })
        .map_err(|e| ReportError::Other(format!("rendering report.html: {e:#}")))?;
    std::fs::write(ctx.work.join("report.html"), html)?;
    Ok(())
}
