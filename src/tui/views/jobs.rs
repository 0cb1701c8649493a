//! The Jobs view: every job started in this session with its progress, live log, per-layer
//! values and summary. It owns the job list.

use std::time::{Duration, Instant};

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Gauge, Paragraph};

use super::super::app::{Areas, Pane};
use super::super::component::Component;
use super::super::jobs::{JobEntry, JobKind, JobStatus, fmt_duration};
use super::super::keymap::{Action, Ctx};
use super::super::theme::{self, fit, fit_left};
use super::super::ui::pane_block;
use super::ListPos;

#[derive(Default)]
pub struct JobsView {
    jobs: Vec<JobEntry>,
    pos: ListPos,
}

impl Component for JobsView {
    fn contexts(&self) -> &'static [(Ctx, &'static str)] {
        &[(Ctx::Jobs, "jobs view")]
    }
    fn commands(&self, _focus: Pane) -> Vec<Action> {
        use Action::*;
        // "Compare with the original" is offered where it applies: a finished job that wrote
        // a model from the open one.
        let compare = self.current().is_some_and(|j| {
            j.status == JobStatus::Finished
                && matches!(j.kind, JobKind::Prune | JobKind::Quantize | JobKind::Fix)
                && j.outcome.as_ref().is_some_and(|o| {
                    o.outputs
                        .iter()
                        .any(|p| p.extension().is_some_and(|e| e == "onnx"))
                })
        });
        if compare {
            vec![Down, CancelJob, OpenResult, CompareOriginal, Help, Quit]
        } else {
            vec![Down, CancelJob, OpenResult, Help, Quit]
        }
    }
}

/// How the jobs view tells time: the frozen clock of snapshots, or the real one.
#[derive(Clone, Copy)]
pub struct Clock(pub Option<Duration>);

impl Clock {
    pub fn since(self, t: Instant) -> Duration {
        self.0.unwrap_or_else(|| t.elapsed())
    }
}

impl JobsView {
    pub fn jobs(&self) -> &[JobEntry] {
        &self.jobs
    }

    pub fn pos_mut(&mut self) -> &mut ListPos {
        &mut self.pos
    }

    /// Adds a job and puts the cursor on it.
    pub fn push(&mut self, j: JobEntry) {
        self.jobs.push(j);
        self.pos.cursor = self.jobs.len() - 1;
    }

    /// The job under the cursor.
    pub fn current(&self) -> Option<&JobEntry> {
        self.jobs.get(self.pos.cursor)
    }

    /// Drains job events. True when something changed.
    pub fn poll(&mut self) -> bool {
        let mut changed = false;
        for j in &mut self.jobs {
            if j.poll() {
                changed = true;
            }
        }
        changed
    }

    /// The newest finished sensitivity measurement not yet handed to the Groups view.
    pub fn take_sensitivity(&mut self) -> Option<crate::prune::sensitivity::SensitivityReport> {
        self.jobs
            .iter_mut()
            .rev()
            .find_map(|j| j.outcome.as_mut()?.sensitivity.take())
    }

    pub fn any_running(&self) -> bool {
        self.jobs.iter().any(|j| j.is_running())
    }

    /// Cancels the job under the cursor if it runs. True when there was one to cancel.
    pub fn cancel_current(&mut self) -> bool {
        match self.jobs.get_mut(self.pos.cursor) {
            Some(j) if j.is_running() => {
                j.cancel();
                true
            }
            _ => false,
        }
    }

