//! Applying a middleware response: `@next/routing`'s `responseToMiddlewareResult` followed by
//! the middleware branch of `resolveRoutes`.

use url::Url;

use crate::headers::HeaderList;
use crate::{Resolution, RoutingState, urls};

/// What the middleware's answer means for routing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MiddlewareEffect {
    /// Keep routing: call [`Router::finish`] with the (updated) state.
    Continue,
    /// The middleware answered itself: send its response as it is.
    Respond,
    /// Routing is over (a redirect or an external rewrite from middleware).
    Done(Box<Resolution>),
}

const REDIRECT_STATUSES: [u16; 5] = [301, 302, 303, 307, 308];

/// A middleware response header value: one string, or several for `set-cookie`.
enum Val {
    One(String),
    Many(Vec<String>),
}

pub(crate) fn apply(
    state: &mut RoutingState,
    status: u16,
    headers: &[(String, String)],
) -> MiddlewareEffect {
    // `response.headers.forEach` order: sorted names, values combined except set-cookie.
    let resp = HeaderList::from_pairs(headers.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let mut r: Vec<(String, Val)> = Vec::new();
    for (k, v) in resp.sorted_combined() {
        match r.iter_mut().find(|(rk, _)| *rk == k) {
            Some((_, val)) => {
                let old = std::mem::replace(val, Val::Many(Vec::new()));
                *val = match old {
                    Val::One(p) => Val::Many(vec![p, v]),
                    Val::Many(mut l) => {
                        l.push(v);
                        Val::Many(l)
                    }
                };
            }
            None => r.push((k, Val::One(v))),
        }
    }
    let get = |r: &Vec<(String, Val)>, k: &str| -> Option<String> {
        r.iter().find(|(rk, _)| rk == k).map(|(_, v)| match v {
            Val::One(s) => s.clone(),
            Val::Many(l) => l.join(","),
        })
    };
    let truthy = |r: &Vec<(String, Val)>, k: &str| get(r, k).is_some_and(|v| !v.is_empty());
    let mut t = state.request_headers.clone();
    if let Some(over) = get(&r, "x-middleware-override-headers").filter(|v| !v.is_empty()) {
        let keep: Vec<String> = over.split(',').map(|s| s.trim().to_string()).collect();
        r.retain(|(k, _)| k != "x-middleware-override-headers");
        let names: Vec<String> = t.raw().iter().map(|(k, _)| k.clone()).collect();
        for n in names {
            if !keep.contains(&n) {
                t.delete(&n);
            }
        }
        let mut seen: Vec<&String> = Vec::new();
        for n in &keep {
            if seen.contains(&n) {
                continue;
            }
            seen.push(n);
            let key = format!("x-middleware-request-{n}");
            match r.iter().position(|(k, _)| *k == key) {
                None => t.delete(n),
                Some(i) => {
                    match &r[i].1 {
                        Val::One(v) => t.set(n, v),
                        Val::Many(l) => {
                            if let Some(first) = l.first() {
                                t.set(n, first);
                            }
                            for v in l.iter().skip(1) {
                                t.append(n, v);
                            }
                        }
                    }
                    r.remove(i);
                }
            }
        }
    }
    let refresh = !truthy(&r, "x-middleware-rewrite")
        && !truthy(&r, "x-middleware-next")
        && !truthy(&r, "location");
    r.retain(|(k, _)| k != "x-middleware-next");
    let mut o = HeaderList::new();
    for (k, v) in &r {
        if matches!(
            k.as_str(),
            "content-length"
                | "x-middleware-rewrite"
                | "x-middleware-redirect"
                | "x-middleware-refresh"
        ) {
            continue;
        }
        let only_request = k == "x-middleware-set-cookie";
        match v {
            Val::Many(l) => {
                for v in l {
                    if !only_request {
                        o.append(k, v);
                    }
                    t.append(k, v);
                }
            }
            Val::One(v) => {
                if !only_request {
                    o.set(k, v);
                }
                t.set(k, v);
            }
        }
    }
    if refresh {
        r.push(("x-middleware-refresh".into(), Val::One("1".into())));
    }
    let base = state
        .middleware_url
        .clone()
        .unwrap_or_else(|| state.url.clone());
    let mut rewrite: Option<Url> = None;
    let mut redirect: Option<(Url, u16)> = None;
    let mut body_sent = false;
    'result: {
        if let Some(rw) = get(&r, "x-middleware-rewrite").filter(|v| !v.is_empty()) {
            let rel = urls::relative_url(&rw, &base);
            o.set("x-middleware-rewrite", &rel);
            match base.join(&rel) {
                Ok(u) => {
                    let cross = u.origin() != base.origin();
                    rewrite = Some(u);
                    if cross {
                        break 'result;
                    }
                }
                Err(e) => {
                    return MiddlewareEffect::Done(Box::new(Resolution::Rejected {
                        status: 500,
                        reason: format!("middleware rewrite {rel}: {e}"),
                    }));
                }
            }
        }
        if let Some(loc) = get(&r, "location").filter(|v| !v.is_empty()) {
            if REDIRECT_STATUSES.contains(&status) {
                let rel = urls::relative_url(&loc, &base);
                o.set("location", &rel);
                match base.join(&rel) {
                    Ok(u) => redirect = Some((u, status)),
                    Err(e) => {
                        return MiddlewareEffect::Done(Box::new(Resolution::Rejected {
                            status: 500,
                            reason: format!("middleware redirect {rel}: {e}"),
                        }));
                    }
                }
            } else {
                o.set("location", &loc);
            }
            break 'result;
        }
        body_sent = truthy(&r, "x-middleware-refresh");
    }
    if body_sent {
        return MiddlewareEffect::Respond;
    }
    state.request_headers = t;
    for (k, v) in o.raw() {
        if k == "set-cookie" {
            state.response_headers.append(k, v);
            state.middleware_headers.append(k, v);
        } else {
            state.response_headers.set(k, v);
            state.middleware_headers.set(k, v);
        }
    }
    if let Some((u, st)) = redirect {
        if !state.response_headers.has("location") {
            state.response_headers.set("location", u.as_str());
        }
        return MiddlewareEffect::Done(Box::new(Resolution::Redirect {
            status: st,
            location: state.response_headers.get("location"),
            headers: state.response_headers.sorted_combined(),
            // Unlike its answer to a `redirects()` rule, next start answers a middleware redirect
            // with everything resolved so far (resolve-routes.js returns `resHeaders`), so the
            // `headers()` rules are sent too.
            next_start_headers: state.response_headers.sorted_combined(),
        }));
    }
    if let Some(u) = rewrite {
        // Against the origin the middleware was invoked with (the request's own, or next
        // start's initURL origin): next start proxies a rewrite it does not recognise as its own.
        if u.origin() != base.origin() {
            return MiddlewareEffect::Done(Box::new(Resolution::ExternalRewrite {
                url: u.to_string(),
                headers: state.response_headers.sorted_combined(),
                request_headers: state.request_headers.to_shared(),
                status: state.status,
            }));
        }
        // Same origin: only the path and query move on (the request keeps its own origin).
        state.url.set_path(u.path());
        state.url.set_query(u.query());
    }
    MiddlewareEffect::Continue
}
