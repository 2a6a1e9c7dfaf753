//! One frame to plate reads: localisation (ONNX mask) → quadrilaterals → perspective
//! rectification → recogniser input (double-row plates split and laid side by side, top row
//! first) → ONNX recogniser → CTC decoding with per-character candidates → country-aware
//! format correction ([`super::format`]; where no format fits, the read without one of its
//! characters is tried, the commonest length error).
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

use super::format::correct_candidates;
use super::models::ModelSource;
use super::AnprError;
use crate::fusion::plates::normalise;

/// The localiser's input size (the frame is resized to it).
pub const LOC_W: i32 = 640;
pub const LOC_H: i32 = 360;
/// The recogniser's input size.
pub const OCR_W: i32 = 128;
pub const OCR_H: i32 = 32;
/// A rectified plate narrower than this (width / height) is read as two rows.
pub const DOUBLE_ROW_ASPECT: f32 = 3.0;
/// Margin kept around the localised quadrilateral, as a fraction of its height.
pub const MARGIN: f32 = 0.2;
/// Mask probability above which a pixel is plate.
const MASK_THRESHOLD: f32 = 0.4;
/// A read that fits no plate format is kept only above this recogniser confidence.
const UNFORMATTED_MIN: f32 = 0.5;
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

/// One recogniser output, decoded.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    pub raw: String,
    /// Per character: its candidates, likeliest first, with their probabilities.
    pub positions: Vec<Vec<(char, f32)>>,
}

/// How long the stages of the last frame took, in milliseconds.
#[derive(Debug, Clone, Copy, Default)]
pub struct Timing {
    pub localise_ms: f64,
    pub recognise_ms: f64,
}

/// The two sessions, created once and reused for every frame.
pub struct Reader {
    loc: Session,
    ocr: Session,
    charset: Vec<char>,
    pub timing: Timing,
}

fn cv(e: opencv::Error) -> AnprError {
    AnprError::Image(e.to_string())
}

fn ort_err(e: ort::Error) -> AnprError {
    AnprError::Inference(e.to_string())
}

impl Reader {
    pub fn new(env: &Environment, models: &ModelSource) -> Result<Reader, AnprError> {
        Ok(Reader {
            loc: models.localiser(env)?,
            ocr: models.recogniser(env)?,
            charset: CHARSET.chars().collect(),
            timing: Timing::default(),
        })
    }

