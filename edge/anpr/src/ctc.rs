//! Reading the recogniser's output: CTC decoding constrained to the plate formats.
//!
//! The recogniser gives, for each of its `t` column steps, a probability over the CTC blank
//! and the characters of [`super::pipeline::CHARSET`]. Instead of taking the likeliest class
//! per step and repairing the text afterwards, the decoder finds, for every format of
//! [`super::format::FORMATS`], the likeliest alignment whose characters fit that format's
//! slots (a Viterbi pass over the format's slots with blanks between them), and keeps the
//! likeliest of all formats. A read one character too long or too short, or a digit where
//! the format needs a letter, so becomes the plate the recogniser found next likeliest, and
//! the choice between O and 0 is the recogniser's where it can tell them apart (where it
//! cannot, the order of the formats decides), not a fixed table's. A region digit no
//! region has ([`super::format::region_allows`]) costs its read a prior ([`REGION_PRIOR`]),
//! so that where the recogniser doubts, the plate it reads is one that can exist. Where the
//! recogniser reads separators (a space between a plate's groups), a format whose groups
//! part there is likelier than one that would put the separator inside a group.
//!
//! Where even the best format needs characters the recogniser gave almost no probability,
//! the plate is read as written instead (the unconstrained greedy read), for an officer to
//! judge: a foreign plate, or something that is not a plate.

use super::format::{allows, everyday, issued, region_allows, Format, FORMATS};
use acsgd_fusion::plates::normalise;

/// A formatted read is kept when the product of its characters' probabilities is at least
/// this (a single character the recogniser all but ruled out brings it below)...
const FORMATTED_MIN: f32 = 0.01;
/// ...and its alignment at least this fraction as likely as the unconstrained one (a blank
/// forced where the recogniser clearly saw a character brings it below).
const FORMATTED_MIN_RATIO: f32 = 1e-4;
/// A read that fits no plate format is kept only at this confidence, and only this long.
const UNFORMATTED_MIN: f32 = 0.5;
const UNFORMATTED_MIN_LEN: usize = 5;
/// Reads of two formats whose log-probabilities differ by less than this are a tie
/// ([`Decoder::read`]).
const TIE: f32 = 0.05;
/// Log-probability of a step that cannot be taken.
const NEG: f32 = -1e30;
/// Log-probability added to a region digit no region has ([`super::format::region_allows`]):
/// the recogniser must find it this many times likelier (here 20) than the likeliest read
/// with a region that exists, so that a doubtful digit becomes what exists while a plate
/// clearly read is kept as written.
const REGION_PRIOR: f32 = -3.0;

/// One crop's read.
#[derive(Debug, Clone, PartialEq)]
pub struct Recognised {
    /// Normalised; fits `country`'s format when there is one.
    pub text: String,
    pub country: Option<&'static str>,
    /// The product of the characters' probabilities (each its best step's), halved for a
    /// read that fits no format.
    pub confidence: f32,
    /// Log-probability of the alignment read, over all steps, with the region prior of a
    /// formatted read: what decides between two reads of the same crop (its two layouts).
    pub log_p: f32,
}

impl Recognised {
    /// Whether this read of a crop is to be preferred over `other`, a read of the same crop
    /// in another layout: a formatted read over an unformatted one, then the likelier.
    pub fn better_than(&self, other: &Recognised) -> bool {
        match (self.country.is_some(), other.country.is_some()) {
            (true, false) => true,
            (false, true) => false,
            _ => self.log_p > other.log_p,
        }
    }
}

/// The decoder for one recogniser: each format's slots as priors over its classes.
pub struct Decoder {
    charset: Vec<char>,
    /// Whether the recogniser's output has a separator class after the charset (a space or a
    /// dot between a plate's groups), and what share of its probability counts as the blank
    /// inside a group ([`Decoder::with_separator`]).
    separator: Option<f32>,
    /// Whether the output has, after the separator, a class for marks no plate has (a
    /// slash: [`Decoder::with_foreign_marks`]).
    marks: bool,
    /// Log-probability added to a format no longer issued, when the decoder chooses between
    /// formats (0: none).
    rare_prior: f32,
    /// Per format, what its slots and gaps allow.
    priors: Vec<Slots>,
}

