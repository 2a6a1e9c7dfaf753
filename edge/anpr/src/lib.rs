//! Plate recognition on the appliance: camera frames to plate reads.
//!
//! - [`image`]: outside images decoded only after their declared size is checked.
//! - [`source`]: frames from opencv `VideoCapture` (RTSP, video file, V4L2 device) or HTTP
//!   JPEG snapshots.
//! - [`pipeline`]: localisation, rectification and recognition of one frame (two ONNX models,
//!   [`models`]), decoded straight into the plate [formats](mod@format) by [`ctc`].
//! - [`text`]: plates found as text by PP-OCRv4's detector and recogniser (weights trained on
//!   real photos), decoded into the same formats; [`pipeline`] runs both readers.
//! - [`vote`]: one plate per passage out of the frames' reads.
//! - [`cli`]: `acsgd anpr IMAGE…`.
//! - [`settings`]: the configuration's `[anpr]` table.
//!
//! The capture loop that drives a camera sensor by its lane's occupancy and hands its reads to
//! fusion is the appliance's (`acsgd::camera`): this crate knows neither fusion's state nor
//! the outbox.

pub mod cli;
pub mod ctc;
pub mod format;
pub mod image;
pub mod models;
pub mod pipeline;
pub mod settings;
pub mod source;
pub mod text;
pub mod vote;

/// What can go wrong reading plates.
#[derive(Debug, thiserror::Error)]
pub enum AnprError {
    /// ONNX Runtime could not be loaded. A text: the outcome of loading it is kept for every
    /// later caller, and `ort::Error` cannot be cloned.
    #[error("{0}")]
    Runtime(String),
    #[error("model {model}: {problem}")]
    Model { model: String, problem: String },
    /// A model's output was not what the pipeline expects.
    #[error("inference: {0}")]
    Inference(String),
    /// ONNX Runtime refused a tensor or a run.
    #[error("inference: {0}")]
    Ort(#[from] ort::Error),
    /// An image that could not be read or processed.
    #[error("image: {0}")]
    Image(String),
    /// opencv failed on an image.
    #[error("image: {0}")]
    Opencv(#[from] opencv::Error),
    /// An image file that could not be read.
    #[error("image: {0}")]
    Io(#[from] std::io::Error),
    /// A frame source that could not be opened or read.
    #[error("source {source_url}: {problem}")]
    Source { source_url: String, problem: String },
}
