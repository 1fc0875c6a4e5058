//! Durable file writes: temp file, fsync, rename, fsync the directory.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

fn temp_path(path: &Path) -> PathBuf {
    let mut name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(format!(".tmp-{}", std::process::id()));
    path.with_file_name(name)
}

fn open_new(path: &Path, private: bool) -> std::io::Result<File> {
    let mut options = OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = private;
    options.open(path)
}

/// A file written to a temporary name; [`StagedFile::commit`] moves it into place.
/// Dropped without commit, it is removed — so a bundle whose record was not
/// committed never appears under its final name.
pub struct StagedFile {
    temp: PathBuf,
    target: PathBuf,
    done: bool,
}

impl StagedFile {
    /// Writes and fsyncs `bytes` next to `target`.
    pub fn write(target: &Path, bytes: &[u8], private: bool) -> Result<Self> {
        let temp = temp_path(target);
        let mut file = open_new(&temp, private).map_err(Error::io("cannot write", &temp))?;
        let staged = StagedFile {
            temp: temp.clone(),
            target: target.to_owned(),
            done: false,
        };
        file.write_all(bytes)
            .map_err(Error::io("cannot write", &temp))?;
        file.sync_all().map_err(Error::io("cannot sync", &temp))?;
        Ok(staged)
    }

    /// Renames into place and syncs the directory.
    pub fn commit(mut self) -> Result<()> {
        fs::rename(&self.temp, &self.target)
            .map_err(Error::io("cannot rename into", &self.target))?;
        self.done = true;
        sync_parent(&self.target);
        Ok(())
    }
}

impl Drop for StagedFile {
    fn drop(&mut self) {
        if !self.done {
            let _ = fs::remove_file(&self.temp);
        }
    }
}

fn sync_parent(path: &Path) {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if let Ok(dir) = File::open(parent) {
        let _ = dir.sync_all();
    }
}

/// Atomically writes a file readable by its owner only.
pub fn write_private_file(path: &Path, bytes: &[u8]) -> Result<()> {
    StagedFile::write(path, bytes, true)?.commit()
}

/// Atomically writes a file with default permissions.
pub fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    StagedFile::write(path, bytes, false)?.commit()
}
