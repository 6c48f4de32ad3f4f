//! Pages of dynamic routes rendered at request time (on-demand ISR): `/blog/new` of a route
//! `/blog/[slug]` whose `generateStaticParams` did not list it (app router, `dynamicParams`
//! true: the route's fallback is blocking) or of a pages-router route with `fallback:
//! 'blocking'`. next start renders such a page on its first request and caches it like a
//! build-time prerender; Ferry does the same in its own cache.
//!
//! The manifest lists the route's *template* prerenders (`/blog/[slug]`, `/blog/[slug].rsc`,
//! `/_next/data/<id>/legacy/[slug].json`), without a seed. A concrete page is registered from its
//! template on its first request (its variants form one group, keyed by the page), in a bounded
//! registry: the registry only caches what can be derived again from the template, so dropping
//! the oldest registrations when it is full costs a re-registration, never a render.

use std::collections::{HashMap, VecDeque};

use ferry_manifest::{Manifest, Prerender};

/// Pages registered at most at once (oldest dropped first; see the module docs).
pub const DEFAULT_ON_DEMAND_PAGES: usize = 20_000;

/// A route template that may render pages on demand.
#[derive(Debug, Clone)]
pub(crate) struct Template {
    /// The template's group (its HTML and RSC / data variants).
    pub(crate) group_id: u64,
    /// The template pathnames of that group (`/blog/[slug]`, `/blog/[slug].rsc`).
    pub(crate) members: Vec<String>,
    /// A pages-router route with `fallback: true`: the template's seed is the fallback shell,
    /// which next start answers to a page's first HTML request (see [`is_bot`]).
    pub(crate) fallback_shell: bool,
    /// A partially static (PPR, Cache Components) route: a page's HTML entry is its shell with
    /// the postponed state of the same render, resumed per request. Its `.rsc` entry answers
    /// only prefetches (an RSC navigation is a dynamic render).
    pub(crate) partially_static: bool,
}

/// The templates of `manifest` whose routes render unknown params on demand, by HTML template
/// pathname: a template prerender of a route none of whose prerenders says
/// `parentFallbackMode: false` (those answer 404), seedless (fallback `null`: blocking) or, for
/// a pages-router page, seeded with its fallback shell (`fallback: true`). A partially static
/// (PPR) route renders on demand too: next start renders a new param's shell with its postponed
/// state, RSC payload and segment prefetches into one APP_PAGE entry on its first request and
/// resumes the shell per request.
pub(crate) fn templates(manifest: &Manifest) -> HashMap<String, Template> {
    let pages: std::collections::HashSet<&str> = manifest
        .functions
        .iter()
        .filter(|f| f.kind == ferry_manifest::FunctionKind::Pages)
        .map(|f| f.id.as_str())
        .collect();
    let closed: std::collections::HashSet<&str> = manifest
        .prerenders
        .iter()
        .filter(|p| p.parent_fallback_mode == serde_json::Value::Bool(false))
        .map(|p| p.route.as_str())
        .collect();
    let mut out = HashMap::new();
    for p in &manifest.prerenders {
        if !is_html_template(p) || closed.contains(p.route.as_str()) {
            continue;
        }
        let fallback_shell = p.seed.as_ref().is_some_and(|s| s.file.is_some());
        if fallback_shell && !pages.contains(p.parent_output_id.as_str()) {
            continue;
        }
        let partially_static = p.rendering_mode.as_deref() == Some("PARTIALLY_STATIC");
        let members = manifest
            .prerenders
            .iter()
            .filter(|m| m.group_id == p.group_id)
            .map(|m| m.pathname.clone())
            .collect();
        out.insert(
            p.pathname.clone(),
            Template {
                group_id: p.group_id,
                members,
                fallback_shell,
                partially_static,
            },
        );
    }
    out
}

/// The prerender of a dynamic route's page itself (`/blog/[slug]`), not a concrete page or a
/// variant.
fn is_html_template(p: &Prerender) -> bool {
    p.pathname == p.route && p.route.contains('[')
}

