//! One frame to plate reads: localisation (ONNX mask) → quadrilaterals → perspective
//! rectification → recogniser input (double-row plates split and laid side by side, top row
//! first; a crop whose shape leaves the layout open is read both ways) → ONNX recogniser →
//! CTC decoding constrained to the plate formats ([`super::ctc`]).
//!
//! The preprocessing here mirrors `models/plates/synth.py` (`rectify`, `ocr_input`), which made
//! the training data; a change on one side needs the same change on the other.

use std::time::Instant;

use opencv::core::{self, Mat, Point, Point2f, Rect, Scalar, Size, Vector};
use opencv::imgproc;
use opencv::prelude::*;
use ort::environment::Environment;
use ort::session::Session;
use ort::value::Tensor;

use super::ctc::{Decoder, Recognised};
use super::models::ModelSource;
use super::settings::MIN_CONFIDENCE;
use super::text::TextReader;
use super::AnprError;

/// The localiser's input size (the frame is resized to it).
pub const LOC_W: i32 = 640;
pub const LOC_H: i32 = 360;
/// The recogniser's input size.
pub const OCR_W: i32 = 192;
pub const OCR_H: i32 = 32;
/// A rectified single-row plate is about 3.6 times as wide as high (margin included), a
/// double-row one about 1.4, but perspective and loose corners spread both (measured on the
/// synthetic crops: single-row 1st percentile 2.5, double-row 99th 2.2). A crop narrower than
/// the first bound is read as two rows, one wider than the second as one row, and one in
/// between both ways, the likelier read winning. (Training crops are laid out as their plate
/// is: `synth.ocr_input`.)
pub const LAYOUT_ASPECTS: (f32, f32) = (1.6, 4.5);
/// Margin kept around the localised quadrilateral, as a fraction of its height.
pub const MARGIN: f32 = 0.2;
/// Two reads whose boxes share more than this of the smaller one are of one plate: the
/// text models' read is kept.
const COVERED: f32 = 0.3;
/// Mask probability above which a pixel is plate.
const MASK_THRESHOLD: f32 = 0.4;
/// How far (in the blob's heights) a simplified outline's corner may lie from its
/// minimum-area rectangle's for the outline to be trusted.
const CORNER_TOLERANCE: f32 = 0.35;
/// A plate's blob fills 0.8–0.9 of its minimum-area rectangle; two plates that touch in the
/// mask fill about half of theirs (measured on the synthetic test scenes).
const SPLIT_FILL: f64 = 0.7;
/// The higher mask thresholds a touching pair is parted at, tried in turn.
const SPLIT_THRESHOLDS: [f64; 2] = [0.6, 0.8];
/// Smallest plate blob kept, in pixels of the localiser's input.
const MIN_BLOB: f64 = 40.0;
/// The recogniser's classes after the CTC blank (must match `synth.CHARSET`).
pub const CHARSET: &str = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ京津沪渝冀豫云辽黑湘皖鲁新苏浙赣鄂桂甘晋蒙陕吉闽贵粤青藏川宁琼挂";

/// A plate found in a frame.
#[derive(Debug, Clone)]
pub struct PlateFound {
    /// Normalised and, where a format fits, corrected.
    pub text: String,
    /// The country whose format the text fits (`None`: no format fits).
    pub country: Option<&'static str>,
    pub confidence: f32,
    /// Bounding box in frame pixels: x, y, w, h.
    pub bbox: [i32; 4],
    /// The rectified plate (BGR).
    pub crop: Mat,
}

/// How a plate's characters are laid out in its crop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    Single,
    Double,
}

/// The layouts to read a crop of this shape (width / height) in.
pub fn layouts(aspect: f32) -> &'static [Layout] {
    if aspect < LAYOUT_ASPECTS.0 {
        &[Layout::Double]
    } else if aspect > LAYOUT_ASPECTS.1 {
        &[Layout::Single]
    } else {
        &[Layout::Single, Layout::Double]
    }
}

/// How long the stages of the last frame took, in milliseconds.
#[derive(Debug, Clone, Copy, Default)]
pub struct Timing {
    pub localise_ms: f64,
    pub recognise_ms: f64,
    /// The text models' detection and recognition.
    pub text_ms: f64,
}

