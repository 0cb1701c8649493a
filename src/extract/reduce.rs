//! Failing-subgraph reduction: delta debugging (ddmin) over a model's nodes down to a minimal
//! subgraph for which a user's check (a TensorRT engine build, a converter, a script) still
//! fails.
//!
//! Every candidate is a valid standalone model: a set of original nodes, closed under their
//! constant producers (free to include), whose tensors coming from dropped nodes become typed
//! graph inputs and whose tensors read by dropped nodes (or model outputs) become graph
//! outputs. Nodes are ordered topologically, so ddmin's chunks are contiguous regions of the
//! graph. With input samples, every candidate also gets real boundary data for every sample
//! (`test_data_set_K` next to it), computed once per tensor and cached across tries: the check
//! can run the candidate on the inputs it would really see, for any number of samples.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::data::{BoundaryData, Evaluator, Samples, boundary_with, write_test_data};
use super::{Piece, build_piece, const_only_nodes, shell_quote};
use crate::error::{PareError, Result};
use crate::jobs::Progress;
use crate::model::Analysis;
use crate::model::io::{SaveOptions, save_model};

/// What one run of the check said.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub enum Verdict {
    /// The failure reproduces: the candidate is kept.
    Fails,
    Passes,
    /// Ran past the per-try timeout: treated as not reproducing.
    TimedOut,
    /// The check could not be started.
    Error(String),
}

/// One run of the check.
#[derive(Clone, Debug, Serialize)]
pub struct Outcome {
    pub verdict: Verdict,
    /// Exit code (`None`: killed by a signal or not started).
    pub code: Option<i32>,
    pub seconds: f64,
    /// The last lines of the check's stdout and stderr.
    pub output_tail: String,
}

/// Decides whether a candidate model still fails.
pub trait Oracle: Send + Sync {
    fn check(&self, candidate: &Path) -> Outcome;
    /// For the log.
    fn describe(&self) -> String;
}

/// A shell command; `{}` is replaced by the candidate's path (appended when absent), which is
/// also in `$PARE_CANDIDATE`. Non-zero exit (or death by a signal) is a failure; with
/// `fail_match`, only when the output also contains that text.
#[derive(Clone, Debug)]
pub struct ShellCheck {
    pub command: String,
    pub timeout: Duration,
    pub fail_match: Option<String>,
}

fn tail_chars(s: &str, n: usize) -> String {
    let c: Vec<char> = s.chars().collect();
    c[c.len().saturating_sub(n)..].iter().collect()
}

impl ShellCheck {
    pub fn command_for(&self, candidate: &Path) -> String {
        let q = shell_quote(&candidate.display().to_string());
        if self.command.contains("{}") {
            self.command.replace("{}", &q)
        } else {
            format!("{} {q}", self.command)
        }
    }
}

impl Oracle for ShellCheck {
    fn describe(&self) -> String {
        let m = self
            .fail_match
            .as_ref()
            .map(|m| format!(", output containing '{m}'"))
            .unwrap_or_default();
        format!(
            "`{}` fails (non-zero exit{m}; timeout {} s)",
            self.command,
            self.timeout.as_secs_f64()
        )
    }

    fn check(&self, candidate: &Path) -> Outcome {
        let start = Instant::now();
        let cmd = self.command_for(candidate);
        #[cfg(unix)]
        let mut c = {
            use std::os::unix::process::CommandExt;
            let mut c = Command::new("sh");
            c.arg("-c").arg(&cmd).process_group(0);
            c
        };
        #[cfg(not(unix))]
        let mut c = {
            let mut c = Command::new("cmd");
            c.arg("/C").arg(&cmd);
            c
        };
        c.env("PARE_CANDIDATE", candidate)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = match c.spawn() {
            Ok(ch) => ch,
            Err(e) => {
                return Outcome {
                    verdict: Verdict::Error(format!("cannot start the check: {e}")),
                    code: None,
                    seconds: 0.0,
                    output_tail: String::new(),
                };
            }
        };
        let reader = |r: Option<Box<dyn Read + Send>>| {
            std::thread::spawn(move || {
                let mut s = Vec::new();
                if let Some(mut r) = r {
                    let _ = r.read_to_end(&mut s);
                }
                String::from_utf8_lossy(&s).into_owned()
            })
        };
        let out_t = reader(
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
        );
        let err_t = reader(
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
        );
        let mut timed_out = false;
        let status = loop {
            match child.try_wait() {
                Ok(Some(st)) => break Some(st),
                Ok(None) if start.elapsed() >= self.timeout => {
                    timed_out = true;
                    #[cfg(unix)]
                    {
                        let _ = Command::new("kill")
                            .args(["-KILL", "--", &format!("-{}", child.id())])
                            .status();
                    }
                    let _ = child.kill();
                    break child.wait().ok();
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(10)),
                Err(_) => break None,
            }
        };
        let text = format!(
            "{}{}",
            out_t.join().unwrap_or_default(),
            err_t.join().unwrap_or_default()
        );
        let code = status.and_then(|s| s.code());
        let failed = status.is_some_and(|s| !s.success());
        let verdict = if timed_out {
            Verdict::TimedOut
        } else if failed
            && self
                .fail_match
                .as_ref()
                .is_none_or(|m| text.contains(m.as_str()))
        {
            Verdict::Fails
        } else {
            Verdict::Passes
        };
        Outcome {
            verdict,
            code,
            seconds: start.elapsed().as_secs_f64(),
            output_tail: tail_chars(text.trim(), 2000),
        }
    }
}

