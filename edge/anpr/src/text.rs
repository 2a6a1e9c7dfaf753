//! Plates found as text, by models trained on real photos: PaddleOCR's PP-OCRv4 text detector
//! and recogniser (Apache-2.0; `models/text_det.md`, `models/text_rec.md`).
//!
//! The detector marks every line of text in the frame (a DB probability map, turned into
//! boxes as PaddleOCR's own post-processing does). Each line is cut out upright and read by
//! the recogniser, whose dictionary holds the province characters, Latin letters and
//! digits; its output is folded onto the plate charset ([`TEXT_CHARSET`]: lower case and
//! Cyrillic look-alikes onto their Latin twins) and decoded straight into the plate formats
//! ([`super::ctc`]), so a read that fits no format is dropped: makes, dealers' frames,
//! `RUS` marks, shop signs. Two things of the output are kept that the plate charset lacks:
//! separators (a space, a dot), which say where a plate's groups part, and O and 0 as one
//! glyph, which this recogniser cannot tell apart on plates.
//!
//! A plate is not always one line to the detector: a Russian plate's region sits beside its
//! series behind a bar, a Kazakh plate's region beside its flag strip, a double-row plate is
//! two lines, one above the other. So lines that sit side by side on one baseline, and lines
//! stacked as a double-row plate's rows, are also read joined (their step sequences one
//! after the other, a blank between), and the likeliest reads win where candidates overlap.
//!
//! The detector over a whole frame is most of a frame's time. [`TextReader::read_near`] runs
//! it only over the regions around given marks (the plate localiser's), at the whole frame's
//! scale and padded rather than stretched, so a plate's lines look to it as they do in the
//! whole frame; the caller reads the whole frame when that finds nothing, and where nothing
//! at all is read, the whole frame again larger ([`TextReader::read_large`]) and larger
//! still ([`TextReader::read_largest`]) (`pipeline::Reader::read`).

use std::ops::Range;

use opencv::core::{self, Mat, Point, Point2f, Rect, RotatedRect, Scalar, Size, Vector};
use opencv::imgproc;
use opencv::prelude::*;
use ort::environment::Environment;
use ort::session::Session;
use ort::value::Tensor;

use super::ctc::{Decoder, Recognised};
use super::models::ModelSource;
use super::pipeline::{bbox, cv, dist, order, ort_err, warp, PlateFound};
use super::AnprError;
use acsgd_fusion::plates::normalise;

/// The plate characters the recogniser's dictionary is folded onto: the plate recogniser's
/// charset and the special-use marks of Chinese plates (learner `学`, police `警`).
pub const TEXT_CHARSET: &str = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ京津沪渝冀豫云辽黑湘皖鲁新苏浙赣鄂桂甘晋蒙陕吉闽贵粤青藏川宁琼挂学警";
/// The detector's input: the frame scaled so that its longer side is this (up or down),
/// each side rounded to a multiple of 32 as the network needs.
pub const DET_SIDE: i32 = 960;
/// The shorter side the detector's second look at a frame scales it to ([`TextReader::read_large`]).
pub const DET_MIN_SIDE: i32 = 736;
/// The longer side of the frame in the detector's third look ([`TextReader::read_largest`]):
/// twice its first look's.
pub const DET_LARGEST_SIDE: i32 = 2 * DET_SIDE;
/// How much larger than the second look's scale the third look's has to be for it to be
/// taken: not for a panorama (wider than about twice its height), whose second look (its
/// shorter side at [`DET_MIN_SIDE`]) already saw it about as large.
pub const LARGEST_GAIN: f32 = 1.25;
/// The most the detector's third look enlarges a frame: not at all a frame under 768 pixels
/// on its longer side, which the second look already enlarged (a 640x360 frame 2.04 times).
/// There the third look read no plate more on the real photos, scaled or not, and cost
/// most of a plate-less frame's time (the test video's 640x360 frames: 0.6 – 0.8 s rather
/// than 0.3 – 0.4 s). At 2.0 the real photo `kz_049` scaled to 842 pixels wide (2.28) was
/// lost.
pub const LARGEST_MAX_ENLARGE: f32 = 2.5;
/// Detector probability above which a pixel is text (PaddleOCR's default).
const DET_THRESHOLD: f64 = 0.3;
/// Mean probability over a box below which it is dropped (PaddleOCR's default).
const BOX_THRESHOLD: f64 = 0.5;
/// The detector marks a shrunk core of each line; its boxes are grown back by
/// area × this / perimeter on every side (PaddleOCR's default).
const UNCLIP: f32 = 1.6;
/// Lines read per frame at most, the likeliest first: bounds the work on a frame full of
/// text (a billboard, a page of a newspaper held to the camera).
const MAX_LINES: usize = 48;
/// The recogniser's input height.
pub const REC_H: i32 = 48;
/// The width every line is padded to at least (the first of [`REC_WIDTHS`]). PP-OCR pads
/// to 320, the width it was trained at; a plate's line is 120 – 240 wide at height 48, and
/// the recogniser's time grows with the width. Measured on the real photos and six synthetic
/// sets (`models/text_models.md`, "Lines padded to 224"): 192 – 320 read as many plates,
/// within one of 3 620 (not all the same ones), 160 seven fewer; 224 keeps a margin from that
/// edge. The real photos blurred or compressed lose a few (4 of 747; 2 at 256). Those were
/// measured with a frame's lines padded to the widest of them ([`Padding::Widest`]), so a
/// line beside wider text was read wider; padded by its own width, one real photo is read no
/// more (`888BBB02`: read padded to 320, not to 224 – 288).
pub const REC_MIN_W: i32 = 224;
/// The widths a line is padded to ([`Padding::Own`]): the first that holds it, each at most a
/// third wider than the one before, so a line's padding is at most a third of it (beyond
/// [`REC_MIN_W`]); the last holds a line of [`MAX_LINE_ASPECT`] at [`REC_H`].
pub const REC_WIDTHS: [i32; 5] = [REC_MIN_W, 288, 384, 480, 576];
/// A line wider than this many times its height is no plate, nor part of one (a plate with
/// its flag strip is about 5; a sentence is far longer).
const MAX_LINE_ASPECT: f32 = 12.0;
/// The recogniser emits one step per this many input columns.
const REC_STRIDE: i32 = 8;
/// How much less likely than a current plate one of a format no longer issued is taken to
/// be, as a log-probability.
const RARE_PRIOR: f32 = -0.7;
/// How far below a double-row plate's upper row its lower row may start, in the upper row's
/// heights ([`above`]). A plate's two rows are a few millimetres apart, and the detector's
/// boxes are grown ([`UNCLIP`]) into that gap: on the real photos and three synthetic sets,
/// every plate read is read the same with 0.1 (some are lost at −0.2). Two plates one
/// above the other are further apart: with 0.6, the lower row of an Uzbek double-row plate was
/// joined with the region box of a Russian plate just below it, `C436AM` over `336` read as the
/// Russian `C436AM336`, where no such plate is (`synth.py scenes --split test --per-country 100
/// --first 2000 --regions any`, `uz_2006`: 0.5 of a row apart).
const ROW_GAP: f32 = 0.3;

/// Candidates whose greedy read has fewer characters are not decoded (formats have 7 to 9;
/// a plate read joined from a line and its neighbour may lose one or two to the join).
const MIN_CHARACTERS: usize = 5;
/// The share of a separator's probability that is the blank inside a plate's group (see
/// [`Decoder::with_separator`]): a tenth, so that a space misread between two characters of
/// a group costs a read at most a factor of ten.
const SEPARATOR_INSIDE: f32 = 0.1;
/// The share of `0`'s probability that `O` gets, and the reverse: all of it. PP-OCRv4 reads
/// a plate's letter O as the digit 0 (on the real photos' `001OOO06` it gives the letters
/// O under 0.2 %, as little as the digits 0), so it can say "O or 0" and no more. At 0.5, a
/// read paid half for each O it made of a 0, and of two formats that fit the same glyphs
/// the one with fewer letters won: `001OOO06` was read as the trailer `0010OO06`.
const TWIN_SHARE: f32 = 1.0;
/// The region the detector looks at around a plate the localiser marked: its box grown by
/// this share of its width on the left and on the right, and of its height above and below.
const REGION_GROW_W: f32 = 0.5;
const REGION_GROW_H: f32 = 1.0;
/// Two candidates for one plate: where the smaller's box lies this much inside the
/// larger's, only the likelier read is kept.
const OVERLAP: f32 = 0.5;

/// One line of text found in a frame.
#[derive(Debug, Clone)]
pub struct Line {
    /// Corners in frame pixels: top-left, top-right, bottom-right, bottom-left.
    pub quad: [Point2f; 4],
    /// Mean detector probability over the line.
    pub score: f32,
}

/// How the lines of a frame are padded to one width for the recogniser, in its input pixels
/// (the padding's steps are not read). The recogniser mixes a line's steps across its whole
/// width (SVTR's attention blocks), padding included, so what a line reads as depends on the
/// width it is padded to.
#[derive(Debug, Clone, PartialEq)]
pub enum Padding {
    /// All lines of a frame in one batch, padded to the widest of them and at least to this
    /// width: PP-OCR's way (at 320), and this reader's until stop 65 (at [`REC_MIN_W`]). A
    /// plate's line is then read at the width of the widest text beside it, and a line of a
    /// sentence makes every line in the frame cost as much as itself.
    Widest(i32),
    /// Each line padded to the first of these widths that holds it (to its own width beyond
    /// the last), a batch for each width: a line reads the same whatever else is in the frame.
    Own(Vec<i32>),
}

