//! Modal dialogs: prune, quantize, extract, save-as prompt, quit confirmation. Each is plain
//! state plus a key handler that says whether to stay open, close, or submit.

use std::path::PathBuf;

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use crate::prune::{Criterion, RecoverMode};

use super::engines::QUANT_METHODS;

/// A one-line text field with readline-style editing.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TextInput {
    pub text: String,
    /// Cursor position in characters.
    pub cursor: usize,
}

impl TextInput {
    pub fn new(s: &str) -> Self {
        TextInput {
            text: s.to_string(),
            cursor: s.chars().count(),
        }
    }

    fn byte_at(&self, c: usize) -> usize {
        self.text
            .char_indices()
            .nth(c)
            .map(|(b, _)| b)
            .unwrap_or(self.text.len())
    }

    /// Returns true when the key edited the text or moved the cursor.
    pub fn handle(&mut self, k: &KeyEvent) -> bool {
        let ctrl = k.modifiers.contains(KeyModifiers::CONTROL);
        match k.code {
            KeyCode::Char('u') if ctrl => {
                let b = self.byte_at(self.cursor);
                self.text.replace_range(..b, "");
                self.cursor = 0;
            }
            KeyCode::Char('w') if ctrl => {
                let chars: Vec<char> = self.text.chars().collect();
                let mut start = self.cursor;
                while start > 0 && chars[start - 1] == ' ' {
                    start -= 1;
                }
                while start > 0 && !matches!(chars[start - 1], ' ' | '/') {
                    start -= 1;
                }
                let (a, b) = (self.byte_at(start), self.byte_at(self.cursor));
                self.text.replace_range(a..b, "");
                self.cursor = start;
            }
            KeyCode::Char('a') if ctrl => self.cursor = 0,
            KeyCode::Char('e') if ctrl => self.cursor = self.text.chars().count(),
            KeyCode::Char(c) if !ctrl => {
                let b = self.byte_at(self.cursor);
                self.text.insert(b, c);
                self.cursor += 1;
            }
            KeyCode::Backspace if self.cursor > 0 => {
                let (a, b) = (self.byte_at(self.cursor - 1), self.byte_at(self.cursor));
                self.text.replace_range(a..b, "");
                self.cursor -= 1;
            }
            KeyCode::Delete if self.cursor < self.text.chars().count() => {
                let (a, b) = (self.byte_at(self.cursor), self.byte_at(self.cursor + 1));
                self.text.replace_range(a..b, "");
            }
            KeyCode::Left if self.cursor > 0 => self.cursor -= 1,
            KeyCode::Right if self.cursor < self.text.chars().count() => self.cursor += 1,
            KeyCode::Home => self.cursor = 0,
            KeyCode::End => self.cursor = self.text.chars().count(),
            _ => return false,
        }
        true
    }
}

/// What a dialog wants after a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Stay,
    Close,
    Submit,
}

fn common(k: &KeyEvent) -> Option<Outcome> {
    match k.code {
        KeyCode::Esc => Some(Outcome::Close),
        KeyCode::Enter => Some(Outcome::Submit),
        _ => None,
    }
}

/// Moves between fields: Tab/Down/j next, BackTab/Up/k previous (j/k only off text fields).
fn field_move(k: &KeyEvent, field: &mut usize, n: usize, on_text: bool) -> bool {
    match k.code {
        KeyCode::Tab | KeyCode::Down => *field = (*field + 1) % n,
        KeyCode::BackTab | KeyCode::Up => *field = (*field + n - 1) % n,
        KeyCode::Char('j') if !on_text => *field = (*field + 1) % n,
        KeyCode::Char('k') if !on_text => *field = (*field + n - 1) % n,
        _ => return false,
    }
    true
}

/// +1 / -1 from →/l/+ and ←/h/-.
fn delta(k: &KeyEvent) -> Option<i32> {
    match k.code {
        KeyCode::Right | KeyCode::Char('l') | KeyCode::Char('+') | KeyCode::Char(' ') => Some(1),
        KeyCode::Left | KeyCode::Char('h') | KeyCode::Char('-') => Some(-1),
        _ => None,
    }
}

pub const CRITERIA: &[Criterion] = &[
    Criterion::L1,
    Criterion::L2,
    Criterion::Fpgm,
    Criterion::BnScale,
    Criterion::Random,
];

pub fn criterion_name(c: Criterion) -> &'static str {
    c.name()
}

