//! `status --timeline`: what the last run did, stage by stage, on one time axis.

use pipeline::Store;

use crate::table::{human_bytes, seconds};

/// Prints the last run's timeline (or says there was none).
pub fn print(store: &Store) -> anyhow::Result<()> {
    let Some(run) = store.last_run()? else {
        println!("no run has finished on {} yet", store.location());
        return Ok(());
    };
    let total = (run.finished_ms.saturating_sub(run.started_ms)) as f64 / 1000.0;
    println!(
        "last run: {} ({} wall)",
        pipeline::format_unix(run.started_ms / 1000),
        seconds(total)
    );
    println!(
        "{:<14} {:<7} {:>8} {:>8} {:>8} {:>7} {:>8} {:>10}  timeline",
        "stage", "outcome", "start", "end", "seconds", "threads", "cpu", "peak RSS"
    );
    const WIDTH: f64 = 40.0;
    for e in &run.stages {
        let start = e.started_ms.saturating_sub(run.started_ms) as f64 / 1000.0;
        let end = e.finished_ms.saturating_sub(run.started_ms) as f64 / 1000.0;
        let (a, b) = if total > 0.0 {
            (
                (start / total * WIDTH) as usize,
                ((end / total * WIDTH).ceil() as usize).max((start / total * WIDTH) as usize + 1),
            )
        } else {
            (0, 1)
        };
        let bar: String = (0..WIDTH as usize)
            .map(|i| {
                if i >= a && i < b {
                    if e.outcome == "ran" {
                        '#'
                    } else {
                        '.'
                    }
                } else {
                    ' '
                }
            })
            .collect();
        let ran = e.outcome == "ran";
        println!(
            "{:<14} {:<7} {:>8} {:>8} {:>8} {:>7} {:>8} {:>10}  |{bar}|",
            e.stage,
            e.outcome,
            format!("{start:.1}"),
            format!("{end:.1}"),
            if ran {
                seconds(end - start)
            } else {
                "-".into()
            },
            if ran {
                e.threads.to_string()
            } else {
                "-".into()
            },
            if ran {
                seconds(e.cpu_seconds)
            } else {
                "-".into()
            },
            if ran {
                human_bytes(e.peak_rss_bytes)
            } else {
                "-".into()
            },
        );
    }
    Ok(())
}