/// A check written in Rust (tests, the TUI).
pub struct FnOracle<F: Fn(&Path) -> bool + Send + Sync>(pub F);

impl<F: Fn(&Path) -> bool + Send + Sync> Oracle for FnOracle<F> {
    fn describe(&self) -> String {
        "a built-in check".into()
    }
    fn check(&self, candidate: &Path) -> Outcome {
        let t = Instant::now();
        let fails = (self.0)(candidate);
        Outcome {
            verdict: if fails {
                Verdict::Fails
            } else {
                Verdict::Passes
            },
            code: Some(i32::from(fails)),
            seconds: t.elapsed().as_secs_f64(),
            output_tail: String::new(),
        }
    }
}

/// How to reduce.
#[derive(Clone, Debug)]
pub struct ReduceOptions {
    /// Most runs of the check, the run on the original model included.
    pub max_tries: usize,
    /// Where candidates are written (each in its own `try_NNNN/` folder).
    pub work_dir: PathBuf,
    /// Keep every candidate instead of deleting it after its run.
    pub keep_candidates: bool,
    /// Input samples: every candidate gets boundary data for each of them.
    pub samples: Option<Samples>,
}

/// One try, for the log.
#[derive(Clone, Debug, Serialize)]
pub struct TryRecord {
    pub index: usize,
    /// Nodes in the candidate (constants pulled in included).
    pub nodes: usize,
    pub ops: String,
    pub verdict: Verdict,
    pub code: Option<i32>,
    pub seconds: f64,
    /// What the try was (`original`, `subset 2/4`, `complement 3/8`).
    pub step: String,
    pub note: String,
}

/// The result of a reduction.
#[derive(Clone, Debug)]
pub struct Reduced {
    /// The smallest failing candidate found.
    pub piece: Piece,
    pub tries: Vec<TryRecord>,
    /// True when ddmin finished (1-minimal: removing any one region makes the check pass).
    pub minimal: bool,
    pub stop_reason: Option<String>,
    /// Boundary data of the final piece, per sample (empty without samples).
    pub data: Vec<BoundaryData>,
    /// Output of the check on the final piece.
    pub final_output: String,
}

