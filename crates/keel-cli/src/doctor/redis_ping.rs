//! `keel doctor`'s check of a Redis server: reachable, answers `PING`, and its clock (`TIME`).
//! Spoken in RESP directly: two commands do not need a client library.

use std::time::{Duration, SystemTime};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use super::Finding;

/// Checks the Redis at `url` (`redis://[:password@]host[:port][/db]`); gives its time too.
pub(super) async fn check(url: &str, timeout: Duration) -> (Finding, Option<SystemTime>) {
    let fix =
        "start Redis (`sudo systemctl start redis-server`) or correct the url; keel itself keeps serving without it";
    match tokio::time::timeout(timeout, ping(url)).await {
        Ok(Ok(time)) => (Finding::Ok("answers PING".into()), time),
        Ok(Err(what)) => (Finding::Problem(what, fix.into()), None),
        Err(_) => (Finding::Problem("no answer in time".into(), fix.into()), None),
    }
}

/// Host, port and password of a `redis://` URL.
fn address(url: &str) -> Result<(String, Option<String>), String> {
    let rest = url.strip_prefix("redis://").ok_or_else(|| format!("{url:?} is not a redis:// url"))?;
    let rest = rest.split('/').next().unwrap_or_default();
    let (auth, host) = match rest.rsplit_once('@') {
        Some((auth, host)) => (Some(auth), host),
        None => (None, rest),
    };
    let password = auth.map(|a| a.rsplit(':').next().unwrap_or(a).to_owned()).filter(|p| !p.is_empty());
    let host = if host.contains(':') { host.to_owned() } else { format!("{host}:6379") };
    Ok((host, password))
}

async fn ping(url: &str) -> Result<Option<SystemTime>, String> {
    let (host, password) = address(url)?;
    let stream =
        tokio::net::TcpStream::connect(&host).await.map_err(|err| format!("cannot connect to {host}: {err}"))?;
    let mut stream = BufReader::new(stream);
    if let Some(password) = password {
        command(&mut stream, &["AUTH", &password]).await?;
    }
    let pong = command(&mut stream, &["PING"]).await?;
    if pong != ["PONG"] {
        return Err(format!("answered {pong:?} to PING"));
    }
    let time = command(&mut stream, &["TIME"]).await.ok().and_then(|parts| {
        let seconds: u64 = parts.first()?.parse().ok()?;
        Some(SystemTime::UNIX_EPOCH + Duration::from_secs(seconds))
    });
    Ok(time)
}

/// Sends one command; the reply's simple or bulk strings (an error reply is an `Err`).
async fn command(stream: &mut BufReader<tokio::net::TcpStream>, args: &[&str]) -> Result<Vec<String>, String> {
    let mut request = format!("*{}\r\n", args.len());
    for arg in args {
        request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
    }
    stream.get_mut().write_all(request.as_bytes()).await.map_err(|err| err.to_string())?;
    let first = line(stream).await?;
    let count = match first.split_at(1) {
        ("+", text) => return Ok(vec![text.to_owned()]),
        ("-", error) => return Err(format!("Redis said: {error}")),
        ("*", count) => count.parse::<usize>().map_err(|_| format!("unexpected reply {first:?}"))?,
        ("$", _) => 1,
        _ => return Err(format!("unexpected reply {first:?}")),
    };
    let mut parts = Vec::with_capacity(count);
    let mut header = if first.starts_with('$') { Some(first) } else { None };
    for _ in 0..count {
        let _length = match header.take() {
            Some(header) => header,
            None => line(stream).await?,
        };
        parts.push(line(stream).await?);
    }
    Ok(parts)
}

async fn line(stream: &mut BufReader<tokio::net::TcpStream>) -> Result<String, String> {
    let mut text = String::new();
    let read = stream.read_line(&mut text).await.map_err(|err| err.to_string())?;
    if read == 0 {
        return Err("the connection closed".into());
    }
    Ok(text.trim_end_matches(['\r', '\n']).to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_give_host_port_and_password() {
        assert_eq!(address("redis://127.0.0.1:6379").unwrap(), ("127.0.0.1:6379".into(), None));
        assert_eq!(address("redis://cache/2").unwrap(), ("cache:6379".into(), None));
        assert_eq!(address("redis://:s3cret@cache:6380/0").unwrap(), ("cache:6380".into(), Some("s3cret".into())));
        assert!(address("http://x").is_err());
    }
}
