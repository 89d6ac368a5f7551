//! Progress bars for transfers: drawn on standard error only when it is a terminal (and not
//! `--quiet`), so scripts and logs never see them.

use indicatif::{ProgressBar, ProgressStyle};

/// A bar for a transfer of `total` bytes named `label`; hidden unless `enabled`.
pub fn bar(total: u64, label: &str, enabled: bool) -> ProgressBar {
    if !enabled {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    let style = ProgressStyle::with_template(
        "{msg} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ");
    bar.set_style(style);
    bar.set_message(label.to_string());
    bar
}
