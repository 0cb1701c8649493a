//! The Python (onnx, onnxruntime, numpy) and the onnxruntime shared library the interop tests
//! need, found or provisioned by the tests themselves so that `cargo test --release` on a fresh
//! clone runs them instead of passing without checking anything.
//!
//! Order: `PARE_PYTHON`, the repository's `.venv` (`.ci/run` creates it), then a virtual
//! environment the tests create once under the cargo target directory
//! (`<target>/pare-test-venv`, `python3 -m venv` + `pip install onnx onnxruntime numpy`) and
//! reuse afterwards. Test binaries run concurrently, so creation is guarded by a lock directory;
//! when it cannot be provisioned the test fails with the one command that provides it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime};

const MODULES: &str = "import onnx, onnxruntime, numpy";
const PACKAGES: [&str; 3] = ["onnx", "onnxruntime", "numpy"];
/// Marker written into the venv once its packages import; its absence means "not ready".
const READY: &str = ".pare-ready";
/// A lock older than this is left over from a killed run and is taken over.
const STALE_LOCK: Duration = Duration::from_secs(20 * 60);

fn imports(python: &Path) -> bool {
    Command::new(python)
        .args(["-c", MODULES])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The cargo target directory this test binary was built into: `<target>/<profile>/deps/<exe>`,
/// else `CARGO_TARGET_DIR`, else `./target`.
fn target_dir() -> PathBuf {
    if let Ok(exe) = std::env::current_exe()
        && let Some(deps) = exe.parent()
        && deps.file_name().is_some_and(|n| n == "deps")
        && let Some(target) = deps.parent().and_then(Path::parent)
    {
        return target.to_path_buf();
    }
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
}

/// Where the tests keep their own virtual environment.
pub fn test_venv() -> PathBuf {
    target_dir().join("pare-test-venv")
}

/// The one command that provides what the interop tests need.
fn provide_command() -> String {
    let v = test_venv();
    format!(
        "python3 -m venv {v} && {v}/bin/python -m pip install {p} && touch {v}/{READY}",
        v = v.display(),
        p = PACKAGES.join(" ")
    )
}

fn run(cmd: &mut Command) -> Result<(), String> {
    let out = cmd
        .output()
        .map_err(|e| format!("{:?}: {e}", cmd.get_program()))?;
    if out.status.success() {
        return Ok(());
    }
    let err = String::from_utf8_lossy(&out.stderr);
    let tail: Vec<&str> = err.lines().rev().take(8).collect();
    let tail: Vec<&str> = tail.into_iter().rev().collect();
    Err(format!(
        "{cmd:?} failed ({}):\n{}",
        out.status,
        tail.join("\n")
    ))
}

/// Creates the venv at `venv` (any half-made one is removed first) and installs the packages.
fn create(venv: &Path) -> Result<(), String> {
    if venv.exists() {
        std::fs::remove_dir_all(venv).map_err(|e| format!("{}: {e}", venv.display()))?;
    }
    let _ = writeln!(
        std::io::stderr(),
        "interop: creating {} (python3 -m venv + pip install {}; first use only)",
        venv.display(),
        PACKAGES.join(" ")
    );
    run(Command::new("python3").arg("-m").arg("venv").arg(venv))?;
    let py = venv.join("bin/python");
    run(Command::new(&py)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
        ])
        .args(PACKAGES))?;
    if !imports(&py) {
        return Err(format!("{} cannot `{MODULES}` after pip", py.display()));
    }
    std::fs::write(venv.join(READY), b"").map_err(|e| format!("{}: {e}", venv.display()))
}

/// Holds the cross-process lock directory while alive.
struct Lock(PathBuf);

impl Drop for Lock {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Takes the lock directory `path`, waiting while another test binary holds it.
fn lock(path: &Path) -> Result<Lock, String> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
    }
    let start = Instant::now();
    loop {
        match std::fs::create_dir(path) {
            Ok(()) => {
                let _ = std::fs::write(path.join("pid"), std::process::id().to_string());
                return Ok(Lock(path.to_path_buf()));
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let age = std::fs::metadata(path)
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| SystemTime::now().duration_since(t).ok());
                // The holder is gone (killed mid-install) or has held it implausibly long.
                let holder_gone = std::fs::read_to_string(path.join("pid"))
                    .ok()
                    .and_then(|p| p.trim().parse::<u32>().ok())
                    .is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists());
                if holder_gone || age.is_some_and(|a| a > STALE_LOCK) {
                    let _ = std::fs::remove_dir_all(path);
                    continue;
                }
                if start.elapsed() > STALE_LOCK {
                    return Err(format!("{} is held for too long", path.display()));
                }
                std::thread::sleep(Duration::from_millis(500));
            }
            Err(e) => return Err(format!("{}: {e}", path.display())),
        }
    }
}

