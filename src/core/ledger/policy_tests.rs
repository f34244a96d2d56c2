use super::*;
use crate::core::ledger::cosign::{Cosignature, cosigned_message};
use crate::core::ledger::hash::Hash;
use crate::core::ledger::keys::{LedgerKey, Origin};
use crate::core::ledger::note::Checkpoint;
use ed25519_dalek::{Signer as _, SigningKey};

const ORIGIN: &str = "ledger.example/prod";

fn log_key() -> LedgerKey {
    LedgerKey::from_seed(Origin::parse(ORIGIN).unwrap(), [1; 32]).unwrap()
}

fn witness(seed: u8, name: &str) -> (SigningKey, CosignerKey) {
    let sk = SigningKey::from_bytes(&[seed; 32]);
    let k = CosignerKey::new(Origin::parse(name).unwrap(), sk.verifying_key()).unwrap();
    (sk, k)
}

fn checkpoint_note(size: u64) -> String {
    Checkpoint {
        origin: Origin::parse(ORIGIN).unwrap(),
        size,
        root: Hash::of(&[&size.to_be_bytes()]),
    }
    .sign(&log_key())
}

fn cosign(note: &str, sk: &SigningKey, k: &CosignerKey) -> String {
    let body = &note[..note.find("\n\n").unwrap() + 1];
    let c = Cosignature {
        name: k.name().to_owned(),
        key_id: k.key_id(),
        timestamp: 1_800_000_000,
        signature: sk.sign(&cosigned_message(body, 1_800_000_000)).to_bytes(),
    };
    format!("{note}{}", c.to_line())
}

fn line_err(text: &str) -> usize {
    match Policy::parse(text) {
        Err(PolicyError::Line { line, .. }) => line,
        other => panic!("expected a line error for {text:?}, got {other:?}"),
    }
}

/// The spec's example shape: two groups of three, 2-of-X and any-of-Y, both required.
fn example() -> (Policy, Vec<(SigningKey, CosignerKey)>) {
    let ws: Vec<_> = (0..6u8)
        .map(|i| witness(10 + i, &format!("w{i}.example")))
        .collect();
    let names = ["X1", "X2", "X3", "Y1", "Y2", "Y3"];
    let mut text = format!(
        "# comment\nlog {} https://log.example/\n\n",
        log_key().vkey()
    );
    for (n, (_, k)) in names.iter().zip(&ws) {
        text.push_str(&format!("  witness\t{n} {k}\n"));
    }
    text.push_str("group X-witnesses 2 X1 X2 X3\ngroup Y-witnesses any Y1 Y2 Y3\n");
    text.push_str(
        "group X-and-Y all X-witnesses Y-witnesses\n   # indented comment\nquorum X-and-Y\n",
    );
    (Policy::parse(&text).unwrap(), ws)
}

#[test]
fn spec_example_quorum() {
    let (p, ws) = example();
    assert_eq!(p.witnesses().len(), 6);
    assert_eq!(p.logs()[0].url.as_deref(), Some("https://log.example/"));
    let yes = |v: &[usize]| {
        let mut f = vec![false; 6];
        for &i in v {
            f[i] = true;
        }
        p.quorum_met(&f)
    };
    assert!(yes(&[0, 1, 3]));
    assert!(yes(&[0, 2, 5]));
    assert!(!yes(&[0, 3, 4, 5]), "only one X");
    assert!(!yes(&[0, 1, 2]), "no Y");
    assert!(!yes(&[]));

    let note = checkpoint_note(10);
    let v = p.check(&note).unwrap();
    assert!(!v.quorum_met);
    assert_eq!(v.missing.len(), 6);
    assert_eq!(v.checkpoint.size, 10);
    let mut n = note.clone();
    for i in [0, 1, 4] {
        n = cosign(&n, &ws[i].0, &ws[i].1);
    }
    let v = p.check(&n).unwrap();
    assert!(v.quorum_met);
    assert_eq!(v.cosigned, ["X1", "X2", "Y2"]);
    assert_eq!(v.missing, ["X3", "Y1", "Y3"]);
}

#[test]
fn check_refuses_wrong_log_and_bad_cosignatures() {
    let (p, ws) = example();
    let other = LedgerKey::from_seed(Origin::parse(ORIGIN).unwrap(), [2; 32]).unwrap();
    let foreign =
        Checkpoint::parse_body(&checkpoint_note(3)[..checkpoint_note(3).find("\n\n").unwrap() + 1])
            .unwrap()
            .sign(&other);
    assert_eq!(p.check(&foreign), Err(PolicyCheckError::UnknownLog));
    // A cosignature moved onto another checkpoint fails: the note is refused, not just short.
    let good = cosign(&checkpoint_note(4), &ws[0].0, &ws[0].1);
    let line = good.lines().last().unwrap();
    let moved = format!("{}{line}\n", checkpoint_note(5));
    assert!(matches!(
        p.check(&moved),
        Err(PolicyCheckError::BadCosignature(_))
    ));
    // A tampered log signature.
    let tampered = checkpoint_note(6).replacen("\n6\n", "\n7\n", 1);
    assert!(matches!(
        p.check(&tampered),
        Err(PolicyCheckError::BadLogSignature(_))
    ));
    assert!(matches!(
        p.check("nonsense"),
        Err(PolicyCheckError::Note(_))
    ));
}

