//! A self-contained HTML page: inline SVG figures, images as data URIs, no scripts, no
//! external resources.

use base64::Engine as _;
use serde_json::Value;

use crate::provenance::StageProvenance;

pub(crate) fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

pub(crate) struct Section {
    title: String,
    body: String,
}

impl Section {
    pub(crate) fn new(title: &str) -> Section {
        Section {
            title: title.to_string(),
            body: String::new(),
        }
    }
    pub(crate) fn text(&mut self, html: &str) {
        self.body.push_str(&format!("<p>{html}</p>\n"));
    }
    pub(crate) fn svg(&mut self, svg: &str) {
        let start = svg.find("<svg").unwrap_or(0);
        self.body.push_str(&format!(
            "<figure class=\"fig\">{}</figure>\n",
            &svg[start..]
        ));
    }
    pub(crate) fn table(&mut self, head: &[&str], rows: Vec<Vec<String>>) {
        self.body.push_str("<table><tr>");
        for h in head {
            self.body.push_str(&format!("<th>{}</th>", esc(h)));
        }
        self.body.push_str("</tr>\n");
        for r in rows {
            self.body.push_str("<tr>");
            for c in r {
                self.body.push_str(&format!("<td>{}</td>", esc(&c)));
            }
            self.body.push_str("</tr>\n");
        }
        self.body.push_str("</table>\n");
    }
    pub(crate) fn images(&mut self, tiles: &[(Vec<u8>, String)], side: usize) {
        self.body.push_str(&format!(
            "<div class=\"grid\" style=\"grid-template-columns: repeat({side}, 120px)\">"
        ));
        for (png, label) in tiles {
            let b64 = base64::engine::general_purpose::STANDARD.encode(png);
            self.body.push_str(&format!("<figure class=\"sample\"><img alt=\"{0}\" src=\"data:image/png;base64,{b64}\"><figcaption>{0}</figcaption></figure>", esc(label)));
        }
        self.body.push_str("</div>\n");
    }
}

pub(crate) fn page(title: &str, dataset: &str, sections: &[Section]) -> String {
    let mut s = format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title>\n<style>\
         body{{font-family:sans-serif;margin:2em;max-width:1100px;color:#222}}\
         table{{border-collapse:collapse;margin:0.5em 0}}td,th{{border:1px solid #ccc;padding:2px 8px;font-size:13px}}\
         th{{background:#eef}}.fig{{display:inline-block;margin:0.5em}}\
         .grid{{display:grid;gap:6px}}.sample{{margin:0;text-align:center;font-size:12px}}.sample img{{width:112px;height:112px}}\
         </style></head><body>\n<h1>{}</h1>\n<p>Dataset: {}</p>\n",
        esc(title),
        esc(title),
        esc(dataset)
    );
    for sec in sections {
        s.push_str(&format!(
            "<section><h2>{}</h2>\n{}</section>\n",
            esc(&sec.title),
            sec.body
        ));
    }
    s.push_str("<section><h2>Provenance</h2>\n<!--PROVENANCE--></section>\n</body></html>\n");
    s
}

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
                            crate::stage::seconds(p.seconds),
                            p.threads,
                            if p.threads == 1 { "" } else { "s" },
                            p.peak_rss_bytes as f64 / (1u64 << 20) as f64
                        )
                    },
                }
            })
            .collect();
        s.push_str(&format!(
            "<figure class=\"fig\">{}<figcaption>Figure: this run, stage by stage (blue: ran; grey: taken from the cache).</figcaption></figure>\n",
            crate::figures::timeline("Run timeline", &spans)
        ));
    }
    s.push_str("<table><tr><th>stage</th><th>ran or cached</th><th>seconds</th><th>threads</th><th>CPU seconds</th><th>key</th><th>params</th></tr>\n");
    for p in stages {
        s.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code></td><td><code>{}</code></td></tr>\n",
            esc(&p.stage),
            if p.cached { "cached" } else { "ran" },
            crate::stage::seconds(p.seconds),
            if p.cached { "-".to_string() } else { p.threads.to_string() },
            if p.cached { "-".to_string() } else { crate::stage::seconds(p.cpu_seconds) },
            esc(&p.key[..p.key.len().min(16)]),
            esc(&p.params.to_string())
        ));
    }
    s.push_str("</table>\n");
    s.push_str(&format!(
        "<p><code>{}</code></p>\n",
        esc(&extra.to_string())
    ));
    s
}
