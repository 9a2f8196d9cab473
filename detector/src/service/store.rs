//! The findings store: one JSON line per finding, appended and fsynced
//! before the finding counts as emitted, rotated by size.
//!
//! A crash can only tear the last line (appends are sequential and each
//! is synced before the next); on open such a tail is moved to a
//! `.torn-N` file next to the store and reported, so it is neither lost
//! nor read as a finding. Lines carry the finding's stable id: a finding
//! already in the store (a replay restarted) is not written twice.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create the findings directory {path}: {source}")]
    CreateDir { path: PathBuf, source: io::Error },
    #[error("cannot open the findings file {path}: {source}")]
    Open { path: PathBuf, source: io::Error },
    #[error("cannot read the findings file {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("cannot set aside the torn end of {path} in {aside}: {source}")]
    SetAside {
        path: PathBuf,
        aside: PathBuf,
        source: io::Error,
    },
    #[error("cannot write the findings file {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("cannot rotate the findings file {path}: {source}")]
    Rotate { path: PathBuf, source: io::Error },
}

/// What opening found wrong with the file as it was left.
#[derive(Debug, PartialEq, Eq)]
pub enum Repair {
    /// The last line had no end (a write cut short): its bytes were moved.
    TornTail {
        bytes: u64,
        offset: u64,
        aside: PathBuf,
    },
    /// A complete line that is not a stored finding; left in place (the
    /// file is not rewritten), skipped by readers, reported by them too.
    BadLine { line: usize, error: String },
}

/// What an append did.
#[derive(Debug, PartialEq, Eq)]
pub enum Appended {
    Stored,
    /// A finding with this id is already stored.
    Duplicate,
}

pub struct Store {
    path: PathBuf,
    file: File,
    size: u64,
    rotate_size: u64,
    keep: u32,
    ids: HashSet<String>,
}

impl Store {
    /// Opens (or creates) the store at `path`, repairing a torn end.
    pub fn open(
        path: &Path,
        rotate_size: u64,
        keep: u32,
    ) -> Result<(Self, Vec<Repair>), StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
                path: dir.to_owned(),
                source,
            })?;
        }
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
            .map_err(|source| StoreError::Open {
                path: path.to_owned(),
                source,
            })?;
        let mut repairs = Vec::new();
        let mut ids = HashSet::new();
        let size = scan(path, &mut file, &mut ids, &mut repairs)?;
        for rotated in rotated_files(path) {
            // Ids only: rotated files were checked when they were current.
            let _ = read_lines(&rotated, |_, _, value| {
                if let Some(id) = id_of(&value) {
                    ids.insert(id.to_owned());
                }
            });
        }
        sync_dir(path);
        Ok((
            Self {
                path: path.to_owned(),
                file,
                size,
                rotate_size,
                keep,
                ids,
            },
            repairs,
        ))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Findings stored (in this file and the rotated ones).
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Appends `line` (a finding as JSON, with its `id`) and fsyncs it.
    pub fn append(&mut self, line: &Value) -> Result<Appended, StoreError> {
        let id = id_of(line).map(str::to_owned);
        if let Some(id) = &id
            && self.ids.contains(id)
        {
            return Ok(Appended::Duplicate);
        }
        let mut text = line.to_string();
        text.push('\n');
        if self.size > 0 && self.size + text.len() as u64 > self.rotate_size {
            self.rotate()?;
        }
        let write_err = |source| StoreError::Write {
            path: self.path.clone(),
            source,
        };
        // One write call per line: a crash leaves a prefix of it at most.
        self.file.write_all(text.as_bytes()).map_err(write_err)?;
        self.file.sync_data().map_err(write_err)?;
        self.size += text.len() as u64;
        if let Some(id) = id {
            self.ids.insert(id);
        }
        Ok(Appended::Stored)
    }

    /// `path` becomes `path.1`, `path.1` becomes `path.2`...; the oldest
    /// beyond `keep` is deleted; a new empty `path` is started.
    fn rotate(&mut self) -> Result<(), StoreError> {
        let err = |source| StoreError::Rotate {
            path: self.path.clone(),
            source,
        };
        let nth = |n: u32| rotated_name(&self.path, n);
        let oldest = nth(self.keep);
        let dropped = oldest.exists();
        if dropped {
            fs::remove_file(&oldest).map_err(err)?;
        }
        for n in (1..self.keep).rev() {
            if nth(n).exists() {
                fs::rename(nth(n), nth(n + 1)).map_err(err)?;
            }
        }
        fs::rename(&self.path, nth(1)).map_err(err)?;
        self.file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&self.path)
            .map_err(err)?;
        sync_dir(&self.path);
        self.size = 0;
        if dropped {
            // Forget the ids of the deleted file: rebuild from what is kept.
            self.ids.clear();
            for file in rotated_files(&self.path) {
                let _ = read_lines(&file, |_, _, value| {
                    if let Some(id) = id_of(&value) {
                        self.ids.insert(id.to_owned());
                    }
                });
            }
        }
        Ok(())
    }
}

fn id_of(value: &Value) -> Option<&str> {
    value.get("id").and_then(Value::as_str)
}

