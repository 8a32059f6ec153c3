//! StreamLogs with a job's large records copied from the log file straight into the
//! message.
//!
//! Through prost, each byte of a log was copied out of the page cache into a read buffer,
//! then from it into tonic's encode buffer. For a running job's large records (the batches
//! [`LogBatch::File`] that `logs` makes), [`LogEncoder`] writes the `LogChunk` message's
//! protobuf encoding itself and reads each record's bytes from the file into the encode
//! buffer: one copy fewer per byte, on the stage that limits a log stream's rate. The
//! encoding is the one prost gives the same records (a test checks it byte for byte), so
//! clients see no difference. [`JobRoutes`] serves StreamLogs with this codec and passes
//! every other call of the job service to the generated server.

use std::convert::Infallible;
use std::os::fd::AsRawFd;
use std::task::{Context, Poll};

use bytes::BufMut;
use prost::Message;
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint};
use silo_log::RecordSpan;
use silo_proto::v1::StreamLogsRequest;
use silo_proto::v1::job_service_server::JobServiceServer;
use tokio_stream::wrappers::ReceiverStream;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::{Body, BoxFuture, Service, StdError, http};
use tonic::server::{Grpc, NamedService, ServerStreamingService};
use tonic::{Request, Response, Status};

use crate::jobs::JobManager;
use crate::logs::{LogBatch, LogRequest, proto_stream};
use crate::service::JobApi;

/// The path of StreamLogs.
const STREAM_LOGS: &str = "/silo.v1.JobService/StreamLogs";

/// The job service: StreamLogs served here, every other method by the generated server.
#[derive(Clone)]
pub struct JobRoutes {
    api: JobServiceServer<JobApi>,
    logs: StreamLogs,
    max_decoding: usize,
    max_encoding: usize,
}

impl JobRoutes {
    /// `api` with StreamLogs served from `jobs`, with the same message size limits.
    pub fn new(
        api: JobServiceServer<JobApi>,
        jobs: JobManager,
        max_decoding: usize,
        max_encoding: usize,
    ) -> JobRoutes {
        JobRoutes {
            api,
            logs: StreamLogs { jobs },
            max_decoding,
            max_encoding,
        }
    }
}

impl NamedService for JobRoutes {
    const NAME: &'static str = <JobServiceServer<JobApi> as NamedService>::NAME;
}

impl<B> Service<http::Request<B>> for JobRoutes
where
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        <JobServiceServer<JobApi> as Service<http::Request<B>>>::poll_ready(&mut self.api, cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if req.uri().path() != STREAM_LOGS {
            return self.api.call(req);
        }
        let logs = self.logs.clone();
        let (decoding, encoding) = (self.max_decoding, self.max_encoding);
        Box::pin(async move {
            let mut grpc =
                Grpc::new(LogCodec).apply_max_message_size_config(Some(decoding), Some(encoding));
            Ok(grpc.server_streaming(logs, req).await)
        })
    }
}

/// StreamLogs: as the generated service's, with large records sent by reference.
#[derive(Clone)]
struct StreamLogs {
    jobs: JobManager,
}

impl ServerStreamingService<StreamLogsRequest> for StreamLogs {
    type Response = LogBatch;
    type ResponseStream = ReceiverStream<Result<LogBatch, Status>>;
    type Future = BoxFuture<Response<Self::ResponseStream>, Status>;

    fn call(&mut self, request: Request<StreamLogsRequest>) -> Self::Future {
        let jobs = self.jobs.clone();
        Box::pin(async move {
            let rx = LogRequest::check(&jobs, request).await?.spawn_batches();
            Ok(Response::new(ReceiverStream::new(rx)))
        })
    }
}

/// The codec of StreamLogs: requests through prost, batches by [`LogEncoder`].
struct LogCodec;

impl Codec for LogCodec {
    type Encode = LogBatch;
    type Decode = StreamLogsRequest;
    type Encoder = LogEncoder;
    type Decoder = RequestDecoder;

    fn encoder(&mut self) -> LogEncoder {
        LogEncoder
    }

    fn decoder(&mut self) -> RequestDecoder {
        RequestDecoder
    }
}

/// Decodes a StreamLogsRequest.
struct RequestDecoder;

impl Decoder for RequestDecoder {
    type Item = StreamLogsRequest;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<StreamLogsRequest>, Status> {
        StreamLogsRequest::decode(buf)
            .map(Some)
            .map_err(|e| Status::internal(format!("malformed StreamLogsRequest: {e}")))
    }
}

/// Encodes a batch as a `LogChunk` message.
struct LogEncoder;

impl Encoder for LogEncoder {
    type Item = LogBatch;
    type Error = Status;

    fn encode(&mut self, item: LogBatch, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        match item {
            LogBatch::Chunk(chunk) => chunk
                .encode(dst)
                .map_err(|e| Status::internal(format!("cannot encode a log message: {e}"))),
            LogBatch::File { file, spans } => {
                for span in &spans {
                    encode_span(&file, span, dst)?;
                }
                Ok(())
            }
        }
    }
}