impl Padding {
    /// The width each line of these widths is padded to (multiples of [`REC_STRIDE`]).
    fn widths(&self, lines: &[i32]) -> Vec<i32> {
        let stride = |w: i32| (w + REC_STRIDE - 1) / REC_STRIDE * REC_STRIDE;
        match self {
            Padding::Widest(least) => {
                let w = stride(lines.iter().copied().max().unwrap_or(0).max(*least));
                vec![w; lines.len()]
            }
            Padding::Own(widths) => lines
                .iter()
                .map(|&l| stride(widths.iter().copied().find(|&w| w >= l).unwrap_or(l)))
                .collect(),
        }
    }
}

/// The two sessions and the map from the recogniser's classes onto [`TEXT_CHARSET`].
pub struct TextReader {
    det: Session,
    rec: Session,
    /// How many classes the recogniser gives a step (its dictionary, the blank and the space).
    classes: usize,
    /// The classes [`fold_map`] keeps, as (recogniser class, folded class): a few hundred of
    /// the 6 625, so folding a step reads only those, not every class of every step.
    kept: Vec<(usize, usize)>,
    /// The folded classes of `O` and `0`.
    twin: (Option<usize>, Option<usize>),
    /// The folded classes of the letters of [`MARKS_BEFORE`] and [`MARKS_AFTER`].
    marks: (Vec<Vec<usize>>, Vec<Vec<usize>>),
    /// What a Kazakh plate's flag strip is read as, and the folded classes of digits and
    /// of Latin letters ([`flag_strip`]).
    strip: Strip,
    decoder: Decoder,
    /// How lines are padded before the recogniser. [`Padding::Own`] of [`REC_WIDTHS`] unless
    /// changed: the bench compares it with the padding before.
    pub padding: Padding,
    /// How long the last frame's detection and recognition took, in milliseconds.
    pub detect_ms: f64,
    pub recognise_ms: f64,
}

/// The detector's scale for a whole frame: its longer side to [`DET_SIDE`].
fn whole_scale(frame: &Mat) -> f32 {
    DET_SIDE as f32 / frame.cols().max(frame.rows()).max(1) as f32
}

/// The detector's scale for its second look at a frame ([`TextReader::read_large`]).
fn large_scale(frame: &Mat) -> f32 {
    let short = frame.cols().min(frame.rows()).max(1) as f32;
    (DET_MIN_SIDE as f32 / short).max(whole_scale(frame))
}

/// Marks that part a plate's groups without being characters of it: what [`normalise`]
/// drops, and the other dots and colons the recogniser reads a Chinese plate's dot as.
const SEPARATORS: &str = " ·.•_|:：．。・";
/// Marks that are on no plate but in the text around plates: the slash of a camera's
/// counter (`0000/15296`) or of a date, the dash of a date or a telephone number
/// (`2024-03-15`, `+7 (727) 250-00-00`) ([`Decoder::with_foreign_marks`]). No plate of
/// Kazakhstan, Kyrgyzstan, Uzbekistan, Russia or China has a dash (Soviet plates did).
const FOREIGN_MARKS: &str = "/\\／-—－";

/// Maps the recogniser's classes (the CTC blank, its dictionary, and the space PaddleOCR
/// appends) onto the plate charset's classes, and the separators onto one class after them
/// (`charset.len() + 1`), and the marks no plate has onto the class after that. The dot of
/// `渝B·E7773` or the space of `123 ABC 02` is no character of the plate, but it says where
/// the plate's groups part, which the decoder weighs ([`Decoder::with_separator`]); a slash
/// says the text is no plate ([`Decoder::with_foreign_marks`]).
fn fold_map(dictionary: &[String], charset: &[char]) -> Vec<Option<usize>> {
    let separator = charset.len() + 1;
    let mut map = vec![Some(0)];
    for entry in dictionary {
        let only = |marks: &str| !entry.is_empty() && entry.chars().all(|c| marks.contains(c));
        if only(SEPARATORS) {
            map.push(Some(separator));
            continue;
        }
        if only(FOREIGN_MARKS) {
            map.push(Some(separator + 1));
            continue;
        }
        let n = normalise(entry);
        let mut cs = n.chars();
        map.push(match (cs.next(), cs.next()) {
            (Some(c), None) => charset.iter().position(|&x| x == c).map(|i| i + 1),
            _ => None,
        });
    }
    // The trailing space class.
    map.push(Some(separator));
    map
}

/// The classes [`fold_map`] keeps, as (recogniser class, folded class).
fn kept(fold: &[Option<usize>]) -> Vec<(usize, usize)> {
    fold.iter()
        .enumerate()
        .filter_map(|(from, to)| to.map(|to| (from, to)))
        .collect()
}

impl TextReader {
    pub fn new(env: &Environment, models: &ModelSource) -> Result<TextReader, AnprError> {
        let det = models.text_detector(env)?;
        let rec = models.text_recogniser(env)?;
        let dictionary: Vec<String> = rec
            .metadata()
            .ok()
            .and_then(|m| m.custom("character"))
            .map(|s| s.lines().map(str::to_string).collect())
            .ok_or_else(|| AnprError::Model {
                model: models.label("text_rec.onnx"),
                problem: "no `character` dictionary in its metadata".into(),
            })?;
        let charset: Vec<char> = TEXT_CHARSET.chars().collect();
        let class = |c: char| charset.iter().position(|&x| x == c).map(|i| i + 1);
        let fold = fold_map(&dictionary, &charset);
        Ok(TextReader {
            det,
            rec,
            twin: (class('O'), class('0')),
            marks: (
                MARKS_BEFORE
                    .iter()
                    .map(|m| m.chars().filter_map(class).collect())
                    .collect(),
                MARKS_AFTER
                    .iter()
                    .map(|m| m.chars().filter_map(class).collect())
                    .collect(),
            ),
            strip: Strip {
                marks: FLAG_STRIP.chars().filter_map(class).collect(),
                digits: ('0'..='9').filter_map(class).collect(),
                letters: ('A'..='Z').filter_map(class).collect(),
                twin: [class('O'), class('0')].into_iter().flatten().collect(),
                small: SMALL_MARKS.chars().filter_map(class).collect(),
            },
            classes: fold.len(),
            kept: kept(&fold),
            decoder: Decoder::new(&charset)
                .with_rare_prior(RARE_PRIOR)
                .with_separator(SEPARATOR_INSIDE)
                .with_foreign_marks(),
            padding: Padding::Own(REC_WIDTHS.to_vec()),
            detect_ms: 0.0,
            recognise_ms: 0.0,
        })
    }

    /// Every plate read in a BGR frame, the detector run over the whole frame.
    pub fn read(&mut self, frame: &Mat) -> Result<Vec<PlateFound>, AnprError> {
        self.read_whole(frame, whole_scale(frame))
    }

    /// Every plate read in a BGR frame, the detector run over the whole frame at a larger
    /// scale: its shorter side at [`DET_MIN_SIDE`] (RapidOCR's least side for PP-OCR; RapidOCR
    /// only scales up to it and never scales a photo down, a rule measured and left out),
    /// never smaller than [`TextReader::read`]'s. The detector finds some plates at one scale
    /// and not at the other (a large plate with wide-set characters, a plate whose line
    /// breaks up); a pass at this scale costs about twice one at [`DET_SIDE`], so the caller
    /// runs it only on a frame where nothing else read a plate (`pipeline::Reader::read`).
    pub fn read_large(&mut self, frame: &Mat) -> Result<Vec<PlateFound>, AnprError> {
        self.read_whole(frame, large_scale(frame))
    }

    /// The scale of the detector's third look at a frame ([`TextReader::read_largest`]): its
    /// longer side at [`DET_LARGEST_SIDE`]; `None` where that is not [`LARGEST_GAIN`] times
    /// the second look's ([`TextReader::read_large`]) or would enlarge the frame more than
    /// [`LARGEST_MAX_ENLARGE`] times.
    pub fn largest_scale(frame: &Mat) -> Option<f32> {
        let s = DET_LARGEST_SIDE as f32 / frame.cols().max(frame.rows()).max(1) as f32;
        (s >= LARGEST_GAIN * large_scale(frame) && s <= LARGEST_MAX_ENLARGE).then_some(s)
    }

    /// Every plate read in a BGR frame, the detector run over the whole frame at
    /// [`TextReader::largest_scale`]: twice the first look's, at least a quarter more than the
    /// second's; `None`, and no pass, where there is no such scale. A plate 65 – 110 pixels
    /// wide in a photo of 1053x791 to 1440x1080 is shrunk by both looks before (to 960 on the
    /// longer side, to 736 on the shorter) below what the detector finds: the real photos
    /// `kz_028`, `kz_049`, `cn_059` are read at this scale and at neither other. A pass costs
    /// about four times one at [`DET_SIDE`], so the caller runs it only where both looks before
    /// read nothing (`pipeline::Reader::read`).
    pub fn read_largest(&mut self, frame: &Mat) -> Result<Option<Vec<PlateFound>>, AnprError> {
        Self::largest_scale(frame)
            .map(|s| self.read_whole(frame, s))
            .transpose()
    }