/// The concrete pathnames of the variants of `page` (`/blog/new`) from its template's members:
/// the template page replaced by the concrete one (`/blog/[slug].rsc` → `/blog/new.rsc`,
/// `/_next/data/<id>/legacy/[slug].json` → `/_next/data/<id>/legacy/new.json`).
pub(crate) fn concrete_members(template_page: &str, page: &str, members: &[String]) -> Vec<String> {
    members
        .iter()
        .filter_map(|m| {
            if m == template_page {
                return Some(page.to_owned());
            }
            // A root page's variants are named after `/index`.
            let (t, c) = if page == "/" {
                (template_page, "/index")
            } else {
                (template_page, page)
            };
            m.contains(t).then(|| m.replacen(t, c, 1))
        })
        .collect()
}

/// next's `isBot` (shared/lib/router/utils/is-bot.js, 16.4.6): the pages router answers a bot
/// a `fallback: true` page with a blocking render instead of the fallback shell, so the bot
/// gets the content in the HTML. Case-insensitive, like next's regexes:
/// `Googlebot(?!-)|Googlebot$` and `HTML_LIMITED_BOT_UA_RE`.
pub fn is_bot(user_agent: &str) -> bool {
    const NAMES: &[&str] = &[
        "chrome-lighthouse",
        "slurp",
        "duckduckbot",
        "baiduspider",
        "yandex",
        "sogou",
        "bitlybot",
        "tumblr",
        "vkshare",
        "quora link preview",
        "redditbot",
        "ia_archiver",
        "bingbot",
        "bingpreview",
        "applebot",
        "facebookexternalhit",
        "facebookcatalog",
        "twitterbot",
        "linkedinbot",
        "slackbot",
        "discordbot",
        "whatsapp",
        "skypeuripreview",
        "yeti",
        "googleweblight",
    ];
    let ua = user_agent.to_ascii_lowercase();
    let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c == b'-';
    let bytes = ua.as_bytes();
    // `Googlebot(?!-)|Googlebot$`: a "googlebot" not followed by a dash.
    let googlebot = ua
        .match_indices("googlebot")
        .any(|(i, m)| bytes.get(i + m.len()) != Some(&b'-'));
    // `[\w-]+-Google`: "-google" with a word character or dash before it.
    let dash_google = ua
        .match_indices("-google")
        .any(|(i, _)| i > 0 && word(bytes[i - 1]));
    // `Google-[\w-]+`: "google-" with a word character or dash after it.
    let google_dash = ua
        .match_indices("google-")
        .any(|(i, m)| bytes.get(i + m.len()).is_some_and(|&c| word(c)));
    googlebot || dash_google || google_dash || NAMES.iter().any(|n| ua.contains(n))
}

/// Registered pages in registration order, to drop the oldest when full.
#[derive(Debug)]
pub(crate) struct Registry {
    limit: usize,
    order: VecDeque<String>,
    /// Page → the pathnames registered for it (its variants, segments as they appear).
    pages: HashMap<String, Vec<String>>,
}

impl Registry {
    pub(crate) fn new(limit: usize) -> Self {
        Registry {
            limit: limit.max(1),
            order: VecDeque::new(),
            pages: HashMap::new(),
        }
    }

    pub(crate) fn set_limit(&mut self, limit: usize) {
        self.limit = limit.max(1);
    }

    /// Records `pathname` under `page`; returns the pages to drop (over the limit).
    pub(crate) fn add(&mut self, page: &str, pathname: &str) -> Vec<(String, Vec<String>)> {
        match self.pages.get_mut(page) {
            Some(paths) => {
                if !paths.iter().any(|p| p == pathname) {
                    paths.push(pathname.to_owned());
                }
                return Vec::new();
            }
            None => {
                self.pages
                    .insert(page.to_owned(), vec![pathname.to_owned()]);
                self.order.push_back(page.to_owned());
            }
        }
        let mut dropped = Vec::new();
        while self.pages.len() > self.limit {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            if let Some(paths) = self.pages.remove(&old) {
                dropped.push((old, paths));
            }
        }
        dropped
    }