/// One format as the decoder sees it.
struct Slots {
    format: &'static Format,
    /// Per slot, per class (index into the output, 0 the blank): the log-probability added
    /// where the class begins that slot's character; `NEG` where it does not fit.
    classes: Vec<Vec<f32>>,
    /// After how many characters a separator is where the format's groups part: before the
    /// first and after the last too (a flag strip, a frame), and at [`Format::gaps`].
    gaps: Vec<bool>,
    /// `classes` split by where the serial number's first digit other than 0 is, one per
    /// place ([`Format::number`]): together they allow every serial that is issued
    /// ([`issued`]) and none that is not. Decoded only when `classes`' likeliest read has a
    /// serial of all 0, which is rare on plates and common on camera text.
    issued: Vec<Vec<Vec<f32>>>,
}

/// The likeliest alignment through one format: the classes read and each one's probability.
struct Path {
    classes: Vec<usize>,
    probs: Vec<f32>,
    log_p: f32,
    /// The steps it spends as the blank between its first and last character.
    between: Vec<usize>,
}

/// Per step, the log-probability of the blank between a plate's characters: where the
/// format's groups part (`gap`) and inside a group (`inside`). Before the first character
/// and after the last it is `lp`'s blank.
struct Blanks<'a> {
    gap: &'a [f32],
    inside: &'a [f32],
}

impl Decoder {
    pub fn new(charset: &[char]) -> Decoder {
        let priors = FORMATS
            .iter()
            .map(|f| {
                let classes: Vec<Vec<f32>> = f
                    .slots
                    .chars()
                    .enumerate()
                    .map(|(i, slot)| {
                        std::iter::once(NEG)
                            .chain(charset.iter().map(|&c| {
                                if !allows(f, slot, c) {
                                    NEG
                                } else if region_allows(f, i, c) {
                                    0.0
                                } else {
                                    REGION_PRIOR
                                }
                            }))
                            .collect()
                    })
                    .collect();
                let n = f.slots.chars().count();
                let gaps = (0..=n)
                    .map(|j| j == 0 || j == n || f.gaps.contains(&j))
                    .collect();
                let issued = serials_issued(&classes, f.number, charset);
                Slots {
                    format: f,
                    classes,
                    gaps,
                    issued,
                }
            })
            .collect();
        Decoder {
            charset: charset.to_vec(),
            separator: None,
            marks: false,
            rare_prior: 0.0,
            priors,
        }
    }

    /// The same decoder, weighing formats no longer issued ([`super::format::everyday`])
    /// down by `log_p` when it chooses between formats: where the characters fit an old
    /// and a current format about equally, the current plate is the likelier one.
    pub fn with_rare_prior(mut self, log_p: f32) -> Decoder {
        self.rare_prior = log_p;
        self
    }

    /// The same decoder for output with a separator class after the charset. A separator is
    /// no character of the plate: where the format's groups part ([`Format::gaps`]) it is
    /// the blank; inside a group only `inside` of its probability is, so that where the
    /// recogniser saw `1150 DK01`, the plate is the trailer's `1150DK01` (`DDDD LL DD`)
    /// rather than `115ODK01` (`DDD LLL DD`), whose O it cannot tell from 0. A share, not
    /// nothing: a separator misread inside a group costs a read at most `1 / inside`.
    pub fn with_separator(mut self, inside: f32) -> Decoder {
        self.separator = Some(inside);
        self
    }

    /// The separator's class, where the output has one ([`Decoder::with_separator`]).
    pub fn separator_class(&self) -> Option<usize> {
        self.separator.map(|_| self.charset.len() + 1)
    }

    /// The same decoder for output with one more class after the separator: marks that are on
    /// no plate (a slash), but are in the text around plates: a camera's counter `0000/15296`,
    /// a date `2024/10/07`. Before a plate's first character or after its last, such a mark is
    /// the blank (text beside the plate); between them it is no blank, and the read keeps of
    /// its confidence only what the recogniser left to something else at each step it spends
    /// there as the blank: a read across a clear slash is no plate. A separator's probability
    /// is not the same evidence: a space is read between a plate's characters, where the
    /// recogniser sees wide spacing, and a Chinese plate's dot is read as a colon.
    pub fn with_foreign_marks(mut self) -> Decoder {
        debug_assert!(
            self.separator.is_some(),
            "the marks' class follows the separator's"
        );
        self.marks = true;
        self
    }

