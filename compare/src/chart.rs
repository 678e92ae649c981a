//! The `--svg` chart: per workload, every run's latency on each side (a log scale, so 1 ms and
//! 15 s fit one picture), and the memory each side needs. Drawn with `plotters`' SVG backend;
//! text is left to the viewer's sans-serif font.

use plotters::coord::Shift;
use plotters::prelude::*;

use super::report::{fmt_mib, fmt_ms, Report, WorkloadReport};
use super::workload::Side;

const WIDTH: u32 = 1000;
const TITLE_HEIGHT: u32 = 70;
const LATENCY_HEIGHT: u32 = 190;
/// Height added to a latency panel for each side beyond three.
const LATENCY_ROW: u32 = 45;
const MEMORY_ROW: u32 = 26;
const MEMORY_EXTRA: u32 = 90;

fn color(side: Side) -> RGBColor {
    match side {
        Side::Container => RGBColor(31, 119, 180),
        Side::Vm => RGBColor(214, 39, 40),
        Side::Snapshot => RGBColor(255, 127, 14),
        Side::KvminiOci => RGBColor(148, 103, 189),
        Side::Baseline => RGBColor(110, 110, 110),
    }
}

/// Row of the `i`th of `n` sides in a latency panel (the first, the container, on top).
fn row(i: usize, n: usize) -> f64 {
    (n - 1 - i) as f64
}

/// Height of the latency panel of `w`.
fn latency_height(w: &WorkloadReport) -> u32 {
    LATENCY_HEIGHT + LATENCY_ROW * (w.sides.len() as u32).saturating_sub(3)
}

/// A spread of -0.5..0.5 that is the same for the same index: runs do not hide each other.
fn jitter(i: usize) -> f64 {
    ((i as f64 * 0.618_034).fract() - 0.5) * 0.5
}

type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;

/// Tick values for a log axis over `lo..hi`: 1, 2, 5 times powers of ten, or every digit when
/// the range is too narrow for those to give three.
pub fn log_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let pick = |mantissas: &[f64]| {
        let mut out = Vec::new();
        for exp in (lo.log10().floor() as i32)..=(hi.log10().ceil() as i32) {
            for m in mantissas {
                let v = m * 10f64.powi(exp);
                if v >= lo && v <= hi {
                    out.push(v);
                }
            }
        }
        out
    };
    let coarse = pick(&[1.0, 2.0, 5.0]);
    if coarse.len() >= 3 {
        coarse
    } else {
        pick(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0])
    }
}