    /// Pages registered now.
    pub(crate) fn len(&self) -> usize {
        self.pages.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_follow_the_concrete_page() {
        let members = vec!["/blog/[slug]".to_owned(), "/blog/[slug].rsc".to_owned()];
        assert_eq!(
            concrete_members("/blog/[slug]", "/blog/new", &members),
            vec!["/blog/new".to_owned(), "/blog/new.rsc".to_owned()]
        );
        let members = vec![
            "/legacy/[slug]".to_owned(),
            "/_next/data/B/legacy/[slug].json".to_owned(),
        ];
        assert_eq!(
            concrete_members("/legacy/[slug]", "/legacy/x", &members),
            vec![
                "/legacy/x".to_owned(),
                "/_next/data/B/legacy/x.json".to_owned()
            ]
        );
    }

    #[test]
    fn bots_are_recognised_like_next() {
        for ua in [
            "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
            "googlebot",
            "Mozilla/5.0 (compatible; bingbot/2.0)",
            "AdsBot-Google (+http://www.google.com/adsbot.html)",
            "Mediapartners-Google",
            "Google-InspectionTool/1.0",
            "facebookexternalhit/1.1",
            "Slackbot-LinkExpanding 1.0",
            "WhatsApp/2.23",
        ] {
            assert!(is_bot(ua), "{ua}");
        }
        for ua in [
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/120.0 Safari/537.36",
            "curl/8.5.0",
            "Googlebot-Image/1.0",
            "google",
            "-Google",
            "Google-",
            "",
        ] {
            assert!(!is_bot(ua), "{ua}");
        }
    }

    #[test]
    fn a_partially_static_template_renders_shells_on_demand() {
        let p = |pathname: &str| {
            serde_json::json!({
                "pathname": pathname, "parentOutputId": "/posts/[id]", "groupId": 10,
                "route": "/posts/[id]", "renderingMode": "PARTIALLY_STATIC",
            })
        };
        let m = serde_json::json!({
            "version": 1, "ferryVersion": "0.1.0", "nextVersion": "16.4.6", "kind": "server",
            "buildId": "B", "config": {}, "routing": {},
            "functions": [{"id": "/posts/[id]", "kind": "APP_PAGE", "pathname": "/posts/[id]",
                "sourcePage": "/posts/[id]/page", "entry": "a.js", "runtime": "nodejs"}],
            "prerenders": [
                p("/posts/[id]"),
                p("/posts/[id].rsc"),
                p("/posts/[id].segments/_tree.segment.rsc"),
            ],
        });
        let m = Manifest::from_json(&m.to_string(), std::path::Path::new("m")).expect("manifest");
        let t = templates(&m);
        let t = t
            .get("/posts/[id]")
            .expect("a PPR template renders on demand");
        assert!(t.partially_static && !t.fallback_shell);
        assert_eq!(
            concrete_members("/posts/[id]", "/posts/three", &t.members),
            vec![
                "/posts/three".to_owned(),
                "/posts/three.rsc".to_owned(),
                "/posts/three.segments/_tree.segment.rsc".to_owned()
            ]
        );
    }

    #[test]
    fn the_registry_drops_the_oldest_pages() {
        let mut r = Registry::new(2);
        assert!(r.add("/a", "/a").is_empty());
        assert!(r.add("/a", "/a.rsc").is_empty());
        assert!(r.add("/b", "/b").is_empty());
        let dropped = r.add("/c", "/c");
        assert_eq!(
            dropped,
            vec![("/a".to_owned(), vec!["/a".to_owned(), "/a.rsc".to_owned()])]
        );
        assert_eq!(r.len(), 2);
    }
}