    /// The plates read with the detector over the whole frame scaled by `s`.
    fn read_whole(&mut self, frame: &Mat, s: f32) -> Result<Vec<PlateFound>, AnprError> {
        let t0 = std::time::Instant::now();
        let lines = self.detect_at(frame, s, false)?;
        self.detect_ms = t0.elapsed().as_secs_f64() * 1e3;
        self.read_lines(frame, lines)
    }

    /// The plates read around `near` (quadrilaterals in frame pixels where plates may be,
    /// as the plate localiser marks them), the detector run only over the regions around
    /// them (`regions`), at the scale it runs at over a whole frame: a line it finds there
    /// is the line it finds in the whole frame, at a fraction of the cost.
    pub fn read_near(
        &mut self,
        frame: &Mat,
        near: &[[Point2f; 4]],
    ) -> Result<Vec<PlateFound>, AnprError> {
        let t0 = std::time::Instant::now();
        let (w, h) = (frame.cols(), frame.rows());
        let scale = whole_scale(frame);
        let mut lines = Vec::new();
        for r in regions(near, w, h) {
            // A copy of the region (a few hundred pixels each way; the detector scales it anyway).
            let part = Mat::roi(frame, r).map_err(cv)?.try_clone().map_err(cv)?;
            let found = self.detect_at(&part, scale, true)?;
            lines.extend(found.into_iter().map(|l| {
                Line {
                    quad: l
                        .quad
                        .map(|p| Point2f::new(p.x + r.x as f32, p.y + r.y as f32)),
                    score: l.score,
                }
            }));
        }
        self.detect_ms = t0.elapsed().as_secs_f64() * 1e3;
        self.read_lines(frame, lines)
    }

    /// The plates the given lines of a frame read as, alone and joined.
    fn read_lines(
        &mut self,
        frame: &Mat,
        mut lines: Vec<Line>,
    ) -> Result<Vec<PlateFound>, AnprError> {
        let t1 = std::time::Instant::now();
        lines.sort_by(|a, b| b.score.total_cmp(&a.score));
        lines.truncate(MAX_LINES);
        let mut crops = Vec::with_capacity(lines.len());
        let mut kept = Vec::with_capacity(lines.len());
        for l in lines {
            let c = upright(frame, &l.quad)?;
            if c.cols() as f32 > MAX_LINE_ASPECT * c.rows() as f32 || c.rows() < 4 {
                continue;
            }
            crops.push(c);
            kept.push(l);
        }
        let steps = self.recognise(&crops)?;
        let k = self.decoder.classes();
        let sep = self.decoder.separator_class();
        let mut cands: Vec<(Recognised, [Point2f; 4], Vec<usize>)> = Vec::new();
        let mut try_read = |parts: Vec<usize>| {
            let probs = joined(parts.iter().map(|&i| steps[i].as_slice()), k, sep);
            let t = probs.len() / k;
            // Every format has at least seven characters; a candidate whose likeliest
            // classes give fewer than five (a word of another script, a logo) is not
            // worth the constrained decoding, which is most of this stage's time.
            if characters(&probs, k) < MIN_CHARACTERS {
                return;
            }
            if let Some(r) = self.decoder.read(&probs, t, k) {
                if r.country.is_some() {
                    let quad = union(parts.iter().map(|&i| &kept[i].quad));
                    cands.push((r, quad, parts));
                }
            }
        };
        for i in 0..kept.len() {
            try_read(vec![i]);
            for j in 0..kept.len() {
                if i != j
                    && (beside(&kept[i].quad, &kept[j].quad) || above(&kept[i].quad, &kept[j].quad))
                {
                    try_read(vec![i, j]);
                }
            }
        }
        // The likeliest read first, by the geometric mean of its characters' probabilities
        // (a product would favour a plate read short, its region left off); a candidate
        // mostly inside one already kept is the same plate read another way.
        let per_char = |r: &Recognised| {
            r.confidence
                .powf(1.0 / r.text.chars().count().max(1) as f32)
        };
        cands.sort_by(|a, b| per_char(&b.0).total_cmp(&per_char(&a.0)));
        let mut out: Vec<PlateFound> = Vec::new();
        for (r, quad, _) in cands {
            let b = bbox(&quad, frame.cols(), frame.rows());
            if out.iter().any(|p| overlap(&p.bbox, &b) > OVERLAP) {
                continue;
            }
            out.push(PlateFound {
                text: r.text,
                country: r.country,
                confidence: r.confidence.clamp(0.0, 1.0),
                bbox: b,
                crop: upright(frame, &quad)?,
            });
        }
        out.sort_by_key(|p| p.bbox[0]);
        self.recognise_ms = t1.elapsed().as_secs_f64() * 1e3;
        Ok(out)
    }

    /// The lines of text in a frame, as PaddleOCR's DB post-processing finds them.
    pub fn detect(&mut self, frame: &Mat) -> Result<Vec<Line>, AnprError> {
        self.detect_at(frame, whole_scale(frame), false)
    }

    /// The lines of text in an image (a frame or a part of one) scaled by `s` for the
    /// detector, in the image's pixels.
    ///
    /// A whole frame is stretched to sides that are multiples of 32, as PaddleOCR does; a
    /// part (`exact`) is scaled by `s` alone and padded to them with grey (0 in the
    /// network's range), so that its text has the shape it has in the whole frame: a part is
    /// small, and rounding its sides would squash or stretch it by up to a seventh.
    fn detect_at(&mut self, frame: &Mat, s: f32, exact: bool) -> Result<Vec<Line>, AnprError> {
        if frame.empty() || frame.channels() != 3 {
            return Err(AnprError::Image(
                "expected a non-empty 3-channel frame".into(),
            ));
        }
        let (w, h) = (frame.cols(), frame.rows());
        let (rw, rh, dw, dh) = if exact {
            let (rw, rh) = (
                ((w as f32 * s).round() as i32).max(1),
                ((h as f32 * s).round() as i32).max(1),
            );
            (rw, rh, (rw + 31) / 32 * 32, (rh + 31) / 32 * 32)
        } else {
            let round32 = |v: i32| ((v as f32 * s / 32.0).round() as i32).max(1) * 32;
            let (dw, dh) = (round32(w), round32(h));
            (dw, dh, dw, dh)
        };
        let mut small = Mat::default();
        imgproc::resize(
            frame,
            &mut small,
            Size::new(rw, rh),
            0.0,
            0.0,
            imgproc::INTER_LINEAR,
        )
        .map_err(cv)?;
        let plane = (dw * dh) as usize;
        let mut input = vec![0f32; 3 * plane];
        for (i, px) in small.data_bytes().map_err(cv)?.chunks_exact(3).enumerate() {
            let at = (i / rw as usize) * dw as usize + i % rw as usize;
            // BGR planes scaled to [-1, 1], as PaddleOCR feeds them.
            for (c, &v) in px.iter().enumerate() {
                input[c * plane + at] = v as f32 / 127.5 - 1.0;
            }
        }
        let tensor =
            Tensor::from_array(([1usize, 3, dh as usize, dw as usize], input)).map_err(ort_err)?;
        let outputs = self.det.run(ort::inputs!["x" => tensor]).map_err(ort_err)?;
        let (shape, prob) = outputs[0].try_extract_tensor::<f32>().map_err(ort_err)?;
        let (mh, mw) = (shape[2] as i32, shape[3] as i32);
        let prob = Mat::new_rows_cols_with_data(mh, mw, prob)
            .map_err(cv)?
            .try_clone()
            .map_err(cv)?;
        drop(outputs);
        let mut bin = Mat::default();
        imgproc::threshold(
            &prob,
            &mut bin,
            DET_THRESHOLD,
            255.0,
            imgproc::THRESH_BINARY,
        )
        .map_err(cv)?;
        let mut bin8 = Mat::default();
        bin.convert_to(&mut bin8, core::CV_8U, 1.0, 0.0)
            .map_err(cv)?;
        let kernel = Mat::ones(2, 2, core::CV_8U)
            .map_err(cv)?
            .to_mat()
            .map_err(cv)?;
        let mut dilated = Mat::default();
        imgproc::dilate(
            &bin8,
            &mut dilated,
            &kernel,
            Point::new(-1, -1),
            1,
            core::BORDER_CONSTANT,
            imgproc::morphology_default_border_value().map_err(cv)?,
        )
        .map_err(cv)?;
        let mut outlines = Vector::<Vector<Point>>::new();
        imgproc::find_contours(
            &dilated,
            &mut outlines,
            imgproc::RETR_LIST,
            imgproc::CHAIN_APPROX_SIMPLE,
            Point::new(0, 0),
        )
        .map_err(cv)?;
        // Map pixels to the input's, then the input's (its scaled part) to the image's.
        let sx = dw as f32 / mw as f32 * w as f32 / rw as f32;
        let sy = dh as f32 / mh as f32 * h as f32 / rh as f32;
        let mut lines = Vec::new();
        for o in outlines.iter().take(1000) {
            let r = imgproc::min_area_rect(&o).map_err(cv)?;
            if r.size.width.min(r.size.height) < 3.0 {
                continue;
            }
            let score = box_score(&prob, &r)?;
            if score < BOX_THRESHOLD {
                continue;
            }
            let (bw, bh) = (r.size.width, r.size.height);
            let grow = bw * bh * UNCLIP / (2.0 * (bw + bh));
            let grown = RotatedRect::new(
                r.center,
                core::Size2f::new(bw + 2.0 * grow, bh + 2.0 * grow),
                r.angle,
            )
            .map_err(cv)?;
            if grown.size.width.min(grown.size.height) < 5.0 {
                continue;
            }
            let mut pts = [Point2f::default(); 4];
            grown.points(&mut pts).map_err(cv)?;
            let quad = order(&pts).map(|p| {
                Point2f::new(
                    (p.x * sx).clamp(0.0, w as f32 - 1.0),
                    (p.y * sy).clamp(0.0, h as f32 - 1.0),
                )
            });
            lines.push(Line {
                quad,
                score: score as f32,
            });
        }
        Ok(lines)
    }