    /// Draws the job list and the selected job's progress.
    pub fn draw(
        &mut self,
        f: &mut Frame,
        area: Rect,
        focus: Pane,
        clock: Clock,
        areas: &mut Areas,
        page: &mut usize,
    ) {
        let list_h = (self.jobs.len() as u16 + 2)
            .min(area.height / 3 + 1)
            .max(3)
            .min(area.height);
        let [list_r, det_r] =
            Layout::vertical([Constraint::Length(list_h), Constraint::Min(4)]).areas(area);
        let focused = focus == Pane::List;
        let block = pane_block(format!(" Jobs {} ", self.jobs.len()), focused);
        let inner = block.inner(list_r);
        f.render_widget(block, list_r);
        let h = inner.height as usize;
        *page = h;
        self.pos.layout(self.jobs.len(), h, list_r, areas);
        let mut lines = Vec::new();
        if self.jobs.is_empty() {
            lines.push(Line::from(Span::styled(
                "no jobs yet — p prunes, Q quantizes, x extracts (from the Nodes view)",
                theme::dim(),
            )));
        }
        for (k, j) in self.jobs.iter().enumerate().skip(self.pos.offset).take(h) {
            let mut line = job_row(j, clock, inner.width as usize);
            if k == self.pos.cursor {
                line = line.style(theme::cursor(focused));
            }
            lines.push(line);
        }
        f.render_widget(Paragraph::new(lines), inner);
        areas.details = det_r;
        let focused = focus == Pane::Details;
        match self.jobs.get(self.pos.cursor) {
            Some(j) => draw_job_detail(j, clock, f, det_r, focused),
            None => f.render_widget(pane_block(" Job ".into(), focused), det_r),
        }
    }
}

/// One job's row: status, kind, title and elapsed time.
fn job_row(j: &JobEntry, clock: Clock, width: usize) -> Line<'static> {
    let (st, style) = match &j.status {
        JobStatus::Running => (
            format!("{:>3.0}%", j.ratio().unwrap_or(0.0) * 100.0),
            theme::accent(),
        ),
        JobStatus::Finished => ("done".to_string(), theme::ok()),
        JobStatus::Failed(_) => ("fail".to_string(), theme::lock()),
        JobStatus::Cancelled => ("stop".to_string(), theme::skip()),
    };
    let t = match (clock.0, j.ended) {
        (Some(c), _) => c,
        (None, Some(e)) => e - j.started,
        (None, None) => j.started.elapsed(),
    };
    Line::from(vec![
        Span::styled(format!(" {st:<5}"), style),
        Span::styled(format!("{:<9}", j.kind.label()), theme::bold()),
        Span::raw(fit(&j.title, width.saturating_sub(24))),
        Span::styled(format!("  {}", fmt_duration(t)), theme::dim()),
    ])
}

/// The selected job: command, progress gauge, summary, per-layer values and log.
fn draw_job_detail(j: &JobEntry, clock: Clock, f: &mut Frame, area: Rect, focused: bool) {
    let block = pane_block(format!(" {} ", j.title), focused);
    let inner = block.inner(area);
    f.render_widget(block, area);
    let has_layers = !j.layers.is_empty() || j.kind == JobKind::Quantize;
    let summary_h = j
        .outcome
        .as_ref()
        .map(|o| o.summary.len() as u16 + 1)
        .unwrap_or(0);
    let layers_h = if has_layers {
        (j.layers.len() as u16 + 1).clamp(2, inner.height / 2)
    } else {
        0
    };
    let chart_h = if j.points.is_empty() && j.training.is_empty() {
        0
    } else {
        8.min(inner.height / 3)
    };
    let [cmd_r, gauge_r, chart_r, sum_r, layers_r, log_r] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(2),
        Constraint::Length(chart_h),
        Constraint::Length(summary_h),
        Constraint::Length(layers_h),
        Constraint::Min(1),
    ])
    .areas(inner);
    if chart_h > 0 && !j.training.is_empty() {
        draw_loss(&j.training, f, chart_r);
    } else if chart_h > 0 {
        draw_trace(&j.points, f, chart_r);
    }
    f.render_widget(
        Paragraph::new(Line::from(vec![
            Span::styled("$ ", theme::dim()),
            Span::styled(j.command.clone(), theme::dim()),
        ])),
        cmd_r,
    );
    draw_gauge(j, clock, f, gauge_r);
    if let Some(o) = &j.outcome {
        let mut lines: Vec<Line> = o.summary.iter().map(|l| Line::from(l.clone())).collect();
        if !o.outputs.is_empty() {
            lines.push(Line::from(Span::styled("o opens the result", theme::dim())));
        }
        f.render_widget(Paragraph::new(lines), sum_r);
    }
    if has_layers {
        f.render_widget(Paragraph::new(layer_lines(j, layers_r)), layers_r);
    }
    f.render_widget(Paragraph::new(log_lines(j, log_r.height as usize)), log_r);
}

