//! Multi-frame voting: a passage gives a camera several frames, each read on its own; one
//! plate per passage and view comes out of them.
//!
//! Reads are corrected to a valid format first ([`super::format::correct`]); reads that fit
//! no format drop out. Among the rest, every distinct plate collects the confidence of the
//! frames that read it; the plate with the most wins. Its confidence is its share of the
//! collected confidence times the mean confidence of the frames that read it, so three
//! frames agreeing at 0.9 beat one frame at 0.99, and a split vote says so.

use super::format::{correct, Corrected};

/// One plate out of several frames.
#[derive(Debug, Clone, PartialEq)]
pub struct Voted {
    pub plate: Corrected,
    pub confidence: f32,
    /// Frames that read this plate, of the frames with a valid read.
    pub agreeing: usize,
    pub valid: usize,
}

/// Votes over the frames' reads (`text`, recogniser confidence).
pub fn vote(reads: &[(String, f32)], max_corrections: usize) -> Option<Voted> {
    let mut tally: Vec<(Corrected, f32, usize)> = Vec::new();
    let mut total = 0.0f32;
    let mut valid = 0;
    for (text, conf) in reads {
        let Some(c) = correct(text, max_corrections) else {
            continue;
        };
        // A corrected character is less certain than a read one.
        let w = conf.clamp(0.0, 1.0) * 0.9f32.powi(c.corrections as i32);
        total += w;
        valid += 1;
        match tally.iter_mut().find(|(p, _, _)| p.text == c.text) {
            Some(t) => {
                t.1 += w;
                t.2 += 1;
            }
            None => tally.push((c, w, 1)),
        }
    }
    // Highest weight; ties to the plate needing fewer corrections, then the first seen.
    let (plate, weight, agreeing) = tally.into_iter().reduce(|best, t| {
        if t.1 > best.1 || (t.1 == best.1 && t.0.corrections < best.0.corrections) {
            t
        } else {
            best
        }
    })?;
    Some(Voted {
        confidence: (weight / total) * (weight / agreeing as f32),
        plate,
        agreeing,
        valid,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(t: &str, c: f32) -> (String, f32) {
        (t.to_string(), c)
    }

    #[test]
    fn agreeing_frames_outvote_one_confident_frame() {
        let v = vote(
            &[
                r("123ABC02", 0.9),
                r("123ABC02", 0.9),
                r("128ABC02", 0.99),
                r("123A8C02", 0.9),
            ],
            2,
        )
        .unwrap();
        assert_eq!(v.plate.text, "123ABC02");
        // The third read (8→B corrected) agrees too.
        assert_eq!((v.agreeing, v.valid), (3, 4));
        assert!(v.confidence > 0.6 && v.confidence < 0.9, "{v:?}");
    }

    #[test]
    fn unanimous_reads_keep_their_confidence_and_garbage_drops_out() {
        let v = vote(
            &[r("01 A 123 BC", 0.95), r("??", 0.99), r("01A123BC", 0.95)],
            2,
        )
        .unwrap();
        assert_eq!((v.plate.text.as_str(), v.plate.country), ("01A123BC", "UZ"));
        assert!((v.confidence - 0.95).abs() < 1e-6, "{v:?}");
        assert_eq!((v.agreeing, v.valid), (2, 2));
        assert!(vote(&[r("??", 0.9)], 2).is_none());
        assert!(vote(&[], 2).is_none());
    }

    #[test]
    fn a_split_vote_lowers_the_confidence() {
        let v = vote(&[r("123ABC02", 0.9), r("124ABC02", 0.9)], 2).unwrap();
        assert!(v.confidence < 0.5, "{v:?}");
    }
}
