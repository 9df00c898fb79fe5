//! Writing step artifacts: every file goes to a temporary name in the target directory and is
//! renamed into place, so an interrupted run leaves no half-written file. Image-token domains
//! without a plugin are delivered as their raw token grid (JSON) with a false-colour preview of
//! the ids — labelled as tokens, never as an image.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tessera_runtime::types::{Detokenized, Value};

use crate::error::EngineError;

/// An encoded artifact before writing: name, kind, file name, bytes.
pub(crate) type EncodedFile = (String, ArtifactKind, String, Vec<u8>);

/// What an artifact file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ArtifactKind {
    Text,
    Json,
    Image,
    Tensor,
    Bytes,
    /// Token ids and grid shape of a domain no plugin detokenizes.
    RawTokens,
    /// A false-colour picture of raw token ids (one colour per id), not a decoded image.
    RawTokensPreview,
}

/// A file a step wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WrittenArtifact {
    pub name: String,
    pub kind: ArtifactKind,
    pub path: PathBuf,
}

/// Writes `bytes` to `path` through a temporary file in the same directory and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), EngineError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| EngineError::io("creating", dir, e))?;
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "artifact".into());
    // Unique per writer: concurrent runs may write the same file (e.g. the cache's last key).
    static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let temp = dir.join(format!(
        ".{file_name}.{}.{}.tmp",
        std::process::id(),
        WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    let result = (|| {
        let mut file = std::fs::File::create(&temp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&temp, path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&temp);
        return Err(EngineError::io("writing", path, e));
    }
    Ok(())
}

/// A file name made of the artifact name's safe characters.
pub(crate) fn safe_name(name: &str) -> String {
    let safe: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if safe.is_empty() {
        "artifact".into()
    } else {
        safe
    }
}

/// Encodes a plugin's artifacts as files (name, kind, file name, bytes), without writing.
pub(crate) fn encode_detokenized(out: &Detokenized) -> Vec<EncodedFile> {
    out.artifacts
        .iter()
        .map(|a| {
            let safe = safe_name(&a.name);
            let (kind, ext, bytes) = match &a.value {
                Value::Text(t) => (ArtifactKind::Text, "txt", t.as_bytes().to_vec()),
                Value::Json(j) => (ArtifactKind::Json, "json", j.as_bytes().to_vec()),
                Value::Image(i) => {
                    let ext = match i.mime.as_str() {
                        "image/png" => "png",
                        "image/jpeg" => "jpg",
                        _ => "img",
                    };
                    (ArtifactKind::Image, ext, i.data.clone())
                }
                Value::Tensor(t) => (ArtifactKind::Tensor, "tensor", t.data.clone()),
                Value::Bytes(b) => (ArtifactKind::Bytes, "bin", b.clone()),
            };
            (a.name.clone(), kind, format!("{safe}.{ext}"), bytes)
        })
        .collect()
}

/// The raw token grid of `domain` as files: `tokens.raw.json` (ids and shape) and
/// `tokens.raw-preview.png` (one false colour per id, each token a block of pixels).
pub(crate) fn encode_raw_tokens(
    domain: &str,
    ids: &[u32],
    shape: &[u32],
) -> Result<Vec<EncodedFile>, EngineError> {
    let json = serde_json::json!({
        "kind": "raw-tokens",
        "note": format!("raw `{domain}` token ids: no installed plugin decodes this domain, so these are tokens, not an image"),
        "domain": domain,
        "shape": shape,
        "ids": ids,
    });
    let json = serde_json::to_vec_pretty(&json).map_err(|e| EngineError::Encode {
        what: "raw tokens".into(),
        reason: e.to_string(),
    })?;
    let mut files = vec![(
        "raw-tokens".to_owned(),
        ArtifactKind::RawTokens,
        "tokens.raw.json".to_owned(),
        json,
    )];
    if let [height, width] = shape
        && (*height as usize) * (*width as usize) == ids.len()
        && !ids.is_empty()
    {
        let png = false_colour_png(ids, *height as usize, *width as usize)?;
        files.push((
            "raw-tokens-preview".to_owned(),
            ArtifactKind::RawTokensPreview,
            "tokens.raw-preview.png".to_owned(),
            png,
        ));
    }
    Ok(files)
}

/// Pixels per token side in the preview.
const CELL: usize = 8;

/// A deterministic, well-spread colour per token id.
fn colour(id: u32) -> [u8; 3] {
    let mut x = id.wrapping_mul(0x9E37_79B9) ^ 0x5bd1_e995;
    x ^= x >> 15;
    x = x.wrapping_mul(0x2c1b_3c6d);
    x ^= x >> 12;
    [(x >> 16) as u8, (x >> 8) as u8, x as u8]
}

fn false_colour_png(ids: &[u32], height: usize, width: usize) -> Result<Vec<u8>, EngineError> {
    let (w, h) = (width * CELL, height * CELL);
    let mut pixels = vec![0u8; w * h * 3];
    for y in 0..h {
        for x in 0..w {
            let c = colour(ids[(y / CELL) * width + x / CELL]);
            let at = (y * w + x) * 3;
            pixels[at..at + 3].copy_from_slice(&c);
        }
    }
    let encode_error = |e: png::EncodingError| EngineError::Encode {
        what: "raw token preview".into(),
        reason: e.to_string(),
    };
    let mut out = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut out, w as u32, h as u32);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        encoder
            .add_text_chunk(
                "Description".into(),
                "false-colour raw token ids (not a decoded image)".into(),
            )
            .map_err(encode_error)?;
        let mut writer = encoder.write_header().map_err(encode_error)?;
        writer.write_image_data(&pixels).map_err(encode_error)?;
    }
    Ok(out)
}

