//! The line transport of `roost mcp` (stdio) and of the MCP sessions other
//! machines open over QUIC (a stream each): newline-delimited JSON-RPC, one
//! message a line, each line bounded.
//!
//! rmcp's own stdio transport drops a line that is too long, or that is not
//! JSON, without a word, and the client waits for an answer that never
//! comes. This one answers such a line with a JSON-RPC error, as JSON-RPC
//! asks: -32700 for a line that is not JSON, -32600 for one that is too
//! long or is not a message. A reader task owns the input, so a line is
//! never half-read when the service stops listening for a moment.

use std::sync::Arc;

use rmcp::RoleServer;
use rmcp::model::{ClientJsonRpcMessage, ErrorData, RequestId, ServerJsonRpcMessage};
use rmcp::transport::Transport;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::{Mutex, mpsc};

/// The longest line read as a message: larger ones are answered with an
/// error and skipped.
pub const MAX_LINE: usize = 16 * 1024 * 1024;

/// Messages read ahead of the service.
const READ_AHEAD: usize = 16;

/// A JSON-RPC transport over a reader and a writer, such as stdin and stdout.
pub struct LineTransport<W> {
    incoming: mpsc::Receiver<ClientJsonRpcMessage>,
    out: Arc<Mutex<W>>,
    reader: tokio::task::JoinHandle<()>,
}

/// Starts reading `input` and returns the transport that writes to `output`.
pub fn transport<R, W>(input: R, output: W) -> LineTransport<W>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let out = Arc::new(Mutex::new(output));
    let (sender, incoming) = mpsc::channel(READ_AHEAD);
    let reader = tokio::spawn(read_messages(BufReader::new(input), sender, out.clone()));
    LineTransport { incoming, out, reader }
}

/// What one line of input was.
enum Line {
    Message(Box<ClientJsonRpcMessage>),
    /// Longer than [`MAX_LINE`]; its bytes were skipped, never kept.
    TooLong,
    NotJson(String),
    /// JSON, but not a JSON-RPC message; with its id when it had one.
    NotAMessage(Option<RequestId>, String),
    Blank,
}

async fn read_messages<R, W>(mut input: BufReader<R>, messages: mpsc::Sender<ClientJsonRpcMessage>, out: Arc<Mutex<W>>)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buffer = Vec::new();
    loop {
        let line = match read_line(&mut input, &mut buffer).await {
            Ok(Some(line)) => line,
            Ok(None) => return,
            // A client over a network connection that goes away ends its
            // session this way; that is no fault here.
            Err(e) if matches!(e.kind(), std::io::ErrorKind::NotConnected | std::io::ErrorKind::ConnectionReset) => {
                tracing::debug!(error = %e, "the MCP client's connection ended");
                return;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot read the MCP client's input");
                return;
            }
        };
        let reply = match line {
            Line::Message(message) => {
                if messages.send(*message).await.is_err() {
                    return;
                }
                continue;
            }
            Line::Blank => continue,
            Line::TooLong => {
                tracing::warn!(limit = MAX_LINE, "refused a message longer than the limit");
                let message =
                    format!("the message is longer than {MAX_LINE} bytes, so it was not read; send smaller messages");
                ServerJsonRpcMessage::error(ErrorData::invalid_request(message, None), None)
            }
            Line::NotJson(reason) => {
                let message = format!("the message is not JSON: {reason}");
                ServerJsonRpcMessage::error(ErrorData::parse_error(message, None), None)
            }
            Line::NotAMessage(id, reason) => {
                let message = format!("the message is not a JSON-RPC message: {reason}");
                ServerJsonRpcMessage::error(ErrorData::invalid_request(message, None), id)
            }
        };
        if write(&out, &reply).await.is_err() {
            return;
        }
    }
}

