//! Country-aware plate formats: which plates these posts see, and how to turn an OCR read into
//! a valid plate by the fewest and likeliest corrections.
//!
//! A format is a sequence of slots (`D` digit, `L` one of the country's letters, `P` a Chinese
//! province character, `G` and `O` the `粤` and the letter O of Guangdong's `粤O` plates, `A` a
//! letter or digit, `T` the trailer, learner or police mark `挂`, `学`, `警`). Double-row
//! plates are read top row first and concatenated, so the same formats apply.
//!
//! | country | formats (normalised, no separators) | example |
//! |---|---|---|
//! | KZ | `DDDLLLDD`, `DDDLLDD`, trailer `DDDDLLDD`, before 2012 `LDDDLLL` | `123ABC02` |
//! | KG | `DDDDDLLL` | `01123ABC` (`01 123 ABC`) |
//! | UZ | `DDLDDDLL`, legal entities `DDDDDLLL` | `01A123BC` |
//! | RU | `LDDDLLDD`, `LDDDLLDDD`, trailer `LLDDDDDD`, `LLDDDDDDD`; letters АВЕКМНОРСТУХ only | `A123BC77` |
//! | CN | `PLAAAAA`, new energy `PLAAAAAA`, `粤O` `GOAAAAA`, trailer, learner, police `PLAAAAT` (`挂`, `学`, `警`) | `新A12345` |
//!
//! A serial number of all 0 (`000`, a trailer's `0000`) is never issued in Kazakhstan,
//! Kyrgyzstan, Uzbekistan or Russia, so no format takes one ([`issued`]): what reads so is
//! text a camera printed into its picture.
//!
//! Correction maps a character that does not fit its slot through the confusions OCR makes
//! (a letter where a digit belongs: O→0, I→1, Z→2, S→5, G→6, T→7, B→8; the reverse where a
//! letter belongs); each correction costs, and the format needing the fewest wins. That is
//! for reads that come as text (a camera's own reads); the appliance's recogniser is decoded
//! straight into the formats ([`super::ctc`], with [`allows`]).

use acsgd_fusion::plates::normalise;

/// Latin letters on plates of these countries (KZ, KG, UZ and CN use the Latin alphabet;
/// CN leaves out I and O).
const LATIN: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZ";
const CN_LETTERS: &str = "ABCDEFGHJKLMNPQRSTUVWXYZ";
/// Russian plates use only the Cyrillic letters that look Latin, written here as their twins.
const RU_LETTERS: &str = "ABEKMHOPCTYX";

/// Region codes, where a digit of theirs cannot take every value: Kazakhstan's regions are
/// 01–20, Kyrgyzstan's 01–09, Uzbekistan's 01, 10, 20, 25, …, 95 (tens and fives), and
/// Russia's three-digit ones are 1xx, 2xx, 7xx and 9xx (the second series of a region, e.g.
/// 102, 277, 750, 977). A recogniser unsure of a region digit is so held to what exists: a
/// doubtful `470` at a plate's end is read `47` with a stray mark after it. A prior, not a
/// rule ([`super::ctc`]): a region clearly read is kept, as a plate from a region numbered
/// since this table was written would be.
const KZ_REGION_TENS: &str = "012";
const KG_REGION_TENS: &str = "0";
const UZ_REGION_UNITS: &str = "015";
const RU_REGION_HUNDREDS: &str = "1279";

/// Chinese province abbreviations.
const PROVINCES: &str = "京津沪渝冀豫云辽黑湘皖鲁新苏浙赣鄂桂甘晋蒙陕吉闽贵粤青藏川宁琼";

