//! `acsgd anpr IMAGE…`: one JSON line per image on stdout,
//! `{"image", "plates": [{"text", "country", "confidence", "box"}], "ms"}`, or
//! `{"image", "error"}` for a file that cannot be read. `ms` is the recognition of the decoded
//! frame (localisation and OCR), not the file's decoding.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use serde_json::json;

use super::models::{init_runtime, ModelSource};
use super::pipeline::{jpeg, Reader};
use super::AnprError;

/// What `acsgd anpr` was asked.
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub images: Vec<PathBuf>,
    pub models: Option<PathBuf>,
    pub onnxruntime: Option<PathBuf>,
    pub threads: usize,
    /// Inference threads spin between operators ([`crate::settings::Anpr::spin`]).
    pub spin: bool,
    /// Write each plate's rectified crop here as `{image stem}-{n}.jpg`.
    pub crops: Option<PathBuf>,
}

/// Reads every image; returns how many could not be read. Fails only when the models or the
/// runtime cannot be loaded.
pub fn run(o: &Options, out: &mut dyn Write) -> Result<usize, AnprError> {
    let env = init_runtime(o.onnxruntime.as_deref())?;
    let mut reader = Reader::new(
        &env,
        &ModelSource {
            dir: o.models.clone(),
            threads: o.threads,
            spin: o.spin,
        },
    )?;
    if let Some(d) = &o.crops {
        std::fs::create_dir_all(d)
            .map_err(|e| AnprError::Image(format!("{}: {e}", d.display())))?;
    }
    let mut failed = 0;
    for path in &o.images {
        let line = match read_one(&mut reader, path, o.crops.as_deref()) {
            Ok(v) => v,
            Err(e) => {
                failed += 1;
                json!({"image": path, "error": e.to_string()})
            }
        };
        writeln!(out, "{line}").map_err(|e| AnprError::Image(format!("stdout: {e}")))?;
    }
    Ok(failed)
}

fn read_one(
    reader: &mut Reader,
    path: &std::path::Path,
    crops: Option<&std::path::Path>,
) -> Result<serde_json::Value, AnprError> {
    let frame = super::image::read_file(path)?;
    let t = Instant::now();
    let plates = reader.read(&frame)?;
    let ms = t.elapsed().as_secs_f64() * 1e3;
    if let Some(dir) = crops {
        let stem = path.file_stem().unwrap_or_default().to_string_lossy();
        for (i, p) in plates.iter().enumerate() {
            let f = dir.join(format!("{stem}-{i}.jpg"));
            std::fs::write(&f, jpeg(&p.crop, 90)?)
                .map_err(|e| AnprError::Image(format!("{}: {e}", f.display())))?;
        }
    }
    let plates: Vec<_> = plates
        .iter()
        .map(|p| {
            json!({
                "text": p.text,
                "country": p.country,
                "confidence": (p.confidence as f64 * 1000.0).round() / 1000.0,
                "box": p.bbox,
            })
        })
        .collect();
    Ok(json!({"image": path, "plates": plates, "ms": (ms * 10.0).round() / 10.0}))
}