    /// Every plate in a BGR frame.
    pub fn read(&mut self, frame: &Mat) -> Result<Vec<PlateFound>, AnprError> {
        let t0 = Instant::now();
        let quads = self.localise(frame)?;
        let t1 = Instant::now();
        let mut crops = Vec::with_capacity(quads.len());
        for (q, _) in &quads {
            crops.push(rectify(frame, q)?);
        }
        let decoded = self.recognise(&crops)?;
        self.timing = Timing {
            localise_ms: (t1 - t0).as_secs_f64() * 1e3,
            recognise_ms: t1.elapsed().as_secs_f64() * 1e3,
        };
        let mut out = Vec::new();
        for (((quad, loc_score), crop), d) in quads.into_iter().zip(crops).zip(decoded) {
            if d.positions.len() < 4 {
                continue;
            }
            let (text, country, conf) =
                match correct_candidates(&d.positions).or_else(|| without_one(&d.positions)) {
                    Some((c, p)) => (c.text, Some(c.country), p),
                    None => {
                        // No format fits: a foreign plate, or something that is not a plate
                        // (a badge, a sign). Kept, at half its confidence, only when read
                        // clearly enough for an officer to judge.
                        let p = d.positions.iter().map(|c| c[0].1).product::<f32>();
                        if p < UNFORMATTED_MIN || d.positions.len() < 5 {
                            continue;
                        }
                        (normalise(&d.raw), None, p * 0.5)
                    }
                };
            out.push(PlateFound {
                text,
                country,
                confidence: (conf * loc_score.sqrt()).clamp(0.0, 1.0),
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
        let mut bin = Mat::default();
        imgproc::threshold(
            &up,
            &mut bin,
            MASK_THRESHOLD as f64,
            255.0,
            imgproc::THRESH_BINARY,
        )
        .map_err(cv)?;
        let mut bin8 = Mat::default();
        bin.convert_to(&mut bin8, core::CV_8U, 1.0, 0.0)
            .map_err(cv)?;
        let mut contours = Vector::<Vector<Point>>::new();
        imgproc::find_contours(
            &bin8,
            &mut contours,
            imgproc::RETR_EXTERNAL,
            imgproc::CHAIN_APPROX_SIMPLE,
            Point::new(0, 0),
        )
        .map_err(cv)?;
        let sx = frame.cols() as f32 / LOC_W as f32;
        let sy = frame.rows() as f32 / LOC_H as f32;
        let mut out = Vec::new();
        for c in contours.iter() {
            if imgproc::contour_area(&c, false).map_err(cv)? < MIN_BLOB {
                continue;
            }
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

    /// Runs the recogniser on rectified crops, all in one batch.
    pub fn recognise(&mut self, crops: &[Mat]) -> Result<Vec<Decoded>, AnprError> {
        if crops.is_empty() {
            return Ok(Vec::new());
        }
        let per = (OCR_W * OCR_H) as usize;
        let mut input = Vec::with_capacity(per * crops.len());
        for c in crops {
            input.extend(ocr_input(c)?);
        }
        let tensor = Tensor::from_array(([crops.len(), 1, OCR_H as usize, OCR_W as usize], input))
            .map_err(ort_err)?;
        let outputs = self.ocr.run(ort::inputs!["x" => tensor]).map_err(ort_err)?;
        let (shape, probs) = outputs["probs"]
            .try_extract_tensor::<f32>()
            .map_err(ort_err)?;
        let (t, k) = (shape[1] as usize, shape[2] as usize);
        if k != self.charset.len() + 1 {
            return Err(AnprError::Inference(format!(
                "recogniser has {k} classes, the charset {} (+ blank)",
                self.charset.len()
            )));
        }
        Ok(probs
            .chunks_exact(t * k)
            .map(|p| ctc_decode(p, t, k, &self.charset))
            .collect())
    }
}

/// One character too many is the recogniser's commonest length error (a flag mark, a border
/// or a separator read as a character): the best valid plate without one of the positions,
/// its probability scaled by how unsure the recogniser was of the dropped one.
fn without_one(positions: &[Vec<(char, f32)>]) -> Option<(super::format::Corrected, f32)> {
    (0..positions.len())
        .filter_map(|i| {
            let mut rest = positions.to_vec();
            let dropped = rest.remove(i);
            let (c, p) = correct_candidates(&rest)?;
            Some((c, p * (1.0 - dropped[0].1).clamp(0.0, 1.0)))
        })
        .max_by(|a, b| a.1.total_cmp(&b.1))
}

/// Greedy CTC decoding: the likeliest class per step, repeats merged, blanks dropped. Each
/// character keeps the three likeliest classes at its most confident step.
pub fn ctc_decode(probs: &[f32], t: usize, k: usize, charset: &[char]) -> Decoded {
    let mut raw = String::new();
    let mut positions: Vec<Vec<(char, f32)>> = Vec::new();
    let mut best_p: Vec<f32> = Vec::new();
    let mut prev = 0usize;
    for step in 0..t {
        let row = &probs[step * k..(step + 1) * k];
        let (arg, &p) = row
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .expect("k > 0");
        if arg != 0 {
            let mut top: Vec<(char, f32)> = row[1..]
                .iter()
                .enumerate()
                .map(|(i, &q)| (charset[i], q))
                .collect();
            top.sort_by(|a, b| b.1.total_cmp(&a.1));
            top.truncate(3);
            if arg != prev {
                raw.push(charset[arg - 1]);
                positions.push(top);
                best_p.push(p);
            } else if let (Some(last), Some(bp)) = (positions.last_mut(), best_p.last_mut()) {
                if p > *bp {
                    *last = top;
                    *bp = p;
                }
            }
        }
        prev = arg;
    }
    Decoded { raw, positions }
}

/// Width over height of a quadrilateral (tl, tr, br, bl).
fn aspect(q: &[Point2f; 4]) -> f32 {
    let d = |a: Point2f, b: Point2f| ((a.x - b.x).powi(2) + (a.y - b.y).powi(2)).sqrt();
    let w = (d(q[0], q[1]) + d(q[3], q[2])) / 2.0;
    let h = (d(q[0], q[3]) + d(q[1], q[2])) / 2.0;
    if h <= 0.0 {
        0.0
    } else {
        w / h
    }
}

/// The four corners of a plate blob: its convex hull simplified to four points where it
/// simplifies to four, else its minimum-area rectangle.
fn quadrilateral(contour: &Vector<Point>) -> Result<[Point2f; 4], AnprError> {
    let mut hull = Vector::<Point>::new();
    imgproc::convex_hull(contour, &mut hull, false, true).map_err(cv)?;
    let peri = imgproc::arc_length(&hull, true).map_err(cv)?;
    let mut approx = Vector::<Point>::new();
    imgproc::approx_poly_dp(&hull, &mut approx, 0.04 * peri, true).map_err(cv)?;
    let pts: Vec<Point2f> = if approx.len() == 4 {
        approx
            .iter()
            .map(|p| Point2f::new(p.x as f32, p.y as f32))
            .collect()
    } else {
        let r = imgproc::min_area_rect(contour).map_err(cv)?;
        let mut p = [Point2f::default(); 4];
        r.points(&mut p).map_err(cv)?;
        p.to_vec()
    };
    Ok(order(&pts))
}

/// Top-left, top-right, bottom-right, bottom-left (as `synth.order_quad`).
fn order(p: &[Point2f]) -> [Point2f; 4] {
    let by = |f: &dyn Fn(&Point2f) -> f32, max: bool| {
        let it = p.iter().copied();
        if max {
            it.max_by(|a, b| f(a).total_cmp(&f(b)))
        } else {
            it.min_by(|a, b| f(a).total_cmp(&f(b)))
        }
        .unwrap_or_default()
    };
    let s = |q: &Point2f| q.x + q.y;
    let d = |q: &Point2f| q.y - q.x;
    [by(&s, false), by(&d, false), by(&s, true), by(&d, true)]
}

fn bbox(q: &[Point2f; 4], w: i32, h: i32) -> [i32; 4] {
    let x0 = q.iter().map(|p| p.x).fold(f32::MAX, f32::min).max(0.0) as i32;
    let y0 = q.iter().map(|p| p.y).fold(f32::MAX, f32::min).max(0.0) as i32;
    let x1 = (q.iter().map(|p| p.x).fold(f32::MIN, f32::max).ceil() as i32).min(w);
    let y1 = (q.iter().map(|p| p.y).fold(f32::MIN, f32::max).ceil() as i32).min(h);
    [x0, y0, (x1 - x0).max(0), (y1 - y0).max(0)]
}

fn mean_inside(prob: &Mat, bin: &Mat, r: Rect) -> Result<f32, AnprError> {
    let p = Mat::roi(prob, r).map_err(cv)?;
    let b = Mat::roi(bin, r).map_err(cv)?;
    let m = core::mean(&p, &b).map_err(cv)?;
    Ok(m[0] as f32)
}

/// Warps the quadrilateral, grown by [`MARGIN`] of its height, to an upright crop.
pub fn rectify(frame: &Mat, q: &[Point2f; 4]) -> Result<Mat, AnprError> {
    let d = |a: Point2f, b: Point2f| ((a.x - b.x).powi(2) + (a.y - b.y).powi(2)).sqrt();
    let wt = (d(q[0], q[1]) + d(q[3], q[2])) / 2.0;
    let ht = (d(q[0], q[3]) + d(q[1], q[2])) / 2.0;
    let ow = ((wt + 2.0 * MARGIN * ht).round() as i32).max(8);
    let oh = ((ht * (1.0 + 2.0 * MARGIN)).round() as i32).max(8);
    let m = MARGIN * ht;
    let src: Vector<Point2f> = q.iter().copied().collect();
    let dst: Vector<Point2f> = [
        Point2f::new(m, m),
        Point2f::new(ow as f32 - m, m),
        Point2f::new(ow as f32 - m, oh as f32 - m),
        Point2f::new(m, oh as f32 - m),
    ]
    .into_iter()
    .collect();
    let t = imgproc::get_perspective_transform(&src, &dst, core::DECOMP_LU).map_err(cv)?;
    let mut out = Mat::default();
    imgproc::warp_perspective(
        frame,
        &mut out,
        &t,
        Size::new(ow, oh),
        imgproc::INTER_LINEAR,
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

/// The recogniser's input for a rectified crop: grey, 32x128, scaled to [-1, 1]; a
/// double-row plate's rows side by side, top row first (as `synth.ocr_input`).
pub fn ocr_input(crop: &Mat) -> Result<Vec<f32>, AnprError> {
    let mut g = Mat::default();
    imgproc::cvt_color(crop, &mut g, imgproc::COLOR_BGR2GRAY, 0).map_err(cv)?;
    let (w, h) = (g.cols(), g.rows());
    let img = if (w as f32) / (h as f32) < DOUBLE_ROW_ASPECT {
        let top_h = (h as f32 * 0.5) as i32;
        let bottom_y = (h as f32 * 0.42) as i32;
        let top = Mat::roi(&g, Rect::new(0, 0, w, top_h.max(1))).map_err(cv)?;
        let bottom = Mat::roi(&g, Rect::new(0, bottom_y, w, (h - bottom_y).max(1))).map_err(cv)?;
        let tw = OCR_W * 3 / 8;
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

    fn onehot(seq: &[usize], k: usize) -> Vec<f32> {
        let mut v = vec![0.0; seq.len() * k];
        for (t, &c) in seq.iter().enumerate() {
            v[t * k + c] = 1.0;
        }
        v
    }

    #[test]
    fn ctc_merges_repeats_and_drops_blanks() {
        let cs: Vec<char> = "0123".chars().collect();
        // 1 1 _ 1 2 2 _ _ 3 -> "1123" (blank between repeats keeps both)
        let p = onehot(&[2, 2, 0, 2, 3, 3, 0, 0, 4], 5);
        let d = ctc_decode(&p, 9, 5, &cs);
        assert_eq!(d.raw, "1123");
        assert_eq!(d.positions.len(), 4);
        assert_eq!(d.positions[3][0], ('3', 1.0));
    }

    #[test]
    fn a_read_one_character_too_long_loses_its_least_certain_one() {
        let pos: Vec<Vec<(char, f32)>> = "123ABCX02"
            .chars()
            .map(|c| vec![(c, if c == 'X' { 0.3 } else { 0.95 })])
            .collect();
        assert!(correct_candidates(&pos).is_none());
        let (c, p) = without_one(&pos).unwrap();
        assert_eq!((c.text.as_str(), c.country), ("123ABC02", "KZ"));
        // The kept characters' probabilities, times how unsure the dropped one was.
        assert!((p - 0.95f32.powi(8) * 0.7).abs() < 1e-4, "{p}");
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
    }
}
