//! The ledger's read side: changes and their evidence packets folded from stored facts, proofs and
//! bundles streamed from storage, and the audit that recomputes every derived table from the
//! signed entries. Used by the REST API and the CLI; never writes.

pub mod audit;
pub mod changes;
pub mod export;
