//! A self-contained HTML page: inline SVG figures with captions, images as data URIs, no
//! scripts, no external resources.

use base64::Engine as _;
use serde_json::Value;

use crate::provenance::StageProvenance;
use crate::text::{esc, params_text, seconds};

/// One section of the page.
pub(crate) struct Section {
    pub(crate) id: String,
    title: String,
    body: String,
}

impl Section {
    pub(crate) fn new(id: &str, title: &str) -> Section {
        Section {
            id: id.to_string(),
            title: title.to_string(),
            body: String::new(),
        }
    }
    /// A paragraph of HTML (the caller escapes what it inserts).
    pub(crate) fn text(&mut self, html: &str) {
        self.body.push_str(&format!("<p>{html}</p>\n"));
    }
    pub(crate) fn raw(&mut self, html: &str) {
        self.body.push_str(html);
    }
    /// A figure with its caption.
    pub(crate) fn figure(&mut self, svg: &str, caption: &str) {
        self.body.push_str(&figure(svg, caption));
    }
    /// A table; `highlight` rows get the `chosen` class.
    pub(crate) fn table(&mut self, head: &[&str], rows: &[Vec<String>], highlight: &[usize]) {
        self.body.push_str(&table(head, rows, highlight));
    }
}

pub(crate) fn figure(svg: &str, caption: &str) -> String {
    format!(
        "<figure class=\"fig\">{svg}<figcaption>{}</figcaption></figure>\n",
        esc(caption)
    )
}

pub(crate) fn table(head: &[&str], rows: &[Vec<String>], highlight: &[usize]) -> String {
    let mut s = String::from("<table><tr>");
    for h in head {
        s.push_str(&format!("<th>{}</th>", esc(h)));
    }
    s.push_str("</tr>\n");
    for (i, r) in rows.iter().enumerate() {
        s.push_str(if highlight.contains(&i) {
            "<tr class=\"chosen\">"
        } else {
            "<tr>"
        });
        for c in r {
            s.push_str(&format!("<td>{}</td>", esc(c)));
        }
        s.push_str("</tr>\n");
    }
    s.push_str("</table>\n");
    s
}

/// Thumbnails with captions (`(jpeg or png bytes, mime, caption lines)`), in a grid.
pub(crate) fn gallery(tiles: &[(Vec<u8>, &str, Vec<String>)], size: usize) -> String {
    let mut s = String::from("<div class=\"gallery\">");
    for (bytes, mime, lines) in tiles {
        let b64 = base64::engine::general_purpose::STANDARD.encode(bytes);
        let alt = lines.join("; ");
        s.push_str(&format!(
            "<figure class=\"thumb\"><img alt=\"{}\" width=\"{size}\" height=\"{size}\" src=\"data:{mime};base64,{b64}\"><figcaption>{}</figcaption></figure>",
            esc(&alt),
            lines
                .iter()
                .map(|l| esc(l))
                .collect::<Vec<_>>()
                .join("<br>")
        ));
    }
    s.push_str("</div>\n");
    s
}

const STYLE: &str = "\
body{font-family:system-ui,sans-serif;margin:0 auto;padding:1.2em 2em;max-width:1280px;color:#222;line-height:1.4}\
h1{margin:.2em 0;font-size:1.6em}h2{border-bottom:2px solid #eee;padding-bottom:.2em;margin-top:1.6em}\
.answer{font-size:1.15em;background:#f3f7fb;border-left:4px solid #0072B2;padding:.6em 1em}\
.synthetic{background:#fff4e0;border-left:4px solid #E69F00;padding:.4em 1em}\
.first{display:flex;flex-wrap:wrap;gap:1.5em;align-items:flex-start}\
.row{display:flex;flex-wrap:wrap;gap:1em;align-items:flex-start}\
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:3px 9px;font-size:13px;text-align:left}\
th{background:#eef3f8}tr.chosen td{background:#e3f1e8;font-weight:bold}\
.fig{display:inline-block;margin:.4em .6em .8em 0;vertical-align:top}\
figcaption{font-size:12px;color:#555;max-width:640px}.row .fig figcaption{max-width:340px}\
.gallery{display:flex;flex-wrap:wrap;gap:8px}.thumb{margin:0;width:112px;font-size:11px}\
.thumb img{display:block;border:1px solid #ccc}\
nav a{margin-right:1em}code{font-size:12px}";

