//! Log lines captured in memory, each parsed as JSON.

use std::sync::{Arc, Mutex};
use tracing_subscriber::fmt::MakeWriter;

/// Collects what a log layer writes; clones share one buffer.
#[derive(Clone, Debug, Default)]
pub struct LogBuffer(Arc<Mutex<Vec<u8>>>);

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
    pub fn json_lines(&self) -> Vec<serde_json::Value> {
        let bytes = self.0.lock().unwrap();
        String::from_utf8_lossy(&bytes)
            .lines()
            .map(|line| serde_json::from_str(line).expect("each line is JSON"))
            .collect()
    }

    /// The lines whose `message` is `message`.
    pub fn with_message(&self, message: &str) -> Vec<serde_json::Value> {
        self.json_lines()
            .into_iter()
            .filter(|line| line["message"] == message)
            .collect()
    }
}