/// One plate format.
#[derive(Debug, Clone, Copy)]
pub struct Format {
    pub country: &'static str,
    pub slots: &'static str,
    /// Where the plate's groups part (a space, a dot, the line before the region), as the
    /// number of characters before each gap: `123 ABC 02` is `[3, 6]`. A separator the
    /// recogniser reads anywhere else is evidence against the format ([`super::ctc`]).
    pub gaps: &'static [usize],
    /// Letters allowed in `L` (and the letters of `A`) slots.
    pub letters: &'static str,
    /// The region code's digit whose values are limited, and the values it can take
    /// ([`region_allows`]); `None` where every digit is a region somewhere.
    pub region: Option<(usize, &'static str)>,
    /// The serial number's digits (first, how many), which are never all 0 ([`issued`]);
    /// `None` where a format has no such group (China's serials mix letters and digits).
    pub number: Option<(usize, usize)>,
}

/// Every format, in the order ties are broken ([`super::ctc`]): Kazakhstan's first (these
/// posts' own plates), and in each country the vehicles' formats before the trailer's. That
/// order decides between formats that fit the same glyphs and differ only in O or 0, which
/// the text recogniser cannot tell apart ([`super::text`]): `001OOO06` is read as a Kazakh
/// car's plate, not as a trailer's `0010OO06` or a Russian car's `O010OO06`; `0309OK01` as a
/// Kazakh trailer's, not as a Russian car's `O309OK01`.
pub const FORMATS: &[Format] = &[
    Format {
        country: "KZ",
        slots: "DDDLLLDD",
        gaps: &[3, 6],
        letters: LATIN,
        region: Some((6, KZ_REGION_TENS)),
        number: Some((0, 3)),
    },
    Format {
        country: "KZ",
        slots: "DDDLLDD",
        gaps: &[3, 5],
        letters: LATIN,
        region: Some((5, KZ_REGION_TENS)),
        number: Some((0, 3)),
    },
    Format {
        country: "KZ",
        slots: "DDDDLLDD",
        gaps: &[4, 6],
        letters: LATIN,
        region: Some((6, KZ_REGION_TENS)),
        number: Some((0, 4)),
    },
    // The format before 2012: region letter, three digits, three letters (see `everyday`).
    Format {
        country: "KZ",
        slots: "LDDDLLL",
        gaps: &[1, 4],
        letters: LATIN,
        region: None,
        number: Some((1, 3)),
    },
    Format {
        country: "KG",
        slots: "DDDDDLLL",
        gaps: &[2, 5],
        letters: LATIN,
        region: Some((0, KG_REGION_TENS)),
        number: Some((2, 3)),
    },
    Format {
        country: "UZ",
        slots: "DDLDDDLL",
        gaps: &[2, 3, 6],
        letters: LATIN,
        region: Some((1, UZ_REGION_UNITS)),
        number: Some((3, 3)),
    },
    Format {
        country: "UZ",
        slots: "DDDDDLLL",
        gaps: &[2, 5],
        letters: LATIN,
        region: Some((1, UZ_REGION_UNITS)),
        number: Some((2, 3)),
    },
    Format {
        country: "RU",
        slots: "LDDDLLDD",
        gaps: &[1, 4, 6],
        letters: RU_LETTERS,
        region: None,
        number: Some((1, 3)),
    },
    Format {
        country: "RU",
        slots: "LDDDLLDDD",
        gaps: &[1, 4, 6],
        letters: RU_LETTERS,
        region: Some((6, RU_REGION_HUNDREDS)),
        number: Some((1, 3)),
    },
    Format {
        country: "RU",
        slots: "LLDDDDDD",
        gaps: &[2, 6],
        letters: RU_LETTERS,
        region: None,
        number: Some((2, 4)),
    },
    Format {
        country: "RU",
        slots: "LLDDDDDDD",
        gaps: &[2, 6],
        letters: RU_LETTERS,
        region: Some((6, RU_REGION_HUNDREDS)),
        number: Some((2, 4)),
    },
    Format {
        country: "CN",
        slots: "PLAAAAA",
        gaps: &[2],
        letters: CN_LETTERS,
        region: None,
        number: None,
    },
    Format {
        country: "CN",
        slots: "PLAAAAAA",
        gaps: &[2],
        letters: CN_LETTERS,
        region: None,
        number: None,
    },
    Format {
        country: "CN",
        slots: "GOAAAAA",
        gaps: &[2],
        letters: CN_LETTERS,
        region: None,
        number: None,
    },
    Format {
        country: "CN",
        slots: "PLAAAAT",
        gaps: &[2, 6],
        letters: CN_LETTERS,
        region: None,
        number: None,
    },
];

/// A read made valid.
#[derive(Debug, Clone, PartialEq)]
pub struct Corrected {
    pub text: String,
    pub country: &'static str,
    /// Characters changed to fit the format.
    pub corrections: usize,
}

fn to_digit(c: char) -> Option<char> {
    Some(match c {
        'O' | 'D' | 'Q' | 'U' => '0',
        'I' | 'L' | 'J' => '1',
        'Z' => '2',
        'S' => '5',
        'G' | 'b' => '6',
        'T' => '7',
        'B' => '8',
        'A' => '4',
        _ => return None,
    })
}

fn to_letter(c: char) -> Option<char> {
    Some(match c {
        '0' => 'O',
        '1' => 'I',
        '2' => 'Z',
        '4' => 'A',
        '5' => 'S',
        '6' => 'G',
        '7' => 'T',
        '8' => 'B',
        _ => return None,
    })
}

/// The character `c` as it fits `slot` of `f`: itself, a correction, or `None`.
fn fit(c: char, slot: char, f: &Format) -> Option<(char, bool)> {
    let letter_ok = |l: char| f.letters.contains(l);
    match slot {
        'D' if c.is_ascii_digit() => Some((c, false)),
        'D' => to_digit(c).map(|d| (d, true)),
        'L' if letter_ok(c) => Some((c, false)),
        'L' => to_letter(c).filter(|&l| letter_ok(l)).map(|l| (l, true)),
        'A' if c.is_ascii_digit() || letter_ok(c) => Some((c, false)),
        // I and O are not used on Chinese plates: read them as the digits.
        'A' => to_digit(c).map(|d| (d, true)),
        'P' if PROVINCES.contains(c) => Some((c, false)),
        // Guangdong's `粤O` plates (police and government) are the one city code O.
        'G' if c == '粤' => Some((c, false)),
        'O' if c == 'O' => Some((c, false)),
        'O' if c == '0' => Some(('O', true)),
        // Trailer, learner and police plates end in their mark.
        'T' if matches!(c, '挂' | '学' | '警') => Some((c, false)),
        _ => None,
    }
}

/// Fits a normalised read to one format.
pub fn fit_format(read: &str, f: &Format) -> Option<Corrected> {
    let chars: Vec<char> = read.chars().collect();
    if chars.len() != f.slots.chars().count() {
        return None;
    }
    let mut text = String::with_capacity(read.len());
    let mut corrections = 0;
    for (c, slot) in chars.into_iter().zip(f.slots.chars()) {
        let (out, changed) = fit(c, slot, f)?;
        corrections += usize::from(changed);
        text.push(out);
    }
    if !issued(f, &text.chars().collect::<Vec<_>>()) {
        return None;
    }
    Some(Corrected {
        text,
        country: f.country,
        corrections,
    })
}

/// Whether the serial number of `plate` (a plate of format `f`, one char per slot) is one
/// that is issued. Russia's serials run from 001 to 999 (trailers' from 0001 to 9999), and
/// Kazakhstan's, Kyrgyzstan's and Uzbekistan's likewise begin at 001: a serial of all 0 is
/// never on a plate. What it keeps out is camera text: the counter `0000/00001` printed into
/// a parking camera's pictures fits the Russian `O000OO001` once O and 0 are one glyph
/// ([`super::text`]), and was read so, at 0.98, in eight real photos.
pub fn issued(f: &Format, plate: &[char]) -> bool {
    match f.number {
        Some((at, n)) => plate
            .get(at..at + n)
            .is_none_or(|digits| digits.iter().any(|&c| c != '0')),
        None => true,
    }
}

/// The best valid plate for an OCR read: normalised, then fitted to every format; the fewest
/// corrections win, then the order of [`FORMATS`]. `None` when no format fits at all, or
/// when more than `max_corrections` characters would have to change.
pub fn correct(read: &str, max_corrections: usize) -> Option<Corrected> {
    let n = normalise(read);
    FORMATS
        .iter()
        .filter_map(|f| fit_format(&n, f))
        .filter(|c| c.corrections <= max_corrections)
        .min_by_key(|c| c.corrections)
}

/// Whether `f` is a format still issued. Trailer plates are everyday at a border post; the
/// Kazakh format before 2012 is not, and it fits a Russian series with one more character.
pub fn everyday(f: &Format) -> bool {
    !matches!((f.country, f.slots), ("KZ", "LDDDLLL"))
}

/// Whether `c` fits `slot` of `f` as it is, without a correction: what the format-constrained
/// decoder ([`super::ctc`]) lets each slot take.
pub fn allows(f: &Format, slot: char, c: char) -> bool {
    matches!(fit(c, slot, f), Some((_, false)))
}

/// Whether `c` can be the `i`-th character of a plate of format `f` as far as its region code
/// goes ([`Format::region`]). The format-constrained decoder weighs its reads by it; [`correct`]
/// does not, because a read that comes as text (a camera's own) is matched as the camera
/// printed it, region and all.
pub fn region_allows(f: &Format, i: usize, c: char) -> bool {
    match f.region {
        Some((at, digits)) if at == i => digits.contains(c),
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(read: &str) -> Option<(String, &'static str, usize)> {
        correct(read, 2).map(|c| (c.text, c.country, c.corrections))
    }

    #[test]
    fn kazakhstan() {
        assert_eq!(c("123 ABC 02"), Some(("123ABC02".into(), "KZ", 0)));
        assert_eq!(c("123 AB 02"), Some(("123AB02".into(), "KZ", 0)));
        assert_eq!(c("I23 ABC O2"), Some(("123ABC02".into(), "KZ", 2)));
        // Three characters off is more than the two allowed here.
        assert_eq!(c("I23 A8C O2"), None);
        assert_eq!(c("0001 AP 02"), Some(("0001AP02".into(), "KZ", 0)));
    }

    #[test]
    fn kyrgyzstan_and_uzbekistan() {
        assert_eq!(c("01 123 ABC"), Some(("01123ABC".into(), "KG", 0)));
        assert_eq!(c("01 A 123 BC"), Some(("01A123BC".into(), "UZ", 0)));
        // A digit read where UZ has its letter.
        assert_eq!(c("01 4 123 BC"), Some(("01A123BC".into(), "UZ", 1)));
    }

    #[test]
    fn russia_takes_only_its_twelve_letters() {
        assert_eq!(c("А123ВС 77"), Some(("A123BC77".into(), "RU", 0)));
        assert_eq!(c("А123ВС 777"), Some(("A123BC777".into(), "RU", 0)));
        assert_eq!(c("АВ1234 77"), Some(("AB123477".into(), "RU", 0)));
        // D and F are not Russian plate letters: no Russian format fits, KZ does not either.
        assert_eq!(correct("D123FG77", 0), None);
        // A 0 where a letter belongs is an O (eight characters would be a valid KZ trailer).
        assert_eq!(c("0123BC777"), Some(("O123BC777".into(), "RU", 1)));
    }

    #[test]
    fn china_keeps_province_and_trailer_mark() {
        assert_eq!(c("新A·12345"), Some(("新A12345".into(), "CN", 0)));
        assert_eq!(c("粤B·D12345"), Some(("粤BD12345".into(), "CN", 0)));
        assert_eq!(c("新A·1234挂"), Some(("新A1234挂".into(), "CN", 0)));
        // O and I are not used on Chinese plates: read as digits.
        assert_eq!(c("新A·1O34I"), Some(("新A10341".into(), "CN", 2)));
        // Not a province.
        assert_eq!(correct("X A12345", 3), None);
        // Learner and police plates end in their mark; Guangdong's city code O is a letter.
        assert_eq!(c("渝B·3587学"), Some(("渝B3587学".into(), "CN", 0)));
        assert_eq!(c("鄂F·8888警"), Some(("鄂F8888警".into(), "CN", 0)));
        assert_eq!(c("粤O·A2160"), Some(("粤OA2160".into(), "CN", 0)));
        assert_eq!(c("粤0·A2160"), Some(("粤OA2160".into(), "CN", 1)));
    }

    #[test]
    fn kazakhstan_before_2012() {
        assert_eq!(c("B 124 KSZ"), Some(("B124KSZ".into(), "KZ", 0)));
        assert!(!everyday(&FORMATS[3]) && everyday(&FORMATS[0]));
    }

    #[test]
    fn too_many_corrections_is_no_plate() {
        assert_eq!(correct("OOO ABC OO", 2), None);
        assert!(correct("OOO ABC OO", 5).is_some());
        assert_eq!(correct("", 2), None);
        assert_eq!(correct("12", 2), None);
    }

    /// The format of `country` with these slots.
    fn f(country: &str, slots: &str) -> &'static Format {
        FORMATS
            .iter()
            .find(|f| f.country == country && f.slots == slots)
            .unwrap()
    }

    #[test]
    fn region_codes_hold_the_decoder_not_the_text_reads() {
        let kz = f("KZ", "DDDLLLDD");
        assert!(
            region_allows(kz, 6, '2') && !region_allows(kz, 6, '3') && region_allows(kz, 7, '9')
        );
        let ru = f("RU", "LDDDLLDDD");
        assert!(
            region_allows(ru, 6, '7') && !region_allows(ru, 6, '4') && region_allows(ru, 7, '4')
        );
        assert!(region_allows(f("RU", "LDDDLLDD"), 6, '4'));
        assert!(
            !region_allows(f("KG", "DDDDDLLL"), 0, '1')
                && region_allows(f("UZ", "DDDDDLLL"), 0, '1')
        );
        // A camera's own text read keeps its region, known or not.
        assert_eq!(c("123 ABC 45"), Some(("123ABC45".into(), "KZ", 0)));
    }

    #[test]
    fn a_serial_of_all_zeros_is_no_plate() {
        let fits = |read: &str, format: &Format| fit_format(read, format).is_some();
        assert!(!fits("000ABC02", f("KZ", "DDDLLLDD")) && fits("001ABC02", f("KZ", "DDDLLLDD")));
        assert!(!fits("000AB02", f("KZ", "DDDLLDD")) && fits("100AB02", f("KZ", "DDDLLDD")));
        assert!(!fits("0000AB02", f("KZ", "DDDDLLDD")) && fits("0010AB02", f("KZ", "DDDDLLDD")));
        assert!(!fits("A000ABC", f("KZ", "LDDDLLL")));
        assert!(!fits("01000ABC", f("KG", "DDDDDLLL")) && fits("00001ABC", f("KG", "DDDDDLLL")));
        assert!(!fits("01A000BC", f("UZ", "DDLDDDLL")) && !fits("01000ABC", f("UZ", "DDDDDLLL")));
        assert!(!fits("A000AA77", f("RU", "LDDDLLDD")) && fits("A001AA77", f("RU", "LDDDLLDD")));
        assert!(!fits("O000OO001", f("RU", "LDDDLLDDD")));
        assert!(!fits("AA000077", f("RU", "LLDDDDDD")) && !fits("AA0000777", f("RU", "LLDDDDDDD")));
        // A Chinese serial is letters and digits, any of them 0.
        assert!(fits("浙G70000", f("CN", "PLAAAAA")));
        // The counter a parking camera prints into its pictures.
        assert_eq!(c("0000/00001"), None);
    }

    #[test]
    fn slots_allow_their_own_characters_only() {
        let kz = &FORMATS[0];
        let ru = FORMATS.iter().find(|f| f.country == "RU").unwrap();
        let cn = FORMATS.iter().find(|f| f.country == "CN").unwrap();
        assert!(allows(kz, 'D', '7') && !allows(kz, 'D', 'O'));
        assert!(allows(kz, 'L', 'Q') && !allows(ru, 'L', 'Q'));
        assert!(allows(cn, 'A', 'B') && !allows(cn, 'A', 'O'));
        assert!(allows(cn, 'P', '新') && !allows(cn, 'P', '挂') && allows(cn, 'T', '挂'));
    }
}
