//! The HTTP server: the request pipeline that composes router, static files, prerender cache and workers.
