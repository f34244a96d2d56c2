//! A report directory as one download: zip (deflated) or tar, files in manifest order, so
//! `verify-report` works on the unpacked result unchanged.

use std::io::{Read, Write};
use std::path::Path;

/// Every file a report directory holds, in a fixed order (the manifest and its signature last).
pub fn report_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = super::FILES
        .iter()
        .chain(super::OPTIONAL_FILES.iter())
        .map(|s| s.to_string())
        .collect();
    names.push("manifest.json".into());
    names.push("manifest.sig".into());
    names.retain(|n| dir.join(n).is_file());
    names
}

pub fn zip_dir(dir: &Path, out: impl Write + std::io::Seek) -> std::io::Result<()> {
    let mut z = zip::ZipWriter::new(out);
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .unix_permissions(0o644);
    let mut buf = vec![0u8; 1 << 16];
    for name in report_files(dir) {
        z.start_file(name.as_str(), opts)
            .map_err(std::io::Error::other)?;
        let mut f = std::fs::File::open(dir.join(&name))?;
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            z.write_all(&buf[..n])?;
        }
    }
    z.finish().map_err(std::io::Error::other)?;
    Ok(())
}

pub fn tar_dir(dir: &Path, out: impl Write) -> std::io::Result<()> {
    let mut t = tar::Builder::new(out);
    for name in report_files(dir) {
        let mut f = std::fs::File::open(dir.join(&name))?;
        let mut h = tar::Header::new_gnu();
        h.set_size(f.metadata()?.len());
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_cksum();
        t.append_data(&mut h, &name, &mut f)?;
    }
    t.into_inner()?.flush()
}
