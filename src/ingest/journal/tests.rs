use super::*;
use std::time::Duration;

const S: i64 = 1_000_000_000;
const WINDOW: Duration = Duration::from_secs(60);

fn record(i: i64, at: i64) -> Record {
    Record {
        received_ns: at,
        sender: SentBy {
            token_id: (i % 2 == 0).then(|| format!("tok{i}")),
            name: format!("sender {i}"),
        },
        request: vec![i as u8; 100 + i as usize],
    }
}

fn replay_all(j: &Journal, now: i64) -> (Vec<Record>, ReplayStats) {
    let mut out = Vec::new();
    let stats = j.replay(now, |r| out.push(r)).unwrap();
    (out, stats)
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "ctj"))
        .collect();
    v.sort();
    v
}

#[test]
fn records_come_back_in_order_after_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let key = [7u8; 32];
    let j = Journal::open(dir.path(), &key, 1 << 30, WINDOW).unwrap();
    let written: Vec<Record> = (0..20).map(|i| record(i, 100 * S + i)).collect();
    for r in &written {
        j.append(r, r.received_ns).unwrap();
    }
    drop(j);
    let j = Journal::open(dir.path(), &key, 1 << 30, WINDOW).unwrap();
    let (back, stats) = replay_all(&j, 101 * S);
    assert_eq!(back, written);
    assert_eq!(stats.records, 20);
    assert_eq!(
        (stats.damaged, stats.foreign_segments, stats.expired),
        (0, 0, 0)
    );
    // New records go to a new segment; both are replayed next time.
    j.append(&record(99, 102 * S), 102 * S).unwrap();
    drop(j);
    let j = Journal::open(dir.path(), &key, 1 << 30, WINDOW).unwrap();
    let (back, _) = replay_all(&j, 103 * S);
    assert_eq!(back.len(), 21);
    assert_eq!(back[20], record(99, 102 * S));
}

#[test]
fn nothing_is_in_clear_text_and_a_changed_byte_or_key_reads_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let j = Journal::open(dir.path(), &[1u8; 32], 1 << 30, WINDOW).unwrap();
    let mut r = record(2, 10 * S);
    r.request = b"Bearer secret-token-value".to_vec();
    j.append(&r, 10 * S).unwrap();
    j.append(&record(4, 10 * S), 10 * S).unwrap();
    drop(j);
    let seg = segments(dir.path()).remove(0);
    let bytes = std::fs::read(&seg).unwrap();
    let text = String::from_utf8_lossy(&bytes);
    assert!(!text.contains("secret-token") && !text.contains("sender 2"));

    // Another key: the segment is foreign, nothing is replayed.
    let other = Journal::open(dir.path(), &[2u8; 32], 1 << 30, WINDOW).unwrap();
    let (back, stats) = replay_all(&other, 11 * S);
    assert!(back.is_empty());
    assert_eq!(stats.foreign_segments, 1);
    drop(other);

    // Any single changed byte of the first record: it and what follows are refused.
    for pos in [HEADER + 2, HEADER + 10, HEADER + 40] {
        let mut bad = bytes.clone();
        bad[pos] ^= 0x20;
        std::fs::write(&seg, &bad).unwrap();
        let j = Journal::open(dir.path(), &[1u8; 32], 1 << 30, WINDOW).unwrap();
        let (back, stats) = replay_all(&j, 11 * S);
        assert!(back.is_empty(), "byte {pos}");
        assert_eq!(stats.damaged, 1);
    }
    // A changed nonce prefix in the header also fails every record.
    let mut bad = bytes.clone();
    bad[13] ^= 1;
    std::fs::write(&seg, &bad).unwrap();
    let j = Journal::open(dir.path(), &[1u8; 32], 1 << 30, WINDOW).unwrap();
    assert!(replay_all(&j, 11 * S).0.is_empty());
}

#[test]
fn a_torn_last_record_loses_only_itself() {
    let dir = tempfile::tempdir().unwrap();
    let j = Journal::open(dir.path(), &[3u8; 32], 1 << 30, WINDOW).unwrap();
    for i in 0..3 {
        j.append(&record(i, 5 * S), 5 * S).unwrap();
    }
    drop(j);
    let seg = segments(dir.path()).remove(0);
    let bytes = std::fs::read(&seg).unwrap();
    std::fs::write(&seg, &bytes[..bytes.len() - 7]).unwrap();
    let j = Journal::open(dir.path(), &[3u8; 32], 1 << 30, WINDOW).unwrap();
    let (back, stats) = replay_all(&j, 6 * S);
    assert_eq!(back, vec![record(0, 5 * S), record(1, 5 * S)]);
    assert_eq!(stats.damaged, 1);
}

#[test]
fn old_records_are_not_replayed_and_old_segments_are_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let j = Journal::open(dir.path(), &[4u8; 32], 1 << 30, WINDOW).unwrap();
    j.append(&record(0, 0), 0).unwrap();
    // A quarter window later the segment is closed; a new one takes the next record.
    j.append(&record(1, 20 * S), 20 * S).unwrap();
    assert_eq!(segments(dir.path()).len(), 2);
    drop(j);
    let j = Journal::open(dir.path(), &[4u8; 32], 1 << 30, WINDOW).unwrap();
    let (back, stats) = replay_all(&j, 70 * S);
    assert_eq!(back, vec![record(1, 20 * S)]);
    assert_eq!(stats.expired, 1);
    // The first segment's last record is older than the window: replay deleted it.
    assert_eq!(segments(dir.path()).len(), 1);
    j.sync(90 * S).unwrap();
    assert!(segments(dir.path()).is_empty(), "the second aged out too");
}

