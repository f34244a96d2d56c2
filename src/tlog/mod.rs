//! The ledger's side of the C2SP transparency-log protocols that reach out to others: asking
//! witnesses to cosign each new checkpoint (tlog-witness) and watching whether the newest one
//! meets the tlog-policy quorum.

pub mod witness;