/// Builds the candidate made of the original top-level `nodes` plus the constant producers
/// they read. Tensors read from dropped nodes become inputs; tensors that dropped nodes read,
/// and model outputs, become outputs.
pub fn piece_from_nodes(a: &Analysis, consts: &[bool], nodes: &BTreeSet<usize>) -> Result<Piece> {
    let g = a.graph();
    let mut all = nodes.clone();
    let mut stack: Vec<usize> = nodes.iter().copied().collect();
    while let Some(i) = stack.pop() {
        for t in a.index.all_inputs(&g.node[i], i) {
            if let Some(&p) = a.index.producer.get(t)
                && consts[p]
                && all.insert(p)
            {
                stack.push(p);
            }
        }
    }
    let order: Vec<usize> = a
        .index
        .topo
        .iter()
        .copied()
        .filter(|i| all.contains(i))
        .collect();
    let produced: HashSet<&str> = order
        .iter()
        .flat_map(|&i| g.node[i].output.iter().map(String::as_str))
        .filter(|o| !o.is_empty())
        .collect();
    let mut inputs: Vec<String> = Vec::new();
    for &i in &order {
        for t in a.index.all_inputs(&g.node[i], i) {
            if !produced.contains(t)
                && !a.index.initializers.contains_key(t)
                && !inputs.iter().any(|x| x == t)
            {
                inputs.push(t.to_string());
            }
        }
    }
    let mut outputs: Vec<String> = Vec::new();
    let mut dangling: Vec<String> = Vec::new();
    for &i in order.iter().filter(|i| nodes.contains(i)) {
        for o in g.node[i].output.iter().filter(|o| !o.is_empty()) {
            let cons = a.index.consumers.get(o).map(Vec::as_slice).unwrap_or(&[]);
            let read_outside = cons.iter().any(|c| !all.contains(c));
            if a.index.outputs.contains(o) || read_outside {
                outputs.push(o.clone());
            } else if !cons.iter().any(|c| all.contains(c)) {
                dangling.push(o.clone());
            }
        }
    }
    if outputs.is_empty() {
        outputs = dangling;
    }
    if outputs.is_empty() {
        return Err(PareError::Usage("the candidate computes nothing".into()));
    }
    build_piece(a, &all, &inputs, &outputs, Vec::new())
}

struct Tester<'a> {
    a: &'a Analysis,
    consts: Vec<bool>,
    oracle: &'a dyn Oracle,
    opts: &'a ReduceOptions,
    progress: &'a dyn Progress,
    evaluators: Vec<Evaluator<'a>>,
    tries: Vec<TryRecord>,
    cache: HashMap<Vec<usize>, bool>,
    last_output: HashMap<Vec<usize>, String>,
    last: Option<Outcome>,
}

impl Tester<'_> {
    fn budget_left(&self) -> bool {
        self.tries.len() < self.opts.max_tries
    }

    fn record(&mut self, nodes: usize, ops: String, o: &Outcome, step: &str, note: String) {
        let rec = TryRecord {
            index: self.tries.len(),
            nodes,
            ops,
            verdict: o.verdict.clone(),
            code: o.code,
            seconds: o.seconds,
            step: step.to_string(),
            note,
        };
        let v = match &rec.verdict {
            Verdict::Fails => "FAILS (kept)".to_string(),
            Verdict::Passes => "passes".to_string(),
            Verdict::TimedOut => "timed out (treated as passing)".to_string(),
            Verdict::Error(e) => format!("error: {e}"),
        };
        let code = rec.code.map(|c| format!(", exit {c}")).unwrap_or_default();
        self.progress.log(&format!(
            "try {:>3}  {:<16} {:>5} nodes  {v}{code}  {:.1} s",
            rec.index, rec.step, rec.nodes, rec.seconds
        ));
        self.tries.push(rec);
        self.progress
            .step(self.tries.len() as u64, &format!("{} nodes", nodes));
    }

    /// Runs the check on the candidate made of `set`; true when it still fails.
    fn test(&mut self, set: &[usize], step: &str) -> Result<bool> {
        if let Some(&v) = self.cache.get(set) {
            return Ok(v);
        }
        self.progress.check_cancel()?;
        let nodes: BTreeSet<usize> = set.iter().copied().collect();
        let mut piece = match piece_from_nodes(self.a, &self.consts, &nodes) {
            Ok(p) => p,
            Err(_) => {
                self.cache.insert(set.to_vec(), false);
                return Ok(false);
            }
        };
        let dir = self
            .opts
            .work_dir
            .join(format!("try_{:04}", self.tries.len()));
        let path = dir.join("model.onnx");
        std::fs::create_dir_all(&dir).map_err(|source| PareError::Write {
            path: dir.clone(),
            source,
        })?;
        let mut note = String::new();
        if !self.evaluators.is_empty() {
            let mut data = Vec::new();
            for r in &mut self.evaluators {
                data.push(boundary_with(r, &piece));
            }
            if let Some(bd) = data.iter().find(|b| b.complete()) {
                let n = super::data::refine_types(&mut piece, bd);
                piece.notes.extend(n);
            }
            for (k, bd) in data.iter().enumerate() {
                write_test_data(&dir.join(format!("test_data_set_{k}")), &piece, bd)?;
                if let Some(p) = bd.problems.first() {
                    note = format!("boundary data incomplete: {p}");
                }
            }
        }
        save_model(&piece.model, &path, &SaveOptions::default())?;
        let o = self.oracle.check(&path);
        if !self.opts.keep_candidates {
            let _ = std::fs::remove_dir_all(&dir);
        }
        let fails = o.verdict == Verdict::Fails;
        self.record(piece.nodes.len(), piece.op_summary(), &o, step, note);
        self.last = Some(o.clone());
        self.cache.insert(set.to_vec(), fails);
        if fails {
            self.last_output.insert(set.to_vec(), o.output_tail);
        }
        if let Verdict::Error(e) = &o.verdict {
            return Err(PareError::Check(e.clone()));
        }
        Ok(fails)
    }
}

