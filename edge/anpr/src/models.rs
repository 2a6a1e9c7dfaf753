//! ONNX Runtime and the two plate models: where the runtime library is found, the models
//! built into the binary (or taken from a directory), and the sessions made from them once.
//!
//! The runtime is loaded at run time (`ort`'s `load-dynamic`): `libonnxruntime.so` from PyPI's
//! `onnxruntime` wheel, which `.ci/setup` fetches, checks against its sha256 and caches. It is
//! looked for, in order, at the path given (config `[anpr] onnxruntime`, `--onnxruntime`),
//! `$ORT_DYLIB_PATH`, `libonnxruntime.so` beside the binary, and `/usr/lib/acsgd/`.

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ort::environment::Environment;
use ort::session::builder::GraphOptimizationLevel;
use ort::session::Session;

use super::pipeline::{LOC_H, LOC_W, OCR_H, OCR_W};
use super::AnprError;

/// Where the `acsgd-models` package installs the models, for a build without them inside.
pub const INSTALLED_MODELS: &str = "/usr/share/acsgd/models";

/// The models built into the binary (feature `embedded-models`), each `None` without it.
#[cfg(feature = "embedded-models")]
mod builtin {
    /// The localiser (`models/plate_loc.onnx`, see its model card).
    pub const LOCALISER: Option<&[u8]> = Some(include_bytes!("../../../models/plate_loc.onnx"));
    /// The recogniser (`models/plate_ocr.onnx`).
    pub const RECOGNISER: Option<&[u8]> = Some(include_bytes!("../../../models/plate_ocr.onnx"));
    /// PP-OCRv4's text detector (`models/text_det.onnx`, see `models/text_models.md`).
    pub const TEXT_DETECTOR: Option<&[u8]> = Some(include_bytes!("../../../models/text_det.onnx"));
    /// PP-OCRv4's text recogniser, its dictionary in its metadata (`models/text_rec.onnx`).
    pub const TEXT_RECOGNISER: Option<&[u8]> =
        Some(include_bytes!("../../../models/text_rec.onnx"));
}
#[cfg(not(feature = "embedded-models"))]
mod builtin {
    pub const LOCALISER: Option<&[u8]> = None;
    pub const RECOGNISER: Option<&[u8]> = None;
    pub const TEXT_DETECTOR: Option<&[u8]> = None;
    pub const TEXT_RECOGNISER: Option<&[u8]> = None;
}

/// The built-in bytes of model `name`, if this build has them.
fn builtin(name: &str) -> Option<&'static [u8]> {
    match name {
        "plate_loc.onnx" => builtin::LOCALISER,
        "plate_ocr.onnx" => builtin::RECOGNISER,
        "text_det.onnx" => builtin::TEXT_DETECTOR,
        "text_rec.onnx" => builtin::TEXT_RECOGNISER,
        _ => None,
    }
}

/// Where a model's bytes come from.
enum Origin {
    /// The directory given (`[anpr] models`, `--models`).
    File(PathBuf),
    BuiltIn(&'static [u8]),
    /// `acsgd-models`' file, in a build without built-in models.
    Installed(PathBuf),
}

static RUNTIME: OnceLock<Result<Environment, String>> = OnceLock::new();

fn candidates(given: Option<&Path>) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = given.map(Path::to_path_buf).into_iter().collect();
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty()) {
        v.push(p.into());
    }
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        v.push(dir.join("libonnxruntime.so"));
    }
    v.push("/usr/lib/acsgd/libonnxruntime.so".into());
    v
}

