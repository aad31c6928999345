//! What this crate's unit tests share: log lines captured in memory.

use std::sync::{Arc, Mutex};
use tracing_subscriber::fmt::MakeWriter;

/// Collects what a log layer writes; clones share one buffer.
#[derive(Clone, Debug, Default)]
pub(crate) struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogBuffer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'w> MakeWriter<'w> for LogBuffer {
    type Writer = LogBuffer;

    fn make_writer(&'w self) -> Self::Writer {
        self.clone()
    }
}

impl LogBuffer {
    /// Every line written so far, each parsed as JSON.
    pub(crate) fn json_lines(&self) -> Vec<serde_json::Value> {
        let bytes = self.0.lock().unwrap();
        String::from_utf8_lossy(&bytes)
            .lines()
            .map(|line| serde_json::from_str(line).expect("each line is JSON"))
            .collect()
    }
}
