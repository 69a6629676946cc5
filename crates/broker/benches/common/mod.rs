//! What the benchmarks share: a minimal Kafka connection over loopback.

use std::net::SocketAddr;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Encodes one request as a whole frame (length prefix included), ready to send many times.
pub fn frame<R: Request>(version: i16, correlation: i32, request: &R) -> Bytes {
    let header = RequestHeader::default()
        .with_request_api_key(R::KEY)
        .with_request_api_version(version)
        .with_correlation_id(correlation)
        .with_client_id(Some(StrBytes::from_static_str("bench")));
    let mut body = BytesMut::new();
    header
        .encode(&mut body, R::header_version(version))
        .unwrap();
    request.encode(&mut body, version).unwrap();
    let mut frame = BytesMut::with_capacity(body.len() + 4);
    frame.put_i32(body.len() as i32);
    frame.extend_from_slice(&body);
    frame.freeze()
}

/// Decodes a response frame body (without its length prefix).
pub fn decode<R: Request>(version: i16, mut body: Bytes) -> R::Response
where
    R::Response: Decodable + HeaderVersion,
{
    ResponseHeader::decode(&mut body, R::Response::header_version(version)).unwrap();
    let r = R::Response::decode(&mut body, version).unwrap();
    assert!(!body.has_remaining());
    r
}

pub struct Conn {
    pub stream: TcpStream,
    correlation: i32,
}

impl Conn {
    pub async fn connect(addr: SocketAddr) -> Conn {
        let stream = TcpStream::connect(addr).await.unwrap();
        stream.set_nodelay(true).unwrap();
        Conn {
            stream,
            correlation: 0,
        }
    }

    /// Sends a request and waits for its response.
    pub async fn send<R: Request>(&mut self, version: i16, request: &R) -> R::Response
    where
        R::Response: Decodable + HeaderVersion,
    {
        self.correlation += 1;
        self.stream
            .write_all(&frame(version, self.correlation, request))
            .await
            .unwrap();
        let body = self.read_frame().await;
        decode::<R>(version, body)
    }
}

impl Conn {
    /// Reads one response frame body.
    pub async fn read_frame(&mut self) -> Bytes {
        let len = self.stream.read_i32().await.unwrap() as usize;
        let mut buf = vec![0; len];
        self.stream.read_exact(&mut buf).await.unwrap();
        Bytes::from(buf)
    }
}