    /// Classes the recogniser must output: the CTC blank and the charset, and the separator
    /// where there is one.
    pub fn classes(&self) -> usize {
        self.charset.len() + 1 + usize::from(self.separator.is_some()) + usize::from(self.marks)
    }

    /// The likeliest alignment through format `s` whose serial number is one that is issued.
    fn likeliest(
        &self,
        s: &Slots,
        lp: &[f32],
        blanks: &Blanks,
        t: usize,
        k: usize,
    ) -> Option<Path> {
        let path = viterbi(lp, blanks, t, k, &s.classes, &s.gaps)?;
        let plate: Vec<char> = path.classes.iter().map(|&c| self.charset[c - 1]).collect();
        if issued(s.format, &plate) {
            return Some(path);
        }
        // Rare: only then are the serials that are issued decoded on their own.
        s.issued
            .iter()
            .filter_map(|classes| viterbi(lp, blanks, t, k, classes, &s.gaps))
            .max_by(|a, b| a.log_p.total_cmp(&b.log_p))
    }

    /// The read of one crop's output (`t` steps of `k` probabilities), or `None` when it has
    /// neither a formatted nor a clear unformatted read.
    pub fn read(&self, probs: &[f32], t: usize, k: usize) -> Option<Recognised> {
        debug_assert_eq!(k, self.classes());
        let ln = |p: f32| p.max(1e-30).ln();
        // Per step: the charset's classes with everything that is no character in the blank
        // (`lp`, what the greedy read and the plate's ends see), the blank where a format's
        // groups part (the separator in it, foreign marks not), the blank inside a group, and
        // the share of the blank's mass that is foreign marks.
        let kc = self.charset.len() + 1;
        let mut lp = Vec::with_capacity(t * kc);
        let (mut gap, mut inside, mut foreign) = (
            Vec::with_capacity(t),
            Vec::with_capacity(t),
            Vec::with_capacity(t),
        );
        for row in probs.chunks_exact(k).take(t) {
            let (at_gap, in_group) = match self.separator {
                Some(share) => (row[0] + row[kc], row[0] + share * row[kc]),
                None => (row[0], row[0]),
            };
            let mark = if self.marks { row[kc + 1] } else { 0.0 };
            lp.push(ln(at_gap + mark));
            lp.extend(row[1..kc].iter().map(|&p| ln(p)));
            gap.push(ln(at_gap));
            inside.push(ln(in_group));
            foreign.push(mark / (at_gap + mark).max(1e-30));
        }
        let blanks = Blanks {
            gap: &gap,
            inside: &inside,
        };
        let (t, k) = (inside.len(), kc);
        let weighed: Vec<(&Format, Path, f32)> = self
            .priors
            .iter()
            .filter_map(|s| self.likeliest(s, &lp, &blanks, t, k).map(|p| (s.format, p)))
            .map(|(f, p)| {
                let w = p.log_p + if everyday(f) { 0.0 } else { self.rare_prior };
                (f, p, w)
            })
            .collect();
        // Formats about as likely as the likeliest are a tie, and a tie goes to the first in
        // `FORMATS`: where the glyphs fit two formats alike, their reads differ by no more
        // than the rounding of where each puts its blanks.
        let top = weighed
            .iter()
            .map(|x| x.2)
            .fold(f32::NEG_INFINITY, f32::max);
        let best = weighed
            .into_iter()
            .find(|x| x.2 >= top - TIE)
            .map(|(f, p, _)| (f, p));
        let (raw, probs, log_p) = greedy(&lp, t, k, &self.charset);
        if let Some((f, path)) = best {
            // What the recogniser gave foreign marks where the read spends blank steps
            // between its characters is not left to the read.
            let kept: f32 = path.between.iter().map(|&s| 1.0 - foreign[s]).product();
            let confidence = path.probs.iter().product::<f32>() * kept;
            if confidence >= FORMATTED_MIN && path.log_p - log_p >= FORMATTED_MIN_RATIO.ln() {
                return Some(Recognised {
                    text: path.classes.iter().map(|&c| self.charset[c - 1]).collect(),
                    country: Some(f.country),
                    confidence,
                    log_p: path.log_p,
                });
            }
        }
        let confidence = probs.iter().product::<f32>();
        (confidence >= UNFORMATTED_MIN && probs.len() >= UNFORMATTED_MIN_LEN).then(|| Recognised {
            text: normalise(&raw),
            country: None,
            confidence: confidence * 0.5,
            log_p,
        })
    }
}