/// The page: title, the dataset line, a table of contents, the sections, and a place for the
/// run's provenance (filled in by `write_folder`).
pub(crate) fn page(title: &str, header: &str, sections: &[Section]) -> String {
    let mut s = format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title>\n<style>{STYLE}</style></head><body>\n<h1>{}</h1>\n{header}\n<nav>",
        esc(title),
        esc(title),
    );
    for sec in sections {
        s.push_str(&format!("<a href=\"#{}\">{}</a>", sec.id, esc(&sec.title)));
    }
    s.push_str("<a href=\"#run\">Run</a></nav>\n");
    for sec in sections {
        s.push_str(&format!(
            "<section id=\"{}\"><h2>{}</h2>\n{}</section>\n",
            sec.id,
            esc(&sec.title),
            sec.body
        ));
    }
    s.push_str("<section id=\"run\"><h2>Run</h2>\n<!--PROVENANCE--></section>\n</body></html>\n");
    s
}

/// The run section: a timeline figure and a table of the stages (filled in per run).
pub(crate) fn provenance(stages: &[StageProvenance], extra: &Value) -> String {
    let mut s = String::new();
    let t0 = stages
        .iter()
        .filter(|p| p.started_ms > 0)
        .map(|p| p.started_ms)
        .min();
    if let Some(t0) = t0 {
        let spans: Vec<crate::figures::Span<'_>> = stages
            .iter()
            .map(|p| {
                let (start, end) = if p.cached {
                    (0.0, 0.0)
                } else {
                    (
                        p.started_ms.saturating_sub(t0) as f64 / 1000.0,
                        p.finished_ms.saturating_sub(t0) as f64 / 1000.0,
                    )
                };
                crate::figures::Span {
                    stage: &p.stage,
                    start,
                    end,
                    cached: p.cached,
                    label: if p.cached {
                        "cached".to_string()
                    } else {
                        format!(
                            "{} · {} thread{} · {:.0} MiB peak",
                            seconds(p.seconds),
                            p.threads,
                            if p.threads == 1 { "" } else { "s" },
                            p.peak_rss_bytes as f64 / (1u64 << 20) as f64
                        )
                    },
                }
            })
            .collect();
        s.push_str(&figure(
            &crate::figures::timeline("Run timeline", &spans),
            "Figure: this run, stage by stage (blue: ran, with its seconds, threads and peak memory; grey: taken from the cache).",
        ));
    }
    let rows: Vec<Vec<String>> = stages
        .iter()
        .map(|p| {
            vec![
                p.stage.clone(),
                if p.cached { "cached" } else { "ran" }.to_string(),
                if p.cached {
                    format!("({} when it ran)", seconds(p.seconds))
                } else {
                    seconds(p.seconds)
                },
                if p.cached {
                    "-".into()
                } else {
                    p.threads.to_string()
                },
                p.key[..p.key.len().min(12)].to_string(),
                params_text(&p.params),
            ]
        })
        .collect();
    s.push_str(&table(
        &[
            "stage",
            "ran or cached",
            "seconds",
            "threads",
            "key",
            "params",
        ],
        &rows,
        &[],
    ));
    let facts: Vec<String> = extra
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| {
                    let v = match v {
                        Value::Number(n) if n.is_f64() => seconds(n.as_f64().unwrap_or(0.0)),
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    format!("{k}: {v}")
                })
                .collect()
        })
        .unwrap_or_default();
    s.push_str(&format!("<p>{}</p>\n", esc(&facts.join(" · "))));
    s
}
