//! The C2SP tlog-tiles view (`/tlog/…`) and `changetrail export tiles DIR`, read back by crates
//! nobody here wrote: `signed_note` checks the checkpoint against our vkey, `tlog_tiles` lists the
//! tiles a size needs, recomputes the root from them and proves a record. `tlog_tiles` is a port
//! of Go's sumdb tlog, whose tile paths carry a height (`tile/8/<L>/…`, `tile/8/data/…`); C2SP
//! fixes the height at 8 and drops it, so the readers here map one to the other.

use crate::support::db::draft;
use crate::support::server::{TestApp, TestDb, config, ct, spawn_app_with};
use changetrail::auth::Role;
use changetrail::core::ledger::entry::Entry;
use reqwest::StatusCode;
use reqwest::header::{CACHE_CONTROL, CONTENT_ENCODING, CONTENT_TYPE};
use std::collections::HashMap;
use std::io::Read;
use std::path::Path;
use tlog_tiles::{Tile, TileHashReader, TileReader};

const IMMUTABLE: &str = "public, max-age=31536000, immutable";
/// Reviewer-only bundles: no shared cache may hand one to someone else.
const IMMUTABLE_PRIVATE: &str = "private, max-age=31536000, immutable";

/// The C2SP path of a tlog_tiles tile of height 8: `tile/8/0/x001/002` → `tile/0/x001/002`,
/// `tile/8/data/…` → `tile/entries/…`.
fn c2sp(t: &Tile) -> String {
    let go = t.path();
    let rest = go.strip_prefix("tile/8/").unwrap();
    match rest.strip_prefix("data/") {
        Some(n) => format!("tile/entries/{n}"),
        None => format!("tile/{rest}"),
    }
}

/// Tiles already fetched (over HTTP or from files), by C2SP path: `read_tiles` is synchronous.
struct Fetched(HashMap<String, Vec<u8>>);

impl TileReader for Fetched {
    fn height(&self) -> u8 {
        8
    }

    fn read_tiles(&self, tiles: &[Tile]) -> Result<Vec<Vec<u8>>, tlog_tiles::Error> {
        tiles
            .iter()
            .map(|t| {
                self.0
                    .get(&c2sp(t))
                    .cloned()
                    .ok_or(tlog_tiles::Error::InvalidTile)
            })
            .collect()
    }

    fn save_tiles(&self, _: &[Tile], _: &[Vec<u8>]) {}
}

/// The level-0 tiles among `tiles`, as the entry bundles of the same index and width.
fn bundles_of(tiles: &[Tile]) -> Vec<Tile> {
    tiles
        .iter()
        .filter(|t| t.level() == 0)
        .map(|t| {
            let mut b = *t;
            b.set_is_data();
            b
        })
        .collect()
}

/// Verifies `note` with our vkey and returns its checkpoint.
fn checked_checkpoint(note: &[u8], vkey: &str) -> tlog_tiles::Checkpoint {
    let verifier = signed_note::StandardVerifier::new(vkey).unwrap();
    let list = signed_note::VerifierList::new(vec![Box::new(verifier)]);
    let note = signed_note::Note::from_bytes(note).unwrap();
    note.verify(&list).unwrap();
    tlog_tiles::Checkpoint::from_bytes(note.text()).unwrap()
}

/// Checks the whole log `files` describes (checkpoint, every tile and bundle a reader needs)
/// with the independent crates; returns the checkpoint.
fn check_log(files: &Fetched, checkpoint: &[u8], vkey: &str) -> tlog_tiles::Checkpoint {
    let cp = checked_checkpoint(checkpoint, vkey);
    let (size, root) = (cp.size(), *cp.hash());
    let reader = TileHashReader::new(size, root, files);
    assert_eq!(tlog_tiles::tree_hash(size, &reader).unwrap(), root);
    // A record proof for an entry in the middle, from the tiles alone.
    let n = size / 2 + 3;
    let proof = tlog_tiles::prove_record(size, n, &reader).unwrap();
    let tiles = Tile::new_tiles(8, 0, size);
    // Every entry hashes to its leaf in the level-0 tile and decodes as our entry `seq`.
    for bundle in bundles_of(&tiles) {
        let level0 = &files.0[&c2sp(&bundle).replace("tile/entries/", "tile/0/")];
        let bytes = &files.0[&c2sp(&bundle)];
        let entries = split(bytes);
        assert_eq!(entries.len() as u32, bundle.width(), "{}", c2sp(&bundle));
        for (i, e) in entries.iter().enumerate() {
            let seq = bundle.level_index() * 256 + i as u64;
            let leaf = tlog_tiles::record_hash(e);
            assert_eq!(leaf.0[..], level0[i * 32..i * 32 + 32], "entry {seq}");
            assert_eq!(Entry::decode(e).unwrap().seq, seq);
            if seq == n {
                tlog_tiles::check_record(&proof, size, root, n, leaf).unwrap();
                let mut wrong = leaf;
                wrong.0[0] ^= 1;
                assert!(tlog_tiles::check_record(&proof, size, root, n, wrong).is_err());
            }
        }
    }
    cp
}