/// Field numbers of `LogChunk` and `LogRecord` (proto/silo/v1/job.proto).
const CHUNK_RECORDS: u32 = 1;
const RECORD_SEQUENCE: u32 = 1;
const RECORD_TIMESTAMP: u32 = 2;
const RECORD_STREAM: u32 = 3;
const RECORD_DATA: u32 = 4;

/// Appends one `records` entry of a `LogChunk` for `span`, its bytes read from `file`:
/// the fields prost writes for the same `LogRecord`, in the same order, defaults left out.
fn encode_span(
    file: &std::fs::File,
    span: &RecordSpan,
    dst: &mut impl BufMut,
) -> Result<(), Status> {
    let Some(stream) = proto_stream(span.stream) else {
        return Ok(());
    };
    let stream = i64::from(stream as i32) as u64;
    let timestamp = span.timestamp_unix_nanos as u64;
    let len = span.len as usize;
    let varint_field = |v: u64| if v == 0 { 0 } else { 1 + encoded_len_varint(v) };
    let record_len = varint_field(span.sequence)
        + varint_field(timestamp)
        + varint_field(stream)
        + if len == 0 {
            0
        } else {
            1 + encoded_len_varint(len as u64) + len
        };
    encode_key(CHUNK_RECORDS, WireType::LengthDelimited, dst);
    encode_varint(record_len as u64, dst);
    for (tag, value) in [
        (RECORD_SEQUENCE, span.sequence),
        (RECORD_TIMESTAMP, timestamp),
        (RECORD_STREAM, stream),
    ] {
        if value != 0 {
            encode_key(tag, WireType::Varint, dst);
            encode_varint(value, dst);
        }
    }
    if len == 0 {
        return Ok(());
    }
    encode_key(RECORD_DATA, WireType::LengthDelimited, dst);
    encode_varint(len as u64, dst);
    copy_from_file(file, span, dst)
}

/// Reads the bytes of `span` from `file` into `dst`'s spare room, without a buffer in
/// between.
fn copy_from_file(
    file: &std::fs::File,
    span: &RecordSpan,
    dst: &mut impl BufMut,
) -> Result<(), Status> {
    let len = span.len as usize;
    let mut done = 0usize;
    while done < len {
        let room = dst.chunk_mut();
        let want = room.len().min(len - done);
        if want == 0 {
            return Err(Status::internal("no room to encode a log message"));
        }
        let at = libc::off_t::try_from(span.offset + done as u64)
            .map_err(|_| Status::internal("a log record's offset is out of range"))?;
        // SAFETY: pread writes at most `want` bytes into `room`, spare memory of `dst` that
        // is not read before `advance_mut` below marks the bytes written as initialised.
        let n = unsafe { libc::pread(file.as_raw_fd(), room.as_mut_ptr().cast(), want, at) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(Status::internal(format!("cannot read the job's log: {e}")));
        }
        if n == 0 {
            return Err(Status::data_loss(format!(
                "the job's log ended inside record {}",
                span.sequence
            )));
        }
        // SAFETY: pread initialised the first `n` bytes of the spare room.
        unsafe { dst.advance_mut(n as usize) };
        done += n as usize;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use silo_log::{LogReader, LogWriter, Stream};
    use silo_proto::v1::LogChunk;

    use super::*;

    #[test]
    fn a_batch_by_reference_encodes_as_prost_encodes_the_same_records() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let file = std::fs::File::create(&path).unwrap();
        let mut w = LogWriter::create(file, &path, u64::MAX).unwrap();
        w.append(Stream::Stdout, &vec![1u8; 100_000]).unwrap();
        w.append(Stream::Stderr, b"x").unwrap();
        w.append(Stream::System, &[2u8; 300]).unwrap();
        w.append(Stream::Stdout, &[3u8; 200]).unwrap();
        w.append_exit(b"{\"code\":0}").unwrap();
        let mut reader = LogReader::open(&path).unwrap();
        let spans = reader.read_spans(1 << 20, 64).unwrap();
        assert_eq!(spans.len(), 5);
        let file = std::sync::Arc::new(reader.file().try_clone().unwrap());
        let mut ours = bytes::BytesMut::new();
        for span in &spans {
            encode_span(&file, span, &mut ours).unwrap();
        }
        let theirs = LogBatch::File { file, spans }
            .into_chunk()
            .unwrap()
            .encode_to_vec();
        assert_eq!(&ours[..], &theirs[..]);
        // And the client decodes the records, the exit record left out.
        let chunk = LogChunk::decode(&ours[..]).unwrap();
        let lens: Vec<usize> = chunk.records.iter().map(|r| r.data.len()).collect();
        assert_eq!(lens, vec![100_000, 1, 300, 200]);
        assert_eq!(chunk.records[2].sequence, 2);
    }

    #[test]
    fn a_span_past_the_end_of_the_file_is_data_loss_not_zeros() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        std::fs::write(&path, b"SILOLOG1").unwrap();
        let file = std::fs::File::open(&path).unwrap();
        let span = RecordSpan {
            sequence: 7,
            timestamp_unix_nanos: 1,
            stream: Stream::Stdout,
            offset: 4,
            len: 100,
        };
        let mut dst = bytes::BytesMut::new();
        let err = encode_span(&file, &span, &mut dst).unwrap_err();
        assert_eq!(err.code(), tonic::Code::DataLoss, "{err:?}");
    }
}
