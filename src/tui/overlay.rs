//! The overlays drawn over the main screen: help, the prune/quantize/extract dialogs, the
//! save-as prompt and the quit confirmation. Each owns its state (see [`super::dialog`]),
//! handles its own keys, offers its commands as [`Hint`]s and draws itself; the app only acts
//! on what a key asks for ([`Reply`]).

use std::path::PathBuf;

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::Frame;
use ratatui::layout::{Alignment, Rect};
use ratatui::style::{Color, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Clear, Paragraph, Wrap};

use super::component::{Hint, hint, hint_line, hint_text};
use super::dialog::{
    self, ExtractDialog, Outcome, Prompt, PruneDialog, QuantizeDialog, criterion_name,
};
use super::engines;
use super::keymap::{Ctx, KeyMap};
use super::session::Session;
use super::theme::{self, fit, fit_left};
use super::ui::{centered, pane_block};

pub enum Overlay {
    Help {
        scroll: u16,
    },
    Prune(PruneDialog),
    Quantize(QuantizeDialog),
    Extract(ExtractDialog),
    SaveAs(Prompt),
    /// Where the Groups view's sensitivity samples come from.
    Sensitivity(Prompt),
    /// Steps and samples for fine-tuning this model (a finished job's output).
    Finetune(Prompt, PathBuf),
    ConfirmQuit,
}

/// What a key in an overlay asks the app to do.
pub enum Reply {
    Stay,
    Close,
    Quit,
    /// Close, save the tags where they were saved before (or ask), quit when saved.
    SaveAndQuit,
    SaveTagsTo(PathBuf),
    /// Measure group sensitivity on these samples (empty: random).
    Sensitivity(String),
    /// Fine-tune this model as the prompt says (`STEPS FOLDER`).
    Finetune(PathBuf, String),
    Prune(PruneDialog),
    Quantize(QuantizeDialog),
    Extract(ExtractDialog),
}

const PRUNE_HINTS: &[Hint] = &[
    hint("⏎", "run as a job"),
    hint("Tab", "next field"),
    hint("Esc", "close"),
];
const QUANT_HINTS: &[Hint] = &[
    hint("⏎", "run as a job (per-layer SQNR live)"),
    hint("Esc", "close"),
];
const EXTRACT_HINTS: &[Hint] = &[hint("⏎", "extract (job)"), hint("Esc", "close")];
const SAVE_HINTS: &[Hint] = &[hint("⏎", "save (atomic write)"), hint("Esc", "cancel")];
const SENS_HINTS: &[Hint] = &[
    hint("⏎", "measure (job; empty: 16 random samples)"),
    hint("Esc", "cancel"),
];
const FINETUNE_HINTS: &[Hint] = &[
    hint("⏎", "fine-tune (job; loss chart live)"),
    hint("Esc", "cancel"),
];
const QUIT_HINTS: &[Hint] = &[
    hint("w", "save and quit"),
    hint("q", "quit anyway"),
    hint("Esc", "stay"),
];
const HELP_HINTS: &[Hint] = &[hint("j/k", "scroll"), hint("Esc", "closes")];

fn ctrl(k: &KeyEvent) -> bool {
    k.modifiers.contains(KeyModifiers::CONTROL)
}

/// What a dialog's outcome means for the app.
fn reply<T: Clone>(o: Outcome, d: &T, submit: fn(T) -> Reply) -> Reply {
    match o {
        Outcome::Stay => Reply::Stay,
        Outcome::Close => Reply::Close,
        Outcome::Submit => submit(d.clone()),
    }
}