/// The two sessions, created once and reused for every frame.
pub struct Reader {
    loc: Session,
    ocr: Session,
    decoder: Decoder,
    /// The text models' reader, run on every frame before the plate models.
    pub text: TextReader,
    /// Whether the detector takes its third look at a frame where nothing else read a plate
    /// (`TextReader::read_largest`): yes unless changed; the bench compares it with the
    /// reader before it.
    pub largest_look: bool,
    pub timing: Timing,
}

pub(crate) fn cv(e: opencv::Error) -> AnprError {
    AnprError::Opencv(e)
}

pub(crate) fn ort_err(e: ort::Error) -> AnprError {
    AnprError::Ort(e)
}

impl Reader {
    pub fn new(env: &Environment, models: &ModelSource) -> Result<Reader, AnprError> {
        Ok(Reader {
            loc: models.localiser(env)?,
            ocr: models.recogniser(env)?,
            decoder: Decoder::new(&CHARSET.chars().collect::<Vec<_>>()),
            text: TextReader::new(env, models)?,
            largest_look: true,
            timing: Timing::default(),
        })
    }

    /// Every plate in a BGR frame: the text models' reads ([`super::text`]), and the plate
    /// models' reads of plates the text models did not read.
    pub fn read(&mut self, frame: &Mat) -> Result<Vec<PlateFound>, AnprError> {
        let t0 = Instant::now();
        let marks = self.localise(frame)?;
        let localise_ms = t0.elapsed().as_secs_f64() * 1e3;
        let t = Instant::now();
        // The text detector over the whole frame is most of a frame's time, so it looks
        // first only around what the localiser marked; the whole frame is its when that
        // reads no plate (the localiser, trained on synthetic scenes, leaves one real photo
        // in eight to the whole frame: `models/text_models.md`).
        let near: Vec<[Point2f; 4]> = marks.iter().map(|(q, _)| *q).collect();
        let (mut text, mut near_ms) = (Vec::new(), 0.0);
        if !near.is_empty() {
            text = self.text.read_near(frame, &near)?;
            near_ms = self.text.detect_ms;
        }
        if text.is_empty() {
            text = self.text.read(frame)?;
            self.text.detect_ms += near_ms;
        }
        let mut text_ms = t.elapsed().as_secs_f64() * 1e3;
        // The plate models read only the marks no text read covers: `merge` would drop
        // their reads of the others.
        let t1 = Instant::now();
        let (w, h) = (frame.cols(), frame.rows());
        let rest: Vec<_> = marks
            .into_iter()
            .filter(|(q, _)| !covered(&text, &bbox(q, w, h)))
            .collect();
        let mine = self.read_marks(frame, rest)?;
        let recognise_ms = t1.elapsed().as_secs_f64() * 1e3;
        // Where nothing read a plate, the detector looks at the whole frame again at a
        // larger scale (`TextReader::read_large`). Not where the plate models read one a lane
        // camera would vote with: on synthetic scenes they read right what the text models at
        // that scale misread. A read of theirs under the camera's default least confidence
        // is no such read (the real photo `T871KC33`, which they read `新KKK77KK` at 0.015);
        // where the second look reads a plate there, its read takes that one's place.
        if text.is_empty() && mine.iter().all(|p| p.confidence < MIN_CONFIDENCE) {
            let t2 = Instant::now();
            let ms = self.text.detect_ms;
            text = self.text.read_large(frame)?;
            self.text.detect_ms += ms;
            // Where the second look read nothing either, a third at twice the first's scale
            // (`TextReader::read_largest`): a plate small in the frame, which both looks
            // before shrank below what the detector finds.
            if text.is_empty() && self.largest_look {
                let ms = self.text.detect_ms;
                if let Some(largest) = self.text.read_largest(frame)? {
                    text = largest;
                    self.text.detect_ms += ms;
                }
            }
            text_ms += t2.elapsed().as_secs_f64() * 1e3;
        }
        self.timing = Timing {
            localise_ms,
            recognise_ms,
            text_ms,
        };
        // The text models first: on real photos they read 93 % where the plate models read
        // 22 % (`models/text_models.md`); the plate models add what they alone found.
        Ok(merge(text, mine))
    }

    /// The plate models' reads alone.
    pub fn read_plates(&mut self, frame: &Mat) -> Result<Vec<PlateFound>, AnprError> {
        let t0 = Instant::now();
        let marks = self.localise(frame)?;
        let t1 = Instant::now();
        let out = self.read_marks(frame, marks)?;
        self.timing = Timing {
            localise_ms: (t1 - t0).as_secs_f64() * 1e3,
            recognise_ms: t1.elapsed().as_secs_f64() * 1e3,
            text_ms: 0.0,
        };
        Ok(out)
    }

