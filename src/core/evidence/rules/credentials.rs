//! Rules about identities and credentials: who is only asserted, which tokens or deploying
//! credentials another change used first, and which approval tokens were issued for something
//! else.

use super::{
    APPROVAL_TOKEN_MISMATCH, CREDENTIAL_NOT_ROTATED, Exception, TOKEN_REUSED, UNVERIFIED_IDENTITY,
    approved, discredited, ex,
};
use crate::core::evidence::identity::{Established, Principal};
use crate::core::evidence::{Evidence, IdentityRole};

/// Requester, approvers or executing identities established only by assertion (those whose
/// token a judgement discredited are reported under that code instead).
pub fn unverified_identity(e: &Evidence) -> Vec<Exception> {
    let mut out = Vec::new();
    let mut check = |role: &str, p: &Option<Principal>| {
        if let Some(
            pr @ Principal {
                subject,
                established: Established::Asserted { reason, .. },
            },
        ) = p
            && !discredited(e, pr)
        {
            out.push(ex(
                UNVERIFIED_IDENTITY,
                format!(
                    "{role} {} is asserted, not verified ({reason})",
                    subject.as_deref().unwrap_or("(unknown)")
                ),
            ));
        }
    };
    check("requester", &e.requester);
    for a in approved(e) {
        check("approver", &a.approver);
    }
    for s in &e.steps {
        for a in &s.attempts {
            check("deployer", &a.identity);
        }
    }
    out
}

fn reuse_text(r: &crate::core::evidence::Reuse) -> String {
    format!(
        "the {} {}'s credential {} was used first on {} (entry {}); here at entry {}",
        r.role.as_str(),
        r.subject.as_deref().unwrap_or("(unknown)"),
        short_credential(&r.credential),
        r.first_subject,
        r.first_seq,
        r.seq
    )
}

/// `sha256:` digests shortened for reading; the full value is in the evidence packet.
fn short_credential(c: &str) -> String {
    match c.strip_prefix("sha256:") {
        Some(h) if h.len() > 16 => format!("sha256:{}…", &h[..16]),
        _ => c.to_owned(),
    }
}

/// A requester's or approver's token that another change used first: it proves nothing here.
pub fn token_reused(e: &Evidence) -> Vec<Exception> {
    e.judgement
        .reused
        .iter()
        .filter(|r| r.role != IdentityRole::Deployer)
        .map(|r| ex(TOKEN_REUSED, reuse_text(r)))
        .collect()
}

/// A deploying workload's credential that an earlier change used: not rotated between deploys.
pub fn credential_not_rotated(e: &Evidence) -> Vec<Exception> {
    e.judgement
        .reused
        .iter()
        .filter(|r| r.role == IdentityRole::Deployer)
        .map(|r| ex(CREDENTIAL_NOT_ROTATED, reuse_text(r)))
        .collect()
}

/// An approval token issued for another change or artifact.
pub fn approval_token_mismatch(e: &Evidence) -> Vec<Exception> {
    e.judgement
        .token_mismatches
        .iter()
        .map(|m| {
            ex(
                APPROVAL_TOKEN_MISMATCH,
                format!(
                    "approver {}: {}",
                    m.approver.as_deref().unwrap_or("(unknown)"),
                    m.detail
                ),
            )
        })
        .collect()
}
