//! Model management: `/api/pull`, `/api/push`, `/api/create`, `/api/copy`, `/api/delete` and
//! `/api/blobs/:digest`. They edit the in-memory model list; no faults apply here.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use http::{Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde::{Deserialize, Serialize};

use super::{Ctx, Dialect, NDJSON, Resp, error, json, model_not_found, ndjson_line, nullable, parse};
use crate::body::MockBody;
use crate::names;
use crate::scenario::ModelSpec;
use crate::state::{CModel, Compiled};

#[derive(Serialize)]
struct Progress<'a> {
    status: Cow<'a, str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    digest: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    total: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    completed: Option<u64>,
}

fn status(s: impl Into<Cow<'static, str>>) -> Progress<'static> {
    Progress { status: s.into(), digest: None, total: None, completed: None }
}

fn transfer<'a>(verb: &str, digest: &'a str, total: u64, completed: u64) -> Progress<'a> {
    let short = digest.get(7..19).unwrap_or(digest);
    Progress {
        status: Cow::Owned(format!("{verb} {short}")),
        digest: Some(digest),
        total: Some(total),
        completed: Some(completed),
    }
}

/// NDJSON progress when streaming, else one `{"status":"success"}`.
fn progress(ctx: &mut Ctx, stream: bool, lines: &[Progress<'_>]) -> Resp {
    if !stream {
        return json(StatusCode::OK, &status("success"));
    }
    let frames: VecDeque<_> = lines.iter().map(ndjson_line).collect();
    ctx.stream(NDJSON, frames, Duration::ZERO, false)
}

/// 200 with no body and no content type (Gin's `c.Status(200)`).
fn empty(status: StatusCode) -> Resp {
    let mut r = Response::new(MockBody::empty());
    *r.status_mut() = status;
    r
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct NameReq {
    #[serde(deserialize_with = "nullable")]
    model: String,
    #[serde(deserialize_with = "nullable")]
    name: String,
    #[serde(deserialize_with = "nullable")]
    from: String,
    stream: Option<bool>,
}

impl NameReq {
    fn name(&self) -> &str {
        if self.model.is_empty() { &self.name } else { &self.model }
    }
}

fn parse_name(body: &[u8]) -> Result<NameReq, Resp> {
    let req: NameReq = parse(body, Dialect::Api)?;
    if req.name().is_empty() {
        return Err(error(Dialect::Api, StatusCode::BAD_REQUEST, "model is required"));
    }
    Ok(req)
}

fn sha(name: &str) -> String {
    format!("sha256:{}", names::digest_hex(&names::full_name(name)))
}

/// Inserts or replaces a model.
fn upsert(models: &mut Vec<Arc<CModel>>, spec: ModelSpec) {
    let full = names::full_name(&spec.name).into_owned();
    let model = Arc::new(CModel::new(spec));
    match models.iter_mut().find(|m| names::name_matches(&m.full_name, &full)) {
        Some(slot) => *slot = model,
        None => models.push(model),
    }
}

pub(crate) fn pull(ctx: &mut Ctx, body: &[u8]) -> Resp {
    let req = match parse_name(body) {
        Ok(r) => r,
        Err(r) => return r,
    };
    let name = req.name().to_owned();
    let size = ctx.state.edit_models(|models| match models.iter().find(|m| names::name_matches(&m.full_name, &name)) {
        Some(m) => m.spec.size,
        None => {
            let spec = ModelSpec { name: name.clone(), ..ModelSpec::default() };
            let size = spec.size;
            upsert(models, spec);
            size
        }
    });
    let digest = sha(&name);
    let lines = [
        status("pulling manifest"),
        transfer("pulling", &digest, size, 0),
        transfer("pulling", &digest, size, size / 2),
        transfer("pulling", &digest, size, size),
        status("verifying sha256 digest"),
        status("writing manifest"),
        status("success"),
    ];
    progress(ctx, req.stream.unwrap_or(true), &lines)
}

pub(crate) fn push(ctx: &mut Ctx, snap: &Compiled, body: &[u8]) -> Resp {
    let req = match parse_name(body) {
        Ok(r) => r,
        Err(r) => return r,
    };
    let Some(model) = snap.find(req.name()) else {
        return error(Dialect::Api, StatusCode::NOT_FOUND, &model_not_found(req.name()));
    };
    let digest = format!("sha256:{}", model.digest);
    let size = model.spec.size;
    let lines = [
        status("retrieving manifest"),
        transfer("pushing", &digest, size, 0),
        transfer("pushing", &digest, size, size),
        status("pushing manifest"),
        status("success"),
    ];
    progress(ctx, req.stream.unwrap_or(true), &lines)
}

pub(crate) fn create(ctx: &mut Ctx, body: &[u8]) -> Resp {
    let req = match parse_name(body) {
        Ok(r) => r,
        Err(r) => return r,
    };
    let name = req.name().to_owned();
    let from = req.from.clone();
    let created = ctx.state.edit_models(|models| {
        let base = if from.is_empty() {
            Some(ModelSpec::default())
        } else {
            models.iter().find(|m| names::name_matches(&m.full_name, &from)).map(|m| m.spec.clone())
        };
        base.map(|mut spec| {
            spec.name = name.clone();
            upsert(models, spec);
        })
    });
    if created.is_none() {
        return error(Dialect::Api, StatusCode::NOT_FOUND, &model_not_found(&from));
    }
    let layer = format!("using existing layer {}", sha(if from.is_empty() { &name } else { &from }));
    let lines = [status("gathering model components"), status(layer), status("writing manifest"), status("success")];
    progress(ctx, req.stream.unwrap_or(true), &lines)
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct CopyReq {
    #[serde(deserialize_with = "nullable")]
    source: String,
    #[serde(deserialize_with = "nullable")]
    destination: String,
}

pub(crate) fn copy(ctx: &Ctx, body: &[u8]) -> Resp {
    let req: CopyReq = match parse(body, Dialect::Api) {
        Ok(r) => r,
        Err(r) => return r,
    };
    if req.source.is_empty() || req.destination.is_empty() {
        return error(Dialect::Api, StatusCode::BAD_REQUEST, "source and destination are required");
    }
    let copied = ctx.state.edit_models(|models| {
        let spec = models.iter().find(|m| names::name_matches(&m.full_name, &req.source)).map(|m| m.spec.clone());
        spec.map(|mut spec| {
            spec.name = req.destination.clone();
            upsert(models, spec);
        })
    });
    match copied {
        Some(()) => empty(StatusCode::OK),
        None => error(Dialect::Api, StatusCode::NOT_FOUND, &format!("model {:?} not found", req.source)),
    }
}

pub(crate) fn delete(ctx: &Ctx, body: &[u8]) -> Resp {
    let req = match parse_name(body) {
        Ok(r) => r,
        Err(r) => return r,
    };
    let name = req.name();
    let removed = ctx.state.edit_models(|models| {
        let before = models.len();
        models.retain(|m| !names::name_matches(&m.full_name, name));
        models.len() != before
    });
    if removed { empty(StatusCode::OK) } else { error(Dialect::Api, StatusCode::NOT_FOUND, &model_not_found(name)) }
}

pub(crate) fn head_blob(ctx: &Ctx, digest: &str) -> Resp {
    if ctx.state.has_blob(digest) {
        empty(StatusCode::OK)
    } else {
        error(Dialect::Api, StatusCode::NOT_FOUND, &format!("blob {digest:?} not found"))
    }
}

/// Consumes the upload frame by frame (never buffers it whole).
pub(crate) async fn upload_blob(ctx: &Ctx, digest: &str, mut body: Incoming) -> Resp {
    let mut received: u64 = 0;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(f) => {
                if let Some(d) = f.data_ref() {
                    received += d.len() as u64;
                }
            }
            Err(e) => {
                return error(Dialect::Api, StatusCode::BAD_REQUEST, &format!("failed to read upload: {e}"));
            }
        }
    }
    tracing::debug!(digest, received, "keel-mock: blob uploaded");
    if ctx.state.add_blob(digest) { empty(StatusCode::CREATED) } else { empty(StatusCode::OK) }
}