    /// The plate models' reads of the localiser's marks (rectified, recognised).
    fn read_marks(
        &mut self,
        frame: &Mat,
        marks: Vec<([Point2f; 4], f32)>,
    ) -> Result<Vec<PlateFound>, AnprError> {
        let mut crops = Vec::with_capacity(marks.len());
        for (q, _) in &marks {
            crops.push(rectify(frame, q)?);
        }
        let reads = self.recognise(&crops)?;
        let mut out = Vec::new();
        for (((quad, loc_score), crop), r) in marks.into_iter().zip(crops).zip(reads) {
            let Some(r) = r else { continue };
            out.push(PlateFound {
                text: r.text,
                country: r.country,
                confidence: (r.confidence * loc_score.sqrt()).clamp(0.0, 1.0),
                bbox: bbox(&quad, frame.cols(), frame.rows()),
                crop,
            });
        }
        Ok(out)
    }

    /// Plate quadrilaterals in frame pixels, with the mask's mean probability over each.
    pub fn localise(&mut self, frame: &Mat) -> Result<Vec<([Point2f; 4], f32)>, AnprError> {
        if frame.empty() || frame.channels() != 3 {
            return Err(AnprError::Image(
                "expected a non-empty 3-channel frame".into(),
            ));
        }
        let mut small = Mat::default();
        imgproc::resize(
            frame,
            &mut small,
            Size::new(LOC_W, LOC_H),
            0.0,
            0.0,
            imgproc::INTER_AREA,
        )
        .map_err(cv)?;
        let bytes = small.data_bytes().map_err(cv)?;
        let plane = (LOC_W * LOC_H) as usize;
        let mut input = vec![0f32; 3 * plane];
        for (i, px) in bytes.chunks_exact(3).enumerate() {
            // BGR in, RGB planes out.
            input[i] = px[2] as f32 / 255.0;
            input[plane + i] = px[1] as f32 / 255.0;
            input[2 * plane + i] = px[0] as f32 / 255.0;
        }
        let tensor = Tensor::from_array(([1usize, 3, LOC_H as usize, LOC_W as usize], input))
            .map_err(ort_err)?;
        let outputs = self.loc.run(ort::inputs!["x" => tensor]).map_err(ort_err)?;
        let (shape, mask) = outputs["mask"]
            .try_extract_tensor::<f32>()
            .map_err(ort_err)?;
        let (mh, mw) = (shape[2] as i32, shape[3] as i32);
        let mask = Mat::new_rows_cols_with_data(mh, mw, mask)
            .map_err(cv)?
            .try_clone()
            .map_err(cv)?;
        drop(outputs);
        // Upsampled to the localiser's input size, the soft mask's 0.5 contour lies closer to
        // the plate's edge than the coarse cells do.
        let mut up = Mat::default();
        imgproc::resize(
            &mask,
            &mut up,
            Size::new(LOC_W, LOC_H),
            0.0,
            0.0,
            imgproc::INTER_LINEAR,
        )
        .map_err(cv)?;
        let (bin8, found) = blobs_above(&up, MASK_THRESHOLD as f64, Point::new(0, 0))?;
        let sx = frame.cols() as f32 / LOC_W as f32;
        let sy = frame.rows() as f32 / LOC_H as f32;
        let mut blobs = Vec::new();
        for c in found {
            blobs.extend(split_touching(&up, c)?);
        }
        let mut out = Vec::new();
        for c in blobs {
            let quad = quadrilateral(&c)?;
            let quad = quad.map(|p| Point2f::new(p.x * sx, p.y * sy));
            let a = aspect(&quad);
            if !(0.8..=9.0).contains(&a) {
                continue;
            }
            let r = imgproc::bounding_rect(&c).map_err(cv)?;
            let score = mean_inside(&up, &bin8, r)?;
            out.push((quad, score));
        }
        // Left to right: a stable order for output and tests.
        out.sort_by(|a, b| a.0[0].x.total_cmp(&b.0[0].x));
        Ok(out)
    }

