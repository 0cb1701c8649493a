//! The app's side of the Compare view: starting a comparison (from `--compare` once the model
//! is loaded, or from a finished prune/quantize/fix job), polling it, and the tab it adds.

use std::path::PathBuf;

use super::super::compare::CompareView;
use super::super::jobs::{JobKind, JobStatus};
use super::{App, Pane, View};

impl App {
    /// The tabs on screen: the four views, and Compare once a comparison exists.
    pub fn tab_views(&self) -> Vec<View> {
        let mut v = View::ALL.to_vec();
        if self.compare.is_some() {
            v.push(View::Compare);
        }
        v
    }

    /// Compares the open model (A) with `b` as a job and shows the Compare view; waits for
    /// the model when it is still loading.
    pub fn compare_with(&mut self, b: PathBuf) {
        let Some(s) = &self.session else {
            self.compare_pending = Some(b);
            return;
        };
        let (view, job) = CompareView::start(s.analysis.clone(), self.pins.clone(), b);
        self.jobs.push(job);
        self.compare = Some(view);
        self.view = View::Compare;
        self.focus = Pane::List;
        self.details.reset();
    }

    /// The Compare view's state, when a comparison was asked for.
    pub fn compare_view(&self) -> Option<&CompareView> {
        self.compare.as_ref()
    }

    /// Shows a finished comparison (tests, snapshots).
    pub fn show_compare(&mut self, view: CompareView) {
        self.compare = Some(view);
        self.view = View::Compare;
        self.focus = Pane::List;
    }

    /// Starts a pending comparison and takes a finished one's report. True when something
    /// changed.
    pub(super) fn tick_compare(&mut self) -> bool {
        if self.session.is_some()
            && let Some(b) = self.compare_pending.take()
        {
            self.compare_with(b);
            return true;
        }
        self.compare.as_mut().is_some_and(|c| c.poll())
    }

    /// `C` in the Jobs view: a finished prune, quantize or fix job's output against the model
    /// it came from (the one open).
    pub(super) fn compare_job_output(&mut self) {
        let Some(j) = self.jobs.current() else { return };
        let fits = matches!(j.kind, JobKind::Prune | JobKind::Quantize | JobKind::Fix)
            && j.status == JobStatus::Finished;
        let out = j.outcome.as_ref().and_then(|o| {
            o.outputs
                .iter()
                .find(|p| p.extension().is_some_and(|e| e == "onnx"))
                .cloned()
        });
        match out {
            Some(out) if fits => self.compare_with(out),
            _ => {
                self.message =
                    Some("compare needs a finished prune, quantize or fix job with a model".into())
            }
        }
    }

    /// Enter in the Compare view: the tensor's node in the Nodes view.
    pub(super) fn jump_to_compared(&mut self) {
        let node = self
            .compare
            .as_ref()
            .and_then(|c| c.current())
            .map(|t| t.node.clone());
        let idx = node.and_then(|n| self.session.as_ref()?.by_name.get(&n).copied());
        match idx {
            Some(i) => {
                self.view = View::Nodes;
                self.focus = Pane::List;
                self.reveal(i);
            }
            None => self.message = Some("this tensor's node is not in the main graph".into()),
        }
    }
}
