//! Following request heads in the raw bytes a client sends: where a head
//! ends (a blank line), and what each request's reads held, for the
//! keep-alive loop.

use std::sync::atomic::{AtomicU8, Ordering::Relaxed};

/// What one request's reads from the client held, shared between a
/// connection's [`ClientStream`] and its keep-alive loop.
#[derive(Debug, Default)]
pub struct RequestReads(AtomicU8);

impl RequestReads {
    /// The request's head has been read.
    const HEAD: u8 = 1;
    /// Bytes past that head were read: a body, or a pipelined request.
    const PAST_HEAD: u8 = 2;

    pub(super) fn start_request(&self) {
        self.0.store(0, Relaxed);
    }

    /// Whether the request's reads held its head and nothing more.
    pub(super) fn only_a_head(&self) -> bool {
        self.0.load(Relaxed) == Self::HEAD
    }

    /// Records a read of `len` bytes; `head_end`, where in them a head
    /// ended, if one did.
    pub(super) fn record(&self, len: usize, head_end: Option<usize>) {
        let seen = self.0.load(Relaxed);
        let now = if seen & Self::HEAD != 0 {
            seen | Self::PAST_HEAD
        } else {
            match head_end {
                Some(end) if end < len => Self::HEAD | Self::PAST_HEAD,
                Some(_) => Self::HEAD,
                None => seen,
            }
        };
        if now != seen {
            self.0.store(now, Relaxed);
        }
    }
}

/// Follows `bytes` through a blank line; `progress` carries the state from
/// one read to the next. Returns where in `bytes` the head ends (just after
/// its blank line), if it does.
///
/// Only the line feeds are visited (found with `memchr`): this runs on every
/// read of every request head.
pub(super) fn ends_head(progress: &mut u8, bytes: &[u8]) -> Option<usize> {
    // Where the current line starts, and what came before it: a line feed
    // in these bytes, or the state the last read left.
    let mut line_start = 0;
    let mut after_lf = *progress == 1;
    let mut after_lf_cr = *progress == 2;
    for lf in memchr::memchr_iter(b'\n', bytes) {
        let empty_line = match &bytes[line_start..lf] {
            [] => after_lf || after_lf_cr,
            [b'\r'] => after_lf,
            _ => false,
        };
        if empty_line {
            *progress = 0;
            return Some(lf + 1);
        }
        line_start = lf + 1;
        after_lf = true;
        after_lf_cr = false;
    }
    *progress = match &bytes[line_start..] {
        [] if line_start > 0 => 1,
        [] => *progress,
        [b'\r'] if after_lf => 2,
        _ => 0,
    };
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_blank_line_ends_the_head_across_reads() {
        let mut progress = 0;
        assert_eq!(
            ends_head(&mut progress, b"GET / HTTP/1.1\r\nHost: x\r"),
            None
        );
        assert_eq!(ends_head(&mut progress, b"\n\r"), None);
        assert_eq!(ends_head(&mut progress, b"\nnext"), Some(1));
        let mut progress = 0;
        assert_eq!(ends_head(&mut progress, b"GET / HTTP/1.0\n\n"), Some(16));
        let mut progress = 0;
        assert_eq!(
            ends_head(&mut progress, b"GET / HTTP/1.1\r\nA: b\r\n"),
            None
        );
    }

    /// The byte-at-a-time state machine `ends_head` replaced: the reference.
    fn ends_head_bytewise(progress: &mut u8, bytes: &[u8]) -> Option<usize> {
        for (i, &b) in bytes.iter().enumerate() {
            *progress = match (*progress, b) {
                (1 | 2, b'\n') => {
                    *progress = 0;
                    return Some(i + 1);
                }
                (_, b'\n') => 1,
                (1, b'\r') => 2,
                _ => 0,
            };
        }
        None
    }

    #[test]
    fn ends_head_agrees_with_the_bytewise_machine_at_every_split() {
        let heads: [&[u8]; 8] = [
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\nbody",
            b"GET / HTTP/1.0\n\n",
            b"GET / HTTP/1.1\r\nA: b\r\n",
            b"\r\n\r\n",
            b"a\n\r\r\nb\n\r\n",
            b"x\r\r\n\r\r\n",
            b"\n\r",
            b"GET /\r\nA: \n\r\n",
        ];
        for head in heads {
            for cut in 0..=head.len() {
                for second_cut in cut..=head.len() {
                    let reads = [&head[..cut], &head[cut..second_cut], &head[second_cut..]];
                    let (mut fast, mut slow) = (0u8, 0u8);
                    for read in reads {
                        let ended = ends_head(&mut fast, read);
                        assert_eq!(
                            ended,
                            ends_head_bytewise(&mut slow, read),
                            "{head:?} read as {reads:?}"
                        );
                        if ended.is_some() {
                            break;
                        }
                        assert_eq!(fast, slow, "{head:?} read as {reads:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn reads_past_a_head_are_told_apart_from_a_lone_head() {
        let reads = RequestReads::default();
        reads.record(10, None);
        assert!(!reads.only_a_head(), "no head yet");
        reads.record(8, Some(8));
        assert!(reads.only_a_head());
        reads.record(4, None);
        assert!(!reads.only_a_head(), "a body or the next request");
        reads.start_request();
        reads.record(20, Some(12));
        assert!(
            !reads.only_a_head(),
            "bytes after the head in the same read"
        );
    }
}