    /// Reads rectified crops, all in one batch: each crop in its layouts, the better read
    /// kept; `None` for a crop with no read worth reporting.
    pub fn recognise(&mut self, crops: &[Mat]) -> Result<Vec<Option<Recognised>>, AnprError> {
        if crops.is_empty() {
            return Ok(Vec::new());
        }
        let per = (OCR_W * OCR_H) as usize;
        let mut input = Vec::with_capacity(per * crops.len() * 2);
        let mut of_crop = Vec::with_capacity(crops.len() * 2);
        for (i, c) in crops.iter().enumerate() {
            for &layout in layouts(c.cols() as f32 / c.rows().max(1) as f32) {
                input.extend(ocr_input(c, layout)?);
                of_crop.push(i);
            }
        }
        let tensor =
            Tensor::from_array(([of_crop.len(), 1, OCR_H as usize, OCR_W as usize], input))
                .map_err(ort_err)?;
        let outputs = self.ocr.run(ort::inputs!["x" => tensor]).map_err(ort_err)?;
        let (shape, probs) = outputs["probs"]
            .try_extract_tensor::<f32>()
            .map_err(ort_err)?;
        let (t, k) = (shape[1] as usize, shape[2] as usize);
        if k != self.decoder.classes() {
            return Err(AnprError::Inference(format!(
                "recogniser has {k} classes, the charset {} (+ blank)",
                self.decoder.classes() - 1
            )));
        }
        let mut best: Vec<Option<Recognised>> = vec![None; crops.len()];
        for (&i, p) in of_crop.iter().zip(probs.chunks_exact(t * k)) {
            if let Some(r) = self.decoder.read(p, t, k) {
                if best[i].as_ref().is_none_or(|b| r.better_than(b)) {
                    best[i] = Some(r);
                }
            }
        }
        Ok(best)
    }
}

/// The reads of `first`, then those of `second` that lie on no plate `first` read: where both
/// readers read one plate, `first`'s read is kept.
fn merge(first: Vec<PlateFound>, second: Vec<PlateFound>) -> Vec<PlateFound> {
    let mut out = first;
    let n = out.len();
    for p in second {
        if !covered(&out[..n], &p.bbox) {
            out.push(p);
        }
    }
    out.sort_by_key(|p| p.bbox[0]);
    out
}

/// A read among `reads` holds more than [`COVERED`] of box `b` or `b` of it: the same plate.
fn covered(reads: &[PlateFound], b: &[i32; 4]) -> bool {
    reads
        .iter()
        .any(|q| super::text::overlap(&q.bbox, b) > COVERED)
}

/// Width over height of a quadrilateral (tl, tr, br, bl).
fn aspect(q: &[Point2f; 4]) -> f32 {
    let w = (dist(q[0], q[1]) + dist(q[3], q[2])) / 2.0;
    let h = (dist(q[0], q[3]) + dist(q[1], q[2])) / 2.0;
    if h <= 0.0 {
        0.0
    } else {
        w / h
    }
}

/// The four corners of a plate blob: its convex hull simplified to four points, which keeps
/// the perspective, where those lie near the corners of the blob's minimum-area rectangle;
/// else that rectangle (a blob whose outline simplifies badly, a corner cut off by a flag
/// or a shadow, would otherwise give a crop of half a plate).
fn quadrilateral(contour: &Vector<Point>) -> Result<[Point2f; 4], AnprError> {
    let r = imgproc::min_area_rect(contour).map_err(cv)?;
    let mut rect = [Point2f::default(); 4];
    r.points(&mut rect).map_err(cv)?;
    let rect = order(&rect);
    let mut hull = Vector::<Point>::new();
    imgproc::convex_hull(contour, &mut hull, false, true).map_err(cv)?;
    let peri = imgproc::arc_length(&hull, true).map_err(cv)?;
    let mut approx = Vector::<Point>::new();
    imgproc::approx_poly_dp(&hull, &mut approx, 0.04 * peri, true).map_err(cv)?;
    if approx.len() == 4 {
        let pts: Vec<Point2f> = approx
            .iter()
            .map(|p| Point2f::new(p.x as f32, p.y as f32))
            .collect();
        let quad = order(&pts);
        let tolerance = CORNER_TOLERANCE * r.size.width.min(r.size.height);
        if quad
            .iter()
            .zip(&rect)
            .all(|(a, b)| dist(*a, *b) <= tolerance)
        {
            return Ok(quad);
        }
    }
    Ok(rect)
}