/// The tests' own venv, created on first use; ready once its marker exists.
fn provisioned() -> Result<PathBuf, String> {
    let venv = test_venv();
    let py = venv.join("bin/python");
    if venv.join(READY).is_file() && imports(&py) {
        return Ok(py);
    }
    let _guard = lock(&venv.with_extension("lock"))?;
    // Another test binary may have finished it while this one waited.
    if venv.join(READY).is_file() && imports(&py) {
        return Ok(py);
    }
    create(&venv)?;
    Ok(py)
}

fn find() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("PARE_PYTHON") {
        let p = PathBuf::from(p);
        return if imports(&p) {
            Ok(p)
        } else {
            Err(format!("PARE_PYTHON={} cannot `{MODULES}`", p.display()))
        };
    }
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    if imports(&repo) {
        return Ok(repo);
    }
    provisioned()
}

/// The interop Python, or why there is none: for a suite that skips, saying why, instead of
/// failing when it cannot be provided.
pub fn try_python() -> Result<PathBuf, String> {
    static PY: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    PY.get_or_init(find).clone()
}

/// The Python with onnx, onnxruntime and numpy for the interop suite `suite`; found or created
/// once per process. Fails the calling test, naming the command that provides it, when there
/// is none.
pub fn python(suite: &str) -> PathBuf {
    match try_python() {
        Ok(p) => p,
        Err(why) => panic!(
            "{suite}: no Python with onnx, onnxruntime and numpy: {why}\n\
             provide it with:\n  {}\n(or set PARE_PYTHON to such a Python)",
            provide_command()
        ),
    }
}

/// Records, outside the test harness's output capture, that test `what` checked pare's output
/// against onnxruntime: `grep -c '^interop: ran against onnxruntime'` on a test log counts them.
pub fn ran_against_onnxruntime(what: &str) {
    let _ = writeln!(
        std::io::stderr(),
        "interop: ran against onnxruntime: {what}"
    );
}

/// onnxruntime's shared library: `PARE_ORT_LIB`, else the one in the interop Python's
/// `onnxruntime/capi/`.
pub fn ort_lib() -> PathBuf {
    if let Some(p) = std::env::var_os("PARE_ORT_LIB") {
        return PathBuf::from(p);
    }
    let py = python("onnxruntime library");
    let out = Command::new(&py)
        .args([
            "-c",
            "import onnxruntime, os; print(os.path.dirname(onnxruntime.__file__))",
        ])
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", py.display()));
    let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()).join("capi");
    let mut libs: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    libs.retain(|p| {
        p.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("libonnxruntime.so"))
    });
    libs.sort();
    libs.pop().unwrap_or_else(|| {
        panic!(
            "no libonnxruntime.so* in {} (from {}); provide it with:\n  {}",
            dir.display(),
            py.display(),
            provide_command()
        )
    })
}

/// Runs test `name` of this test binary where onnxruntime's library loads. Returns true when it
/// loads in this process (the caller runs its body here); otherwise runs the test again in a
/// child process of this binary with `PARE_ORT_LIB` set to [`ort_lib`], fails when the child
/// fails, and returns false. A child that cannot load the library fails rather than skips.
pub fn with_onnxruntime(name: &str) -> bool {
    const CHILD: &str = "PARE_TEST_ORT_CHILD";
    let why = match pare::runtime::ort_available() {
        Ok(()) => return true,
        Err(why) => why,
    };
    assert!(
        std::env::var_os(CHILD).is_none(),
        "{name}: onnxruntime's library does not load with PARE_ORT_LIB={:?}: {why}",
        std::env::var_os("PARE_ORT_LIB")
    );
    let lib = ort_lib();
    let exe = std::env::current_exe().expect("test executable");
    let out = Command::new(exe)
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env("PARE_ORT_LIB", &lib)
        .env(CHILD, "1")
        .output()
        .expect("rerun the test with PARE_ORT_LIB");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "{name} with PARE_ORT_LIB={}:\n{stdout}\n{stderr}",
        lib.display()
    );
    for line in stderr.lines().filter(|l| l.starts_with("interop: ")) {
        let _ = writeln!(std::io::stderr(), "{line}");
    }
    false
}
