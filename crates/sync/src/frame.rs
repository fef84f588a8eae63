//! Length-prefixed frames of [`Message`]s on a QUIC stream, every read bounded.

use std::time::Duration;

use iroh::endpoint::{RecvStream, SendStream};
use roost_core::protocol::Message;

use crate::SyncError;

/// Largest frame accepted: a full batch of large rows fits, a hostile length does not.
pub const MAX_FRAME: usize = 64 << 20;

pub async fn write(send: &mut SendStream, message: &Message) -> Result<(), SyncError> {
    let body = message.encode();
    let len = u32::try_from(body.len()).map_err(|_| SyncError::Protocol("frame too large to send".into()))?;
    send.write_all(&len.to_be_bytes()).await.map_err(|e| SyncError::Stream(e.to_string()))?;
    send.write_all(&body).await.map_err(|e| SyncError::Stream(e.to_string()))?;
    Ok(())
}

/// Reads one message, waiting at most `wait` (a silent peer is a dead peer).
pub async fn read(recv: &mut RecvStream, wait: Duration) -> Result<Message, SyncError> {
    tokio::time::timeout(wait, async {
        let mut len = [0u8; 4];
        recv.read_exact(&mut len).await.map_err(|e| SyncError::Stream(e.to_string()))?;
        let len = u32::from_be_bytes(len) as usize;
        if len > MAX_FRAME {
            return Err(SyncError::Protocol(format!("frame of {len} bytes is over the limit")));
        }
        let mut body = vec![0u8; len];
        recv.read_exact(&mut body).await.map_err(|e| SyncError::Stream(e.to_string()))?;
        Message::decode(&body).map_err(|e| SyncError::Protocol(e.to_string()))
    })
    .await
    .map_err(|_| SyncError::Stream(format!("peer silent for {wait:?}")))?
}