impl Overlay {
    /// The commands this overlay offers, as shown in it.
    pub fn hints(&self) -> &'static [Hint] {
        match self {
            Overlay::Help { .. } => HELP_HINTS,
            Overlay::Prune(_) => PRUNE_HINTS,
            Overlay::Quantize(_) => QUANT_HINTS,
            Overlay::Extract(_) => EXTRACT_HINTS,
            Overlay::SaveAs(_) => SAVE_HINTS,
            Overlay::Sensitivity(_) => SENS_HINTS,
            Overlay::Finetune(..) => FINETUNE_HINTS,
            Overlay::ConfirmQuit => QUIT_HINTS,
        }
    }

    /// Handles one key.
    pub fn handle(&mut self, k: &KeyEvent) -> Reply {
        match self {
            Overlay::Help { scroll } => {
                match k.code {
                    KeyCode::Esc | KeyCode::Char('?') | KeyCode::Char('q') | KeyCode::F(1) => {
                        return Reply::Close;
                    }
                    KeyCode::Char('j') | KeyCode::Down => *scroll = scroll.saturating_add(1),
                    KeyCode::Char('k') | KeyCode::Up => *scroll = scroll.saturating_sub(1),
                    KeyCode::Char('d') if ctrl(k) => *scroll = scroll.saturating_add(10),
                    KeyCode::Char('u') if ctrl(k) => *scroll = scroll.saturating_sub(10),
                    KeyCode::PageDown => *scroll = scroll.saturating_add(10),
                    KeyCode::PageUp => *scroll = scroll.saturating_sub(10),
                    _ => {}
                }
                Reply::Stay
            }
            Overlay::ConfirmQuit => match k.code {
                KeyCode::Char('w') => Reply::SaveAndQuit,
                KeyCode::Char('q') | KeyCode::Char('y') | KeyCode::Char('Q') => Reply::Quit,
                KeyCode::Char('c') if ctrl(k) => Reply::Quit,
                KeyCode::Esc | KeyCode::Char('n') => Reply::Close,
                _ => Reply::Stay,
            },
            Overlay::SaveAs(p) => match p.handle(k) {
                Outcome::Close => Reply::Close,
                Outcome::Submit => Reply::SaveTagsTo(PathBuf::from(p.input.text.trim())),
                Outcome::Stay => Reply::Stay,
            },
            Overlay::Sensitivity(p) => match p.handle(k) {
                Outcome::Close => Reply::Close,
                Outcome::Submit => Reply::Sensitivity(p.input.text.clone()),
                Outcome::Stay => Reply::Stay,
            },
            Overlay::Finetune(p, student) => match p.handle(k) {
                Outcome::Close => Reply::Close,
                Outcome::Submit => Reply::Finetune(student.clone(), p.input.text.clone()),
                Outcome::Stay => Reply::Stay,
            },
            Overlay::Prune(d) => reply(d.handle(k), d, Reply::Prune),
            Overlay::Quantize(d) => reply(d.handle(k), d, Reply::Quantize),
            Overlay::Extract(d) => reply(d.handle(k), d, Reply::Extract),
        }
    }

    /// Draws the overlay over `body`. `help` lists the help sections of every component.
    pub fn draw(
        &self,
        f: &mut Frame,
        body: Rect,
        s: Option<&Session>,
        keymap: &KeyMap,
        help: &[(Ctx, &'static str)],
    ) {
        match self {
            Overlay::Help { scroll } => draw_help(keymap, help, f, body, *scroll),
            Overlay::ConfirmQuit => draw_confirm_quit(f, body),
            Overlay::SaveAs(p) => draw_save_as(p, SAVE_HINTS, f, body),
            Overlay::Sensitivity(p) => draw_save_as(p, SENS_HINTS, f, body),
            Overlay::Finetune(p, _) => draw_save_as(p, FINETUNE_HINTS, f, body),
            Overlay::Prune(d) => {
                if let Some(s) = s {
                    draw_prune(d, s, f, body)
                }
            }
            Overlay::Quantize(d) => draw_quantize(d, s, f, body),
            Overlay::Extract(d) => draw_extract(d, s, f, body),
        }
    }
}

/// The model argument of the equivalent command line.
fn model_arg(s: Option<&Session>) -> String {
    s.and_then(|s| {
        s.analysis
            .model
            .path
            .as_ref()
            .map(|p| p.display().to_string())
    })
    .unwrap_or_else(|| "<demo>".into())
}

fn field_line(label: &str, value: String, active: bool, hint: &str) -> Line<'static> {
    let marker = if active { "▶ " } else { "  " };
    let vstyle = if active {
        Style::default().fg(Color::Black).bg(Color::Cyan)
    } else {
        theme::bold()
    };
    Line::from(vec![
        Span::styled(marker.to_string(), theme::accent()),
        Span::styled(format!("{label:<14}"), theme::dim()),
        Span::styled(value, vstyle),
        Span::styled(format!("  {hint}"), theme::dim()),
    ])
}

fn text_value(t: &dialog::TextInput, active: bool, w: usize) -> String {
    let s = fit_left(&t.text, w);
    if active { format!("{s}▏") } else { s }
}

fn yes_no(b: bool) -> String {
    if b { "yes" } else { "no" }.into()
}

/// Renders a dialog box with its lines.
fn dialog_box(f: &mut Frame, r: Rect, title: &str, lines: Vec<Line<'static>>) {
    f.render_widget(
        Paragraph::new(lines)
            .block(pane_block(title.into(), true))
            .wrap(Wrap { trim: false }),
        r,
    );
}

fn draw_confirm_quit(f: &mut Frame, body: Rect) {
    let r = centered(body, 52, 7);
    f.render_widget(Clear, r);
    let lines = vec![
        Line::from("Your tag changes are not saved."),
        Line::from(""),
        hint_line(QUIT_HINTS),
    ];
    f.render_widget(
        Paragraph::new(lines)
            .block(pane_block(" Quit? ".into(), true))
            .alignment(Alignment::Center),
        r,
    );
}

