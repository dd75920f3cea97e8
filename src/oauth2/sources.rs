//! Where a token comes from besides the endpoint's cache: the endpoint's answer
//! parsed and checked, a token file, a command's output.

use std::io;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncReadExt;

use super::{loggable, TokenError, TokenResponse, MAX_OUTPUT};
use crate::secret::Secret;

/// Parses a token endpoint's answer. `from` names its sender in errors ("the token
/// endpoint https://…"); nothing from the body
/// but the endpoint's own `error` and `error_description` is repeated.
pub(super) fn parse_token_response(
    from: &str,
    status: u16,
    body: &[u8],
) -> Result<TokenResponse, TokenError> {
    let bad = |reason: &str| TokenError::BadAnswer {
        from: from.to_string(),
        reason: reason.to_string(),
    };
    let json: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    if !(200..300).contains(&status) {
        let field = |name: &str| {
            json.as_ref()
                .and_then(|j| j.get(name))
                .and_then(|v| v.as_str())
                .map(loggable)
        };
        let detail = match (field("error"), field("error_description")) {
            (Some(error), Some(description)) => format!(" ({error}: {description})"),
            (Some(error), None) => format!(" ({error})"),
            _ => String::new(),
        };
        return Err(TokenError::Refused {
            from: from.to_string(),
            status,
            detail,
        });
    }
    let json = json.ok_or_else(|| bad("not JSON"))?;
    let access_token = match json.get("access_token") {
        Some(serde_json::Value::String(token)) => {
            checked_token(token, &format!("the access_token from {from}"))?
        }
        _ => return Err(bad("no `access_token` string in it")),
    };
    if let Some(kind) = json.get("token_type").and_then(|t| t.as_str()) {
        if !kind.eq_ignore_ascii_case("bearer") {
            return Err(bad("`token_type` is not Bearer, which XOAUTH2 needs"));
        }
    }
    // A number per RFC 6749; some endpoints send it as a string.
    let expires_in = match json.get("expires_in") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::Number(n)) => n.as_u64().map(Duration::from_secs),
        Some(serde_json::Value::String(s)) => s.trim().parse().ok().map(Duration::from_secs),
        Some(_) => None,
    };
    let refresh_token = json
        .get("refresh_token")
        .and_then(|t| t.as_str())
        .filter(|t| !t.is_empty())
        .map(Secret::new);
    Ok(TokenResponse {
        access_token,
        expires_in,
        refresh_token,
    })
}

/// A token as read or received, trimmed. An access token is one word of printable
/// ASCII (RFC 6750 `b64token`); anything else would break the XOAUTH2 string.
pub(super) fn checked_token(raw: &str, from: &str) -> Result<Secret, TokenError> {
    let token = raw.trim();
    let invalid = |reason| TokenError::Invalid {
        from: from.to_string(),
        reason,
    };
    if token.is_empty() {
        return Err(invalid("it is empty"));
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(invalid(
            "it contains spaces, line breaks or non-ASCII characters",
        ));
    }
    Ok(Secret::new(token))
}

pub(super) async fn read_token_file(path: &Path) -> Result<Secret, TokenError> {
    let file_error = |source| TokenError::File {
        path: path.to_path_buf(),
        source,
    };
    let file = tokio::fs::File::open(path).await.map_err(file_error)?;
    let mut text = String::new();
    file.take(MAX_OUTPUT as u64 + 1)
        .read_to_string(&mut text)
        .await
        .map_err(file_error)?;
    let from = format!("the token file {}", path.display());
    if text.len() > MAX_OUTPUT {
        return Err(TokenError::Invalid {
            from,
            reason: "it is larger than 64 KiB",
        });
    }
    checked_token(&text, &from)
}

/// Runs `sh -c command` with no stdin and stderr discarded (it may print credentials),
/// and returns its stdout. The command is killed when `timeout` runs out.
pub(super) async fn run_command(command: &str, timeout: Duration) -> Result<String, TokenError> {
    let failed = |detail: String| TokenError::Command {
        detail,
        timed_out: false,
    };
    let mut child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| failed(format!("cannot be started with `sh -c`: {e}")))?;
    let mut stdout = child.stdout.take().expect("stdout is piped");
    let run = async {
        let mut output = Vec::new();
        (&mut stdout)
            .take(MAX_OUTPUT as u64 + 1)
            .read_to_end(&mut output)
            .await?;
        if output.len() > MAX_OUTPUT {
            // Don't wait for a command that keeps writing; dropping `child` kills it.
            return Ok((None, output));
        }
        Ok::<_, io::Error>((Some(child.wait().await?), output))
    };
    let (status, output) = match tokio::time::timeout(timeout, run).await {
        Ok(Ok(done)) => done,
        Ok(Err(e)) => return Err(failed(format!("failed: {e}"))),
        Err(_) => {
            return Err(TokenError::Command {
                detail: format!("did not finish within {timeout:?} and was stopped (raise the mailbox's `timeout` if it is slow)"),
                timed_out: true,
            })
        }
    };
    match status {
        None => Err(failed(format!(
            "printed more than {MAX_OUTPUT} bytes; it should print only the access token"
        ))),
        Some(status) if !status.success() => Err(failed(format!(
            "{status}; its error output is not logged because it may contain credentials: run the command by hand to see it"
        ))),
        Some(_) => String::from_utf8(output)
            .map_err(|_| failed("printed something that is not UTF-8".to_string())),
    }
}