/// Progress gauge with phase, count and ETA, and the latest message under it.
fn draw_gauge(j: &JobEntry, clock: Clock, f: &mut Frame, area: Rect) {
    let phase_t = clock.since(j.phase_started);
    let label = match &j.status {
        JobStatus::Running => {
            let mut l = match j.total {
                Some(t) => format!("{} {}/{}", j.phase, j.done, t),
                None => format!("{} …", j.phase),
            };
            if let Some(eta) = j.eta(phase_t) {
                l.push_str(&format!("  ETA {}", fmt_duration(eta)));
            }
            l
        }
        JobStatus::Finished => "finished".to_string(),
        JobStatus::Failed(e) => format!("failed: {e}"),
        JobStatus::Cancelled => "cancelled".to_string(),
    };
    let ratio = match &j.status {
        JobStatus::Running => j.ratio().unwrap_or(0.0),
        JobStatus::Finished => 1.0,
        _ => j.ratio().unwrap_or(0.0),
    };
    let gauge_style = match &j.status {
        JobStatus::Failed(_) => theme::lock(),
        JobStatus::Cancelled => theme::skip(),
        JobStatus::Finished => theme::ok(),
        JobStatus::Running => theme::accent(),
    };
    let [g1, g2] = Layout::vertical([Constraint::Length(1), Constraint::Length(1)]).areas(area);
    f.render_widget(
        Gauge::default()
            .ratio(ratio)
            .label(fit(&label, g1.width as usize))
            .gauge_style(gauge_style)
            .use_unicode(true),
        g1,
    );
    if !j.message.is_empty() && j.is_running() {
        f.render_widget(
            Paragraph::new(Span::styled(
                fit(&j.message, g2.width as usize),
                theme::dim(),
            )),
            g2,
        );
    }
}

/// One axis of a job chart: title, bounds and the two end labels.
struct AxisSpec {
    title: &'static str,
    bounds: [f64; 2],
    labels: [String; 2],
}

impl AxisSpec {
    fn axis(self) -> ratatui::widgets::Axis<'static> {
        ratatui::widgets::Axis::default()
            .title(self.title)
            .style(theme::dim())
            .bounds(self.bounds)
            .labels(self.labels)
    }
}

/// A one-line braille chart of `pts` named `name`; `wide_legend` keeps the legend even when
/// it takes most of the chart (a long name carrying numbers).
fn line_chart(
    name: String,
    pts: &[(f64, f64)],
    (x, y): (AxisSpec, AxisSpec),
    wide_legend: bool,
    f: &mut Frame,
    area: Rect,
) {
    use ratatui::symbols::Marker;
    use ratatui::widgets::{Chart, Dataset, GraphType, LegendPosition};
    let data = Dataset::default()
        .name(name)
        .marker(Marker::Braille)
        .graph_type(GraphType::Line)
        .style(theme::accent())
        .data(pts);
    let mut chart = Chart::new(vec![data]).x_axis(x.axis()).y_axis(y.axis());
    if wide_legend {
        chart = chart
            .legend_position(Some(LegendPosition::TopRight))
            .hidden_legend_constraints((Constraint::Percentage(90), Constraint::Percentage(90)));
    }
    f.render_widget(chart, area);
}

/// The budget search's fidelity (SQNR dB) against MACs kept, one point per round.
fn draw_trace(points: &[(f64, f64)], f: &mut Frame, area: Rect) {
    let pts: Vec<(f64, f64)> = points.iter().map(|(x, y)| (x * 100.0, *y)).collect();
    let xmin = pts.iter().map(|p| p.0).fold(100.0f64, f64::min).floor();
    let ymax = pts.iter().map(|p| p.1).fold(10.0f64, f64::max).ceil();
    let x = AxisSpec {
        title: "MACs %",
        bounds: [xmin, 100.0],
        labels: [format!("{xmin:.0}"), "100".to_string()],
    };
    let y = AxisSpec {
        title: "dB",
        bounds: [0.0, ymax],
        labels: ["0".to_string(), format!("{ymax:.0}")],
    };
    line_chart("SQNR dB".into(), &pts, (x, y), false, f, area);
}

