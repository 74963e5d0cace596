//! `LogHandle`: how executor threads hand records to the writer thread without blocking.
//!
//! A handle checks limits, puts one request on the bounded queue with `try_send` (a full
//! queue is an error, never a wait) and returns a [`Completion`] future that the writer thread
//! resolves after the record is durable (or failed). Invariant: nothing here touches a file.

use std::ops::Range;

use crossbeam_channel::{Sender, TrySendError};

use super::format::framed_bytes;
use super::{LogError, Lsn};
use crate::reply::{Closed, Replier, Reply};

/// Records handed to the writer in one request.
pub(crate) enum Payloads {
    One(Vec<u8>),
    Many(Vec<Vec<u8>>),
}

impl Default for Payloads {
    fn default() -> Self {
        Self::Many(Vec::new())
    }
}

/// Where the writer reports the outcome of one append request.
pub(crate) enum Done {
    One(Replier<Lsn, LogError>),
    Many(Replier<Range<Lsn>, LogError>),
    /// Called on the writer thread (the caller's own completion, e.g. with its error type).
    Call(Box<dyn FnOnce(Result<Lsn, LogError>) + Send>),
}

/// One request to the writer thread.
pub(crate) enum Request {
    Append {
        payloads: Payloads,
        framed_bytes: usize,
        done: Done,
    },
    Checkpoint {
        up_to_lsn: Lsn,
        done: Replier<usize, LogError>,
    },
    Shutdown,
}

/// A cheap, cloneable, `Send` handle to append to the log from any thread.
#[derive(Clone)]
pub struct LogHandle {
    tx: Sender<Request>,
    record_bytes_max: usize,
    batch_records_max: usize,
    batch_bytes_max: usize,
    queue_requests_max: usize,
}

/// The outcome of a log request, resolved by the writer thread once it is durable (or failed).
pub type Completion<T> = Reply<T, LogError>;

impl Closed for LogError {
    fn closed() -> Self {
        Self::Closed
    }
}

impl LogHandle {
    pub(crate) fn new(tx: Sender<Request>, options: &super::LogOptions) -> Self {
        Self {
            tx,
            record_bytes_max: options.record_bytes_max,
            batch_records_max: options.batch_records_max,
            batch_bytes_max: options.batch_bytes_max,
            queue_requests_max: options.queue_requests_max,
        }
    }

    /// Appends one record; resolves to its LSN once it is durable.
    pub fn append(&self, payload: Vec<u8>) -> Completion<Lsn> {
        if payload.len() > self.record_bytes_max {
            let max = self.record_bytes_max;
            return Reply::ready(Err(LogError::RecordTooLarge {
                bytes: payload.len(),
                max,
            }));
        }
        let (done, rx) = Reply::channel();
        let framed_bytes = framed_bytes(payload.len());
        let request = Request::Append {
            payloads: Payloads::One(payload),
            framed_bytes,
            done: Done::One(done),
        };
        self.send(request, rx)
    }

    /// Appends one record and calls `then` on the writer thread with its LSN once it is
    /// durable (or with the error). `then` must be quick: it runs before the next batch.
    /// A request refused before it is queued calls `then` right here.
    pub fn append_then(
        &self,
        payload: Vec<u8>,
        then: impl FnOnce(Result<Lsn, LogError>) + Send + 'static,
    ) {
        if payload.len() > self.record_bytes_max {
            let max = self.record_bytes_max;
            then(Err(LogError::RecordTooLarge {
                bytes: payload.len(),
                max,
            }));
            return;
        }
        let framed_bytes = framed_bytes(payload.len());
        let request = Request::Append {
            payloads: Payloads::One(payload),
            framed_bytes,
            done: Done::Call(Box::new(then)),
        };
        if let Err(error) = self.tx.try_send(request) {
            let (error, request) = match error {
                TrySendError::Full(request) => (
                    LogError::QueueFull {
                        queue_requests_max: self.queue_requests_max,
                    },
                    request,
                ),
                TrySendError::Disconnected(request) => (LogError::Closed, request),
            };
            if let Request::Append {
                done: Done::Call(then),
                ..
            } = request
            {
                then(Err(error));
            }
        }
    }

    /// Appends records that get consecutive LSNs and become durable together; resolves to
    /// their LSNs once they are. At most `batch_records_max` records and `batch_bytes_max`
    /// framed bytes.
    pub fn append_batch(&self, payloads: Vec<Vec<u8>>) -> Completion<Range<Lsn>> {
        let mut bytes = 0;
        for payload in &payloads {
            if payload.len() > self.record_bytes_max {
                let max = self.record_bytes_max;
                let error = LogError::RecordTooLarge {
                    bytes: payload.len(),
                    max,
                };
                return Reply::ready(Err(error));
            }
            bytes += framed_bytes(payload.len());
        }
        if payloads.len() > self.batch_records_max || bytes > self.batch_bytes_max {
            let error = LogError::BatchTooLarge {
                records: payloads.len(),
                bytes,
            };
            return Reply::ready(Err(error));
        }
        let (done, rx) = Reply::channel();
        let payloads = Payloads::Many(payloads);
        self.send(
            Request::Append {
                payloads,
                framed_bytes: bytes,
                done: Done::Many(done),
            },
            rx,
        )
    }

    /// Deletes every segment whose records all have LSNs below `up_to_lsn` (the caller has
    /// applied them elsewhere), never the segment being written; resolves to how many segment
    /// files were deleted.
    pub fn checkpoint(&self, up_to_lsn: Lsn) -> Completion<usize> {
        let (done, rx) = Reply::channel();
        self.send(Request::Checkpoint { up_to_lsn, done }, rx)
    }

    /// Asks the writer to stop after what is queued (blocking while the queue is full).
    pub(crate) fn shutdown(&self) -> Result<(), LogError> {
        self.tx
            .send(Request::Shutdown)
            .map_err(|_| LogError::Closed)
    }

    fn send<T>(&self, request: Request, rx: Completion<T>) -> Completion<T> {
        match self.tx.try_send(request) {
            Ok(()) => rx,
            Err(TrySendError::Full(_)) => {
                let queue_requests_max = self.queue_requests_max;
                Reply::ready(Err(LogError::QueueFull { queue_requests_max }))
            }
            Err(TrySendError::Disconnected(_)) => Reply::ready(Err(LogError::Closed)),
        }
    }
}

impl std::fmt::Debug for LogHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogHandle")
            .field("queued", &self.tx.len())
            .finish_non_exhaustive()
    }
}
