//! The screen's language catalogues (Kazakh, Russian, English, Chinese), built into the
//! binary. Every string the screen shows is a key here; the tests keep the four catalogues
//! complete against each other, against the script, and against the rules and error keys.

const KK: &str = include_str!("i18n/kk.json");
const RU: &str = include_str!("i18n/ru.json");
const EN: &str = include_str!("i18n/en.json");
const ZH: &str = include_str!("i18n/zh.json");

/// A catalogue (JSON object of key → text), if the language is one of the display's.
pub fn catalogue(lang: &str) -> Option<&'static str> {
    match lang {
        "kk" => Some(KK),
        "ru" => Some(RU),
        "en" => Some(EN),
        "zh" => Some(ZH),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::settings::LANGS;

    fn keys(lang: &str) -> BTreeSet<String> {
        let v: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(catalogue(lang).unwrap()).unwrap();
        assert!(
            v.values()
                .all(|s| s.as_str().is_some_and(|s| !s.is_empty())),
            "{lang}: empty text"
        );
        v.keys().cloned().collect()
    }

    #[test]
    fn every_language_has_every_key() {
        let en = keys("en");
        for l in LANGS {
            let k = keys(l);
            let missing: Vec<_> = en.difference(&k).collect();
            let extra: Vec<_> = k.difference(&en).collect();
            assert!(
                missing.is_empty() && extra.is_empty(),
                "{l}: missing {missing:?}, extra {extra:?}"
            );
        }
    }

    #[test]
    fn placeholders_agree_across_languages() {
        let holes = |s: &str| -> BTreeSet<String> {
            s.split('{')
                .skip(1)
                .filter_map(|p| p.split_once('}').map(|(h, _)| h.to_string()))
                .collect()
        };
        let en: serde_json::Map<String, serde_json::Value> = serde_json::from_str(EN).unwrap();
        for l in LANGS {
            let c: serde_json::Map<String, serde_json::Value> =
                serde_json::from_str(catalogue(l).unwrap()).unwrap();
            for (k, v) in &en {
                assert_eq!(
                    holes(v.as_str().unwrap()),
                    holes(c[k].as_str().unwrap()),
                    "{l}: {k}"
                );
            }
        }
    }

    #[test]
    fn the_script_and_the_server_use_only_known_keys() {
        let en = keys("en");
        let script = include_str!("assets/app.js");
        // Literal keys: 'prefix.name' wherever the prefix is a catalogue prefix.
        let prefixes: BTreeSet<&str> = en
            .iter()
            .filter_map(|k| k.split_once('.').map(|(p, _)| p))
            .collect();
        let mut literal = 0;
        let quoted = script.split('\'').collect::<Vec<_>>();
        // Every piece between two quotes, whichever quote pairs are real: a key never holds
        // a quote, so looking at all of them misses none.
        for part in &quoted[1..] {
            if let Some((p, rest)) = part.split_once('.') {
                if prefixes.contains(p)
                    && !rest.is_empty()
                    && rest.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
                {
                    assert!(
                        en.contains(*part),
                        "app.js uses {part:?}, not in the catalogues"
                    );
                    literal += 1;
                }
            }
        }
        assert!(literal > 60, "only {literal} keys found in app.js");
        // Keys the script builds from data.
        let mut built: Vec<String> = Vec::new();
        for rule in acsgd_fusion::rules::Rule::ALL {
            built.push(format!("rule.{rule}"));
            built.push(format!("alert.{rule}"));
        }
        for d in super::super::DECISIONS {
            built.push(format!("decision.{d}"));
        }
        for (prefix, names) in [
            ("channel", &["green", "yellow", "red"][..]),
            ("role", &["officer", "supervisor", "technician"]),
            ("state", &["up", "degraded", "down"]),
            ("rad", &["clear", "gamma", "neutron", "gamma_neutron"]),
            ("flag", &["tamper", "alarm", "power_lost", "gnss_fault"]),
            ("view", &["front", "rear"]),
            ("gate", &["open", "closed", "unknown"]),
            ("lights", &["off", "red", "yellow", "green", "unknown"]),
            (
                "outcome",
                &[
                    "done",
                    "refused_occupied",
                    "actuator_fault",
                    "refused",
                    "no_answer",
                    "no_node",
                ],
            ),
            ("lang", LANGS),
        ] {
            built.extend(names.iter().map(|n| format!("{prefix}.{n}")));
        }
        // Every error key the server answers with (`ApiError(StatusCode::X, "key", ...)`,
        // however rustfmt breaks the lines, and `"error": "key"` in hand-made answers), and
        // the script's own.
        let server = include_str!("lib.rs");
        let mut answered = 0;
        for part in server.split("ApiError(").skip(1) {
            // The type's own definition and signatures are not answers.
            let Some(rest) = part.trim_start().strip_prefix("StatusCode::") else {
                continue;
            };
            let key = rest.split('"').nth(1).unwrap();
            built.push(format!("error.{key}"));
            answered += 1;
        }
        for part in server.split("\"error\": \"").skip(1) {
            built.push(format!("error.{}", part.split('"').next().unwrap()));
            answered += 1;
        }
        // 17 `ApiError`s and the lock-out's answer when this test was written.
        assert!(
            answered >= 18,
            "only {answered} error answers found in mod.rs"
        );
        built.push("error.network".into());
        for k in built {
            assert!(en.contains(&k), "{k} is not in the catalogues");
        }
    }
}