fn draw_save_as(p: &Prompt, hints: &[Hint], f: &mut Frame, body: Rect) {
    let r = centered(body, 70.min(body.width), 5);
    f.render_widget(Clear, r);
    let w = r.width.saturating_sub(4) as usize;
    let lines = vec![
        Line::from(Span::styled(text_value(&p.input, true, w), theme::bold())),
        Line::from(Span::styled(hint_text(hints), theme::dim())),
    ];
    f.render_widget(
        Paragraph::new(lines).block(pane_block(format!(" {} ", p.title), true)),
        r,
    );
}

/// The `--tags` argument of the equivalent command line, when there are tags.
fn tags_arg(s: &Session) -> Option<String> {
    if s.tags.is_empty() {
        None
    } else {
        Some(
            s.tags_path
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "<unsaved tags>".into()),
        )
    }
}

/// How many groups the prune would touch: prunable, locked by tags, all.
fn group_line(s: &Session) -> Line<'static> {
    let n = s.channels.groups.len();
    let prunable = (0..n)
        .filter(|&g| s.group_status[g].locks.is_empty() && s.channels.groups[g].channels > 1)
        .count();
    let tagged = s
        .group_status
        .iter()
        .filter(|g| !g.tag_locks.is_empty())
        .count();
    Line::from(vec![
        Span::styled("  groups  ", theme::dim()),
        Span::styled(format!("{prunable} prunable"), theme::ok()),
        Span::raw(format!(" of {n}")),
        Span::styled(
            if tagged > 0 {
                format!(", {tagged} locked by your tags")
            } else {
                String::new()
            },
            theme::skip(),
        ),
    ])
}

fn draw_prune(d: &PruneDialog, s: &Session, f: &mut Frame, body: Rect) {
    let r = centered(body, 76, 19);
    f.render_widget(Clear, r);
    let w = r.width.saturating_sub(22) as usize;
    let cmd = d.command(&model_arg(Some(s)), tags_arg(s).as_deref());
    let target = d
        .target_macs
        .map_or("off".to_string(), |t| format!("{:.0}% of MACs", t * 100.0));
    let mut lines = vec![
        field_line(
            "ratio",
            format!("{:.0}%", d.ratio * 100.0),
            d.field == 0,
            "←/→ ±5%",
        ),
        field_line(
            "criterion",
            criterion_name(d.criterion).to_string(),
            d.field == 1,
            "l1 l2 fpgm bn-scale random",
        ),
        field_line(
            "round_to",
            d.round_to.to_string(),
            d.field == 2,
            "kept channels are multiples",
        ),
        field_line(
            "global",
            yes_no(d.global),
            d.field == 3,
            "rank across groups",
        ),
        field_line(
            "validate",
            yes_no(d.validate),
            d.field == 4,
            "run both; write only if they run",
        ),
        field_line(
            "output",
            text_value(&d.output, d.field == 5, w),
            d.field == 5,
            "",
        ),
        field_line(
            "calib",
            text_value(&d.calib, d.field == 6, w),
            d.field == 6,
            "folder; empty: random",
        ),
        field_line("target", target, d.field == 7, "budget: per-group ratios"),
        field_line(
            "recover",
            d.recover.name().to_string(),
            d.field == 8,
            "none bias lsq",
        ),
        Line::from(""),
        group_line(s),
        Line::from(Span::styled(
            format!("  $ {}", fit(&cmd, r.width as usize - 6)),
            theme::dim(),
        )),
        Line::from(""),
        hint_line(PRUNE_HINTS),
    ];
    if let Some(e) = &s.tag_error {
        lines.insert(
            10,
            Line::from(Span::styled(format!("  tags: {e}"), theme::lock())),
        );
    }
    dialog_box(f, r, " Prune ", lines);
}

/// The quantize dialog's precision value: what runs outside the Q/DQ pairs.
fn precision_name(p: Option<crate::convert::Precision>) -> &'static str {
    match p {
        None => "fp32",
        Some(crate::convert::Precision::Fp16) => "fp16 (INT8 + FP16, TensorRT 11)",
        Some(crate::convert::Precision::Bf16) => "bf16 (INT8 + BF16)",
    }
}