    /// Each crop's recogniser steps, folded onto the plate charset: `t × classes` values
    /// per crop, `t` as many steps as the crop's own width gives (the padding is not read).
    pub fn recognise(&mut self, crops: &[Mat]) -> Result<Vec<Vec<f32>>, AnprError> {
        let widths: Vec<i32> = crops.iter().map(rec_width).collect();
        let pads = self.padding.widths(&widths);
        let mut batches = pads.clone();
        batches.sort_unstable();
        batches.dedup();
        let mut out = vec![Vec::new(); crops.len()];
        for bw in batches {
            let batch: Vec<usize> = (0..crops.len()).filter(|&n| pads[n] == bw).collect();
            let lines: Vec<(&Mat, i32)> = batch.iter().map(|&n| (&crops[n], widths[n])).collect();
            for (n, steps) in batch.into_iter().zip(self.recognise_batch(&lines, bw)?) {
                out[n] = steps;
            }
        }
        Ok(out)
    }

    /// [`TextReader::recognise`] of lines (each with its width at [`REC_H`]) padded to one
    /// width `bw`, in one run of the recogniser.
    fn recognise_batch(
        &mut self,
        crops: &[(&Mat, i32)],
        bw: i32,
    ) -> Result<Vec<Vec<f32>>, AnprError> {
        let plane = (REC_H * bw) as usize;
        let mut input = vec![0f32; 3 * plane * crops.len()];
        let mut resized = Vec::with_capacity(crops.len());
        for (n, &(c, cw)) in crops.iter().enumerate() {
            let mut r = Mat::default();
            imgproc::resize(
                c,
                &mut r,
                Size::new(cw, REC_H),
                0.0,
                0.0,
                imgproc::INTER_LINEAR,
            )
            .map_err(cv)?;
            let base = 3 * plane * n;
            for (i, px) in r.data_bytes().map_err(cv)?.chunks_exact(3).enumerate() {
                let (y, x) = (i / cw as usize, i % cw as usize);
                for (ch, &v) in px.iter().enumerate() {
                    input[base + ch * plane + y * bw as usize + x] = v as f32 / 127.5 - 1.0;
                }
            }
            resized.push(r);
        }
        let tensor = Tensor::from_array(([crops.len(), 3, REC_H as usize, bw as usize], input))
            .map_err(ort_err)?;
        let outputs = self.rec.run(ort::inputs!["x" => tensor]).map_err(ort_err)?;
        let (shape, probs) = outputs[0].try_extract_tensor::<f32>().map_err(ort_err)?;
        let (t, kr) = (shape[1] as usize, shape[2] as usize);
        if kr != self.classes {
            return Err(AnprError::Inference(format!(
                "text recogniser has {kr} classes, its dictionary {} (+ blank and space)",
                self.classes - 2
            )));
        }
        let k = self.decoder.classes();
        let mut out = Vec::with_capacity(crops.len());
        for (n, &(_, cw)) in crops.iter().enumerate() {
            let steps = (((cw + REC_STRIDE - 1) / REC_STRIDE) as usize + 1).min(t);
            let mut folded = vec![0f32; steps * k];
            for s in 0..steps {
                let row = &probs[(n * t + s) * kr..(n * t + s + 1) * kr];
                let dst = &mut folded[s * k..(s + 1) * k];
                for &(from, to) in &self.kept {
                    dst[to] += row[from];
                }
            }
            // A plate's O and 0 are one glyph to a reader of general text (Kazakh and Russian
            // plates draw them alike): each takes the other's probability too, so a slot's
            // format decides between them, and where two formats fit the same glyphs (a
            // Kazakh `001 OOO 06` or the trailer `0010 OO 06`), the order of `FORMATS`: the
            // vehicle's format before the trailer's.
            if let (Some(o), Some(z)) = (self.twin.0, self.twin.1) {
                for row in folded.chunks_exact_mut(k) {
                    let (po, pz) = (row[o], row[z]);
                    row[o] = po + TWIN_SHARE * pz;
                    row[z] = pz + TWIN_SHARE * po;
                }
            }
            country_marks(&mut folded, k, &self.marks.0, &self.marks.1);
            flag_strip(&mut folded, k, &self.strip);
            small_mark(&mut folded, k, &resized[n], &self.strip)?;
            out.push(folded);
        }
        Ok(out)
    }
}

/// The steps of lines read as one (each `k` classes a step), with a step between each two:
/// so that a character ending one and the same character starting the next stay two, and
/// as a separator (class `sep`; the blank where the output has none), since that is where a
/// plate's groups part. The rows of a double-row plate and the lines beside each other on a
/// one-row plate part there in every format (a Kazakh trailer's `6480` over `ZZ 10`, a
/// Russian series beside its region box), and the decoder weighs the step as the gap the
/// recogniser reads within a line ([`Decoder::with_separator`]): of two formats that fit the
/// same glyphs, the one whose groups part at the join. So a square trailer plate is read
/// `6480ZZ10`, not the car's `648OZZ10`, whose O the recogniser cannot tell from 0.
fn joined<'a>(parts: impl Iterator<Item = &'a [f32]>, k: usize, sep: Option<usize>) -> Vec<f32> {
    let mut probs: Vec<f32> = Vec::new();
    for (n, part) in parts.enumerate() {
        if n > 0 {
            let mut b = vec![0.0; k];
            b[sep.unwrap_or(0)] = 1.0;
            probs.extend(b);
        }
        probs.extend_from_slice(part);
    }
    probs
}

/// The country codes plates carry beside their number: Kazakhstan's and Kyrgyzstan's under
/// the flag at the left of a one-row plate, Uzbekistan's under the flag at the right; on a
/// two-row plate, beside the upper row. PP-OCRv4 reads them as text (a line of its own, or the
/// start or the end of the row's), and their letters fit formats: the `K` of `KZ` made the
/// Russian `K 205 BX 35` of the Kazakh trailer `8205 BX 35`, the `UZ` at the end of
/// `50 V 376 LL` was read as its last two letters.
///
/// Where a line begins with a code: no plate of the five countries begins with two Latin
/// letters other than a Russian trailer's, and Russian plates have no `Z`, `G` or `U`. So a line
/// whose read begins so has a mark there, never a plate's first letters. Russia's `RUS` (under
/// the region) is left out: taken as a mark it cost four synthetic Russian plates and read
/// none more.
const MARKS_BEFORE: [&str; 3] = ["KZ", "KG", "UZ"];
/// Where a line ends with a code: Kyrgyz and Uzbek plates end in letters, so one of them
/// whose last letters are `UZ` and whose country code is not read loses them (one in 676
/// such plates), against every Uzbek plate whose code is read into its letters.
const MARKS_AFTER: [&str; 1] = ["UZ"];

/// Where the greedy read of one line's folded steps begins with one of `before` or ends with
/// one of `after` (each given as its letters' classes; blanks and separators may come between
/// the letters), gives those steps' share of the letters to the foreign-mark class (the last
/// of `k`): the blank before or after a plate, no character of it
/// ([`Decoder::with_foreign_marks`]).
fn country_marks(probs: &mut [f32], k: usize, before: &[Vec<usize>], after: &[Vec<usize>]) {
    let runs = runs(probs, k);
    let same = |rs: &[(usize, Range<usize>)], mark: &[usize]| {
        !mark.is_empty() && rs.len() == mark.len() && rs.iter().zip(mark).all(|(r, m)| r.0 == *m)
    };
    let mut marked: Vec<&(usize, Range<usize>)> = Vec::new();
    if let Some(m) = before
        .iter()
        .find(|m| runs.len() >= m.len() && same(&runs[..m.len()], m))
    {
        marked.extend(&runs[..m.len()]);
    }
    let rest = runs.len() - marked.len();
    if let Some(m) = after
        .iter()
        .find(|m| rest >= m.len() && same(&runs[runs.len() - m.len()..], m))
    {
        marked.extend(&runs[runs.len() - m.len()..]);
    }
    for (class, steps) in marked {
        to_mark(probs, k, *class, steps.clone());
    }
}

/// A line's width once resized to the recogniser's height ([`REC_H`]), before its padding.
pub fn rec_width(line: &Mat) -> i32 {
    ((REC_H as f32 * line.cols() as f32 / line.rows().max(1) as f32).ceil() as i32).max(8)
}

/// Gives `steps`' probability of `class` to the foreign-mark class (the last of `k`).
fn to_mark(probs: &mut [f32], k: usize, class: usize, steps: Range<usize>) {
    for s in steps {
        let row = &mut probs[s * k..(s + 1) * k];
        row[k - 1] += row[class];
        row[class] = 0.0;
    }
}

/// What the `KZ` under a Kazakh plate's flag strip is read as when it is read as one
/// character: its `Z` (or the `Z` as a `2`, which it resembles at that size).
const FLAG_STRIP: &str = "Z2";

