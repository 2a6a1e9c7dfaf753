//! What a notification says, in the recipient's language (kk, ru, en, zh, as on the board and
//! the lane screen): a subject line and a short body. Names of states and flags stay the
//! board's; times are UTC. An event central learned late says when it was observed and when it
//! was received, instead of passing for news.

use serde_json::Value;

use crate::tracking::time_text;

/// The languages a recipient can have; anything else reads English.
pub const LANGS: [&str; 4] = ["kk", "ru", "en", "zh"];

/// Later than this after it was observed, a notification says both times.
pub const LATE_MS: i64 = 5 * 60_000;

fn pick(lang: &str, [kk, ru, en, zh]: [&'static str; 4]) -> &'static str {
    match lang {
        "kk" => kk,
        "ru" => ru,
        "zh" => zh,
        _ => en,
    }
}

/// The words for a state or a flag name.
fn term(lang: &str, name: &str) -> String {
    let t = match name {
        "declared" => ["ресімделді", "оформлен", "declared", "已申报"],
        "departed" => ["жөнелтілді", "убыл", "departed", "已出发"],
        "en_route" => ["жолда", "в пути", "en route", "在途"],
        "at_post" => [
            "бекетте ұсталды",
            "задержан на посту",
            "held at a post",
            "在口岸扣留",
        ],
        "arrived" => ["жетті", "прибыл", "arrived", "已到达"],
        "closed" => ["жабылды", "закрыт", "closed", "已结关"],
        "diverted" => [
            "бағыттан ауытқыды",
            "отклонился от маршрута",
            "diverted",
            "偏离路线",
        ],
        "overdue" => ["мерзімі өтті", "просрочен", "overdue", "逾期"],
        "enquiry" => ["іздестіру", "розыск", "enquiry", "查询"],
        "cancelled" => ["жойылды", "аннулирован", "cancelled", "已取消"],
        "route_deviation" => [
            "маршруттан ауытқу",
            "отклонение от маршрута",
            "route deviation",
            "偏离走廊",
        ],
        "seal_tamper" => [
            "пломба бұзылды",
            "вскрытие пломбы",
            "seal tampered",
            "封条被破坏",
        ],
        "tracker_silent" => [
            "трекер үнсіз",
            "трекер молчит",
            "tracker silent",
            "追踪器无信号",
        ],
        "weight_discrepancy" => [
            "салмақ сәйкессіздігі",
            "расхождение веса",
            "weight discrepancy",
            "重量不符",
        ],
        "radiation_alarm" => [
            "радиациялық дабыл",
            "радиационная тревога",
            "radiation alarm",
            "辐射报警",
        ],
        "watchlist" => [
            "бақылау тізімінде",
            "в списке наблюдения",
            "on the watchlist",
            "在监视名单上",
        ],
        "off_itinerary" => [
            "маршруттан тыс бекет",
            "пост вне маршрута",
            "off its itinerary",
            "不在行程上的口岸",
        ],
        "late_arrival" => [
            "кешігіп жетті",
            "прибыл с опозданием",
            "arrived late",
            "迟到",
        ],
        other => return other.replace('_', " "),
    };
    pick(lang, t).to_string()
}

/// (subject, body) of a notification whose payload is `p` (see [`super::queue_change`]).
pub fn render(
    lang: &str,
    kind: &str,
    p: &Value,
    received_ms: i64,
    observed_ms: i64,
) -> (String, String) {
    let s = |k: &str| p.get(k).and_then(Value::as_str).unwrap_or("");
    let transit = pick(lang, ["Транзит", "Транзит", "Transit", "转关"]);
    let (subject, headline) = if let Some(alert) = kind.strip_prefix("alert:") {
        let word = pick(
            lang,
            [
                "Оператор дабылы",
                "Тревога оператору",
                "Operator alert",
                "操作员警报",
            ],
        );
        (
            format!("{word}: {}", alert.replace('_', " ")),
            s("text").to_string(),
        )
    } else if kind == "flag" {
        let flag = term(lang, s("flag"));
        (
            format!("{transit} {}: {flag}", s("mrn")),
            format!("{} — {flag}", s("note")),
        )
    } else {
        let state = term(lang, s("to"));
        (
            format!("{transit} {}: {state}", s("mrn")),
            format!("{} → {}. {}", term(lang, s("from")), state, s("note")),
        )
    };
    let mut body = headline;
    if let Some(post) = p.get("post").and_then(Value::as_str) {
        let at = pick(lang, ["Бекет", "Пост", "Post", "口岸"]);
        body.push_str(&format!("\n{at}: {post}"));
    }
    let observed = pick(lang, ["Байқалды", "Зафиксировано", "Observed at", "发生于"]);
    body.push_str(&format!("\n{observed}: {}", time_text(observed_ms)));
    if received_ms - observed_ms > LATE_MS {
        let received = pick(
            lang,
            [
                "Орталыққа келді",
                "Получено центром",
                "received at",
                "中心收到于",
            ],
        );
        let late = pick(
            lang,
            [
                "бекеттің байланысы үзілген болуы мүмкін",
                "связь поста, вероятно, прерывалась",
                "the post's link was down",
                "口岸链路曾中断",
            ],
        );
        body.push_str(&format!(" ({received} {}: {late})", time_text(received_ms)));
    }
    (subject, body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_late_change_says_when_it_was_observed_and_received() {
        let p = json!({"mrn": "26KZ5500000000001A", "from": "departed", "to": "arrived",
            "note": "passage at kordai", "post": "kordai"});
        let (subject, body) = render("en", "state", &p, 10 * 3_600_000, 7 * 3_600_000);
        assert_eq!(subject, "Transit 26KZ5500000000001A: arrived");
        assert!(body.contains("departed → arrived"), "{body}");
        assert!(body.contains("Observed at: 1970-01-01T07:00:00"), "{body}");
        assert!(body.contains("received at 1970-01-01T10:00:00"), "{body}");
        let (subject, body) = render("ru", "state", &p, 7 * 3_600_000 + 1000, 7 * 3_600_000);
        assert_eq!(subject, "Транзит 26KZ5500000000001A: прибыл");
        assert!(!body.contains("Получено"), "on time: one time only: {body}");
        let (subject, _) = render(
            "zh",
            "flag",
            &json!({"mrn": "X", "flag": "seal_tamper"}),
            0,
            0,
        );
        assert_eq!(subject, "转关 X: 封条被破坏");
        let (subject, _) = render("kk", "alert:overdue", &json!({"text": "t"}), 0, 0);
        assert_eq!(subject, "Оператор дабылы: overdue");
    }
}
