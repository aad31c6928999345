//! Log lines to stdout through a writer thread that only a line finding it
//! idle wakes: awake, it writes the queue in one `write`, then lets the next
//! lines gather for a while. tracing-appender's writer was woken by nearly
//! every line at low load, which cost more CPU than the line (BENCHMARKS.md).

use std::{
    io::{self, Write},
    sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError},
    thread::JoinHandle,
    time::Duration,
};
use tracing_subscriber::fmt::MakeWriter;

const GATHER: Duration = Duration::from_millis(10);

#[derive(Default)]
struct Queue {
    lines: Vec<u8>,
    /// The writer looks again without being woken.
    awake: bool,
    closed: bool,
}

#[derive(Default)]
struct Shared {
    queue: Mutex<Queue>,
    /// Lines for an idle writer, room in a full queue, the close.
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn wait<'a>(&self, queue: MutexGuard<'a, Queue>) -> MutexGuard<'a, Queue> {
        self.changed
            .wait(queue)
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// What the fmt layer writes each line to, whole; past `max_bytes` queued, it waits.
pub(super) struct Lines(Arc<Shared>, usize);

/// Dropped, it stops the writer once the queued lines are written; later ones are lost.
pub(super) struct Guard(Arc<Shared>, Option<JoinHandle<()>>);

/// Starts the writer thread, writing to `out`.
pub(super) fn spawn(
    out: impl Write + Send + 'static,
    max_bytes: usize,
) -> io::Result<(Lines, Guard)> {
    let shared = Arc::new(Shared::default());
    let writer = Arc::clone(&shared);
    let thread = std::thread::Builder::new().name("log-writer".into());
    let thread = thread.spawn(move || write_out(&writer, out))?;
    Ok((
        Lines(Arc::clone(&shared), max_bytes),
        Guard(shared, Some(thread)),
    ))
}

fn write_out(shared: &Shared, mut out: impl Write) {
    let mut batch = Vec::new();
    loop {
        let closed = {
            let mut queue = shared.lock();
            while queue.lines.is_empty() && !queue.closed {
                queue.awake = false;
                queue = shared.wait(queue);
            }
            std::mem::swap(&mut queue.lines, &mut batch);
            shared.changed.notify_all();
            queue.closed
        };
        // A failed write (stdout closed) loses these lines, as it would any.
        let _ = out.write_all(&batch).and_then(|()| out.flush());
        batch.clear();
        if closed {
            return;
        }
        std::thread::sleep(GATHER);
    }
}

impl Write for &Lines {
    fn write(&mut self, line: &[u8]) -> io::Result<usize> {
        let Lines(shared, max_bytes) = self;
        let mut queue = shared.lock();
        while queue.lines.len() >= *max_bytes && !queue.closed {
            queue = shared.wait(queue);
        }
        if !queue.closed {
            queue.lines.extend_from_slice(line);
            if !queue.awake {
                queue.awake = true;
                shared.changed.notify_all();
            }
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Lines {
    type Writer = &'a Lines;

    fn make_writer(&'a self) -> Self::Writer {
        self
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.0.lock().closed = true;
        self.0.changed.notify_all();
        if let Some(thread) = self.1.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::{
        sync::mpsc,
        time::{Duration, Instant},
    };

    /// Everything written, shared with the test.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl Write for Sink {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Sink {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    fn line(lines: &Lines, text: &str) {
        let mut writer = lines.make_writer();
        writer.write_all(text.as_bytes()).unwrap();
    }

    #[test]
    fn every_line_of_every_thread_is_written_whole_and_in_order_by_the_drop() {
        let sink = Sink::default();
        let (lines, guard) = spawn(sink.clone(), 1 << 10).unwrap();
        let lines = Arc::new(lines);
        let threads: Vec<_> = (0..4)
            .map(|thread| {
                let lines = Arc::clone(&lines);
                std::thread::spawn(move || {
                    for n in 0..5_000 {
                        line(&lines, &format!("{thread} {n}\n"));
                    }
                })
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        drop(guard);
        let text = sink.text();
        let mut next = [0; 4];
        for written in text.lines() {
            let (thread, n) = written.split_once(' ').unwrap();
            let thread: usize = thread.parse().unwrap();
            assert_eq!(n.parse::<usize>().unwrap(), next[thread], "{written}");
            next[thread] += 1;
        }
        assert_eq!(next, [5_000; 4]);
    }

    #[test]
    fn a_line_reaching_an_idle_writer_wakes_it() {
        let sink = Sink::default();
        let (lines, _guard) = spawn(sink.clone(), 1 << 10).unwrap();
        for text in ["first\n", "second, once the writer sleeps\n"] {
            line(&lines, text);
            let started = Instant::now();
            while !sink.text().ends_with(text) {
                assert!(
                    started.elapsed() < Duration::from_secs(5),
                    "{text} never written"
                );
                std::thread::sleep(Duration::from_millis(5));
            }
            // Longer than GATHER: the writer is idle again.
            std::thread::sleep(GATHER * 3);
        }
    }

    #[test]
    fn a_full_queue_makes_a_line_wait_instead_of_dropping_it() {
        /// Holds each write until the test lets it through (or a failed test gave up).
        struct Gate(mpsc::Receiver<()>, Sink);
        impl Write for Gate {
            fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
                let _ = self.0.recv_timeout(Duration::from_secs(5));
                self.1.write(bytes)
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let (open, gate) = mpsc::channel();
        let sink = Sink::default();
        let (lines, guard) = spawn(Gate(gate, sink.clone()), "line 0\n".len()).unwrap();
        let (done, finished) = mpsc::channel();
        let producer = std::thread::spawn(move || {
            // The writer holds the first, the second fills the queue: the third waits.
            for n in 0..3 {
                line(&lines, &format!("line {n}\n"));
            }
            done.send(()).unwrap();
            lines
        });
        let waited = finished.recv_timeout(Duration::from_millis(300));
        assert!(waited.is_err(), "the third line did not wait for room");
        for _ in 0..3 {
            open.send(()).unwrap();
        }
        finished.recv_timeout(Duration::from_secs(5)).unwrap();
        drop(producer.join().unwrap());
        drop(guard);
        assert_eq!(sink.text(), "line 0\nline 1\nline 2\n");
    }
}