#[test]
fn no_logs_and_quorum_none() {
    let (sk, k) = witness(3, "w.example");
    let p = Policy::parse(&format!("witness W {k}\nquorum W\n")).unwrap();
    assert!(p.requires_cosignatures());
    // No logs listed: any log's note is taken (the caller checks the log signature).
    let note = checkpoint_note(2);
    assert!(!p.check(&note).unwrap().quorum_met);
    assert!(p.check(&cosign(&note, &sk, &k)).unwrap().quorum_met);
    let none = Policy::parse("quorum none\n").unwrap();
    assert!(!none.requires_cosignatures());
    assert!(none.check(&note).unwrap().quorum_met);
}

#[test]
fn parse_errors_name_the_line() {
    let (_, a) = witness(3, "a.example");
    let (_, b) = witness(4, "b.example");
    let w = format!("witness A {a}\nwitness B {b}\n");
    // Undefined before use.
    assert_eq!(line_err(&format!("group G any A B\n{w}quorum G\n")), 1);
    assert_eq!(line_err(&format!("{w}quorum C\n")), 3);
    // Each name a member only once, across groups too.
    assert_eq!(line_err(&format!("{w}group G any A A\nquorum G\n")), 3);
    assert_eq!(
        line_err(&format!("{w}group G any A\ngroup H any A B\nquorum H\n")),
        4
    );
    // Thresholds.
    for k in ["0", "3", "01", "+1", "-1", "two"] {
        assert_eq!(
            line_err(&format!("{w}group G {k} A B\nquorum G\n")),
            3,
            "{k}"
        );
    }
    assert!(Policy::parse(&format!("{w}group G 2 A B\nquorum G\n")).is_ok());
    // Empty groups, reserved and duplicate names, duplicate keys (even under another name).
    assert_eq!(line_err(&format!("{w}group G any\nquorum G\n")), 3);
    assert_eq!(line_err(&format!("witness none {a}\nquorum none\n")), 1);
    assert_eq!(line_err(&format!("{w}group G any none\nquorum G\n")), 3);
    assert_eq!(
        line_err(&format!("{w}witness A {}\nquorum A\n", witness(5, "c").1)),
        3
    );
    let renamed = CosignerKey::new(Origin::parse("other").unwrap(), *a.public()).unwrap();
    assert_eq!(line_err(&format!("{w}witness C {renamed}\nquorum A\n")), 3);
    let lk = log_key().vkey().to_string();
    assert_eq!(line_err(&format!("log {lk}\nlog {lk}\nquorum none\n")), 2);
    // Quorum: exactly one.
    assert_eq!(Policy::parse(&w), Err(PolicyError::NoQuorum));
    assert_eq!(line_err(&format!("{w}quorum A\nquorum B\n")), 4);
    assert_eq!(line_err(&format!("{w}quorum A B\n")), 3);
    // Wrong key types, bad keywords and characters.
    assert_eq!(line_err(&format!("witness A {lk}\nquorum A\n")), 1);
    assert_eq!(line_err(&format!("log {a}\nquorum none\n")), 1);
    assert_eq!(line_err("quorum none\nwitnesses A x\n"), 2);
    assert_eq!(line_err("quorum none\r\n"), 1);
    assert_eq!(
        line_err(&format!(
            "{w}witness C {} http://x extra\nquorum A\n",
            witness(6, "c").1
        )),
        3
    );
    assert!(matches!(
        Policy::parse(&"#".repeat(MAX_POLICY_BYTES + 1)),
        Err(PolicyError::TooLarge)
    ));
}

#[test]
fn limits_are_at_least_32() {
    let mut text = String::new();
    for i in 0..32u8 {
        let (_, k) = witness(100 + i, &format!("w{i}"));
        text.push_str(&format!("witness W{i} {k}\n"));
        let log = LedgerKey::from_seed(Origin::parse(&format!("l{i}")).unwrap(), [i; 32]).unwrap();
        text.push_str(&format!("log {}\n", log.vkey()));
    }
    for i in 0..32 {
        text.push_str(&format!("group G{i} any W{i}\n"));
    }
    let all: Vec<String> = (0..32).map(|i| format!("G{i}")).collect();
    text.push_str(&format!("group Q 16 {}\nquorum Q\n", all.join(" ")));
    let p = Policy::parse(&text).unwrap();
    let mut f = vec![false; 32];
    f[..15].iter_mut().for_each(|x| *x = true);
    assert!(!p.quorum_met(&f));
    f[31] = true;
    assert!(p.quorum_met(&f));
}
