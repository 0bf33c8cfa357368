//! Text for readers, shared by every part of the report (a leaf: it imports nothing of the
//! crate): HTML escaping, percentages, durations, parameter lists.

use serde_json::Value;

/// `s` with the five HTML-special characters escaped.
pub(crate) fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

pub(crate) fn pct(x: f64) -> String {
    format!("{:.1}%", 100.0 * x)
}

/// Seconds for a reader: `0.04 s`, `3.2 s`, `85 s`, `12 min 05 s`.
pub(crate) fn seconds(s: f64) -> String {
    if s < 1.0 {
        format!("{s:.2} s")
    } else if s < 60.0 {
        format!("{s:.1} s")
    } else if s < 600.0 {
        format!("{s:.0} s")
    } else {
        let m = (s / 60.0).floor();
        format!("{m:.0} min {:02.0} s", s - 60.0 * m)
    }
}

/// Params as `key=value` pairs (numbers as JSON writes them: shortest exact form).
pub(crate) fn params_text(v: &Value) -> String {
    match v.as_object() {
        Some(m) => m
            .iter()
            .map(|(k, v)| format!("{k}={}", v.to_string().trim_matches('"')))
            .collect::<Vec<_>>()
            .join(", "),
        None => v.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn numbers_for_readers() {
        assert_eq!(seconds(0.3572416), "0.36 s");
        assert_eq!(seconds(28.81), "28.8 s");
        assert_eq!(seconds(744.2), "12 min 24 s");
        assert_eq!(pct(0.9848484848484849), "98.5%");
        assert_eq!(
            params_text(&json!({"lr": 0.001, "mode": "x"})),
            "lr=0.001, mode=x"
        );
        assert_eq!(esc("a<b & \"c\">"), "a&lt;b &amp; &quot;c&quot;&gt;");
    }
}