/// Reads the current file: collects ids, reports bad lines, and moves a
/// torn tail aside. Returns the size the file has afterwards.
fn scan(
    path: &Path,
    file: &mut File,
    ids: &mut HashSet<String>,
    repairs: &mut Vec<Repair>,
) -> Result<u64, StoreError> {
    let read_err = |source| StoreError::Read {
        path: path.to_owned(),
        source,
    };
    let mut bytes = Vec::new();
    file.seek(SeekFrom::Start(0)).map_err(read_err)?;
    file.read_to_end(&mut bytes).map_err(read_err)?;
    let complete = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    for (i, line) in bytes[..complete].split(|&b| b == b'\n').enumerate() {
        if line.is_empty() {
            continue;
        }
        match serde_json::from_slice::<Value>(line) {
            Ok(value) if id_of(&value).is_some() => {
                ids.insert(id_of(&value).unwrap_or_default().to_owned());
            }
            Ok(_) => repairs.push(Repair::BadLine {
                line: i + 1,
                error: "not a stored finding (no id)".into(),
            }),
            Err(e) => repairs.push(Repair::BadLine {
                line: i + 1,
                error: e.to_string(),
            }),
        }
    }
    if complete == bytes.len() {
        return Ok(bytes.len() as u64);
    }
    let tail = &bytes[complete..];
    let aside = aside_name(path);
    let set_aside = |source| StoreError::SetAside {
        path: path.to_owned(),
        aside: aside.clone(),
        source,
    };
    let mut out = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&aside)
        .map_err(set_aside)?;
    out.write_all(tail).map_err(set_aside)?;
    out.sync_all().map_err(set_aside)?;
    file.set_len(complete as u64).map_err(set_aside)?;
    file.sync_all().map_err(set_aside)?;
    repairs.push(Repair::TornTail {
        bytes: tail.len() as u64,
        offset: complete as u64,
        aside,
    });
    Ok(complete as u64)
}

/// A free `PATH.torn-N` name.
fn aside_name(path: &Path) -> PathBuf {
    (1..)
        .map(|n| {
            let mut name = path.as_os_str().to_owned();
            name.push(format!(".torn-{n}"));
            PathBuf::from(name)
        })
        .find(|p| !p.exists())
        .unwrap_or_else(|| path.with_extension("torn"))
}

fn rotated_name(path: &Path, n: u32) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

/// The rotated files of `path` that exist, oldest first.
pub fn rotated_files(path: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = (1..)
        .map(|n| rotated_name(path, n))
        .take_while(|p| p.exists())
        .collect();
    files.reverse();
    files
}

/// Makes a rename or creation in `path`'s directory durable.
fn sync_dir(path: &Path) {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

/// A problem met while reading a findings file.
#[derive(Debug)]
pub struct LineProblem {
    pub file: PathBuf,
    pub line: usize,
    /// The line is the last and has no end: a write cut short.
    pub torn: bool,
    pub error: String,
}

/// Calls `each` with every stored finding of `path` (line number, the line
/// as stored, its value); returns the lines that are not findings.
pub fn read_lines(
    path: &Path,
    mut each: impl FnMut(usize, &str, Value),
) -> io::Result<Vec<LineProblem>> {
    let mut reader = BufReader::new(File::open(path)?);
    let mut problems = Vec::new();
    let mut buf = Vec::new();
    let mut number = 0;
    loop {
        buf.clear();
        if reader.read_until(b'\n', &mut buf)? == 0 {
            break;
        }
        number += 1;
        let torn = buf.last() != Some(&b'\n');
        let text = String::from_utf8_lossy(&buf);
        if text.trim().is_empty() {
            continue;
        }
        let problem = |error: String| LineProblem {
            file: path.to_owned(),
            line: number,
            torn,
            error,
        };
        if torn {
            problems.push(problem(format!(
                "{} bytes without an end of line",
                buf.len()
            )));
            continue;
        }
        match serde_json::from_str::<Value>(&text) {
            Ok(value) if id_of(&value).is_some() => each(number, text.trim_end(), value),
            Ok(_) => problems.push(problem("not a stored finding (no id)".into())),
            Err(e) => problems.push(problem(e.to_string())),
        }
    }
    Ok(problems)
}

/// Whether a findings file could be created or appended at `path`,
/// without creating anything: the reason when not.
pub fn check_writable(path: &Path) -> Result<(), String> {
    if path.is_dir() {
        return Err(format!("{} is a directory", path.display()));
    }
    if path.exists() {
        return access_w(path).map_err(|e| format!("cannot write {}: {e}", path.display()));
    }
    // The nearest existing ancestor must be a directory we may write.
    let mut dir = path.parent();
    while let Some(d) = dir {
        let d = if d.as_os_str().is_empty() {
            Path::new(".")
        } else {
            d
        };
        if d.exists() {
            if !d.is_dir() {
                return Err(format!(
                    "cannot create {}: {} is not a directory",
                    path.display(),
                    d.display()
                ));
            }
            return access_w(d)
                .map_err(|e| format!("cannot create {} in {}: {e}", path.display(), d.display()));
        }
        dir = d.parent();
    }
    Ok(())
}

/// access(2) with W_OK: honours read-only mounts even for root.
fn access_w(path: &Path) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt as _;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))?;
    // SAFETY: a valid NUL-terminated path; access only reads it.
    if unsafe { libc::access(c.as_ptr(), libc::W_OK) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests;