#[derive(Clone, Debug)]
pub struct PruneDialog {
    pub field: usize,
    pub ratio: f64,
    pub criterion: Criterion,
    pub round_to: usize,
    pub global: bool,
    pub validate: bool,
    pub output: TextInput,
    /// Calibration folder for the budget search (empty: random inputs).
    pub calib: TextInput,
    /// Share of the original's MACs to keep; `None` prunes by `ratio` instead.
    pub target_macs: Option<f64>,
    pub recover: RecoverMode,
}

/// MACs targets the dialog cycles through (`None`: no budget).
pub const MACS_TARGETS: [Option<f64>; 7] = [
    None,
    Some(0.9),
    Some(0.8),
    Some(0.75),
    Some(0.7),
    Some(0.6),
    Some(0.5),
];

impl PruneDialog {
    pub const FIELDS: usize = 9;

    pub fn new(output: PathBuf) -> Self {
        PruneDialog {
            field: 0,
            ratio: 0.5,
            criterion: Criterion::L1,
            round_to: 8,
            global: false,
            validate: true,
            output: TextInput::new(&output.display().to_string()),
            calib: TextInput::default(),
            target_macs: None,
            recover: RecoverMode::None,
        }
    }

    pub fn handle(&mut self, k: &KeyEvent) -> Outcome {
        if let Some(o) = common(k) {
            return o;
        }
        let on_text = self.field == 5 || self.field == 6;
        if field_move(k, &mut self.field, Self::FIELDS, on_text) {
            return Outcome::Stay;
        }
        if on_text {
            let t = if self.field == 5 {
                &mut self.output
            } else {
                &mut self.calib
            };
            t.handle(k);
            return Outcome::Stay;
        }
        if let Some(d) = delta(k) {
            match self.field {
                0 => {
                    self.ratio = ((self.ratio + 0.05 * d as f64) * 100.0)
                        .round()
                        .clamp(0.0, 95.0)
                        / 100.0
                }
                1 => {
                    let i = CRITERIA
                        .iter()
                        .position(|c| *c == self.criterion)
                        .unwrap_or(0) as i32;
                    self.criterion = CRITERIA[(i + d).rem_euclid(CRITERIA.len() as i32) as usize];
                }
                2 => {
                    let steps = [1usize, 2, 4, 8, 16, 32, 64];
                    let i = steps.iter().position(|s| *s == self.round_to).unwrap_or(3) as i32;
                    self.round_to = steps[(i + d).clamp(0, steps.len() as i32 - 1) as usize];
                }
                3 => self.global = !self.global,
                4 => self.validate = !self.validate,
                7 => {
                    let i = MACS_TARGETS
                        .iter()
                        .position(|t| *t == self.target_macs)
                        .unwrap_or(0) as i32;
                    self.target_macs =
                        MACS_TARGETS[(i + d).rem_euclid(MACS_TARGETS.len() as i32) as usize];
                }
                8 => {
                    let all = RecoverMode::ALL;
                    let i = all.iter().position(|m| *m == self.recover).unwrap_or(0) as i32;
                    self.recover = all[(i + d).rem_euclid(all.len() as i32) as usize];
                }
                _ => {}
            }
        }
        Outcome::Stay
    }

    /// The typed request this dialog describes, with the session's tags.
    pub fn request(&self, tags: crate::tags::Tags) -> crate::prune::PruneRequest {
        crate::prune::PruneRequest {
            options: crate::prune::PruneOptions {
                ratio: self.ratio,
                criterion: self.criterion,
                round_to: self.round_to.max(1),
                global: self.global,
                tags,
                ..Default::default()
            },
            output: Some(PathBuf::from(self.output.text.trim())),
            validate: self.validate,
            allow_unvalidated: false,
            budget: self.target_macs.map(|f| {
                let mut b = crate::prune::budget::BudgetOptions::new(self.samples());
                b.target_macs = Some(crate::prune::budget::Amount::Fraction(f));
                b
            }),
            recover: self.recover,
        }
    }

    /// The calibration samples: the folder typed in, else 8 random samples.
    fn samples(&self) -> crate::prune::sensitivity::SampleSpec {
        let calib = self.calib.text.trim();
        let mut spec = crate::prune::sensitivity::SampleSpec::random(0, 8);
        if !calib.is_empty() {
            spec.source = crate::data::DataSource::Path(PathBuf::from(calib));
            spec.samples = usize::MAX;
        }
        spec
    }

    /// The equivalent command line; `tags` names the tags file when there are tags.
    pub fn command(&self, model: &str, tags: Option<&str>) -> String {
        self.request(crate::tags::Tags::default())
            .command_line(model, tags)
    }
}

