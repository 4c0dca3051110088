//! Progress bars on a terminal; nothing otherwise.

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::Mutex;
use stowage::progress::Progress;

pub struct Bars {
    multi: MultiProgress,
    bars: Mutex<HashMap<String, ProgressBar>>,
    enabled: bool,
}

impl Bars {
    pub fn new(quiet: bool) -> Bars {
        let enabled = !quiet && std::io::stderr().is_terminal();
        let multi = MultiProgress::with_draw_target(if enabled {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        });
        Bars {
            multi,
            bars: Mutex::new(HashMap::new()),
            enabled,
        }
    }
}

impl Progress for Bars {
    fn start(&self, id: &str, label: &str, total: u64) {
        if !self.enabled {
            return;
        }
        let bar = self.multi.add(ProgressBar::new(total));
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix:>20} [{bar:30}] {bytes:>10}/{total_bytes:<10} {bytes_per_sec:>12} {msg}",
            )
            .unwrap()
            .progress_chars("=> "),
        );
        bar.set_prefix(label.to_string());
        self.bars.lock().unwrap().insert(id.to_string(), bar);
    }
    fn advance(&self, id: &str, n: u64) {
        if let Some(b) = self.bars.lock().unwrap().get(id) {
            b.inc(n);
        }
    }
    fn finish(&self, id: &str, status: &str) {
        if let Some(b) = self.bars.lock().unwrap().get(id) {
            b.finish_with_message(status.to_string());
        }
    }
    fn message(&self, msg: &str) {
        if self.enabled {
            let _ = self.multi.println(msg);
        } else {
            eprintln!("{msg}");
        }
    }
}