pub(crate) fn dist(a: Point2f, b: Point2f) -> f32 {
    ((a.x - b.x).powi(2) + (a.y - b.y).powi(2)).sqrt()
}

/// Top-left, top-right, bottom-right, bottom-left (as `synth.order_quad`): the two leftmost
/// points are the left corners, the upper of each pair the top one. Plates are wider than
/// high and never turned near 90 degrees, so this holds where sorting by x + y does not (a
/// turned plate's top-left can have a larger x + y than its bottom-left).
pub(crate) fn order(p: &[Point2f]) -> [Point2f; 4] {
    let mut s: Vec<Point2f> = p.to_vec();
    s.resize(4, Point2f::default());
    s.sort_by(|a, b| a.x.total_cmp(&b.x));
    let (l, r) = s.split_at(2);
    let (tl, bl) = if l[0].y <= l[1].y {
        (l[0], l[1])
    } else {
        (l[1], l[0])
    };
    let (tr, br) = if r[0].y <= r[1].y {
        (r[0], r[1])
    } else {
        (r[1], r[0])
    };
    [tl, tr, br, bl]
}

pub(crate) fn bbox(q: &[Point2f; 4], w: i32, h: i32) -> [i32; 4] {
    let x0 = q.iter().map(|p| p.x).fold(f32::MAX, f32::min).max(0.0) as i32;
    let y0 = q.iter().map(|p| p.y).fold(f32::MAX, f32::min).max(0.0) as i32;
    let x1 = (q.iter().map(|p| p.x).fold(f32::MIN, f32::max).ceil() as i32).min(w);
    let y1 = (q.iter().map(|p| p.y).fold(f32::MIN, f32::max).ceil() as i32).min(h);
    [x0, y0, (x1 - x0).max(0), (y1 - y0).max(0)]
}

/// Two plates close together (a tractor's front plate beside the next truck's, two trailers
/// side by side) can touch in the mask and make one blob that is no plate's shape. A blob
/// that fills less than [`SPLIT_FILL`] of its minimum-area rectangle is thresholded again,
/// higher, inside its bounding box; where that parts it into two or more blobs (of at least
/// [`MIN_BLOB`] pixels), those are the plates. Otherwise the blob is kept as it is.
fn split_touching(prob: &Mat, blob: Vector<Point>) -> Result<Vec<Vector<Point>>, AnprError> {
    let r = imgproc::min_area_rect(&blob).map_err(cv)?;
    let area = imgproc::contour_area(&blob, false).map_err(cv)?;
    let rect_area = f64::from(r.size.width) * f64::from(r.size.height);
    if rect_area <= 0.0 || area / rect_area >= SPLIT_FILL {
        return Ok(vec![blob]);
    }
    let bounds = imgproc::bounding_rect(&blob).map_err(cv)?;
    let roi = Mat::roi(prob, bounds)
        .map_err(cv)?
        .try_clone()
        .map_err(cv)?;
    for threshold in SPLIT_THRESHOLDS {
        let (_, parts) = blobs_above(&roi, threshold, bounds.tl())?;
        if parts.len() >= 2 {
            return Ok(parts);
        }
    }
    Ok(vec![blob])
}

/// The mask thresholded (0 or 255, 8-bit) and the outlines of its blobs of at least
/// [`MIN_BLOB`] pixels, shifted by `offset`.
fn blobs_above(
    prob: &Mat,
    threshold: f64,
    offset: Point,
) -> Result<(Mat, Vec<Vector<Point>>), AnprError> {
    let mut bin = Mat::default();
    imgproc::threshold(prob, &mut bin, threshold, 255.0, imgproc::THRESH_BINARY).map_err(cv)?;
    let mut bin8 = Mat::default();
    bin.convert_to(&mut bin8, core::CV_8U, 1.0, 0.0)
        .map_err(cv)?;
    let mut outlines = Vector::<Vector<Point>>::new();
    imgproc::find_contours(
        &bin8,
        &mut outlines,
        imgproc::RETR_EXTERNAL,
        imgproc::CHAIN_APPROX_SIMPLE,
        offset,
    )
    .map_err(cv)?;
    let mut blobs = Vec::new();
    for o in outlines {
        if imgproc::contour_area(&o, false).map_err(cv)? >= MIN_BLOB {
            blobs.push(o);
        }
    }
    Ok((bin8, blobs))
}