/// An axis label: at most three significant digits, no trailing zeros.
pub fn axis_label(v: f64) -> String {
    let decimals = if v >= 100.0 {
        0
    } else if v >= 10.0 {
        1
    } else if v >= 1.0 {
        2
    } else {
        3
    };
    let s = format!("{v:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

fn err<E: std::fmt::Display>(e: E) -> String {
    e.to_string()
}

fn latency_panel(area: &Area, w: &WorkloadReport) -> Result<(), String> {
    let all: Vec<f64> = w
        .sides
        .iter()
        .flat_map(|s| s.total_ms.samples.iter().chain(&s.first_output_ms.samples))
        .copied()
        .filter(|v| *v > 0.0)
        .collect();
    let lo = all.iter().copied().fold(f64::INFINITY, f64::min).max(0.01);
    let hi = all.iter().copied().fold(0.0, f64::max).max(lo * 2.0);
    let n = w.sides.len();
    let labels: Vec<String> = w.sides.iter().rev().map(|s| s.label.clone()).collect();
    let mut chart = ChartBuilder::on(area)
        .caption(
            format!(
                "{}: launch to end of process, ms ({} runs per side; dot = end, ring = first output line, bar = median end)",
                w.name, w.runs
            ),
            ("sans-serif", 15),
        )
        .margin(8)
        .margin_right(24)
        .x_label_area_size(28)
        .y_label_area_size(170)
        .build_cartesian_2d(
            (lo * 0.7..hi * 1.5)
                .log_scale()
                .with_key_points(log_ticks(lo * 0.7, hi * 1.5)),
            -0.5f64..(n as f64 - 0.5),
        )
        .map_err(err)?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(n)
        .y_label_formatter(&|y| {
            let i = y.round();
            if (y - i).abs() < 1e-6 && (0.0..n as f64).contains(&i) {
                labels[i as usize].clone()
            } else {
                String::new()
            }
        })
        .x_label_formatter(&|x| axis_label(*x))
        .label_style(("sans-serif", 13))
        .draw()
        .map_err(err)?;
    for (i, s) in w.sides.iter().enumerate() {
        let c = color(s.side);
        let y = row(i, n);
        chart
            .draw_series(
                s.first_output_ms
                    .samples
                    .iter()
                    .enumerate()
                    .map(|(i, v)| Circle::new((*v, y + jitter(i)), 5, c.mix(0.5).stroke_width(1))),
            )
            .map_err(err)?;
        chart
            .draw_series(
                s.total_ms
                    .samples
                    .iter()
                    .enumerate()
                    .map(|(i, v)| Circle::new((*v, y + jitter(i)), 3, c.mix(0.7).filled())),
            )
            .map_err(err)?;
        let p50 = s.total_ms.p50;
        chart
            .draw_series(std::iter::once(PathElement::new(
                vec![(p50, y - 0.33), (p50, y + 0.33)],
                c.stroke_width(3),
            )))
            .map_err(err)?;
        chart
            .draw_series(std::iter::once(Text::new(
                format!(
                    "median: first output {} ms, end {} ms",
                    fmt_ms(s.first_output_ms.p50),
                    fmt_ms(p50)
                ),
                (lo * 0.72, y + 0.47),
                ("sans-serif", 12).into_font().color(&c),
            )))
            .map_err(err)?;
    }
    Ok(())
}

fn memory_panel(area: &Area, workloads: &[&WorkloadReport]) -> Result<(), String> {
    let rows: Vec<(String, Side, u64, u64)> = workloads
        .iter()
        .flat_map(|w| {
            w.sides.iter().map(move |s| {
                (
                    format!("{}: {}", w.name, s.label),
                    s.side,
                    s.peak_rss_kib,
                    s.peak_pss_kib,
                )
            })
        })
        .collect();
    let n = rows.len().max(1);
    let max = rows.iter().map(|r| r.2.max(r.3)).max().unwrap_or(1).max(1) as f64 / 1024.0;
    let mut chart = ChartBuilder::on(area)
        .caption(
            "peak memory of everything each side started, MiB (dark = PSS, light = RSS; sampled sums over the process tree)",
            ("sans-serif", 15),
        )
        .margin(8)
        .margin_right(24)
        .x_label_area_size(28)
        .y_label_area_size(230)
        .build_cartesian_2d(0f64..max * 1.3, -0.5f64..(n as f64 - 0.5))
        .map_err(err)?;
    let label_of = |y: &f64| {
        let i = y.round();
        if (y - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < rows.len() {
            rows[rows.len() - 1 - i as usize].0.clone()
        } else {
            String::new()
        }
    };
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(n)
        .y_label_formatter(&label_of)
        .x_label_formatter(&|x| axis_label(*x))
        .label_style(("sans-serif", 13))
        .draw()
        .map_err(err)?;
    for (i, (_, side, rss, pss)) in rows.iter().enumerate() {
        let y = (rows.len() - 1 - i) as f64;
        let c = color(*side);
        let (rss, pss) = (*rss as f64 / 1024.0, *pss as f64 / 1024.0);
        chart
            .draw_series([
                Rectangle::new([(0.0, y - 0.35), (rss, y + 0.35)], c.mix(0.25).filled()),
                Rectangle::new([(0.0, y - 0.2), (pss, y + 0.2)], c.mix(0.9).filled()),
            ])
            .map_err(err)?;
        chart
            .draw_series(std::iter::once(Text::new(
                format!(
                    "PSS {}, RSS {}",
                    fmt_mib((pss * 1024.0) as u64),
                    fmt_mib((rss * 1024.0) as u64)
                ),
                (rss.max(pss) + max * 0.01, y + 0.2),
                ("sans-serif", 12).into_font(),
            )))
            .map_err(err)?;
    }
    Ok(())
}

/// The chart of `report` as an SVG document.
pub fn svg(report: &Report) -> Result<String, String> {
    let done: Vec<&WorkloadReport> = report
        .workloads
        .iter()
        .filter(|w| w.skipped.is_none() && !w.sides.is_empty())
        .collect();
    let rows: u32 = done.iter().map(|w| w.sides.len() as u32).sum();
    let memory_height = MEMORY_EXTRA + MEMORY_ROW * rows.max(1);
    let latency: u32 = done.iter().map(|w| latency_height(w)).sum();
    let height = TITLE_HEIGHT + latency + memory_height;
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (WIDTH, height)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let (title, rest) = root.split_vertically(TITLE_HEIGHT);
        title
            .draw(&Text::new(
                "VM or container? kvmini compare".to_string(),
                (12, 10),
                ("sans-serif", 22).into_font(),
            ))
            .map_err(err)?;
        title
            .draw(&Text::new(
                format!(
                    "{}; host: {}; Linux {}, {} CPUs; container: {}",
                    report.date_utc,
                    report.host.kind.split(':').next().unwrap_or(""),
                    report.host.kernel,
                    report.host.cpus,
                    report.runtime.version
                ),
                (12, 42),
                ("sans-serif", 13).into_font(),
            ))
            .map_err(err)?;
        let mut breaks: Vec<i32> = done
            .iter()
            .scan(0, |at, w| {
                *at += latency_height(w) as i32;
                Some(*at)
            })
            .collect();
        if done.is_empty() {
            breaks.clear();
        }
        let areas = rest.split_by_breakpoints([0i32; 0], breaks);
        for (area, w) in areas.iter().zip(&done) {
            latency_panel(area, w)?;
        }
        if let Some(area) = areas.last() {
            memory_panel(area, &done)?;
        }
        root.present().map_err(err)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_ticks_are_round_and_inside_the_range() {
        assert_eq!(
            log_ticks(0.5, 60.0),
            vec![0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0]
        );
        assert_eq!(log_ticks(250.0, 600.0), vec![300.0, 400.0, 500.0, 600.0]);
    }

    #[test]
    fn axis_labels_drop_trailing_zeros() {
        assert_eq!(axis_label(1.0), "1");
        assert_eq!(axis_label(2.5), "2.5");
        assert_eq!(axis_label(0.2), "0.2");
        assert_eq!(axis_label(15.0), "15");
        assert_eq!(axis_label(500.0), "500");
    }
}
