//! Length-prefixed frames on a QUIC stream, every read bounded: the session's
//! [`Message`]s, and the JSON of the short exchanges other protocols on the
//! same endpoint hold (pairing).

use std::time::Duration;

use iroh::endpoint::{RecvStream, SendStream};
use roost_core::protocol::Message;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::SyncError;

/// Largest frame accepted: a full batch of large rows fits, a hostile length does not.
pub const MAX_FRAME: usize = 64 << 20;
/// Largest JSON frame accepted.
pub const MAX_JSON_FRAME: usize = 1 << 20;

pub async fn write(send: &mut SendStream, message: &Message) -> Result<(), SyncError> {
    write_bytes(send, &message.encode()).await
}

/// Reads one message, waiting at most `wait` (a silent peer is a dead peer).
pub async fn read(recv: &mut RecvStream, wait: Duration) -> Result<Message, SyncError> {
    let body = read_bytes(recv, wait, MAX_FRAME).await?;
    Message::decode(&body).map_err(|e| SyncError::Protocol(e.to_string()))
}

/// Writes `value` as one JSON frame.
pub async fn write_json(send: &mut SendStream, value: &impl Serialize) -> Result<(), SyncError> {
    write_bytes(send, &serde_json::to_vec(value).map_err(|e| SyncError::Protocol(e.to_string()))?).await
}

/// Reads one JSON frame of at most [`MAX_JSON_FRAME`] bytes, waiting at most `wait`.
pub async fn read_json<T: DeserializeOwned>(recv: &mut RecvStream, wait: Duration) -> Result<T, SyncError> {
    let body = read_bytes(recv, wait, MAX_JSON_FRAME).await?;
    serde_json::from_slice(&body).map_err(|e| SyncError::Protocol(format!("not the JSON expected: {e}")))
}

async fn write_bytes(send: &mut SendStream, body: &[u8]) -> Result<(), SyncError> {
    let len = u32::try_from(body.len()).map_err(|_| SyncError::Protocol("frame too large to send".into()))?;
    send.write_all(&len.to_be_bytes()).await.map_err(|e| SyncError::Stream(e.to_string()))?;
    send.write_all(body).await.map_err(|e| SyncError::Stream(e.to_string()))?;
    Ok(())
}

async fn read_bytes(recv: &mut RecvStream, wait: Duration, max: usize) -> Result<Vec<u8>, SyncError> {
    tokio::time::timeout(wait, async {
        let mut len = [0u8; 4];
        recv.read_exact(&mut len).await.map_err(|e| SyncError::Stream(e.to_string()))?;
        let len = u32::from_be_bytes(len) as usize;
        if len > max {
            return Err(SyncError::Protocol(format!("frame of {len} bytes is over the limit")));
        }
        let mut body = vec![0u8; len];
        recv.read_exact(&mut body).await.map_err(|e| SyncError::Stream(e.to_string()))?;
        Ok(body)
    })
    .await
    .map_err(|_| SyncError::Stream(format!("peer silent for {wait:?}")))?
}