/// Fine-tuning: the distillation loss against steps, with the held-out agreement (first and
/// latest evaluated) in the legend, so a run that stops improving is seen while it runs.
fn draw_loss(points: &[crate::tui::jobs::TrainingPoint], f: &mut Frame, area: Rect) {
    let pts: Vec<(f64, f64)> = points
        .iter()
        .filter(|p| p.loss.is_finite())
        .map(|p| (p.step as f64, p.loss))
        .collect();
    let xmax = pts.iter().map(|p| p.0).fold(1.0f64, f64::max);
    let ymax = pts.iter().map(|p| p.1).fold(0.0f64, f64::max).max(1e-6);
    let evaluated: Vec<f64> = points.iter().filter_map(|p| p.agreement).collect();
    let name = match (evaluated.first(), evaluated.last()) {
        (Some(a), Some(b)) if evaluated.len() > 1 => {
            format!("loss · agreement {a:.3} → {b:.3}")
        }
        (Some(a), _) => format!("loss · agreement {a:.3}"),
        _ => "loss".to_string(),
    };
    let x = AxisSpec {
        title: "step",
        bounds: [0.0, xmax],
        labels: ["0".to_string(), format!("{xmax:.0}")],
    };
    let y = AxisSpec {
        title: "loss",
        bounds: [0.0, ymax],
        labels: ["0".to_string(), format!("{ymax:.3}")],
    };
    line_chart(name, &pts, (x, y), true, f, area);
}

/// Per-layer SQNR bars, the latest that fit.
fn layer_lines(j: &JobEntry, area: Rect) -> Vec<Line<'static>> {
    let mut head = vec![Span::styled(
        "per-layer SQNR (dB, higher is better)",
        theme::section(),
    )];
    // Mixed precision, live: the latest confirmation run and how many layers went to float.
    if let Some(fd) = &j.fidelity {
        head.push(Span::styled(
            format!(
                "  {} float · output {}{}",
                fd.float_layers,
                crate::report::fmt_db(fd.output_sqnr_db),
                fd.agreement
                    .map_or(String::new(), |a| format!(" · task agreement {a:.3}"))
            ),
            theme::bold(),
        ));
    }
    let mut lines = vec![Line::from(head)];
    if j.layers.is_empty() {
        lines.push(Line::from(Span::styled(
            "  waiting for calibration…",
            theme::dim(),
        )));
    }
    let name_w = (area.width as usize / 3).max(10);
    let bar_w = (area.width as usize).saturating_sub(name_w + 9);
    let vmax = j.layers.iter().map(|l| l.value).fold(40.0f64, f64::max);
    for l in j
        .layers
        .iter()
        .rev()
        .take(area.height.saturating_sub(1) as usize)
        .rev()
    {
        let float = l.label == crate::jobs::LayerLabel::Fallback;
        // Float layers give up 6 columns of bar for their " float" mark.
        let bar_w = if float {
            bar_w.saturating_sub(6)
        } else {
            bar_w
        };
        let n = ((l.value.max(0.0) / vmax) * bar_w as f64).round() as usize;
        let color = if float {
            Color::Blue
        } else if l.value < 20.0 {
            Color::Red
        } else if l.value < 30.0 {
            Color::Yellow
        } else {
            Color::Green
        };
        lines.push(Line::from(vec![
            Span::raw(format!("{:<name_w$} ", fit_left(&l.node, name_w))),
            Span::styled("█".repeat(n.min(bar_w)), Style::default().fg(color)),
            Span::raw(" ".repeat(bar_w.saturating_sub(n))),
            Span::styled(format!(" {:>5.1}", l.value), theme::bold()),
            Span::styled(if float { " float" } else { "" }, theme::dim()),
        ]));
    }
    lines
}

/// The last `lh` log lines, styled by their marker.
fn log_lines(j: &JobEntry, lh: usize) -> Vec<Line<'static>> {
    j.log
        .iter()
        .rev()
        .take(lh)
        .rev()
        .map(|l| {
            let style = if l.starts_with('✗') {
                theme::lock()
            } else if l.starts_with('✓') {
                theme::ok()
            } else if l.starts_with('▸') {
                theme::accent()
            } else {
                theme::dim()
            };
            Line::from(Span::styled(l.clone(), style))
        })
        .collect()
}