fn mean_inside(prob: &Mat, bin: &Mat, r: Rect) -> Result<f32, AnprError> {
    let p = Mat::roi(prob, r).map_err(cv)?;
    let b = Mat::roi(bin, r).map_err(cv)?;
    let m = core::mean(&p, &b).map_err(cv)?;
    Ok(m[0] as f32)
}

/// Warps the quadrilateral, grown by [`MARGIN`] of its height, to an upright crop.
pub fn rectify(frame: &Mat, q: &[Point2f; 4]) -> Result<Mat, AnprError> {
    let wt = (dist(q[0], q[1]) + dist(q[3], q[2])) / 2.0;
    let ht = (dist(q[0], q[3]) + dist(q[1], q[2])) / 2.0;
    let ow = ((wt + 2.0 * MARGIN * ht).round() as i32).max(8);
    let oh = ((ht * (1.0 + 2.0 * MARGIN)).round() as i32).max(8);
    let m = MARGIN * ht;
    let dst = [
        Point2f::new(m, m),
        Point2f::new(ow as f32 - m, m),
        Point2f::new(ow as f32 - m, oh as f32 - m),
        Point2f::new(m, oh as f32 - m),
    ];
    warp(frame, q, &dst, Size::new(ow, oh), imgproc::INTER_LINEAR)
}

/// The frame warped so that the quadrilateral `q` lands on `dst` in an image of `size`
/// (edges replicated beyond the frame).
pub(crate) fn warp(
    frame: &Mat,
    q: &[Point2f; 4],
    dst: &[Point2f; 4],
    size: Size,
    interpolation: i32,
) -> Result<Mat, AnprError> {
    let src: Vector<Point2f> = q.iter().copied().collect();
    let dst: Vector<Point2f> = dst.iter().copied().collect();
    let t = imgproc::get_perspective_transform(&src, &dst, core::DECOMP_LU).map_err(cv)?;
    let mut out = Mat::default();
    imgproc::warp_perspective(
        frame,
        &mut out,
        &t,
        size,
        interpolation,
        core::BORDER_REPLICATE,
        Scalar::default(),
    )
    .map_err(cv)?;
    Ok(out)
}

fn resized(src: &Mat, w: i32, h: i32) -> Result<Mat, AnprError> {
    let mut out = Mat::default();
    imgproc::resize(
        src,
        &mut out,
        Size::new(w, h),
        0.0,
        0.0,
        imgproc::INTER_LINEAR,
    )
    .map_err(cv)?;
    Ok(out)
}

/// The recogniser's input for a rectified crop: grey, 32x192, scaled to [-1, 1]; a
/// double-row plate's rows side by side, top row first, each in half the width, which keeps
/// the characters' proportions for both plate shapes (as `synth.ocr_input`).
pub fn ocr_input(crop: &Mat, layout: Layout) -> Result<Vec<f32>, AnprError> {
    let mut g = Mat::default();
    imgproc::cvt_color(crop, &mut g, imgproc::COLOR_BGR2GRAY, 0).map_err(cv)?;
    let (w, h) = (g.cols(), g.rows());
    let img = if layout == Layout::Double {
        let top_h = (h as f32 * 0.5) as i32;
        let bottom_y = (h as f32 * 0.42) as i32;
        let top = Mat::roi(&g, Rect::new(0, 0, w, top_h.max(1))).map_err(cv)?;
        let bottom = Mat::roi(&g, Rect::new(0, bottom_y, w, (h - bottom_y).max(1))).map_err(cv)?;
        let tw = OCR_W / 2;
        let a = resized(&top.try_clone().map_err(cv)?, tw, OCR_H)?;
        let b = resized(&bottom.try_clone().map_err(cv)?, OCR_W - tw, OCR_H)?;
        let mut both = Mat::default();
        core::hconcat2(&a, &b, &mut both).map_err(cv)?;
        both
    } else {
        resized(&g, OCR_W, OCR_H)?
    };
    Ok(img
        .data_bytes()
        .map_err(cv)?
        .iter()
        .map(|&v| v as f32 / 127.5 - 1.0)
        .collect())
}

