//! A bounded, on-disk FIFO of InfluxDB line-protocol lines, for while the database is away.
//!
//! Lines go into numbered segment files (`seg-00000000000000000042.lp`) of at most
//! `segment_lines` lines each; the oldest segment is sent first and deleted once the database
//! took it, so points arrive in order. Each push is flushed to the disk before it returns. When
//! the buffer holds more than `max_points` lines, the oldest segments are dropped and counted.
//! A line cut short by a crash is cut off when the buffer is opened again.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Segment {
    seq: u64,
    lines: u64,
}

/// See the module documentation.
#[derive(Debug)]
pub struct DiskBuffer {
    dir: PathBuf,
    segments: VecDeque<Segment>,
    total: u64,
    max_points: u64,
    segment_lines: u64,
    dropped: u64,
}

fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("seg-{seq:020}.lp"))
}

impl DiskBuffer {
    /// Opens (or creates) the buffer in `dir`, counting what an earlier run left there.
    pub fn open(dir: impl Into<PathBuf>, max_points: u64, segment_lines: u64) -> io::Result<Self> {
        let dir = dir.into();
        fs::create_dir_all(&dir)?;
        let mut seqs: Vec<u64> = fs::read_dir(&dir)?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let seq: u64 = name
                    .strip_prefix("seg-")?
                    .strip_suffix(".lp")?
                    .parse()
                    .ok()?;
                // Only our own names: `seg-1.lp` or `seg-+1.lp` are someone else's files.
                (segment_path(&dir, seq).file_name()? == e.file_name().as_os_str()).then_some(seq)
            })
            .collect();
        seqs.sort_unstable();
        let mut segments = VecDeque::with_capacity(seqs.len());
        let mut total = 0;
        for seq in seqs {
            let path = segment_path(&dir, seq);
            // One unreadable segment is skipped with a warning; it must not stop the
            // controller from starting.
            let lines = match repair_and_count(&path) {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(file = %path.display(), error = %e, "time-series segment unreadable; skipped");
                    continue;
                }
            };
            if lines == 0 {
                fs::remove_file(&path)?;
                continue;
            }
            total += lines;
            segments.push_back(Segment { seq, lines });
        }
        let mut buffer = DiskBuffer {
            dir,
            segments,
            total,
            max_points: max_points.max(1),
            segment_lines: segment_lines.clamp(1, max_points.max(1)),
            dropped: 0,
        };
        buffer.enforce_bound()?;
        Ok(buffer)
    }

    /// Lines waiting.
    pub fn len(&self) -> u64 {
        self.total
    }

    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// Lines dropped (oldest first) because the bound was reached, since opening.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Appends lines at the end, durably: all of them or, on an error (a full disk), none,
    /// with every segment file cut back to where it was, so no half line is left to glue onto
    /// the next push and the caller can keep the lines and try again without duplicates.
    pub fn push(&mut self, lines: &[String]) -> io::Result<()> {
        let (segments, total) = (self.segments.clone(), self.total);
        let mut touched = Vec::new();
        if let Err(e) = self.append(lines, &mut touched) {
            for (path, len) in touched {
                let undone = if len == 0 {
                    fs::remove_file(&path)
                } else {
                    OpenOptions::new()
                        .write(true)
                        .open(&path)
                        .and_then(|f| f.set_len(len).and_then(|()| f.sync_data()))
                };
                if let Err(u) = undone {
                    tracing::error!(file = %path.display(), error = %u, "could not undo a failed write");
                }
            }
            self.segments = segments;
            self.total = total;
            return Err(e);
        }
        self.enforce_bound()
    }

    fn append(&mut self, lines: &[String], touched: &mut Vec<(PathBuf, u64)>) -> io::Result<()> {
        let mut rest = lines;
        while !rest.is_empty() {
            let room = match self.segments.back() {
                Some(s) if s.lines < self.segment_lines => self.segment_lines - s.lines,
                _ => {
                    let seq = self.segments.back().map_or(0, |s| s.seq + 1);
                    self.segments.push_back(Segment { seq, lines: 0 });
                    self.segment_lines
                }
            };
            let take = usize::try_from(room).unwrap_or(usize::MAX).min(rest.len());
            let (now, later) = rest.split_at(take);
            let Some(last) = self.segments.back_mut() else {
                break;
            };
            let path = segment_path(&self.dir, last.seq);
            let mut file = OpenOptions::new().create(true).append(true).open(&path)?;
            touched.push((path, file.metadata()?.len()));
            let mut text = String::with_capacity(now.iter().map(|l| l.len() + 1).sum());
            for line in now {
                // A newline inside a line would split it into two points.
                text.push_str(&line.replace('\n', " "));
                text.push('\n');
            }
            file.write_all(text.as_bytes())?;
            file.sync_data()?;
            last.lines += now.len() as u64;
            self.total += now.len() as u64;
            rest = later;
        }
        Ok(())
    }

    /// The oldest segment: its number and its lines, ready to send.
    pub fn oldest(&self) -> io::Result<Option<(u64, String)>> {
        match self.segments.front() {
            None => Ok(None),
            // Bytes that are not UTF-8 (a damaged disk) are replaced rather than refused: the
            // database then refuses at most those lines, and the segments behind still flow.
            // A segment someone deleted reads as empty, so the caller moves past it.
            Some(s) => match fs::read(segment_path(&self.dir, s.seq)) {
                Ok(bytes) => Ok(Some((s.seq, String::from_utf8_lossy(&bytes).into_owned()))),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Some((s.seq, String::new()))),
                Err(e) => Err(e),
            },
        }
    }

    /// Forgets the oldest segment once the database has taken it.
    pub fn remove_oldest(&mut self, seq: u64) -> io::Result<()> {
        if let Some(front) = self.segments.front().copied()
            && front.seq == seq
        {
            match fs::remove_file(segment_path(&self.dir, seq)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
            self.segments.pop_front();
            self.total -= front.lines;
        }
        Ok(())
    }

    fn enforce_bound(&mut self) -> io::Result<()> {
        while self.total > self.max_points && self.segments.len() > 1 {
            if let Some(old) = self.segments.pop_front() {
                fs::remove_file(segment_path(&self.dir, old.seq))?;
                self.total -= old.lines;
                self.dropped += old.lines;
                tracing::warn!(
                    points = old.lines,
                    "time-series buffer full: dropped the oldest points"
                );
            }
        }
        Ok(())
    }
}