/// An entry bundle's entries: u16 big-endian lengths, nothing trailing.
fn split(mut b: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while !b.is_empty() {
        let len = usize::from(u16::from_be_bytes([b[0], b[1]]));
        out.push(b[2..2 + len].to_vec());
        b = &b[2 + len..];
    }
    out
}

async fn fetch(app: &TestApp, path: &str, token: Option<&str>) -> reqwest::Response {
    app.get(&format!("/tlog/{path}"), token).await
}

/// Fetches every tile and bundle a tree of `size` needs, checking status and headers.
async fn fetch_log(app: &TestApp, size: u64) -> Fetched {
    let tiles = Tile::new_tiles(8, 0, size);
    let mut out = HashMap::new();
    for t in tiles.iter().chain(&bundles_of(&tiles)) {
        let path = c2sp(t);
        let token = t.is_data().then_some(app.reviewer.as_str());
        let r = fetch(app, &path, token).await;
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        assert_eq!(r.headers()[CONTENT_TYPE], "application/octet-stream");
        let cache = if t.is_data() {
            IMMUTABLE_PRIVATE
        } else {
            IMMUTABLE
        };
        assert_eq!(r.headers()[CACHE_CONTROL], cache, "{path}");
        assert!(r.headers().get(CONTENT_ENCODING).is_none());
        out.insert(path, r.bytes().await.unwrap().to_vec());
    }
    Fetched(out)
}