/// The classes [`flag_strip`] looks at.
struct Strip {
    marks: Vec<usize>,
    digits: Vec<usize>,
    letters: Vec<usize>,
    /// `O` and `0`, each either a digit or a letter ([`TextReader::recognise`]).
    twin: Vec<usize>,
    /// What the small `KZ` beside a Kazakh plate's digits is read as ([`small_mark`]).
    small: Vec<usize>,
}

/// Where the greedy read of a line is one character and then a current Kazakh plate
/// (`2` + `777 MMM 17`) and that character is what the flag strip's `KZ` reads as alone
/// ([`FLAG_STRIP`]), it is the strip, no character of the plate: its steps' share of it
/// goes to the foreign-mark class. Nine characters, a digit or `Z`, three digits, three
/// letters and two digits, are no plate of the five countries, so the decoder has to drop
/// one of them; left to itself it dropped a letter or a digit of the plate and kept the
/// strip's (`2777MM17`, a trailer's format, or `218TYA02` for `188TYA02`).
fn flag_strip(probs: &mut [f32], k: usize, strip: &Strip) {
    let runs = runs(probs, k);
    let is = |set: &[usize], c: usize| set.contains(&c) || strip.twin.contains(&c);
    let plate = |rs: &[(usize, Range<usize>)]| {
        rs.len() == 8
            && rs[..3].iter().all(|r| is(&strip.digits, r.0))
            && rs[3..6].iter().all(|r| is(&strip.letters, r.0))
            && rs[6..].iter().all(|r| is(&strip.digits, r.0))
    };
    if runs.len() == 9 && strip.marks.contains(&runs[0].0) && plate(&runs[1..]) {
        let (class, steps) = runs[0].clone();
        to_mark(probs, k, class, steps);
    }
}

/// What the `KZ` beside a Kazakh plate's digits is read as when it is read as one character:
/// its `K`, its `Z`, or the `Z` as a `2`.
const SMALL_MARKS: &str = "KZ2";
/// A character whose tallest stroke is under this share of the height of the characters
/// after it is a mark beside the plate, not a character of it ([`small_mark`]). Measured on
/// the real photos and a synthetic set of plates drawn both ways: the `KZ` of a Kazakh plate
/// 0.25 – 0.43 of the digits after it; a Russian plate's first letter 0.66 – 1.0 (the
/// standard draws its letters 58 mm high, its digits 76: 0.76).
const SMALL_MARK_HEIGHT: f32 = 0.55;
/// Blobs of ink lower than this (at [`REC_H`]) are no strokes: specks, a screw's edge.
const MIN_STROKE: i32 = REC_H / 8;

/// Where the greedy read of a line begins with what the small `KZ` of a Kazakh plate reads as
/// ([`SMALL_MARKS`]) and then a digit, and that first character's strokes are much shorter
/// than the shortest of the next three's ([`SMALL_MARK_HEIGHT`]), it is the country code, no
/// character of the plate: its steps' share of it goes to the foreign-mark class. Read as a
/// character, the `KZ` of a square plate's upper row (`KZ 662` over `CH 13`) made the Russian
/// square plate `K662CH13`, and before a one-row plate the trailer `2933XG19`: both formats
/// are valid, so only the mark's size tells them apart (a Russian plate's first letter is
/// three quarters of its digits' height, the mark under half). `line` is the line as the
/// recogniser saw it (BGR, [`REC_H`] high, unpadded).
///
/// The mark read as two characters (`K` then its `Z` or the `Z` as a `2`, then the digits) is
/// the mark too where the second is that much shorter than the three after it (or, with no
/// stroke found under the second, the first is): both go. Left, the `2` made a square plate's
/// `KZ 933` over `XG19` the trailer `2933XG19` (the decoder dropped only the `K`). A plate's
/// own `2` is as tall as the digits after it, so no plate character is taken for the mark.
fn small_mark(probs: &mut [f32], k: usize, line: &Mat, strip: &Strip) -> Result<(), AnprError> {
    let runs = runs(probs, k);
    let digit = |c: usize| strip.digits.contains(&c) || strip.twin.contains(&c);
    if runs.len() < 3 || !strip.small.contains(&runs[0].0) {
        return Ok(());
    }
    if digit(runs[1].0) {
        let heights = stroke_heights(line, &runs[..runs.len().min(4)])?;
        // The shortest of the next characters: where one of them is broken into specks too
        // (a dark corner of the plate, `21 338 TAF`), the line says nothing of sizes.
        let typical = heights[1..].iter().copied().min().unwrap_or(0);
        // No stroke found under the first character's columns (it touches the plate's edge
        // and was taken for it, or the steps stand off its strokes): nothing is known of its
        // size.
        if is_small(heights[0], typical) {
            let (class, steps) = runs[0].clone();
            to_mark(probs, k, class, steps);
            return Ok(());
        }
    }
    if runs.len() < 5 || !strip.small.contains(&runs[1].0) || !digit(runs[2].0) {
        return Ok(());
    }
    let heights = stroke_heights(line, &runs[..5])?;
    let typical = heights[2..].iter().copied().min().unwrap_or(0);
    // The second character is the mark's lower-case `z` or its `Z` (the `K` may share its
    // columns with the plate's edge and measure as tall as the edge).
    let mark = if heights[1] > 0 {
        heights[1]
    } else {
        heights[0]
    };
    if is_small(mark, typical) {
        for (class, steps) in runs[..2].iter().cloned() {
            to_mark(probs, k, class, steps);
        }
    }
    Ok(())
}

/// Whether a character `height` high (0: no stroke found) is a mark beside characters
/// `typical` high (0: nothing is known of their size).
fn is_small(height: i32, typical: i32) -> bool {
    height > 0 && (height as f32) < SMALL_MARK_HEIGHT * typical as f32
}

/// The height of the tallest stroke (a connected blob of the line's darker or lighter
/// pixels, whichever are fewer: the ink) under each run's columns: those from halfway to the
/// run before to halfway to the run after, the first from the line's start, the last to its
/// end. A blob is under the columns that hold half of it or that it covers half of: two
/// characters run together (`285` of `2857 WM 56` one blob) are under each one's columns, and
/// the steps need not stand over their strokes' centres. One as wide as half the line (a
/// frame's edge, a shadow) or lower than [`MIN_STROKE`] is no stroke; 0 where a run's columns
/// have none.
fn stroke_heights(line: &Mat, runs: &[(usize, Range<usize>)]) -> Result<Vec<i32>, AnprError> {
    let mut grey = Mat::default();
    imgproc::cvt_color_def(line, &mut grey, imgproc::COLOR_BGR2GRAY).map_err(cv)?;
    let mut ink = Mat::default();
    imgproc::threshold(
        &grey,
        &mut ink,
        0.0,
        255.0,
        imgproc::THRESH_BINARY_INV | imgproc::THRESH_OTSU,
    )
    .map_err(cv)?;
    let total = (ink.rows() * ink.cols()).max(1);
    if core::count_non_zero(&ink).map_err(cv)? * 2 > total {
        let mut flipped = Mat::default();
        core::bitwise_not_def(&ink, &mut flipped).map_err(cv)?;
        ink = flipped;
    }
    let (mut labels, mut stats, mut centroids) = (Mat::default(), Mat::default(), Mat::default());
    let n =
        imgproc::connected_components_with_stats_def(&ink, &mut labels, &mut stats, &mut centroids)
            .map_err(cv)?;
    // Step s is the recogniser's view of columns 8s to 8s + 8 ([`REC_STRIDE`]).
    let bounds: Vec<i32> = runs
        .windows(2)
        .map(|w| REC_STRIDE * (w[0].1.end + w[1].1.start) as i32 / 2)
        .collect();
    let mut out = vec![0; runs.len()];
    for b in 1..n {
        let at = |c: i32| -> Result<i32, AnprError> { Ok(*stats.at_2d::<i32>(b, c).map_err(cv)?) };
        let (x, w, h) = (
            at(imgproc::CC_STAT_LEFT)?,
            at(imgproc::CC_STAT_WIDTH)?,
            at(imgproc::CC_STAT_HEIGHT)?,
        );
        if 2 * w > line.cols() || h < MIN_STROKE {
            continue;
        }
        for (i, o) in out.iter_mut().enumerate() {
            let lo = if i == 0 { 0 } else { bounds[i - 1] };
            let hi = bounds.get(i).copied().unwrap_or(line.cols());
            let overlap = (x + w).min(hi) - x.max(lo);
            if overlap > 0 && (2 * overlap >= w || 2 * overlap >= hi - lo) {
                *o = (*o).max(h);
            }
        }
    }
    Ok(out)
}

/// The characters a greedy read of folded steps gives, each as its class and its steps: runs
/// of one likeliest class that is neither the blank nor a separator or foreign mark (the last
/// two classes), which part two characters as the blank does.
fn runs(probs: &[f32], k: usize) -> Vec<(usize, Range<usize>)> {
    let mut out: Vec<(usize, Range<usize>)> = Vec::new();
    let mut prev = 0;
    for (s, row) in probs.chunks_exact(k).enumerate() {
        let arg = row
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map_or(0, |(i, _)| if i + 2 >= k { 0 } else { i });
        match out.last_mut() {
            Some(last) if arg != 0 && arg == prev => last.1.end = s + 1,
            _ if arg != 0 => out.push((arg, s..s + 1)),
            _ => {}
        }
        prev = arg;
    }
    out
}

