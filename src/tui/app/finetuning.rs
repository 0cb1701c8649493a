//! The app's side of fine-tuning: `T` on a finished prune or quantize job asks for steps and
//! samples, then distils the job's output from the open model (its original) as a job whose
//! view draws the loss chart. Without the `torch` feature it says how to get it.

use std::path::{Path, PathBuf};

use super::super::dialog::{Prompt, TextInput};
use super::super::engines;
use super::super::jobs::{JobKind, JobStatus};
use super::super::overlay::Overlay;
use super::App;

/// Why fine-tuning is not there in a build without libtorch, and where to read how to get it.
pub const NEEDS_TORCH: &str = "fine-tuning needs a pare built with the `torch` feature \
     (README: 'Fine-tuning with libtorch')";

impl App {
    /// `T` in the Jobs view: the prompt for fine-tuning the selected job's output model.
    pub(super) fn ask_finetune(&mut self) {
        let Some(student) = self.finished_job_model() else {
            self.message =
                Some("fine-tune needs a finished prune or quantize job with a model".into());
            return;
        };
        if !cfg!(feature = "torch") {
            self.message = Some(NEEDS_TORCH.into());
            return;
        }
        self.overlay = Some(Overlay::Finetune(
            Prompt {
                title: format!(
                    "Fine-tune {}: STEPS (default {}) and a folder of images or .npy",
                    student.display(),
                    engines::FINETUNE_STEPS
                ),
                input: TextInput::new(&format!("{} ", engines::FINETUNE_STEPS)),
            },
            student,
        ));
    }

    /// The output model of the selected job, when it is a finished prune or quantize job.
    fn finished_job_model(&self) -> Option<PathBuf> {
        let j = self.jobs.current()?;
        let fits =
            matches!(j.kind, JobKind::Prune | JobKind::Quantize) && j.status == JobStatus::Finished;
        if !fits {
            return None;
        }
        j.outcome.as_ref().and_then(|o| {
            o.outputs
                .iter()
                .find(|p| p.extension().is_some_and(|e| e == "onnx"))
                .cloned()
        })
    }

    /// Starts the fine-tuning job the prompt described; the open model is the teacher.
    pub(super) fn start_finetune(&mut self, student: &Path, text: &str) {
        let Some(teacher) = self
            .session
            .as_ref()
            .and_then(|s| s.analysis.model.path.clone())
        else {
            self.message = Some("the open model has no file to teach from".into());
            return;
        };
        let ask = match engines::finetune_ask(text, student, &teacher) {
            Ok(a) => a,
            Err(e) => {
                self.message = Some(e.to_string());
                return;
            }
        };
        if let Err(e) = self.check_not_input(&ask.output) {
            self.message = Some(e.to_string());
            return;
        }
        self.spawn_finetune(ask);
    }

    #[cfg(feature = "torch")]
    fn spawn_finetune(&mut self, ask: engines::FinetuneAsk) {
        let title = format!("finetune {} steps", ask.steps);
        let cmd = ask.command_line();
        self.push_job(super::super::jobs::JobEntry::spawn(
            JobKind::Finetune,
            title,
            cmd,
            move |p| engines::finetune(&ask, p),
        ));
    }

    #[cfg(not(feature = "torch"))]
    fn spawn_finetune(&mut self, _ask: engines::FinetuneAsk) {
        self.message = Some(NEEDS_TORCH.into());
    }
}