/// Every file under `dir` but the checkpoint, by path relative to it.
fn read_dir(dir: &Path) -> Fetched {
    let mut out = HashMap::new();
    let mut todo = vec![dir.join("tile")];
    while let Some(d) = todo.pop() {
        for f in std::fs::read_dir(d).unwrap() {
            let p = f.unwrap().path();
            if p.is_dir() {
                todo.push(p);
            } else {
                let rel = p.strip_prefix(dir).unwrap().to_str().unwrap().to_owned();
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    Fetched(out)
}

fn export(db: &TestDb, out: &Path) -> (i32, String) {
    let o = ct(db.path())
        .args(["export", "--database-url", &db.url, "tiles", "--entries"])
        .arg(out)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    eprintln!("{err}");
    (o.status.code().unwrap_or(-1), err)
}

/// The tile count the export's summary line states.
fn written(summary: &str) -> usize {
    let after = summary.split("Wrote ").nth(1).unwrap();
    after.split(' ').next().unwrap().parse().unwrap()
}

async fn append_and_checkpoint(app: &TestApp, from: u64, to: u64) -> u64 {
    app.appender
        .append((from..=to).map(draft).collect())
        .await
        .unwrap();
    app.writer.checkpoint().await.unwrap();
    app.store.latest_checkpoint().await.unwrap().unwrap().size
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tiles_served_and_exported_read_back_with_independent_crates_sqlite() {
    tiles_read_back(TestDb::sqlite().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tiles_served_and_exported_read_back_with_independent_crates_postgres() {
    if let Some(db) = TestDb::postgres("tlog_tiles").await {
        tiles_read_back(db).await;
    }
}

async fn tiles_read_back(db: TestDb) {
    let app = spawn_app_with(config(&db)).await;
    // Made first: a token is a ledger entry, and the checkpoint must not move under the test.
    let ingest = app.token(Role::Ingest).await;
    let size = append_and_checkpoint(&app, 1, 600).await;
    assert!(
        size > 512,
        "level-1 tiles need more than 256 entries: {size}"
    );

    // The checkpoint, open to anyone, never cached for long.
    let r = fetch(&app, "checkpoint", None).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()[CONTENT_TYPE], "text/plain; charset=utf-8");
    assert_eq!(r.headers()[CACHE_CONTROL], "no-cache");
    let note = r.bytes().await.unwrap().to_vec();
    let served = fetch_log(&app, size).await;
    let cp = check_log(&served, &note, &app.vkey);
    assert_eq!(cp.size(), size);
    assert!(
        served.0.contains_key("tile/1/000.p/2"),
        "{:?}",
        served.0.keys()
    );

    access_rules(&app, &ingest, size).await;

    // The static export: the same bytes, checked the same way from files.
    let dir = db.path().join("tiles");
    let (code, summary) = export(&db, &dir);
    assert_eq!(code, 0, "{summary}");
    let files = read_dir(&dir);
    assert_eq!(
        files.0, served.0,
        "the export differs from what serve answers"
    );
    let on_disk = std::fs::read(dir.join("checkpoint")).unwrap();
    assert_eq!(on_disk, note);
    check_log(&files, &on_disk, &app.vkey);
    assert_eq!(written(&summary), files.0.len());

    // More entries: only new or grown tiles are written, full ones are left alone.
    let full = dir.join("tile/0/000");
    let mtime = std::fs::metadata(&full).unwrap().modified().unwrap();
    let new_size = append_and_checkpoint(&app, 601, 900).await;
    let new_tiles = Tile::new_tiles(8, size, new_size);
    let expected = new_tiles.len() + bundles_of(&new_tiles).len();
    let (code, summary) = export(&db, &dir);
    assert_eq!(code, 0, "{summary}");
    assert_eq!(written(&summary), expected, "{summary}");
    assert_eq!(std::fs::metadata(&full).unwrap().modified().unwrap(), mtime);
    let files = read_dir(&dir);
    let on_disk = std::fs::read(dir.join("checkpoint")).unwrap();
    assert_eq!(check_log(&files, &on_disk, &app.vkey).size(), new_size);
    assert_eq!(
        on_disk,
        fetch(&app, "checkpoint", None).await.bytes().await.unwrap()
    );
    // Nothing changed: nothing but the checkpoint is written.
    let (code, summary) = export(&db, &dir);
    assert_eq!((code, written(&summary)), (0, 0), "{summary}");

    refusals(&db, &on_disk).await;
    app.stop().await;
}

/// Who may read what, what lies past the checkpoint, malformed paths, gzip.
async fn access_rules(app: &TestApp, ingest: &str, size: u64) {
    let bundle = "tile/entries/000";
    assert_eq!(
        fetch(app, bundle, None).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        fetch(app, bundle, Some("ct_bad_token")).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        fetch(app, bundle, Some(ingest)).await.status(),
        StatusCode::FORBIDDEN
    );
    let plain = fetch(app, bundle, Some(&app.reviewer)).await;
    assert_eq!(plain.status(), StatusCode::OK);
    let plain = plain.bytes().await.unwrap();
    // Gzip when asked for, the same bytes inside.
    let r = app
        .http
        .get(format!("{}/tlog/{bundle}", app.base))
        .bearer_auth(&app.reviewer)
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()[CONTENT_ENCODING], "gzip");
    let gz = r.bytes().await.unwrap();
    let mut unzipped = Vec::new();
    flate2::read::GzDecoder::new(&gz[..])
        .read_to_end(&mut unzipped)
        .unwrap();
    assert_eq!(unzipped, plain);
    assert!(gz.len() < plain.len());

    // Past the newest checkpoint: one more leaf than it has, the next full tile, level 2.
    let (full, w) = (size / 256, size % 256);
    let past = [
        format!("tile/0/{full:03}.p/{}", w + 1),
        format!("tile/0/{:03}", full),
        format!("tile/entries/{full:03}.p/{}", w + 1),
        "tile/1/000".to_owned(),
        "tile/2/000.p/1".to_owned(),
    ];
    for p in &past {
        let r = fetch(app, p, Some(&app.reviewer)).await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{p}");
        assert_eq!(r.headers()[CACHE_CONTROL], "no-store", "{p}");
    }
    // An older partial inside the checkpoint is still served.
    assert_eq!(
        fetch(app, "tile/0/000.p/7", None).await.status(),
        StatusCode::OK
    );
    for p in [
        "tile/0/00",
        "tile/0/0000",
        "tile/00/000",
        "tile/64/000",
        "tile/0/000.p/0",
        "tile/0/000.p/256",
        "tile/0/000.p/01",
        "tile/0/x000/001",
        "tile/0/001/000",
        "tile/0/x018/x446/x744/x073/x709/x551/616",
        "tile/0/99999999999999999999999",
        "tile/x/000",
        "tile/entries",
        "tile/entries/",
        "tile/entries/0",
        "tile/entries/000.p/256",
    ] {
        let r = fetch(app, p, Some(&app.reviewer)).await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{p}");
    }
}

/// A directory from another origin, or ahead of this ledger, is refused and left alone.
async fn refusals(db: &TestDb, ours: &[u8]) {
    let ours = String::from_utf8(ours.to_vec()).unwrap();
    let origin = ours.lines().next().unwrap();
    let size: u64 = ours.lines().nth(1).unwrap().parse().unwrap();
    let cases = [
        (ours.replace(origin, "other.example/log"), "origin"),
        (
            ours.replacen(&format!("\n{size}\n"), &format!("\n{}\n", size + 1), 1),
            "rollback",
        ),
        (
            ours.replacen(&format!("\n{size}\n"), &format!("\n{}\n", size - 1), 1),
            "fork",
        ),
    ];
    for (i, (note, why)) in cases.iter().enumerate() {
        let dir = db.path().join(format!("refused-{i}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("checkpoint"), note).unwrap();
        let (code, err) = export(db, &dir);
        assert_eq!(code, 1, "{why}: {err}");
        assert!(err.contains(why), "{why}: {err}");
        assert!(!dir.join("tile").exists(), "{why}: tiles were written");
        assert_eq!(
            std::fs::read_to_string(dir.join("checkpoint")).unwrap(),
            *note
        );
    }
    // A directory someone linked elsewhere is not written through.
    let dir = db.path().join("linked");
    let elsewhere = db.path().join("elsewhere");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::create_dir_all(&elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, dir.join("tile")).unwrap();
    let (code, err) = export(db, &dir);
    assert_ne!(code, 0, "{err}");
    assert!(err.contains("not a plain directory"), "{err}");
    assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0);
    // Without --entries (and without public_entries) no entry bundle is written.
    let dir = db.path().join("hashes-only");
    let o = ct(db.path())
        .args(["export", "--database-url", &db.url, "tiles"])
        .arg(&dir)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    assert!(dir.join("tile/0/000").exists());
    assert!(!dir.join("tile/entries").exists());
    // Asked for later, every bundle is written, not only those new since.
    let (code, err) = export(db, &dir);
    assert_eq!(code, 0, "{err}");
    assert!(dir.join("tile/entries/000").exists(), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_prefix_and_public_entries_sqlite() {
    another_prefix_and_public_entries(TestDb::sqlite().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_prefix_and_public_entries_postgres() {
    if let Some(db) = TestDb::postgres("tlog_tiles prefix").await {
        another_prefix_and_public_entries(db).await;
    }
}

async fn another_prefix_and_public_entries(db: TestDb) {
    let mut cfg = config(&db);
    cfg.tlog.prefix = "/logs/prod/".into();
    cfg.tlog.public_entries = true;
    let app = spawn_app_with(cfg).await;
    let size = append_and_checkpoint(&app, 1, 10).await;
    let cp = app.get("/logs/prod/checkpoint", None).await;
    assert_eq!(cp.status(), StatusCode::OK);
    let note = cp.bytes().await.unwrap();
    assert_eq!(checked_checkpoint(&note, &app.vkey).size(), size);
    let bundle = format!("/logs/prod/tile/entries/000.p/{size}");
    let r = app.get(&bundle, None).await;
    assert_eq!(r.status(), StatusCode::OK, "public entries need no token");
    assert_eq!(split(&r.bytes().await.unwrap()).len() as u64, size);
    let tile = format!("/logs/prod/tile/0/000.p/{size}");
    assert_eq!(app.get(&tile, None).await.status(), StatusCode::OK);
    // The default prefix is not served besides the configured one; the rest of the API is.
    for p in [
        "/tlog/checkpoint",
        "/tlog/tile/0/000.p/1",
        "/logs/prod/nothing",
    ] {
        assert_eq!(
            app.get(p, None).await.status(),
            StatusCode::NOT_FOUND,
            "{p}"
        );
    }
    assert_eq!(app.get("/healthz", None).await.status(), StatusCode::OK);
    app.stop().await;
}

/// Our list of tiles new between two sizes, and our path spelling, against tlog_tiles' (Go's
/// `NewTiles`), over sizes around tile and level boundaries and very large indices.
#[test]
fn our_tile_lists_and_paths_match_tlog_tiles() {
    use changetrail::core::ledger::tiles::{Tile as Ours, bundles_between, tiles_between};
    let sizes = [0u64, 1, 255, 256, 257, 511, 65_535, 65_536, 65_537, 70_000];
    let mut pairs: Vec<(u64, u64)> = sizes
        .iter()
        .flat_map(|&a| sizes.iter().filter(move |&&b| b >= a).map(move |&b| (a, b)))
        .collect();
    // Large trees, from a size just before (a list from 0 would be millions of tiles). tlog_tiles
    // overflows past 2^56 entries, so the largest here stays below.
    for b in [
        16_777_217,
        1_234_067 * 256 + 17,
        (1 << 40) + 12_345,
        (1 << 55) + 999,
    ] {
        pairs.extend([(b - 1, b), (b - 300, b), (b - 70_000, b)]);
    }
    for (a, b) in pairs {
        let theirs = Tile::new_tiles(8, a, b);
        let mut want: Vec<String> = theirs.iter().map(c2sp).collect();
        want.extend(bundles_of(&theirs).iter().map(c2sp));
        let ours: Vec<String> = tiles_between(a, b)
            .chain(bundles_between(a, b))
            .map(|t| t.path())
            .collect();
        let sorted = |mut v: Vec<String>| {
            v.sort();
            v
        };
        assert_eq!(sorted(ours), sorted(want.clone()), "{a} -> {b}");
        for p in &want {
            let t = Ours::parse(p).unwrap();
            assert_eq!(t.path(), *p);
            assert!(t.within(b), "{p} within {b}");
        }
    }
}