/// Reads the next line into `buffer` and says what it holds; `None` at the
/// end of the input. A last line without a newline counts as a line.
async fn read_line<R: AsyncRead + Unpin>(
    input: &mut BufReader<R>,
    buffer: &mut Vec<u8>,
) -> std::io::Result<Option<Line>> {
    buffer.clear();
    let mut too_long = false;
    let mut read_any = false;
    loop {
        let available = input.fill_buf().await?;
        if available.is_empty() {
            if !read_any {
                return Ok(None);
            }
            break;
        }
        read_any = true;
        let newline = available.iter().position(|&b| b == b'\n');
        let take = newline.map_or(available.len(), |at| at + 1);
        let content = newline.unwrap_or(available.len());
        if !too_long && buffer.len() + content > MAX_LINE {
            too_long = true;
            buffer.clear();
            buffer.shrink_to_fit();
        }
        if !too_long {
            buffer.extend_from_slice(&available[..content]);
        }
        input.consume(take);
        if newline.is_some() {
            break;
        }
    }
    if too_long {
        return Ok(Some(Line::TooLong));
    }
    let text = buffer.strip_suffix(b"\r").unwrap_or(buffer);
    if text.iter().all(u8::is_ascii_whitespace) {
        return Ok(Some(Line::Blank));
    }
    let value: Value = match serde_json::from_slice(text) {
        Ok(value) => value,
        Err(e) => return Ok(Some(Line::NotJson(e.to_string()))),
    };
    let id = value.get("id").cloned().and_then(|id| serde_json::from_value::<RequestId>(id).ok());
    Ok(Some(match serde_json::from_value::<ClientJsonRpcMessage>(value) {
        Ok(message) => Line::Message(Box::new(message)),
        Err(e) => Line::NotAMessage(id, e.to_string()),
    }))
}

async fn write<W: AsyncWrite + Unpin>(out: &Mutex<W>, message: &ServerJsonRpcMessage) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(message).map_err(std::io::Error::other)?;
    line.push(b'\n');
    let mut out = out.lock().await;
    out.write_all(&line).await?;
    out.flush().await
}

impl<W: AsyncWrite + Unpin + Send + 'static> Transport<RoleServer> for LineTransport<W> {
    type Error = std::io::Error;

    fn send(&mut self, item: ServerJsonRpcMessage) -> impl Future<Output = Result<(), Self::Error>> + Send + 'static {
        let out = self.out.clone();
        async move { write(&out, &item).await }
    }

    async fn receive(&mut self) -> Option<ClientJsonRpcMessage> {
        self.incoming.recv().await
    }

    async fn close(&mut self) -> Result<(), Self::Error> {
        self.reader.abort();
        self.incoming.close();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    /// Feeds `input` to a transport and returns what it wrote back, plus
    /// the messages it passed on.
    async fn exchange(input: Vec<u8>) -> (Vec<Value>, usize) {
        let (mut client, server_in) = tokio::io::duplex(64 * 1024);
        let (server_out, mut replies) = tokio::io::duplex(64 * 1024);
        let mut transport = transport(server_in, server_out);
        let feeding = tokio::spawn(async move {
            client.write_all(&input).await.unwrap();
            client.shutdown().await.unwrap();
        });
        let mut passed = 0;
        while transport.receive().await.is_some() {
            passed += 1;
        }
        feeding.await.unwrap();
        drop(transport);
        let mut written = String::new();
        replies.read_to_string(&mut written).await.unwrap();
        (written.lines().map(|l| serde_json::from_str(l).unwrap()).collect(), passed)
    }

    #[tokio::test]
    async fn an_oversized_line_gets_an_error_and_the_next_one_is_read() {
        let mut input = vec![b'x'; MAX_LINE + 1];
        input.push(b'\n');
        input.extend_from_slice(b"{\"jsonrpc\":\"2.0\",\"id\":7,\"method\":\"ping\"}\n");
        let (replies, passed) = exchange(input).await;
        assert_eq!(passed, 1, "the message after the long line is read");
        assert_eq!(replies.len(), 1, "{replies:?}");
        assert_eq!(replies[0]["error"]["code"], -32600);
        assert_eq!(replies[0]["id"], Value::Null);
        assert!(replies[0]["error"]["message"].as_str().unwrap().contains("longer than"));
    }

    #[tokio::test]
    async fn a_line_of_exactly_the_limit_is_read() {
        let (_, passed) = exchange({
            let mut line = b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}".to_vec();
            line.resize(MAX_LINE, b' ');
            line.push(b'\n');
            line
        })
        .await;
        assert_eq!(passed, 1);
    }

    #[tokio::test]
    async fn not_json_is_a_parse_error_and_a_bad_message_an_invalid_request() {
        let input = b"{not json\n\n{\"jsonrpc\":\"2.0\",\"id\":3}\n".to_vec();
        let (replies, passed) = exchange(input).await;
        assert_eq!(passed, 0);
        assert_eq!(replies.len(), 2, "{replies:?}");
        assert_eq!(replies[0]["error"]["code"], -32700);
        assert_eq!(replies[1]["error"]["code"], -32600);
        assert_eq!(replies[1]["id"], 3);
    }
}