/// How many characters a greedy read of folded steps gives ([`runs`]).
fn characters(probs: &[f32], k: usize) -> usize {
    runs(probs, k).len()
}

/// Mean detector probability inside a rotated box (PaddleOCR's "fast" score).
fn box_score(prob: &Mat, r: &RotatedRect) -> Result<f64, AnprError> {
    let mut pts = [Point2f::default(); 4];
    r.points(&mut pts).map_err(cv)?;
    let (w, h) = (prob.cols(), prob.rows());
    let xs = pts.iter().map(|p| p.x);
    let ys = pts.iter().map(|p| p.y);
    let x0 = (xs.clone().fold(f32::MAX, f32::min).floor() as i32).clamp(0, w - 1);
    let x1 = (xs.fold(f32::MIN, f32::max).ceil() as i32).clamp(0, w - 1);
    let y0 = (ys.clone().fold(f32::MAX, f32::min).floor() as i32).clamp(0, h - 1);
    let y1 = (ys.fold(f32::MIN, f32::max).ceil() as i32).clamp(0, h - 1);
    let roi = Rect::new(x0, y0, x1 - x0 + 1, y1 - y0 + 1);
    let mut mask =
        Mat::new_rows_cols_with_default(roi.height, roi.width, core::CV_8U, Scalar::all(0.0))
            .map_err(cv)?;
    let poly: Vector<Point> = pts
        .iter()
        .map(|p| {
            Point::new(
                (p.x - x0 as f32).round() as i32,
                (p.y - y0 as f32).round() as i32,
            )
        })
        .collect();
    let polys: Vector<Vector<Point>> = std::iter::once(poly).collect();
    imgproc::fill_poly(
        &mut mask,
        &polys,
        Scalar::all(1.0),
        imgproc::LINE_8,
        0,
        Point::default(),
    )
    .map_err(cv)?;
    let p = Mat::roi(prob, roi).map_err(cv)?;
    Ok(core::mean(&p, &mask).map_err(cv)?[0])
}

/// The quadrilateral cut out upright, as PaddleOCR cuts its lines: as wide and as high as its
/// longer edges.
pub fn upright(frame: &Mat, q: &[Point2f; 4]) -> Result<Mat, AnprError> {
    let w = dist(q[0], q[1]).max(dist(q[3], q[2])).round().max(1.0) as i32;
    let h = dist(q[0], q[3]).max(dist(q[1], q[2])).round().max(1.0) as i32;
    let dst = [
        Point2f::new(0.0, 0.0),
        Point2f::new(w as f32, 0.0),
        Point2f::new(w as f32, h as f32),
        Point2f::new(0.0, h as f32),
    ];
    warp(frame, q, &dst, Size::new(w, h), imgproc::INTER_CUBIC)
}

/// The parts of a `w` x `h` frame the detector looks at for plates near `near`: each
/// quadrilateral's box grown by [`REGION_GROW_W`] of its width left and right and
/// [`REGION_GROW_H`] of its height up and down (a localiser's mask may hold only part of a
/// plate, or a Russian plate without its region box), regions that touch merged into one,
/// clipped to the frame.
fn regions(near: &[[Point2f; 4]], w: i32, h: i32) -> Vec<Rect> {
    let mut out: Vec<(f32, f32, f32, f32)> = Vec::new();
    for q in near {
        let (x0, y0, x1, y1) = extent(q);
        let (gw, gh) = (REGION_GROW_W * (x1 - x0), REGION_GROW_H * (y1 - y0));
        let mut r = (
            (x0 - gw).max(0.0),
            (y0 - gh).max(0.0),
            (x1 + gw).min(w as f32),
            (y1 + gh).min(h as f32),
        );
        // Merged until no region touches another (a merge can make it reach a third).
        while let Some(i) = out
            .iter()
            .position(|o| o.0 <= r.2 && r.0 <= o.2 && o.1 <= r.3 && r.1 <= o.3)
        {
            let o = out.swap_remove(i);
            r = (o.0.min(r.0), o.1.min(r.1), o.2.max(r.2), o.3.max(r.3));
        }
        out.push(r);
    }
    // Left to right, top to bottom: a stable order.
    out.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.total_cmp(&b.1)));
    out.into_iter()
        .filter_map(|(x0, y0, x1, y1)| {
            let (x0, y0) = (x0.floor() as i32, y0.floor() as i32);
            let (x1, y1) = ((x1.ceil() as i32).min(w), (y1.ceil() as i32).min(h));
            (x1 - x0 >= 8 && y1 - y0 >= 8).then(|| Rect::new(x0, y0, x1 - x0, y1 - y0))
        })
        .collect()
}

/// Axis-aligned extent of a quadrilateral: x0, y0, x1, y1.
fn extent(q: &[Point2f; 4]) -> (f32, f32, f32, f32) {
    q.iter().fold(
        (f32::MAX, f32::MAX, f32::MIN, f32::MIN),
        |(a, b, c, d), p| (a.min(p.x), b.min(p.y), c.max(p.x), d.max(p.y)),
    )
}

/// The axis-aligned box around several quadrilaterals, as corners.
fn union<'a>(qs: impl Iterator<Item = &'a [Point2f; 4]>) -> [Point2f; 4] {
    let (x0, y0, x1, y1) = qs.fold(
        (f32::MAX, f32::MAX, f32::MIN, f32::MIN),
        |(a, b, c, d), q| {
            let (e, f, g, h) = extent(q);
            (a.min(e), b.min(f), c.max(g), d.max(h))
        },
    );
    [
        Point2f::new(x0, y0),
        Point2f::new(x1, y0),
        Point2f::new(x1, y1),
        Point2f::new(x0, y1),
    ]
}

/// `b` is the next part of the same plate to the right of `a`: it starts near where `a`
/// ends (within about a character), its middle lies within `a`'s height, and it is no
/// taller than `a` by much (a Russian region, a Kazakh region beside a flag strip).
fn beside(a: &[Point2f; 4], b: &[Point2f; 4]) -> bool {
    let (ax0, ay0, ax1, ay1) = extent(a);
    let (bx0, by0, bx1, by1) = extent(b);
    let (ah, bh) = (ay1 - ay0, by1 - by0);
    let bc = (by0 + by1) / 2.0;
    bx0 >= ax1 - 0.3 * ah
        && bx0 - ax1 < 1.2 * ah
        && bx1 > ax1
        && (ay0 - 0.2 * ah..=ay1 + 0.2 * ah).contains(&bc)
        && (0.3 * ah..1.3 * ah).contains(&bh)
        && ax0 < bx0
}

/// `b` is the lower row of a double-row plate whose upper row is `a`: its middle lies below
/// `a`'s by at least half the shorter row's height, it starts close under `a` (at most
/// [`ROW_GAP`] of `a`'s height below it), it overlaps `a` across most of the narrower row, and
/// it is about as tall or taller (the lower row's characters are the bigger ones).
///
/// The boxes are the detector's, grown by [`UNCLIP`]: a tall lower row grows up into the
/// row above it, so its box may start above the upper box's middle (`沪·A` over `N9241` on a
/// real Chinese motorcycle plate: the lower box starts 3.5 of the photo's pixels above it).
/// Side by side lines have their middles at one height, and are [`beside`]'s.
fn above(a: &[Point2f; 4], b: &[Point2f; 4]) -> bool {
    let (ax0, ay0, ax1, ay1) = extent(a);
    let (bx0, by0, bx1, by1) = extent(b);
    let (ah, bh) = (ay1 - ay0, by1 - by0);
    let shared = ax1.min(bx1) - ax0.max(bx0);
    (by0 + by1) / 2.0 - (ay0 + ay1) / 2.0 >= 0.5 * ah.min(bh)
        && by0 - ay1 < ROW_GAP * ah
        && shared > 0.5 * (ax1 - ax0).min(bx1 - bx0)
        && (0.6 * ah..2.5 * ah).contains(&bh)
}