#[test]
fn the_disk_bound_holds_oldest_segment_first() {
    let dir = tempfile::tempdir().unwrap();
    // 8 MiB bound: segments of 1 MiB (the smallest).
    let j = Journal::open(dir.path(), &[5u8; 32], 8 << 20, WINDOW).unwrap();
    let mut r = record(0, S);
    r.request = vec![9u8; 64 << 10];
    for i in 0..400 {
        r.received_ns = S + i;
        j.append(&r, S + i).unwrap();
        assert!(j.bytes() <= (8 << 20) + (65 << 10), "{} bytes", j.bytes());
    }
    let on_disk: u64 = segments(dir.path())
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();
    assert_eq!(on_disk, j.bytes());
    drop(j);
    let j = Journal::open(dir.path(), &[5u8; 32], 8 << 20, WINDOW).unwrap();
    let (back, _) = replay_all(&j, 2 * S);
    // The newest records survive, in order, with none missing from the first kept one on.
    let first = back[0].received_ns;
    assert!(first > S, "the oldest were deleted");
    assert!(
        back.iter()
            .enumerate()
            .all(|(k, r)| r.received_ns == first + k as i64)
    );
    assert_eq!(back.last().unwrap().received_ns, S + 399);
}

#[test]
fn one_process_per_directory() {
    let dir = tempfile::tempdir().unwrap();
    let first = Journal::open(dir.path(), &[6u8; 32], 1 << 30, WINDOW).unwrap();
    let Err(e) = Journal::open(dir.path(), &[6u8; 32], 1 << 30, WINDOW) else {
        panic!("a second journal opened the same directory");
    };
    assert!(e.to_string().contains("journal_dir"), "{e}");
    drop(first);
    assert!(Journal::open(dir.path(), &[6u8; 32], 1 << 30, WINDOW).is_ok());
}

#[test]
fn a_rotated_key_still_reads_what_the_old_one_wrote() {
    let dir = tempfile::tempdir().unwrap();
    let (old, new) = ([8u8; 32], [9u8; 32]);
    // A running journal rekeys itself: old and new segments read under the new key.
    let j = Journal::open(dir.path(), &old, 1 << 30, WINDOW).unwrap();
    j.append(&record(0, 10 * S), 10 * S).unwrap();
    j.append(&record(1, 30 * S), 30 * S).unwrap(); // a second segment
    assert!(j.uses(&old) && !j.uses(&new));
    j.rekey(&new).unwrap();
    assert!(j.uses(&new));
    j.append(&record(2, 31 * S), 31 * S).unwrap();
    drop(j);
    let j = Journal::open(dir.path(), &new, 1 << 30, WINDOW).unwrap();
    let (back, stats) = replay_all(&j, 32 * S);
    assert_eq!(
        back,
        vec![record(0, 10 * S), record(1, 30 * S), record(2, 31 * S)]
    );
    assert_eq!(stats.foreign_segments, 0);
    drop(j);
    // A stopped instance's directory, rekeyed by `keys rotate`.
    let third = [10u8; 32];
    assert_eq!(Journal::rekey_dir(dir.path(), &new, &third).unwrap(), 2);
    let j = Journal::open(dir.path(), &third, 1 << 30, WINDOW).unwrap();
    assert_eq!(replay_all(&j, 32 * S).0.len(), 3);
    // ... but not one in use: its process rekeys it.
    assert!(Journal::rekey_dir(dir.path(), &third, &old).is_err());
    drop(j);
    // The old key reads nothing now.
    let j = Journal::open(dir.path(), &old, 1 << 30, WINDOW).unwrap();
    let (back, stats) = replay_all(&j, 32 * S);
    assert!(back.is_empty());
    assert_eq!(stats.foreign_segments, 2);
    // A foreign segment is kept until its file ages out, not deleted as if empty.
    assert_eq!(segments(dir.path()).len(), 2);
}

#[test]
fn segments_have_keys_of_their_own() {
    let dir = tempfile::tempdir().unwrap();
    let j = Journal::open(dir.path(), &[11u8; 32], 1 << 30, WINDOW).unwrap();
    let r = record(0, S);
    j.append(&r, S).unwrap();
    j.append(&r, 20 * S).unwrap(); // same plaintext, record 0 of a new segment
    drop(j);
    let segs = segments(dir.path());
    let body = |p: &PathBuf| std::fs::read(p).unwrap()[HEADER..].to_vec();
    let (a, b) = (body(&segs[0]), body(&segs[1]));
    assert_eq!(a.len(), b.len());
    // Identical plaintext, identical nonce (index 0): only the key differs, and so do the bytes.
    assert_ne!(a[4..], b[4..], "a record's nonce was reused under one key");
}