/// Counts whole lines, cutting off a last line that a crash left without its newline.
fn repair_and_count(path: &Path) -> io::Result<u64> {
    let mut lines = 0u64;
    let mut good_len = 0u64;
    let mut reader = BufReader::new(File::open(path)?);
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = reader.read_until(b'\n', &mut line)?;
        if n == 0 {
            break;
        }
        if line.last() == Some(&b'\n') {
            lines += 1;
            good_len += n as u64;
        } else {
            break;
        }
    }
    let len = fs::metadata(path)?.len();
    if len != good_len {
        OpenOptions::new()
            .write(true)
            .open(path)?
            .set_len(good_len)?;
    }
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(from: u64, n: u64) -> Vec<String> {
        (from..from + n).map(|i| format!("m v={i} {i}")).collect()
    }

    fn drain(b: &mut DiskBuffer) -> Vec<String> {
        let mut out = Vec::new();
        while let Some((seq, text)) = b.oldest().unwrap() {
            out.extend(text.lines().map(str::to_owned));
            b.remove_oldest(seq).unwrap();
        }
        out
    }

    #[test]
    fn lines_come_out_in_the_order_they_went_in_across_segments_and_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = DiskBuffer::open(dir.path(), 1000, 7).unwrap();
        b.push(&lines(0, 10)).unwrap();
        b.push(&lines(10, 5)).unwrap();
        drop(b);
        let mut b = DiskBuffer::open(dir.path(), 1000, 7).unwrap();
        assert_eq!(b.len(), 15);
        b.push(&lines(15, 20)).unwrap();
        assert_eq!(drain(&mut b), lines(0, 35));
        assert!(b.is_empty());
    }

    #[test]
    fn a_push_that_fails_midway_leaves_nothing_behind_and_can_be_retried() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = DiskBuffer::open(dir.path(), 1000, 2).unwrap();
        b.push(&lines(0, 1)).unwrap();
        // The second segment cannot be written (its path is taken by a folder): the first
        // gets one line before the failure, which must be undone.
        let blocker = segment_path(dir.path(), 1);
        fs::create_dir(&blocker).unwrap();
        assert!(b.push(&lines(1, 3)).is_err());
        assert_eq!(b.len(), 1);
        let first = fs::read_to_string(segment_path(dir.path(), 0)).unwrap();
        assert_eq!(first, "m v=0 0\n", "no half-written push left in the file");
        fs::remove_dir(&blocker).unwrap();
        b.push(&lines(1, 3)).unwrap();
        assert_eq!(drain(&mut b), lines(0, 4), "in order, once each");
    }

    #[test]
    fn stray_files_and_damaged_bytes_never_stop_the_buffer() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("seg-1.lp"), "not ours\n").unwrap();
        fs::write(segment_path(dir.path(), 5), b"m v=1 1\n\xff\xfe v=2 2\n").unwrap();
        let mut b = DiskBuffer::open(dir.path(), 1000, 10).unwrap();
        assert_eq!(b.len(), 2, "only our segment counts");
        let (_, text) = b.oldest().unwrap().unwrap();
        assert!(text.starts_with("m v=1 1\n"), "{text:?}");
        b.push(&lines(10, 1)).unwrap();
        let out = drain(&mut b);
        assert_eq!(out.last().map(String::as_str), Some("m v=10 10"));
        assert!(
            dir.path().join("seg-1.lp").exists(),
            "someone else's file is left alone"
        );
    }

    #[test]
    fn beyond_the_bound_the_oldest_are_dropped_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = DiskBuffer::open(dir.path(), 100, 10).unwrap();
        b.push(&lines(0, 150)).unwrap();
        assert_eq!(b.len(), 100);
        assert_eq!(b.dropped(), 50);
        let out = drain(&mut b);
        assert_eq!(out, lines(50, 100), "the newest 100 remain, in order");
    }

    #[test]
    fn a_line_cut_short_by_a_crash_is_cut_off_on_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = DiskBuffer::open(dir.path(), 100, 50).unwrap();
        b.push(&lines(0, 3)).unwrap();
        drop(b);
        let mut f = OpenOptions::new()
            .append(true)
            .open(segment_path(dir.path(), 0))
            .unwrap();
        f.write_all(b"m v=3 3").unwrap(); // no newline: the write was interrupted
        drop(f);
        let mut b = DiskBuffer::open(dir.path(), 100, 50).unwrap();
        assert_eq!(b.len(), 3);
        b.push(&lines(3, 1)).unwrap();
        assert_eq!(drain(&mut b), lines(0, 4));
    }

    #[test]
    fn removing_anything_but_the_oldest_segment_does_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = DiskBuffer::open(dir.path(), 100, 2).unwrap();
        b.push(&lines(0, 4)).unwrap();
        b.remove_oldest(1).unwrap();
        assert_eq!(b.len(), 4);
    }
}