/// A format's slot priors (`classes`, per slot per class, the blank first) split by where the
/// serial `number` (first slot, digits) has its first digit other than 0: in the `v`-th,
/// the serial's first `v` slots take only 0 and the next one anything but 0. Empty where the
/// format has no serial.
fn serials_issued(
    classes: &[Vec<f32>],
    number: Option<(usize, usize)>,
    charset: &[char],
) -> Vec<Vec<Vec<f32>>> {
    let (Some((at, n)), Some(zero)) = (number, charset.iter().position(|&c| c == '0')) else {
        return Vec::new();
    };
    let zero = zero + 1;
    (0..n)
        .map(|v| {
            let mut split = classes.to_vec();
            for slot in &mut split[at..at + v] {
                for (c, prior) in slot.iter_mut().enumerate() {
                    if c != zero {
                        *prior = NEG;
                    }
                }
            }
            split[at + v][zero] = NEG;
            split
        })
        .collect()
}

/// Greedy CTC decoding over log-probabilities: the likeliest class per step, repeats merged,
/// blanks dropped; each character with its best step's probability.
fn greedy(lp: &[f32], t: usize, k: usize, charset: &[char]) -> (String, Vec<f32>, f32) {
    let (mut raw, mut probs, mut log_p, mut prev) = (String::new(), Vec::new(), 0.0, 0);
    for row in lp.chunks_exact(k).take(t) {
        let (arg, &l) = row
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .expect("k > 0");
        log_p += l;
        if arg != 0 && arg != prev {
            raw.push(charset[arg - 1]);
            probs.push(l.exp());
        } else if arg != 0 {
            let last = probs.last_mut().expect("a repeat follows a character");
            *last = last.max(l.exp());
        }
        prev = arg;
    }
    (raw, probs, log_p)
}