/// A JPEG of a crop, for the event and the display.
pub fn jpeg(img: &Mat, quality: i32) -> Result<Vec<u8>, AnprError> {
    let mut buf = Vector::<u8>::new();
    let params: Vector<i32> = [opencv::imgcodecs::IMWRITE_JPEG_QUALITY, quality]
        .into_iter()
        .collect();
    opencv::imgcodecs::imencode(".jpg", img, &mut buf, &params).map_err(cv)?;
    Ok(buf.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_by_shape() {
        assert_eq!(layouts(1.4), &[Layout::Double]);
        assert_eq!(layouts(2.8), &[Layout::Single, Layout::Double]);
        assert_eq!(layouts(5.0), &[Layout::Single]);
    }

    #[test]
    fn charset_matches_the_formats() {
        // Every character a format can need is one the recogniser can emit.
        for c in "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ挂新京".chars() {
            assert!(CHARSET.contains(c), "{c}");
        }
        assert_eq!(CHARSET.chars().count(), 36 + 31 + 1);
    }

    #[test]
    fn corners_are_ordered() {
        let p = [
            Point2f::new(10.0, 50.0),
            Point2f::new(100.0, 12.0),
            Point2f::new(12.0, 10.0),
            Point2f::new(98.0, 52.0),
        ];
        let o = order(&p);
        assert_eq!(o[0], Point2f::new(12.0, 10.0));
        assert_eq!(o[1], Point2f::new(100.0, 12.0));
        assert_eq!(o[2], Point2f::new(98.0, 52.0));
        assert_eq!(o[3], Point2f::new(10.0, 50.0));
        assert!((aspect(&o) - 2.1).abs() < 0.1);
        // A badly simplified outline (from a real blob) where x + y ordering picked the same
        // point as top-left and bottom-left: every point is used once.
        let p = [
            (374.0, 308.0),
            (397.0, 295.0),
            (449.0, 306.0),
            (451.0, 319.0),
        ]
        .map(|(x, y)| Point2f::new(x, y));
        let o = order(&p);
        assert!(p.iter().all(|q| o.contains(q)), "{o:?}");
    }

    #[test]
    fn plates_that_touch_in_the_mask_are_parted() {
        // Two plates, diagonal to each other, joined by a strip of middling probability.
        let mut prob =
            Mat::new_rows_cols_with_default(60, 120, core::CV_32F, Scalar::all(0.0)).unwrap();
        for (r, v) in [
            (Rect::new(10, 10, 50, 15), 0.95),
            (Rect::new(55, 32, 50, 15), 0.95),
            (Rect::new(50, 20, 12, 14), 0.5),
        ] {
            Mat::roi_mut(&mut prob, r)
                .unwrap()
                .set_to(&Scalar::all(v), &core::no_array())
                .unwrap();
        }
        let outline = |t: f64| blobs_above(&prob, t, Point::new(0, 0)).unwrap().1;
        let mut joined = outline(0.4);
        assert_eq!(joined.len(), 1);
        let parts = split_touching(&prob, joined.remove(0)).unwrap();
        let mut boxes: Vec<Rect> = parts
            .iter()
            .map(|p| imgproc::bounding_rect(p).unwrap())
            .collect();
        boxes.sort_by_key(|b| b.x);
        assert_eq!(
            boxes,
            [Rect::new(10, 10, 50, 15), Rect::new(55, 32, 50, 15)]
        );
        // One plate on its own is left as it is.
        let one = outline(0.9).remove(0);
        let kept = split_touching(&prob, one.clone()).unwrap();
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].to_vec(), one.to_vec());
    }

    #[test]
    fn a_blob_with_a_corner_cut_off_is_its_rectangle() {
        // A 100x25 plate whose bottom-left corner the mask missed.
        let cut: Vector<Point> = [(0, 0), (100, 0), (100, 25), (30, 25), (0, 12)]
            .into_iter()
            .map(|(x, y)| Point::new(x, y))
            .collect();
        let q = quadrilateral(&cut).unwrap();
        let want = [(0.0, 0.0), (100.0, 0.0), (100.0, 25.0), (0.0, 25.0)];
        for (got, (x, y)) in q.iter().zip(want) {
            assert!(dist(*got, Point2f::new(x, y)) < 2.0, "{q:?}");
        }
        // A clean perspective outline keeps its own corners.
        let plate: Vector<Point> = [(0, 2), (100, 0), (98, 27), (2, 25)]
            .into_iter()
            .map(|(x, y)| Point::new(x, y))
            .collect();
        let q = quadrilateral(&plate).unwrap();
        assert_eq!(q[2], Point2f::new(98.0, 27.0));
    }
}
