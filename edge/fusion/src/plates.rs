//! Plate text: normalisation, the country a plate's format belongs to, and the tolerant
//! comparison used to find a passage's declaration.
//!
//! * [`normalise`]: upper case, separators out, Cyrillic look-alikes (АВЕКМНОРСТУХ) as their
//!   Latin twins; Chinese province characters and the trailer mark `挂` are kept.
//! * [`fold`]: additionally maps the characters OCR confuses to one representative
//!   (O/Q/D→0, I/L→1, Z→2, S→5, G→6, B→8), so `123ABC02` and `I23A8C02` compare equal.
//! * [`compare`]: exact, confusable, or equal but for the leading province character that
//!   plate readers often miss on Chinese plates.

/// How a read plate matches a declared one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PlateMatch {
    /// The same characters after normalisation.
    Exact,
    /// The same after folding OCR confusions.
    Confusable,
    /// The same but for a missing leading province character.
    ProvinceMissing,
}

use acsgd_contract::plate::is_province;
pub use acsgd_contract::plate::{fold, index_key, normalise};

/// Compares a read plate with a declared one (both raw); `None` when they differ.
pub fn compare(read: &str, declared: &str) -> Option<PlateMatch> {
    let (r, d) = (normalise(read), normalise(declared));
    if r.is_empty() || d.is_empty() {
        return None;
    }
    if r == d {
        return Some(PlateMatch::Exact);
    }
    if fold(&r) == fold(&d) {
        return Some(PlateMatch::Confusable);
    }
    let mut dc = d.chars();
    if dc.next().is_some_and(is_province) && fold(dc.as_str()) == fold(&r) {
        return Some(PlateMatch::ProvinceMissing);
    }
    None
}

/// The country whose format a normalised plate has: `KZ`, `KG`, `UZ`, `RU`, `CN`, or `None`.
///
/// Patterns (`D` digit, `L` Latin letter): KZ `DDDLLLDD` / `DDDLLDD`; KG `DDDDDLLL`;
/// UZ `DDLDDDLL`; RU `LDDDLLDD(D)` with the 12 look-alike letters; CN province character,
/// a letter, five (new-energy: six) letters or digits; trailers four and `挂`.
pub fn country(normalised: &str) -> Option<&'static str> {
    let chars: Vec<char> = normalised.chars().collect();
    if chars.first().copied().is_some_and(is_province) {
        let trailer = chars.last() == Some(&'挂');
        let rest = &chars[1..chars.len() - usize::from(trailer)];
        // Ordinary plates have six characters after the province, new-energy ones seven,
        // trailer plates four and the mark.
        let len_ok = if trailer {
            rest.len() == 5
        } else {
            rest.len() == 6 || rest.len() == 7
        };
        let ok = len_ok
            && rest[0].is_ascii_uppercase()
            && rest[1..].iter().all(|c| c.is_ascii_alphanumeric());
        return ok.then_some("CN");
    }
    let shape: String = chars
        .iter()
        .map(|c| match c {
            '0'..='9' => 'D',
            'A'..='Z' => 'L',
            _ => '?',
        })
        .collect();
    let ru_letters = |idx: &[usize]| idx.iter().all(|&i| "ABEKMHOPCTYX".contains(chars[i]));
    match shape.as_str() {
        "DDDLLLDD" | "DDDLLDD" => Some("KZ"),
        "DDDDDLLL" => Some("KG"),
        "DDLDDDLL" => Some("UZ"),
        "LDDDLLDD" | "LDDDLLDDD" if ru_letters(&[0, 4, 5]) => Some("RU"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalisation_removes_separators_and_latinises_cyrillic() {
        assert_eq!(normalise("123 ABC 02"), "123ABC02");
        assert_eq!(normalise("А123ВС 77"), "A123BC77");
        assert_eq!(normalise("新A·12345"), "新A12345");
        assert_eq!(normalise("01 a 123 bc"), "01A123BC");
        assert_eq!(normalise("新A1234挂"), "新A1234挂");
    }

    #[test]
    fn comparisons_table() {
        use PlateMatch::*;
        let cases = [
            ("123ABC02", "123 ABC 02", Some(Exact)),
            ("I23A8C02", "123ABC02", Some(Confusable)),
            ("O1 123 ABC", "01123ABC", Some(Confusable)),
            ("A123BC77", "А123ВС77", Some(Exact)),
            ("A12345", "新A·12345", Some(ProvinceMissing)),
            ("A12345", "新B·12345", None),
            ("123ABC02", "123ABC03", None),
            ("", "123ABC02", None),
        ];
        for (read, declared, want) in cases {
            assert_eq!(compare(read, declared), want, "{read} vs {declared}");
        }
    }

    #[test]
    fn index_key_finds_every_accepted_variant() {
        for (read, declared) in [
            ("I23A8C02", "123ABC02"),
            ("A12345", "新A12345"),
            ("A123BC77", "А123ВС77"),
        ] {
            assert!(compare(read, declared).is_some());
            assert_eq!(index_key(read), index_key(declared), "{read} {declared}");
        }
    }

    #[test]
    fn countries_by_format() {
        let cases = [
            ("123 ABC 02", Some("KZ")),
            ("01 123 ABC", Some("KG")),
            ("01 A 123 BC", Some("UZ")),
            ("А123ВС 77", Some("RU")),
            ("А123ВС 777", Some("RU")),
            ("新A·12345", Some("CN")),
            ("新A·1234挂", Some("CN")),
            ("新A·D12345", Some("CN")),
            ("新A·D1234挂", None),
            ("ABC", None),
            ("Q123ZZ77", None),
        ];
        for (plate, want) in cases {
            assert_eq!(country(&normalise(plate)), want, "{plate}");
        }
    }
}