fn chunks(c: &[usize], n: usize) -> Vec<Vec<usize>> {
    let n = n.min(c.len()).max(1);
    let mut out = Vec::with_capacity(n);
    let mut start = 0;
    for k in 0..n {
        let end = start + (c.len() - start) / (n - k);
        out.push(c[start..end].to_vec());
        start = end;
    }
    out
}

/// Reduces the model to a minimal subgraph for which `oracle` still fails. The first try
/// runs the check on the original model file, which must fail.
pub fn reduce(
    a: &Analysis,
    oracle: &dyn Oracle,
    opts: &ReduceOptions,
    progress: &dyn Progress,
) -> Result<Reduced> {
    let consts = const_only_nodes(a);
    std::fs::create_dir_all(&opts.work_dir).map_err(|source| PareError::Write {
        path: opts.work_dir.clone(),
        source,
    })?;
    let evaluators: Vec<Evaluator> = opts
        .samples
        .as_ref()
        .map(|s| {
            s.sets
                .iter()
                .map(|set| Evaluator::new(a, set).on(s.engine))
                .collect()
        })
        .unwrap_or_default();
    let mut t = Tester {
        a,
        consts: consts.clone(),
        oracle,
        opts,
        progress,
        evaluators,
        tries: Vec::new(),
        cache: HashMap::new(),
        last_output: HashMap::new(),
        last: None,
    };
    progress.phase("reducing", Some(opts.max_tries as u64));
    progress.log(&format!("check: {}", oracle.describe()));
    let universe: Vec<usize> = a
        .index
        .topo
        .iter()
        .copied()
        .filter(|&i| !consts[i])
        .collect();
    let o = first_try(&mut t, &universe)?;
    t.cache.insert(universe.clone(), true);
    t.last_output
        .insert(universe.clone(), o.output_tail.clone());
    let (c, finished) = ddmin(&mut t, universe)?;
    let stop_reason = (!finished).then(|| format!(
        "stopped after {} tries (--max-tries); the result is the smallest failing candidate so far, not necessarily minimal",
        t.tries.len()
    ));
    let nodes: BTreeSet<usize> = c.iter().copied().collect();
    let mut piece = piece_from_nodes(a, &consts, &nodes)?;
    let mut data = Vec::new();
    let mut evaluators = std::mem::take(&mut t.evaluators);
    for r in &mut evaluators {
        data.push(boundary_with(r, &piece));
    }
    if let Some(bd) = data.iter().find(|b| b.complete()) {
        let notes = super::data::refine_types(&mut piece, bd);
        piece.notes.extend(notes);
    }
    let final_output = t.last_output.get(&c).cloned().unwrap_or_default();
    progress.event(crate::jobs::JobEvent::Finished {
        summary: format!(
            "{} nodes ({}) after {} tries",
            piece.nodes.len(),
            piece.op_summary(),
            t.tries.len()
        ),
    });
    Ok(Reduced {
        piece,
        tries: t.tries,
        minimal: finished,
        stop_reason,
        data,
        final_output,
    })
}