/// The likeliest alignment of `lp` (`t` steps of `k` log-probabilities) whose characters fit
/// `slots` in order. States: `blank[j]`, a blank after `j` characters; `char[j][c]`, the
/// `j`-th character being class `c`. A character follows a blank or a different character
/// (a repeat needs a blank between). A blank after `j` characters has `lp`'s blank before
/// the first character and after the last, `blanks.gap`'s where `gaps[j]` (the format's
/// groups part there), `blanks.inside`'s elsewhere.
fn viterbi(
    lp: &[f32],
    blanks: &Blanks,
    t: usize,
    k: usize,
    slots: &[Vec<f32>],
    gaps: &[bool],
) -> Option<Path> {
    let n = slots.len();
    if n == 0 || t < n {
        return None;
    }
    // Where each state's best path came from, per step: for `char` states STAY (the same
    // character goes on), FROM_BLANK, or the previous character's class; for `blank` states
    // FROM_BLANK or the class of the character before.
    const STAY: u8 = u8::MAX;
    const FROM_BLANK: u8 = u8::MAX - 1;
    debug_assert!(k < FROM_BLANK as usize);
    let mut blank = vec![NEG; n + 1];
    let mut chars = vec![NEG; n * k];
    let mut bp_blank = vec![FROM_BLANK; t * (n + 1)];
    let mut bp_char = vec![STAY; t * n * k];
    blank[0] = lp[0];
    for c in 1..k {
        if slots[0][c] > NEG {
            chars[c] = lp[c] + slots[0][c];
            bp_char[c] = FROM_BLANK;
        }
    }
    let (mut nb, mut nc) = (vec![NEG; n + 1], vec![NEG; n * k]);
    // The best and second-best class of each character, for "a different character".
    let mut tops = vec![[(NEG, 0usize); 2]; n];
    for step in 1..t {
        let row = &lp[step * k..(step + 1) * k];
        for (top, per_char) in tops.iter_mut().zip(chars.chunks_exact(k)) {
            *top = [(NEG, 0), (NEG, 0)];
            for (c, &v) in per_char.iter().enumerate() {
                if v > top[0].0 {
                    *top = [(v, c), top[0]];
                } else if v > top[1].0 {
                    top[1] = (v, c);
                }
            }
        }
        for j in 0..=n {
            let (mut best, mut from) = (blank[j], FROM_BLANK);
            if j > 0 && tops[j - 1][0].0 > best {
                (best, from) = (tops[j - 1][0].0, tops[j - 1][0].1 as u8);
            }
            let b = if j == 0 || j == n {
                row[0]
            } else if gaps[j] {
                blanks.gap[step]
            } else {
                blanks.inside[step]
            };
            nb[j] = if best > NEG { best + b } else { NEG };
            bp_blank[step * (n + 1) + j] = from;
        }
        for j in 0..n {
            for c in 1..k {
                let i = j * k + c;
                let prior = slots[j][c];
                if prior <= NEG {
                    nc[i] = NEG;
                    continue;
                }
                // The slot's prior is paid once, where its character begins.
                let (mut best, mut from) = (chars[i], STAY);
                if blank[j] + prior > best {
                    (best, from) = (blank[j] + prior, FROM_BLANK);
                }
                if j > 0 {
                    let other = if tops[j - 1][0].1 == c {
                        tops[j - 1][1]
                    } else {
                        tops[j - 1][0]
                    };
                    if other.0 + prior > best {
                        (best, from) = (other.0 + prior, other.1 as u8);
                    }
                }
                nc[i] = if best > NEG { best + row[c] } else { NEG };
                bp_char[(step * n + j) * k + c] = from;
            }
        }
        std::mem::swap(&mut blank, &mut nb);
        std::mem::swap(&mut chars, &mut nc);
    }
    // End after the last character or a blank after it.
    let last = &chars[(n - 1) * k..n * k];
    let (lc, &lv) = last
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .expect("k > 0");
    let log_p = lv.max(blank[n]);
    if log_p <= NEG / 2.0 {
        return None;
    }
    // Back along the path: (in a char state?, j, class).
    let mut state = if blank[n] >= lv {
        (false, n, 0)
    } else {
        (true, n - 1, lc)
    };
    let mut classes = vec![0usize; n];
    let mut probs = vec![0f32; n];
    let mut between = Vec::new();
    for step in (0..t).rev() {
        let (is_char, j, c) = state;
        if !is_char && j > 0 && j < n {
            between.push(step);
        }
        if is_char {
            classes[j] = c;
            probs[j] = probs[j].max(lp[step * k + c].exp());
            let from = bp_char[(step * n + j) * k + c];
            state = match from {
                STAY => (true, j, c),
                FROM_BLANK => (false, j, 0),
                prev => (true, j - 1, prev as usize),
            };
        } else {
            let from = bp_blank[step * (n + 1) + j];
            state = match from {
                FROM_BLANK => (false, j, 0),
                prev => (true, j - 1, prev as usize),
            };
        }
    }
    Some(Path {
        classes,
        probs,
        log_p,
        between,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::CHARSET;

    /// Recogniser output for `steps`: each step a list of (character or '_' for the blank,
    /// probability); the rest of the step's mass spread over the other classes.
    fn output(steps: &[&[(char, f32)]]) -> (Vec<f32>, usize, usize) {
        output_with(steps, 0)
    }

    /// The same, with `extra` classes after the charset: a separator (`'|'`), then a foreign
    /// mark (`'/'`).
    fn output_with(steps: &[&[(char, f32)]], extra: usize) -> (Vec<f32>, usize, usize) {
        let cs: Vec<char> = CHARSET.chars().collect();
        let k = cs.len() + 1 + extra;
        let mut p = Vec::new();
        for s in steps {
            let given: f32 = s.iter().map(|x| x.1).sum();
            let mut row = vec![(1.0 - given).max(0.0) / (k - s.len()) as f32; k];
            for &(c, q) in s.iter() {
                let i = match c {
                    '_' => 0,
                    '|' => cs.len() + 1,
                    '/' => cs.len() + 2,
                    c => 1 + cs.iter().position(|&x| x == c).unwrap(),
                };
                row[i] = q;
            }
            p.extend(row);
        }
        (p, steps.len(), k)
    }

    /// A clean read of `text`: each character over two steps, blanks around and between.
    fn clean(text: &str) -> Vec<Vec<(char, f32)>> {
        let mut steps = vec![vec![('_', 0.97)]];
        for c in text.chars() {
            steps.push(vec![(c, 0.97)]);
            steps.push(vec![(c, 0.9)]);
            steps.push(vec![('_', 0.97)]);
        }
        steps
    }

    fn read(steps: &[Vec<(char, f32)>]) -> Option<Recognised> {
        let s: Vec<&[(char, f32)]> = steps.iter().map(|s| s.as_slice()).collect();
        let (p, t, k) = output(&s);
        Decoder::new(&CHARSET.chars().collect::<Vec<_>>()).read(&p, t, k)
    }

    #[test]
    fn a_format_no_longer_issued_wins_only_when_clearly_likelier() {
        // Four glyphs the recogniser can barely tell apart (B/8, 4/A, Z/2 twice), the letter
        // of each a little likelier: the Kazakh format before 2012 (`B124KZZ`) or the current
        // one (`812AK22`).
        let mut steps = vec![vec![('_', 0.97)]];
        for c in [
            vec![('B', 0.46), ('8', 0.44)],
            vec![('1', 0.97)],
            vec![('2', 0.97)],
            vec![('4', 0.46), ('A', 0.44)],
            vec![('K', 0.97)],
            vec![('Z', 0.46), ('2', 0.44)],
            vec![('Z', 0.46), ('2', 0.44)],
        ] {
            // One step each, so that no path reads one glyph as two characters.
            steps.push(c);
            steps.push(vec![('_', 0.97)]);
        }
        let s: Vec<&[(char, f32)]> = steps.iter().map(|s| s.as_slice()).collect();
        let (p, t, k) = output(&s);
        let cs: Vec<char> = CHARSET.chars().collect();
        let plain = Decoder::new(&cs).read(&p, t, k).unwrap();
        assert_eq!(plain.text, "B124KZZ");
        let weighed = Decoder::new(&cs)
            .with_rare_prior(-0.7)
            .read(&p, t, k)
            .unwrap();
        assert_eq!(
            (weighed.text.as_str(), weighed.country),
            ("812AK22", Some("KZ"))
        );
        // A plate that fits only the old format is still read as one.
        let old = Decoder::new(&cs).with_rare_prior(-0.7);
        let s = clean("B124KSZ");
        let s: Vec<&[(char, f32)]> = s.iter().map(|s| s.as_slice()).collect();
        let (p, t, k) = output(&s);
        assert_eq!(old.read(&p, t, k).unwrap().text, "B124KSZ");
    }

    #[test]
    fn a_separator_says_where_the_groups_part() {
        // `115?DK01`, the fourth glyph O or 0 alike (as the text reader folds them), read
        // with a space after it, before it, or none: the Kazakh trailer `1150 DK 01`, the
        // vehicle's `115 ODK 01`, and where nothing tells them apart, the vehicle's (the
        // first of the two in `FORMATS`).
        let cs: Vec<char> = CHARSET.chars().collect();
        let decoder = Decoder::new(&cs).with_separator(0.1);
        let glyph = |c: char| match c {
            '?' => vec![('O', 0.48), ('0', 0.48)],
            c => vec![(c, 0.97)],
        };
        let line = |gap: Option<usize>| {
            let mut steps = vec![vec![('_', 0.97)]];
            for (i, c) in "115?DK01".chars().enumerate() {
                if gap == Some(i) {
                    steps.push(vec![('|', 0.8), ('_', 0.15)]);
                }
                steps.push(glyph(c));
                steps.push(vec![('_', 0.97)]);
            }
            steps
        };
        let read = |steps: Vec<Vec<(char, f32)>>| {
            let s: Vec<&[(char, f32)]> = steps.iter().map(|s| s.as_slice()).collect();
            let (p, t, k) = output_with(&s, 1);
            assert_eq!(k, decoder.classes());
            decoder.read(&p, t, k).map(|r| r.text)
        };
        assert_eq!(read(line(Some(4))).as_deref(), Some("1150DK01"));
        assert_eq!(read(line(Some(3))).as_deref(), Some("115ODK01"));
        assert_eq!(read(line(None)).as_deref(), Some("115ODK01"));
        // A separator where no format of the glyphs has a gap costs the read, and loses it
        // nothing: `123 A|BC 02` is still `123ABC02`, and the separator is no character.
        let mut steps = clean("123ABC02");
        steps.insert(13, vec![('|', 0.9), ('_', 0.05)]);
        assert_eq!(read(steps).as_deref(), Some("123ABC02"));
    }

    #[test]
    fn a_clean_read_is_its_plate() {
        for (text, country) in [
            ("123ABC02", "KZ"),
            ("01123ABC", "KG"),
            ("01A123BC", "UZ"),
            ("A123BC777", "RU"),
            ("新A1234挂", "CN"),
            ("粤BD12345", "CN"),
        ] {
            let r = read(&clean(text)).unwrap();
            assert_eq!((r.text.as_str(), r.country), (text, Some(country)));
            assert!(
                r.confidence > 0.97f32.powi(9) - 1e-3,
                "{text}: {}",
                r.confidence
            );
        }
    }

    #[test]
    fn a_region_code_that_does_not_exist_is_not_read() {
        // A Russian plate with a faint mark after its region, `47`, that the recogniser takes
        // for a third digit five times likelier than for nothing: no region is numbered 470,
        // so the two-digit region is read.
        let mut steps = clean("H191ET47");
        steps.push(vec![('0', 0.5), ('_', 0.1)]);
        steps.push(vec![('_', 0.97)]);
        let r = read(&steps).unwrap();
        assert_eq!((r.text.as_str(), r.country), ("H191ET47", Some("RU")));
        // 177 is Moscow's second series and is read as it is.
        let r = read(&clean("H191ET177")).unwrap();
        assert_eq!((r.text.as_str(), r.country), ("H191ET177", Some("RU")));
        // A Kazakh region's tens digit the recogniser could not tell from a 7 (regions are
        // 01-20): the 1 it found next likeliest.
        let mut steps = clean("123ABC02");
        steps[19] = vec![('7', 0.5), ('1', 0.4)];
        steps[20] = vec![('7', 0.5), ('1', 0.4)];
        let r = read(&steps).unwrap();
        assert_eq!((r.text.as_str(), r.country), ("123ABC12", Some("KZ")));
        // Kyrgyz regions are 01-09, Uzbek ones tens and fives: each decides the shared layout.
        let r = read(&clean("05123ABC")).unwrap();
        assert_eq!((r.text.as_str(), r.country), ("05123ABC", Some("KG")));
        let r = read(&clean("25123ABC")).unwrap();
        assert_eq!((r.text.as_str(), r.country), ("25123ABC", Some("UZ")));
        // A region that does not exist, clearly read, is kept as written: the prior decides
        // only between reads the recogniser found about equally likely.
        let r = read(&clean("37123ABC")).unwrap();
        assert_eq!((r.text.as_str(), r.country), ("37123ABC", Some("KG")));
        let r = read(&clean("H191ET470")).unwrap();
        assert_eq!((r.text.as_str(), r.country), ("H191ET470", Some("RU")));
    }

    #[test]
    fn a_read_across_a_foreign_mark_is_no_plate() {
        // Output with a separator ('|') and a foreign-mark class ('/') after the charset.
        let cs: Vec<char> = CHARSET.chars().collect();
        let decoder = Decoder::new(&cs).with_separator(0.1).with_foreign_marks();
        let decode = |text: &str| {
            let steps = clean(text);
            let s: Vec<&[(char, f32)]> = steps.iter().map(|s| s.as_slice()).collect();
            let (p, t, k) = output_with(&s, 2);
            assert_eq!(k, decoder.classes());
            decoder.read(&p, t, k)
        };
        // A parking camera's counter: with its slash it fits no plate (the Russian trailer
        // `OO 0015 296` once O and 0 are one glyph would need the slash to be nothing)...
        let r = decode("0000/15296");
        assert!(r.as_ref().is_none_or(|r| r.country.is_none()), "{r:?}");
        // ...where with a space there it would be read as one.
        let r = decode("OO00|15296").unwrap();
        assert_eq!((r.text.as_str(), r.country), ("OO0015296", Some("RU")));
        // A mark beside a plate, not inside it, costs it nothing.
        let r = decode("/123ABC02/").unwrap();
        assert_eq!((r.text.as_str(), r.country), ("123ABC02", Some("KZ")));
        assert!(r.confidence > 0.97f32.powi(8) * 0.99, "{}", r.confidence);
    }

    #[test]
    fn a_serial_of_all_zeros_is_never_read() {
        // A faint 8 in a serial the recogniser read as 000 more likely: 000 is never issued,
        // so the likeliest serial that is, the 8, is read.
        let mut steps = clean("A008AA77");
        steps[10] = vec![('0', 0.6), ('8', 0.35)];
        steps[11] = vec![('_', 0.97)];
        let r = read(&steps).unwrap();
        assert_eq!((r.text.as_str(), r.country), ("A008AA77", Some("RU")));
        // The same for a first digit.
        let mut steps = clean("300ABC02");
        steps[1] = vec![('0', 0.6), ('3', 0.35)];
        steps[2] = vec![('0', 0.6), ('3', 0.35)];
        let r = read(&steps).unwrap();
        assert_eq!((r.text.as_str(), r.country), ("300ABC02", Some("KZ")));
        // A parking camera's counter, `0000/00001`, clearly read: every format it would fit
        // needs a serial of all 0, so it is no plate (left for an officer as text, unformatted).
        let r = read(&clean("000000001"));
        assert!(r.as_ref().is_none_or(|r| r.country.is_none()), "{r:?}");
        // A serial with a 0 in it is read as it is, and a Chinese serial of 0s too.
        let r = read(&clean("A100AA77")).unwrap();
        assert_eq!((r.text.as_str(), r.country), ("A100AA77", Some("RU")));
        let r = read(&clean("浙G70000")).unwrap();
        assert_eq!((r.text.as_str(), r.country), ("浙G70000", Some("CN")));
    }

    #[test]
    fn repeated_characters_need_a_blank_between() {
        let r = read(&clean("110AB02")).unwrap();
        assert_eq!((r.text.as_str(), r.country), ("110AB02", Some("KZ")));
        // Without the blank between the two 1s they are one: six characters, and no format
        // fits without a blank where the recogniser clearly saw a 1.
        let mut steps = clean("110AB02");
        steps.remove(3);
        let r = read(&steps).unwrap();
        assert_eq!((r.text.as_str(), r.country), ("10AB02", None));
    }

    #[test]
    fn the_format_picks_the_recognisers_second_choice() {
        // The second slot of a Chinese plate is a letter: the recogniser said 4 (0.6) or A (0.35).
        let mut steps = clean("新A12345");
        steps[4] = vec![('4', 0.6), ('A', 0.35)];
        steps[5] = vec![('_', 0.97)];
        let r = read(&steps).unwrap();
        assert_eq!((r.text.as_str(), r.country), ("新A12345", Some("CN")));
        assert!(
            (r.confidence - 0.35 * 0.97f32.powi(6)).abs() < 0.01,
            "{}",
            r.confidence
        );
        // Where the read fits a format as it is, that format wins: 1238BC02 is a KZ trailer.
        let mut steps = clean("123ABC02");
        steps[10] = vec![('8', 0.6), ('B', 0.35)];
        steps[11] = vec![('_', 0.97)];
        assert_eq!(read(&steps).unwrap().text, "1238BC02");
    }

    #[test]
    fn a_stray_character_is_left_out() {
        // A flag mark read as an X between the plate's characters, not sure of itself.
        let mut steps = clean("123ABC02");
        steps.insert(19, vec![('X', 0.4), ('_', 0.35)]);
        let r = read(&steps).unwrap();
        assert_eq!((r.text.as_str(), r.country), ("123ABC02", Some("KZ")));
    }

    #[test]
    fn unformatted_reads_are_kept_only_when_clear() {
        // A German plate: no format fits without characters the recogniser ruled out.
        let r = read(&clean("BMW4711")).unwrap();
        assert_eq!((r.text.as_str(), r.country), ("BMW4711", None));
        assert!(r.confidence < 0.5);
        // Too short for a plate, and nothing at all.
        assert_eq!(read(&clean("AB1")), None);
        assert_eq!(read(&vec![vec![('_', 0.99)]; 20]), None);
    }

    #[test]
    fn a_formatted_read_beats_an_unformatted_one_then_the_likelier_wins() {
        let r = |country, log_p| Recognised {
            text: String::new(),
            country,
            confidence: 0.5,
            log_p,
        };
        assert!(r(Some("KZ"), -9.0).better_than(&r(None, -1.0)));
        assert!(!r(None, -1.0).better_than(&r(Some("KZ"), -9.0)));
        assert!(r(Some("KZ"), -1.0).better_than(&r(Some("CN"), -2.0)));
    }
}