fn draw_quantize(d: &QuantizeDialog, s: Option<&Session>, f: &mut Frame, body: Rect) {
    let r = centered(body, 76, 17);
    f.render_widget(Clear, r);
    let w = r.width.saturating_sub(22) as usize;
    let cmd = d.request().command_line(&model_arg(s));
    let calibration = if d.calib_images {
        "image folder"
    } else {
        "random inputs"
    };
    let format = if d.ort_format {
        "ort (UINT8 activations)"
    } else {
        "trt (symmetric INT8)"
    };
    let lines = vec![
        field_line(
            "calibration",
            calibration.into(),
            d.field == 0,
            "←/→ switch",
        ),
        field_line(
            "images",
            text_value(&d.images, d.field == 1, w),
            d.field == 1,
            "",
        ),
        field_line("samples", d.samples.to_string(), d.field == 2, "←/→"),
        field_line(
            "method",
            engines::QUANT_METHODS[d.method].name().to_string(),
            d.field == 3,
            "mse entropy percentile minmax",
        ),
        field_line("format", format.into(), d.field == 4, "←/→ switch"),
        field_line(
            "precision",
            precision_name(dialog::QUANT_PRECISIONS[d.precision % dialog::QUANT_PRECISIONS.len()])
                .into(),
            d.field == 5,
            "←/→ fp32 fp16 bf16",
        ),
        field_line(
            "output",
            text_value(&d.output, d.field == 6, w),
            d.field == 6,
            "",
        ),
        Line::from(""),
        Line::from(Span::styled(
            format!("  $ {}", fit(&cmd, r.width as usize - 6)),
            theme::dim(),
        )),
        Line::from(""),
        hint_line(QUANT_HINTS),
    ];
    dialog_box(f, r, " Quantize (INT8) ", lines);
}

fn draw_extract(d: &ExtractDialog, s: Option<&Session>, f: &mut Frame, body: Rect) {
    let h = (d.inputs.len() + d.outputs.len()) as u16 + 14;
    let r = centered(body, 90, h);
    f.render_widget(Clear, r);
    let iw = r.width.saturating_sub(4) as usize;
    let pins = s.map(|s| s.analysis.pins.clone()).unwrap_or_default();
    let bline = |b: &dialog::Boundary, style: Style| {
        Line::from(vec![
            Span::styled(format!("  {} ", fit(&b.name, iw / 2)), style),
            Span::raw(format!("{} {}", b.dtype, b.shape)),
        ])
    };
    let mut lines = vec![Line::from(vec![
        Span::styled(format!("{} nodes ", d.nodes.len()), theme::bold()),
        Span::styled(
            format!(
                "{} … {}",
                fit_left(&d.first, iw / 3),
                fit_left(&d.last, iw / 3)
            ),
            theme::dim(),
        ),
    ])];
    lines.push(Line::from(Span::styled("inputs", theme::section())));
    lines.extend(d.inputs.iter().map(|b| bline(b, theme::ok())));
    lines.push(Line::from(Span::styled("outputs", theme::section())));
    lines.extend(
        d.outputs
            .iter()
            .map(|b| bline(b, Style::default().fg(Color::LightRed))),
    );
    lines.push(Line::from(""));
    lines.push(field_line(
        "output",
        text_value(&d.output, d.field == 0, iw.saturating_sub(18)),
        d.field == 0,
        "",
    ));
    lines.push(field_line(
        "boundary data",
        yes_no(d.with_data),
        d.field == 1,
        "real inputs for the cut",
    ));
    lines.push(Line::from(""));
    lines.push(Line::from(Span::styled(
        format!(
            "$ {}",
            d.request()
                .command_line(std::path::Path::new(&model_arg(s)), &pins)
        ),
        theme::dim(),
    )));
    lines.push(Line::from(""));
    lines.push(hint_line(EXTRACT_HINTS));
    dialog_box(f, r, " Extract subgraph ", lines);
}

/// The help overlay: for every component's keymap context, its bindings and what they do.
fn draw_help(
    keymap: &KeyMap,
    sections: &[(Ctx, &'static str)],
    f: &mut Frame,
    body: Rect,
    scroll: u16,
) {
    let r = centered(body, 84, body.height.saturating_sub(2).max(10));
    f.render_widget(Clear, r);
    let mut lines = Vec::new();
    for &(ctx, title) in sections {
        let Some(list) = keymap.bindings.get(&ctx) else {
            continue;
        };
        lines.push(Line::from(Span::styled(
            format!("{title} [{}]", ctx.name()),
            theme::section(),
        )));
        for (a, _) in list {
            let keys = keymap.keys_of(ctx, *a).join(" ");
            lines.push(Line::from(vec![
                Span::styled(format!("  {:<14}", fit(&keys, 13)), theme::accent()),
                Span::raw(a.desc().to_string()),
            ]));
        }
    }
    lines.push(Line::from(""));
    lines.push(Line::from(Span::styled(
        "mouse: click selects (twice expands), wheel scrolls",
        theme::dim(),
    )));
    lines.push(Line::from(Span::styled(
        "keys are configurable: ~/.config/pare/keymap.toml, $PARE_KEYMAP or --keymap (same format as assets/keymap.toml)",
        theme::dim(),
    )));
    f.render_widget(
        Paragraph::new(lines)
            .block(pane_block(
                format!(" Help · {} ", hint_text(HELP_HINTS)),
                true,
            ))
            .scroll((scroll, 0)),
        r,
    );
}