/// The share of the smaller box that lies inside the other (boxes as x, y, w, h).
pub(crate) fn overlap(a: &[i32; 4], b: &[i32; 4]) -> f32 {
    let ix = (a[0] + a[2]).min(b[0] + b[2]) - a[0].max(b[0]);
    let iy = (a[1] + a[3]).min(b[1] + b[3]) - a[1].max(b[1]);
    if ix <= 0 || iy <= 0 {
        return 0.0;
    }
    let smaller = (a[2] * a[3]).min(b[2] * b[3]).max(1);
    (ix * iy) as f32 / smaller as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quad(x0: f32, y0: f32, x1: f32, y1: f32) -> [Point2f; 4] {
        [
            Point2f::new(x0, y0),
            Point2f::new(x1, y0),
            Point2f::new(x1, y1),
            Point2f::new(x0, y1),
        ]
    }

    #[test]
    fn the_third_look_is_twice_the_first_unless_the_second_saw_the_frame_as_large_or_small() {
        let scale = |w: i32, h: i32| {
            let frame =
                Mat::new_rows_cols_with_default(h, w, core::CV_8UC3, Scalar::all(0.0)).unwrap();
            TextReader::largest_scale(&frame).map(|s| (s * 1000.0).round() / 1000.0)
        };
        // A lane camera's frame: looks at 960, 1308 (shorter side 736) and 1920 wide.
        assert_eq!(scale(1280, 720), Some(1.5));
        // A photo larger than the detector's input, and a tiny one.
        assert_eq!(scale(1440, 1080), Some(1.333));
        assert_eq!(scale(4000, 3000), Some(0.48));
        assert_eq!(scale(800, 600), Some(2.4));
        // A small frame, which the second look already enlarged (640x360: 2.04 times): the
        // third would have been 3 and 6.55 times.
        assert_eq!(scale(640, 360), None);
        assert_eq!(scale(293, 220), None);
        // Upright as well as across.
        assert_eq!(scale(720, 1160), Some(1.655));
        // A panorama: the second look (800 to 736) is nearly as large as 1920 on 2000.
        assert_eq!(scale(2000, 800), None);
    }

    #[test]
    fn the_dictionary_folds_onto_the_plate_charset() {
        let dict: Vec<String> = [
            "a", "7", "К", "学", "é", "AB", " ", "·", "：", "-", "/", "#",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let cs: Vec<char> = TEXT_CHARSET.chars().collect();
        let m = fold_map(&dict, &cs);
        let pos = |c: char| cs.iter().position(|&x| x == c).map(|i| i + 1);
        let sep = Some(cs.len() + 1);
        // Blank, then a→A, 7, Cyrillic К→K, 学, é (no plate has it), a two-character entry;
        // a space, a middle dot and a full-width colon are separators, the class after the
        // charset; a dash and a slash are foreign marks, the class after that; `#` is no separator
        // and no plate character; the trailing space class is a separator.
        assert_eq!(
            m,
            vec![
                Some(0),
                pos('A'),
                pos('7'),
                pos('K'),
                pos('学'),
                None,
                None,
                sep,
                sep,
                sep,
                Some(cs.len() + 2),
                Some(cs.len() + 2),
                None,
                sep
            ]
        );
    }

    #[test]
    fn a_russian_region_is_beside_its_series_and_a_lower_row_below_its_upper() {
        let series = quad(100.0, 50.0, 260.0, 90.0);
        let region = quad(262.0, 48.0, 310.0, 80.0);
        assert!(beside(&series, &region));
        assert!(!beside(&region, &series));
        // A line far to the right, or on another line, is another text.
        assert!(!beside(&series, &quad(400.0, 50.0, 480.0, 90.0)));
        assert!(!beside(&series, &quad(262.0, 100.0, 310.0, 140.0)));
        let top = quad(120.0, 100.0, 200.0, 125.0);
        let bottom = quad(100.0, 128.0, 220.0, 170.0);
        assert!(above(&top, &bottom));
        assert!(!above(&bottom, &top));
        assert!(!above(&top, &quad(300.0, 128.0, 420.0, 170.0)));
        // A real Chinese double-row plate's rows as PP-OCR's detector marks them: the lower
        // row's box reaches up past the upper row's middle.
        let (top, bottom) = (
            quad(309.0, 210.0, 377.0, 249.0),
            quad(305.0, 226.0, 397.0, 278.0),
        );
        assert!(above(&top, &bottom));
        assert!(!above(&bottom, &top));
        // Two lines side by side at one height are no rows of one plate.
        assert!(!above(&series, &quad(150.0, 55.0, 300.0, 95.0)));
        // An Uzbek double-row plate (`38` over `C436AM`) with a Russian plate's region box
        // (`336`) half a row below its lower row (`uz_2006` of the any-region set): the rows
        // are one plate, the lower row and the region box are not.
        let (upper, lower, region) = (
            quad(428.5, 542.3, 513.1, 590.2),
            quad(432.1, 574.2, 514.6, 614.2),
            quad(458.6, 634.1, 524.0, 671.4),
        );
        assert!(above(&upper, &lower));
        assert!(!above(&lower, &region));
    }

    #[test]
    fn lines_read_as_one_part_where_a_plates_groups_part() {
        // A square Kazakh plate's rows, each glyph a step between blanks, its `O`/`0` alike
        // (as `recognise` folds them). The join is a separator: the rows part where the
        // trailer's groups part (`6480` over `ZZ10`), or the car's (`648` over `OZZ10`).
        let cs: Vec<char> = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ".chars().collect();
        let decoder = Decoder::new(&cs).with_separator(SEPARATOR_INSIDE);
        let k = decoder.classes();
        let class = |c: char| cs.iter().position(|&x| x == c).unwrap() + 1;
        let row = |text: &str| -> Vec<f32> {
            let step = |p: &[(usize, f32)]| {
                let mut s = vec![0.001; k];
                for &(c, v) in p {
                    s[c] = v;
                }
                s
            };
            let mut out = step(&[(0, 0.97)]);
            for c in text.chars() {
                match c {
                    '?' => out.extend(step(&[(class('O'), 0.48), (class('0'), 0.48)])),
                    c => out.extend(step(&[(class(c), 0.97)])),
                }
                out.extend(step(&[(0, 0.97)]));
            }
            out
        };
        let read = |upper: &str, lower: &str, sep: Option<usize>| {
            let (a, b) = (row(upper), row(lower));
            let probs = joined([a.as_slice(), b.as_slice()].into_iter(), k, sep);
            decoder.read(&probs, probs.len() / k, k).map(|r| r.text)
        };
        let sep = decoder.separator_class();
        assert_eq!(sep, Some(cs.len() + 1));
        assert_eq!(read("648?", "ZZ10", sep).as_deref(), Some("6480ZZ10"));
        assert_eq!(read("648", "?ZZ10", sep).as_deref(), Some("648OZZ10"));
        // Joined by a blank, the rows tell nothing: the order of formats reads the car's.
        assert_eq!(read("648?", "ZZ10", None).as_deref(), Some("648OZZ10"));
        // A Russian series beside its region: the same plate either way.
        for sep in [sep, None] {
            assert_eq!(read("A123BC", "77", sep).as_deref(), Some("A123BC77"));
        }
    }

    #[test]
    fn characters_are_runs_of_one_likeliest_class() {
        // Five classes (blank, a, b, separator, foreign mark), steps: a a _ a b b _ a | a / b
        // → six characters: a separator or a mark parts two characters as the blank does and
        // is none.
        let steps = [1, 1, 0, 1, 2, 2, 0, 1, 3, 1, 4, 2];
        assert_eq!(characters(&steps_of(&steps, 5), 5), 6);
        assert_eq!(characters(&[], 5), 0);
    }

    /// Folded steps of `k` classes, each step's class at 0.8 and the others at 0.02.
    fn steps_of(steps: &[usize], k: usize) -> Vec<f32> {
        steps
            .iter()
            .flat_map(|&c| (0..k).map(move |i| if i == c { 0.8 } else { 0.02 }))
            .collect()
    }

    /// Each step's likeliest class.
    fn likeliest(probs: &[f32], k: usize) -> Vec<usize> {
        probs
            .chunks_exact(k)
            .map(|row| {
                row.iter()
                    .enumerate()
                    .max_by(|a, b| a.1.total_cmp(b.1))
                    .map_or(0, |m| m.0)
            })
            .collect()
    }

    #[test]
    fn a_line_that_begins_or_ends_with_a_country_code_has_a_mark_there_not_letters() {
        // Seven classes (blank, K, Z, U, 6, separator, foreign mark); `KZ` may begin a line,
        // `UZ` end it.
        let read = |steps: &[usize]| {
            let mut probs = steps_of(steps, 7);
            country_marks(&mut probs, 7, &[vec![1, 2]], &[vec![3, 2]]);
            likeliest(&probs, 7)
        };
        // `KZ 66`: the K's two steps and the Z's go to the mark; the rest is as it was.
        assert_eq!(read(&[1, 1, 0, 2, 5, 4, 0, 4]), [6, 6, 0, 6, 5, 4, 0, 4]);
        // `66 UZ` and `KZ6UZ`: the code at the end too.
        assert_eq!(read(&[4, 0, 4, 5, 3, 2, 2]), [4, 0, 4, 5, 6, 6, 6]);
        assert_eq!(read(&[1, 2, 4, 3, 2]), [6, 6, 4, 6, 6]);
        // `KZ` alone is both ends' code, and is marked once.
        assert_eq!(read(&[1, 0, 2]), [6, 0, 6]);
        // `K66Z`, `ZK6`, `6KZ`, `UZ6`, `6ZU`, `K` alone: no code where one is looked for.
        for steps in [
            &[1, 4, 0, 4, 2][..],
            &[2, 1, 4],
            &[4, 1, 2],
            &[3, 2, 4],
            &[4, 2, 3],
            &[0, 1, 1],
        ] {
            assert_eq!(read(steps), steps);
        }
    }

    #[test]
    fn a_z_or_2_before_a_whole_kazakh_plate_is_its_flag_strip() {
        // Eight classes: blank, 2, 8, Z, B, O, separator, foreign mark; O may be a digit or a
        // letter as the recogniser's O and 0 are one glyph.
        let strip = Strip {
            marks: vec![3, 1],
            digits: vec![1, 2],
            letters: vec![3, 4],
            twin: vec![5],
            small: vec![],
        };
        let read = |steps: &[usize]| {
            let mut probs = steps_of(steps, 8);
            flag_strip(&mut probs, 8, &strip);
            likeliest(&probs, 8)
        };
        // `2 888 BBB 02` and `Z 888 BOB 02`: the first character (both its steps) is the strip.
        let plate = [2, 0, 2, 0, 2, 4, 0, 4, 0, 4, 5, 1];
        let mut two = vec![1, 1, 0];
        two.extend(plate);
        let mut want = vec![7, 7, 0];
        want.extend(plate);
        assert_eq!(read(&two), want);
        let mut z = vec![3, 6];
        z.extend([2, 0, 2, 0, 2, 4, 5, 4, 5, 1]);
        assert_eq!(read(&z)[0], 7);
        // `888 BBB 02` alone, `2 888 BB 02` (eight: a trailer's shape), `8 888 BBB 02` (not
        // the strip's character), `2 888 BBB 022` (ten): left as they are.
        let mut eight = vec![1, 0];
        eight.extend([2, 0, 2, 0, 2, 4, 0, 4, 5, 1]);
        let mut other = vec![2, 0];
        other.extend(plate);
        let mut ten = two.clone();
        ten.extend([0, 1]);
        for steps in [&plate[..], &eight, &other, &ten] {
            assert_eq!(read(steps), steps);
        }
    }

    #[test]
    fn a_k_much_shorter_than_the_digits_after_it_is_a_mark_beside_the_plate() {
        // Six classes: blank, K, 6, C, separator, foreign mark.
        let strip = Strip {
            marks: vec![],
            digits: vec![2],
            letters: vec![3],
            twin: vec![],
            small: vec![1],
        };
        // A line 48 high and 96 wide, black strokes on white: the first 14 high at the top
        // (the `KZ` of a square Kazakh plate's upper row), then three 36 high; the steps read
        // `K 6 6 6`, each character two steps of the eight columns it stands in.
        let line = |first_h: i32| {
            let mut m =
                Mat::new_rows_cols_with_default(48, 96, core::CV_8UC3, Scalar::all(255.0)).unwrap();
            let black = Scalar::all(0.0);
            imgproc::rectangle(&mut m, Rect::new(2, 8, 12, first_h), black, -1, 8, 0).unwrap();
            for x in [26, 50, 74] {
                imgproc::rectangle(&mut m, Rect::new(x, 6, 12, 36), black, -1, 8, 0).unwrap();
            }
            m
        };
        let read = |first: usize, second: usize, first_h: i32| {
            let mut probs = steps_of(&[first, first, 0, second, second, 0, 2, 2, 0, 2, 2, 0], 6);
            small_mark(&mut probs, 6, &line(first_h), &strip).unwrap();
            likeliest(&probs, 6)
        };
        assert_eq!(read(1, 2, 14), [5, 5, 0, 2, 2, 0, 2, 2, 0, 2, 2, 0]);
        // As tall as the digits (a Russian plate's first letter), three fifths of them (its
        // letters are 0.76 of its digits), a letter that is no mark, no digit after it, or no
        // stroke under the first character's steps (a speck 3 high): left as it is.
        for (first, second, h) in [(1, 2, 36), (1, 2, 22), (3, 2, 14), (1, 3, 14), (1, 2, 3)] {
            let steps = [first, first, 0, second, second, 0, 2, 2, 0, 2, 2, 0];
            assert_eq!(read(first, second, h), steps);
        }
        // The first two characters run together into one blob (as `285` of `2857 WM 56`),
        // beside a short stroke at the line's start (a flag strip's edge): the blob is under
        // the first character's columns too, and the first character is no mark.
        let mut m =
            Mat::new_rows_cols_with_default(48, 96, core::CV_8UC3, Scalar::all(255.0)).unwrap();
        let black = Scalar::all(0.0);
        imgproc::rectangle(&mut m, Rect::new(0, 30, 4, 10), black, -1, 8, 0).unwrap();
        imgproc::rectangle(&mut m, Rect::new(8, 6, 30, 36), black, -1, 8, 0).unwrap();
        for x in [50, 74] {
            imgproc::rectangle(&mut m, Rect::new(x, 6, 12, 36), black, -1, 8, 0).unwrap();
        }
        let steps = [1, 1, 0, 2, 2, 0, 2, 2, 0, 2, 2, 0];
        let mut probs = steps_of(&steps, 6);
        small_mark(&mut probs, 6, &m, &strip).unwrap();
        assert_eq!(likeliest(&probs, 6), steps);
    }

    #[test]
    fn a_kz_read_as_two_characters_much_shorter_than_the_digits_after_it_is_a_mark() {
        // Seven classes: blank, K, 2 (a digit, and what the mark's `Z` reads as), 6, C,
        // separator, foreign mark.
        let strip = Strip {
            marks: vec![],
            digits: vec![2, 3],
            letters: vec![4],
            twin: vec![],
            small: vec![1, 2],
        };
        // A line 48 high and 120 wide, black strokes on white: the `K` (at the top, `k_h`
        // high; 0: none), the `z` beside it (`z_h`), then three digits 36 high. The steps read
        // `K 2 6 6 6`.
        let line = |k_h: i32, z_h: i32| {
            let mut m = Mat::new_rows_cols_with_default(48, 120, core::CV_8UC3, Scalar::all(255.0))
                .unwrap();
            let black = Scalar::all(0.0);
            for (x, h) in [(1, k_h), (16, z_h)] {
                if h > 0 {
                    imgproc::rectangle(&mut m, Rect::new(x, 6, 7, h), black, -1, 8, 0).unwrap();
                }
            }
            for x in [42, 74, 98] {
                imgproc::rectangle(&mut m, Rect::new(x, 6, 12, 36), black, -1, 8, 0).unwrap();
            }
            m
        };
        let steps = [1, 0, 2, 0, 0, 3, 3, 0, 0, 3, 3, 0, 3, 3, 0];
        let read = |second: usize, k_h: i32, z_h: i32| {
            let mut steps = steps;
            steps[2] = second;
            let mut probs = steps_of(&steps, 7);
            small_mark(&mut probs, 7, &line(k_h, z_h), &strip).unwrap();
            likeliest(&probs, 7)
        };
        let marked = [6, 0, 6, 0, 0, 3, 3, 0, 0, 3, 3, 0, 3, 3, 0];
        // Both small; the `z` small and the `K` as tall as the plate's edge it touches; no
        // stroke under the `z` and the `K` small: both characters are the mark.
        for (k_h, z_h) in [(14, 12), (40, 12), (14, 0)] {
            assert_eq!(read(2, k_h, z_h), marked, "K {k_h} high, z {z_h}");
        }
        // A `2` as tall as the digits (the plate's own), a second character that is no mark
        // (a letter), or nothing known of either's size: left as it is.
        for (second, k_h, z_h) in [(2, 36, 36), (4, 14, 12), (2, 0, 0)] {
            let mut want = steps;
            want[2] = second;
            assert_eq!(read(second, k_h, z_h), want, "K {k_h} high, z {z_h}");
        }
    }

    #[test]
    fn regions_grow_around_marked_plates_merge_where_they_touch_and_stay_in_the_frame() {
        // A 100x20 plate: half its width left and right, its height above and below.
        let r = regions(&[quad(200.0, 100.0, 300.0, 120.0)], 1280, 720);
        assert_eq!(r, vec![Rect::new(150, 80, 200, 60)]);
        // The middle plate's region touches both others': the three become one.
        let r = regions(
            &[
                quad(100.0, 100.0, 200.0, 120.0),
                quad(400.0, 100.0, 500.0, 120.0),
                quad(250.0, 110.0, 350.0, 130.0),
                quad(900.0, 500.0, 1000.0, 520.0),
            ],
            1280,
            720,
        );
        assert_eq!(
            r,
            vec![Rect::new(50, 80, 500, 70), Rect::new(850, 480, 200, 60)]
        );
        // At the frame's corner: clipped to it; a sliver at its edge is no region.
        let r = regions(
            &[
                quad(0.0, 0.0, 100.0, 20.0),
                quad(1278.0, 300.0, 1280.0, 301.0),
            ],
            1280,
            720,
        );
        assert_eq!(r, vec![Rect::new(0, 0, 150, 40)]);
        assert!(regions(&[], 1280, 720).is_empty());
    }

    #[test]
    fn overlap_is_the_share_of_the_smaller_box() {
        assert_eq!(overlap(&[0, 0, 10, 10], &[20, 0, 10, 10]), 0.0);
        assert_eq!(overlap(&[0, 0, 100, 20], &[10, 5, 10, 10]), 1.0);
        assert!((overlap(&[0, 0, 10, 10], &[5, 0, 10, 10]) - 0.5).abs() < 1e-6);
    }

    #[test]
    fn a_line_is_padded_by_its_own_width_not_its_neighbours() {
        let own = Padding::Own(REC_WIDTHS.to_vec());
        // A plate's line alone, and beside a line of a sentence: the plate's padding is the same.
        assert_eq!(own.widths(&[150]), vec![224]);
        assert_eq!(own.widths(&[150, 530, 225]), vec![224, 576, 288]);
        // Each width the first that holds the line, on the recogniser's stride; past the last,
        // the line's own width.
        assert_eq!(
            own.widths(&[8, 224, 289, 384, 385, 577, 601]),
            vec![224, 224, 384, 384, 480, 584, 608]
        );
        // Each width at most a third wider than the one before.
        for w in REC_WIDTHS.windows(2) {
            assert!(3 * w[1] <= 4 * w[0], "{w:?}");
        }
        assert!(REC_WIDTHS.last() >= Some(&((MAX_LINE_ASPECT * REC_H as f32) as i32)));
        // The padding before: every line to the widest, at least the least width.
        let widest = Padding::Widest(REC_MIN_W);
        assert_eq!(widest.widths(&[150]), vec![224]);
        assert_eq!(widest.widths(&[150, 530, 225]), vec![536; 3]);
        assert!(widest.widths(&[]).is_empty());
    }
}