/// Loads ONNX Runtime once per process. Later calls return the first call's outcome.
pub fn init_runtime(given: Option<&Path>) -> Result<Environment, AnprError> {
    RUNTIME
        .get_or_init(|| {
            let tried = candidates(given);
            let Some(path) = tried.iter().find(|p| p.is_file()) else {
                return Err(format!(
                    "ONNX Runtime library not found (tried {}); run .ci/setup, or set ORT_DYLIB_PATH",
                    tried
                        .iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            };
            // Held here, the environment lives as long as the process.
            ort::init_from(path)
                .map_err(|e| format!("{}: {e}", path.display()))?
                .with_name("acsgd-anpr")
                .build()
                .map_err(|e| format!("{}: {e}", path.display()))
        })
        .clone()
        .map_err(AnprError::Runtime)
}

/// Where the models come from.
#[derive(Debug, Clone, Default)]
pub struct ModelSource {
    /// A directory with candidate models (`plate_loc.onnx`, `plate_ocr.onnx`, `text_det.onnx`,
    /// `text_rec.onnx`): those it holds replace the built-in ones.
    pub dir: Option<PathBuf>,
    /// Threads per inference (0: ONNX Runtime's choice, one per core).
    pub threads: usize,
    /// Whether an inference's threads spin between its operators (stopped at the end of each
    /// run) instead of sleeping ([`crate::settings::Anpr::spin`]).
    pub spin: bool,
}

impl ModelSource {
    /// Where model `name` comes from: the given directory when it holds it, else the binary
    /// or, in a build without built-in models, the installed file.
    fn origin(&self, name: &str) -> Origin {
        match (&self.dir, builtin(name)) {
            (Some(d), _) if d.join(name).exists() => Origin::File(d.join(name)),
            (_, Some(bytes)) => Origin::BuiltIn(bytes),
            (_, None) => Origin::Installed(Path::new(INSTALLED_MODELS).join(name)),
        }
    }

    fn bytes(&self, name: &str) -> Result<Cow<'static, [u8]>, AnprError> {
        let (path, installed) = match self.origin(name) {
            Origin::BuiltIn(b) => return Ok(Cow::Borrowed(b)),
            Origin::File(p) => (p, false),
            Origin::Installed(p) => (p, true),
        };
        std::fs::read(&path)
            .map(Cow::Owned)
            .map_err(|e| AnprError::Model {
                model: path.display().to_string(),
                problem: if installed && e.kind() == std::io::ErrorKind::NotFound {
                    "not found: install the acsgd-models package, or set [anpr] models".into()
                } else {
                    e.to_string()
                },
            })
    }

    /// The model's file, or that it is the built-in one, for messages.
    pub(crate) fn label(&self, name: &str) -> String {
        match self.origin(name) {
            Origin::File(p) | Origin::Installed(p) => p.display().to_string(),
            Origin::BuiltIn(_) => format!("{name} (built in)"),
        }
    }

    fn session(&self, env: &Environment, name: &str) -> Result<Session, AnprError> {
        let bytes = self.bytes(name)?;
        let model_err = |e: &dyn std::fmt::Display| AnprError::Model {
            model: name.to_string(),
            problem: e.to_string(),
        };
        let mut b = Session::builder(env)
            .map_err(|e| model_err(&e))?
            .with_optimization_level(GraphOptimizationLevel::Level3)
            .map_err(|e| model_err(&e))?
            // Threads that sleep between operators wake late for the next one: the recogniser's
            // 500 small operators each pay that. Spinning threads are stopped at the end of
            // each run (`force_spinning_stop`), because a frame runs four sessions one after
            // the other and threads left spinning after one's run would take the cores from
            // the next one's.
            .with_intra_op_spinning(self.spin)
            .map_err(|e| model_err(&e))?
            .with_config_entry("session.force_spinning_stop", "1")
            .map_err(|e| model_err(&e))?;
        if self.threads > 0 {
            b = b
                .with_intra_threads(self.threads)
                .map_err(|e| model_err(&e))?;
        }
        b.commit_from_memory(&bytes).map_err(|e| model_err(&e))
    }

    pub fn localiser(&self, env: &Environment) -> Result<Session, AnprError> {
        let s = self.session(env, "plate_loc.onnx")?;
        expect_input(&s, &self.label("plate_loc.onnx"), 3, LOC_H, LOC_W)?;
        Ok(s)
    }

    pub fn recogniser(&self, env: &Environment) -> Result<Session, AnprError> {
        let s = self.session(env, "plate_ocr.onnx")?;
        expect_input(&s, &self.label("plate_ocr.onnx"), 1, OCR_H, OCR_W)?;
        Ok(s)
    }

    pub fn text_detector(&self, env: &Environment) -> Result<Session, AnprError> {
        let s = self.session(env, "text_det.onnx")?;
        expect_input(&s, &self.label("text_det.onnx"), 3, -1, -1)?;
        Ok(s)
    }

    pub fn text_recogniser(&self, env: &Environment) -> Result<Session, AnprError> {
        let s = self.session(env, "text_rec.onnx")?;
        expect_input(&s, &self.label("text_rec.onnx"), 3, -1, -1)?;
        Ok(s)
    }
}

/// A model from another release (the recogniser's input was 32x128 before it was 32x192)
/// is refused when it is loaded, with what it wants and what it would get, rather than
/// failing on every frame. Dimensions the model leaves open (-1) fit anything.
/// `-1` in `h` or `w`: any size (the text models take frames and lines of any shape).
fn expect_input(s: &Session, model: &str, channels: i32, h: i32, w: i32) -> Result<(), AnprError> {
    let want = [channels as i64, h as i64, w as i64];
    let shape: Option<Vec<i64>> = s
        .inputs()
        .iter()
        .find(|i| i.name() == "x")
        .and_then(|i| i.dtype().tensor_shape())
        .map(|s| s.iter().copied().collect());
    let fits = |got: &[i64]| {
        got.len() == 4
            && got[1..]
                .iter()
                .zip(want)
                .all(|(&g, w)| g < 0 || w < 0 || g == w)
    };
    // Open dimensions as `?`, as ONNX tools print them.
    let dim = |d: i64| {
        if d < 0 {
            "?".to_string()
        } else {
            d.to_string()
        }
    };
    match shape {
        Some(got) if fits(&got) => Ok(()),
        got => Err(AnprError::Model {
            model: model.to_string(),
            problem: format!(
                "input `x` is {}, this build feeds [N, {}, {}, {}]",
                got.map_or("missing".to_string(), |g| {
                    let dims: Vec<String> = g.iter().map(|&d| dim(d)).collect();
                    format!("[{}]", dims.join(", "))
                }),
                dim(want[0]),
                dim(want[1]),
                dim(want[2])
            ),
        }),
    }
}
