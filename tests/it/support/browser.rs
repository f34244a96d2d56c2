//! Headless Chromium (`CHANGETRAIL_TEST_CHROMIUM`, Debian's `chromium` by default, installed by
//! `.ci/run`) and a PNG decoder for reading its screenshots back.

use std::io::Read;
use std::path::PathBuf;

/// The browser, or `None` with a clear note that the test is skipped.
pub fn chromium() -> Option<PathBuf> {
    let p = std::env::var("CHANGETRAIL_TEST_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from("/usr/bin/chromium"));
    if p.exists() {
        Some(p)
    } else {
        eprintln!(
            "SKIPPED (browser test): no Chromium at {}; `apt-get install chromium` or set CHANGETRAIL_TEST_CHROMIUM (.ci/run installs it)",
            p.display()
        );
        None
    }
}

/// A decoded 8-bit RGB(A) PNG, enough for Chromium's screenshots.
pub struct Image {
    pub width: usize,
    pub height: usize,
    rgb: Vec<[u8; 3]>,
}

pub fn decode_png(bytes: &[u8]) -> Image {
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
    let (mut pos, mut idat) = (8, Vec::new());
    let (mut width, mut height, mut channels) = (0, 0, 0);
    while pos + 8 <= bytes.len() {
        let len = u32::from_be_bytes(bytes[pos..pos + 4].try_into().unwrap()) as usize;
        let kind = &bytes[pos + 4..pos + 8];
        let data = &bytes[pos + 8..pos + 8 + len];
        match kind {
            b"IHDR" => {
                width = u32::from_be_bytes(data[0..4].try_into().unwrap()) as usize;
                height = u32::from_be_bytes(data[4..8].try_into().unwrap()) as usize;
                assert_eq!(data[8], 8, "bit depth");
                assert_eq!(data[12], 0, "interlaced");
                channels = match data[9] {
                    2 => 3,
                    6 => 4,
                    t => panic!("colour type {t}"),
                };
            }
            b"IDAT" => idat.extend_from_slice(data),
            _ => {}
        }
        pos += 12 + len;
    }
    let mut raw = Vec::new();
    flate2::read::ZlibDecoder::new(idat.as_slice())
        .read_to_end(&mut raw)
        .unwrap();
    let stride = width * channels;
    let mut prev = vec![0u8; stride];
    let mut rgb = Vec::with_capacity(width * height);
    for y in 0..height {
        let row = &raw[y * (stride + 1)..(y + 1) * (stride + 1)];
        let (filter, src) = (row[0], &row[1..]);
        let mut cur = vec![0u8; stride];
        for x in 0..stride {
            let a = if x >= channels { cur[x - channels] } else { 0 };
            let b = prev[x];
            let c = if x >= channels { prev[x - channels] } else { 0 };
            let pred = match filter {
                0 => 0,
                1 => a,
                2 => b,
                3 => ((a as u16 + b as u16) / 2) as u8,
                4 => {
                    let p = a as i16 + b as i16 - c as i16;
                    let (pa, pb, pc) = (
                        (p - a as i16).abs(),
                        (p - b as i16).abs(),
                        (p - c as i16).abs(),
                    );
                    if pa <= pb && pa <= pc {
                        a
                    } else if pb <= pc {
                        b
                    } else {
                        c
                    }
                }
                f => panic!("PNG filter {f}"),
            };
            cur[x] = src[x].wrapping_add(pred);
        }
        for px in cur.chunks(channels) {
            rgb.push([px[0], px[1], px[2]]);
        }
        prev = cur;
    }
    Image { width, height, rgb }
}

impl Image {
    /// Pixels within a small distance of `c` (anti-aliasing blurs edges, not the middle of a bar).
    pub fn count(&self, c: [u8; 3]) -> usize {
        self.rgb
            .iter()
            .filter(|p| p.iter().zip(c).all(|(a, b)| a.abs_diff(b) <= 6))
            .count()
    }

    /// Distinct colours: a blank or broken page has a handful.
    pub fn colours(&self) -> usize {
        self.rgb
            .iter()
            .map(|p| (p[0] as u32) << 16 | (p[1] as u32) << 8 | p[2] as u32)
            .collect::<std::collections::HashSet<_>>()
            .len()
    }
}
