//! `[anpr]`: plate recognition on the appliance (cameras whose transport is a `url`), as the
//! technician writes it in the configuration, and its checks (keys relative to the table).

use std::path::PathBuf;

use acsgd_fusion::settings::Invalid;
use serde::Deserialize;

/// The least confidence of a read that votes, unless configured otherwise.
pub const MIN_CONFIDENCE: f32 = 0.2;

/// Whether inference threads spin unless configured otherwise: not, because the appliance runs
/// a reader per camera and two cameras reading at once were a third slower a frame with their
/// threads spinning (`models/text_models.md`, "Threads that spin").
pub const SPIN: bool = false;

/// Plate recognition on the appliance (cameras whose transport is a `url`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Anpr {
    /// `libonnxruntime.so` (absent: `$ORT_DYLIB_PATH`, beside the binary, `/usr/lib/acsgd/`).
    pub onnxruntime: Option<PathBuf>,
    /// A directory with `plate_loc.onnx` and `plate_ocr.onnx` to use instead of the models
    /// built into the binary.
    pub models: Option<PathBuf>,
    /// Threads per inference (0: one per core).
    pub threads: usize,
    /// Whether an inference's threads spin between its operators instead of sleeping: faster
    /// on a box whose cores one camera's reader has to itself, slower where two read at once.
    pub spin: bool,
    /// Whether the text detector takes a third look at a frame where nothing else read a
    /// plate, the frame twice as large as its first (`Reader::largest_look`): reads small
    /// plates in large frames, and costs such a frame up to four first looks more.
    pub largest_look: bool,
    /// Frames read per vehicle at most; later frames of a long presence are skipped.
    pub max_frames: usize,
    /// Reads below this confidence do not vote.
    pub min_confidence: f32,
    /// On a lane without a presence sensor: a plate unseen this long has left.
    pub gap_s: f64,
    /// Seconds between attempts to reopen a failed stream (doubling up to a minute).
    pub retry_s: f64,
}

impl Default for Anpr {
    fn default() -> Self {
        Anpr {
            onnxruntime: None,
            models: None,
            threads: 0,
            spin: SPIN,
            largest_look: true,
            max_frames: 40,
            min_confidence: MIN_CONFIDENCE,
            gap_s: 1.0,
            retry_s: 2.0,
        }
    }
}

impl Anpr {
    /// Checks the ranges serde cannot.
    pub fn validate(&self) -> Result<(), Invalid> {
        let a = self;
        if a.max_frames == 0 || a.max_frames > 1000 {
            return Err(Invalid::new(
                "max_frames".into(),
                "must be between 1 and 1000".into(),
            ));
        }
        if !(0.0..=1.0).contains(&a.min_confidence) {
            return Err(Invalid::new(
                "min_confidence".into(),
                "must be between 0 and 1".into(),
            ));
        }
        for (key, v) in [("gap_s", a.gap_s), ("retry_s", a.retry_s)] {
            if !(v.is_finite() && v > 0.0 && v <= 3600.0) {
                return Err(Invalid::new(
                    key.into(),
                    "must be more than 0 and at most 3600 seconds".into(),
                ));
            }
        }
        Ok(())
    }
}
