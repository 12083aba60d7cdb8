//! `keel doctor`'s check of a Redis server: reachable, answers `PING`, and its clock (`TIME`).

use std::time::{Duration, SystemTime};

use super::Finding;

/// Checks the Redis at `url` (as keel's `[limits] store` / `[breaker] shared` read it); gives its
/// time too.
pub(super) async fn check(url: &str, timeout: Duration) -> (Finding, Option<SystemTime>) {
    let fix =
        "start Redis (`sudo systemctl start redis-server`) or correct the url; keel itself keeps serving without it";
    match tokio::time::timeout(timeout, ping(url)).await {
        Ok(Ok(time)) => (Finding::Ok("answers PING".into()), time),
        Ok(Err(what)) => (Finding::Problem(what, fix.into()), None),
        Err(_) => (Finding::Problem("no answer in time".into(), fix.into()), None),
    }
}

async fn ping(url: &str) -> Result<Option<SystemTime>, String> {
    let client = redis::Client::open(url).map_err(|err| format!("not a Redis URL: {err}"))?;
    let address = client.get_connection_info().addr().to_string();
    let mut conn =
        client.get_multiplexed_async_connection().await.map_err(|err| format!("cannot connect to {address}: {err}"))?;
    let pong: String = redis::cmd("PING").query_async(&mut conn).await.map_err(|err| format!("PING failed: {err}"))?;
    if pong != "PONG" {
        return Err(format!("answered {pong:?} to PING"));
    }
    // TIME answers [seconds, microseconds].
    let time: Option<(u64, u64)> = redis::cmd("TIME").query_async(&mut conn).await.ok();
    Ok(time.map(|(seconds, _)| SystemTime::UNIX_EPOCH + Duration::from_secs(seconds)))
}
