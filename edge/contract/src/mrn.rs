//! Movement reference numbers (MRN) of transit declarations.

/// An MRN as used here: 18 upper-case letters and digits (NCTS: year, country, serial, check).
pub fn valid_mrn(s: &str) -> bool {
    s.len() == 18
        && s.bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_mrn_is_eighteen_capitals_and_digits() {
        assert!(valid_mrn("26KZ5500000000001A"));
        assert!(!valid_mrn("26kz5500000000001A"));
        assert!(!valid_mrn("26KZ5500000000001"));
        assert!(!valid_mrn("26KZ5500000000001A/"));
    }
}
