//! `changetrail proof` and `changetrail verify-proof`: one change's self-contained receipt, written
//! from the database and checked offline (src/core/ledger/FORMAT.md "Receipts").

use clap::Args;
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct ProofArgs {
    /// The change whose receipt is written.
    pub change_id: String,
    /// The receipt file to write (conventionally CHANGE_ID.receipt.json).
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Debug, Args)]
pub struct VerifyProofArgs {
    /// The receipt file (`changetrail proof`, or GET /v1/changes/{id}/receipt).
    pub file: PathBuf,
    /// The ledger's first verifier key (repeatable); later keys are trusted only through the
    /// rotations the receipt proves.
    #[arg(long = "trusted-key", value_name = "VKEY", required = true)]
    pub trusted_keys: Vec<String>,
    /// A C2SP tlog-policy file: the checkpoint must carry its quorum of valid cosignatures.
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
}

pub const PROOF_HELP: &str = "\
Write one change's self-contained receipt: every ledger entry about the change and its runs
(bytes, signature, payload unless erased), each with a C2SP tlog-proof (https://c2sp.org/tlog-proof)
against one checkpoint with the witnesses' cosignatures, and the entries that carry the
key history (entry 0 and every key rotation). `changetrail verify-proof` checks it offline with only
the file, the ledger's vkey and, optionally, a witness policy. GET /v1/changes/{id}/receipt returns
the same file.

The checkpoint is the newest; with [tlog] policy_file set, the newest that meets its quorum and
covers the change (else the newest, with a warning that verify-proof --policy will refuse it).

Reads the database (--database-url or the configuration). Exit 0 on success; 1 when the change is
unknown, has more entries than a receipt holds, or what the receipt needs (its entries, an erasure)
is not covered by a checkpoint yet; 3 on a usage error.";

pub const VERIFY_PROOF_HELP: &str = "\
Check a receipt offline, needing nothing but the file and the pinned key(s): the file is in its
canonical form (no byte may change); entry 0 names a pinned key and each key rotation the receipt
proves hands trust to the next key; the checkpoint is signed by the key in force at its size; every
entry decodes, is signed by the key in force at its sequence number, opens its payload commitment
(or is erased) and is included in the checkpoint by its tlog-proof. With --policy, the checkpoint
must also carry the policy's quorum of valid witness cosignatures, and the witnesses missing are
named.

Exit 0 when the receipt holds, 1 when it does not (the reason is printed), 3 on a usage error.";