#[derive(Clone, Debug)]
pub struct QuantizeDialog {
    pub field: usize,
    /// 0 = random inputs, 1 = an image folder.
    pub calib_images: bool,
    pub images: TextInput,
    pub samples: usize,
    pub method: usize,
    /// QDQ flavour: false = TensorRT (symmetric INT8), true = onnxruntime (UINT8 activations).
    pub ort_format: bool,
    pub output: TextInput,
}

impl QuantizeDialog {
    pub const FIELDS: usize = 6;

    pub fn new(output: PathBuf) -> Self {
        QuantizeDialog {
            field: 0,
            calib_images: false,
            images: TextInput::new("images/"),
            samples: 32,
            method: 0,
            ort_format: false,
            output: TextInput::new(&output.display().to_string()),
        }
    }

    pub fn handle(&mut self, k: &KeyEvent) -> Outcome {
        if let Some(o) = common(k) {
            return o;
        }
        let on_text = self.field == 1 || self.field == 5;
        if field_move(k, &mut self.field, Self::FIELDS, on_text) {
            return Outcome::Stay;
        }
        match self.field {
            1 => {
                self.images.handle(k);
            }
            5 => {
                self.output.handle(k);
            }
            f => {
                if let Some(d) = delta(k) {
                    match f {
                        0 => self.calib_images = !self.calib_images,
                        2 => {
                            let steps = [1usize, 4, 8, 16, 32, 64, 128, 256, 512];
                            let i =
                                steps.iter().position(|s| *s == self.samples).unwrap_or(4) as i32;
                            self.samples = steps[(i + d).clamp(0, steps.len() as i32 - 1) as usize];
                        }
                        3 => {
                            self.method = (self.method as i32 + d)
                                .rem_euclid(QUANT_METHODS.len() as i32)
                                as usize
                        }
                        4 => self.ort_format = !self.ort_format,
                        _ => {}
                    }
                }
            }
        }
        Outcome::Stay
    }

    /// The typed request this dialog describes.
    pub fn request(&self) -> crate::quant::QuantizeRequest {
        use crate::quant::{CalibConfig, CalibSource, Format, QuantOptions};
        crate::quant::QuantizeRequest {
            options: QuantOptions {
                source: if self.calib_images {
                    CalibSource::Path(PathBuf::from(&self.images.text))
                } else {
                    CalibSource::Random { seed: 0 }
                },
                samples: self.samples.max(1),
                format: if self.ort_format {
                    Format::Ort
                } else {
                    Format::Trt
                },
                calib: CalibConfig {
                    method: QUANT_METHODS[self.method],
                    ..CalibConfig::default()
                },
                ..QuantOptions::default()
            },
            output: PathBuf::from(&self.output.text),
        }
    }
}

/// Boundary tensor with dtype and shape.
#[derive(Clone, Debug, PartialEq)]
pub struct Boundary {
    pub name: String,
    pub dtype: String,
    pub shape: String,
}

#[derive(Clone, Debug)]
pub struct ExtractDialog {
    pub nodes: Vec<usize>,
    pub first: String,
    pub last: String,
    pub inputs: Vec<Boundary>,
    pub outputs: Vec<Boundary>,
    pub field: usize,
    pub with_data: bool,
    pub output: TextInput,
}

impl ExtractDialog {
    pub const FIELDS: usize = 2;

    pub fn handle(&mut self, k: &KeyEvent) -> Outcome {
        if let Some(o) = common(k) {
            return o;
        }
        let on_text = self.field == 0;
        if field_move(k, &mut self.field, Self::FIELDS, on_text) {
            return Outcome::Stay;
        }
        if on_text {
            self.output.handle(k);
        } else if delta(k).is_some() {
            self.with_data = !self.with_data;
        }
        Outcome::Stay
    }

    /// The typed request this dialog describes: the boundary tensors, and boundary data
    /// from one seeded random sample when asked.
    pub fn request(&self) -> crate::extract::run::ExtractRequest {
        use crate::extract::run::{DataRequest, ExtractRequest};
        ExtractRequest {
            selector: crate::extract::Selector::Tensors {
                inputs: self.inputs.iter().map(|b| b.name.clone()).collect(),
                outputs: self.outputs.iter().map(|b| b.name.clone()).collect(),
            },
            output: PathBuf::from(&self.output.text),
            data: self.with_data.then(DataRequest::default),
        }
    }
}

/// A path prompt (save tags as …).
#[derive(Clone, Debug)]
pub struct Prompt {
    pub title: String,
    pub input: TextInput,
}

impl Prompt {
    pub fn handle(&mut self, k: &KeyEvent) -> Outcome {
        if let Some(o) = common(k) {
            return o;
        }
        self.input.handle(k);
        Outcome::Stay
    }
}