/// Writes encoded files into `dir`, each atomically; returns what was written.
pub(crate) fn write_files(
    dir: &Path,
    files: Vec<EncodedFile>,
) -> Result<Vec<WrittenArtifact>, EngineError> {
    let mut written = Vec::with_capacity(files.len());
    for (name, kind, file_name, bytes) in files {
        let path = dir.join(&file_name);
        write_atomic(&path, &bytes)?;
        written.push(WrittenArtifact { name, kind, path });
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_writes_leave_only_the_final_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("step/out.txt");
        write_atomic(&path, b"first").unwrap();
        write_atomic(&path, b"second").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"second");
        let names: Vec<_> = std::fs::read_dir(dir.path().join("step"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, vec!["out.txt".to_owned()]);
        // A directory in the way is an error naming the path, not a panic.
        let error = write_atomic(dir.path(), b"x").unwrap_err().to_string();
        assert!(error.contains("writing"), "{error}");
    }

    #[test]
    fn raw_tokens_are_labelled_and_previewed_per_id() {
        let ids: Vec<u32> = (0..6).map(|i| i % 3).collect();
        let files = encode_raw_tokens("tok_rgb@224", &ids, &[2, 3]).unwrap();
        assert_eq!(files.len(), 2);
        let json: serde_json::Value = serde_json::from_slice(&files[0].3).unwrap();
        assert_eq!(json["kind"], "raw-tokens");
        assert_eq!(json["shape"], serde_json::json!([2, 3]));
        assert!(json["note"].as_str().unwrap().contains("not an image"));
        assert_eq!(files[1].1, ArtifactKind::RawTokensPreview);
        let decoder = png::Decoder::new(std::io::Cursor::new(files[1].3.clone()));
        let mut reader = decoder.read_info().unwrap();
        let mut pixels = vec![0; reader.output_buffer_size()];
        reader.next_frame(&mut pixels).unwrap();
        assert_eq!((reader.info().width, reader.info().height), (24, 16));
        let at = |x: usize, y: usize| &pixels[(y * 24 + x) * 3..(y * 24 + x) * 3 + 3];
        // Equal ids, equal colours; different ids, different colours.
        assert_eq!(at(0, 0), at(3 * CELL, 0)); // ids[0] == ids[3] == 0
        assert_ne!(at(0, 0), at(CELL, 0));
        // A shape that does not match the ids gets the JSON only.
        assert_eq!(encode_raw_tokens("det", &ids, &[6]).unwrap().len(), 1);
    }
}
