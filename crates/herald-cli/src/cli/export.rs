//! `herald campaign export`, `herald contacts export`, `herald suppressions export`: the
//! same CSV as the API's exports (`export::Export`), written page by page.

use super::CliError;
use crate::export::Export;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Writes the whole export to `output`, or to stdout without one; returns the rows
/// written. A file is written under a temporary name beside it and renamed at the end, so
/// an export that fails half way never leaves a file that looks complete.
pub async fn write(mut export: Export, output: Option<&Path>) -> Result<u64, CliError> {
    match output {
        None => {
            let stdout = std::io::stdout();
            while let Some(chunk) = export.next_chunk().await? {
                let written = stdout.lock().write_all(&chunk);
                match written {
                    // `herald campaign export 5 | head` stopped reading: not an error.
                    Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                        return Ok(export.rows());
                    }
                    Err(e) => return Err(CliError::from(format!("cannot write to stdout: {e}"))),
                    Ok(()) => {}
                }
            }
            let _ = stdout.lock().flush();
        }
        Some(path) => {
            let partial = partial_path(path);
            let written = async {
                let mut file = std::io::BufWriter::new(
                    std::fs::File::create(&partial).map_err(|e| cannot_write(&partial, e))?,
                );
                while let Some(chunk) = export.next_chunk().await? {
                    file.write_all(&chunk)
                        .map_err(|e| cannot_write(&partial, e))?;
                }
                file.into_inner()
                    .map_err(|e| cannot_write(&partial, e.into_error()))?
                    .sync_all()
                    .map_err(|e| cannot_write(&partial, e))?;
                std::fs::rename(&partial, path).map_err(|e| cannot_write(path, e))
            }
            .await;
            if let Err(e) = written {
                let _ = std::fs::remove_file(&partial);
                return Err(e);
            }
        }
    }
    Ok(export.rows())
}

/// `FILE.partial` beside `FILE`.
fn partial_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    path.with_file_name(name)
}

fn cannot_write(path: &Path, e: std::io::Error) -> CliError {
    CliError::from(format!(
        "cannot write {}: {e}: choose another --output path",
        path.display()
    ))
}
