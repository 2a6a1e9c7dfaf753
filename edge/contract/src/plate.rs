//! Plate text as the appliance and central compare it: [`normalise`] (upper case, separators
//! out, the Cyrillic look-alikes АВЕКМНОРСТУХ as their Latin twins; Chinese province characters
//! and the trailer mark `挂` kept) and [`fold`] (additionally the characters OCR confuses mapped
//! to one representative: O/Q/D→0, I/L→1, Z→2, S→5, G→6, B→8). Both sides must agree on them:
//! the post matches a read plate to a declaration with them, central finds the transit of a
//! passage that names no MRN with them. [`index_key`] is the key both look plates up by.

/// Cyrillic capitals that look like Latin ones, as plates of Russia and Kazakhstan use them.
fn latin_twin(c: char) -> char {
    match c {
        'А' | 'а' => 'A',
        'В' | 'в' => 'B',
        'Е' | 'е' => 'E',
        'К' | 'к' => 'K',
        'М' | 'м' => 'M',
        'Н' | 'н' => 'H',
        'О' | 'о' => 'O',
        'Р' | 'р' => 'P',
        'С' | 'с' => 'C',
        'Т' | 'т' => 'T',
        'У' | 'у' => 'Y',
        'Х' | 'х' => 'X',
        c => c,
    }
}

/// Normalised plate text (see the module docs).
pub fn normalise(text: &str) -> String {
    text.chars()
        .filter(|c| !c.is_whitespace() && !matches!(c, '-' | '·' | '.' | '•' | '_' | '|' | '/'))
        .map(latin_twin)
        .map(|c| c.to_ascii_uppercase())
        .collect()
}

/// The confusion-folded form of a normalised plate.
pub fn fold(normalised: &str) -> String {
    normalised
        .chars()
        .map(|c| match c {
            'O' | 'Q' | 'D' => '0',
            'I' | 'L' => '1',
            'Z' => '2',
            'S' => '5',
            'G' => '6',
            'B' => '8',
            c => c,
        })
        .collect()
}

/// True for a leading character of a Chinese plate: a CJK province abbreviation.
pub fn is_province(c: char) -> bool {
    ('\u{4E00}'..='\u{9FFF}').contains(&c)
}

/// The key a declaration's plate is indexed under: folded, without a province character, so
/// that every plate the post's comparison accepts (exact, confusable, or without its
/// province character) is found by one lookup.
pub fn index_key(plate: &str) -> String {
    let n = normalise(plate);
    let mut c = n.chars();
    match c.next() {
        Some(p) if is_province(p) => fold(c.as_str()),
        _ => fold(&n),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cyrillic_separators_and_confusions() {
        assert_eq!(normalise("919 ОУА-10"), "919OYA10");
        assert_eq!(fold(&normalise("919 ОУА-10")), fold("9190YA1O"));
        assert_eq!(normalise("粤B·12345挂"), "粤B12345挂");
        assert_eq!(index_key("粤B·I2345"), index_key("B12345"));
    }
}