/// The first try: the original file as the user gave it; with input samples, the whole
/// model rebuilt like every candidate, so that it has its test data next to it too. Its
/// outcome, which must be a failure.
fn first_try(t: &mut Tester, universe: &[usize]) -> Result<Outcome> {
    let (a, oracle) = (t.a, t.oracle);
    let (o, what) = match (&a.model.path, &t.opts.samples) {
        (Some(original), None) => {
            let o = oracle.check(original);
            t.record(
                a.graph().node.len(),
                "original model".into(),
                &o,
                "original",
                String::new(),
            );
            (o, "the original model")
        }
        _ => {
            t.test(universe, "whole model")?;
            (
                t.last.clone().expect("tested"),
                "the whole model (rebuilt with its test data)",
            )
        }
    };
    match &o.verdict {
        Verdict::Fails => Ok(o),
        Verdict::Error(e) => Err(PareError::Check(e.clone())),
        v => Err(PareError::Check(format!(
            "the check does not fail on {what} ({}{}), so there is nothing to reduce: {}{}",
            match v {
                Verdict::TimedOut => "it timed out".to_string(),
                _ => "it passed".to_string(),
            },
            o.code.map(|c| format!(", exit {c}")).unwrap_or_default(),
            oracle.describe(),
            if o.output_tail.is_empty() {
                String::new()
            } else {
                format!(
                    "; its output ends: {}",
                    tail_chars(&o.output_tail.replace('\n', " "), 200)
                )
            }
        ))),
    }
}

/// Delta debugging (ddmin) from `universe`, within the try budget: the smallest failing set of
/// nodes found, and whether it is 1-minimal (false when the budget ran out first).
fn ddmin(t: &mut Tester, universe: Vec<usize>) -> Result<(Vec<usize>, bool)> {
    let mut c = universe;
    let mut n = 2usize;
    let mut finished = false;
    'outer: while c.len() >= 2 {
        let parts = chunks(&c, n);
        for (k, part) in parts.iter().enumerate() {
            if !t.budget_left() {
                break 'outer;
            }
            if t.test(part, &format!("subset {}/{}", k + 1, parts.len()))? {
                c = part.clone();
                n = 2;
                continue 'outer;
            }
        }
        if parts.len() > 2 {
            for (k, part) in parts.iter().enumerate() {
                if !t.budget_left() {
                    break 'outer;
                }
                let comp: Vec<usize> = c.iter().copied().filter(|i| !part.contains(i)).collect();
                if t.test(&comp, &format!("complement {}/{}", k + 1, parts.len()))? {
                    c = comp;
                    n = (n - 1).max(2);
                    continue 'outer;
                }
            }
        }
        if n >= c.len() {
            finished = true;
            break;
        }
        n = (n * 2).min(c.len());
    }
    if c.len() < 2 {
        finished = true;
    }
    Ok((c, finished))
}

/// The reduction log as text (`MIN.log.txt`).
pub fn render_log(a: &Analysis, oracle: &dyn Oracle, r: &Reduced) -> String {
    let mut s = String::new();
    let src = a
        .model
        .path
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    s.push_str(&format!(
        "pare reduce {src}\ncheck: {}\n\n",
        oracle.describe()
    ));
    s.push_str("try  step              nodes  verdict   exit   seconds  ops / note\n");
    for t in &r.tries {
        let v = match &t.verdict {
            Verdict::Fails => "FAILS".to_string(),
            Verdict::Passes => "passes".to_string(),
            Verdict::TimedOut => "timeout".to_string(),
            Verdict::Error(_) => "error".to_string(),
        };
        let code = t.code.map(|c| c.to_string()).unwrap_or_else(|| "-".into());
        let note = if t.note.is_empty() {
            String::new()
        } else {
            format!("  [{}]", t.note)
        };
        s.push_str(&format!(
            "{:>3}  {:<16} {:>6}  {:<8} {:>5}  {:>7.2}  {}{note}\n",
            t.index, t.step, t.nodes, v, code, t.seconds, t.ops
        ));
    }
    let g = a.graph();
    s.push_str(&format!(
        "\nresult: {} nodes ({}) of {}, after {} tries{}\n",
        r.piece.nodes.len(),
        r.piece.op_summary(),
        g.node.len(),
        r.tries.len(),
        if r.minimal { " (1-minimal)" } else { "" }
    ));
    if let Some(why) = &r.stop_reason {
        s.push_str(&format!("note: {why}\n"));
    }
    s.push_str("nodes:\n");
    for &i in &r.piece.nodes {
        s.push_str(&format!(
            "  {} ({})\n",
            g.node[i].display_name(),
            g.node[i].op_type()
        ));
    }
    s.push_str(&format!(
        "inputs: {}\noutputs: {}\n",
        r.piece.inputs.join(", "),
        r.piece.outputs.join(", ")
    ));
    if !r.final_output.is_empty() {
        s.push_str(&format!(
            "\ncheck output on the result (last lines):\n{}\n",
            r.final_output
        ));
    }
    s
}
